//! Engine.IO v4, the transport under Socket.IO: a handshake, a heartbeat, and messages over a
//! websocket or HTTP long-polling, with the upgrade from polling to websocket.
//!
//! Written for ohd instead of using engineioxide, because ohd's memory goal (a few KiB per idle
//! client at 10,000 clients, see docs/BENCHMARKS.md) is out of reach with it and no setting
//! changes that: engineioxide keeps each connection's whole HTTP request (whose header values
//! pin hyper's 8–16 KiB read buffer), runs three tasks and an eagerly allocated channel per
//! socket, and feeds all queued packets into the websocket before one flush, so its write
//! buffers grow to the queue's size during a burst and keep it. Here a websocket connection is
//! one task; a socket keeps only its query string and the headers the application asks for;
//! its send queue grows only while something is queued; frames are written into a buffer that
//! is given back after each flush (`wsio`); and a socket can be given a [`Feed`] that the
//! transport pulls from only when it can write, so a stream of events waits in no queue per
//! client. The wire protocol is the one python-engineio and engine.io speak
//! (<https://socket.io/docs/v4/engine-io-protocol/>).

mod engine;
mod packet;
mod polling;
mod signal;
mod socket;
mod websocket;
mod wsio;

pub use engine::Engine;
pub use socket::{SendError, Socket};
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use bytes::Bytes;
use http::HeaderName;
use std::sync::Arc;
use std::time::Duration;

/// How the engine behaves. `Default` is Engine.IO's usual values.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// How long a client has to answer a ping before it is dropped.
    pub ping_timeout: Duration,
    /// The largest message (websocket) or request body (polling) accepted, in bytes.
    pub max_payload: usize,
    /// Messages queued with [`Socket::try_send`] that may wait to be written to one client;
    /// beyond that sending fails. (A [`Feed`] is not queued.)
    pub queue_capacity: usize,
    /// How long one write to a client may stay blocked (it is not reading) before the client is
    /// cut off.
    pub write_timeout: Duration,
    /// The websocket read buffer per connection. Clients send small messages; a larger one is
    /// read in more steps.
    pub ws_read_buffer: usize,
    /// Request headers kept with each socket for the application (the rest are dropped after
    /// the handshake, so they hold no memory).
    pub keep_headers: Vec<HeaderName>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            queue_capacity: 64,
            write_timeout: Duration::from_secs(10),
            ws_read_buffer: 1024,
            keep_headers: Vec::new(),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client closed it (a close packet, or a websocket close).
    ClientClose,
    /// The connection dropped or failed.
    TransportError,
    /// The client did not answer a ping in time.
    HeartbeatTimeout,
    /// The client broke the transport protocol (for example two long-polls at once).
    ProtocolError,
    /// The application closed it ([`Socket::close`]).
    ServerClose,
    /// The client stopped reading: a write stayed blocked past `write_timeout`.
    TooSlow,
    /// The server is shutting down.
    ServerShutdown,
}

/// The application on top of the engine: told of each connection, its messages and its end.
/// Callbacks run on the transport's task and must not block.
pub trait Handler: Send + Sync + 'static {
    /// What the application keeps for each connection.
    type Session: Send + Sync + 'static;

    fn on_connect(&self, socket: &Arc<Socket>) -> Self::Session;
    fn on_message(&self, session: &Self::Session, socket: &Arc<Socket>, text: Utf8Bytes);
    fn on_binary(&self, session: &Self::Session, socket: &Arc<Socket>, data: Bytes);
    /// A frame that is not an Engine.IO packet. The connection stays open.
    fn on_malformed(&self, session: &Self::Session, socket: &Arc<Socket>, problem: &str);
    /// Called at each heartbeat (every ping interval), for checks that need no timer of their
    /// own per connection.
    fn on_heartbeat(&self, _session: &Self::Session, _socket: &Arc<Socket>) {}
    /// Whether the application is still handling what the client sent. A client that closes
    /// its websocket is answered until this is false (for at most a second).
    fn is_busy(&self, _session: &Self::Session) -> bool {
        false
    }
    fn on_disconnect(
        &self,
        session: &Self::Session,
        socket: &Arc<Socket>,
        reason: DisconnectReason,
    );
}

/// Where a socket's messages come from when the application would rather be asked than push:
/// the transport takes the next one only when it can write it, so nothing waits per client in
/// between, and a client that reads slowly slows only its own feed. A message is lent to the
/// transport, which writes it straight into the connection's output, so one event shared by
/// many clients is never copied or reference-counted per client.
pub trait Feed: Send + 'static {
    /// `Ready(true)` once a message is at hand for [`Feed::take`], `Ready(false)` once the feed
    /// has ended (it is then dropped); `Pending`, and `cx` woken later, otherwise.
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool>;
    /// Lends the message at hand, if there is one, to `write` and says whether there was. Never
    /// waits. The text is one Engine.IO message's payload (for Socket.IO, one encoded packet).
    fn take(&mut self, write: &mut dyn FnMut(&str)) -> bool;
}

/// A message queued for one client (a reply, an error notice): an Engine.IO message packet.
/// Messages that many clients share come from a [`Feed`], which lends them instead.
#[derive(Debug, Clone)]
pub struct Message(pub(crate) Utf8Bytes);

impl Message {
    /// A text message carrying `text` (for Socket.IO, one encoded Socket.IO packet).
    pub fn text(text: &str) -> Self {
        let mut packet = String::with_capacity(text.len() + 1);
        packet.push(packet::MESSAGE);
        packet.push_str(text);
        Message(Utf8Bytes::from(packet))
    }
}
