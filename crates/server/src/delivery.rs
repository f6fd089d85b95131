//! The one place that decides what a client is sent, and in what order.
//!
//! A client is a cursor over its conversation's log. It subscribes to new events first, then
//! reads the store from its cursor, then takes live events, dropping any id it already has. If
//! it misses live events (it lagged, or they were published out of order), it reads them from
//! the store. So each client gets every event once, in id order, however the appends race with
//! its connecting, and the server holds at most one bounded channel per client, never a backlog.
//!
//! Every stored event is sent as stored: live and replayed events are the same JSON.

use crate::socketio::packet;
use engineioxide::{DisconnectReason, Socket, Str};
use ohd_protocol::{ConversationId, EventId};
use ohd_store::{EventLog, LogItem, StoredEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Events read from the store per query during replay.
const REPLAY_PAGE: usize = 256;

/// Why delivery stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The socket closed, or the client left the conversation.
    Gone,
    /// The client did not take what it was sent in time and was cut off.
    TooSlow,
    /// The store could not be read.
    StoreFailed,
}

/// Sends text packets to one client, waiting for room in its buffer, but not forever.
pub struct Outbox<D: Default + Send + Sync + 'static> {
    pub socket: Arc<Socket<D>>,
    pub slow_client_timeout: Duration,
    pub cancel: CancellationToken,
}

impl<D: Default + Send + Sync + 'static> Outbox<D> {
    pub async fn send(&self, text: String) -> Result<(), Stop> {
        let mut waited_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.cancel.is_cancelled() {
                return Err(Stop::Gone);
            }
            match self.socket.reserve() {
                Ok(permit) => {
                    permit.emit(Str::from(text));
                    return Ok(());
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return Err(Stop::Gone),
                Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {
                    // engineioxide offers no awaitable send, so wait in growing steps.
                    let since = *waited_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.slow_client_timeout {
                        tracing::warn!(sid = %self.socket.id, "client cut off: it stopped reading");
                        self.socket.close(DisconnectReason::TransportError);
                        return Err(Stop::TooSlow);
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(Stop::Gone),
                        _ = self.socket.closed() => return Err(Stop::Gone),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    async fn send_event(&self, event: &StoredEvent) -> Result<(), Stop> {
        self.send(packet::event("oh_event", &event.json)).await
    }
}

/// Streams `conversation` to the client from after `after`, then live, until stopped.
pub async fn deliver<D: Default + Send + Sync + 'static>(
    log: EventLog,
    conversation: ConversationId,
    after: Option<EventId>,
    outbox: Outbox<D>,
) -> Stop {
    let mut live = log.notifier().subscribe(&conversation);
    let mut cursor = after;
    if let Err(stop) = catch_up(&log, &conversation, &mut cursor, &outbox).await {
        return stop;
    }
    loop {
        let item = tokio::select! {
            _ = outbox.cancel.cancelled() => return Stop::Gone,
            _ = outbox.socket.closed() => return Stop::Gone,
            item = live.recv() => item,
        };
        let result = match item {
            Ok(LogItem::Event(event)) => {
                let expected = cursor.map_or(EventId(0), EventId::next);
                if event.id < expected {
                    Ok(()) // already sent
                } else if event.id == expected {
                    cursor = Some(event.id);
                    outbox.send_event(&event).await
                } else {
                    // A gap: something was published out of order or missed. The store has it.
                    catch_up(&log, &conversation, &mut cursor, &outbox).await
                }
            }
            Ok(LogItem::Notice(json)) => outbox.send(packet::event("oh_event", &json)).await,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(%conversation, missed, "client lagged; reading from the store");
                catch_up(&log, &conversation, &mut cursor, &outbox).await
            }
            Err(RecvError::Closed) => return Stop::Gone,
        };
        if let Err(stop) = result {
            return stop;
        }
    }
}

/// Sends every stored event after `cursor`, a page at a time, advancing the cursor.
async fn catch_up<D: Default + Send + Sync + 'static>(
    log: &EventLog,
    conversation: &ConversationId,
    cursor: &mut Option<EventId>,
    outbox: &Outbox<D>,
) -> Result<(), Stop> {
    loop {
        let page = log
            .store()
            .read_after(conversation, *cursor, REPLAY_PAGE)
            .await
            .map_err(|e| {
                tracing::error!(%conversation, error = %e, "replay read failed");
                Stop::StoreFailed
            })?;
        let full = page.len() == REPLAY_PAGE;
        for event in &page {
            outbox.send_event(event).await?;
            *cursor = Some(event.id);
        }
        if !full {
            return Ok(());
        }
    }
}
