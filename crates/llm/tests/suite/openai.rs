//! OpenAI Chat Completions, streamed and not: what comes back, and what the server was sent.

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

fn args(call: &ohd_llm::ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap()
}

#[tokio::test]
async fn streamed_text_answer_is_put_together_from_its_pieces() {
    let usage = ScriptedUsage {
        prompt_tokens: 120,
        completion_tokens: 9,
        ..ScriptedUsage::default()
    };
    let (root, server) = serve(vec![
        Turn::text("Hello! How can I help you today?").with_usage(usage),
    ])
    .await;

    let answer = complete(&openai(&root, true), &first_turn("hi")).await;

    assert_eq!(answer.text, "Hello! How can I help you today?");
    assert!(answer.tool_calls.is_empty());
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (120, 9)
    );
    assert!(answer.response_id.starts_with("chatcmpl-scripted-"));
    let sent = &server.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn whole_text_answer_when_not_streamed() {
    let (root, server) = serve(vec![Turn::text("Hello!")]).await;

    let answer = complete(&openai(&root, false), &first_turn("hi")).await;

    assert_eq!(answer.text, "Hello!");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert!(answer.usage.prompt_tokens > 0);
    let sent = &server.requests()[0];
    assert!(sent.get("stream").is_none(), "{sent}");
    assert!(sent.get("stream_options").is_none(), "{sent}");
}

#[tokio::test]
async fn tool_call_arguments_split_across_many_deltas_are_joined() {
    let arguments = json!({"command": "ls -la /tmp && echo \"done ✓\"", "is_input": "false"});
    // One character per delta: about sixty deltas for the arguments alone.
    let turn = Turn::tool_call("execute_bash", arguments.clone()).with_chunk_chars(1);
    let (root, _server) = serve(vec![turn]).await;

    let answer = complete(&openai(&root, true), &first_turn("list /tmp")).await;

    assert_eq!(answer.text, "");
    assert_eq!(answer.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    assert_eq!(call.name, "execute_bash");
    assert!(call.id.starts_with("call_"), "{}", call.id);
    assert_eq!(args(call), arguments);
}

#[tokio::test]
async fn two_parallel_tool_calls_keep_their_order_and_ids() {
    for stream in [true, false] {
        let turn = Turn::tool_call("execute_bash", json!({"command": "ls"}))
            .and_call("execute_bash", json!({"command": "pwd"}))
            .with_text("Let me look around.");
        let (root, _server) = serve(vec![turn]).await;

        let answer = complete(&openai(&root, stream), &first_turn("look")).await;

        assert_eq!(answer.text, "Let me look around.", "stream: {stream}");
        let commands: Vec<Value> = answer
            .tool_calls
            .iter()
            .map(|c| args(c)["command"].clone())
            .collect();
        assert_eq!(commands, [json!("ls"), json!("pwd")], "stream: {stream}");
        assert_ne!(answer.tool_calls[0].id, answer.tool_calls[1].id);
    }
}

#[tokio::test]
async fn a_server_that_sends_no_usage_is_fine() {
    let (root, _server) = serve(vec![Turn::text("ok").without_usage()]).await;

    let answer = complete(&openai(&root, true), &first_turn("hi")).await;

    assert_eq!(answer.text, "ok");
    assert_eq!(answer.usage, ohd_llm::Usage::default());
}

#[tokio::test]
async fn the_server_receives_the_conversation_tools_and_key() {
    let (root, server) = serve(vec![Turn::text("Two files, in /workspace.")]).await;

    complete(&openai(&root, true), &after_tool_results()).await;

    let recorded = server.recorded();
    assert_eq!(recorded.len(), 1);
    let request = &recorded[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = &request.body;
    // The provider prefix is ours, not the server's.
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are a careful agent."},
            {"role": "user", "content": "Where am I and what is here?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "execute_bash", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "execute_bash", "arguments": "{\"command\":\"pwd\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "a.txt\nb.txt"},
            {"role": "tool", "tool_call_id": "call_b", "content": "/workspace"},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {
            "name": "execute_bash",
            "description": "Run a command in the shell",
            "parameters": bash_tool().parameters,
        }}])
    );
    // A compatible server gets the classic name; OpenAI itself would get max_completion_tokens.
    assert_eq!(body["max_tokens"], 1000);
    assert_eq!(body["temperature"], 0.0);
}

#[tokio::test]
async fn model_response_is_a_chat_completion_object() {
    let turn = Turn::tool_call("execute_bash", json!({"command": "echo hello"}))
        .with_text("Let me run echo hello.");
    let (root, _server) = serve(vec![turn]).await;

    let answer = complete(&openai(&root, true), &first_turn("say hello")).await;

    let response = &answer.model_response;
    assert_eq!(response["id"], json!(answer.response_id));
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["model"], "gpt-4o");
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Let me run echo hello.");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], json!(answer.tool_calls[0].id));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "execute_bash");
    assert_eq!(
        call["function"]["arguments"],
        json!(answer.tool_calls[0].arguments)
    );
    assert_eq!(
        response["usage"]["total_tokens"],
        json!(answer.usage.prompt_tokens + answer.usage.completion_tokens)
    );
    assert!(!answer.latency.is_zero());
}
