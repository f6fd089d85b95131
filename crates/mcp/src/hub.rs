//! One conversation's MCP servers: connected when the agent first needs their tools, their
//! tools named for the model without clashes, calls made with a time limit, and a server that
//! went away started or reached again on its next call.

use crate::config::{McpConfig, RemoteServer, StdioServer, call_timeout};
use crate::sse;
use crate::status::{ServerReport, StatusBoard};
use ohd_runtime::sandbox::{Attached, Launch};
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// How long a server may take to start and answer the handshake and the tool list.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A server that could not be reached is tried again at a step after this long (a call of one
/// of its tools tries at once).
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// What is kept of a stdio server's error output, to say why it stopped.
const STDERR_TAIL: usize = 2000;
/// Tool names the model accepts: OpenAI's `^[a-zA-Z0-9_-]{1,64}$`.
const NAME_MAX: usize = 64;
/// The most tools OpenAI takes in one request, the agent's own included.
const MAX_TOOLS: usize = 128;

/// Builds the launch of a stdio server's command (`argv`, with `env`): in the conversation's
/// sandbox, or as a plain process where there is none.
pub type Launcher = Arc<dyn Fn(&[&str], &[(String, String)]) -> Launch + Send + Sync>;

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedTool {
    /// The name the model calls it by: the server's own, unless another tool has it.
    pub name: String,
    pub description: String,
    /// Its JSON Schema.
    pub parameters: Value,
    server: usize,
    /// The name the server knows it by.
    tool: String,
}

/// What a call came to: the original's `mcp` observation content, and for the user a notice
/// when it failed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// The tool's `CallToolResult` as JSON, or `{"isError": true, "error": ..., "content": []}`.
    pub content: String,
    /// Why it failed, in words for the user; `None` when the tool answered without error.
    pub failure: Option<String>,
}

impl CallOutcome {
    fn failed(error: String) -> CallOutcome {
        CallOutcome {
            content: json!({"isError": true, "error": error, "content": []}).to_string(),
            failure: Some(error),
        }
    }
}

enum Transport {
    Stdio(StdioServer),
    Sse(RemoteServer),
    Shttp(RemoteServer),
}

impl Transport {
    fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio(_) => "stdio",
            Transport::Sse(_) => "sse",
            Transport::Shttp(_) => "shttp",
        }
    }

    /// What the server is, for people: its command, or its address without a query (which
    /// may hold a key).
    fn target(&self) -> String {
        match self {
            Transport::Stdio(s) => std::iter::once(s.command.as_str())
                .chain(s.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            Transport::Sse(r) | Transport::Shttp(r) => match reqwest::Url::parse(&r.url) {
                Ok(url) => sse::shown(&url),
                Err(_) => r.url.clone(),
            },
        }
    }
}

/// A running stdio server: the process, what its sandbox needs kept, and its error output.
struct Process {
    _child: tokio::process::Child,
    _attached: Option<Attached>,
    stderr: Arc<std::sync::Mutex<String>>,
}

struct Session {
    client: RunningService<RoleClient, ()>,
    process: Option<Process>,
}

struct Server {
    /// The stdio server's name, or a name made from the address.
    label: String,
    transport: Transport,
    timeout: Duration,
    session: Option<Session>,
    tools: Vec<Tool>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    /// The failure last said to the user.
    reported_error: Option<String>,
}

