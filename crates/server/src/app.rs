//! Putting the server together: state, routes, middleware, the Socket.IO layer, the listener.

use crate::agents::Agents;
use crate::api;
use crate::auth;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::conversations::Conversations;
use crate::documents::DocumentPlace;
use crate::error::ApiError;
use crate::guard;
use crate::listener::{self, Limits};
use crate::owner_only;
use crate::settings::SettingsStore;
use crate::socketio::SocketIoHandler;
use crate::web;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use ohd_engineio::Engine;
use ohd_protocol::ConversationId;
use ohd_store::postgres::{PgNotifier, PgNotifierConfig, PgStore};
use ohd_store::sqlite::SqliteStore;
use ohd_store::{EventLog, LocalNotifier};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
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
    pub user_secrets: Arc<crate::user_secrets::UserSecretsStore>,
    /// With a PostgreSQL store: this node among the others.
    pub cluster: Option<Arc<Cluster>>,
    /// Ends the background work of the state (the cluster's watchers) when the server stops.
    pub stop: CancellationToken,
}

impl AppState {
    pub async fn open(config: Config) -> anyhow::Result<AppState> {
        private_data_dir(&config)?;
        // Uploads cut off by a crash are no use to anyone.
        let _ = tokio::fs::remove_dir_all(config.staging_dir()).await;
        owner_only::dir(&config.staging_dir())?;
        let (log, places, cluster) = match &config.database_url {
            None => {
                let store = SqliteStore::open(&config.database_path(), config.durability).await?;
                let log = EventLog::new(
                    Arc::new(store),
                    Arc::new(LocalNotifier::new(LIVE_CHANNEL_CAPACITY)),
                );
                let places = (
                    DocumentPlace::File(config.settings_path()),
                    DocumentPlace::File(config.secrets_path()),
                );
                (log, places, None)
            }
            Some(url) => {
                // The configured name, and this process's own mark: two processes given the
                // same name (a copied configuration, a restart while the old one still hangs)
                // never share a lease or each other's notices.
                let incarnation: String = ConversationId::generate()
                    .as_str()
                    .chars()
                    .take(8)
                    .collect();
                let node = format!("{}/{incarnation}", config.node_id());
                if config.workspaces_dir.is_none() {
                    tracing::warn!(
                        "store.workspaces_dir is not set: each node keeps its own workspaces, so a conversation another node takes over finds its files missing"
                    );
                }
                warn_if_database_open(url.expose());
                // sqlx's messages do not repeat the URL, which may hold a password.
                let store = PgStore::connect(url.expose())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
                let notifier = PgNotifier::start(
                    store.clone(),
                    PgNotifierConfig::new(node.clone(), LIVE_CHANNEL_CAPACITY),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for other nodes' events: {e}"))?;
                tracing::info!(%node, "store: PostgreSQL, shared with the cluster's other nodes");
                let shared = Arc::new(store);
                let log = EventLog::new(shared.clone(), Arc::new(notifier));
                let places = (
                    DocumentPlace::Shared {
                        store: shared.clone(),
                        name: "settings",
                    },
                    DocumentPlace::Shared {
                        store: shared.clone(),
                        name: "secrets",
                    },
                );
                let cluster = Arc::new(Cluster {
                    node,
                    documents: shared.clone(),
                    leases: shared,
                    ttl: config.cluster.lease_ttl,
                });
                (log, places, Some(cluster))
            }
        };
        // The model saved on the settings page wins over the configuration's.
        let settings = SettingsStore::open(places.0).await?;
        let user_secrets = Arc::new(crate::user_secrets::UserSecretsStore::open(places.1).await?);
        let agents = Agents::new(
            &config,
            log.clone(),
            &settings.get().await,
            user_secrets.clone(),
            cluster.clone(),
        );
        let conversations = Arc::new(Conversations::new(
            log.clone(),
            config.workspaces_dir(),
            agents.clone(),
        ));
        let state = AppState {
            config: Arc::new(config),
            log,
            conversations,
            agents,
            settings: Arc::new(settings),
            user_secrets,
            cluster,
            stop: CancellationToken::new(),
        };
        if let Some(cluster) = &state.cluster {
            if state.config.agent.enabled {
                tokio::spawn(crate::cluster::watch_lapsed_leases(
                    cluster.clone(),
                    state.agents.clone(),
                    state.log.clone(),
                    state.stop.clone(),
                ));
            }
            tokio::spawn(crate::cluster::share_viewers(
                cluster.clone(),
                state.agents.clone(),
                state.stop.clone(),
            ));
            tokio::spawn(follow_shared_settings(state.clone()));
        }
        Ok(state)
    }
}

/// How often a node reads the shared settings and secrets again, to take in what another node
/// saved.
const SHARED_SETTINGS_REFRESH: Duration = Duration::from_secs(2);

/// Takes in settings and secrets other nodes save, for agents started afterwards.
async fn follow_shared_settings(state: AppState) {
    loop {
        tokio::select! {
            _ = state.stop.cancelled() => return,
            _ = tokio::time::sleep(SHARED_SETTINGS_REFRESH) => {}
        }
        match state.settings.refresh().await {
            Ok(Some(saved)) => state.agents.configure(&saved, &state.config),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "shared settings not read"),
        }
        if let Err(e) = state.user_secrets.refresh().await {
            tracing::warn!(error = %e, "shared secrets not read");
        }
    }
}

