//! Actions: things the user or the agent asks to happen (`openhands/events/action/*.py`).
//!
//! Each variant serializes as `"action": "<type>", "args": {...}` with every field the original
//! sends, defaults included, so the web UI and other clients find what they look for.

use crate::agent_state::AgentState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The original's security risk scale: -1 unknown, 0 low, 1 medium, 2 high.
pub const SECURITY_RISK_UNKNOWN: i8 = -1;

fn unknown_risk() -> i8 {
    SECURITY_RISK_UNKNOWN
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "args", rename_all = "snake_case")]
pub enum Action {
    Message(MessageArgs),
    System(SystemArgs),
    Run(RunArgs),
    Read(ReadArgs),
    Edit(EditArgs),
    Think(ThinkArgs),
    Finish(FinishArgs),
    ChangeAgentState(ChangeAgentStateArgs),
    /// The condenser's record of what the model no longer sees, and the summary it sees instead.
    Condensation(CondensationArgs),
    /// The model's context window overflowed: the next step condenses first.
    CondensationRequest(CondensationRequestArgs),
    /// What a user message asks of the workspace's microagents (stored with source `user`, as
    /// the original does); a `recall` observation answers it.
    Recall(RecallArgs),
    /// A call of a tool of an MCP server (the original's `MCPAction`); an `mcp` observation
    /// answers it.
    #[serde(rename = "call_tool_mcp")]
    Mcp(McpArgs),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpArgs {
    /// The tool's name as the model was given it.
    pub name: String,
    /// The call's arguments: a JSON object.
    #[serde(default)]
    pub arguments: Value,
    #[serde(default)]
    pub thought: String,
    #[serde(default = "unknown_risk")]
    pub security_risk: i8,
    /// Set in confirmation mode only, as for edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_state: Option<ConfirmationState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallArgs {
    /// `workspace_context` (the first message) or `knowledge`.
    pub recall_type: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub thought: String,
}

/// Either `forgotten_event_ids` or the inclusive range `forgotten_events_start_id` ..=
/// `forgotten_events_end_id`; `summary` goes into the view at `summary_offset`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CondensationArgs {
    #[serde(default)]
    pub forgotten_event_ids: Option<Vec<u64>>,
    #[serde(default)]
    pub forgotten_events_start_id: Option<u64>,
    #[serde(default)]
    pub forgotten_events_end_id: Option<u64>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub summary_offset: Option<usize>,
}

