//! HTTP long-polling: the client GETs to receive (held until there is something to send) and
//! POSTs to send. One of each at a time per session; a second concurrent one is a protocol error.

use crate::engine::{Conn, Engine, Refusal};
use crate::packet::{self, Inbound, Outbound};
use crate::socket::{Socket, State, Transport};
use crate::{DisconnectReason, Handler};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;
use std::future::poll_fn;
use std::sync::Arc;

/// Messages taken from a feed into one long-poll answer.
const POLL_BATCH: usize = 256;

/// A long-poll: waits until packets are queued, then answers with all of them.
pub async fn poll<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H>>,
) -> Result<Response, Refusal> {
    let socket = &conn.socket;
    let _active = claim(&engine, &conn, |s| &mut s.polling_get)?;
    let mut packets = Vec::new();
    let mut body = String::new();
    loop {
        if socket.lock().transport == Transport::Websocket {
            // Upgraded while this poll waited: the websocket carries everything from now on,
            // and gets the wake-up this poll may have taken.
            socket.wake.notify();
            return Ok(text_response(packet::NOOP.to_string()));
        }
        // The queue first (it holds the CONNECT reply, which must come first), then the feed.
        socket.take(usize::MAX, &mut packets);
        for p in packets.drain(..) {
            push_packet(&mut body, "", p.as_str());
        }
        let mut room = POLL_BATCH;
        socket.take_from_feed(&mut |text| {
            push_packet(&mut body, packet::MESSAGE_STR, text);
            room -= 1;
            room > 0
        });
        if !body.is_empty() {
            break;
        }
        if socket.is_closed() {
            return Ok(text_response(packet::CLOSE.to_string()));
        }
        // A wake since the last look is kept, so nothing queued in between is missed.
        tokio::select! {
            _ = socket.wake.wait() => {}
            _ = socket.closed() => {}
            () = poll_fn(|cx| socket.poll_feed_ready(cx)) => {}
        }
    }
    if socket.lock().transport == Transport::Websocket {
        socket.wake.notify();
    }
    Ok(text_response(body))
}

/// Appends one packet to a polling body, after the separator if it is not the first.
fn push_packet(body: &mut String, head: &str, text: &str) {
    if !body.is_empty() {
        body.push(char::from(packet::SEPARATOR));
    }
    body.push_str(head);
    body.push_str(text);
}

/// Packets the client sends, one or more in the body.
pub async fn post<H: Handler>(
    engine: Arc<Engine<H>>,
    conn: Arc<Conn<H>>,
    body: Body,
) -> Result<Response, Refusal> {
    let socket = &conn.socket;
    let _active = claim(&engine, &conn, |s| &mut s.polling_post)?;
    // A body that never finishes must not hold the session: bounded by the heartbeat's period,
    // and dropped if the session ends meanwhile.
    let read = tokio::time::timeout(
        engine.config.ping_interval + engine.config.ping_timeout,
        axum::body::to_bytes(body, engine.config.max_payload),
    );
    let body = tokio::select! {
        read = read => read.ok().and_then(Result::ok),
        _ = socket.closed() => return Err(Refusal::SESSION_UNKNOWN),
    };
    let Some(body) = body else {
        // Too large, or the client left halfway: either way this session is over.
        drop(_active);
        engine.end(&conn, DisconnectReason::ProtocolError);
        return Err(Refusal::TOO_LARGE);
    };
    for part in split(&body) {
        match packet::parse_bytes(part) {
            Ok(Inbound::Message(text)) => engine.handler.on_message(&conn.session, socket, text),
            Ok(Inbound::Binary(data)) => engine.handler.on_binary(&conn.session, socket, data),
            Ok(Inbound::Pong) => {
                socket.lock().awaiting_pong = false;
                socket.pong.notify_one();
            }
            Ok(Inbound::Ping { .. }) => socket.push_control(Outbound::Pong),
            Ok(Inbound::Close) => {
                engine.end(&conn, DisconnectReason::ClientClose);
                break;
            }
            Ok(Inbound::Upgrade | Inbound::Noop) => {}
            Err(problem) => engine.handler.on_malformed(&conn.session, socket, &problem),
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/html")], "ok").into_response())
}

/// Pings a polling session and ends it when the client stops answering. Once the session
/// moves to a websocket, the websocket task takes over the heartbeat and the end.
pub async fn heartbeat<H: Handler>(engine: Arc<Engine<H>>, conn: Arc<Conn<H>>) {
    let socket = &conn.socket;
    let config = &engine.config;
    let reason = 'beats: loop {
        tokio::select! {
            _ = socket.closed() => break DisconnectReason::ServerClose,
            _ = tokio::time::sleep(config.ping_interval) => {}
        }
        match socket.lock().transport {
            Transport::Websocket => return,
            Transport::Upgrading => continue,
            Transport::Polling => {}
        }
        engine.handler.on_heartbeat(&conn.session, socket);
        socket.lock().awaiting_pong = true;
        socket.push_control(Outbound::Ping);
        let deadline = tokio::time::sleep(config.ping_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = socket.closed() => break 'beats DisconnectReason::ServerClose,
                // The flag decides, not the wake-up: a pong sent unasked leaves a stale one.
                _ = socket.pong.notified() => if !socket.lock().awaiting_pong {
                    continue 'beats;
                },
                _ = &mut deadline => {
                    let state = socket.lock();
                    if state.transport == Transport::Polling && state.awaiting_pong {
                        break 'beats DisconnectReason::HeartbeatTimeout;
                    }
                    continue 'beats;
                }
            }
        }
    };
    if socket.lock().transport != Transport::Websocket {
        engine.end(&conn, reason);
    }
}

pub fn text_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

/// Marks a GET or POST as in progress until the guard drops (also when the client goes away
/// and the request's future is dropped). A second one at the same time ends the session.
fn claim<'a, H: Handler>(
    engine: &Engine<H>,
    conn: &'a Arc<Conn<H>>,
    flag: fn(&mut State) -> &mut bool,
) -> Result<Active<'a>, Refusal> {
    let mut state = conn.socket.lock();
    if state.transport == Transport::Websocket {
        return Err(Refusal::BAD_REQUEST);
    }
    if *flag(&mut state) {
        drop(state);
        engine.end(conn, DisconnectReason::ProtocolError);
        return Err(Refusal::BAD_REQUEST);
    }
    *flag(&mut state) = true;
    Ok(Active {
        socket: &conn.socket,
        flag,
    })
}

struct Active<'a> {
    socket: &'a Socket,
    flag: fn(&mut State) -> &mut bool,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        *(self.flag)(&mut self.socket.lock()) = false;
    }
}

/// The packets of a polling body.
fn split(body: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    body.split(|b| *b == packet::SEPARATOR)
        .map(move |part| body.slice_ref(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_body_on_the_record_separator() {
        let body = Bytes::from_static(b"42[\"a\"]\x1e3\x1e42[\"b\"]");
        let parts: Vec<_> = split(&body).collect();
        assert_eq!(parts, vec![&b"42[\"a\"]"[..], b"3", b"42[\"b\"]"]);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_body_splits_into_packets_or_errors(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let separators = body.iter().filter(|b| **b == packet::SEPARATOR).count();
                let body = Bytes::from(body);
                let mut parts = 0;
                for part in split(&body) {
                    let _ = packet::parse_bytes(part);
                    parts += 1;
                }
                prop_assert_eq!(parts, separators + 1);
            }
        }
    }
}
