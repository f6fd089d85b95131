//! One client connection: its Socket.IO session on the `/` namespace, the actions it sends, and
//! the delivery of its conversation's events.

use super::Inbound;
use super::handshake::{self, Join, Refusal};
use super::packet::{self, Packet};
use crate::app::AppState;
use crate::conversations::ConnectionGuard;
use crate::delivery::FollowFeed;
use ohd_engineio::{DisconnectReason, Message, Socket};
use ohd_protocol::notice::{ErrorNotice, MessageRef};
use ohd_protocol::{ClientAction, ConversationId};
use ohd_store::{Follower, StoreError};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Messages taken from the inbox at once.
const BATCH: usize = 256;
/// Messages a client may have waiting before it is told to slow down.
const INBOX_CAPACITY: usize = 1024;
/// An inbox queue that has grown beyond this is given back once it empties.
const KEEP_QUEUE: usize = 16;

/// What a client has sent and its connection has not handled yet. A task handles it only while
/// there is something to handle, one at a time and in order, so an idle connection has no task
/// (nor channel) of its own: those were a fifth of an idle client's memory.
pub struct Inbox {
    /// A client that has not joined by then is closed (checked at each heartbeat, so up to one
    /// ping interval later), as socket.io servers do. `None`: no deadline.
    join_by: Option<Instant>,
    joined: AtomicBool,
    shared: Mutex<Shared>,
}

struct Shared {
    queue: VecDeque<Inbound>,
    /// The connection, while no task is handling messages (the task holds it meanwhile).
    idle: Option<Connection>,
    working: bool,
    /// The transport has ended: once the queue is handled, the connection is dropped.
    closed: bool,
}

impl Inbox {
    pub fn new(connection: Connection) -> Arc<Self> {
        Arc::new(Inbox {
            join_by: connection
                .state
                .config
                .connect_timeout
                .map(|timeout| Instant::now() + timeout),
            joined: AtomicBool::new(false),
            shared: Mutex::new(Shared {
                queue: VecDeque::new(),
                idle: Some(connection),
                working: false,
                closed: false,
            }),
        })
    }

    /// Queues a message, and starts a task to handle it unless one is at work.
    pub fn push(self: &Arc<Self>, socket: &Socket, message: Inbound) {
        let mut shared = self.lock();
        if shared.queue.len() >= INBOX_CAPACITY {
            drop(shared);
            // The client sends faster than its actions can be stored: drop this one and tell it.
            ohd_metrics::metrics().limit("client_queue");
            refuse_flood(socket, &message);
            return;
        }
        shared.queue.push_back(message);
        if shared.working {
            return;
        }
        // No connection here means the transport ended and it was dropped: nobody to handle
        // this for.
        if let Some(connection) = shared.idle.take() {
            shared.working = true;
            tokio::spawn(self.clone().work(connection));
        }
    }

