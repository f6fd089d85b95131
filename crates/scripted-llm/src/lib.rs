//! A scripted model served over real HTTP, for tests of the model clients, of the agent, and of
//! the whole server end to end.
//!
//! It answers `POST /v1/chat/completions` (OpenAI; a stream of events when the request says
//! `"stream": true`, one JSON answer otherwise) and `POST /v1/messages` (Anthropic, likewise)
//! with the next turn of its [`Script`], whatever was asked. It records every request:
//! `GET /requests` lists their bodies, and `POST /script` replaces the script (and starts it
//! over) while it runs.
//!
//! For clients without native tool calling, a script can refuse `tools` as vLLM or Ollama do
//! ([`Script::refusing_tools`]), and its tool calls are written as text to a request that
//! describes the tools in its prompt instead ([`Turn`]). A turn can show reasoning
//! ([`Turn::with_reasoning`]): OpenAI's `reasoning_content`, Anthropic's signed `thinking`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use ohd_scripted_llm::{Script, ScriptedLlm, Turn};
//! let (base_url, handle) = ScriptedLlm::start(Script::new(vec![Turn::text("hello")])).await?;
//! // point an OpenAI client at format!("{base_url}/v1"), an Anthropic one at base_url
//! let bodies = handle.requests();
//! # Ok(()) }
//! ```

mod anthropic;
mod openai;
mod script;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;

pub use script::{Script, ScriptedCall, ScriptedUsage, ToolsRefusal, Turn, WhenDone};

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (a string when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub struct ScriptedLlm;

impl ScriptedLlm {
    /// Serves `script` on a free port of 127.0.0.1. Returns the server's root URL
    /// (`http://127.0.0.1:PORT`: an Anthropic base URL; OpenAI clients want `{root}/v1`) and the
    /// handle that reads what was received. The server stops when the handle is dropped.
    pub async fn start(script: Script) -> std::io::Result<(String, ScriptedLlmHandle)> {
        ScriptedLlm::bind("127.0.0.1:0", script).await
    }

    /// Serves `script` on `addr`.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        script: Script,
    ) -> std::io::Result<(String, ScriptedLlmHandle)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Shared {
            script: Mutex::new(script),
            next_turn: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            asides: Mutex::new(Vec::new()),
            ids: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/requests", get(requests))
            .route("/script", post(replace_script))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("scripted-llm: server stopped: {err}");
            }
        });
        let base_url = format!("http://{addr}");
        Ok((
            base_url,
            ScriptedLlmHandle {
                addr,
                state,
                server,
            },
        ))
    }
}

/// Reads what the server received and changes its script. Dropping it stops the server.
pub struct ScriptedLlmHandle {
    addr: SocketAddr,
    state: Arc<Shared>,
    server: JoinHandle<()>,
}

impl ScriptedLlmHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bodies of all requests so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state.requests)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// The side questions answered by the script's `aside`, in order.
    pub fn asides(&self) -> Vec<Value> {
        lock(&self.state.asides)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// All requests so far with their paths and headers.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Replaces the script and starts it from its first turn.
    pub fn set_script(&self, script: Script) {
        self.state.set_script(script);
    }

    /// Waits until at least `count` requests have arrived, or `timeout` passes.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while lock(&self.state.requests).len() < count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for ScriptedLlmHandle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    script: Mutex<Script>,
    next_turn: AtomicU64,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Side questions answered by [`Script::aside`].
    asides: Mutex<Vec<RecordedRequest>>,
    /// Numbers for response and tool call ids, unique over the server's life.
    ids: AtomicU64,
}

impl Shared {
    fn set_script(&self, script: Script) {
        let mut current = lock(&self.script);
        *current = script;
        self.next_turn.store(0, Ordering::SeqCst);
    }

    /// Records the request and takes the turn that answers it, or the refusal of its tools.
    fn take_turn(&self, path: &str, headers: &HeaderMap, body: &Bytes) -> (Taken, Value) {
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let recorded = RecordedRequest {
            path: path.to_owned(),
            headers,
            body: body.clone(),
        };
        let offers_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        let (aside, refuse_tools) = {
            let script = lock(&self.script);
            (script.aside.clone(), script.refuse_tools)
        };
        if let (false, false, Some(aside)) = (offers_tools, describes_tools(&body), aside) {
            lock(&self.asides).push(recorded);
            return (Taken::Turn(Box::new(Turn::text(aside))), body);
        }
        lock(&self.requests).push(recorded);
        if let (true, Some(server)) = (offers_tools, refuse_tools) {
            return (Taken::Refused(server), body);
        }
        let n = self.next_turn.fetch_add(1, Ordering::SeqCst);
        let turn = lock(&self.script).turn(usize::try_from(n).unwrap_or(usize::MAX));
        (Taken::Turn(Box::new(turn)), body)
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::SeqCst)
    }
}

/// What answers a request.
enum Taken {
    Turn(Box<Turn>),
    /// Its `tools`, refused as this server refuses them.
    Refused(ToolsRefusal),
}

/// Whether a request describes tools in its prompt for calls written as text, as a client
/// without native tool calling does.
fn describes_tools(request: &Value) -> bool {
    request.to_string().contains("<function=")
}

