//! The durable event log.
//!
//! [`EventStore`] and [`ConversationStore`] are what the rest of ohd sees of storage. SQLite is
//! the embedded implementation ([`sqlite::SqliteStore`]) for a single node; PostgreSQL
//! ([`postgres::PgStore`]) lets several nodes share conversations. Both give events dense ids
//! from 0 and stamp them through the same code, so an event reads the same whichever keeps it.
//!
//! [`Notifier`] tells subscribers about events once they are committed; [`LocalNotifier`] does
//! that within one process, and [`postgres::PgNotifier`] adds delivery across nodes (PostgreSQL
//! `LISTEN`/`NOTIFY`, with a catch-up from the store for anything a lost notification hid).
//! [`EventLog`] joins the two: append, then publish, so nothing is seen before it is durable.
//!
//! Only the shared store has what several nodes need besides the log: [`LeaseStore`] (which
//! node runs a conversation's agent, with fencing tokens so a node that lost its lease cannot
//! write) and [`DocumentStore`] (settings and secrets every node reads).

mod follow;
mod log;
mod notifier;
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use follow::{Followed, Follower};
pub use log::EventLog;
pub use notifier::{LocalNotifier, LogItem, Notifier};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ohd_protocol::{ConversationId, EventId, NewEvent, Timestamp};
use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// An event as committed: its id and the exact JSON every client is sent.
///
/// Clones share one allocation, which also holds a slot where a transport may keep its own
/// encoding of the event (a Socket.IO packet, say), so that an event fanned out to a thousand
/// subscribers is encoded once and handing it to each costs one reference count.
#[derive(Clone)]
pub struct StoredEvent(Arc<Committed>);

/// What a [`StoredEvent`] shares among its clones.
pub struct Committed {
    pub id: EventId,
    pub json: Box<str>,
    encoded: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::ops::Deref for StoredEvent {
    type Target = Committed;

    fn deref(&self) -> &Committed {
        &self.0
    }
}

impl StoredEvent {
    pub fn new(id: EventId, json: impl Into<Box<str>>) -> Self {
        StoredEvent(Arc::new(Committed {
            id,
            json: json.into(),
            encoded: OnceLock::new(),
        }))
    }

    /// Lends `read` the event encoded by `encode`, which is computed once for all clones of
    /// this event. A caller that asks for another type than the slot holds gets a fresh
    /// encoding.
    pub fn with_encoded<T: Any + Send + Sync, R>(
        &self,
        encode: impl Fn(&str) -> T,
        read: impl FnOnce(&T) -> R,
    ) -> R {
        let slot = self
            .encoded
            .get_or_init(|| Box::new(encode(&self.json)) as Box<dyn Any + Send + Sync>);
        match slot.downcast_ref::<T>() {
            Some(value) => read(value),
            None => read(&encode(&self.json)),
        }
    }

    /// The typed event, for consumers that need more than the JSON (the agent).
    pub fn decode(&self) -> Result<ohd_protocol::Event, StoreError> {
        serde_json::from_str(&self.json).map_err(|e| StoreError::Corrupt {
            id: self.id,
            reason: e.to_string(),
        })
    }
}

impl std::fmt::Debug for StoredEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEvent")
            .field("id", &self.id)
            .field("json", &self.json)
            .finish()
    }
}

impl PartialEq for StoredEvent {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.json == other.json
    }
}

impl Eq for StoredEvent {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
    #[error("conversation {0} already exists")]
    ConversationExists(ConversationId),
    #[error("stored event {id} cannot be read: {reason}")]
    Corrupt { id: EventId, reason: String },
    #[error("the store is shutting down")]
    Closed,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot prepare the store: {0}")]
    Setup(String),
    /// A fenced append was refused because the writer no longer holds the conversation's
    /// lease (or never did); nothing was written.
    #[error("conversation {conversation}: not written, lease lost ({reason})")]
    Fenced {
        conversation: ConversationId,
        reason: String,
    },
}

/// A count or id as SQL's BIGINT (both databases' integers), saturating.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Gives `events` the ids from `first` on and the timestamp `at`, and encodes each as the JSON
/// every client is sent. Every store goes through here, so stored JSON does not depend on the
/// store.
pub(crate) fn stamp(
    events: impl IntoIterator<Item = NewEvent>,
    first: u64,
    at: Timestamp,
) -> Result<Vec<StoredEvent>, StoreError> {
    events
        .into_iter()
        .enumerate()
        .map(|(offset, event)| {
            let id = EventId(first + offset as u64);
            let json = serde_json::to_string(&event.into_event(id, at))
                .map_err(|e| StoreError::Setup(e.to_string()))?;
            Ok(StoredEvent::new(id, json))
        })
        .collect()
}

