//! Accepting connections and serving HTTP/1.1 on each, in place of `axum::serve`, which has no
//! timeouts and no cap: with it, connections that sent nothing, or a header a byte at a time,
//! were kept forever until ohd ran out of file descriptors.
//!
//! - A connection has one deadline at a time, kept by its own task: while a request head is
//!   being received (from the connection's start, or from the first byte of a later request),
//!   `header_read_timeout`; while nothing is in flight, `idle_timeout`; while a request is being
//!   answered (a long-poll waiting, a download streaming), none. hyper's own header timeout is
//!   not used: it also runs while a kept-alive connection waits for its next request, which
//!   would make it the idle timeout as well.
//! - A connection upgraded to a websocket leaves hyper, and with it these deadlines: the
//!   Engine.IO heartbeat watches it from then on.
//! - At most `max_connections` are open, websockets included; one more is answered 503 and
//!   closed (or just closed, if too many such answers are under way).
//! - When accepting fails (out of file descriptors), the loop waits a moment instead of
//!   spinning, and says so once.

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long to wait before accepting again after a failure such as `EMFILE`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections over the cap that are answered at once; beyond that they are just closed.
const REFUSALS_AT_ONCE: usize = 32;
/// How long answering one of them may take.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Of the open-file limit, the share connections may take by default: the rest is for the
/// store, the agents' shells and the files they open.
const CONNECTION_SHARE: (u64, u64) = (3, 4);
/// The default cap when the open-file limit is very high or unlimited.
const MAX_DEFAULT_CONNECTIONS: u64 = 100_000;
/// How often the loop looks whether a burst of connections has ended.
const TRIM_CHECK: Duration = Duration::from_secs(10);
/// Connections closed since the last peak that count as a burst worth giving memory back for.
const TRIM_AFTER_CLOSED: usize = 512;

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 85\r\n\
\r\n\
{\"error\":\"too many open connections; try again later\",\"code\":\"TOO_MANY_CONNECTIONS\"}\n";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard one (each connection is a file descriptor) and
/// returns the limit now in force, `None` if unlimited or unknown.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

/// The default connection cap for an open-file limit.
pub fn default_max_connections(open_files: Option<u64>) -> usize {
    let cap = open_files
        .map(|n| n / CONNECTION_SHARE.1 * CONNECTION_SHARE.0)
        .unwrap_or(MAX_DEFAULT_CONNECTIONS)
        .clamp(1, MAX_DEFAULT_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Accepts and serves connections until `stop`, then waits until every connection (websockets
/// included) has ended.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    // Once per burst: a full table or a flood of refusals is one line in the log, not thousands.
    let mut accept_failing = false;
    let mut at_cap = false;
    let mut burst = Burst::default();
    let mut trim_check = tokio::time::interval(TRIM_CHECK);
    trim_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            _ = trim_check.tick() => {
                burst.check(limits.max_connections - slots.available_permits());
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                accept_failing = false;
                // Small writes go out at once: with Nagle's algorithm the CONNECT answer and
                // the first events of a join waited for the client's delayed acknowledgement
                // (about 40 ms on Linux) before they were sent.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
                stream
            }
            // The client gave up before it was accepted: nothing to wait for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if !accept_failing {
                    tracing::warn!(error = %e, "cannot accept connections; retrying every 100 ms");
                    accept_failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ohd_metrics::metrics().limit("max_connections");
            if !at_cap {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached; refusing new connections (server.max_connections)"
                );
                at_cap = true;
            }
            refuse(stream, &refusals);
            continue;
        };
        at_cap = false;
        burst.note(limits.max_connections - slots.available_permits());
        tokio::spawn(connection(stream, slot, app.clone(), limits, stop.clone()));
    }
    drop(listener);
    // Every slot back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// glibc's malloc keeps what connections freed in its arenas: after 2,000 connections closed,
/// ohd stayed ~18 MiB larger until `malloc_trim` (docs/BENCHMARKS.md). So once a burst of
/// connections has ended, the loop asks for that memory to be given back; idle periods and
/// steady traffic never trigger it.
#[derive(Default)]
struct Burst {
    peak: usize,
}

impl Burst {
    /// At each new connection: the most open at once.
    fn note(&mut self, open: usize) {
        self.peak = self.peak.max(open);
    }

    /// Now and then: gives memory back if a burst has ended since the last time.
    fn check(&mut self, open: usize) {
        self.note(open);
        if self.peak - open >= TRIM_AFTER_CLOSED {
            self.peak = open;
            tokio::task::spawn_blocking(give_back_freed_memory);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn give_back_freed_memory() {
    // SAFETY: malloc_trim takes no pointers and locks each arena itself; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn give_back_freed_memory() {}

/// Errors about one connection that went away before `accept` returned it.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap with a 503 and closes it, or closes it at once when too
/// many answers are under way.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            // Read what the client sent before closing: closing with unread data would reset
            // the connection, and the client could lose the answer.
            let mut sink = [0u8; 1024];
            for _ in 0..64 {
                if stream.read(&mut sink).await? == 0 {
                    break;
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// Serves one connection until it ends, is upgraded, passes its deadline, or the server stops.
async fn connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        _slot: slot,
    });
    let service = Tracked {
        app,
        activity: activity.clone(),
    };
    let conn = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection that is idle or slow to send a request");
                    return;
                }
            }
            () = stop.cancelled(), if !stopping => {
                // Ends the connection once its request in flight is answered.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its deadline: shared by its reader (which sees a request
/// start), its service (which sees it answered) and its task (which keeps the deadline).
struct Activity {
    state: Mutex<State>,
    /// Woken when the deadline may have moved earlier.
    changed: Notify,
}

struct State {
    /// Requests whose answer has not been sent in full.
    in_flight: usize,
    /// A request head is being received (or awaited on a new connection) since `since`.
    receiving: bool,
    /// When the current phase (receiving, or idle) began.
    since: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(State {
                in_flight: 0,
                // A new connection owes its first request head from the start.
                receiving: true,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        let allowed = if state.receiving {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        Some(state.since + allowed)
    }

    /// Bytes arrived: on an idle connection, that is the start of a request head.
    fn on_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && !state.receiving {
            state.receiving = true;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    fn begin(&self) {
        let mut state = self.lock();
        state.in_flight += 1;
        state.receiving = false;
    }

    fn end(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }
}

/// The connection's socket, which tells [`Activity`] when bytes arrive, and holds the
/// connection's slot under the cap for as long as the socket is open (after an upgrade, that
/// is as long as the websocket).
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The application as hyper calls it, counting each request in flight until its answer's
/// body has been sent (or dropped).
struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.activity.begin();
        let in_flight = InFlight(self.activity.clone());
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            Ok(response.map(|body| {
                Body::new(TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// One request in flight; ends when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_other_files() {
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(20_000)), 15_000);
        assert_eq!(default_max_connections(Some(1 << 20)), 100_000);
        assert_eq!(default_max_connections(None), 100_000);
        assert_eq!(default_max_connections(Some(1)), 1);
    }

    #[tokio::test]
    async fn memory_is_given_back_only_after_a_burst_of_connections_ends() {
        let mut burst = Burst::default();
        burst.check(10);
        burst.note(2000);
        assert_eq!(burst.peak, 2000);
        burst.check(1600);
        assert_eq!(burst.peak, 2000, "400 closed is not yet a burst");
        burst.check(100);
        assert_eq!(burst.peak, 100, "the peak starts again after a trim");
    }

    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(json["code"], "TOO_MANY_CONNECTIONS");
    }
}
