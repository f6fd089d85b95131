//! The entry point: one request on the Engine.IO path is a handshake, a long-poll, a polling
//! post, or a websocket (new, or upgrading a polling session).

use crate::socket::{Socket, Transport};
use crate::{Config, DisconnectReason, Handler, packet, polling, websocket};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, Method, StatusCode, header};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Engine<H: Handler> {
    pub(crate) config: Config,
    pub(crate) handler: H,
    /// Every open session: polling ones are found here by id for their next request or
    /// upgrade, and shutdown closes them all.
    sessions: Mutex<HashMap<Box<str>, Arc<Conn<H>>>>,
}

/// A session and what the application keeps with it.
pub(crate) struct Conn<H: Handler> {
    pub socket: Arc<Socket>,
    pub session: H::Session,
    ended: AtomicBool,
}

/// An Engine.IO error answer: the status and the protocol's `{"code","message"}` body.
pub(crate) struct Refusal {
    status: StatusCode,
    code: u8,
    message: &'static str,
}

impl Refusal {
    pub const TRANSPORT_UNKNOWN: Refusal = Refusal::bad(0, "Transport unknown");
    pub const SESSION_UNKNOWN: Refusal = Refusal::bad(1, "Session ID unknown");
    pub const BAD_HANDSHAKE_METHOD: Refusal = Refusal::bad(2, "Bad handshake method");
    pub const BAD_REQUEST: Refusal = Refusal::bad(3, "Bad request");
    pub const UNSUPPORTED_VERSION: Refusal = Refusal::bad(5, "Unsupported protocol version");
    pub const TOO_LARGE: Refusal = Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: 3,
        message: "Payload too large",
    };

    const fn bad(code: u8, message: &'static str) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code,
            message,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl<H: Handler> Engine<H> {
    pub fn new(config: Config, handler: H) -> Arc<Self> {
        Arc::new(Engine {
            config,
            handler,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Ends every session (server shutdown).
    pub fn shut_down(&self) {
        let sessions: Vec<_> = self.lock_sessions().values().cloned().collect();
        for conn in sessions {
            conn.socket.close(DisconnectReason::ServerShutdown);
        }
    }

    /// Answers one request on the Engine.IO path.
    pub async fn handle(self: Arc<Self>, request: Request) -> Response {
        match self.route(request).await {
            Ok(response) => response,
            Err(refusal) => refusal.into_response(),
        }
    }

    async fn route(self: Arc<Self>, request: Request) -> Result<Response, Refusal> {
        let query = request.uri().query().unwrap_or("").to_owned();
        let params = Params::parse(&query);
        if params.eio.as_deref() != Some("4") {
            return Err(Refusal::UNSUPPORTED_VERSION);
        }
        let (mut parts, body) = request.into_parts();
        match (params.transport.as_deref(), params.sid) {
            (Some("polling"), None) => {
                if parts.method != Method::GET {
                    return Err(Refusal::BAD_HANDSHAKE_METHOD);
                }
                let headers = self.kept_headers(&parts.headers);
                Ok(self.open_polling(query, headers))
            }
            (Some("polling"), Some(sid)) => {
                let conn = self.find(&sid)?;
                match parts.method {
                    Method::GET => polling::poll(self, conn).await,
                    Method::POST => polling::post(self, conn, body).await,
                    _ => Err(Refusal::BAD_REQUEST),
                }
            }
            (Some("websocket"), sid) => {
                if parts.method != Method::GET {
                    return Err(Refusal::BAD_HANDSHAKE_METHOD);
                }
                let accepted = websocket::accept(&mut parts)?;
                match sid {
                    None => {
                        let headers = self.kept_headers(&parts.headers);
                        let config = websocket::config(&self.config);
                        Ok(accepted.respond(config, move |ws| {
                            websocket::open(self, query.into_boxed_str(), headers, ws)
                        }))
                    }
                    Some(sid) => {
                        let conn = self.find(&sid)?;
                        if conn.socket.lock().transport != Transport::Polling {
                            return Err(Refusal::BAD_REQUEST);
                        }
                        // The session becomes `Upgrading` only once the websocket exists: an
                        // upgrade whose connection drops first leaves it on polling, heartbeat
                        // and all.
                        let config = websocket::config(&self.config);
                        Ok(accepted.respond(config, move |ws| websocket::upgrade(self, conn, ws)))
                    }
                }
            }
            _ => Err(Refusal::TRANSPORT_UNKNOWN),
        }
    }

    fn open_polling(self: Arc<Self>, query: String, headers: HeaderMap) -> Response {
        let sid = new_sid();
        let open = packet::open(&sid, true, &self.config);
        let conn = self.start_session(sid, query.into_boxed_str(), headers, Transport::Polling);
        tokio::spawn(polling::heartbeat(self.clone(), conn));
        polling::text_response(open)
    }

    /// A new session: its socket, its application side, and its place among the open sessions.
    pub(crate) fn start_session(
        &self,
        sid: Box<str>,
        query: Box<str>,
        headers: HeaderMap,
        transport: Transport,
    ) -> Arc<Conn<H>> {
        let socket = Arc::new(Socket::new(
            sid.clone(),
            query,
            headers,
            self.config.queue_capacity,
            transport,
        ));
        let labels = ohd_metrics::Transport {
            transport: transport_name(transport),
        };
        ohd_metrics::metrics()
            .connections_opened
            .get_or_create(&labels)
            .inc();
        counted(transport).inc();
        let session = self.handler.on_connect(&socket);
        let conn = Arc::new(Conn {
            socket,
            session,
            ended: AtomicBool::new(false),
        });
        self.lock_sessions().insert(sid, conn.clone());
        conn
    }

    /// Ends a session once, whoever notices first: the application hears of it with the
    /// reason the socket was closed with.
    pub(crate) fn end(&self, conn: &Arc<Conn<H>>, reason: DisconnectReason) {
        if conn.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        conn.socket.close(reason);
        let reason = {
            let state = conn.socket.lock();
            counted(state.transport).dec();
            state.close_reason.unwrap_or(reason)
        };
        self.lock_sessions().remove(conn.socket.id());
        self.handler
            .on_disconnect(&conn.session, &conn.socket, reason);
    }

    fn find(&self, sid: &str) -> Result<Arc<Conn<H>>, Refusal> {
        self.lock_sessions()
            .get(sid)
            .cloned()
            .ok_or(Refusal::SESSION_UNKNOWN)
    }

    /// Fresh copies of the headers the application wants: a header value borrowed from the
    /// request would keep hyper's whole read buffer alive for as long as the session.
    pub(crate) fn kept_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut kept = HeaderMap::new();
        for name in &self.config.keep_headers {
            for value in headers.get_all(name) {
                if let Ok(copy) = http::HeaderValue::from_bytes(value.as_bytes()) {
                    kept.append(name.clone(), copy);
                }
            }
        }
        kept
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Conn<H>>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Engine.IO parameters of a request's query.
struct Params {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Self {
        let mut params = Params {
            eio: None,
            transport: None,
            sid: None,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*key {
                "EIO" => &mut params.eio,
                "transport" => &mut params.transport,
                "sid" => &mut params.sid,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        params
    }
}

/// 128 random bits, URL-safe: a session id nobody can guess, since it is all a polling request
/// needs to act as that client.
/// A transport's name in the figures; an upgrade in progress still counts as polling.
fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Websocket => "websocket",
        Transport::Polling | Transport::Upgrading => "polling",
    }
}

/// The gauge of sessions open on `transport`.
pub(crate) fn counted(transport: Transport) -> prometheus_client::metrics::gauge::Gauge {
    ohd_metrics::metrics()
        .connections_open
        .get_or_create(&ohd_metrics::Transport {
            transport: transport_name(transport),
        })
        .clone()
}

pub(crate) fn new_sid() -> Box<str> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(uuid::Uuid::new_v4().as_bytes())
        .into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_distinct_and_url_safe() {
        let a = new_sid();
        let b = new_sid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn reads_the_engine_io_parameters() {
        let p = Params::parse("EIO=4&transport=polling&sid=a%2Bb&x=1&EIO=3");
        assert_eq!(p.eio.as_deref(), Some("4"));
        assert_eq!(p.transport.as_deref(), Some("polling"));
        assert_eq!(p.sid.as_deref(), Some("a+b"));
    }
}
