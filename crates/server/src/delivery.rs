//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live) and is sent every stored event exactly as stored, so live and replayed events are the
//! same JSON, plus the live-only notices. Sending waits for room in the client's buffer, but
//! only so long: a client that stops reading is cut off and resumes with `latest_event_id`.

use crate::socketio::packet;
use ohd_engineio::{DisconnectReason, Message, Socket};
use ohd_protocol::ConversationId;
use ohd_store::{Followed, Follower};
use std::sync::Arc;
use std::time::Duration;
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

/// Sends packets to one client, waiting for room in its queue, but not forever.
pub struct Outbox {
    pub socket: Arc<Socket>,
    pub slow_client_timeout: Duration,
    pub cancel: CancellationToken,
}

impl Outbox {
    pub async fn send(&self, message: Message) -> Result<(), Stop> {
        let sent = tokio::select! {
            _ = self.cancel.cancelled() => return Err(Stop::Gone),
            sent = tokio::time::timeout(self.slow_client_timeout, self.socket.send(message)) => sent,
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => {
                tracing::warn!(sid = self.socket.id(), "client cut off: it stopped reading");
                self.socket.close(DisconnectReason::ServerClose);
                Err(Stop::TooSlow)
            }
        }
    }
}

/// Streams the followed conversation to the client, then live, until stopped.
pub async fn deliver(mut follower: Follower, conversation: ConversationId, outbox: Outbox) -> Stop {
    loop {
        let item = tokio::select! {
            _ = outbox.cancel.cancelled() => return Stop::Gone,
            _ = outbox.socket.closed() => return Stop::Gone,
            item = follower.next() => item,
        };
        let sent = match item {
            Ok(Followed::Event(event)) => {
                let packet = event.encoded(|json| Message::text(&packet::event("oh_event", json)));
                outbox.send(packet).await
            }
            Ok(Followed::Notice(json)) => {
                outbox
                    .send(Message::text(&packet::event("oh_event", &json)))
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
