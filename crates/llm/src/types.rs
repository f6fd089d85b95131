//! What the agent asks a model and what it gets back, the same whichever provider answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::Answer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The answer to one tool call; `tool_call_id` says which.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `Tool` message, the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Images shown with a user message or a tool result: `data:image/...;base64,` URLs or
    /// http(s) URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// An assistant message's thinking, as Anthropic gave it (`thinking` blocks with their
    /// signatures, `redacted_thinking` blocks): sent back first in that message, as Anthropic
    /// requires when thinking is on and tool results follow. Other providers ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<Value>,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message::text(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::text(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::text(Role::Assistant, content)
        }
    }

    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::text(Role::Tool, content)
        }
    }

    /// The same message with these images.
    pub fn with_images(mut self, images: Vec<String>) -> Message {
        self.images = images;
        self
    }

    /// The same message with these thinking blocks ([`Completion::thinking_blocks`]).
    pub fn with_thinking_blocks(mut self, blocks: Vec<Value>) -> Message {
        self.thinking_blocks = blocks;
        self
    }

    fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
            thinking_blocks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not parsed here, because a model may
    /// write invalid JSON and the agent answers that to the model as the tool's result.
    pub arguments: String,
}

/// A tool offered to the model; `parameters` is its JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Tokens one completion used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every prompt token, whether the provider read it from its cache or not (OpenAI counts
    /// that way; Anthropic's `input_tokens` leaves cached ones out, and is added up here).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The provider's id for the response (`chatcmpl-...`, `msg_...`).
    pub response_id: String,
    /// The text the model wrote; empty when it only called tools.
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, in OpenAI's words: `stop`, `tool_calls`, `length`, or whatever
    /// else the provider said.
    pub finish_reason: Option<String>,
    /// What the model wrote while reasoning, when the provider shows it: OpenAI-compatible
    /// servers' `reasoning_content` or `reasoning`, the text of Anthropic's thinking blocks.
    pub reasoning: Option<String>,
    /// Anthropic's `thinking` and `redacted_thinking` blocks exactly as received, signatures
    /// included: put them on the assistant message ([`Message::with_thinking_blocks`]) so they
    /// go back with it.
    pub thinking_blocks: Vec<Value>,
    pub usage: Usage,
    /// The answer as an OpenAI ChatCompletion object (`id`, `model`, `choices[0].message` with
    /// `content` and `tool_calls`, and, as LiteLLM gives them, `reasoning_content` and
    /// `thinking_blocks` when there are any; `usage`), whichever provider gave it: OpenHands
    /// events carry this as `tool_call_metadata.model_response`.
    pub model_response: Value,
    /// From sending the request to the end of the answer, for the attempt that succeeded.
    pub latency: Duration,
    /// USD, when the model's price is known or configured.
    pub cost: Option<f64>,
}

/// The OpenAI ChatCompletion object for an answer, in the key order LiteLLM gives it.
pub(crate) fn model_response(answer: &Answer, model: &str) -> Value {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let usage = &answer.usage;
    let mut response = json!({
        "id": answer.response_id,
        "created": created,
        "model": model,
        "object": "chat.completion",
        "system_fingerprint": null,
        "choices": [{
            "finish_reason": answer.finish_reason,
            "index": 0,
            "message": {"role": "assistant"},
        }],
        "usage": {
            "completion_tokens": usage.completion_tokens,
            "prompt_tokens": usage.prompt_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
        },
    });
    if let Some(Value::Object(message)) = response.pointer_mut("/choices/0/message") {
        set_message(message, &answer.text, &answer.tool_calls);
        if !answer.reasoning.is_empty() {
            message.insert("reasoning_content".into(), answer.reasoning.clone().into());
        }
        if !answer.thinking_blocks.is_empty() {
            message.insert(
                "thinking_blocks".into(),
                Value::Array(answer.thinking_blocks.clone()),
            );
        }
    }
    response
}

/// Writes an answer's text and calls into a `choices[0].message` object, as OpenAI does: null
/// content when there is no text, null `tool_calls` when there are no calls.
pub(crate) fn set_message(message: &mut Map<String, Value>, text: &str, tool_calls: &[ToolCall]) {
    let calls: Option<Vec<Value>> = (!tool_calls.is_empty()).then(|| {
        tool_calls
            .iter()
            .map(|call| {
                json!({
                    "function": {"arguments": call.arguments, "name": call.name},
                    "id": call.id,
                    "type": "function",
                })
            })
            .collect()
    });
    let content = if text.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    };
    message.insert("content".into(), content);
    message.insert("tool_calls".into(), json!(calls));
    message.insert("function_call".into(), Value::Null);
}