/// The servers of `config`, in order (stdio, SSE, streamable HTTP), each with a unique name.
fn servers_of(config: &McpConfig) -> Vec<Server> {
    let mut servers: Vec<Server> = Vec::new();
    let mut labels = BTreeSet::new();
    let mut add = |label: String, transport: Transport, timeout: Option<u64>| {
        let mut unique = label.clone();
        let mut n = 2;
        while !labels.insert(unique.clone()) {
            unique = format!("{label}_{n}");
            n += 1;
        }
        servers.push(Server {
            label: unique,
            transport,
            timeout: call_timeout(timeout),
            session: None,
            tools: Vec::new(),
            last_attempt: None,
            last_error: None,
            reported_error: None,
        });
    };
    for s in &config.stdio_servers {
        add(s.name.clone(), Transport::Stdio(s.clone()), s.timeout);
    }
    for r in &config.sse_servers {
        add(label_of(&r.url), Transport::Sse(r.clone()), r.timeout);
    }
    for r in &config.shttp_servers {
        add(label_of(&r.url), Transport::Shttp(r.clone()), r.timeout);
    }
    servers
}

/// Each configured server's name, transport and target (command, or address without its
/// query), as hubs report them.
pub fn describe(config: &McpConfig) -> Vec<(String, &'static str, String)> {
    let secrets = longest_first(config.secrets());
    servers_of(config)
        .into_iter()
        .map(|s| {
            (
                s.label,
                s.transport.kind(),
                scrub(&s.transport.target(), &secrets),
            )
        })
        .collect()
}

/// Secrets in the order they are replaced: one that holds another goes whole.
fn longest_first(mut secrets: Vec<String>) -> Vec<String> {
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

/// `text` with every secret replaced.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<secret_hidden>");
        }
    }
    text
}

pub struct McpHub {
    servers: Vec<Server>,
    offered: Vec<OfferedTool>,
    /// Names given so far, kept for the hub's life so that a name the model has seen never
    /// moves to another tool.
    assigned: BTreeMap<(usize, String), String>,
    /// The agent's own tools, whose names no MCP tool may take.
    reserved: BTreeSet<String>,
    launcher: Launcher,
    http: Option<reqwest::Client>,
    board: Option<Arc<StatusBoard>>,
    /// What no failure, log line or report may show ([`McpConfig::secrets`]).
    secrets: Vec<String>,
}

impl McpHub {
    /// The servers of `config`, not yet connected. `reserved`: names the model already has.
    pub fn new(
        config: &McpConfig,
        reserved: &[&str],
        launcher: Launcher,
        board: Option<Arc<StatusBoard>>,
    ) -> McpHub {
        let servers = servers_of(config);
        McpHub {
            servers,
            offered: Vec::new(),
            assigned: BTreeMap::new(),
            reserved: reserved.iter().map(|s| (*s).to_owned()).collect(),
            launcher,
            // No redirects: a key sent to one address must not follow to another.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| tracing::error!(error = %e, "no HTTP client for MCP servers"))
                .ok(),
            board,
            secrets: longest_first(config.secrets()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Connects every server not connected (and not tried in the last minute), at once, and
    /// lists their tools. Returns what failed, one line per server, for the user.
    pub async fn connect(&mut self) -> Vec<String> {
        let due: Vec<usize> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.session.as_ref().is_none_or(|x| x.client.is_closed())
                    && s.last_attempt.is_none_or(|at| at.elapsed() >= RETRY_AFTER)
            })
            .map(|(i, _)| i)
            .collect();
        let lines = self.connect_these(&due).await;
        // Each failure is said once, not again at every retry while it stays the same.
        let mut news = Vec::new();
        for (index, server) in self.servers.iter_mut().enumerate() {
            if server.last_error != server.reported_error {
                news.extend(
                    lines
                        .iter()
                        .filter(|(i, _)| *i == index)
                        .map(|(_, line)| line.clone()),
                );
                server.reported_error.clone_from(&server.last_error);
            }
        }
        news
    }

    /// Connects the servers at `which`; for each that failed, its index and a line that says why.
    async fn connect_these(&mut self, which: &[usize]) -> Vec<(usize, String)> {
        if which.is_empty() {
            return Vec::new();
        }
        let http = self.http.clone();
        let launcher = self.launcher.clone();
        let attempts = self
            .servers
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .map(|(_, server)| {
                let http = http.clone();
                let launcher = launcher.clone();
                async move {
                    server.session = None;
                    let started = Instant::now();
                    let outcome =
                        tokio::time::timeout(CONNECT_TIMEOUT, open(&server.transport, http, launcher))
                            .await
                            .unwrap_or_else(|_| {
                                Err(format!(
                                    "no answer within {} seconds",
                                    CONNECT_TIMEOUT.as_secs()
                                ))
                            });
                    // Set once the attempt is over: one given up halfway (a stop) is not
                    // counted, so the next step tries again.
                    server.last_attempt = Some(Instant::now());
                    match outcome {
                        Ok((session, tools)) => {
                            tracing::info!(server = %server.label, transport = server.transport.kind(), tools = tools.len(), ms = started.elapsed().as_millis() as u64, "MCP server connected");
                            server.session = Some(session);
                            server.tools = tools;
                            server.last_error = None;
                            None
                        }
                        Err(why) => {
                            server.last_error = Some(why);
                            Some(server.label.clone())
                        }
                    }
                }
            });
        let failed: Vec<String> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut lines = Vec::new();
        for (index, server) in self
            .servers
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| failed.contains(&s.label))
        {
            // Errors may quote an address or a server's output: what the configuration holds
            // as secret never leaves here.
            let why = scrub(
                server.last_error.as_deref().unwrap_or_default(),
                &self.secrets,
            );
            tracing::warn!(server = %server.label, transport = server.transport.kind(), error = %why, "MCP server unavailable");
            lines.push((
                index,
                format!(
                    "MCP server {} ({}) is unavailable: {why}",
                    server.label,
                    scrub(&server.transport.target(), &self.secrets)
                ),
            ));
            server.last_error = Some(why);
        }
        self.name_tools();
        self.report();
        lines
    }

