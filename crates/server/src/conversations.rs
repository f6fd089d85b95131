//! Conversations: their records, their workspaces, and the events clients add to them.

use crate::agents::{AgentStatus, Agents};
use crate::error::ApiError;
use ohd_protocol::{ClientAction, ConversationId, NewEvent, Source, Timestamp};
use ohd_store::{ConversationRecord, EventLog, StoreError, StoredEvent};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct Conversations {
    log: EventLog,
    workspaces: PathBuf,
    agents: Arc<Agents>,
    connections: Mutex<HashMap<ConversationId, usize>>,
}

/// What a client may set when it creates a conversation.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    pub initial_user_msg: Option<String>,
    pub repository: Option<String>,
    pub git_provider: Option<String>,
    pub selected_branch: Option<String>,
    pub image_urls: Option<Vec<String>>,
    pub replay_json: Option<String>,
    pub suggested_task: Option<serde_json::Value>,
    pub create_microagent: Option<serde_json::Value>,
    pub conversation_instructions: Option<String>,
    pub mcp_config: Option<serde_json::Value>,
    pub trigger: Option<String>,
}

/// A conversation as the REST API shows it (`ConversationInfo` of the original).
#[derive(Debug, Serialize)]
pub struct ConversationInfo {
    pub conversation_id: ConversationId,
    pub title: String,
    pub last_updated_at: String,
    pub status: &'static str,
    pub runtime_status: Option<&'static str>,
    pub selected_repository: Option<String>,
    pub selected_branch: Option<String>,
    pub git_provider: Option<String>,
    pub trigger: String,
    pub num_connections: usize,
    /// `null` keeps the web UI on the same origin for per-conversation calls and the socket.
    pub url: Option<String>,
    pub session_api_key: Option<String>,
    pub created_at: String,
    pub pr_number: Vec<u64>,
    pub conversation_version: &'static str,
    pub sub_conversation_ids: Vec<String>,
}

/// Counts a socket as connected to a conversation until dropped.
pub struct ConnectionGuard {
    conversations: Arc<Conversations>,
    id: ConversationId,
    /// The agents' count of this conversation's clients.
    clients: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.clients
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut map = self
            .conversations
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

pub const MAX_TITLE_CHARS: usize = 200;

impl Conversations {
    pub fn new(log: EventLog, workspaces: PathBuf, agents: Arc<Agents>) -> Self {
        Conversations {
            log,
            workspaces,
            agents,
            connections: Mutex::new(HashMap::new()),
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn workspace(&self, id: &ConversationId) -> PathBuf {
        // Safe as a folder name: ConversationId admits only [A-Za-z0-9_-].
        self.workspaces.join(id.as_str())
    }

    pub async fn create(&self, request: NewConversation) -> Result<ConversationRecord, ApiError> {
        let mut record = ConversationRecord::new(ConversationId::generate());
        record.selected_repository = request.repository;
        record.selected_branch = request.selected_branch;
        record.git_provider = request.git_provider;
        if let Some(trigger) = request.trigger {
            record.trigger = trigger;
        }
        let workspace = self.workspace(&record.id);
        tokio::fs::create_dir_all(&workspace)
            .await
            .map_err(|e| ApiError::internal("cannot create the workspace", e))?;
        self.log.store().create_conversation(record.clone()).await?;
        if let Some(text) = request.initial_user_msg.filter(|t| !t.trim().is_empty()) {
            let mut message = ohd_protocol::action::MessageArgs::user(text);
            message.image_urls = request.image_urls;
            self.submit_all(&record.id, vec![ClientAction::Message(message)])
                .await?;
        }
        self.agents.ensure(&record.id, &[]);
        Ok(record)
    }

    pub async fn get(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        self.log.store().get_conversation(id).await
    }

    /// Stores what a client sent, as the user's, in order and as one append. The agent reads it
    /// from the log.
    pub async fn submit_all(
        &self,
        id: &ConversationId,
        actions: Vec<ClientAction>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let events = actions
            .into_iter()
            .map(|a| NewEvent::action(Source::User, a.into_action()))
            .collect();
        let stored = self.log.append_all(id, events).await?;
        self.agents.ensure(id, &[]);
        Ok(stored)
    }

    pub async fn rename(&self, id: &ConversationId, title: &str) -> Result<bool, StoreError> {
        self.log.rename(id, title).await
    }

    pub async fn delete(&self, id: &ConversationId) -> Result<bool, ApiError> {
        self.agents.stop_here(id).await;
        // Deleting ends the conversation's lease too: an owner on another node is fenced out,
        // stops its agent, and, finding the conversation gone, removes what it keeps of it.
        // (Stopping it first would let it see the stop before the conversation is gone.)
        let deleted = self.log.store().delete_conversation(id).await?;
        if deleted {
            self.agents.forget(id);
            let workspace = self.workspace(id);
            if let Err(e) = tokio::fs::remove_dir_all(&workspace).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(conversation = %id, error = %e, "workspace not removed");
            }
            if let Err(e) = self.agents.sandbox().await.remove_layer(&workspace) {
                tracing::warn!(conversation = %id, error = %e, "system layer not removed");
            }
        }
        Ok(deleted)
    }

    pub fn connect(self: &Arc<Self>, id: &ConversationId) -> ConnectionGuard {
        let mut map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(id.clone()).or_default() += 1;
        let clients = self.agents.clients(id);
        clients.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ConnectionGuard {
            conversations: self.clone(),
            id: id.clone(),
            clients,
        }
    }

    pub fn num_connections(&self, id: &ConversationId) -> usize {
        let map = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).copied().unwrap_or(0)
    }

    pub async fn info(&self, record: ConversationRecord) -> ConversationInfo {
        let num_connections = self.num_connections(&record.id);
        let (status, runtime_status) = status_of(self.agents.status_anywhere(&record.id).await);
        ConversationInfo {
            num_connections,
            title: record.title,
            last_updated_at: Timestamp::from_datetime(record.last_updated_at).to_string(),
            created_at: Timestamp::from_datetime(record.created_at).to_string(),
            status,
            runtime_status,
            selected_repository: record.selected_repository,
            selected_branch: record.selected_branch,
            git_provider: record.git_provider,
            trigger: record.trigger,
            url: None,
            session_api_key: None,
            pr_number: Vec::new(),
            conversation_version: "V0",
            sub_conversation_ids: Vec::new(),
            conversation_id: record.id,
        }
    }
}

/// The original's `status` and `runtime_status` for where the agent is. The web UI joins only
/// a `RUNNING` conversation with a runtime status, and asks to start a `STOPPED` one.
pub fn status_of(agent: AgentStatus) -> (&'static str, Option<&'static str>) {
    match agent {
        // Without agents the log is always there to join.
        AgentStatus::Running | AgentStatus::Disabled => ("RUNNING", Some("STATUS$READY")),
        AgentStatus::Queued => ("STARTING", Some("STATUS$STARTING_RUNTIME")),
        AgentStatus::Stopped => ("STOPPED", None),
    }
}
