//! Socket.IO (v5) on Engine.IO (v4): the engine handler that hands what each client sends to
//! its connection.

pub mod connection;
pub mod handshake;
pub mod packet;

use crate::app::AppState;
use bytes::Bytes;
use connection::{Connection, Inbox};
use ohd_engineio::{DisconnectReason, Handler, Socket, Utf8Bytes};
use std::sync::Arc;

/// Messages a connection handles, in the order the client sent them.
#[derive(Debug)]
pub enum Inbound {
    Text(Utf8Bytes),
    Binary,
    /// A frame that was not an Engine.IO packet.
    Malformed(String),
}

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
    /// What the connection has been sent and not yet handled, and the connection itself.
    type Session = Arc<Inbox>;

    fn on_connect(&self, socket: &Arc<Socket>) -> Self::Session {
        tracing::debug!(sid = socket.id(), "engine.io connected");
        Inbox::new(Connection::new(self.state.clone(), socket.clone()))
    }

    fn on_message(&self, inbox: &Self::Session, socket: &Arc<Socket>, text: Utf8Bytes) {
        inbox.push(socket, Inbound::Text(text));
    }

    fn on_binary(&self, inbox: &Self::Session, socket: &Arc<Socket>, _data: Bytes) {
        inbox.push(socket, Inbound::Binary);
    }

    fn on_malformed(&self, inbox: &Self::Session, socket: &Arc<Socket>, problem: &str) {
        inbox.push(socket, Inbound::Malformed(problem.to_owned()));
    }

    fn on_heartbeat(&self, inbox: &Self::Session, socket: &Arc<Socket>) {
        if inbox.overdue() {
            tracing::debug!(sid = socket.id(), "no CONNECT in time; closing");
            socket.close(DisconnectReason::ServerClose);
        }
    }

    fn is_busy(&self, inbox: &Self::Session) -> bool {
        inbox.is_busy()
    }

    fn on_disconnect(&self, inbox: &Self::Session, socket: &Arc<Socket>, reason: DisconnectReason) {
        tracing::debug!(sid = socket.id(), ?reason, "engine.io disconnected");
        inbox.close();
    }
}