    /// Handles the queue until it is empty, then leaves the connection for the next task (or
    /// drops it, if the transport has ended meanwhile).
    async fn work(self: Arc<Self>, mut connection: Connection) {
        // Should handling ever panic, the inbox must not stay marked as at work with nobody
        // working: the client is closed so that it reconnects to a fresh connection.
        let mut guard = WorkGuard {
            inbox: &self,
            socket: connection.socket.clone(),
            finished: false,
        };
        let mut batch = Vec::new();
        loop {
            {
                let mut shared = self.lock();
                let n = shared.queue.len().min(BATCH);
                batch.extend(shared.queue.drain(..n));
                if batch.is_empty() {
                    if shared.queue.capacity() > KEEP_QUEUE {
                        shared.queue = VecDeque::new();
                    }
                    shared.working = false;
                    guard.finished = true;
                    if !shared.closed {
                        shared.idle = Some(connection);
                        return;
                    }
                    drop(shared);
                    tracing::debug!(sid = connection.socket.id(), "connection ended");
                    return;
                }
            }
            connection.handle_all(batch.drain(..)).await;
            if connection.session.is_some() {
                self.joined.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The transport has ended. What was received before, or arrives while it ends (a polling
    /// POST still being read), still gets handled (the user's `echo ... | websocat` sends and
    /// closes); the connection goes once nothing is left, or with the inbox.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Whether messages are waiting or being handled.
    pub fn is_busy(&self) -> bool {
        let shared = self.lock();
        shared.working || !shared.queue.is_empty()
    }

    /// Whether the client has been connected too long without joining.
    pub fn overdue(&self) -> bool {
        !self.joined.load(Ordering::Relaxed)
            && self
                .join_by
                .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tells a client that `message` was dropped as `RATE_LIMITED`, naming it (its event, action
/// and ack id) in the error event, and answering its ack if it asked for one, as every other
/// refused event is answered.
fn refuse_flood(socket: &Socket, message: &Inbound) {
    let packet = match message {
        Inbound::Text(text) => Packet::parse(text).ok(),
        Inbound::Binary | Inbound::Malformed(_) => None,
    };
    let about = match &packet {
        Some(Packet::Event {
            name, ack, args, ..
        }) => MessageRef {
            event: Some(name.clone()),
            action: args.first().and_then(action_kind),
            ack_id: *ack,
        },
        _ => MessageRef {
            event: None,
            action: None,
            ack_id: None,
        },
    };
    let which = match (&about.event, &about.action, about.ack_id) {
        (Some(event), Some(action), Some(id)) => format!("{event} {action:?} (ack {id})"),
        (Some(event), Some(action), None) => format!("{event} {action:?}"),
        (Some(event), None, Some(id)) => format!("{event} (ack {id})"),
        (Some(event), None, None) => event.clone(),
        (None, ..) => "a message".to_owned(),
    };
    let ack = about.ack_id;
    let notice = ErrorNotice::new(
        "RATE_LIMITED",
        format!("too many messages at once; {which} was dropped, send it again later"),
    )
    .about(about);
    answer(socket, ack, Err(&notice));
}

/// Tells the client how its event went: an error event if it failed, and an ack if it asked
/// for one (empty on success, the error notice otherwise). The queue holds the replies to a
/// full inbox, so it fills only for a client that stops reading; the excess is dropped, and the
/// transport cuts that client off when its writes block.
fn answer(socket: &Socket, ack: Option<u64>, result: Result<(), &ErrorNotice>) {
    if let Err(notice) = result {
        ohd_metrics::metrics().error(&notice.code);
        match packet::error_event(notice) {
            Ok(event) => {
                let _ = socket.try_send(Message::text(&event));
            }
            Err(e) => tracing::error!(error = %e, "error notice not serializable"),
        }
    }
    if let Some(id) = ack {
        let reply = match result {
            Ok(()) => "[]".to_owned(),
            Err(n) => format!("[{}]", serde_json::to_string(n).unwrap_or_default()),
        };
        let _ = socket.try_send(Message::text(&packet::ack(id, &reply)));
    }
}

/// What kind of action a client's event carries: its `action`, or the simplified form's `type`.
fn action_kind(data: &Value) -> Option<String> {
    data.get("action")
        .or_else(|| data.get("type"))
        .and_then(Value::as_str)
        .map(|kind| kind.chars().take(64).collect())
}

/// Resets an inbox whose task ended without finishing (a panic while handling).
struct WorkGuard<'a> {
    inbox: &'a Inbox,
    socket: Arc<Socket>,
    finished: bool,
}

impl Drop for WorkGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::error!(
            sid = self.socket.id(),
            "handling a client's messages failed; closing it"
        );
        self.inbox.lock().working = false;
        self.socket.close(DisconnectReason::ServerClose);
    }
}

pub struct Connection {
    state: AppState,
    socket: Arc<Socket>,
    session: Option<Session>,
}

/// A joined conversation. Its log is the socket's feed until the client leaves.
struct Session {
    conversation: ConversationId,
    _counted: ConnectionGuard,
}

impl Connection {
    pub fn new(state: AppState, socket: Arc<Socket>) -> Self {
        Connection {
            state,
            socket,
            session: None,
        }
    }

    /// Handles messages in order. Consecutive actions are stored as one append, so a client
    /// that sends many at once costs one commit, not one each.
    async fn handle_all(&mut self, messages: impl Iterator<Item = Inbound>) {
        let mut actions = Vec::new();
        for message in messages {
            self.handle(message, &mut actions).await;
        }
        self.store_actions(&mut actions).await;
    }

    async fn handle(&mut self, message: Inbound, actions: &mut Vec<(Option<u64>, ClientAction)>) {
        let text = match message {
            Inbound::Text(text) => text,
            Inbound::Binary => {
                self.send_error(
                    "BINARY_NOT_SUPPORTED",
                    "binary messages are not accepted; send JSON text",
                );
                return;
            }
            Inbound::Malformed(problem) => {
                self.send_error(
                    "INVALID_PACKET",
                    format!("malformed Engine.IO packet: {problem}"),
                );
                return;
            }
        };
        let max = self.state.config.max_payload_bytes;
        if text.len() > max {
            ohd_metrics::metrics().limit("max_payload_bytes");
            self.send_error(
                "PAYLOAD_TOO_LARGE",
                format!(
                    "message of {} bytes refused: the limit is {max} bytes",
                    text.len()
                ),
            );
            return;
        }
        let packet = match Packet::parse(&text) {
            Ok(packet) => packet,
            Err(e) => {
                self.send_error("INVALID_PACKET", format!("malformed Socket.IO packet: {e}"));
                return;
            }
        };
        if packet.namespace() != "/" {
            if let Packet::Connect { namespace, .. } = &packet {
                self.send(packet::connect_error(namespace, "Invalid namespace", None));
            }
            return;
        }
        match packet {
            Packet::Connect { auth, .. } => {
                if self.session.is_none() {
                    self.join(auth.as_ref()).await;
                }
            }
            Packet::Disconnect { .. } => {
                self.store_actions(actions).await;
                self.session = None;
                self.socket.clear_feed();
            }
            Packet::Event {
                ack, name, args, ..
            } => {
                if self.session.is_none() {
                    // An EVENT before any CONNECT is an implicit CONNECT with the handshake's
                    // query (the user's document sends one without a CONNECT first).
                    self.join(None).await;
                    if self.session.is_none() {
                        return;
                    }
                }
                let parsed = match name.as_str() {
                    "oh_user_action" | "oh_action" => {
                        let data = args.into_iter().next().unwrap_or(Value::Null);
                        ClientAction::parse(&data).map_err(|e| ErrorNotice::from(&e))
                    }
                    other => Err(ErrorNotice::new(
                        "UNKNOWN_EVENT",
                        format!("event {other:?} is not handled; send actions with oh_user_action"),
                    )),
                };
                match parsed {
                    Ok(action) => actions.push((ack, action)),
                    Err(notice) => self.answer(ack, Err(&notice)),
                }
            }
            Packet::Ignored { .. } => {}
        }
    }

    /// Stores the actions gathered so far, then acknowledges each.
    async fn store_actions(&mut self, actions: &mut Vec<(Option<u64>, ClientAction)>) {
        if actions.is_empty() {
            return;
        }
        let Some(session) = &self.session else {
            actions.clear();
            return;
        };
        let (acks, batch): (Vec<_>, Vec<_>) = actions.drain(..).unzip();
        let result = self
            .state
            .conversations
            .submit_all(&session.conversation, batch)
            .await;
        let failure = match result {
            Ok(_) => None,
            Err(StoreError::ConversationNotFound(id)) => Some(ErrorNotice::new(
                "CONVERSATION$NOT_FOUND",
                format!("conversation {id} no longer exists"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "actions not stored");
                Some(ErrorNotice::new(
                    "STORE_FAILED",
                    "the action could not be stored; send it again",
                ))
            }
        };
        for ack in acks {
            self.answer(ack, failure.as_ref().map_or(Ok(()), Err));
        }
    }

    fn answer(&self, ack: Option<u64>, result: Result<(), &ErrorNotice>) {
        answer(&self.socket, ack, result);
    }

    async fn join(&mut self, auth: Option<&Value>) {
        let query = self.socket.query();
        let headers = self.socket.headers();
        match handshake::authorize(&self.state, query, headers, auth).await {
            Ok(join) => {
                // Subscribed before the client hears it joined: a live-only notice (a title
                // change) published from then on reaches it; stored events it would get
                // anyway.
                let mut follower = Follower::new(
                    self.state.log.clone(),
                    join.conversation.clone(),
                    join.after,
                );
                // A failed read is tried again when the feed is first polled.
                let _ = follower.prefetch().await;
                if self.socket.is_closed() {
                    // The client left while the replay was read.
                    return;
                }
                // The replay's size, as far as its first page tells.
                ohd_metrics::metrics()
                    .replay_events
                    .observe(follower.buffered() as f64);
                self.start_session(join, follower);
            }
            Err(refusal) => self.refuse(&refusal),
        }
    }

    fn refuse(&self, refusal: &Refusal) {
        tracing::debug!(sid = self.socket.id(), message = %refusal.message, "connect refused");
        ohd_metrics::metrics()
            .join_refusals
            .get_or_create(&ohd_metrics::Reason {
                reason: refusal.reason(),
            })
            .inc();
        self.send(packet::connect_error("/", &refusal.message, refusal.data()));
    }

    fn start_session(&mut self, join: Join, follower: Follower) {
        let counted = self.state.conversations.connect(&join.conversation);
        self.state
            .agents
            .ensure(&join.conversation, &join.providers);
        // The answer and the feed together: the replay at hand leaves with the answer.
        let feed = Box::new(FollowFeed::new(follower, join.conversation.clone()));
        let _ = self
            .socket
            .send_then_feed(Message::text(&packet::connect_ok(self.socket.id())), feed);
        let figures = ohd_metrics::metrics();
        figures.joins.inc();
        tracing::info!(
            sid = self.socket.id(),
            conversation = %join.conversation,
            after = ?join.after,
            "client joined"
        );
        self.session = Some(Session {
            conversation: join.conversation,
            _counted: counted,
        });
    }

    fn send_error(&self, code: &str, message: impl Into<String>) {
        self.send_notice(&ErrorNotice::new(code, message));
    }

    fn send_notice(&self, notice: &ErrorNotice) {
        answer(&self.socket, None, Err(notice));
    }

    /// Replies and errors (see [`answer`] for what happens when the queue is full).
    fn send(&self, text: impl AsRef<str>) {
        let _ = self.socket.try_send(Message::text(text.as_ref()));
    }
}
