//! Tools described in the prompt for models and servers without native tool calling: forced by
//! the settings, or taken up when a server refuses `tools`, over both wire formats.

use ohd_llm::{CompletionRequest, LlmError, LlmSettings, Message, Role, ToolCall, connect};
use ohd_scripted_llm::{Script, ToolsRefusal, Turn};
use serde_json::{Value, json};

use super::common::*;

fn args(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap()
}

/// The system prompt a request carried, whichever wire it went over.
fn system_text(body: &Value) -> String {
    match (&body["system"], &body["messages"][0]) {
        (Value::Array(blocks), _) => blocks[0]["text"].as_str().unwrap().to_owned(),
        (_, first) if first["role"] == "system" => first["content"].as_str().unwrap().to_owned(),
        _ => panic!("no system prompt in {body}"),
    }
}

fn prompted(settings: LlmSettings) -> LlmSettings {
    LlmSettings {
        native_tool_calling: Some(false),
        ..settings
    }
}

#[tokio::test]
async fn a_server_that_refuses_tools_gets_them_in_the_prompt_from_then_on() {
    let script = Script::new(vec![
        Turn::tool_call("execute_bash", json!({"command": "ls -la"})).with_text("Let me look."),
        Turn::text("Two files."),
    ])
    .refusing_tools(ToolsRefusal::Vllm);
    let (root, server) = serve_script(script).await;
    let client = connect(&openai(&root, true)).unwrap();
    let retries = Retries::default();

    let answer = client
        .complete(&first_turn("list files"), &retries)
        .await
        .unwrap();

    assert_eq!(answer.text, "Let me look.");
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    assert_eq!(call.name, "execute_bash");
    assert!(call.id.starts_with("call_"), "{}", call.id);
    assert_eq!(args(call), json!({"command": "ls -la"}));
    // The refusal is not retried: the same request goes again at once, in the prompt.
    assert!(retries.seen().is_empty());
    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert!(sent[0]["tools"].is_array());
    assert!(sent[1].get("tools").is_none(), "{}", sent[1]);
    assert_eq!(sent[1]["stop"], json!(["</function"]));
    let system = system_text(&sent[1]);
    assert!(
        system.starts_with("You are a careful agent.\n\n"),
        "{system}"
    );
    assert!(
        system.contains("---- BEGIN FUNCTION #1: execute_bash ----"),
        "{system}"
    );
    assert!(system.contains("<function=FUNCTION_NAME>"), "{system}");
    // The agent sees a native call in the OpenAI-shaped response too.
    let message = &answer.model_response["choices"][0]["message"];
    assert_eq!(message["content"], "Let me look.");
    assert_eq!(message["tool_calls"][0]["id"], json!(call.id));
    assert_eq!(message["tool_calls"][0]["function"]["name"], "execute_bash");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        json!(call.arguments)
    );
    assert_eq!(
        answer.model_response["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The next request goes straight to the prompt, with the call and its result as text.
    let next = CompletionRequest {
        messages: vec![
            Message::system("You are a careful agent."),
            Message::user("list files"),
            Message::assistant(answer.text.clone(), answer.tool_calls.clone()),
            Message::tool_result(&call.id, "a.txt\nb.txt"),
        ],
        ..first_turn("list files")
    };
    let answer = client.complete(&next, &()).await.unwrap();

    assert_eq!(answer.text, "Two files.");
    assert!(answer.tool_calls.is_empty());
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    let sent = server.requests();
    assert_eq!(sent.len(), 3, "no second try with tools");
    let messages = sent[2]["messages"].as_array().unwrap();
    assert!(sent[2].get("tools").is_none());
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": "Let me look.\n\n<function=execute_bash>\n<parameter=command>ls -la</parameter>\n</function>"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": "Result of the call to execute_bash:\na.txt\nb.txt"})
    );
}

#[tokio::test]
async fn an_anthropic_wire_that_refuses_tools_falls_back_too() {
    for stream in [true, false] {
        let script = Script::new(vec![Turn::tool_call(
            "execute_bash",
            json!({"command": "cat <<'EOF' > a.txt\nhello\nEOF"}),
        )])
        .refusing_tools(ToolsRefusal::Ollama);
        let (root, server) = serve_script(script).await;

        let answer = connect(&anthropic(&root, stream))
            .unwrap()
            .complete(&first_turn("write a.txt"), &())
            .await
            .unwrap();

        assert_eq!(answer.text, "", "stream: {stream}");
        assert_eq!(
            args(&answer.tool_calls[0]),
            json!({"command": "cat <<'EOF' > a.txt\nhello\nEOF"})
        );
        assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
        let sent = server.requests();
        assert_eq!(sent.len(), 2);
        assert!(sent[0]["tools"].is_array());
        assert!(sent[1].get("tools").is_none());
        assert_eq!(sent[1]["stop_sequences"], json!(["</function"]));
        assert!(system_text(&sent[1]).contains("BEGIN FUNCTION #1: execute_bash"));
    }
}

