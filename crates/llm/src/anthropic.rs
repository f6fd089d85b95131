//! Anthropic Messages, streamed or not. Its shape differs from OpenAI's in ways the agent must
//! not see: the system prompt is a top-level field, tool calls are `tool_use` content blocks,
//! tool results are `tool_result` blocks inside a user message, and `max_tokens` is required.

use std::collections::BTreeMap;
use std::pin::pin;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::error::{LlmError, error_message};
use crate::http::{self, Answer, Core, Wire};
use crate::retry::RetryObserver;
use crate::types::{Completion, CompletionRequest, Message, Role, ToolCall, Usage};

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires a ceiling on the answer; this one fits every current model.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// The least thinking budget Anthropic takes.
pub(crate) const MIN_THINKING_BUDGET: u32 = 1024;

pub(crate) struct AnthropicClient {
    core: Core,
    url: String,
    /// Extended thinking's budget in tokens, when it is on (at least [`MIN_THINKING_BUDGET`]).
    thinking_budget: Option<u32>,
}

impl AnthropicClient {
    pub(crate) fn new(core: Core, base_url: &str, thinking_budget: Option<u32>) -> AnthropicClient {
        let base = base_url.trim_end_matches('/');
        let url = if base.ends_with("/messages") {
            base.to_owned()
        } else if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        AnthropicClient {
            core,
            url,
            thinking_budget,
        }
    }

    fn headers(&self) -> Result<HeaderMap, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(key) = self.core.api_key() {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                Core::secret_header(key)?,
            );
        }
        Ok(headers)
    }

    fn body(&self, request: &CompletionRequest, stop: &[&str]) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), self.core.name.clone().into());
        let answer_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        // Thinking counts against `max_tokens`, which must be larger than the budget: the
        // budget comes on top of what the answer may take.
        let max_tokens = match self.thinking_budget {
            Some(budget) => budget.saturating_add(answer_tokens),
            None => answer_tokens,
        };
        body.insert("max_tokens".into(), max_tokens.into());
        if let Some(budget) = self.thinking_budget {
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        }
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System && !m.content.is_empty())
            .map(|m| m.content.as_str())
            .collect();
        if !system.is_empty() {
            // A cache mark on the system prompt caches the tools too (they come before it).
            body.insert(
                "system".into(),
                json!([{
                    "type": "text",
                    "text": system.join("\n\n"),
                    "cache_control": {"type": "ephemeral"},
                }]),
            );
        }
        body.insert(
            "messages".into(),
            Value::Array(wire_messages(&request.messages)),
        );
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            });
            body.insert("tools".into(), tools.collect());
        }
        // Anthropic refuses a temperature with thinking on.
        if let Some(temperature) = request.temperature
            && self.thinking_budget.is_none()
        {
            body.insert("temperature".into(), temperature.into());
        }
        if !stop.is_empty() {
            body.insert("stop_sequences".into(), json!(stop));
        }
        if self.core.stream {
            body.insert("stream".into(), true.into());
        }
        Value::Object(body)
    }
}

#[async_trait]
impl Wire for AnthropicClient {
    async fn send(
        &self,
        request: &CompletionRequest,
        stop: &[&str],
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        let stream = self.core.stream;
        self.core
            .complete(
                &self.url,
                self.headers()?,
                self.body(request, stop),
                observer,
                |response| async move {
                    if stream && !http::is_json(&response) {
                        read_stream(response).await
                    } else {
                        read_json(http::json_body(response).await?)
                    }
                },
            )
            .await
    }

    fn takes_stop(&self) -> bool {
        true
    }

    fn model(&self) -> &str {
        &self.core.model
    }
}

