use crate::{Fence, LeaseStore, LogItem, Notifier, Store, StoreError, StoredEvent};
use ohd_protocol::notice::StatusUpdate;
use ohd_protocol::{ConversationId, NewEvent};
use std::sync::Arc;

/// The one way events enter a conversation: committed by the store, then published.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
    /// Set on the log an owner's agent writes through: every append checks the lease.
    fence: Option<Arc<(Arc<dyn LeaseStore>, Fence)>>,
}

impl EventLog {
    pub fn new(store: Arc<dyn Store>, notifier: Arc<dyn Notifier>) -> Self {
        EventLog {
            store,
            notifier,
            fence: None,
        }
    }

    /// The same log, but every append commits only while `fence` is the conversation's current
    /// lease: a node that lost its lease (paused, cut off) can never append as owner again.
    pub fn fenced(&self, leases: Arc<dyn LeaseStore>, fence: Fence) -> EventLog {
        EventLog {
            fence: Some(Arc::new((leases, fence))),
            ..self.clone()
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn notifier(&self) -> &Arc<dyn Notifier> {
        &self.notifier
    }

    pub async fn append(
        &self,
        conversation: &ConversationId,
        event: NewEvent,
    ) -> Result<StoredEvent, StoreError> {
        let mut stored = self.append_all(conversation, vec![event]).await?;
        stored.pop().ok_or(StoreError::Closed)
    }

    pub async fn append_all(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let stored = match &self.fence {
            Some(fenced) => {
                let (leases, fence) = &**fenced;
                if &fence.conversation != conversation {
                    return Err(StoreError::Fenced {
                        conversation: conversation.clone(),
                        reason: format!("this log is fenced for {}", fence.conversation),
                    });
                }
                leases.append_fenced(conversation, events, fence).await?
            }
            None => self.store.append(conversation, events).await?,
        };
        for event in &stored {
            self.notifier
                .publish(conversation, LogItem::Event(event.clone()));
        }
        Ok(stored)
    }

    /// Renames a conversation and tells its connected clients (a live-only title notice, as
    /// the original sends). False when there is no such conversation.
    pub async fn rename(
        &self,
        conversation: &ConversationId,
        title: &str,
    ) -> Result<bool, StoreError> {
        let renamed = match &self.fence {
            Some(fenced) => {
                let (leases, fence) = &**fenced;
                leases.rename_fenced(conversation, title, fence).await?
            }
            None => self.store.rename_conversation(conversation, title).await?,
        };
        if renamed {
            self.notify(conversation, &StatusUpdate::title(conversation, title));
        }
        Ok(renamed)
    }

    /// Sends a status update to the clients connected now; it is not stored.
    pub fn notify(&self, conversation: &ConversationId, status: &StatusUpdate) {
        match serde_json::to_string(status) {
            Ok(json) => self
                .notifier
                .publish(conversation, LogItem::Notice(Arc::from(json))),
            Err(e) => tracing::error!(error = %e, "status update not serializable"),
        }
    }
}
