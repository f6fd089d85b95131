//! The websocket transport: one task per connection reads the client's frames, writes what is
//! queued for it in small flushed batches, and keeps the heartbeat.

use crate::engine::{Conn, Engine, new_sid};
use crate::packet::{self, Inbound, Outbound};
use crate::socket::{Socket, Transport};
use crate::{DisconnectReason, Handler, Message};
use axum::extract::ws::{Message as Frame, WebSocket};
use futures::SinkExt;
use http::HeaderMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Packets taken from the queue before one flush. The websocket also writes whenever it has
/// gathered `WS_WRITE_BUFFER` bytes, which is what bounds a busy client's write buffer.
const WRITE_BATCH: usize = 64;
/// How long a closing handshake may take before the connection is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A session opened directly over a websocket.
pub async fn open<H: Handler>(
    engine: Arc<Engine<H>>,
    query: Box<str>,
    headers: HeaderMap,
    mut ws: WebSocket,
) {
    let sid = new_sid();
    let open = packet::open(&sid, false, &engine.config);
    if ws.send(Frame::Text(open.into())).await.is_err() {
        return;
    }
    let conn = engine.start_session(sid, query, headers, Transport::Websocket);
    run(engine, conn, ws).await;
}

/// A polling session moving to a websocket: the probe, then the switch.
pub async fn upgrade<H: Handler>(engine: Arc<Engine<H>>, conn: Arc<Conn<H>>, mut ws: WebSocket) {
    {
        let mut state = conn.socket.lock();
        if state.transport != Transport::Polling {
            // Another upgrade got there first.
            return;
        }
        state.transport = Transport::Upgrading;
    }
    let probed = tokio::time::timeout(engine.config.ping_timeout, probe(&conn.socket, &mut ws));
    if let Ok(Ok(())) = probed.await {
        conn.socket.lock().transport = Transport::Websocket;
        // Whatever was queued while the probe ran goes out on the websocket now.
        conn.socket.wake.notify();
        run(engine, conn, ws).await;
        return;
    }
    tracing::debug!(
        sid = conn.socket.id(),
        "websocket upgrade failed; staying on polling"
    );
    let mut state = conn.socket.lock();
    if state.transport == Transport::Upgrading {
        state.transport = Transport::Polling;
    }
}

