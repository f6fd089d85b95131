//! Starting ohd and talking to it: HTTP, and raw Engine.IO/Socket.IO frames over a websocket.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// A running `ohd serve` on a free port, with its own data directory.
pub struct Ohd {
    child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    pub api_key: Option<String>,
    log_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    pub config_toml: Option<String>,
    /// Run the agent; the tests of the event server itself run without it, so that the
    /// conversation holds only what they put there.
    pub agent: bool,
    /// Write the server's log (at debug level) to this file.
    pub log_file: Option<PathBuf>,
    /// Run ohd as this user id (and group), for the tests run as root that check what an
    /// unprivileged ohd does; its data directory is handed to that user.
    pub run_as: Option<u32>,
    /// Where `config_toml` is written (default: the data directory).
    pub config_path: Option<PathBuf>,
    /// Start `ohd demo` instead of `ohd serve` (with `--data-dir`, and no config file).
    pub demo: bool,
}

/// A scripted OpenAI-compatible model for ohd to use, and ohd's options pointing at it.
pub async fn scripted_llm(
    script: ohd_scripted_llm::Script,
) -> (ohd_scripted_llm::ScriptedLlmHandle, Options) {
    // The agent asks for a title beside the task, in a request without tools.
    let mut script = script;
    script
        .aside
        .get_or_insert_with(|| "Scripted title".to_owned());
    let (base, handle) = ohd_scripted_llm::ScriptedLlm::start(script).await.unwrap();
    (handle, llm_options(&base))
}

/// ohd's options (agent on) for a scripted model served at `base` (its root URL).
pub fn llm_options(base: &str) -> Options {
    let mut options = Options::with_agent();
    options
        .env
        .push(("LLM_MODEL".into(), "openai/scripted-model".into()));
    options
        .env
        .push(("LLM_BASE_URL".into(), format!("{base}/v1")));
    options
        .env
        .push(("LLM_API_KEY".into(), "sk-test-do-not-leak".into()));
    options
}

impl Options {
    pub fn new() -> Self {
        Options {
            env: Vec::new(),
            config_toml: None,
            agent: false,
            log_file: None,
            run_as: None,
            config_path: None,
            demo: false,
        }
    }

    pub fn with_agent() -> Self {
        Options {
            agent: true,
            ..Options::new()
        }
    }
}

impl Ohd {
    pub async fn start() -> Ohd {
        Ohd::start_with(Options::new()).await
    }

    pub async fn start_with(options: Options) -> Ohd {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        let mut ohd = Ohd::spawn(&data_dir, &options).await;
        ohd._dir = Some(dir);
        ohd
    }

    /// Starts ohd on an existing data directory (after a restart).
    pub async fn spawn(data_dir: &Path, options: &Options) -> Ohd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ohd"));
        command
            .arg(if options.demo { "demo" } else { "serve" })
            .args(["--port", "0", "--data-dir"])
            .arg(data_dir)
            .env_remove("SESSION_API_KEY")
            .env_remove("LLM_MODEL")
            .env_remove("LLM_API_KEY")
            .env_remove("LLM_BASE_URL")
            .env_remove("OHD_PORT")
            .env_remove("OHD_HOST")
            .env("RUST_LOG", "ohd_server=debug,info")
            .stdout(Stdio::piped())
            // Server logs only when asked for: OHD_TEST_LOG=1 cargo test
            .stderr(match &options.log_file {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None if std::env::var_os("OHD_TEST_LOG").is_some() => Stdio::inherit(),
                None => Stdio::null(),
            })
            .kill_on_drop(true);
        if !options.agent && !options.demo {
            command.arg("--no-agent");
        }
        if let Some(toml) = &options.config_toml {
            let path = options
                .config_path
                .clone()
                .unwrap_or_else(|| data_dir.join("test-config.toml"));
            std::fs::create_dir_all(data_dir).unwrap();
            std::fs::write(&path, toml).unwrap();
            command.arg("--config").arg(path);
        }
        if let Some(uid) = options.run_as {
            std::fs::create_dir_all(data_dir).unwrap();
            std::os::unix::fs::chown(data_dir, Some(uid), Some(uid)).unwrap();
            command.uid(uid).gid(uid).env("HOME", data_dir);
        }
        let mut api_key = None;
        for (k, v) in &options.env {
            if k == "SESSION_API_KEY" {
                api_key = Some(v.clone());
            }
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("ohd did not start in time")
            .unwrap()
            .expect("ohd exited before listening");
        let addr = line
            .strip_prefix("ohd listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ohd {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            _dir: None,
            http: reqwest::Client::new(),
            api_key,
            log_file: options.log_file.clone(),
        }
    }

