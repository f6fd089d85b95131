//! One client's session: what it was opened with, and the queue of packets waiting to be
//! written to it by whichever transport holds it (the websocket task, or a pending long-poll).

use crate::packet::Outbound;
use crate::signal::{Signal, Wake};
use crate::{DisconnectReason, Feed, Message};
use http::HeaderMap;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client's queue is full: it is not reading fast enough.
    Full,
    /// The connection has ended.
    Closed,
}

/// The transport that currently carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Polling,
    /// A websocket is being probed; polling still carries the packets.
    Upgrading,
    Websocket,
}

pub struct Socket {
    id: Box<str>,
    query: Box<str>,
    headers: HeaderMap,
    capacity: usize,
    state: Mutex<State>,
    /// Whoever writes to the client has packets to write, or the session closed.
    pub(crate) wake: Wake,
    /// A polling client answered a ping.
    pub(crate) pong: Notify,
    closed: Signal,
    /// Messages the transport asks for when it can write them (see [`Feed`]).
    feed: Mutex<Option<Box<dyn Feed>>>,
}

pub(crate) struct State {
    queue: VecDeque<Outbound>,
    /// Application messages in `queue` (control packets do not count against the capacity).
    messages: usize,
    pub transport: Transport,
    pub close_reason: Option<DisconnectReason>,
    pub awaiting_pong: bool,
    pub polling_get: bool,
    pub polling_post: bool,
}

/// A queue that has grown beyond this is given back once it empties.
const KEEP_QUEUE_CAPACITY: usize = 8;