/// The conversation as Anthropic messages: system messages left out (they are top-level),
/// tool results as `tool_result` blocks in a user message, consecutive results in one message.
fn wire_messages(messages: &[Message]) -> Vec<Value> {
    // (role, blocks) pairs, merged as they are built.
    let mut wire: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in messages {
        match message.role {
            Role::System => {}
            Role::User => {
                let mut block: Vec<Value> = text_block(&message.content).into_iter().collect();
                block.extend(message.images.iter().filter_map(|url| image_block(url)));
                // Text after tool results in the same user message is allowed (results must
                // come first), so a user message right after results joins them.
                match wire.last_mut() {
                    Some(("user", blocks)) => blocks.extend(block),
                    _ => wire.push(("user", block)),
                }
            }
            Role::Tool => {
                // A result with images holds them as blocks beside its text.
                let content = if message.images.is_empty() {
                    Value::from(message.content.as_str())
                } else {
                    let mut blocks: Vec<Value> = text_block(&message.content).into_iter().collect();
                    blocks.extend(message.images.iter().filter_map(|url| image_block(url)));
                    Value::Array(blocks)
                };
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                    "content": content,
                });
                match wire.last_mut() {
                    Some(("user", blocks)) if blocks.iter().all(is_tool_result) => {
                        blocks.push(block)
                    }
                    _ => wire.push(("user", vec![block])),
                }
            }
            Role::Assistant => {
                // Thinking first: Anthropic wants an assistant turn to start with the thinking
                // that led to it, signatures unchanged.
                let mut blocks: Vec<Value> = message.thinking_blocks.clone();
                blocks.extend(text_block(&message.content));
                blocks.extend(message.tool_calls.iter().map(|call| {
                    json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    })
                }));
                // Anthropic refuses empty content; an assistant turn that said nothing is left
                // out rather than invented.
                if !blocks.is_empty() {
                    wire.push(("assistant", blocks));
                }
            }
        }
    }
    // Cache marks on the last two user messages: each turn then reads the previous turn's
    // prefix from the cache and writes its own (Anthropic allows four marks; the system prompt
    // has one).
    let mut marked = 0;
    for (role, blocks) in wire.iter_mut().rev() {
        if marked == 2 {
            break;
        }
        if *role == "user"
            && let Some(Value::Object(last)) = blocks.last_mut()
        {
            last.insert("cache_control".into(), json!({"type": "ephemeral"}));
            marked += 1;
        }
    }
    wire.into_iter()
        .filter(|(_, blocks)| !blocks.is_empty())
        .map(|(role, blocks)| json!({"role": role, "content": blocks}))
        .collect()
}

/// An image block: a `data:` URL as base64 data, an http(s) URL as a URL source.
fn image_block(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest.split_once(";base64,")?;
        return Some(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    (url.starts_with("https://") || url.starts_with("http://"))
        .then(|| json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// A text block, or none for empty text (Anthropic refuses empty text blocks).
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn is_tool_result(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("tool_result")
}

/// `tool_use.input` must be an object. Arguments that are not a JSON object (a model's broken
/// JSON, answered to it as an error by the agent) go back as an empty object: the tool result
/// that follows says what was wrong.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(input)) => Value::Object(input),
        _ => json!({}),
    }
}

/// An answer given whole.
fn read_json(body: Value) -> Result<Answer, LlmError> {
    if body.get("type").and_then(Value::as_str) == Some("error") {
        return Err(event_error(&body));
    }
    let mut blocks = Blocks::default();
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::InvalidResponse("the answer has no content".into()))?;
    for (index, block) in content.iter().enumerate() {
        blocks.start(index as u64, block);
    }
    let mut answer = Answer {
        response_id: text(body.get("id")),
        model: text(body.get("model")),
        finish_reason: body
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_reason),
        ..Answer::default()
    };
    if let Some(u) = body.get("usage") {
        answer.usage = usage(&WireUsage::default().updated(u));
    }
    blocks.finish(&mut answer);
    Ok(answer)
}

