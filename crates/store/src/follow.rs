//! Following a conversation's log: every event after a cursor, once, in id order, then live.
//!
//! Subscribe first, then read the store, then take live events, dropping ids already seen; on a
//! gap (events published out of order, or missed because the follower lagged) read the store
//! again. The store is the source of truth and the notifier only says "look", so this holds
//! however appends race with following, and with a lossy or cross-node notifier too. Clients'
//! deliveries and the agent both follow logs this way; nothing else orders events.

use crate::{EventLog, LogItem, StoreError, StoredEvent};
use ohd_protocol::{ConversationId, EventId};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Events read from the store per query while catching up.
const PAGE: usize = 256;

#[derive(Debug, Clone)]
pub enum Followed {
    Event(StoredEvent),
    /// A live-only notice (status update); never stored, so never replayed.
    Notice(Arc<str>),
}

pub struct Follower {
    log: EventLog,
    conversation: ConversationId,
    cursor: Option<EventId>,
    live: broadcast::Receiver<LogItem>,
    pending: VecDeque<StoredEvent>,
    /// The store may hold more after `cursor` than `pending` has.
    behind: bool,
}

impl Follower {
    /// Follows `conversation` from after `after` (from the start if `None`).
    pub fn new(log: EventLog, conversation: ConversationId, after: Option<EventId>) -> Self {
        let live = log.notifier().subscribe(&conversation);
        Follower {
            log,
            conversation,
            cursor: after,
            live,
            pending: VecDeque::new(),
            behind: true,
        }
    }

    pub fn cursor(&self) -> Option<EventId> {
        self.cursor
    }

    fn expected(&self) -> EventId {
        self.cursor.map_or(EventId(0), EventId::next)
    }

    async fn read_page(&mut self) -> Result<(), StoreError> {
        let after = self.pending.back().map(|e| e.id).or(self.cursor);
        let page = self
            .log
            .store()
            .read_after(&self.conversation, after, PAGE)
            .await?;
        self.behind = page.len() == PAGE;
        self.pending.extend(page);
        Ok(())
    }

    /// The next event already read from the store, skipping ids at or below the cursor.
    fn take_pending(&mut self) -> Option<Followed> {
        while let Some(event) = self.pending.pop_front() {
            if event.id >= self.expected() {
                self.cursor = Some(event.id);
                return Some(Followed::Event(event));
            }
        }
        None
    }

    /// What a live item means for this follower: the next event, a notice, or nothing (an id
    /// already seen, or one past a gap, which the store fills in).
    fn accept_live(&mut self, item: LogItem) -> Option<Followed> {
        match item {
            LogItem::Event(event) => {
                let expected = self.expected();
                if event.id == expected {
                    self.cursor = Some(event.id);
                    return Some(Followed::Event(event));
                }
                if event.id > expected {
                    // A gap: the store has what is missing.
                    self.behind = true;
                }
                None
            }
            LogItem::Notice(json) => Some(Followed::Notice(json)),
        }
    }

    /// Reads the first page of what is stored ahead, if nothing is read yet: a joining client's
    /// replay is then at hand when its transport first asks, and goes out with (or right after)
    /// the CONNECT answer instead of one store read later.
    pub async fn prefetch(&mut self) -> Result<(), StoreError> {
        if self.behind && self.pending.is_empty() {
            self.read_page().await?;
        }
        Ok(())
    }

    /// Events read from the store and not yet taken.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The next item if it is at hand (queued, or already in the live channel), without
    /// waiting or reading the store: the fast path of a busy stream. `None` means "call
    /// [`Follower::next`]", which takes it from exactly here.
    pub fn try_next(&mut self) -> Option<Followed> {
        use tokio::sync::broadcast::error::TryRecvError;
        loop {
            if let Some(item) = self.take_pending() {
                return Some(item);
            }
            if self.behind {
                return None;
            }
            match self.live.try_recv() {
                Ok(item) => {
                    if let Some(item) = self.accept_live(item) {
                        return Some(item);
                    }
                }
                Err(TryRecvError::Lagged(_)) => self.behind = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// The next event or notice. Only errors of the store end following.
    pub async fn next(&mut self) -> Result<Followed, StoreError> {
        loop {
            if let Some(item) = self.take_pending() {
                return Ok(item);
            }
            if self.behind {
                self.read_page().await?;
                continue;
            }
            match self.live.recv().await {
                Ok(item) => {
                    if let Some(item) = self.accept_live(item) {
                        return Ok(item);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(conversation = %self.conversation, missed, "follower lagged; reading the store");
                    self.behind = true;
                }
                Err(RecvError::Closed) => {
                    // The notifier dropped this conversation's channel; subscribe again and
                    // look at the store for anything published in between.
                    self.live = self.log.notifier().subscribe(&self.conversation);
                    self.behind = true;
                }
            }
        }
    }
}