    /// The tools offered now, in a stable order.
    pub fn tools(&self) -> &[OfferedTool] {
        &self.offered
    }

    pub fn offers(&self, name: &str) -> bool {
        self.offered.iter().any(|t| t.name == name)
    }

    /// Calls the tool the model knows as `name`. A server that is not connected (it crashed,
    /// or was unreachable) is started or reached first.
    pub async fn call(&mut self, name: &str, arguments: Value) -> CallOutcome {
        let Some(tool) = self.offered.iter().find(|t| t.name == name).cloned() else {
            return CallOutcome::failed(format!("There is no MCP tool named {name}."));
        };
        let arguments = match arguments {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => {
                return CallOutcome::failed(format!(
                    "The arguments of {name} must be a JSON object."
                ));
            }
        };
        let index = tool.server;
        let connected = self.servers[index]
            .session
            .as_ref()
            .is_some_and(|s| !s.client.is_closed());
        if !connected && let Some((_, failure)) = self.connect_these(&[index]).await.pop() {
            self.report();
            return CallOutcome::failed(failure);
        }
        let server = &mut self.servers[index];
        let Some(session) = server.session.as_ref() else {
            return CallOutcome::failed(format!("MCP server {} is not connected.", server.label));
        };
        let mut params = CallToolRequestParams::new(tool.tool.clone());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        let outcome = tokio::time::timeout(server.timeout, session.client.call_tool(params)).await;
        let outcome = match outcome {
            Err(_) => {
                // A server still busy with a call it was asked to drop may answer nothing
                // else (a tool that blocks its server): its session ends, and the next call
                // starts or reaches it afresh.
                server.session = None;
                server.last_attempt = None;
                CallOutcome::failed(format!(
                    "Tool \"{name}\" timed out after {} seconds; the server's session was ended and starts afresh on the next call",
                    server.timeout.as_secs()
                ))
            }
            Ok(Ok(result)) => answered(name, &result),
            Ok(Err(ServiceError::McpError(e))) => {
                CallOutcome::failed(format!("Tool \"{name}\" failed: {}", e.message))
            }
            Ok(Err(e)) => {
                // The connection is gone (a crash, a dropped stream): the next call starts
                // or reaches the server again.
                let stderr = session
                    .process
                    .as_ref()
                    .map(|p| tail(&p.stderr))
                    .filter(|t| !t.is_empty())
                    .map(|t| format!("; its last error output: {t}"))
                    .unwrap_or_default();
                server.session = None;
                server.last_attempt = None;
                let why = format!(
                    "MCP server {} stopped during the call of {name} ({e}){stderr}. It is started again on the next call.",
                    server.label
                );
                server.last_error = Some(why.clone());
                CallOutcome::failed(why)
            }
        };
        let outcome = match outcome.failure {
            Some(failure) => {
                let failure = scrub(&failure, &self.secrets);
                tracing::warn!(server = %self.servers[index].label, tool = %tool.tool, error = %failure, "MCP tool call failed");
                if self.servers[index].last_error.is_some() {
                    self.servers[index].last_error = Some(failure.clone());
                }
                CallOutcome {
                    content: scrub(&outcome.content, &self.secrets),
                    failure: Some(failure),
                }
            }
            None => outcome,
        };
        self.report();
        outcome
    }

