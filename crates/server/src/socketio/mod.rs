//! Socket.IO (v5) on Engine.IO (v4): the engine.io handler that gives each client connection
//! its own task.

pub mod connection;
pub mod handshake;
pub mod packet;

use crate::app::AppState;
use bytes::Bytes;
use engineioxide::handler::EngineIoHandler;
use engineioxide::{DisconnectReason, Socket, Str};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Messages a connection's task handles, in the order the client sent them.
#[derive(Debug)]
pub enum Inbound {
    Text(Str),
    Binary,
}

/// Packets a client may have waiting before it is told to slow down.
const INBOX_CAPACITY: usize = 1024;

/// Per engine.io socket: the way into its connection task.
#[derive(Debug, Default)]
pub struct ConnectionSlot {
    inbox: OnceLock<mpsc::Sender<Inbound>>,
}

#[derive(Clone)]
pub struct SocketIoHandler {
    state: AppState,
}

impl std::fmt::Debug for SocketIoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketIoHandler")
    }
}

impl SocketIoHandler {
    pub fn new(state: AppState) -> Self {
        SocketIoHandler { state }
    }
}

impl EngineIoHandler for SocketIoHandler {
    type Data = ConnectionSlot;

    fn on_connect(self: Arc<Self>, socket: Arc<Socket<ConnectionSlot>>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        if socket.data.inbox.set(tx).is_err() {
            return;
        }
        tracing::debug!(sid = %socket.id, "engine.io connected");
        tokio::spawn(connection::Connection::new(self.state.clone(), socket).run(rx));
    }

    fn on_disconnect(&self, socket: Arc<Socket<ConnectionSlot>>, reason: DisconnectReason) {
        tracing::debug!(sid = %socket.id, ?reason, "engine.io disconnected");
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<Socket<ConnectionSlot>>) {
        self.enqueue(&socket, Inbound::Text(msg));
    }

    fn on_binary(self: &Arc<Self>, _data: Bytes, socket: Arc<Socket<ConnectionSlot>>) {
        self.enqueue(&socket, Inbound::Binary);
    }
}

impl SocketIoHandler {
    fn enqueue(&self, socket: &Arc<Socket<ConnectionSlot>>, message: Inbound) {
        let Some(inbox) = socket.data.inbox.get() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(message) {
            // The client sends faster than its actions can be stored: tell it, drop this one.
            let notice = ohd_protocol::notice::ErrorNotice::new(
                "RATE_LIMITED",
                "too many messages at once; this one was dropped, send it again later",
            );
            if let Ok(json) = serde_json::to_string(&notice) {
                let _ = socket.emit(packet::event("oh_event", &json));
            }
        }
    }
}
