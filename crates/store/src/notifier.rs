use crate::StoredEvent;
use ohd_protocol::ConversationId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What subscribers of a conversation receive: committed events, and notices that are sent to
/// whoever is connected but never stored (status updates).
#[derive(Debug, Clone)]
pub enum LogItem {
    Event(StoredEvent),
    Notice(Arc<str>),
}

/// Tells subscribers about committed events. Delivery is at most once and may lag: a subscriber
/// that falls behind gets `RecvError::Lagged` and reads what it missed from the store. That keeps
/// memory bounded whatever the slowest client does, and lets a cross-node notifier be lossy too.
pub trait Notifier: Send + Sync + 'static {
    fn publish(&self, conversation: &ConversationId, item: LogItem);
    fn subscribe(&self, conversation: &ConversationId) -> broadcast::Receiver<LogItem>;
}

/// In-process notifier: one bounded broadcast channel per conversation with subscribers.
pub struct LocalNotifier {
    capacity: usize,
    channels: Mutex<HashMap<ConversationId, broadcast::Sender<LogItem>>>,
}

impl LocalNotifier {
    pub fn new(capacity: usize) -> Self {
        LocalNotifier {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// How many receivers `conversation` has in this process.
    pub fn subscribers(&self, conversation: &ConversationId) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .get(conversation)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// The conversations with at least one receiver in this process.
    pub fn subscribed(&self) -> Vec<ConversationId> {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl Notifier for LocalNotifier {
    fn publish(&self, conversation: &ConversationId, item: LogItem) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = channels.get(conversation)
            && tx.send(item).is_err()
        {
            // Nobody listens any more: forget the channel so idle conversations cost nothing.
            channels.remove(conversation);
        }
    }

    fn subscribe(&self, conversation: &ConversationId) -> broadcast::Receiver<LogItem> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(conversation.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }
}