    /// Where the server writes its log, if the test asked for one.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&{}",
            self.addr, query
        )
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(k) => request.header("X-Session-API-Key", k),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .authorized(self.http.get(self.url(path)))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .authorized(self.http.post(self.url(path)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_conversation(&self) -> String {
        let (status, body) = self.post("/api/conversations", serde_json::json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["conversation_id"].as_str().unwrap().to_owned()
    }

    /// Every stored event of a conversation, through the REST API.
    pub async fn events(&self, conversation: &str) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let start = all.len();
            let (status, body) = self
                .get(&format!(
                    "/api/conversations/{conversation}/events?start_id={start}&limit=100"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            all.extend(body["events"].as_array().unwrap().iter().cloned());
            if body["has_more"] != true {
                return all;
            }
        }
    }

    /// Resident memory of the server process, from `/proc`.
    pub fn resident_kib(&self) -> u64 {
        let pid = self.child.id().expect("ohd is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("ohd is running")
    }

    pub fn kill9(&mut self) {
        let pid = self.child.id().expect("ohd is running");
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }

    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("ohd is running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("ohd did not stop on SIGTERM")
            .unwrap()
    }

    pub async fn wait_exit(&mut self) {
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// A plain websocket speaking raw Engine.IO/Socket.IO frames, like `websocat`.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    /// Connects and reads the Engine.IO open packet.
    pub async fn open(url: &str) -> RawClient {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut client = RawClient { ws };
        let open = client.next_text().await.expect("no open packet");
        assert!(
            open.starts_with("0{"),
            "expected the Engine.IO open packet, got {open}"
        );
        let handshake: Value = serde_json::from_str(&open[1..]).unwrap();
        assert!(handshake["sid"].is_string() && handshake["pingInterval"].is_number());
        client
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends, and says whether the connection took it (it may be closed under us).
    pub async fn try_send(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    /// Keeps only the sending half; everything the server sends is read and dropped.
    pub fn into_writer(self) -> RawWriter {
        let (sink, mut stream) = self.ws.split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        RawWriter { sink }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The next text frame, answering pings on the way; `None` once closed or after [`WAIT`].
    pub async fn next_text(&mut self) -> Option<String> {
        self.next_text_within(WAIT).await
    }

    pub async fn next_text_within(&mut self, wait: Duration) -> Option<String> {
        // One deadline for the whole wait: pings must not extend it.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame {
                Ok(Message::Text(text)) if text.as_str() == "2" => self.send("3").await,
                Ok(Message::Text(text)) => return Some(text.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The payload of the next `oh_event`, skipping other packets.
    pub async fn next_event(&mut self) -> Option<Value> {
        self.next_event_within(WAIT).await
    }

    pub async fn next_event_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let text = self.next_text_within(wait).await?;
            if let Some(event) = parse_oh_event(&text) {
                return Some(event);
            }
        }
    }

    /// Sends CONNECT and returns the reply packet (`40{...}` or `44{...}`).
    pub async fn connect(&mut self, auth: &str) -> String {
        self.send(&format!("40{auth}")).await;
        loop {
            let text = self.next_text().await.expect("no reply to CONNECT");
            if text.starts_with("40") || text.starts_with("44") {
                return text;
            }
        }
    }

    /// Events until the agent, having gone to work, comes to rest in one of `states`.
    pub async fn until_state(&mut self, states: &[&str]) -> Vec<Value> {
        self.until_state_from(states, false).await
    }

    /// Events until the agent comes to one of `states`; `working` says it is at work already.
    pub async fn until_state_from(&mut self, states: &[&str], working: bool) -> Vec<Value> {
        self.until_state_within(states, working, std::time::Duration::from_secs(30))
            .await
    }

    /// As [`RawClient::until_state_from`], waiting up to `wait` for each event (a quiet
    /// command sends none for a while).
    pub async fn until_state_within(
        &mut self,
        states: &[&str],
        working: bool,
        wait: Duration,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let mut worked = working;
        loop {
            let Some(event) = self.next_event_within(wait).await else {
                panic!(
                    "the agent did not reach {states:?}; last events: {:?}",
                    summary(&out[out.len().saturating_sub(8)..])
                );
            };
            let state = event["extras"]["agent_state"].as_str().map(str::to_owned);
            out.push(event);
            match state.as_deref() {
                Some("running") => worked = true,
                Some(s) if worked && states.contains(&s) => return out,
                _ => {}
            }
        }
    }

    /// Events until the agent is ready for input (its start-up events).
    pub async fn until_ready(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let event = self
                .next_event()
                .await
                .expect("the agent never became ready");
            let ready = event["extras"]["agent_state"] == "awaiting_user_input";
            out.push(event);
            if ready {
                return out;
            }
        }
    }

    /// Events until `count` have arrived.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.next_event().await {
                Some(e) => out.push(e),
                None => panic!(
                    "only {} of {count} events arrived; last ids {:?}",
                    out.len(),
                    &ids(&out)[out.len().saturating_sub(5)..]
                ),
            }
        }
        out
    }
}

pub struct RawWriter {
    sink: futures::stream::SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>,
}

impl RawWriter {
    pub async fn send(&mut self, text: &str) {
        self.sink.send(Message::text(text)).await.unwrap();
    }
}

/// A raw client that has joined `conversation` with the given `latest_event_id`.
pub async fn joined(ohd: &Ohd, conversation: &str, latest: &str) -> RawClient {
    let url = ohd.ws_url(&format!(
        "conversation_id={conversation}&latest_event_id={latest}"
    ));
    let mut client = RawClient::open(&url).await;
    let ack = client.connect("").await;
    assert!(ack.starts_with("40"), "join refused: {ack}");
    client
}

pub fn parse_oh_event(text: &str) -> Option<Value> {
    let body = text.strip_prefix("42")?;
    let mut array: Vec<Value> = serde_json::from_str(body).ok()?;
    if array.first()? != "oh_event" || array.len() != 2 {
        return None;
    }
    array.pop()
}

pub fn user_message(text: &str) -> String {
    format!(
        "42[\"oh_user_action\",{}]",
        serde_json::json!({"action":"message","args":{"content":text}})
    )
}

pub fn seed_message(text: &str) -> String {
    format!(
        "42[\"oh_user_action\",{}]",
        serde_json::json!({"type":"message","source":"user","message":text})
    )
}

/// A short description of events, for failure messages.
pub fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let kind = e["action"]
                .as_str()
                .or(e["observation"].as_str())
                .unwrap_or("?");
            let state = e["extras"]["agent_state"].as_str().unwrap_or("");
            let text: String = e["message"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect();
            format!("{} {} {} {}", e["id"], kind, state, text)
        })
        .collect()
}

pub fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["id"].as_u64()).collect()
}

