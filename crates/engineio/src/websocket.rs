//! The websocket transport: one task per connection reads the client's frames, writes what is
//! queued for it in small flushed batches, and keeps the heartbeat.

use crate::engine::{Conn, Engine, Refusal, new_sid};
use crate::packet::{self, Inbound, Outbound};
use crate::socket::{Socket, Transport};
use crate::wsio::WsIo;
use crate::{Config, DisconnectReason, Handler};
use axum::response::Response;
use futures::future::OptionFuture;
use futures::{FutureExt, StreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Packets taken from the queue before one flush. The connection also flushes whenever it has
/// gathered [`WsIo::FLUSH_AT`] bytes, which bounds a busy client's write buffer.
const WRITE_BATCH: usize = 64;
/// How long a closing handshake may take before the connection is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After a client's close, how long nothing new must come before the closing reply.
const QUIET: Duration = Duration::from_millis(50);

type Io = WsIo<TokioIo<Upgraded>>;
pub(crate) type Ws = WebSocketStream<Io>;

/// A websocket handshake the server has accepted: answered with `101 Switching Protocols`,
/// after which the connection is served by `serve`. Done here rather than with axum's
/// `WebSocketUpgrade` so that the connection's stream is ohd's [`WsIo`].
pub(crate) struct Accepted {
    on_upgrade: OnUpgrade,
    accept_key: String,
}

/// Checks an HTTP/1.1 websocket handshake (RFC 6455 §4.2.1).
pub(crate) fn accept(parts: &mut Parts) -> Result<Accepted, Refusal> {
    let headers = &parts.headers;
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refusal::BAD_REQUEST);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refusal::BAD_REQUEST);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(Refusal::BAD_REQUEST)?;
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(Refusal::BAD_REQUEST)?;
    Ok(Accepted {
        on_upgrade,
        accept_key,
    })
}

impl Accepted {
    /// The `101` answer; once the client has it, `serve` gets the websocket.
    pub fn respond<F, Fut>(self, ws_config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Ws) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        let connect = async move {
            let upgraded = on_upgrade.await.ok()?;
            let io = WsIo::new(TokioIo::new(upgraded));
            Some(WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await)
        };
        // Chained rather than awaited in one async block, so that the task holds either the
        // handshake's future or the session's, never both: it lives as long as the client.
        tokio::spawn(connect.then(move |ws| OptionFuture::from(ws.map(serve))));
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(key) = HeaderValue::from_str(&self.accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, key);
        }
        response
    }
}

/// tungstenite's settings for a connection.
pub(crate) fn config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer)
        // What tungstenite writes goes straight through to `WsIo`, which buffers it.
        .write_buffer_size(0)
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload))
}

/// What a websocket session does next.
enum Turn {
    Read(Option<Result<Frame, tokio_tungstenite::tungstenite::Error>>),
    Write,
    Beat,
}

/// Writes one text frame and flushes it, outside the session's loop (the probe of an upgrade,
/// which its caller bounds in time).
async fn send(ws: &mut Ws, text: &str) -> Result<(), DisconnectReason> {
    ws.get_mut().push_text(text, "");
    flush(ws).await
}

/// Writes out what is buffered. Straight from `WsIo`, not through tungstenite's flush, which
/// would first add any frame tungstenite holds back: after a client's Close, that is the
/// closing reply, and nothing may follow it (tungstenite sends its pongs itself as it reads).
async fn flush(ws: &mut Ws) -> Result<(), DisconnectReason> {
    use tokio::io::AsyncWriteExt;
    ws.get_mut()
        .flush()
        .await
        .map_err(|_| DisconnectReason::TransportError)
}

/// A session opened directly over a websocket. Not an `async fn`: what it is given is moved
/// into the session's future rather than kept beside it, which would cost every connection
/// that much more for as long as it lasts.
pub fn open<H: Handler>(
    engine: Arc<Engine<H>>,
    query: Box<str>,
    headers: HeaderMap,
    mut ws: Ws,
) -> impl Future<Output = ()> {
    let sid = new_sid();
    // Written out by the session's first flush.
    ws.get_mut()
        .push_text(&packet::open(&sid, false, &engine.config), "");
    let conn = engine.start_session(sid, query, headers, Transport::Websocket);
    run(engine, conn, ws)
}

/// A polling session moving to a websocket: the probe, then the switch.
pub fn upgrade<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H>>,
    mut ws: Ws,
) -> impl Future<Output = ()> {
    async move {
        let switched = switch(&engine, &conn, &mut ws).await;
        switched.then_some((engine, conn, ws))
    }
    .then(|switched| OptionFuture::from(switched.map(|(engine, conn, ws)| run(engine, conn, ws))))
    .map(drop)
}

