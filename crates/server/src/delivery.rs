//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live; its connection task asks it for the next item) and is sent every stored event exactly
//! as stored, so live and replayed events are the same JSON, plus the live-only notices.
//! Sending waits for room in the client's queue, but only so long: a client that stops reading
//! is cut off and resumes with `latest_event_id`.

use crate::socketio::packet;
use ohd_engineio::{DisconnectReason, Message, SendError, Socket};
use ohd_protocol::ConversationId;
use ohd_store::{Followed, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Why delivery stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The socket closed.
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
}

impl Outbox {
    pub async fn send(&self, message: Message) -> Result<(), Stop> {
        // Room at once is the common case: no timer, no waiter.
        let message = match self.socket.try_send_or_return(message) {
            Ok(()) => return Ok(()),
            Err((SendError::Closed, _)) => return Err(Stop::Gone),
            Err((SendError::Full, back)) => back,
        };
        // Boxed: the wait (and its timer) is rare, and would otherwise sit in every
        // connection's task.
        let wait = Box::pin(tokio::time::timeout(
            self.slow_client_timeout,
            self.socket.send(message),
        ));
        match wait.await {
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

/// Sends the client the next item of its conversation: a stored event (its packet built once
/// for every client), or a live-only notice.
pub async fn send_followed(
    outbox: &Outbox,
    conversation: &ConversationId,
    item: Result<Followed, StoreError>,
) -> Result<(), Stop> {
    match item {
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
            Err(Stop::StoreFailed)
        }
    }
}