    /// Names each listed tool: its own name when free, else `<server>_<name>`, else with a
    /// number; sanitized to what models accept. Names once given are kept.
    fn name_tools(&mut self) {
        let mut taken: BTreeSet<String> = self.reserved.clone();
        taken.extend(self.assigned.values().cloned());
        for (index, server) in self.servers.iter().enumerate() {
            for tool in &server.tools {
                let key = (index, tool.name.to_string());
                if self.assigned.contains_key(&key) {
                    continue;
                }
                let own = sanitize(&tool.name);
                let name = if !taken.contains(&own) {
                    own
                } else {
                    let prefixed = sanitize(&format!("{}_{}", server.label, tool.name));
                    let mut name = prefixed.clone();
                    let mut n = 2u32;
                    while taken.contains(&name) {
                        // The number fits inside the length limit, so each try is new.
                        let suffix = format!("_{n}");
                        let base: String = prefixed.chars().take(NAME_MAX - suffix.len()).collect();
                        name = format!("{base}{suffix}");
                        n += 1;
                    }
                    tracing::warn!(server = %server.label, tool = %tool.name, offered_as = %name, "MCP tool name taken by another tool; offered under another name");
                    name
                };
                taken.insert(name.clone());
                self.assigned.insert(key, name);
            }
        }
        let mut seen = BTreeSet::new();
        let mut offered: Vec<OfferedTool> = self
            .servers
            .iter()
            .enumerate()
            .flat_map(|(index, server)| {
                let assigned = &self.assigned;
                server.tools.iter().filter_map(move |tool| {
                    let name = assigned.get(&(index, tool.name.to_string()))?.clone();
                    Some(OfferedTool {
                        name,
                        description: tool.description.as_deref().unwrap_or_default().to_owned(),
                        parameters: Value::Object((*tool.input_schema).clone()),
                        server: index,
                        tool: tool.name.to_string(),
                    })
                })
            })
            // A server that lists one name twice gets it offered once: providers refuse a
            // request that names a tool twice.
            .filter(|t| seen.insert(t.name.clone()))
            .collect();
        let room = MAX_TOOLS.saturating_sub(self.reserved.len());
        if offered.len() > room {
            tracing::warn!(
                offered = offered.len(),
                kept = room,
                "more MCP tools than models take; the last ones are left out"
            );
            offered.truncate(room);
        }
        self.offered = offered;
    }