/// An answer given as events: `message_start`, then per content block `content_block_start`,
/// `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason, output
/// usage) and `message_stop`. `ping`s and unknown events are skipped, as Anthropic asks.
async fn read_stream(response: reqwest::Response) -> Result<Answer, LlmError> {
    let mut events = pin!(http::events(response));
    let mut answer = Answer::default();
    let mut blocks = Blocks::default();
    let mut counts = WireUsage::default();
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event?;
        if event.data.trim().is_empty() {
            continue;
        }
        let data = http::event_json(&event.data)?;
        match data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str())
        {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                answer.response_id = text(message.get("id"));
                answer.model = text(message.get("model"));
                if let Some(u) = message.get("usage") {
                    counts = counts.updated(u);
                }
            }
            "content_block_start" => {
                if let (Some(index), Some(block)) = (index(&data), data.get("content_block")) {
                    blocks.start(index, block);
                }
            }
            "content_block_delta" => {
                if let (Some(index), Some(delta)) = (index(&data), data.get("delta")) {
                    blocks.delta(index, delta);
                }
            }
            "message_delta" => {
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    answer.finish_reason = Some(finish_reason(reason));
                }
                // Counts here are totals so far, and may repeat or correct the input counts of
                // `message_start`.
                if let Some(u) = data.get("usage") {
                    counts = counts.updated(u);
                }
            }
            "message_stop" => {
                done = true;
                break;
            }
            "error" => return Err(event_error(&data)),
            _ => {}
        }
    }
    // Cut off before the stop reason: the answer may be partial, so the attempt counts as a
    // network failure and is retried. (A proxy that drops only `message_stop` is fine.)
    if !done && answer.finish_reason.is_none() {
        return Err(LlmError::Network(
            "the answer stream ended before the answer was complete".into(),
        ));
    }
    answer.usage = usage(&counts);
    blocks.finish(&mut answer);
    Ok(answer)
}

/// Content blocks by index as they arrive.
#[derive(Default)]
struct Blocks(BTreeMap<u64, Block>);

enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        /// `input` from the block's start: the whole input when not streamed.
        input: Value,
        /// The `input_json_delta` pieces, when streamed.
        json: String,
    },
    /// `thinking` (its text and signature put together from deltas when streamed) or
    /// `redacted_thinking`, kept as Anthropic gave it.
    Thinking(Map<String, Value>),
    /// Anything newer: not part of the text or the calls.
    Other,
}

impl Blocks {
    fn start(&mut self, index: u64, block: &Value) {
        let block = match block.get("type").and_then(Value::as_str) {
            Some("text") => Block::Text(text(block.get("text"))),
            Some("tool_use") => Block::ToolUse {
                id: text(block.get("id")),
                name: text(block.get("name")),
                input: block.get("input").cloned().unwrap_or(Value::Null),
                json: String::new(),
            },
            Some("thinking" | "redacted_thinking") => match block {
                Value::Object(block) => Block::Thinking(block.clone()),
                _ => Block::Other,
            },
            _ => Block::Other,
        };
        self.0.insert(index, block);
    }

    fn delta(&mut self, index: u64, delta: &Value) {
        let piece = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or_default();
        match (
            self.0.get_mut(&index),
            delta.get("type").and_then(Value::as_str),
        ) {
            (Some(Block::Text(text)), Some("text_delta")) => text.push_str(piece("text")),
            (Some(Block::ToolUse { json, .. }), Some("input_json_delta")) => {
                json.push_str(piece("partial_json"))
            }
            (Some(Block::Thinking(block)), Some("thinking_delta")) => {
                append(block, "thinking", piece("thinking"))
            }
            (Some(Block::Thinking(block)), Some("signature_delta")) => {
                append(block, "signature", piece("signature"))
            }
            _ => {}
        }
    }