#[tokio::test]
async fn forced_prompted_calls_send_no_tools_over_either_wire() {
    for (wire, settings) in [
        ("openai", openai as fn(&str, bool) -> LlmSettings),
        ("anthropic", anthropic),
    ] {
        for stream in [true, false] {
            let turn = Turn::tool_call(
                "execute_bash",
                json!({"command": "python3 -c 'print(1)'\necho done", "is_input": "false"}),
            )
            .with_text("Running it.");
            let (root, server) = serve(vec![turn]).await;

            let answer = connect(&prompted(settings(&root, stream)))
                .unwrap()
                .complete(&after_tool_results(), &())
                .await
                .unwrap();

            let at = format!("{wire}, stream: {stream}");
            assert_eq!(answer.text, "Running it.", "{at}");
            assert_eq!(
                args(&answer.tool_calls[0]),
                json!({"command": "python3 -c 'print(1)'\necho done", "is_input": "false"}),
                "{at}"
            );
            let sent = &server.requests()[0];
            assert!(sent.get("tools").is_none(), "{at}");
            // No message speaks of native calls: results are user messages naming the tool.
            let text = sent["messages"].to_string();
            assert!(
                !text.contains("tool_use") && !text.contains("tool_call"),
                "{at}: {text}"
            );
            assert!(text.contains("Result of the call to execute_bash:"), "{at}");
            assert!(text.contains("<parameter=command>pwd</parameter>"), "{at}");
        }
    }
}

#[tokio::test]
async fn forced_native_calls_never_fall_back() {
    let script = Script::new(vec![Turn::text("never")]).refusing_tools(ToolsRefusal::Vllm);
    let (root, server) = serve_script(script).await;
    let settings = LlmSettings {
        native_tool_calling: Some(true),
        ..openai(&root, true)
    };

    let err = connect(&settings)
        .unwrap()
        .complete(&first_turn("hi"), &())
        .await
        .unwrap_err();

    assert!(
        matches!(err, LlmError::BadRequest(ref m) if m.contains("--enable-auto-tool-choice")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_prompted_call_that_cannot_be_made_reaches_the_agent_as_a_broken_call() {
    let reply =
        "Let me try.\n<function=run_python>\n<parameter=code>print(1)</parameter>\n</function>";
    let (root, server) = serve(vec![Turn::text(reply), Turn::text("ok")]).await;
    let client = connect(&prompted(openai(&root, false))).unwrap();

    let answer = client.complete(&first_turn("go"), &()).await.unwrap();

    assert_eq!(answer.text, "Let me try.");
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
    let call = &answer.tool_calls[0];
    assert_eq!(call.name, "run_python");
    assert!(serde_json::from_str::<Value>(&call.arguments).is_err());
    assert!(
        call.arguments.starts_with("<function=run_python>"),
        "{}",
        call.arguments
    );

    // The agent answers it as broken arguments; the model is told what was really wrong.
    let next = CompletionRequest {
        messages: vec![
            Message::system("You are a careful agent."),
            Message::user("go"),
            Message::assistant(answer.text.clone(), answer.tool_calls.clone()),
            Message::tool_result(&call.id, "The arguments of run_python are not valid JSON"),
        ],
        ..first_turn("go")
    };
    client.complete(&next, &()).await.unwrap();
    let messages = server.requests()[1]["messages"].clone();
    assert_eq!(messages[3]["role"], "user");
    let result = messages[3]["content"].as_str().unwrap();
    assert!(
        result.starts_with("Result of the call to run_python:\nThe function call could not be read: there is no function `run_python`; the functions are execute_bash."),
        "{result}"
    );
}

#[tokio::test]
async fn a_plain_answer_in_prompted_mode_is_plain_text() {
    let (root, _server) = serve(vec![Turn::text("Hello! What shall I do?")]).await;

    let answer = connect(&prompted(anthropic(&root, true)))
        .unwrap()
        .complete(&first_turn("hi"), &())
        .await
        .unwrap();

    assert_eq!(answer.text, "Hello! What shall I do?");
    assert!(answer.tool_calls.is_empty());
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        answer.model_response["choices"][0]["message"]["tool_calls"],
        Value::Null
    );
}

#[tokio::test]
async fn requests_without_tools_are_sent_as_they_are() {
    let (root, server) = serve(vec![Turn::text("A title")]).await;
    let request = CompletionRequest {
        messages: vec![Message::user("name this")],
        ..CompletionRequest::default()
    };

    connect(&prompted(openai(&root, true)))
        .unwrap()
        .complete(&request, &())
        .await
        .unwrap();

    let sent = &server.requests()[0];
    assert!(sent.get("stop").is_none());
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "name this"}])
    );
    assert_eq!(Role::User, request.messages[0].role);
}
