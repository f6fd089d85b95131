//! Putting the server together: state, routes, middleware, the Socket.IO layer, the listener.

use crate::agents::Agents;
use crate::api;
use crate::auth;
use crate::config::Config;
use crate::conversations::Conversations;
use crate::error::ApiError;
use crate::settings::SettingsStore;
use crate::socketio::SocketIoHandler;
use crate::web;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use ohd_engineio::Engine;
use ohd_store::sqlite::SqliteStore;
use ohd_store::{EventLog, LocalNotifier};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

/// Events a live subscriber may fall behind by before it reads from the store instead.
const LIVE_CHANNEL_CAPACITY: usize = 1024;
/// Packets (acks, errors) waiting per client to be written. The conversation's events are not
/// queued: the transport takes them from the client's feed when it can write them. Enough for the
/// replies to a full inbox (an ack and an error per message); the queue only grows while it
/// holds something, so the room costs nothing when unused.
const CLIENT_BUFFER_PACKETS: usize = 2048;
/// How long shutdown waits for open requests (long polls) before it stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub log: EventLog,
    pub conversations: Arc<Conversations>,
    pub agents: Arc<Agents>,
    pub settings: Arc<SettingsStore>,
}

impl AppState {
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        tokio::fs::create_dir_all(&config.data_dir).await?;
        tokio::fs::create_dir_all(config.workspaces_dir()).await?;
        tokio::fs::create_dir_all(config.sandboxes_dir()).await?;
        // Uploads cut off by a crash are no use to anyone.
        let _ = tokio::fs::remove_dir_all(config.staging_dir()).await;
        tokio::fs::create_dir_all(config.staging_dir()).await?;
        let store = SqliteStore::open(&config.database_path(), config.durability).await?;
        let log = EventLog::new(
            Arc::new(store),
            Arc::new(LocalNotifier::new(LIVE_CHANNEL_CAPACITY)),
        );
        // The model saved on the settings page wins over the configuration's.
        let settings = SettingsStore::load(config.settings_path())?;
        let choice = settings.get().await.llm_choice(&config);
        let sandbox_config = config.clone();
        let sandbox =
            tokio::task::spawn_blocking(move || crate::agents::decide_sandbox(&sandbox_config))
                .await?;
        let agents = Arc::new(Agents::new(&config, sandbox, log.clone(), &choice));
        let conversations = Arc::new(Conversations::new(
            log.clone(),
            config.workspaces_dir(),
            agents.clone(),
        ));
        Ok(AppState {
            config: Arc::new(config),
            log,
            conversations,
            agents,
            settings: Arc::new(settings),
        })
    }
}

pub type SocketEngine = Engine<SocketIoHandler>;

pub fn router(state: AppState) -> (Router, Arc<SocketEngine>) {
    let config = state.config.clone();
    // Messages up to twice the limit are read and answered with an error event; beyond that
    // the transport itself refuses them, so no client can make the server buffer without end.
    let transport_cap = config.max_payload_bytes.saturating_mul(2);
    let engine = Engine::new(
        ohd_engineio::Config {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            max_payload: transport_cap,
            queue_capacity: CLIENT_BUFFER_PACKETS,
            write_timeout: config.slow_client_timeout,
            // Clients send small messages; a larger one is read in more steps.
            ws_read_buffer: 1024,
            // The socket's session key may come in a header; nothing else is needed after the
            // handshake.
            keep_headers: vec![
                http::HeaderName::from_static(auth::SESSION_KEY_HEADER),
                http::header::AUTHORIZATION,
            ],
        },
        SocketIoHandler::new(state.clone()),
    );
    let sockets = {
        let engine = engine.clone();
        any(move |request: Request| engine.clone().handle(request))
    };

    let protected = api::protected().route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_session_key,
    ));
    let router = Router::new()
        .merge(protected)
        .merge(api::open())
        // ohd's page or a built OpenHands frontend; unknown `/api/*` paths still get JSON 404s.
        .merge(web::routes(config.web_ui.as_deref()))
        .layer(DefaultBodyLimit::max(config.max_payload_bytes))
        .with_state(state.clone())
        .route("/socket.io/", sockets.clone())
        .route("/socket.io", sockets)
        .layer(middleware::from_fn_with_state(state, check_socket_origin))
        .layer(cors(&config))
        .layer(TraceLayer::new_for_http().make_span_with(request_span));
    (router, engine)
}

