use crate::{LogItem, Notifier, Store, StoreError, StoredEvent};
use ohd_protocol::notice::StatusUpdate;
use ohd_protocol::{ConversationId, NewEvent};
use std::sync::Arc;

/// The one way events enter a conversation: committed by the store, then published.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
    notifier: Arc<dyn Notifier>,
}

impl EventLog {
    pub fn new(store: Arc<dyn Store>, notifier: Arc<dyn Notifier>) -> Self {
        EventLog { store, notifier }
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
        let stored = self.store.append(conversation, events).await?;
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
        let renamed = self.store.rename_conversation(conversation, title).await?;
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
