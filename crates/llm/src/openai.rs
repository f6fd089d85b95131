//! OpenAI Chat Completions with tool calling, streamed or not. The same wire format serves the
//! OpenAI-compatible servers (vLLM, Ollama, llama.cpp, OpenRouter, LiteLLM), so the reader is
//! lenient where they differ: usage may never come, ids or indexes may be missing, arguments may
//! be an object instead of a string, a "stream" may come back as one JSON answer.

use std::collections::BTreeMap;
use std::pin::pin;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::{Map, Value, json};

use crate::error::{LlmError, error_message};
use crate::http::{self, Answer, Core, Wire};
use crate::model::OPENAI_BASE_URL;
use crate::retry::RetryObserver;
use crate::types::{Completion, CompletionRequest, Message, Role, ToolCall, Usage};

pub(crate) struct OpenAiClient {
    core: Core,
    url: String,
    /// OpenAI itself, whose newer models refuse `max_tokens` and a set temperature.
    official: bool,
    /// `low`, `medium` or `high`, for a model that takes it.
    reasoning_effort: Option<&'static str>,
}

impl OpenAiClient {
    /// `reasoning_effort` is sent only to models known to take it (see
    /// [`takes_reasoning_effort`]); others refuse it or ignore it.
    pub(crate) fn new(
        core: Core,
        base_url: &str,
        reasoning_effort: Option<&'static str>,
    ) -> OpenAiClient {
        let base = base_url.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") {
            base.to_owned()
        } else {
            format!("{base}/chat/completions")
        };
        let reasoning_effort = reasoning_effort.filter(|_| {
            let takes = takes_reasoning_effort(&core.name);
            if !takes {
                tracing::info!(
                    model = %core.model,
                    "reasoning_effort is not sent: this model is not known to take it"
                );
            }
            takes
        });
        OpenAiClient {
            core,
            url,
            official: base == OPENAI_BASE_URL,
            reasoning_effort,
        }
    }

    fn headers(&self) -> Result<HeaderMap, LlmError> {
        let mut headers = HeaderMap::new();
        // Local servers usually need no key; sending none is what they expect.
        if let Some(key) = self.core.api_key() {
            headers.insert(
                AUTHORIZATION,
                Core::secret_header(&format!("Bearer {key}"))?,
            );
        }
        Ok(headers)
    }

    fn body(&self, request: &CompletionRequest, stop: &[&str]) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), self.core.name.clone().into());
        body.insert(
            "messages".into(),
            Value::Array(wire_messages(&request.messages)),
        );
        // An empty `tools` list is an error on some servers; leave it out instead.
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            });
            body.insert("tools".into(), tools.collect());
        }
        if let Some(max_tokens) = request.max_tokens {
            // OpenAI's reasoning models accept only the newer name; many compatible servers
            // know only the older one.
            let key = if self.official {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(key.into(), max_tokens.into());
        }
        if let Some(temperature) = request.temperature
            && !(self.official && is_reasoning_model(&self.core.name))
        {
            body.insert("temperature".into(), temperature.into());
        }
        if let Some(effort) = self.reasoning_effort {
            body.insert("reasoning_effort".into(), effort.into());
        }
        if !stop.is_empty() {
            body.insert("stop".into(), json!(stop));
        }
        if self.core.stream {
            body.insert("stream".into(), true.into());
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }
}

#[async_trait]
impl Wire for OpenAiClient {
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
        takes_stop(&self.core.name)
    }

    fn model(&self) -> &str {
        &self.core.model
    }
}

/// The bare model name, lower case: no `provider/` path, no Ollama `:tag`.
fn base_name(name: &str) -> String {
    let name = name.rsplit('/').next().unwrap_or(name);
    let name = name.split(':').next().unwrap_or(name);
    name.trim().to_lowercase()
}

/// o1, o3, o4-mini, gpt-5...: models that take no temperature but the default.
fn is_reasoning_model(name: &str) -> bool {
    let name = base_name(name);
    name.strip_prefix('o')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        || name.starts_with("gpt-5")
}