/// The span of a request: its method and path only. The query is left out because a socket may
/// carry its session key there (`session_api_key`), and keys never reach the log.
fn request_span(request: &Request) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

/// With `SESSION_API_KEY` set, every protected route needs it (constant-time compare).
async fn require_session_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.config.session_api_key {
        let offered = auth::key_from_headers(request.headers());
        if !offered.is_some_and(|k| expected.matches(k)) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AUTH$INVALID_SESSION_API_KEY",
                "missing or invalid session key: send it in the X-Session-API-Key header",
            ));
        }
    }
    Ok(next.run(request).await)
}

/// Browsers send `Origin` with WebSocket and XHR requests but do not enforce CORS on
/// WebSockets, so the Socket.IO endpoint checks it itself: a page on another site must not be
/// able to join a conversation with the user's network access.
async fn check_socket_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.uri().path().starts_with("/socket.io")
        && let Some(origin) = request.headers().get(http::header::ORIGIN)
    {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !origin_allowed(origin, host, &state.config.cors_allowed_origins) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                "this origin may not connect; add it to server.cors_allowed_origins",
            ));
        }
    }
    Ok(next.run(request).await)
}

fn cors(config: &Config) -> CorsLayer {
    let extra = config.cors_allowed_origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            origin_allowed(origin, host, &extra)
        }))
        .allow_methods([
            http::Method::GET,
            http::Method::POST,
            http::Method::PATCH,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ])
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            http::HeaderName::from_static(auth::SESSION_KEY_HEADER),
        ])
}

/// Same origin, a page on localhost, or one of the configured origins (`*` allows all).
pub fn origin_allowed(origin: &HeaderValue, host: Option<&str>, extra: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if extra
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    let hostname = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(hostname, "localhost" | "127.0.0.1" | "::1")
}

/// A bound, not yet serving, ohd.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
    state: AppState,
    sockets: Arc<SocketEngine>,
}

impl Server {
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let addr = SocketAddr::new(config.host, config.port);
        if let Some(dir) = &config.web_ui {
            web::check_web_ui(dir)?;
        }
        if !addr.ip().is_loopback() && config.session_api_key.is_none() {
            // Anyone who reaches this address could run commands through the agent.
            tracing::warn!(
                %addr,
                "listening beyond this machine without SESSION_API_KEY: anyone who can reach it can use the agent"
            );
        }
        let state = AppState::open(config).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let (app, sockets) = router(state.clone());
        Ok(Server {
            listener,
            app,
            state,
            sockets,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets open requests finish for a moment.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let sockets = self.sockets.clone();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down");
            // Ends websockets and answers pending long-polls, so they do not hold shutdown up.
            sockets.shut_down();
            notify.notify_one();
        };
        let serve = axum::serve(self.listener, self.app).with_graceful_shutdown(graceful);
        tokio::select! {
            result = serve => result?,
            _ = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::info!("open connections did not finish in time; stopping anyway");
            }
        }
        // Agents' shells and whatever they started end with the server.
        self.state.agents.stop_all().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_from_localhost_the_same_host_or_the_list_are_allowed() {
        let o = |s: &'static str| HeaderValue::from_static(s);
        let extra = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(&o("http://localhost:3001"), None, &[]));
        assert!(origin_allowed(&o("http://127.0.0.1:5173"), None, &[]));
        assert!(origin_allowed(&o("http://[::1]:80"), None, &[]));
        assert!(origin_allowed(
            &o("https://ohd.example.org"),
            Some("ohd.example.org"),
            &[]
        ));
        assert!(origin_allowed(&o("https://app.example.com"), None, &extra));
        assert!(!origin_allowed(
            &o("https://evil.example"),
            Some("ohd.example.org"),
            &extra
        ));
        assert!(!origin_allowed(
            &o("http://localhost.evil.example"),
            None,
            &[]
        ));
        assert!(!origin_allowed(&o("null"), None, &[]));
    }
}
