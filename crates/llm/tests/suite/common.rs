//! What the suites share: a scripted server, settings pointing at it, a tool, and an observer
//! that remembers the retries it was told of.

use std::sync::Mutex;
use std::time::Duration;

use ohd_llm::{
    CompletionRequest, LlmError, LlmSettings, Message, RetryObserver, ToolCall, ToolSpec,
};
use ohd_scripted_llm::{Script, ScriptedLlm, ScriptedLlmHandle, Turn};
use serde_json::json;

/// The key the tests configure; the scripted server echoes it back in its 401 answers.
pub const KEY: &str = "sk-test-secret-0123456789";

pub async fn serve(turns: Vec<Turn>) -> (String, ScriptedLlmHandle) {
    serve_script(Script::new(turns)).await
}

pub async fn serve_script(script: Script) -> (String, ScriptedLlmHandle) {
    ScriptedLlm::start(script).await.unwrap()
}

/// An OpenAI-compatible server at `root` (the scripted server's `/v1`).
pub fn openai(root: &str, stream: bool) -> LlmSettings {
    LlmSettings {
        model: "openai/gpt-4o".into(),
        api_key: Some(KEY.into()),
        base_url: Some(format!("{root}/v1")),
        stream,
        max_retries: 3,
        retry_min_wait: Duration::from_millis(20),
        retry_max_wait: Duration::from_millis(100),
        timeout: Duration::from_secs(20),
        ..LlmSettings::default()
    }
}

/// Anthropic at `root`.
pub fn anthropic(root: &str, stream: bool) -> LlmSettings {
    LlmSettings {
        model: "anthropic/claude-sonnet-4-5".into(),
        base_url: Some(root.to_owned()),
        ..openai(root, stream)
    }
}

pub fn bash_tool() -> ToolSpec {
    ToolSpec {
        name: "execute_bash".into(),
        description: "Run a command in the shell".into(),
        parameters: json!({
            "type": "object",
            "properties": {"command": {"type": "string"}, "is_input": {"type": "string"}},
            "required": ["command"],
        }),
    }
}

/// A first turn: system prompt, user message, the bash tool.
pub fn first_turn(user: &str) -> CompletionRequest {
    CompletionRequest {
        messages: vec![
            Message::system("You are a careful agent."),
            Message::user(user),
        ],
        tools: vec![bash_tool()],
        ..CompletionRequest::default()
    }
}

/// A later turn: the assistant called two tools and both answered.
pub fn after_tool_results() -> CompletionRequest {
    let calls = vec![
        ToolCall {
            id: "call_a".into(),
            name: "execute_bash".into(),
            arguments: r#"{"command":"ls"}"#.into(),
        },
        ToolCall {
            id: "call_b".into(),
            name: "execute_bash".into(),
            arguments: r#"{"command":"pwd"}"#.into(),
        },
    ];
    CompletionRequest {
        messages: vec![
            Message::system("You are a careful agent."),
            Message::user("Where am I and what is here?"),
            Message::assistant("Let me look.", calls),
            Message::tool_result("call_a", "a.txt\nb.txt"),
            Message::tool_result("call_b", "/workspace"),
        ],
        tools: vec![bash_tool()],
        max_tokens: Some(1000),
        temperature: Some(0.0),
    }
}

/// Remembers each retry it hears of.
#[derive(Default)]
pub struct Retries(pub Mutex<Vec<(u32, Duration, LlmError)>>);

impl RetryObserver for Retries {
    fn retrying(&self, attempt: u32, wait: Duration, reason: &LlmError) {
        self.0.lock().unwrap().push((attempt, wait, reason.clone()));
    }
}

impl Retries {
    pub fn seen(&self) -> Vec<(u32, Duration, LlmError)> {
        self.0.lock().unwrap().clone()
    }
}
