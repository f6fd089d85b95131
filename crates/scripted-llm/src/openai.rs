//! Turns as OpenAI Chat Completions answers: a `chat.completion` object, or a stream of
//! `chat.completion.chunk` events ending in `[DONE]`, the way OpenAI sends them.

use std::time::Duration;

use axum::response::Response;
use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::script::pieces;
use crate::{Reply, ScriptedUsage, ToolsRefusal, now, sse};

pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        400 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A refusal of `tools` in the server's own shape: vLLM's top-level error object, Ollama's
/// OpenAI-compatible one.
pub(crate) fn refusal_body(server: ToolsRefusal, model: &str) -> Value {
    let message = server.message(model);
    match server {
        ToolsRefusal::Vllm => json!({
            "object": "error",
            "message": message,
            "type": "BadRequestError",
            "param": null,
            "code": 400,
        }),
        ToolsRefusal::Ollama => {
            json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}})
        }
    }
}

fn usage(usage: &ScriptedUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    })
}

fn finish_reason(reply: &Reply) -> &'static str {
    if reply.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

fn response_id(reply: &Reply) -> String {
    format!("chatcmpl-scripted-{}", reply.response_number)
}

/// The whole answer (`stream` not set).
pub(crate) fn completion(reply: &Reply) -> Value {
    let turn = reply.turn;
    let mut message = json!({
        "role": "assistant",
        "content": if reply.text.is_empty() { Value::Null } else { Value::from(reply.text.as_str()) },
    });
    if let Some(reasoning) = &turn.reasoning {
        message[turn.openai_reasoning_field()] = Value::from(reasoning.as_str());
    }
    if !reply.calls.is_empty() {
        let calls: Vec<Value> = reply
            .calls
            .iter()
            .zip(&reply.call_ids)
            .map(|(call, id)| {
                json!({
                    "id": format!("call_{id}"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text()},
                })
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let mut body = json!({
        "id": response_id(reply),
        "object": "chat.completion",
        "created": now(),
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reply)}],
    });
    if !turn.omit_usage {
        body["usage"] = usage(&reply.usage);
    }
    body
}

/// The answer as events: the role, the text in pieces, each tool call's id and name then its
/// arguments in pieces, the finish reason, the usage when asked for, `[DONE]`.
pub(crate) fn stream(reply: &Reply) -> Response {
    let turn = reply.turn;
    let id = response_id(reply);
    let created = now();
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if let Some(reasoning) = &turn.reasoning {
        for piece in pieces(reasoning, turn.chunk_chars) {
            let mut delta = json!({});
            delta[turn.openai_reasoning_field()] = Value::from(piece);
            chunks.push(chunk(delta, None));
        }
    }
    if !reply.text.is_empty() {
        for piece in pieces(&reply.text, turn.chunk_chars) {
            chunks.push(chunk(json!({"content": piece}), None));
        }
    }
    for (index, (call, call_id)) in reply.calls.iter().zip(&reply.call_ids).enumerate() {
        chunks.push(chunk(
            json!({"tool_calls": [{
                "index": index,
                "id": format!("call_{call_id}"),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            None,
        ));
        for piece in pieces(&call.arguments_text(), turn.chunk_chars) {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    chunks.push(chunk(json!({}), Some(finish_reason(reply))));
    let include_usage = reply
        .request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    if include_usage && !turn.omit_usage {
        chunks.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "choices": [],
            "usage": usage(&reply.usage),
        }));
    }
    let mut events: Vec<Event> = chunks
        .iter()
        .map(|c| Event::default().data(c.to_string()))
        .collect();
    events.push(Event::default().data("[DONE]"));
    sse(events, Duration::from_millis(turn.chunk_delay_ms))
}
