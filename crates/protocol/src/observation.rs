//! Observations: what happened in answer to an action (`openhands/events/observation/*.py`).
//!
//! Each variant serializes as `"observation": "<type>", "content": "...", "extras": {...}`; a
//! command's observation also carries the top-level `success` the original adds.

use crate::agent_state::AgentState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "observation", rename_all = "snake_case")]
pub enum Observation {
    Run {
        content: String,
        extras: RunExtras,
        success: bool,
    },
    Read {
        content: String,
        extras: ReadExtras,
    },
    Edit {
        content: String,
        extras: EditExtras,
    },
    Think {
        content: String,
        #[serde(default)]
        extras: Empty,
    },
    Error {
        content: String,
        #[serde(default)]
        extras: ErrorExtras,
    },
    UserRejected {
        content: String,
        #[serde(default)]
        extras: Empty,
    },
    AgentStateChanged {
        #[serde(default)]
        content: String,
        extras: AgentStateExtras,
    },
    /// What the workspace's microagents told the model (`recall` in the original).
    Recall {
        content: String,
        extras: RecallExtras,
    },
    /// An MCP tool's result (the original's `MCPObservation`): `content` is the tool's
    /// `CallToolResult` as JSON, or `{"isError": true, "error": ..., "content": []}`.
    Mcp {
        content: String,
        extras: McpExtras,
    },
}

/// Which MCP tool was called, and with what.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct McpExtras {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// The original's `RecallObservation` fields: workspace context or triggered knowledge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecallExtras {
    /// `workspace_context` or `knowledge`.
    pub recall_type: String,
    #[serde(default)]
    pub repo_name: String,
    #[serde(default)]
    pub repo_directory: String,
    #[serde(default)]
    pub repo_branch: String,
    #[serde(default)]
    pub repo_instructions: String,
    #[serde(default)]
    pub runtime_hosts: std::collections::BTreeMap<String, u16>,
    #[serde(default)]
    pub additional_agent_instructions: String,
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub custom_secrets_descriptions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub conversation_instructions: String,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub microagent_knowledge: Vec<MicroagentKnowledge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroagentKnowledge {
    pub name: String,
    pub trigger: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunExtras {
    pub command: String,
    pub metadata: RunMetadata,
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// -1 while the command is still running (soft timeout), as in the original.
    pub exit_code: i64,
    #[serde(default = "minus_one")]
    pub pid: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub py_interpreter_path: Option<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub suffix: String,
}

fn minus_one() -> i64 {
    -1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadExtras {
    pub path: String,
    #[serde(default)]
    pub impl_source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditExtras {
    pub path: String,
    #[serde(default)]
    pub prev_exist: bool,
    #[serde(default)]
    pub old_content: Option<String>,
    #[serde(default)]
    pub new_content: Option<String>,
    #[serde(default)]
    pub impl_source: String,
    #[serde(default)]
    pub diff: Option<String>,
    /// A dataclass field of the original that leaks onto the wire; clients may expect the key.
    #[serde(default, rename = "_diff_cache")]
    pub diff_cache: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorExtras {
    #[serde(default)]
    pub error_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStateExtras {
    pub agent_state: AgentState,
    #[serde(default)]
    pub reason: String,
}

impl Observation {
    pub fn agent_state_changed(state: AgentState, reason: impl Into<String>) -> Self {
        Observation::AgentStateChanged {
            content: String::new(),
            extras: AgentStateExtras {
                agent_state: state,
                reason: reason.into(),
            },
        }
    }

    pub fn error(content: impl Into<String>, error_id: impl Into<String>) -> Self {
        Observation::Error {
            content: content.into(),
            extras: ErrorExtras {
                error_id: error_id.into(),
            },
        }
    }

    /// The observation's `message`, as the original's `message` property words it.
    pub fn message(&self) -> String {
        match self {
            Observation::Run { extras, .. } => format!(
                "Command `{}` executed with exit code {}.",
                extras.command, extras.metadata.exit_code
            ),
            Observation::Read { extras, .. } => format!("I read the file {}.", extras.path),
            Observation::Edit { extras, .. } => format!("I edited the file {}.", extras.path),
            Observation::Think { .. } => "Your thought has been logged.".to_owned(),
            Observation::Error { content, .. } | Observation::UserRejected { content, .. } => {
                content.clone()
            }
            Observation::AgentStateChanged { .. } => String::new(),
            Observation::Recall { extras, .. } if extras.recall_type == "knowledge" => {
                "Added microagent knowledge".to_owned()
            }
            Observation::Recall { .. } => "Added workspace context".to_owned(),
            Observation::Mcp { content, .. } => content.clone(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Observation::Run { .. } => "run",
            Observation::Read { .. } => "read",
            Observation::Edit { .. } => "edit",
            Observation::Think { .. } => "think",
            Observation::Error { .. } => "error",
            Observation::UserRejected { .. } => "user_rejected",
            Observation::AgentStateChanged { .. } => "agent_state_changed",
            Observation::Recall { .. } => "recall",
            Observation::Mcp { .. } => "mcp",
        }
    }
}
