//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live) and is sent every stored event exactly as stored, so live and replayed events are the
//! same JSON, plus the live-only notices. Sending waits for room in the client's buffer, but
//! only so long: a client that stops reading is cut off and resumes with `latest_event_id`.

use crate::socketio::packet;
use ohd_engineio::{DisconnectReason, Message, SendError, Signal, Socket};
use ohd_protocol::ConversationId;
use ohd_store::{Followed, Follower};
use std::sync::Arc;
use std::time::Duration;

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
    /// Raised when the client leaves the conversation.
    pub cancel: Arc<Signal>,
}

impl Outbox {
    pub async fn send(&self, message: Message) -> Result<(), Stop> {
        if self.cancel.is_raised() {
            return Err(Stop::Gone);
        }
        // Room at once is the common case: no timer, no waiter.
        let message = match self.socket.try_send_or_return(message) {
            Ok(()) => return Ok(()),
            Err((SendError::Closed, _)) => return Err(Stop::Gone),
            Err((SendError::Full, back)) => back,
        };
        let sent = tokio::select! {
            _ = self.cancel.raised() => return Err(Stop::Gone),
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
        // Flags first: cheap, and the waits below are polled only when no event is ready.
        if outbox.cancel.is_raised() || outbox.socket.is_closed() {
            return Stop::Gone;
        }
        let item = tokio::select! {
            biased;
            item = follower.next() => item,
            _ = outbox.cancel.raised() => return Stop::Gone,
            _ = outbox.socket.closed() => return Stop::Gone,
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
