//! The scripted server over HTTP: turns in order, the fallback when they run out, recorded
//! requests, and a script replaced while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_scripted_llm::{Script, ScriptedLlm, Turn};
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
