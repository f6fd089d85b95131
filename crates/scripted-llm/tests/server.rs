//! The scripted server over HTTP: turns in order, the fallback when they run out, recorded
//! requests, a script replaced while it runs, refused tools and reasoning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_scripted_llm::{Script, ScriptedLlm, ToolsRefusal, Turn};
use serde_json::{Value, json};

async fn post(url: &str, body: Value) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test]
async fn turns_play_in_order_then_done_and_requests_are_recorded() {
    let (root, handle) = ScriptedLlm::start(Script::new(vec![
        Turn::tool_call("execute_bash", json!({"command": "ls"})),
        Turn::error(429).with_retry_after(2),
    ]))
    .await
    .unwrap();
    let chat = format!("{root}/v1/chat/completions");

    let (status, _, first) = post(&chat, json!({"model": "m", "messages": []})).await;
    assert_eq!(status, 200);
    let call = &first["choices"][0]["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["arguments"], r#"{"command":"ls"}"#);

    let (status, retry_after, error) = post(&chat, json!({"n": 2})).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("2")));
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    let (_, _, done) = post(&format!("{root}/v1/messages"), json!({"n": 3})).await;
    assert_eq!(done["content"], json!([{"type": "text", "text": "done"}]));

    let listed: Value = reqwest::get(format!("{root}/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([{"model": "m", "messages": []}, {"n": 2}, {"n": 3}])
    );
    assert_eq!(handle.requests(), listed.as_array().unwrap().clone());
    assert_eq!(handle.recorded()[2].path, "/v1/messages");
}

#[tokio::test]
async fn a_script_posted_at_run_time_starts_over() {
    let (root, _handle) = ScriptedLlm::start(Script::new(vec![Turn::text("old")]))
        .await
        .unwrap();
    let chat = format!("{root}/v1/chat/completions");

    let (status, _, _) = post(
        &format!("{root}/script"),
        json!({"turns": [{"text": "new"}], "when_done": "repeat_last"}),
    )
    .await;
    assert_eq!(status, 200);

    for _ in 0..2 {
        let (_, _, answer) = post(&chat, json!({})).await;
        assert_eq!(answer["choices"][0]["message"]["content"], "new");
    }
}

#[tokio::test]
async fn tools_are_refused_as_a_server_without_tool_calling_refuses_them() {
    let script = Script::new(vec![Turn::tool_call(
        "execute_bash",
        json!({"command": "ls"}),
    )])
    .refusing_tools(ToolsRefusal::Vllm);
    let (root, handle) = ScriptedLlm::start(script).await.unwrap();
    let chat = format!("{root}/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "execute_bash"}}]);

    let (status, _, refusal) = post(&chat, json!({"model": "m", "tools": tools})).await;
    assert_eq!(status, 400);
    assert_eq!(
        refusal["message"],
        "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set"
    );

    // The refusal used no turn: a prompted request gets the call, as text, cut at its stop.
    let prompted = json!({
        "model": "m",
        "messages": [{"role": "system", "content": "Call with <function=NAME>"}],
        "stop": ["</function"],
    });
    let (status, _, answer) = post(&chat, prompted).await;
    assert_eq!(status, 200);
    let choice = &answer["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "<function=execute_bash>\n<parameter=command>ls</parameter>\n"
    );
    assert!(choice["message"].get("tool_calls").is_none());
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(handle.requests().len(), 2);

    handle.set_script(Script::new(vec![]).refusing_tools(ToolsRefusal::Ollama));
    let (status, _, refusal) = post(
        &format!("{root}/v1/messages"),
        json!({"model": "llama3", "tools": [{"name": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refusal["error"]["message"], "llama3 does not support tools");
}

#[tokio::test]
async fn reasoning_comes_as_reasoning_content_or_a_signed_thinking_block() {
    let turn = Turn::text("4").with_reasoning("2+2");
    let (root, _handle) = ScriptedLlm::start(Script::new(vec![turn.clone(), turn]))
        .await
        .unwrap();

    let (_, _, chat) = post(&format!("{root}/v1/chat/completions"), json!({})).await;
    assert_eq!(chat["choices"][0]["message"]["reasoning_content"], "2+2");

    let (_, _, message) = post(&format!("{root}/v1/messages"), json!({})).await;
    let thinking = &message["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(thinking["thinking"], "2+2");
    assert!(
        thinking["signature"]
            .as_str()
            .unwrap()
            .starts_with("scripted-signature-")
    );
    assert_eq!(message["content"][1], json!({"type": "text", "text": "4"}));
}