/// Whether the session moved to the websocket.
async fn switch<H: Handler>(engine: &Engine<H>, conn: &Conn<H>, ws: &mut Ws) -> bool {
    {
        let mut state = conn.socket.lock();
        if state.transport != Transport::Polling {
            // Another upgrade got there first.
            return false;
        }
        state.transport = Transport::Upgrading;
    }
    let probed = tokio::time::timeout(engine.config.ping_timeout, probe(&conn.socket, ws));
    if let Ok(Ok(())) = probed.await {
        {
            let mut state = conn.socket.lock();
            if state.close_reason.is_some() {
                // The session ended during the probe, and was counted out as polling.
                return false;
            }
            state.transport = Transport::Websocket;
            // Under the lock, so that an end at the same moment counts the session once.
            crate::engine::counted(Transport::Polling).dec();
            crate::engine::counted(Transport::Websocket).inc();
        }
        // Whatever was queued while the probe ran goes out on the websocket now.
        conn.socket.wake.notify();
        return true;
    }
    tracing::debug!(
        sid = conn.socket.id(),
        "websocket upgrade failed; staying on polling"
    );
    let mut state = conn.socket.lock();
    if state.transport == Transport::Upgrading {
        state.transport = Transport::Polling;
    }
    false
}

/// `2probe` → `3probe`, a noop to end the client's pending poll, then its `5` (upgrade).
async fn probe(socket: &Socket, ws: &mut Ws) -> Result<(), ()> {
    let mut probed = false;
    loop {
        match ws.next().await {
            Some(Ok(Frame::Text(text))) => match (probed, text.as_str()) {
                (false, "2probe") => {
                    send(ws, "3probe").await.map_err(|_| ())?;
                    socket.push_control(Outbound::Noop);
                    probed = true;
                }
                (true, "5") => return Ok(()),
                _ => return Err(()),
            },
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
            _ => return Err(()),
        }
    }
}

/// Serves a websocket session until it ends, then tells the application. An `async` block
/// rather than an `async fn`, whose arguments rustc stores twice in the future (as given, and
/// moved into the body), which every connection would hold for as long as it lasts.
#[allow(clippy::manual_async_fn)]
fn run<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H>>,
    mut ws: Ws,
) -> impl Future<Output = ()> {
    async move {
        let socket = &conn.socket;
        let config = &engine.config;
        let heartbeat = tokio::time::sleep(config.ping_interval);
        tokio::pin!(heartbeat);
        let mut awaiting_pong = false;
        // What was buffered before the session started (its open packet) goes out with the first
        // write, before anything else.
        socket.wake.notify();
        let reason = loop {
            // Closing (also at shutdown) wakes this task, so a flag check each turn is enough: no
            // waiter to register per event.
            if socket.is_closed() {
                break DisconnectReason::ServerClose;
            }
            // What to do is decided first and done after, so that each kind of write is one
            // await point: the task's future, which every connection holds, stays small.
            let turn = tokio::select! {
                biased;
                frame = ws.next() => Turn::Read(frame),
                _ = socket.wake.wait() => Turn::Write,
                () = poll_fn(|cx| socket.poll_feed_ready(cx)) => Turn::Write,
                _ = &mut heartbeat => Turn::Beat,
            };
            // Ok(true): something was buffered to write now, under the write timeout.
            let step = match turn {
                Turn::Read(frame) => match frame {
                    Some(Ok(Frame::Text(text))) => match packet::parse(text) {
                        Ok(Inbound::Message(text)) => {
                            engine.handler.on_message(&conn.session, socket, text);
                            Ok(false)
                        }
                        // Only the answer to a ping counts: a client that sends pongs unasked
                        // must not put off the heartbeat (and with it the connect timeout).
                        Ok(Inbound::Pong) if awaiting_pong => {
                            awaiting_pong = false;
                            heartbeat
                                .as_mut()
                                .reset(tokio::time::Instant::now() + config.ping_interval);
                            Ok(false)
                        }
                        Ok(Inbound::Pong) => Ok(false),
                        Ok(Inbound::Ping { probe }) => {
                            ws.get_mut()
                                .push_text(if probe { "3probe" } else { "3" }, "");
                            Ok(true)
                        }
                        Ok(Inbound::Close) => Err(DisconnectReason::ClientClose),
                        Ok(Inbound::Binary(data)) => {
                            engine.handler.on_binary(&conn.session, socket, data);
                            Ok(false)
                        }
                        Ok(Inbound::Upgrade | Inbound::Noop) => Ok(false),
                        Err(problem) => {
                            engine.handler.on_malformed(&conn.session, socket, &problem);
                            Ok(false)
                        }
                    },
                    Some(Ok(Frame::Binary(data))) => {
                        engine.handler.on_binary(&conn.session, socket, data);
                        Ok(false)
                    }
                    Some(Ok(Frame::Close(_))) => Err(DisconnectReason::ClientClose),
                    // tungstenite answers websocket pings itself, through `WsIo`; a client that
                    // sends them without reading is cut off like any other that stops reading.
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => {
                        Ok(ws.get_mut().buffered() >= Io::FLUSH_AT)
                    }
                    Some(Err(_)) | None => Err(DisconnectReason::TransportError),
                },
                Turn::Write => Ok(true),
                Turn::Beat if awaiting_pong => Err(DisconnectReason::HeartbeatTimeout),
                Turn::Beat => {
                    engine.handler.on_heartbeat(&conn.session, socket);
                    awaiting_pong = true;
                    heartbeat
                        .as_mut()
                        .reset(tokio::time::Instant::now() + config.ping_timeout);
                    ws.get_mut().push_text("2", "");
                    Ok(true)
                }
            };
            let stop = match step {
                Ok(true) => write_guarded(socket, &mut ws, config.write_timeout).await,
                Ok(false) => Ok(()),
                Err(reason) => Err(reason),
            };
            if let Err(reason) = stop {
                break reason;
            }
        };
        if reason == DisconnectReason::TooSlow {
            tracing::warn!(sid = socket.id(), "client cut off: it stopped reading");
        }
        if reason == DisconnectReason::ClientClose {
            let _ = Box::pin(tokio::time::timeout(
                CLOSE_GRACE,
                linger(&engine, &conn, &mut ws),
            ))
            .await;
        }
        engine.end(&conn, reason);
        if !matches!(
            reason,
            DisconnectReason::TransportError | DisconnectReason::TooSlow
        ) {
            // What the server said last (an error, a refusal) still goes out, briefly.
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
                let _ = write_pending(socket, &mut ws).await;
                // The server's Close, or, after the client's, tungstenite's reply to it: that
                // one tungstenite only buffers on a flush of its own, after which it gives up
                // the stream without writing it out.
                let _ = ws.close(None).await;
                let _ = futures::SinkExt::flush(&mut ws).await;
                let _ = flush(&mut ws).await;
            }))
            .await;
        }
    }
}