    fn report(&self) {
        let Some(board) = &self.board else {
            return;
        };
        for server in &self.servers {
            let connected = server
                .session
                .as_ref()
                .is_some_and(|s| !s.client.is_closed());
            board.record(ServerReport {
                name: server.label.clone(),
                transport: server.transport.kind().to_owned(),
                target: scrub(&server.transport.target(), &self.secrets),
                state: if connected {
                    "connected"
                } else {
                    "unavailable"
                }
                .to_owned(),
                tools: self
                    .offered
                    .iter()
                    .filter(|t| self.servers[t.server].label == server.label)
                    .map(|t| t.name.clone())
                    .collect(),
                error: server.last_error.clone(),
            });
        }
    }
}

fn answered(name: &str, result: &CallToolResult) -> CallOutcome {
    let content = serde_json::to_string(result).unwrap_or_else(|e| {
        json!({"isError": true, "error": format!("the result of {name} cannot be shown: {e}"), "content": []}).to_string()
    });
    let failure = (result.is_error == Some(true)).then(|| {
        let text: Vec<&str> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        format!("Tool \"{name}\" returned an error: {}", text.join(" "))
    });
    CallOutcome { content, failure }
}

/// Starts or reaches a server, shakes hands and lists its tools.
async fn open(
    transport: &Transport,
    http: Option<reqwest::Client>,
    launcher: Launcher,
) -> Result<(Session, Vec<Tool>), String> {
    let http = || {
        http.clone()
            .ok_or_else(|| "ohd has no HTTP client (see its log)".to_owned())
    };
    let (client, process) = match transport {
        Transport::Stdio(server) => {
            let (client, process) = start_stdio(server, &launcher).await?;
            (client, Some(process))
        }
        Transport::Sse(server) => {
            let transport = sse::connect(http()?, &server.url, server.api_key.as_deref()).await?;
            let client =
                ().serve(transport)
                    .await
                    .map_err(|e| format!("the handshake failed: {e}"))?;
            (client, None)
        }
        Transport::Shttp(server) => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str());
            if let Some(key) = &server.api_key {
                config = config.auth_header(key.clone());
            }
            let transport = StreamableHttpClientTransport::with_client(http()?, config);
            let client =
                ().serve(transport)
                    .await
                    .map_err(|e| format!("the handshake failed: {e}"))?;
            (client, None)
        }
    };
    let tools = match client.list_all_tools().await {
        Ok(tools) => tools,
        Err(e) => {
            let stderr = process
                .as_ref()
                .map(|p| tail(&p.stderr))
                .unwrap_or_default();
            return Err(format!("listing its tools failed: {e} {stderr}")
                .trim()
                .to_owned());
        }
    };
    Ok((Session { client, process }, tools))
}

async fn start_stdio(
    server: &StdioServer,
    launcher: &Launcher,
) -> Result<(RunningService<RoleClient, ()>, Process), String> {
    let argv: Vec<&str> = std::iter::once(server.command.as_str())
        .chain(server.args.iter().map(String::as_str))
        .collect();
    let env: Vec<(String, String)> = server
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let launch = launcher(&argv, &env);
    let (mut command, prepared) = launch
        .command()
        .map_err(|e| format!("cannot prepare {}: {e}", server.command))?;
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.command))?;
    let attached = match prepared {
        Some(prepared) => Some(prepared.started().await?),
        None => None,
    };
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(pipe) = child.stderr.take() {
        let keep = stderr.clone();
        let name = server.name.clone();
        // What the server was given in its environment may be a key: never in a log or a
        // message.
        let secrets: Vec<String> = server
            .env
            .values()
            .filter(|v| v.len() >= 4)
            .cloned()
            .collect();
        tokio::spawn(async move {
            // Read by whole lines, so that neither a secret nor a character is cut in two.
            let mut lines = tokio::io::BufReader::new(pipe).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                let text = scrub(&String::from_utf8_lossy(&line), &secrets);
                tracing::debug!(server = %name, output = %text.trim_end(), "MCP server error output");
                let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
                kept.push_str(&text);
                kept.push('\n');
                if kept.len() > STDERR_TAIL * 2 {
                    let cut = kept.len() - STDERR_TAIL;
                    let cut = (cut..kept.len())
                        .find(|i| kept.is_char_boundary(*i))
                        .unwrap_or(0);
                    kept.drain(..cut);
                }
            }
        });
    }
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(format!(
            "{} started without its standard streams",
            server.command
        ));
    };
    let process = Process {
        _child: child,
        _attached: attached,
        stderr,
    };
    match ().serve((stdout, stdin)).await {
        Ok(client) => Ok((client, process)),
        Err(e) => {
            // Give the error output a moment to arrive: it usually says why.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let said = tail(&process.stderr);
            Err(if said.is_empty() {
                format!("the handshake failed: {e}")
            } else {
                format!("the handshake failed ({e}); it said: {said}")
            })
        }
    }
}

