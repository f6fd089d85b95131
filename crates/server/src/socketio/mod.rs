//! Socket.IO (v5) on Engine.IO (v4): the engine handler that gives each client connection its
//! own task.

pub mod connection;
pub mod handshake;
pub mod packet;

use crate::app::AppState;
use bytes::Bytes;
use ohd_engineio::{DisconnectReason, Handler, Message, Socket, Utf8Bytes};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Messages a connection's task handles, in the order the client sent them.
#[derive(Debug)]
pub enum Inbound {
    Text(Utf8Bytes),
    Binary,
    /// A frame that was not an Engine.IO packet.
    Malformed(String),
}

/// Packets a client may have waiting before it is told to slow down. They are boxed so that the
/// channel's first block, allocated with every connection, holds pointers (32 × 8 bytes) rather
/// than messages (32 × 40): 1 KiB less per idle client.
const INBOX_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct SocketIoHandler {
    state: AppState,
}

impl SocketIoHandler {
    pub fn new(state: AppState) -> Self {
        SocketIoHandler { state }
    }
}

impl Handler for SocketIoHandler {
    /// The way into the connection's task.
    type Session = mpsc::Sender<Box<Inbound>>;

    fn on_connect(&self, socket: &Arc<Socket>) -> Self::Session {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        tracing::debug!(sid = socket.id(), "engine.io connected");
        tokio::spawn(connection::Connection::new(self.state.clone(), socket.clone()).run(rx));
        tx
    }

    fn on_message(&self, inbox: &Self::Session, socket: &Arc<Socket>, text: Utf8Bytes) {
        enqueue(inbox, socket, Inbound::Text(text));
    }

    fn on_binary(&self, inbox: &Self::Session, socket: &Arc<Socket>, _data: Bytes) {
        enqueue(inbox, socket, Inbound::Binary);
    }

    fn on_malformed(&self, inbox: &Self::Session, socket: &Arc<Socket>, problem: &str) {
        enqueue(inbox, socket, Inbound::Malformed(problem.to_owned()));
    }

    fn on_disconnect(
        &self,
        _inbox: &Self::Session,
        socket: &Arc<Socket>,
        reason: DisconnectReason,
    ) {
        tracing::debug!(sid = socket.id(), ?reason, "engine.io disconnected");
    }
}

fn enqueue(inbox: &mpsc::Sender<Box<Inbound>>, socket: &Socket, message: Inbound) {
    if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(Box::new(message)) {
        // The client sends faster than its actions can be stored: tell it, drop this one.
        let notice = ohd_protocol::notice::ErrorNotice::new(
            "RATE_LIMITED",
            "too many messages at once; this one was dropped, send it again later",
        );
        if let Ok(event) = packet::error_event(&notice) {
            let _ = socket.try_send(Message::text(&event));
        }
    }
}