/// A page of a conversation's events, for the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPage {
    pub start_id: u64,
    /// Inclusive; `None` means up to the newest event.
    pub end_id: Option<u64>,
    pub reverse: bool,
    pub limit: usize,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Commits `events` as one unit, giving them the next ids of the conversation in order.
    /// Only the store assigns ids and timestamps.
    async fn append(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Up to `limit` events with ids greater than `after` (all, if `None`), ascending.
    async fn read_after(
        &self,
        conversation: &ConversationId,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// A page for the REST API; the flag says whether more events lie beyond it.
    async fn read_page(
        &self,
        conversation: &ConversationId,
        page: EventPage,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError>;

    async fn last_event_id(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<EventId>, StoreError>;
}

/// What the server keeps about a conversation besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub last_updated_at: DateTime<Utc>,
    pub selected_repository: Option<String>,
    pub selected_branch: Option<String>,
    pub git_provider: Option<String>,
    pub trigger: String,
}

impl ConversationRecord {
    /// The original's default title, until one is given or generated.
    pub fn default_title(id: &ConversationId) -> String {
        format!(
            "Conversation {}",
            id.as_str().chars().take(5).collect::<String>()
        )
    }

    pub fn new(id: ConversationId) -> Self {
        let now = Utc::now();
        let title = Self::default_title(&id);
        ConversationRecord {
            id,
            title,
            created_at: now,
            last_updated_at: now,
            selected_repository: None,
            selected_branch: None,
            git_provider: None,
            trigger: "gui".to_owned(),
        }
    }
}

/// One page of the conversation list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationList {
    pub conversations: Vec<ConversationRecord>,
    /// Opaque cursor for the next page.
    pub next_page: Option<String>,
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    async fn create_conversation(&self, record: ConversationRecord) -> Result<(), StoreError>;
    async fn get_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationRecord>, StoreError>;
    async fn list_conversations(
        &self,
        limit: usize,
        page: Option<&str>,
    ) -> Result<ConversationList, StoreError>;
    /// Returns false when there is no such conversation.
    async fn rename_conversation(
        &self,
        id: &ConversationId,
        title: &str,
    ) -> Result<bool, StoreError>;
    /// Removes the conversation and all its events; false when there was none.
    async fn delete_conversation(&self, id: &ConversationId) -> Result<bool, StoreError>;
}

/// Both halves of storage, as one object the server can hold.
pub trait Store: EventStore + ConversationStore {}
impl<T: EventStore + ConversationStore> Store for T {}

/// The right to write a conversation's log as its owner, as granted by [`LeaseStore`]: the
/// conversation, the node holding it, and the fencing token of this grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub conversation: ConversationId,
    pub node: String,
    pub token: i64,
}

/// Who holds (or last held) a conversation's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub node: String,
    pub token: i64,
    /// Expired or released: anyone may take the lease.
    pub expired: bool,
}

/// Ownership of conversations among nodes sharing a store, so one agent runs each.
///
/// A lease lasts `ttl` by the store's clock, never a node's, and must be renewed before then.
/// Each grant to a new holder (or to the same node after its lease lapsed) gets a fencing token
/// greater than every earlier one for that conversation. [`LeaseStore::append_fenced`] checks,
/// in the transaction that writes, that the fence is still the current unexpired grant, so a
/// node that paused past its lease (GC, network partition) cannot write after another took
/// over. Appends without a fence ([`EventStore::append`]) stay open to every node: user actions
/// are written wherever they arrive.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease if it is free or expired, or if `node` holds it already; every grant
    /// has a new token, greater than any before. `None` when another node holds an unexpired
    /// lease.
    async fn try_acquire_lease(
        &self,
        conversation: &ConversationId,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, StoreError>;

    /// Extends the lease to `ttl` from now; false (and nothing changes) unless `fence` is the
    /// current grant and has not expired.
    async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError>;

    /// Ends the lease at once so another node can take it; false when `fence` was not the
    /// current grant. The token counter is kept: later grants still get greater tokens.
    async fn release_lease(&self, fence: &Fence) -> Result<bool, StoreError>;

    /// The current or last holder, if the conversation was ever leased.
    async fn lease_holder(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<LeaseHolder>, StoreError>;

    /// [`ConversationStore::rename_conversation`], only while `fence` is the conversation's
    /// current unexpired grant (an old owner's late title is refused as its events are).
    async fn rename_fenced(
        &self,
        conversation: &ConversationId,
        title: &str,
        fence: &Fence,
    ) -> Result<bool, StoreError>;

    /// Ends the lease whoever holds it and fences out its holder at once (a new token): a stop
    /// or a delete asked on another node than the owner. The owner sees it at its next renewal.
    async fn revoke_lease(&self, conversation: &ConversationId) -> Result<(), StoreError>;

    /// Says that `node` has clients joined to `conversations`, for `ttl` from now.
    async fn mark_watched(
        &self,
        node: &str,
        conversations: &[ConversationId],
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Those of `conversations` that another node than `node` has clients joined to.
    async fn watched_elsewhere(
        &self,
        node: &str,
        conversations: &[ConversationId],
    ) -> Result<Vec<ConversationId>, StoreError>;

    /// Conversations whose lease lapsed without being released (its holder stopped renewing:
    /// it died, hangs, or lost the database), oldest lapse first: another node should take
    /// them over.
    async fn lapsed_leases(&self, limit: usize) -> Result<Vec<ConversationId>, StoreError>;

    /// [`EventStore::append`], only if `fence` is the current unexpired grant for
    /// `conversation` when the events are written; otherwise nothing is written and the answer
    /// is [`StoreError::Fenced`].
    async fn append_fenced(
        &self,
        conversation: &ConversationId,
        events: Vec<NewEvent>,
        fence: &Fence,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// Named JSON documents every node shares (settings, secrets, provider tokens), stored and
/// returned verbatim.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    async fn get_document(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Creates or replaces the document.
    async fn put_document(&self, name: &str, json: &str) -> Result<(), StoreError>;
    /// Replaces the document only if it still holds `expected` (`None`: only if there is none),
    /// so that two nodes changing it at once cannot lose one change; false when it did not.
    async fn replace_document(
        &self,
        name: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<bool, StoreError>;
    /// False when there was no such document.
    async fn delete_document(&self, name: &str) -> Result<bool, StoreError>;
}