/// Models that take `reasoning_effort`, whoever serves them (OpenRouter and LiteLLM pass it
/// on): OpenAI's o-series but o1-mini and o1-preview, the gpt-5 family but its chat models, and
/// the others the original sends it to (Gemini 2.5, DeepSeek R1), plus OpenAI's open gpt-oss,
/// which vLLM and Ollama serve with it.
fn takes_reasoning_effort(name: &str) -> bool {
    let name = base_name(name);
    let refused = ["o1-mini", "o1-preview", "gpt-5-chat"];
    if refused.iter().any(|r| name.starts_with(r)) {
        return false;
    }
    is_reasoning_model(&name)
        || ["gpt-oss", "gemini-2.5", "deepseek-r1"]
            .iter()
            .any(|family| name.starts_with(family))
}

/// Stop sequences are refused by OpenAI's reasoning models, and, as the original notes, by
/// grok-4 and DeepSeek R1.
fn takes_stop(name: &str) -> bool {
    let name = base_name(name);
    !(is_reasoning_model(&name)
        || ["grok-4", "grok-code-fast", "deepseek-r1"]
            .iter()
            .any(|family| name.starts_with(family)))
}

/// The messages in OpenAI's form. Tool messages cannot hold images there, so a tool result's
/// images follow, in a user message, once the results of that response are all given.
fn wire_messages(messages: &[Message]) -> Vec<Value> {
    let mut wire = Vec::with_capacity(messages.len());
    let mut held: Vec<Value> = Vec::new();
    for message in messages {
        if message.role != Role::Tool && !held.is_empty() {
            wire.push(json!({"role": "user", "content": std::mem::take(&mut held)}));
        }
        wire.push(wire_message(message));
        if message.role == Role::Tool && !message.images.is_empty() {
            held.push(json!({"type": "text", "text": format!(
                "The image(s) of the result of tool call {}:",
                message.tool_call_id.as_deref().unwrap_or_default()
            )}));
            held.extend(message.images.iter().map(|url| image_part(url)));
        }
    }
    if !held.is_empty() {
        wire.push(json!({"role": "user", "content": held}));
    }
    wire
}

fn image_part(url: &str) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn wire_message(message: &Message) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User if !message.images.is_empty() => {
            let mut parts = vec![json!({"type": "text", "text": message.content})];
            parts.extend(message.images.iter().map(|url| image_part(url)));
            json!({"role": "user", "content": parts})
        }
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": message.content,
        }),
        Role::Assistant => {
            let mut wire = Map::new();
            wire.insert("role".into(), "assistant".into());
            // With tool calls and no text, `content` is null, as OpenAI itself returns it.
            let content = if message.content.is_empty() && !message.tool_calls.is_empty() {
                Value::Null
            } else {
                message.content.clone().into()
            };
            wire.insert("content".into(), content);
            if !message.tool_calls.is_empty() {
                let calls = message.tool_calls.iter().map(|call| {
                    json!({
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    })
                });
                wire.insert("tool_calls".into(), calls.collect());
            }
            Value::Object(wire)
        }
    }
}