/// A test server has nothing to protect from a panicked holder: carry on with the data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a turn answers, given the request.
pub(crate) struct Reply<'a> {
    pub turn: &'a Turn,
    pub request: &'a Value,
    pub model: String,
    pub usage: ScriptedUsage,
    /// The number of the response; tool call `i` gets `call_ids[i]`.
    pub response_number: u64,
    pub call_ids: Vec<u64>,
    /// The answer's text: the turn's, with its calls written in when the request wants them
    /// as text, cut at the first stop sequence.
    pub text: String,
    /// The calls sent as native calls: none when written in the text.
    pub calls: &'a [ScriptedCall],
    /// The stop sequence the text was cut at.
    pub stopped_at: Option<String>,
}

impl<'a> Reply<'a> {
    fn new(shared: &Shared, turn: &'a Turn, request: &'a Value) -> Reply<'a> {
        let model = request_model(request);
        let as_text = request["tools"].as_array().is_none_or(|t| t.is_empty())
            && describes_tools(request)
            && !turn.tool_calls.is_empty();
        let (mut text, calls) = if as_text {
            let mut text = turn.text.clone();
            for call in &turn.tool_calls {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&call.prompted_text());
            }
            (text, &[][..])
        } else {
            (turn.text.clone(), turn.tool_calls.as_slice())
        };
        let stopped_at = stop_sequences(request)
            .into_iter()
            .filter_map(|stop| text.find(&stop).map(|at| (at, stop)))
            .min_by_key(|(at, _)| *at)
            .map(|(at, stop)| {
                text.truncate(at);
                stop
            });
        Reply {
            turn,
            request,
            model,
            usage: usage(turn, request),
            response_number: shared.next_id(),
            call_ids: calls.iter().map(|_| shared.next_id()).collect(),
            text,
            calls,
            stopped_at,
        }
    }

    pub fn wants_stream(&self) -> bool {
        self.request.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

fn request_model(request: &Value) -> String {
    request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned()
}

/// The request's stop sequences: OpenAI's `stop` (a string or a list), Anthropic's
/// `stop_sequences`.
fn stop_sequences(request: &Value) -> Vec<String> {
    let stop = request
        .get("stop")
        .or_else(|| request.get("stop_sequences"));
    match stop {
        Some(Value::String(stop)) => vec![stop.clone()],
        Some(Value::Array(stops)) => stops
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The turn's usage, or one made from the sizes of request and answer (about four characters a
/// token), so that usage is never zero unless scripted so.
fn usage(turn: &Turn, request: &Value) -> ScriptedUsage {
    turn.usage.unwrap_or_else(|| {
        let answer: usize = turn.text.chars().count()
            + turn.reasoning.as_deref().map_or(0, |r| r.chars().count())
            + turn
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments_text().len())
                .sum::<usize>();
        ScriptedUsage {
            prompt_tokens: (request.to_string().len() as u64 / 4).max(1),
            completion_tokens: (answer as u64 / 4).max(1),
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        }
    })
}

/// The default message of an error turn, like the providers' own. A 401 echoes the key it was
/// sent, as OpenAI does, so that tests can check that clients keep it out of their errors.
fn error_message(turn: &Turn, headers: &HeaderMap) -> String {
    if let Some(message) = &turn.error {
        return message.clone();
    }
    let key = headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_start_matches("Bearer ").to_owned())
        .unwrap_or_default();
    match turn.status {
        401 => format!("Incorrect API key provided: {key}"),
        429 => "Rate limit reached for requests".to_owned(),
        500 => "The server had an error while processing your request".to_owned(),
        503 => "The server is overloaded".to_owned(),
        status => format!("scripted error {status}"),
    }
}

/// An error turn's response: its status, `Retry-After`, and the body `body` makes.
fn error_response(turn: &Turn, body: Value) -> Response {
    let status = StatusCode::from_u16(turn.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = turn.retry_after {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from(seconds));
    }
    response
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (turn, request) = match shared.take_turn(uri.path(), &headers, &body) {
        (Taken::Turn(turn), request) => (*turn, request),
        (Taken::Refused(server), request) => {
            let body = openai::refusal_body(server, &request_model(&request));
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
    if turn.status != 200 {
        let message = error_message(&turn, &headers);
        return error_response(&turn, openai::error_body(turn.status, &message));
    }
    let reply = Reply::new(&shared, &turn, &request);
    if reply.wants_stream() {
        openai::stream(&reply)
    } else {
        Json(openai::completion(&reply)).into_response()
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (turn, request) = match shared.take_turn(uri.path(), &headers, &body) {
        (Taken::Turn(turn), request) => (*turn, request),
        (Taken::Refused(server), request) => {
            let message = server.message(&request_model(&request));
            let body = anthropic::error_body(400, &message);
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
    if turn.status != 200 {
        let message = error_message(&turn, &headers);
        return error_response(&turn, anthropic::error_body(turn.status, &message));
    }
    let reply = Reply::new(&shared, &turn, &request);
    if reply.wants_stream() {
        anthropic::stream(&reply)
    } else {
        Json(anthropic::message(&reply)).into_response()
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Json<Vec<Value>> {
    Json(
        lock(&shared.requests)
            .iter()
            .map(|r| r.body.clone())
            .collect(),
    )
}

async fn replace_script(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Script>(&body) {
        Ok(script) => {
            shared.set_script(script);
            Json(json!({"ok": true})).into_response()
        }
        Err(err) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("not a script: {err}")})),
        )
            .into_response(),
    }
}

/// Sends `events` as a server-sent event stream, `delay` apart.
pub(crate) fn sse(events: Vec<axum::response::sse::Event>, delay: Duration) -> Response {
    use futures::StreamExt;
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::convert::Infallible>(event)
    });
    axum::response::sse::Sse::new(stream).into_response()
}

/// The Unix time, for `created` fields.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
