//! Turns as Anthropic Messages answers: a `message` object, or the event stream
//! (`message_start`, per block `content_block_start` / `content_block_delta`s /
//! `content_block_stop`, `message_delta`, `message_stop`, with a `ping`) the way Anthropic
//! sends it.

use std::time::Duration;

use axum::response::Response;
use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::script::pieces;
use crate::{Reply, sse};

pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Anthropic counts input tokens without the cached ones.
fn usage(reply: &Reply) -> Value {
    let u = &reply.usage;
    if reply.turn.omit_usage {
        return json!({});
    }
    let cached = u.cache_read_tokens + u.cache_write_tokens;
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.completion_tokens,
    })
}

fn stop_reason(reply: &Reply) -> &'static str {
    if !reply.calls.is_empty() {
        "tool_use"
    } else if reply.stopped_at.is_some() {
        "stop_sequence"
    } else {
        "end_turn"
    }
}

/// The signature of a turn's thinking: made up, but the client must give it back unchanged.
fn signature(reply: &Reply) -> String {
    format!("scripted-signature-{}", reply.response_number)
}

fn tool_input(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| json!({})),
        _ => json!({}),
    }
}

/// The whole answer (`stream` not set).
pub(crate) fn message(reply: &Reply) -> Value {
    let turn = reply.turn;
    let mut content = Vec::new();
    if let Some(thinking) = &turn.reasoning {
        content
            .push(json!({"type": "thinking", "thinking": thinking, "signature": signature(reply)}));
    }
    if let Some(data) = &turn.redacted_thinking {
        content.push(json!({"type": "redacted_thinking", "data": data}));
    }
    if !reply.text.is_empty() {
        content.push(json!({"type": "text", "text": reply.text}));
    }
    for (call, id) in reply.calls.iter().zip(&reply.call_ids) {
        content.push(json!({
            "type": "tool_use",
            "id": format!("toolu_{id}"),
            "name": call.name,
            "input": tool_input(&call.arguments),
        }));
    }
    json!({
        "id": format!("msg_scripted_{}", reply.response_number),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": reply.stopped_at,
        "usage": usage(reply),
    })
}

/// The answer as events, text and tool inputs in pieces.
pub(crate) fn stream(reply: &Reply) -> Response {
    let turn = reply.turn;
    let mut events = Vec::new();
    let mut push = |name: &str, data: Value| {
        events.push(Event::default().event(name).data(data.to_string()));
    };
    // The input counts come first; the output count comes at the end.
    let mut start_usage = usage(reply);
    if let Some(output) = start_usage.get_mut("output_tokens") {
        *output = json!(1);
    }
    push(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_scripted_{}", reply.response_number),
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": start_usage,
        }}),
    );
    push("ping", json!({"type": "ping"}));
    let mut index = 0;
    if let Some(thinking) = &turn.reasoning {
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "thinking", "thinking": ""}}),
        );
        for piece in pieces(thinking, turn.chunk_chars) {
            push(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "thinking_delta", "thinking": piece}}),
            );
        }
        push(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "signature_delta", "signature": signature(reply)}}),
        );
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    if let Some(data) = &turn.redacted_thinking {
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "redacted_thinking", "data": data}}),
        );
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    if !reply.text.is_empty() {
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        );
        for piece in pieces(&reply.text, turn.chunk_chars) {
            push(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    for (call, id) in reply.calls.iter().zip(&reply.call_ids) {
        push(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": format!("toolu_{id}"), "name": call.name, "input": {},
            }}),
        );
        let input = tool_input(&call.arguments).to_string();
        for piece in pieces(&input, turn.chunk_chars) {
            push(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            );
        }
        push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        index += 1;
    }
    let end_usage = if turn.omit_usage {
        json!({})
    } else {
        json!({"output_tokens": reply.usage.completion_tokens})
    };
    push(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(reply), "stop_sequence": reply.stopped_at},
               "usage": end_usage}),
    );
    push("message_stop", json!({"type": "message_stop"}));
    sse(events, Duration::from_millis(turn.chunk_delay_ms))
}
