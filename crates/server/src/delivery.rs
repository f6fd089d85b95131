//! The one place that decides what a client is sent, and in what order.
//!
//! A client follows its conversation's log ([`Follower`]: every event once, in id order, then
//! live) and is sent every stored event exactly as stored, so live and replayed events are the
//! same JSON, plus the live-only notices. The follower is the socket's feed: the transport asks
//! it for the next packet only when it can write one, so nothing piles up per client, and a
//! client that stops reading is cut off by the transport and resumes with `latest_event_id`.

use crate::socketio::packet;
use ohd_engineio::Feed;
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
    /// An item `next` delivered that the transport has not taken yet.
    at_hand: Option<Result<Followed, StoreError>>,
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
            at_hand: None,
            conversation,
            failed: false,
        }
    }
}

impl Feed for FollowFeed {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.failed {
            return Poll::Ready(false);
        }
        if self.at_hand.is_some() {
            return Poll::Ready(true);
        }
        // In a busy stream the next event is usually already here.
        if let Some(item) = self.idle.as_mut().and_then(Follower::try_next) {
            self.at_hand = Some(Ok(item));
            return Poll::Ready(true);
        }
        if let Some(follower) = self.idle.take() {
            self.next.set(next_of(follower));
        }
        let (follower, item) = ready!(self.next.poll(cx));
        self.idle = Some(follower);
        self.at_hand = Some(item);
        Poll::Ready(true)
    }

    fn take(&mut self, write: &mut dyn FnMut(&str)) -> bool {
        if self.failed {
            return false;
        }
        let item = match self.at_hand.take() {
            Some(item) => item,
            None => match self.idle.as_mut().and_then(Follower::try_next) {
                Some(item) => Ok(item),
                None => return false,
            },
        };
        if matches!(item, Ok(Followed::Event(_))) {
            ohd_metrics::metrics().events_delivered.inc();
        }
        match item {
            // The packet is encoded once for every client of the event, and lent, not copied.
            Ok(Followed::Event(event)) => event.with_encoded(
                |json| packet::event("oh_event", json),
                |packet: &String| write(packet),
            ),
            Ok(Followed::Notice(json)) => write(&packet::event("oh_event", &json)),
            Err(e) => {
                tracing::error!(conversation = %self.conversation, error = %e, "cannot read the log for a client");
                self.failed = true;
                let notice = ErrorNotice::new(
                    "STORE_FAILED",
                    "the conversation could not be read; reconnect to resume",
                );
                write(&packet::error_event(&notice).unwrap_or_default());
            }
        }
        true
    }
}