    fn finish(self, answer: &mut Answer) {
        let mut texts = Vec::new();
        let mut thoughts = Vec::new();
        for block in self.0.into_values() {
            match block {
                Block::Text(text) if !text.is_empty() => texts.push(text),
                Block::Thinking(block) => {
                    if let Some(thought) = block.get("thinking").and_then(Value::as_str)
                        && !thought.is_empty()
                    {
                        thoughts.push(thought.to_owned());
                    }
                    answer.thinking_blocks.push(Value::Object(block));
                }
                Block::ToolUse {
                    id,
                    name,
                    input,
                    json,
                } => {
                    let arguments = if !json.trim().is_empty() {
                        json
                    } else if input.is_object() {
                        input.to_string()
                    } else {
                        "{}".to_owned()
                    };
                    answer.tool_calls.push(ToolCall {
                        id: if id.is_empty() {
                            http::fresh_call_id()
                        } else {
                            id
                        },
                        name,
                        arguments,
                    });
                }
                _ => {}
            }
        }
        answer.text = texts.join("\n");
        answer.reasoning = thoughts.join("\n");
    }
}

/// Appends a streamed piece to a string field of a block, creating the field if need be.
fn append(block: &mut Map<String, Value>, key: &str, piece: &str) {
    match block.get_mut(key) {
        Some(Value::String(text)) => text.push_str(piece),
        _ => {
            block.insert(key.into(), piece.into());
        }
    }
}

/// Anthropic's token counts, as the latest event gave them.
#[derive(Default, Clone, Copy)]
struct WireUsage {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl WireUsage {
    /// These counts with whichever ones `usage` gives replaced.
    fn updated(mut self, usage: &Value) -> WireUsage {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64);
        self.input = count("input_tokens").unwrap_or(self.input);
        self.output = count("output_tokens").unwrap_or(self.output);
        self.cache_read = count("cache_read_input_tokens").unwrap_or(self.cache_read);
        self.cache_write = count("cache_creation_input_tokens").unwrap_or(self.cache_write);
        self
    }
}

/// Anthropic's `input_tokens` leaves out the cached ones; `prompt_tokens` counts them all.
fn usage(counts: &WireUsage) -> Usage {
    Usage {
        prompt_tokens: counts.input + counts.cache_read + counts.cache_write,
        completion_tokens: counts.output,
        cache_read_tokens: counts.cache_read,
        cache_write_tokens: counts.cache_write,
    }
}

/// Anthropic's stop reasons in OpenAI's words.
fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        other => other,
    }
    .to_owned()
}

/// An `error` event (or error body): `{"type":"error","error":{"type":"overloaded_error",..}}`.
/// The error type stands for the status it would have had as a response.
fn event_error(data: &Value) -> LlmError {
    let kind = data
        .get("error")
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    LlmError::from_status(status, error_message(&data.to_string()), None)
}

fn index(data: &Value) -> Option<u64> {
    data.get("index").and_then(Value::as_u64)
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_merge_into_one_user_message_and_text_follows_them() {
        let messages = vec![
            Message::system("be brief"),
            Message::user("list files"),
            Message::assistant(
                "",
                vec![
                    ToolCall {
                        id: "toolu_1".into(),
                        name: "execute_bash".into(),
                        arguments: r#"{"command":"ls"}"#.into(),
                    },
                    ToolCall {
                        id: "toolu_2".into(),
                        name: "execute_bash".into(),
                        arguments: "not json".into(),
                    },
                ],
            ),
            Message::tool_result("toolu_1", "a.txt"),
            Message::tool_result("toolu_2", "bad arguments"),
            Message::user("thanks"),
        ];
        let wire = wire_messages(&messages);
        assert_eq!(wire.len(), 3, "{wire:#?}");
        assert_eq!(wire[1]["content"][0]["input"], json!({"command": "ls"}));
        assert_eq!(wire[1]["content"][1]["input"], json!({}));
        let results = &wire[2]["content"];
        assert_eq!(results[0]["type"], "tool_result");
        assert_eq!(results[0]["tool_use_id"], "toolu_1");
        assert_eq!(results[1]["tool_use_id"], "toolu_2");
        assert_eq!(results[2]["text"], "thanks");
        assert_eq!(results[2]["cache_control"]["type"], "ephemeral");
    }
}