/// A client that closes right after sending (`echo '40{}' | websocat URL`, as the user's document
/// shows) is still answered, as long as `CLOSE_GRACE` allows: what it sent is handled, and what
/// that produces (the CONNECT reply, the conversation's events, its own message) is written
/// before the closing handshake, until the application is idle and nothing more has come for a
/// moment.
async fn linger<H: Handler>(engine: &Engine<H>, conn: &Conn<H>, ws: &mut Ws) {
    let socket = &conn.socket;
    loop {
        let ready = tokio::select! {
            biased;
            _ = socket.wake.wait() => true,
            () = poll_fn(|cx| socket.poll_feed_ready(cx)) => true,
            () = tokio::time::sleep(QUIET) => false,
        };
        if ready {
            if write_pending(socket, ws).await.is_err() {
                return;
            }
        } else if !engine.handler.is_busy(&conn.session) {
            return;
        }
    }
}

/// Writes what is pending, unless the socket is closed meanwhile: a client that stops reading
/// blocks the write, and closing must still end the connection.
async fn write_guarded(
    socket: &Socket,
    ws: &mut Ws,
    limit: Duration,
) -> Result<(), DisconnectReason> {
    // Boxed: only a connection being written to needs this future's room.
    let mut write = Box::pin(write_pending(socket, ws));
    // Most batches go straight into the socket's buffer: try once before arming a timer, since
    // reading the clock costs a system call on some virtual machines.
    if let Poll::Ready(written) = futures::poll!(write.as_mut()) {
        return written;
    }
    // Boxed: a connection holds this room only while a write of its is blocked.
    Box::pin(write_blocked(socket, write, limit)).await
}

/// The rest of a blocked write, bounded by one timer for the rest of the batch: a batch is at
/// most a queue and 64 packets, so one blocked past `limit` means the client stopped reading.
async fn write_blocked(
    socket: &Socket,
    write: impl Future<Output = Result<(), DisconnectReason>>,
    limit: Duration,
) -> Result<(), DisconnectReason> {
    tokio::select! {
        written = tokio::time::timeout(limit, write) => written.unwrap_or(Err(DisconnectReason::TooSlow)),
        _ = socket.closed() => Err(DisconnectReason::ServerClose),
    }
}

/// Writes everything queued, then up to a batch from the feed, flushing after each batch and
/// whenever the buffer is full. One batch from the feed per call, so a long replay still lets
/// the connection read and ping.
async fn write_pending(socket: &Socket, ws: &mut Ws) -> Result<(), DisconnectReason> {
    // Allocated only if something is queued (replies, errors: rare next to events).
    let mut batch = Vec::new();
    loop {
        socket.take(WRITE_BATCH, &mut batch);
        if batch.is_empty() {
            break;
        }
        for packet in batch.drain(..) {
            if ws.get_mut().buffered() >= Io::FLUSH_AT {
                flush(ws).await?;
            }
            ws.get_mut().push_text(packet.as_str(), "");
        }
        flush(ws).await?;
    }
    let io = ws.get_mut();
    let mut room = WRITE_BATCH;
    socket.take_from_feed(&mut |text| {
        io.push_text(packet::MESSAGE_STR, text);
        room -= 1;
        room > 0 && io.buffered() < Io::FLUSH_AT
    });
    // With what was buffered outside a batch (the open packet; a pong tungstenite could not
    // write at once).
    if ws.get_mut().buffered() > 0 {
        flush(ws).await?;
    }
    Ok(())
}