/// An answer given whole (`stream: false`).
fn read_json(body: Value) -> Result<Answer, LlmError> {
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        return Err(stream_error(error));
    }
    let choice = body
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::InvalidResponse("the answer has no choices".into()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .filter_map(|call| {
                    let function = call.get("function")?;
                    let name = function.get("name")?.as_str()?.to_owned();
                    Some(ToolCall {
                        id: text(call.get("id")).unwrap_or_else(http::fresh_call_id),
                        name,
                        arguments: normal_arguments(http::arguments_text(
                            function.get("arguments"),
                        )),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut reasoning = Reasoning::default();
    reasoning.add(message);
    Ok(Answer {
        response_id: text(body.get("id")).unwrap_or_default(),
        model: text(body.get("model")).unwrap_or_default(),
        text: content_text(message.get("content")),
        tool_calls,
        finish_reason: text(choice.get("finish_reason")),
        reasoning: reasoning.text(),
        usage: body.get("usage").map(usage).unwrap_or_default(),
        ..Answer::default()
    })
}

/// Reasoning text under either name servers give it: `reasoning_content` (DeepSeek, vLLM,
/// LiteLLM) or `reasoning` (OpenRouter, Ollama). Kept apart because a server may send both with
/// the same text.
#[derive(Default)]
struct Reasoning {
    content: String,
    reasoning: String,
}

impl Reasoning {
    /// Adds what a message or a delta holds.
    fn add(&mut self, message: &Value) {
        if let Some(piece) = message.get("reasoning_content").and_then(Value::as_str) {
            self.content.push_str(piece);
        }
        if let Some(piece) = message.get("reasoning").and_then(Value::as_str) {
            self.reasoning.push_str(piece);
        }
    }

    fn text(self) -> String {
        if self.content.is_empty() {
            self.reasoning
        } else {
            self.content
        }
    }
}

/// A tool call as its deltas arrive.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// An answer given as a stream of `chat.completion.chunk` events.
async fn read_stream(response: reqwest::Response) -> Result<Answer, LlmError> {
    let mut events = pin!(http::events(response));
    let mut answer = Answer::default();
    let mut calls: BTreeMap<u64, PartialCall> = BTreeMap::new();
    let mut reasoning = Reasoning::default();
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event?;
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk = http::event_json(data)?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        if answer.response_id.is_empty()
            && let Some(id) = text(chunk.get("id"))
        {
            answer.response_id = id;
        }
        if answer.model.is_empty()
            && let Some(model) = text(chunk.get("model"))
        {
            answer.model = model;
        }
        // Usage comes in a last chunk with no choices when asked for; some servers send a
        // running total on every chunk instead. The last one seen is the total either way.
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            answer.usage = usage(u);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            continue;
        };
        if let Some(reason) = text(choice.get("finish_reason")) {
            answer.finish_reason = Some(reason);
        }
        let Some(delta) = choice.get("delta") else {
            continue;
        };
        if let Some(content) = delta.get("content").and_then(Value::as_str) {
            answer.text.push_str(content);
        }
        reasoning.add(delta);
        let deltas = delta.get("tool_calls").and_then(Value::as_array);
        for (position, call) in deltas.into_iter().flatten().enumerate() {
            add_call_delta(&mut calls, position, call);
        }
    }
    // A stream that stops without `[DONE]` and without a finish reason was cut off: the answer
    // may be partial, so the attempt counts as a network failure and is retried.
    if !done && answer.finish_reason.is_none() {
        return Err(LlmError::Network(
            "the answer stream ended before the answer was complete".into(),
        ));
    }
    answer.reasoning = reasoning.text();
    answer.tool_calls = calls
        .into_values()
        .filter(|call| !call.name.is_empty())
        .map(|call| ToolCall {
            id: if call.id.is_empty() {
                http::fresh_call_id()
            } else {
                call.id
            },
            name: call.name,
            arguments: normal_arguments(call.arguments),
        })
        .collect();
    Ok(answer)
}

/// Folds one tool call delta into the calls so far. Deltas name their call by `index`; a server
/// that leaves it out is taken to send each call whole or under one id.
fn add_call_delta(calls: &mut BTreeMap<u64, PartialCall>, position: usize, delta: &Value) {
    let id = text(delta.get("id")).filter(|id| !id.is_empty());
    let index = match delta.get("index").and_then(Value::as_u64) {
        Some(index) => index,
        None => match &id {
            Some(id) => calls
                .iter()
                .find(|(_, call)| &call.id == id)
                .map(|(index, _)| *index)
                .unwrap_or_else(|| calls.keys().next_back().map_or(position as u64, |i| i + 1)),
            None => calls.keys().next_back().copied().unwrap_or(position as u64),
        },
    };
    let call = calls.entry(index).or_default();
    if let Some(id) = id {
        call.id = id;
    }
    let function = delta.get("function");
    if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
        // OpenAI sends the name once; a server that repeats it on every delta must not get it
        // doubled.
        if call.name.is_empty() {
            call.name = name.to_owned();
        } else if name != call.name {
            call.name.push_str(name);
        }
    }
    call.arguments.push_str(&http::arguments_text(
        function.and_then(|f| f.get("arguments")),
    ));
}

/// A call with no arguments at all is a call with an empty object of them.
fn normal_arguments(arguments: String) -> String {
    if arguments.trim().is_empty() {
        "{}".to_owned()
    } else {
        arguments
    }
}

/// An error sent inside a 200 answer (in the stream, or as the body). OpenRouter puts the
/// upstream status in `code`; without one it is taken as a server failure.
fn stream_error(error: &Value) -> LlmError {
    let status = error
        .get("code")
        .or_else(|| error.get("status"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(500);
    let body = json!({"error": error}).to_string();
    LlmError::from_status(status, error_message(&body), None)
}

/// Message content: a string, or (from a few servers) a list of `{"type":"text","text":..}`.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn usage(usage: &Value) -> Usage {
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let cache_read = count(
        usage
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens")),
    )
    .max(count(usage.get("cache_read_input_tokens")));
    Usage {
        prompt_tokens: count(usage.get("prompt_tokens")),
        completion_tokens: count(usage.get("completion_tokens")),
        cache_read_tokens: cache_read,
        // LiteLLM proxies in front of Anthropic report cache writes this way.
        cache_write_tokens: count(usage.get("cache_creation_input_tokens")),
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_without_index_are_told_apart_by_id() {
        let mut calls = BTreeMap::new();
        add_call_delta(
            &mut calls,
            0,
            &json!({"id": "a", "function": {"name": "f", "arguments": "{}"}}),
        );
        add_call_delta(
            &mut calls,
            0,
            &json!({"id": "b", "function": {"name": "g", "arguments": "{\"x\":1}"}}),
        );
        let names: Vec<_> = calls.values().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["f", "g"]);
    }

    #[test]
    fn a_repeated_name_is_not_doubled() {
        let mut calls = BTreeMap::new();
        for piece in ["{\"a\"", ":1}"] {
            add_call_delta(
                &mut calls,
                0,
                &json!({"index": 0, "function": {"name": "run", "arguments": piece}}),
            );
        }
        let call = &calls[&0];
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("run", "{\"a\":1}")
        );
    }

    #[test]
    fn reasoning_models_are_recognised() {
        assert!(is_reasoning_model("o3"));
        assert!(is_reasoning_model("o4-mini"));
        assert!(is_reasoning_model("gpt-5-mini"));
        assert!(!is_reasoning_model("gpt-4o"));
        assert!(!is_reasoning_model("ollama"));
    }

    #[test]
    fn reasoning_effort_goes_to_the_models_that_take_it_wherever_they_are_served() {
        for name in [
            "o3",
            "o4-mini-2025-04-16",
            "gpt-5",
            "openai/gpt-5-mini",
            "o1",
            "gpt-oss:20b",
            "google/gemini-2.5-pro",
            "deepseek/deepseek-r1-0528",
        ] {
            assert!(takes_reasoning_effort(name), "{name}");
        }
        for name in [
            "gpt-4o",
            "o1-mini",
            "gpt-5-chat-latest",
            "llama3.1:8b",
            "Qwen/Qwen2.5-Coder-7B",
        ] {
            assert!(!takes_reasoning_effort(name), "{name}");
        }
        assert!(takes_stop("gpt-4o") && takes_stop("qwen2.5-coder:7b"));
        assert!(!takes_stop("o3-mini") && !takes_stop("gpt-5") && !takes_stop("grok-4-0709"));
    }

    #[test]
    fn reasoning_is_read_under_either_name() {
        let whole = |message: Value| {
            read_json(json!({"choices": [{"message": message, "finish_reason": "stop"}]}))
                .unwrap()
                .reasoning
        };
        assert_eq!(
            whole(json!({"content": "4", "reasoning_content": "2+2"})),
            "2+2"
        );
        assert_eq!(whole(json!({"content": "4", "reasoning": "2+2"})), "2+2");
        assert_eq!(
            whole(json!({"content": "4", "reasoning": "same", "reasoning_content": "same"})),
            "same"
        );
        assert_eq!(whole(json!({"content": "4"})), "");
    }
}
