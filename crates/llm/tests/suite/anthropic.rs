//! Anthropic Messages, streamed and not: tool_use in, tool_result out, usage with the cache.

use ohd_llm::{Completion, LlmSettings, connect};
use ohd_scripted_llm::{ScriptedUsage, Turn};
use serde_json::{Value, json};

use super::common::*;

async fn complete(settings: &LlmSettings, request: &ohd_llm::CompletionRequest) -> Completion {
    connect(settings)
        .unwrap()
        .complete(request, &())
        .await
        .unwrap()
}

fn cached_usage() -> ScriptedUsage {
    ScriptedUsage {
        prompt_tokens: 1000,
        completion_tokens: 42,
        cache_read_tokens: 600,
        cache_write_tokens: 300,
    }
}

#[tokio::test]
async fn text_and_tool_use_streamed_and_not() {
    for stream in [true, false] {
        let arguments = json!({"command": "cat README.md | head -n 5", "is_input": "false"});
        let turn = Turn::tool_call("execute_bash", arguments.clone())
            .with_text("I'll read the README first.")
            .with_usage(cached_usage());
        let (root, server) = serve(vec![turn]).await;

        let answer = complete(&anthropic(&root, stream), &first_turn("what is this repo?")).await;

        assert_eq!(
            answer.text, "I'll read the README first.",
            "stream: {stream}"
        );
        assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(answer.tool_calls.len(), 1);
        let call = &answer.tool_calls[0];
        assert!(call.id.starts_with("toolu_"), "{}", call.id);
        assert_eq!(call.name, "execute_bash");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            arguments
        );
        // Anthropic's input_tokens leaves the cached tokens out; prompt_tokens has them all.
        assert_eq!(answer.usage.prompt_tokens, 1000, "stream: {stream}");
        assert_eq!(answer.usage.completion_tokens, 42);
        assert_eq!(answer.usage.cache_read_tokens, 600);
        assert_eq!(answer.usage.cache_write_tokens, 300);
        assert!(answer.response_id.starts_with("msg_scripted_"));
        assert_eq!(server.requests()[0].get("stream").is_some(), stream);
    }
}

#[tokio::test]
async fn two_tool_uses_in_one_streamed_answer() {
    let turn = Turn::tool_call("execute_bash", json!({"command": "ls"}))
        .and_call("execute_bash", json!({}))
        .with_chunk_chars(1);
    let (root, _server) = serve(vec![turn]).await;

    let answer = complete(&anthropic(&root, true), &first_turn("look")).await;

    assert_eq!(answer.text, "");
    let arguments: Vec<&str> = answer
        .tool_calls
        .iter()
        .map(|c| c.arguments.as_str())
        .collect();
    assert_eq!(arguments, [r#"{"command":"ls"}"#, "{}"]);
}

#[tokio::test]
async fn the_server_receives_system_tools_and_merged_tool_results() {
    let (root, server) = serve(vec![Turn::text("Two files, in /workspace.")]).await;
    let mut request = after_tool_results();
    request.max_tokens = None;

    complete(&anthropic(&root, true), &request).await;

    let recorded = &server.recorded()[0];
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some(KEY));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recorded.header("authorization"), None);
    let body = &recorded.body;
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 8192);
    assert_eq!(body["system"][0]["text"], "You are a careful agent.");
    assert_eq!(
        body["tools"],
        json!([{
            "name": "execute_bash",
            "description": "Run a command in the shell",
            "input_schema": bash_tool().parameters,
        }])
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(
        messages[0]["content"][0]["text"],
        "Where am I and what is here?"
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"],
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_a", "name": "execute_bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "call_b", "name": "execute_bash", "input": {"command": "pwd"}},
        ])
    );
    // Both results in one user message, in order, each naming its call.
    assert_eq!(messages[2]["role"], "user");
    let results = messages[2]["content"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[0]["tool_use_id"], "call_a");
    assert_eq!(results[0]["content"], "a.txt\nb.txt");
    assert_eq!(results[1]["tool_use_id"], "call_b");
    assert_eq!(results[1]["content"], "/workspace");
}

#[tokio::test]
async fn model_response_has_the_openai_shape_for_anthropic_too() {
    let turn = Turn::tool_call("execute_bash", json!({"command": "ls"})).with_text("Looking.");
    let (root, _server) = serve(vec![turn]).await;

    let answer = complete(&anthropic(&root, true), &first_turn("look")).await;

    let response = &answer.model_response;
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["id"], json!(answer.response_id));
    assert_eq!(response["model"], "claude-sonnet-4-5");
    let message = &response["choices"][0]["message"];
    assert_eq!(message["content"], "Looking.");
    assert_eq!(
        message["tool_calls"][0]["id"],
        json!(answer.tool_calls[0].id)
    );
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        r#"{"command":"ls"}"#
    );
    assert_eq!(response["choices"][0]["finish_reason"], "tool_calls");
}