/// `2probe` → `3probe`, a noop to end the client's pending poll, then its `5` (upgrade).
async fn probe(socket: &Socket, ws: &mut WebSocket) -> Result<(), ()> {
    let mut probed = false;
    loop {
        match ws.recv().await {
            Some(Ok(Frame::Text(text))) => match (probed, text.as_str()) {
                (false, "2probe") => {
                    ws.send(Frame::Text("3probe".into()))
                        .await
                        .map_err(|_| ())?;
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

/// Serves a websocket session until it ends, then tells the application.
async fn run<H: Handler>(engine: Arc<Engine<H>>, conn: Arc<Conn<H>>, mut ws: WebSocket) {
    let socket = &conn.socket;
    let config = &engine.config;
    let heartbeat = tokio::time::sleep(config.ping_interval);
    tokio::pin!(heartbeat);
    let mut awaiting_pong = false;
    let reason = loop {
        // Closing (also at shutdown) wakes this task, so a flag check each turn is enough: no
        // waiter to register per event.
        if socket.is_closed() {
            break DisconnectReason::ServerClose;
        }
        tokio::select! {
            biased;
            frame = ws.recv() => match frame {
                Some(Ok(Frame::Text(text))) => match packet::parse(text) {
                    Ok(Inbound::Message(text)) => {
                        engine.handler.on_message(&conn.session, socket, text);
                    }
                    Ok(Inbound::Pong) => {
                        awaiting_pong = false;
                        heartbeat.as_mut().reset(tokio::time::Instant::now() + config.ping_interval);
                    }
                    Ok(Inbound::Ping { probe }) => {
                        let pong = if probe { "3probe" } else { "3" };
                        if ws.send(Frame::Text(pong.into())).await.is_err() {
                            break DisconnectReason::TransportError;
                        }
                    }
                    Ok(Inbound::Close) => break DisconnectReason::ClientClose,
                    Ok(Inbound::Binary(data)) => {
                        engine.handler.on_binary(&conn.session, socket, data);
                    }
                    Ok(Inbound::Upgrade | Inbound::Noop) => {}
                    Err(problem) => engine.handler.on_malformed(&conn.session, socket, &problem),
                },
                Some(Ok(Frame::Binary(data))) => engine.handler.on_binary(&conn.session, socket, data),
                Some(Ok(Frame::Close(_))) => break DisconnectReason::ClientClose,
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Some(Err(_)) | None => break DisconnectReason::TransportError,
            },
            _ = socket.wake.wait() => {
                if let Err(stop) = write_guarded(socket, &mut ws, None, config.write_timeout).await {
                    break stop;
                }
            }
            message = poll_fn(|cx| socket.poll_feed(cx)) => {
                if let Err(stop) = write_guarded(socket, &mut ws, message, config.write_timeout).await {
                    break stop;
                }
            }
            _ = &mut heartbeat => {
                if awaiting_pong {
                    break DisconnectReason::HeartbeatTimeout;
                }
                if ws.send(Frame::Text(packet::PING.to_string().into())).await.is_err() {
                    break DisconnectReason::TransportError;
                }
                awaiting_pong = true;
                heartbeat.as_mut().reset(tokio::time::Instant::now() + config.ping_timeout);
            }
        }
    };
    if reason == DisconnectReason::TooSlow {
        tracing::warn!(sid = socket.id(), "client cut off: it stopped reading");
    }
    engine.end(&conn, reason);
    if !matches!(
        reason,
        DisconnectReason::TransportError | DisconnectReason::TooSlow
    ) {
        // What the server said last (an error, a refusal) still goes out, briefly.
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
            let _ = write_pending(socket, &mut ws, None).await;
            let _ = ws.close().await;
        }))
        .await;
    }
}

/// Writes what is pending, unless the socket is closed meanwhile: a client that stops reading
/// blocks the write, and closing must still end the connection.
async fn write_guarded(
    socket: &Socket,
    ws: &mut WebSocket,
    first: Option<Message>,
    limit: Duration,
) -> Result<(), DisconnectReason> {
    // Boxed: only a connection being written to needs this future's room.
    let mut write = Box::pin(write_pending(socket, ws, first));
    // Most batches go straight into the socket's buffer: try once before arming a timer, since
    // reading the clock costs a system call on some virtual machines.
    if let Poll::Ready(written) = futures::poll!(write.as_mut()) {
        return written;
    }
    // One timer for the rest of the batch: a batch is at most a queue and 64 packets, so one
    // blocked past `limit` means the client stopped reading.
    tokio::select! {
        written = tokio::time::timeout(limit, write) => written.unwrap_or(Err(DisconnectReason::TooSlow)),
        _ = socket.closed() => Err(DisconnectReason::ServerClose),
    }
}

/// Writes everything queued, then up to a batch from the feed, flushing after each batch. One
/// batch from the feed per call, so a long replay still lets the connection read and ping.
async fn write_pending(
    socket: &Socket,
    ws: &mut WebSocket,
    mut first: Option<Message>,
) -> Result<(), DisconnectReason> {
    // Allocated only if something is queued (replies, errors: rare next to events).
    let mut batch = Vec::new();
    loop {
        socket.take(WRITE_BATCH, &mut batch);
        let mut written = 0;
        for packet in batch.drain(..) {
            failed(ws.feed(Frame::Text(packet.into_text())).await)?;
            written += 1;
        }
        let from_feed = written == 0;
        if from_feed {
            if let Some(message) = first.take() {
                failed(ws.feed(Frame::Text(message.0)).await)?;
                written += 1;
            }
            while written < WRITE_BATCH {
                match poll_fn(|cx| Poll::Ready(socket.poll_feed(cx))).await {
                    Poll::Ready(Some(message)) => {
                        failed(ws.feed(Frame::Text(message.0)).await)?;
                        written += 1;
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
        }
        if written == 0 {
            return Ok(());
        }
        failed(ws.flush().await)?;
        if from_feed {
            return Ok(());
        }
    }
}

fn failed(result: Result<(), axum::Error>) -> Result<(), DisconnectReason> {
    result.map_err(|_| DisconnectReason::TransportError)
}
