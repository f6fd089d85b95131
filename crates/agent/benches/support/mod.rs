//! What the agent benches share: a conversation in a fresh log, and the context of its agent.

use ohd_agent::AgentContext;
use ohd_protocol::ConversationId;
use ohd_runtime::sandbox::{Sandbox, SandboxConfig};
use ohd_store::{ConversationRecord, EventLog};
use std::sync::{Arc, Mutex};

/// A new conversation in `log`.
pub async fn new_conversation(log: &EventLog) -> ConversationId {
    let conversation = ConversationId::generate();
    log.store()
        .create_conversation(ConversationRecord::new(conversation.clone()))
        .await
        .unwrap();
    conversation
}

/// An agent's context for `conversation`, its workspace `dir/workspace`, in the sandbox this
/// machine allows (without network).
pub fn agent_context(
    log: &EventLog,
    conversation: &ConversationId,
    dir: &std::path::Path,
) -> AgentContext {
    AgentContext {
        conversation: conversation.clone(),
        log: log.clone(),
        workspace: dir.join("workspace"),
        env: Arc::new(Mutex::new(Vec::new())),
        sandbox: Arc::new(Sandbox::decide(SandboxConfig {
            network: false,
            ..SandboxConfig::default()
        })),
        presence: Default::default(),
        places: None,
        secret_names: Vec::new(),
        repository: None,
        latest_settings: None,
    }
}