fn tail(stderr: &std::sync::Mutex<String>) -> String {
    let text = stderr.lock().unwrap_or_else(|p| p.into_inner());
    let trimmed = text.trim();
    let start = trimmed.len().saturating_sub(STDERR_TAIL);
    let start = (start..trimmed.len())
        .find(|i| trimmed.is_char_boundary(*i))
        .unwrap_or(0);
    trimmed[start..].to_owned()
}

/// A server's name made from its address: the host, and the port when not the default.
fn label_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("server");
            match url.port() {
                Some(port) => sanitize(&format!("{host}_{port}")),
                None => sanitize(host),
            }
        }
        Err(_) => "server".to_owned(),
    }
}

fn sanitize(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_MAX)
        .collect();
    if clean.is_empty() {
        clean.push_str("tool");
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with(servers: &[(&str, &[&str])]) -> McpHub {
        let config = McpConfig {
            stdio_servers: servers
                .iter()
                .map(|(name, _)| StdioServer {
                    name: (*name).to_owned(),
                    command: "true".into(),
                    args: Vec::new(),
                    env: Default::default(),
                    timeout: None,
                })
                .collect(),
            ..McpConfig::default()
        };
        let launcher: Launcher = Arc::new(|_: &[&str], _: &[(String, String)]| unreachable!());
        let mut hub = McpHub::new(&config, &["execute_bash"], launcher, None);
        for (server, (_, tools)) in hub.servers.iter_mut().zip(servers) {
            server.tools = tools
                .iter()
                .map(|t| Tool::new(t.to_string(), "", serde_json::Map::new()))
                .collect();
        }
        hub.name_tools();
        hub
    }

    fn names(hub: &McpHub) -> Vec<String> {
        hub.tools().iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn clashing_names_are_resolved_in_order_and_stay_put() {
        let mut hub = hub_with(&[
            ("a", &["search", "execute_bash"]),
            ("b", &["search", "search"]),
        ]);
        assert_eq!(names(&hub), ["search", "a_execute_bash", "b_search"]);
        // Names once given stay when the servers' lists change.
        hub.servers[0].tools.clear();
        hub.name_tools();
        assert_eq!(names(&hub), ["b_search"]);
    }

    #[test]
    fn long_clashing_names_end_distinct_and_within_the_limit() {
        let long = "x".repeat(70);
        let tools: Vec<String> = (1..=5).map(|n| format!("{long}{n}")).collect();
        let tools: Vec<&str> = tools.iter().map(String::as_str).collect();
        let hub = hub_with(&[("server", &tools)]);
        let names = names(&hub);
        assert_eq!(names.len(), 5);
        assert!(names.iter().all(|n| n.len() <= 64));
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), 5, "{names:?}");
    }

    #[test]
    fn names_are_what_models_accept() {
        assert_eq!(sanitize("fetch.url"), "fetch_url");
        assert_eq!(sanitize(&"x".repeat(80)).len(), 64);
        assert_eq!(label_of("http://127.0.0.1:8931/sse"), "127_0_0_1_8931");
        assert_eq!(label_of("https://mcp.example.com/mcp"), "mcp_example_com");
    }
}
