//! One client connection: its Socket.IO session on the `/` namespace, the actions it sends, and
//! the delivery of its conversation's events.

use super::Inbound;
use super::handshake::{self, Join, Refusal};
use super::packet::{self, Packet};
use crate::app::AppState;
use crate::conversations::ConnectionGuard;
use crate::delivery::FollowFeed;
use futures::FutureExt;
use ohd_engineio::{DisconnectReason, Message, Socket};
use ohd_protocol::notice::ErrorNotice;
use ohd_protocol::{ClientAction, ConversationId};
use ohd_store::{Follower, StoreError};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A client that opens the transport but never joins is closed after this long, as socket.io
/// servers do.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// Messages taken from the inbox at once.
const BATCH: usize = 256;

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

    pub async fn run(mut self, mut inbox: mpsc::Receiver<Box<Inbound>>) {
        let connect_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(connect_deadline);
        let mut ever_joined = false;
        // Grows only when a client sends in bursts: an idle connection keeps no buffer.
        let mut batch = Vec::new();
        // Handles what the client sends, in order (the transport writes the conversation to it
        // from the socket's feed). Ends when the transport drops the inbox's sender.
        loop {
            tokio::select! {
                biased;
                received = inbox.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    // Boxed: handling is rare next to waiting, and its future (the store's, the
                    // handshake's) would otherwise sit in every idle connection's task.
                    Box::pin(self.handle_all(batch.drain(..))).await;
                    batch.shrink_to(8);
                    ever_joined |= self.session.is_some();
                }
                _ = &mut connect_deadline, if !ever_joined => {
                    tracing::debug!(sid = self.socket.id(), "no CONNECT in time; closing");
                    self.socket.close(DisconnectReason::ServerClose);
                    break;
                }
            }
        }
        // The transport is gone, but what the client sent before it left still counts: store
        // any actions already received (the user's `echo ... | websocat` sends and closes).
        while inbox
            .recv_many(&mut batch, BATCH)
            .now_or_never()
            .unwrap_or(0)
            > 0
        {
            Box::pin(self.handle_all(batch.drain(..))).await;
        }
        tracing::debug!(sid = self.socket.id(), "connection ended");
    }

    /// Handles messages in order. Consecutive actions are stored as one append, so a client
    /// that sends many at once costs one commit, not one each.
    async fn handle_all(&mut self, messages: impl Iterator<Item = Box<Inbound>>) {
        let mut actions = Vec::new();
        for message in messages {
            self.handle(message, &mut actions).await;
        }
        self.store_actions(&mut actions).await;
    }

    async fn handle(
        &mut self,
        message: Box<Inbound>,
        actions: &mut Vec<(Option<u64>, ClientAction)>,
    ) {
        let text = match *message {
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

    /// Tells the client how its event went: an error event if it failed, and an ack if it
    /// asked for one.
    fn answer(&self, ack: Option<u64>, result: Result<(), &ErrorNotice>) {
        if let Err(notice) = result {
            self.send_notice(notice);
        }
        if let Some(id) = ack {
            let reply = match result {
                Ok(()) => "[]".to_owned(),
                Err(n) => format!("[{}]", serde_json::to_string(n).unwrap_or_default()),
            };
            self.send(packet::ack(id, &reply));
        }
    }

    async fn join(&mut self, auth: Option<&Value>) {
        let query = self.socket.query();
        let headers = self.socket.headers();
        match handshake::authorize(&self.state, query, headers, auth).await {
            Ok(join) => self.start_session(join),
            Err(refusal) => self.refuse(&refusal),
        }
    }

    fn refuse(&self, refusal: &Refusal) {
        tracing::debug!(sid = self.socket.id(), message = %refusal.message, "connect refused");
        self.send(packet::connect_error("/", &refusal.message, refusal.data()));
    }

    fn start_session(&mut self, join: Join) {
        // Subscribed before the client hears it joined: a live-only notice (a title change)
        // published from then on reaches it; stored events it would get anyway.
        let follower = Follower::new(
            self.state.log.clone(),
            join.conversation.clone(),
            join.after,
        );
        let counted = self.state.conversations.connect(&join.conversation);
        self.state
            .agents
            .ensure(&join.conversation, &join.providers);
        self.send(packet::connect_ok(self.socket.id()));
        tracing::info!(
            sid = self.socket.id(),
            conversation = %join.conversation,
            after = ?join.after,
            "client joined"
        );
        self.socket.set_feed(Box::new(FollowFeed::new(
            follower,
            join.conversation.clone(),
        )));
        self.session = Some(Session {
            conversation: join.conversation,
            _counted: counted,
        });
    }

    fn send_error(&self, code: &str, message: impl Into<String>) {
        self.send_notice(&ErrorNotice::new(code, message));
    }

    fn send_notice(&self, notice: &ErrorNotice) {
        match packet::error_event(notice) {
            Ok(event) => self.send(event),
            Err(e) => tracing::error!(error = %e, "error notice not serializable"),
        }
    }

    /// Replies and errors. The queue holds the replies to a full inbox, so it fills only for a
    /// client that stops reading; the excess is dropped, and the transport cuts that client off
    /// when its writes block.
    fn send(&self, text: impl AsRef<str>) {
        let _ = self.socket.try_send(Message::text(text.as_ref()));
    }
}
