//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live) and is sent every stored event exactly as stored, so live and replayed events are the
//! same JSON, plus the live-only notices. The follower is the socket's feed: the transport asks
//! it for the next packet only when it can write one, so nothing piles up per client, and a
//! client that stops reading is cut off by the transport and resumes with `latest_event_id`.

use crate::socketio::packet;
use ohd_engineio::{Feed, Message};
use ohd_protocol::ConversationId;
use ohd_protocol::notice::ErrorNotice;
use ohd_store::{Followed, Follower, StoreError};
use std::task::{Context, Poll, ready};
use tokio_util::sync::ReusableBoxFuture;

type Next = (Follower, Result<Followed, StoreError>);

/// A conversation's log as a socket's feed.
pub struct FollowFeed {
    /// The follower's `next`, in one allocation reused for every item.
    next: ReusableBoxFuture<'static, Next>,
    /// The follower between two items.
    idle: Option<Follower>,
    conversation: ConversationId,
    failed: bool,
}

async fn next_of(mut follower: Follower) -> Next {
    let item = follower.next().await;
    (follower, item)
}

impl FollowFeed {
    pub fn new(follower: Follower, conversation: ConversationId) -> Self {
        FollowFeed {
            next: ReusableBoxFuture::new(next_of(follower)),
            idle: None,
            conversation,
            failed: false,
        }
    }
}

impl Feed for FollowFeed {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item = match self.idle.as_mut().and_then(Follower::try_next) {
            // In a busy stream the next event is usually already here.
            Some(item) => Ok(item),
            None => {
                if let Some(follower) = self.idle.take() {
                    self.next.set(next_of(follower));
                }
                let (follower, item) = ready!(self.next.poll(cx));
                self.idle = Some(follower);
                item
            }
        };
        Poll::Ready(Some(match item {
            // The packet is built once for every client of the event.
            Ok(Followed::Event(event)) => {
                event.encoded(|json| Message::text(&packet::event("oh_event", json)))
            }
            Ok(Followed::Notice(json)) => Message::text(&packet::event("oh_event", &json)),
            Err(e) => {
                tracing::error!(conversation = %self.conversation, error = %e, "cannot read the log for a client");
                self.failed = true;
                let notice = ErrorNotice::new(
                    "STORE_FAILED",
                    "the conversation could not be read; reconnect to resume",
                );
                Message::text(&packet::error_event(&notice).unwrap_or_default())
            }
        }))
    }
}