/// A database that takes no password from elsewhere than this machine could be reached by an
/// agent's command: sandboxed commands reach the network from this node's address.
fn warn_if_database_open(url: &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
    let host = host
        .trim_start_matches('[')
        .split([']', ':'])
        .next()
        .unwrap_or_default();
    let local = host.is_empty()
        || host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !local && !userinfo.contains(':') {
        tracing::warn!(%host, "the database URL carries no password: if the database lets this node in without one, agents' commands (which reach the network from this node) can too. Require a password (scram-sha-256) or a client certificate, or turn the sandbox's network off");
    }
}

/// The data directory, its folders and its files, owner-only (see [`owner_only`]).
fn private_data_dir(config: &Config) -> anyhow::Result<()> {
    let path = |p: &std::path::Path, e: std::io::Error| anyhow::anyhow!("{}: {e}", p.display());
    for dir in [
        config.data_dir.clone(),
        config.workspaces_dir(),
        config.sandboxes_dir(),
    ] {
        owner_only::dir(&dir).map_err(|e| path(&dir, e))?;
    }
    // With PostgreSQL there is no database file to make.
    let db = config.database_path();
    if config.database_url.is_none() {
        owner_only::file(&db).map_err(|e| path(&db, e))?;
    }
    let mut others = vec![config.settings_path(), db.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        others.push(name.into());
    }
    for file in others {
        owner_only::existing_file(&file).map_err(|e| path(&file, e))?;
    }
    Ok(())
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
        .layer(cors(&config))
        // Outside CORS, so that a request on a foreign Host name gets nothing, not even a
        // preflight answer.
        .layer(middleware::from_fn_with_state(state, guard::check))
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

fn cors(config: &Config) -> CorsLayer {
    let extra = config.cors_allowed_origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            guard::origin_allowed(origin, host, &extra)
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

/// A bound, not yet serving, ohd.
pub struct Server {
    listener: tokio::net::TcpListener,
    /// `[server] metrics_addr`: `/metrics` alone, without the session key.
    metrics: Option<tokio::net::TcpListener>,
    app: Router,
    state: AppState,
    sockets: Arc<SocketEngine>,
    limits: Limits,
}

impl Server {
    pub async fn bind(mut config: Config) -> anyhow::Result<Server> {
        let addr = SocketAddr::new(config.host, config.port);
        if let Some(dir) = &config.web_ui {
            web::check_web_ui(dir)?;
        }
        if !addr.ip().is_loopback() && config.session_api_key.is_none() {
            // Anyone who reaches this address could run commands through the agent.
            if !config.unprotected {
                anyhow::bail!(
                    "refusing to listen on {addr} without a session key: anyone who can reach it could run commands through the agent. Set SESSION_API_KEY (or [server] session_api_key), listen on 127.0.0.1, or start with --unprotected if that is really what you want"
                );
            }
            tracing::warn!(
                %addr,
                "UNPROTECTED: listening beyond this machine without SESSION_API_KEY (--unprotected); anyone who can reach this port can run commands through the agent"
            );
        }
        let open_files = listener::raise_open_file_limit();
        let limits = Limits {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config
                .max_connections
                .unwrap_or_else(|| listener::default_max_connections(open_files)),
        };
        let cap = u64::try_from(limits.max_connections).unwrap_or(u64::MAX);
        if open_files.is_some_and(|n| cap >= n) {
            tracing::warn!(
                max_connections = limits.max_connections,
                ?open_files,
                "server.max_connections is not below the open-file limit: ohd may run out of file descriptors before it refuses connections"
            );
        }
        tracing::debug!(
            ?open_files,
            max_connections = limits.max_connections,
            "limits"
        );
        // The address first: a port in use is said before anything else is set up or logged.
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "port {} is in use on {}: pass --port N (0 picks a free one), or stop the other server",
                    addr.port(),
                    addr.ip()
                )
            } else {
                anyhow::anyhow!("cannot listen on {addr}: {e}")
            }
        })?;
        let metrics = match config.metrics_addr {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot serve metrics on {at}: {e}"))?,
            ),
            None => None,
        };
        // A node's default name: this host's and the port it got.
        if config.cluster.node_id.is_none() {
            let port = listener
                .local_addr()
                .map(|a| a.port())
                .unwrap_or(addr.port());
            config.cluster.node_id = Some(format!("{}:{port}", crate::config::host_name()));
        }
        let state = AppState::open(config).await?;
        let (app, sockets) = router(state.clone());
        Ok(Server {
            listener,
            metrics,
            app,
            state,
            sockets,
            limits,
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
        let stop = CancellationToken::new();
        if let Some(metrics) = self.metrics {
            if let Ok(at) = metrics.local_addr() {
                if at.ip().is_loopback() {
                    tracing::info!(%at, "serving /metrics");
                } else {
                    tracing::warn!(%at, "serving /metrics without a session key beyond this machine: anyone who reaches this address can read ohd's figures");
                }
            }
            let app: Router = api::metrics::routes();
            tokio::spawn(listener::serve(metrics, app, self.limits, stop.clone()));
        }
        let serving = listener::serve(self.listener, self.app, self.limits, stop.clone());
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            () = &mut serving => {}
            () = shutdown => {}
        }
        tracing::info!("shutting down");
        // Ends websockets and answers pending long-polls, so they do not hold shutdown up.
        self.sockets.shut_down();
        stop.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, serving).await.is_err() {
            tracing::info!("open connections did not finish in time; stopping anyway");
        }
        // Agents' shells and whatever they started end with the server.
        self.state.stop.cancel();
        self.state.agents.stop_all().await;
        Ok(())
    }
}