impl CondensationArgs {
    /// Whether the event with this id is forgotten.
    pub fn forgets(&self, id: u64) -> bool {
        if let Some(ids) = &self.forgotten_event_ids {
            return ids.contains(&id);
        }
        match (self.forgotten_events_start_id, self.forgotten_events_end_id) {
            (Some(start), Some(end)) => (start..=end).contains(&id),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CondensationRequestArgs {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageArgs {
    pub content: String,
    #[serde(default)]
    pub file_urls: Option<Vec<String>>,
    #[serde(default)]
    pub image_urls: Option<Vec<String>>,
    #[serde(default)]
    pub wait_for_response: bool,
    #[serde(default = "unknown_risk")]
    pub security_risk: i8,
    /// What a reasoning model thought before this answer (as LiteLLM names it), for clients
    /// that show it; only on the agent's messages of such models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemArgs {
    pub content: String,
    #[serde(default)]
    pub tools: Value,
    #[serde(default)]
    pub openhands_version: String,
    #[serde(default)]
    pub agent_class: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmationState {
    #[default]
    Confirmed,
    Rejected,
    AwaitingConfirmation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunArgs {
    pub command: String,
    #[serde(default)]
    pub is_input: bool,
    #[serde(default)]
    pub thought: String,
    #[serde(default)]
    pub blocking: bool,
    #[serde(default)]
    pub is_static: bool,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub confirmation_state: ConfirmationState,
    #[serde(default = "unknown_risk")]
    pub security_risk: i8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadArgs {
    pub path: String,
    #[serde(default)]
    pub start: i64,
    #[serde(default = "minus_one")]
    pub end: i64,
    #[serde(default)]
    pub thought: String,
    #[serde(default = "unknown_risk")]
    pub security_risk: i8,
    #[serde(default = "oh_aci")]
    pub impl_source: String,
    #[serde(default)]
    pub view_range: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditArgs {
    pub path: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub file_text: Option<String>,
    #[serde(default)]
    pub old_str: Option<String>,
    #[serde(default)]
    pub new_str: Option<String>,
    #[serde(default)]
    pub insert_line: Option<i64>,
    #[serde(default)]
    pub content: String,
    #[serde(default = "one")]
    pub start: i64,
    #[serde(default = "minus_one")]
    pub end: i64,
    #[serde(default)]
    pub thought: String,
    #[serde(default = "unknown_risk")]
    pub security_risk: i8,
    #[serde(default = "oh_aci")]
    pub impl_source: String,
    /// Set in confirmation mode only, so that edits outside it keep the original's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_state: Option<ConfirmationState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkArgs {
    pub thought: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishArgs {
    pub final_thought: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_completed: Option<String>,
    #[serde(default)]
    pub outputs: Value,
    #[serde(default)]
    pub thought: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeAgentStateArgs {
    pub agent_state: AgentState,
    #[serde(default)]
    pub thought: String,
}

fn minus_one() -> i64 {
    -1
}
fn one() -> i64 {
    1
}
fn oh_aci() -> String {
    "oh_aci".to_owned()
}

impl Action {
    /// The action's `message`, as the original's `message` property words it.
    pub fn message(&self) -> String {
        match self {
            Action::Message(a) => a.content.clone(),
            Action::System(a) => a.content.clone(),
            Action::Run(a) => format!("Running command: {}", a.command),
            Action::Read(a) => format!("Reading file: {}", a.path),
            Action::Edit(_) => String::new(),
            Action::Think(a) => format!("I am thinking...: {}", a.thought),
            Action::Finish(a) if !a.thought.is_empty() => a.thought.clone(),
            Action::Finish(_) => "All done! What's next on the agenda?".to_owned(),
            Action::ChangeAgentState(a) => format!("Agent state changed to {}", a.agent_state),
            Action::Condensation(a) => match &a.summary {
                Some(summary) if !summary.is_empty() => format!("Summary: {summary}"),
                _ => "Condenser is dropping events from the model's view.".to_owned(),
            },
            Action::CondensationRequest(_) => {
                "Requesting a condensation of the conversation history.".to_owned()
            }
            Action::Recall(a) => format!(
                "Retrieving content for: {}",
                a.query.chars().take(50).collect::<String>()
            ),
            Action::Mcp(a) => format!(
                "I am interacting with the MCP server with name:\n```\n{}\n```\nand arguments:\n```\n{}\n```",
                a.name, a.arguments
            ),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Message(_) => "message",
            Action::System(_) => "system",
            Action::Run(_) => "run",
            Action::Read(_) => "read",
            Action::Edit(_) => "edit",
            Action::Think(_) => "think",
            Action::Finish(_) => "finish",
            Action::ChangeAgentState(_) => "change_agent_state",
            Action::Condensation(_) => "condensation",
            Action::CondensationRequest(_) => "condensation_request",
            Action::Recall(_) => "recall",
            Action::Mcp(_) => "call_tool_mcp",
        }
    }
}

impl MessageArgs {
    pub fn user(content: impl Into<String>) -> Self {
        MessageArgs {
            content: content.into(),
            file_urls: None,
            image_urls: None,
            wait_for_response: false,
            security_risk: SECURITY_RISK_UNKNOWN,
            reasoning_content: None,
        }
    }
}

impl RunArgs {
    pub fn new(command: impl Into<String>) -> Self {
        RunArgs {
            command: command.into(),
            is_input: false,
            thought: String::new(),
            blocking: false,
            is_static: false,
            cwd: None,
            hidden: false,
            confirmation_state: ConfirmationState::Confirmed,
            security_risk: SECURITY_RISK_UNKNOWN,
        }
    }
}