/// Appends `n` user messages through a websocket client and waits until they are stored. It
/// sends in chunks and waits for each, as a well-behaved client does: the server refuses a
/// flood beyond its per-connection inbox with a RATE_LIMITED error.
pub async fn fill(ohd: &Ohd, conversation: &str, n: usize) {
    let mut writer = RawClient::open(&ohd.ws_url(&format!(
        "conversation_id={conversation}&latest_event_id=1000000000"
    )))
    .await;
    assert!(writer.connect("").await.starts_with("40"));
    let mut sent = 0;
    while sent < n {
        let chunk = (n - sent).min(200);
        for i in sent..sent + chunk {
            writer.send(&user_message(&format!("message {i}"))).await;
        }
        sent += chunk;
        let mut seen = 0;
        while seen < chunk {
            let event = writer.next_event().await.expect("fill: events stopped");
            assert!(event.get("error").is_none(), "fill: {event}");
            if event["args"]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("message "))
            {
                seen += 1;
            }
        }
    }
    writer.close().await;
}

/// A scripted model turn that runs `command`.
pub fn bash(command: &str) -> ohd_scripted_llm::Turn {
    ohd_scripted_llm::Turn::tool_call("execute_bash", serde_json::json!({"command": command}))
}

/// A scripted model turn that calls the file editor with `args`.
pub fn editor(args: Value) -> ohd_scripted_llm::Turn {
    ohd_scripted_llm::Turn::tool_call("str_replace_editor", args)
}

/// A scripted model turn that finishes with `message`.
pub fn finish(message: &str) -> ohd_scripted_llm::Turn {
    ohd_scripted_llm::Turn::tool_call("finish", serde_json::json!({"message": message}))
}

/// The events whose `key` (`action` or `observation`) is `kind`.
pub fn by_kind<'a>(events: &'a [Value], key: &str, kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e[key] == kind).collect()
}

/// What a run of the seed's `socket.io-client` example printed.
pub struct SeedRun {
    pub code: Option<i32>,
    /// The `oh_event` payloads it received, in order.
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the seed's `socket.io-client` example (`e2e/clients/seed_client.mjs`) against `ohd`
/// with `args` (everything after `--url`).
pub async fn seed_client(ohd: &Ohd, args: &[String]) -> SeedRun {
    seed_client_at(&format!("http://{}", ohd.addr), args).await
}

/// As [`seed_client`], against any address (a proxy in front of ohd, say).
pub async fn seed_client_at(url: &str, args: &[String]) -> SeedRun {
    let output = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../e2e/clients/seed_client.mjs"
        ))
        .args(["--url", url])
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["kind"] == "event")
        .map(|l| l["event"].clone())
        .collect();
    SeedRun {
        code: output.status.code(),
        events,
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The seed's `socket.io-client` example: joins `conv` from the start (naming `providers`),
/// sends `message`, and returns every event until the agent rests again, and the client's
/// whole output.
pub async fn socket_io(
    ohd: &Ohd,
    conv: &str,
    providers: &str,
    message: &str,
) -> (Vec<Value>, String) {
    socket_io_after(ohd, conv, providers, "-1", message).await
}

/// As [`socket_io`], joining after event `latest` (as the web UI does when it comes back).
pub async fn socket_io_after(
    ohd: &Ohd,
    conv: &str,
    providers: &str,
    latest: &str,
    message: &str,
) -> (Vec<Value>, String) {
    let message =
        serde_json::json!({"action": "message", "args": {"content": message}}).to_string();
    let args = [
        "--conversation",
        conv,
        "--providers",
        providers,
        "--latest",
        latest,
        "--send",
        &message,
        "--until-state",
        "awaiting_user_input,finished,error",
        "--timeout-ms",
        "60000",
    ]
    .map(str::to_owned);
    let run = seed_client(ohd, &args).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    (run.events, run.stdout)
}
