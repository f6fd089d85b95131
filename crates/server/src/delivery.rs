//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live) and is sent every stored event exactly as stored, so live and replayed events are the
//! same JSON, plus the live-only notices. Sending waits for room in the client's buffer, but
//! only so long: a client that stops reading is cut off and resumes with `latest_event_id`.

use crate::socketio::packet;
use engineioxide::{DisconnectReason, Socket, Str};
use ohd_protocol::ConversationId;
use ohd_store::{Followed, Follower};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
    pub async fn send(&self, text: Str) -> Result<(), Stop> {
        let mut waited_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(1);
        let mut yields = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Err(Stop::Gone);
            }
            match self.socket.reserve() {
                Ok(permit) => {
                    permit.emit(text);
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
                    // The client's writer usually frees room within a few scheduler turns: yield
                    // first, and only then sleep in growing steps.
                    if yields < 64 {
                        yields += 1;
                        tokio::task::yield_now().await;
                        continue;
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
}

/// Streams the followed conversation to the client, then live, until stopped.
pub async fn deliver<D: Default + Send + Sync + 'static>(
    mut follower: Follower,
    conversation: ConversationId,
    outbox: Outbox<D>,
) -> Stop {
    loop {
        let item = tokio::select! {
            _ = outbox.cancel.cancelled() => return Stop::Gone,
            _ = outbox.socket.closed() => return Stop::Gone,
            item = follower.next() => item,
        };
        let sent = match item {
            Ok(Followed::Event(event)) => {
                let packet = event.encoded(|json| Str::from(packet::event("oh_event", json)));
                outbox.send(packet).await
            }
            Ok(Followed::Notice(json)) => {
                outbox
                    .send(Str::from(packet::event("oh_event", &json)))
                    .await
            }
            Err(e) => {
                tracing::error!(%conversation, error = %e, "cannot read the log for a client");
                return Stop::StoreFailed;
            }
        };
        if let Err(stop) = sent {
            return stop;
        }
    }
}
