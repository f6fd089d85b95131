//! Reasoning: `reasoning_effort` sent to the models that take it, reasoning text read back from
//! OpenAI-compatible servers, and Anthropic's extended thinking, whose signed blocks go back
//! with the assistant message.

use ohd_llm::{CompletionRequest, LlmError, LlmSettings, Message, connect};
use ohd_scripted_llm::Turn;
use serde_json::json;

use super::common::*;

#[tokio::test]
async fn reasoning_effort_goes_to_reasoning_models_only() {
    for (model, sent) in [
        ("openai/o4-mini", Some("high")),
        ("openai/gpt-5-mini", Some("high")),
        ("openai/gpt-4o", None),
    ] {
        let (root, server) = serve(vec![Turn::text("ok")]).await;
        let settings = LlmSettings {
            model: model.into(),
            reasoning_effort: Some("High".into()),
            ..openai(&root, true)
        };

        connect(&settings)
            .unwrap()
            .complete(&first_turn("hi"), &())
            .await
            .unwrap();

        let body = &server.requests()[0];
        assert_eq!(body["reasoning_effort"].as_str(), sent, "{model}");
    }
}

#[tokio::test]
async fn reasoning_text_is_read_from_either_openai_field() {
    for field in ["reasoning_content", "reasoning"] {
        for stream in [true, false] {
            let turn = Turn::text("It is 4.")
                .with_reasoning("2 + 2: add them, 4.")
                .with_reasoning_field(field);
            let (root, _server) = serve(vec![turn]).await;

            let answer = connect(&openai(&root, stream))
                .unwrap()
                .complete(&first_turn("2+2?"), &())
                .await
                .unwrap();

            let at = format!("{field}, stream: {stream}");
            assert_eq!(answer.text, "It is 4.", "{at}");
            assert_eq!(
                answer.reasoning.as_deref(),
                Some("2 + 2: add them, 4."),
                "{at}"
            );
            assert!(answer.thinking_blocks.is_empty(), "{at}");
            assert_eq!(
                answer.model_response["choices"][0]["message"]["reasoning_content"],
                "2 + 2: add them, 4.",
                "{at}"
            );
        }
    }
    // No reasoning, no field.
    let (root, _server) = serve(vec![Turn::text("ok")]).await;
    let answer = connect(&openai(&root, true))
        .unwrap()
        .complete(&first_turn("hi"), &())
        .await
        .unwrap();
    assert_eq!(answer.reasoning, None);
    assert!(
        answer.model_response["choices"][0]["message"]
            .get("reasoning_content")
            .is_none()
    );
}

#[tokio::test]
async fn anthropic_thinking_is_asked_for_and_its_signed_blocks_go_back() {
    for stream in [true, false] {
        let turn = Turn::tool_call("execute_bash", json!({"command": "ls"}))
            .with_text("Listing.")
            .with_reasoning("The user wants the files; ls shows them.")
            .with_redacted_thinking("EmwKAhgBEgy3va3pzix/LafPsn4a");
        let (root, server) = serve(vec![turn, Turn::text("Two files.")]).await;
        let settings = LlmSettings {
            thinking_budget_tokens: Some(2048),
            ..anthropic(&root, stream)
        };
        let client = connect(&settings).unwrap();
        let request = CompletionRequest {
            temperature: Some(0.0),
            ..first_turn("what is here?")
        };

        let answer = client.complete(&request, &()).await.unwrap();

        let at = format!("stream: {stream}");
        let first = &server.requests()[0];
        assert_eq!(
            first["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048}),
            "{at}"
        );
        assert_eq!(first["max_tokens"], 2048 + 8192, "{at}");
        assert!(first.get("temperature").is_none(), "{at}");
        assert_eq!(answer.text, "Listing.", "{at}");
        assert_eq!(
            answer.reasoning.as_deref(),
            Some("The user wants the files; ls shows them."),
            "{at}"
        );
        let signature = answer.thinking_blocks[0]["signature"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(signature.starts_with("scripted-signature-"), "{at}");
        assert_eq!(
            answer.thinking_blocks,
            [
                json!({"type": "thinking", "thinking": "The user wants the files; ls shows them.", "signature": signature}),
                json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}),
            ],
            "{at}"
        );
        let message = &answer.model_response["choices"][0]["message"];
        assert_eq!(
            message["reasoning_content"],
            "The user wants the files; ls shows them."
        );
        assert_eq!(message["thinking_blocks"], json!(answer.thinking_blocks));

        // The blocks go back first in the assistant message, unchanged.
        let call = &answer.tool_calls[0];
        let next = CompletionRequest {
            messages: vec![
                Message::system("You are a careful agent."),
                Message::user("what is here?"),
                Message::assistant(answer.text.clone(), answer.tool_calls.clone())
                    .with_thinking_blocks(answer.thinking_blocks.clone()),
                Message::tool_result(&call.id, "a.txt\nb.txt"),
            ],
            ..request
        };
        client.complete(&next, &()).await.unwrap();

        let assistant = &server.requests()[1]["messages"][1];
        assert_eq!(assistant["role"], "assistant", "{at}");
        assert_eq!(
            assistant["content"],
            json!([
                answer.thinking_blocks[0],
                answer.thinking_blocks[1],
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": call.id, "name": "execute_bash", "input": {"command": "ls"}},
            ]),
            "{at}"
        );
    }
}

#[tokio::test]
async fn without_a_budget_anthropic_gets_no_thinking_and_keeps_the_temperature() {
    let (root, server) = serve(vec![Turn::text("ok")]).await;
    let request = CompletionRequest {
        temperature: Some(0.2),
        ..first_turn("hi")
    };
    let settings = LlmSettings {
        // Not turned into thinking for Claude, as in the original.
        reasoning_effort: Some("high".into()),
        ..anthropic(&root, true)
    };

    connect(&settings)
        .unwrap()
        .complete(&request, &())
        .await
        .unwrap();

    let body = &server.requests()[0];
    assert!(body.get("thinking").is_none());
    assert!(body.get("reasoning_effort").is_none());
    assert_eq!(body["max_tokens"], 8192);
    assert!((body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
}

#[test]
fn settings_that_no_provider_takes_are_refused() {
    let effort = LlmSettings {
        reasoning_effort: Some("extreme".into()),
        ..openai("http://127.0.0.1:9", true)
    };
    let err = connect(&effort).err().unwrap();
    assert!(
        matches!(&err, LlmError::NotConfigured(m) if m.contains("`extreme`") && m.contains("low, medium, high")),
        "{err:?}"
    );
    let budget = LlmSettings {
        thinking_budget_tokens: Some(500),
        ..anthropic("http://127.0.0.1:9", true)
    };
    let err = connect(&budget).err().unwrap();
    assert!(
        matches!(&err, LlmError::NotConfigured(m) if m.contains("1024")),
        "{err:?}"
    );
    // Empty means unset.
    let empty = LlmSettings {
        reasoning_effort: Some(" ".into()),
        ..openai("http://127.0.0.1:9", true)
    };
    assert!(connect(&empty).is_ok());
}
