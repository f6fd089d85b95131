//! `ohd/demo`: a model built into ohd that plays one short task whatever it is asked, so that a
//! newcomer sees the agent work (`ohd demo`) with no API key and no network. It runs in the
//! process: there is no server to reach, and nothing to configure or leak.

use crate::types::{Completion, CompletionRequest, Role, ToolCall, Usage};
use crate::{LlmClient, LlmError, RetryObserver};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The model's name in `LLM_MODEL`.
pub const DEMO_MODEL: &str = "ohd/demo";

/// What it answers a side question (a conversation's title).
const TITLE: &str = "Demo: a shell script written, run and edited";

pub struct DemoModel {
    responses: AtomicU64,
}

impl DemoModel {
    pub fn new() -> DemoModel {
        DemoModel {
            responses: AtomicU64::new(0),
        }
    }
}

impl Default for DemoModel {
    fn default() -> Self {
        DemoModel::new()
    }
}

/// One step of the task: what the model says, and the tool it calls.
fn step(n: usize) -> (&'static str, &'static str, Value) {
    match n {
        0 => (
            "I am ohd's demo model: I play the same short task whatever you ask, so that you \
             can see how the agent works without an API key. First, a clean look at the workspace.",
            "execute_bash",
            json!({"command": "rm -f hello.sh; pwd; ls -A"}),
        ),
        1 => (
            "Now a small script, made with the file editor.",
            "str_replace_editor",
            json!({
                "command": "create",
                "path": "hello.sh",
                "file_text": "#!/bin/sh\n# Written by ohd's demo model.\necho \"Hello from the sandbox, $(whoami)!\"\n",
            }),
        ),
        2 => ("", "execute_bash", json!({"command": "sh hello.sh"})),
        3 => (
            "It works. Now an edit, which the editor shows as a diff.",
            "str_replace_editor",
            json!({
                "command": "str_replace",
                "path": "hello.sh",
                "old_str": "Hello from the sandbox",
                "new_str": "Hello again from the sandbox",
            }),
        ),
        4 => (
            "",
            "execute_bash",
            json!({"command": "sh hello.sh && ls -l hello.sh"}),
        ),
        _ => (
            "",
            "finish",
            json!({
                "message": "Done: I looked at the workspace, wrote hello.sh, ran it, edited it and \
                            ran it again. To use a real model, open Settings and choose one, or \
                            start `ohd serve` with LLM_MODEL and LLM_API_KEY.",
            }),
        ),
    }
}

/// How many answers the model gave since the request's last user message: every message plays
/// the task from its start.
fn answers_since_last_user_message(request: &CompletionRequest) -> usize {
    request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role != Role::User)
        .filter(|m| m.role == Role::Assistant)
        .count()
}

#[async_trait]
impl LlmClient for DemoModel {
    async fn complete(
        &self,
        request: &CompletionRequest,
        _observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        let n = self.responses.fetch_add(1, Ordering::Relaxed);
        let response_id = format!("demo-{n}");
        let (text, tool_calls) = if request.tools.is_empty() {
            (TITLE.to_owned(), Vec::new())
        } else {
            let (text, name, arguments) = step(answers_since_last_user_message(request));
            let call = ToolCall {
                id: format!("demo-call-{n}"),
                name: name.to_owned(),
                arguments: arguments.to_string(),
            };
            (text.to_owned(), vec![call])
        };
        // A moment per step, so that the page shows the task unfold rather than appear.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let finish_reason = if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let model_response = json!({
            "id": response_id,
            "object": "chat.completion",
            "model": "demo",
            "choices": [{
                "index": 0,
                "finish_reason": finish_reason,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "tool_calls": tool_calls.iter().map(|c| json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })).collect::<Vec<_>>(),
                },
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        });
        Ok(Completion {
            response_id,
            text,
            tool_calls,
            finish_reason: Some(finish_reason.to_owned()),
            reasoning: None,
            thinking_blocks: Vec::new(),
            usage: Usage::default(),
            model_response,
            latency: Duration::from_millis(300),
            cost: Some(0.0),
        })
    }

    fn model(&self) -> &str {
        DEMO_MODEL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    fn request(messages: Vec<Message>) -> CompletionRequest {
        CompletionRequest {
            messages,
            tools: vec![crate::ToolSpec {
                name: "execute_bash".into(),
                description: String::new(),
                parameters: json!({}),
            }],
            max_tokens: None,
            temperature: None,
        }
    }

    #[tokio::test]
    async fn every_user_message_plays_the_task_from_its_start() {
        let model = DemoModel::new();
        let first = model
            .complete(&request(vec![Message::user("hi")]), &())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.tool_calls[0].name, "execute_bash");
        let mut history = vec![Message::user("hi")];
        for _ in 0..5 {
            history.push(Message::assistant("", Vec::new()));
        }
        let last = model
            .complete(&request(history.clone()), &())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(last.tool_calls[0].name, "finish");
        history.push(Message::user("again"));
        let again = model
            .complete(&request(history), &())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.tool_calls[0].arguments, first.tool_calls[0].arguments);
    }
}