impl Socket {
    pub(crate) fn new(
        id: Box<str>,
        query: Box<str>,
        headers: HeaderMap,
        capacity: usize,
        transport: Transport,
    ) -> Self {
        Socket {
            id,
            query,
            headers,
            capacity,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                messages: 0,
                transport,
                close_reason: None,
                awaiting_pong: false,
                polling_get: false,
                polling_post: false,
            }),
            wake: Wake::default(),
            pong: Notify::new(),
            closed: Signal::new(),
            feed: Mutex::new(None),
        }
    }

    /// The session id the client was given.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The query string of the request that opened the session.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The headers of the opening request that the engine was told to keep.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Queues a message if there is room.
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        let mut state = self.lock();
        if state.close_reason.is_some() {
            return Err(SendError::Closed);
        }
        if state.messages >= self.capacity {
            return Err(SendError::Full);
        }
        state.queue.push_back(Outbound::Message(message));
        state.messages += 1;
        drop(state);
        self.wake.notify();
        Ok(())
    }

    /// Queues `message` and then gives the socket `feed`, waking the writer once: a writer
    /// that runs now finds both, so the message and what the feed has at hand can leave in
    /// one write (one long-poll response), the message first.
    /// A full queue drops the message but still sets the feed, as a `try_send` followed by
    /// `set_feed` would.
    pub fn send_then_feed(&self, message: Message, feed: Box<dyn Feed>) -> Result<(), SendError> {
        let queued = {
            let mut state = self.lock();
            if state.close_reason.is_some() {
                return Err(SendError::Closed);
            }
            if state.messages >= self.capacity {
                Err(SendError::Full)
            } else {
                state.queue.push_back(Outbound::Message(message));
                state.messages += 1;
                Ok(())
            }
        };
        self.set_feed(feed);
        queued
    }

    /// Queues a transport packet (ping, pong, noop), which does not count against the capacity.
    /// The same packet twice in a row is kept once, so a client that sends pings without
    /// reading (over polling) cannot grow the queue.
    pub(crate) fn push_control(&self, packet: Outbound) {
        let mut state = self.lock();
        if state.close_reason.is_some() {
            return;
        }
        if let Some(last) = state.queue.back()
            && !last.is_message()
            && std::mem::discriminant(last) == std::mem::discriminant(&packet)
        {
            return;
        }
        state.queue.push_back(packet);
        drop(state);
        self.wake.notify();
    }

    /// Takes up to `max` queued packets, oldest first, into `out`.
    pub(crate) fn take(&self, max: usize, out: &mut Vec<Outbound>) {
        let mut state = self.lock();
        let n = max.min(state.queue.len());
        let mut messages = 0;
        for packet in state.queue.drain(..n) {
            messages += usize::from(packet.is_message());
            out.push(packet);
        }
        state.messages -= messages;
        if state.queue.is_empty() && state.queue.capacity() > KEEP_QUEUE_CAPACITY {
            state.queue = VecDeque::new();
        }
    }

    /// Gives the socket a feed to write from, replacing any other. Messages queued with
    /// `try_send` still go first.
    pub fn set_feed(&self, feed: Box<dyn Feed>) {
        if self.is_closed() {
            return;
        }
        let old = self.lock_feed().replace(feed);
        drop(old);
        if self.is_closed() {
            // Closed meanwhile: `close` may have found the slot still empty.
            let late = self.lock_feed().take();
            drop(late);
            return;
        }
        self.wake.notify();
    }

    /// Stops the feed (the client left what it was following).
    pub fn clear_feed(&self) {
        let old = self.lock_feed().take();
        drop(old);
    }

    /// Ready once the feed has a message at hand. Pending (and woken through `wake` when a feed
    /// is set) if there is no feed; an ended feed is dropped.
    pub(crate) fn poll_feed_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        let mut slot = self.lock_feed();
        let Some(feed) = slot.as_mut() else {
            return Poll::Pending;
        };
        if self.is_closed() {
            // What the feed holds (a store read in progress, say) is of no more use.
            let ended = slot.take();
            drop(slot);
            drop(ended);
            return Poll::Pending;
        }
        match feed.poll_ready(cx) {
            Poll::Ready(true) if !self.is_closed() => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                // The feed ended, or the session did: it is dropped outside the lock.
                let ended = slot.take();
                drop(slot);
                drop(ended);
                Poll::Pending
            }
        }
    }

    /// Lends the feed's messages at hand, one after another, to `write`, for as long as it
    /// returns true (it wants another). Never waits.
    pub(crate) fn take_from_feed(&self, write: &mut dyn FnMut(&str) -> bool) {
        let mut slot = self.lock_feed();
        let Some(feed) = slot.as_mut() else {
            return;
        };
        let mut more = true;
        while more && feed.take(&mut |text| more = write(text)) {}
    }

    fn lock_feed(&self) -> MutexGuard<'_, Option<Box<dyn Feed>>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the session (idempotent): the transport stops, senders are refused, and the
    /// application hears of it once, with the first reason given.
    pub fn close(&self, reason: DisconnectReason) {
        let mut state = self.lock();
        if state.close_reason.is_none() {
            state.close_reason = Some(reason);
        }
        drop(state);
        self.closed.raise();
        self.wake.notify();
        // What the feed holds is of no more use. `try_lock`: a feed may close its own socket
        // from inside its own methods, and is then dropped by the transport.
        if let Ok(mut slot) = self.feed.try_lock() {
            let old = slot.take();
            drop(slot);
            drop(old);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_raised()
    }

    /// Resolves when the session has ended.
    pub async fn closed(&self) {
        self.closed.raised().await
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind, still consistent enough to
        // close the session with.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(capacity: usize) -> Socket {
        Socket::new(
            "s".into(),
            "".into(),
            HeaderMap::new(),
            capacity,
            Transport::Websocket,
        )
    }

    #[test]
    fn control_packets_do_not_count_against_the_capacity() {
        let s = socket(1);
        assert_eq!(s.try_send(Message::text("a")), Ok(()));
        assert_eq!(s.try_send(Message::text("b")), Err(SendError::Full));
        s.push_control(Outbound::Ping);
        let mut out = Vec::new();
        s.take(10, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(s.try_send(Message::text("c")), Ok(()));
    }

    #[test]
    fn repeated_control_packets_are_queued_once() {
        let s = socket(4);
        for _ in 0..1000 {
            s.push_control(Outbound::Pong);
        }
        s.try_send(Message::text("a")).unwrap_or_default();
        s.push_control(Outbound::Pong);
        s.push_control(Outbound::Pong);
        let mut out = Vec::new();
        s.take(usize::MAX, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn taking_makes_room_and_a_closed_socket_refuses() {
        let s = socket(1);
        assert_eq!(s.try_send(Message::text("a")), Ok(()));
        assert_eq!(s.try_send(Message::text("b")), Err(SendError::Full));
        let mut out = Vec::new();
        s.take(1, &mut out);
        assert_eq!(s.try_send(Message::text("b")), Ok(()));
        s.close(DisconnectReason::ServerClose);
        assert_eq!(s.try_send(Message::text("c")), Err(SendError::Closed));
        assert_eq!(s.lock().close_reason, Some(DisconnectReason::ServerClose));
    }
}
