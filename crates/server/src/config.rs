//! Configuration: command-line flags win over environment variables, which win over
//! `config.toml`, which wins over the defaults below.

use crate::auth::Secret;
use ohd_store::sqlite::Durability;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 3000;
/// The original's `max_http_buffer_size`.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// The most one `upload-files` request may carry, all its files together.
pub const DEFAULT_MAX_UPLOAD: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The configuration file read, if any (it may hold keys: the sandbox never shows it).
    pub config_file: Option<PathBuf>,
    pub web_ui: Option<PathBuf>,
    /// With a key set, REST and sockets need it; `/alive` and `/health` stay open.
    pub session_api_key: Option<Secret>,
    /// Origins besides the server's own and localhost that browsers may call from.
    pub cors_allowed_origins: Vec<String>,
    /// Host names besides loopback ones (and the bound address) that requests may name.
    pub allowed_hosts: Vec<String>,
    /// Listening beyond loopback without a session key was asked for on purpose.
    pub unprotected: bool,
    /// How long a client may take to send a request's head (from the connection's start, or
    /// from the first byte of a later request).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Open connections at most; `None`: three quarters of the open-file limit.
    pub max_connections: Option<usize>,
    /// Largest client message or request body ohd accepts.
    pub max_payload_bytes: usize,
    /// Largest `upload-files` request (all its files together).
    pub max_upload_bytes: usize,
    pub durability: Durability,
    /// A PostgreSQL database (`postgres://…`) for everything the nodes of a cluster share:
    /// events, conversations, settings, secrets and tokens. `None`: SQLite in the data folder.
    pub database_url: Option<Secret>,
    /// Where conversations' workspaces live; with several nodes, a folder every node mounts.
    pub workspaces_dir: Option<PathBuf>,
    pub cluster: ClusterConfig,
    /// How long a client may leave its send buffer full before it is cut off.
    pub slow_client_timeout: Duration,
    /// Engine.IO heartbeat: how often clients are pinged, and how long they have to answer.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// A client that opens the transport but never joins a conversation is closed after this
    /// long (checked at each heartbeat); `None` (0 in the file): never.
    pub connect_timeout: Option<Duration>,
    /// Where `/metrics` is also served alone, without the session key.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    pub llm: LlmConfig,
    pub agent: AgentConfig,
    pub sandbox: SandboxSettings,
    /// The MCP servers of `[mcp]`; the settings page's `mcp_config` replaces them for
    /// conversations started after it is saved.
    pub mcp: ohd_mcp::McpConfig,
}

/// Several nodes over one PostgreSQL: who this node is, and how long a conversation's owner
/// keeps it without a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This node's name in leases and logs; default: the host's name and the port.
    pub node_id: Option<String>,
    /// A lease not renewed for this long lapses, and another node takes the conversation.
    pub lease_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Without an agent ohd is an event log and fan-out server only: clients' actions are
    /// stored and broadcast, and nothing answers them.
    pub enabled: bool,
    /// Model calls per user message before the agent stops with an error.
    pub max_iterations: u32,
    /// USD; none means no budget.
    pub max_budget_per_task: Option<f64>,
    /// An agent idle this long releases its shell and sandbox (and its memory); it comes back
    /// on the next message or join. `None` (0 in the file): never.
    pub idle_timeout: Option<Duration>,
    /// Agents that may run at once; more wait for a place. `None`: no cap.
    pub max_running: Option<usize>,
    /// Stop a model that repeats itself (on by default, as in the original).
    pub stuck_detection: bool,
    /// The user's own microagents (`~/.openhands/microagents` by default).
    pub microagents_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSettings {
    pub mode: ohd_runtime::sandbox::SandboxMode,
    /// Whether sandboxed commands may reach the network.
    pub network: bool,
    pub limits: ohd_runtime::sandbox::Limits,
    /// First user id of conversation sandboxes when ohd runs as root.
    pub uid_base: u32,
    pub writable_system: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// `provider/model`, e.g. `openai/gpt-4o` or `anthropic/claude-sonnet-4-5`.
    pub model: Option<String>,
    pub api_key: Option<Secret>,
    pub base_url: Option<String>,
    /// Stream answers (SSE); some servers only answer whole.
    pub stream: bool,
    pub max_retries: u32,
    pub input_cost_per_million: Option<f64>,
    pub output_cost_per_million: Option<f64>,
    /// Writes the condenser's summaries; the conversation's model when unset.
    pub condenser_model: Option<String>,
    /// The condenser model's own key and address (else the conversation model's, when of the
    /// same provider).
    pub condenser_api_key: Option<Secret>,
    pub condenser_base_url: Option<String>,
    /// The model's input window in tokens, over the built-in figure of a well-known model.
    pub max_input_tokens: Option<u64>,
    /// Whether the model takes images; by default, yes for the well-known models only.
    pub supports_images: Option<bool>,
    /// `None`: native tool calls, falling back to tools described in the prompt when the
    /// server refuses them; `false`: always in the prompt; `true`: always native.
    pub native_tool_calling: Option<bool>,
    /// `low`, `medium` or `high`, for models that take it (the settings page's wins).
    pub reasoning_effort: Option<String>,
    /// Anthropic's extended thinking, with this many tokens to think in (1024 at least).
    pub thinking_budget_tokens: Option<u32>,
}

/// What the command line and the environment say; `None` leaves the choice to the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub web_ui: Option<PathBuf>,
    pub session_api_key: Option<String>,
    pub cors_allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub unprotected: bool,
    pub llm_model: Option<String>,
    pub llm_api_key: Option<String>,
    pub llm_base_url: Option<String>,
    pub max_iterations: Option<u32>,
    pub no_agent: bool,
    pub log_format: Option<LogFormat>,
    /// `OHD_DATABASE_URL`.
    pub database_url: Option<String>,
}

/// How log lines are written: for people, or one JSON object per line for log shippers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `config.toml`. Unknown keys are refused, so a misspelt setting is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    llm: LlmSection,
    #[serde(default)]
    agent: AgentSection,
    #[serde(default)]
    sandbox: SandboxSection,
    #[serde(default)]
    cluster: ClusterSection,
    /// In the original's shape: `stdio_servers`, `sse_servers`, `shttp_servers`.
    #[serde(default)]
    mcp: ohd_mcp::McpConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSection {
    enabled: Option<bool>,
    max_iterations: Option<u32>,
    max_budget_per_task: Option<f64>,
    idle_timeout_secs: Option<u64>,
    max_running: Option<usize>,
    stuck_detection: Option<bool>,
    microagents_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxSection {
    /// "auto" (bubblewrap when it works here), "bubblewrap", or "none".
    mode: Option<String>,
    network: Option<bool>,
    /// Writable memory of one sandboxed process, MiB.
    memory_mb: Option<u64>,
    /// Processes and threads of one conversation's sandbox.
    max_processes: Option<u64>,
    /// Largest file a command may write, MiB.
    max_file_size_mb: Option<u64>,
    /// Size of the sandbox's /tmp, MiB.
    tmp_size_mb: Option<u64>,
    /// CPU seconds of one process of a command.
    command_cpu_secs: Option<u64>,
    /// Whether the agent's shell gets a writable system layer (ohd as root only).
    writable_system: Option<bool>,
    /// What the agent may install into its system layer, MiB.
    system_layer_mb: Option<u64>,
    uid_base: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    host: Option<IpAddr>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    web_ui: Option<PathBuf>,
    session_api_key: Option<Secret>,
    cors_allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    unprotected: Option<bool>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_payload_bytes: Option<usize>,
    max_upload_bytes: Option<usize>,
    slow_client_timeout_secs: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    metrics_addr: Option<std::net::SocketAddr>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    durability: Option<Durability>,
    url: Option<Secret>,
    workspaces_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    node_id: Option<String>,
    lease_ttl_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmSection {
    model: Option<String>,
    api_key: Option<Secret>,
    base_url: Option<String>,
    stream: Option<bool>,
    max_retries: Option<u32>,
    input_cost_per_million: Option<f64>,
    output_cost_per_million: Option<f64>,
    condenser_model: Option<String>,
    condenser_api_key: Option<Secret>,
    condenser_base_url: Option<String>,
    max_input_tokens: Option<u64>,
    supports_images: Option<bool>,
    native_tool_calling: Option<bool>,
    reasoning_effort: Option<String>,
    thinking_budget_tokens: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no data directory: set --data-dir or OHD_DATA_DIR")]
    NoDataDir,
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn resolve(overrides: Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = overrides
            .data_dir
            .or(file.server.data_dir)
            .or_else(|| dirs::data_dir().map(|d| d.join("ohd")))
            .ok_or(ConfigError::NoDataDir)?;
        let non_empty = |s: Option<String>| s.filter(|v| !v.is_empty());
        let max_payload_bytes = file.server.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD);
        if max_payload_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_payload_bytes must be at least 1024".into(),
            ));
        }
        let max_upload_bytes = file.server.max_upload_bytes.unwrap_or(DEFAULT_MAX_UPLOAD);
        if max_upload_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_upload_bytes must be at least 1024".into(),
            ));
        }
        let sandbox_mode = match file.sandbox.mode.as_deref().unwrap_or("auto") {
            "auto" => ohd_runtime::sandbox::SandboxMode::Auto,
            "bubblewrap" => ohd_runtime::sandbox::SandboxMode::Bubblewrap,
            "none" => ohd_runtime::sandbox::SandboxMode::None,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "sandbox.mode {other:?}: use \"auto\", \"bubblewrap\" or \"none\""
                )));
            }
        };
        let secs =
            |value: Option<u64>, default: u64| Duration::from_secs(value.unwrap_or(default).max(1));
        if file.server.max_connections == Some(0) {
            return Err(ConfigError::Invalid(
                "server.max_connections must be at least 1".into(),
            ));
        }
        file.mcp
            .check()
            .map_err(|e| ConfigError::Invalid(format!("[mcp]: {e}")))?;
        let database_url = non_empty(overrides.database_url)
            .map(Secret::new)
            .or(file.store.url)
            .filter(|u| !u.expose().is_empty());
        if let Some(url) = &database_url
            && !(url.expose().starts_with("postgres://")
                || url.expose().starts_with("postgresql://"))
        {
            // The URL may hold a password: only its scheme is repeated.
            let scheme = url.expose().split(':').next().unwrap_or_default();
            return Err(ConfigError::Invalid(format!(
                "store.url (OHD_DATABASE_URL) must be a postgres:// URL, not {scheme}:…; leave it out for the embedded SQLite store"
            )));
        }
        if let Some(node) = &file.cluster.node_id
            && (node.is_empty()
                || node.len() > 64
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            return Err(ConfigError::Invalid(
                "cluster.node_id: up to 64 letters, digits, '-', '_', '.' or ':'".into(),
            ));
        }
        let lease_ttl = Duration::from_millis(file.cluster.lease_ttl_ms.unwrap_or(10_000));
        if lease_ttl < Duration::from_millis(500) || lease_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(
                "cluster.lease_ttl_ms must be between 500 and 3600000".into(),
            ));
        }
        let config_file = overrides
            .config_file
            .as_ref()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()));
        Ok(Config {
            config_file,
            host: overrides
                .host
                .or(file.server.host)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            port: overrides.port.or(file.server.port).unwrap_or(DEFAULT_PORT),
            data_dir,
            web_ui: overrides.web_ui.or(file.server.web_ui),
            session_api_key: non_empty(overrides.session_api_key)
                .map(Secret::new)
                .or(file.server.session_api_key)
                .filter(|k| !k.expose().is_empty()),
            cors_allowed_origins: overrides
                .cors_allowed_origins
                .or(file.server.cors_allowed_origins)
                .unwrap_or_default(),
            allowed_hosts: overrides
                .allowed_hosts
                .or(file.server.allowed_hosts)
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            unprotected: overrides.unprotected || file.server.unprotected.unwrap_or(false),
            header_read_timeout: secs(file.server.header_read_timeout_secs, 10),
            idle_timeout: secs(file.server.idle_timeout_secs, 60),
            max_connections: file.server.max_connections,
            max_payload_bytes,
            max_upload_bytes,
            durability: file.store.durability.unwrap_or_default(),
            database_url,
            workspaces_dir: file.store.workspaces_dir,
            cluster: ClusterConfig {
                node_id: file.cluster.node_id.filter(|n| !n.trim().is_empty()),
                lease_ttl,
            },
            slow_client_timeout: Duration::from_secs(
                file.server.slow_client_timeout_secs.unwrap_or(10),
            ),
            // Engine.IO's and the original's 25 s and 20 s.
            ping_interval: Duration::from_millis(
                file.server.ping_interval_ms.unwrap_or(25_000).max(1),
            ),
            ping_timeout: Duration::from_millis(
                file.server.ping_timeout_ms.unwrap_or(20_000).max(1),
            ),
            // socket.io servers' `connectTimeout`.
            connect_timeout: match file.server.connect_timeout_ms.unwrap_or(45_000) {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            metrics_addr: file.server.metrics_addr,
            log_format: overrides
                .log_format
                .or(file.server.log_format)
                .unwrap_or_default(),
            llm: LlmConfig {
                model: non_empty(overrides.llm_model).or(file.llm.model),
                api_key: non_empty(overrides.llm_api_key)
                    .map(Secret::new)
                    .or(file.llm.api_key),
                base_url: non_empty(overrides.llm_base_url).or(file.llm.base_url),
                stream: file.llm.stream.unwrap_or(true),
                max_retries: file.llm.max_retries.unwrap_or(5),
                input_cost_per_million: file.llm.input_cost_per_million,
                output_cost_per_million: file.llm.output_cost_per_million,
                condenser_model: file.llm.condenser_model.filter(|m| !m.trim().is_empty()),
                condenser_api_key: file.llm.condenser_api_key,
                condenser_base_url: file.llm.condenser_base_url.filter(|u| !u.trim().is_empty()),
                max_input_tokens: file.llm.max_input_tokens.filter(|t| *t > 0),
                supports_images: file.llm.supports_images,
                native_tool_calling: file.llm.native_tool_calling,
                reasoning_effort: file.llm.reasoning_effort.filter(|e| !e.trim().is_empty()),
                thinking_budget_tokens: file.llm.thinking_budget_tokens,
            },
            agent: AgentConfig {
                enabled: !overrides.no_agent && file.agent.enabled.unwrap_or(true),
                max_iterations: overrides
                    .max_iterations
                    .or(file.agent.max_iterations)
                    .unwrap_or(100),
                max_budget_per_task: file.agent.max_budget_per_task,
                idle_timeout: match file.agent.idle_timeout_secs.unwrap_or(900) {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                max_running: file.agent.max_running.filter(|n| *n > 0),
                stuck_detection: file.agent.stuck_detection.unwrap_or(true),
                microagents_dir: file.agent.microagents_dir.or_else(|| {
                    std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(".openhands/microagents"))
                }),
            },
            sandbox: SandboxSettings {
                mode: sandbox_mode,
                network: file.sandbox.network.unwrap_or(true),
                limits: sandbox_limits(&file.sandbox),
                uid_base: file
                    .sandbox
                    .uid_base
                    .unwrap_or(ohd_runtime::sandbox::DEFAULT_UID_BASE),
                writable_system: file.sandbox.writable_system.unwrap_or(true),
            },
            mcp: file.mcp,
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("ohd.db")
    }

    /// Conversations' writable system layers.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    pub fn workspaces_dir(&self) -> PathBuf {
        self.workspaces_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("workspaces"))
    }

    /// What the web UI's settings page saved (`POST /api/settings`).
    pub fn settings_path(&self) -> PathBuf {
        self.data_dir.join("settings.json")
    }

    /// Provider tokens and custom secrets.
    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir.join("secrets.json")
    }

    /// Files being assembled: uploads before they are moved into a workspace (beside the
    /// workspaces, so the move is a rename, and outside any of them), zips before they are sent.
    /// With workspaces on a shared folder, each node has its own (a node empties its own at
    /// start).
    pub fn staging_dir(&self) -> PathBuf {
        match &self.workspaces_dir {
            None => self.data_dir.join("staging"),
            Some(shared) => {
                // Letters, digits and dashes as they are, anything else as `_` and its code:
                // never `.` or `..`, never a separator, and two names never share a folder.
                let node: String = self
                    .node_id()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c.to_string()
                        } else {
                            format!("_{:x}", u32::from(c))
                        }
                    })
                    .collect();
                // A conversation id never starts with a dot: no workspace is named so.
                shared.join(".staging").join(node)
            }
        }
    }

    /// This node's name among others: the configured one, else the host's name and the port.
    pub fn node_id(&self) -> String {
        self.cluster
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", host_name(), self.port))
    }
}

/// This machine's name (`ohd` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "ohd".to_owned())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        // The message only, with the line it is on: toml's own rendering quotes the line,
        // which may hold a key or a database password.
        message: match e.span() {
            Some(span) => format!(
                "{} (line {})",
                e.message().trim_end(),
                text.get(..span.start)
                    .unwrap_or(&text)
                    .matches('\n')
                    .count()
                    + 1
            ),
            None => e.message().trim_end().to_owned(),
        },
    })
}

/// The sandbox's limits: the configuration's, each over its default.
fn sandbox_limits(section: &SandboxSection) -> ohd_runtime::sandbox::Limits {
    const MIB: u64 = 1024 * 1024;
    let default = ohd_runtime::sandbox::Limits::default();
    ohd_runtime::sandbox::Limits {
        memory_bytes: section
            .memory_mb
            .map_or(default.memory_bytes, |m| m.saturating_mul(MIB)),
        processes: section.max_processes.unwrap_or(default.processes),
        file_size_bytes: section
            .max_file_size_mb
            .map_or(default.file_size_bytes, |m| m.saturating_mul(MIB)),
        tmp_bytes: section
            .tmp_size_mb
            .map_or(default.tmp_bytes, |m| m.saturating_mul(MIB)),
        cpu_secs: section.command_cpu_secs.unwrap_or(default.cpu_secs),
        layer_bytes: section
            .system_layer_mb
            .map_or(default.layer_bytes, |m| m.saturating_mul(MIB)),
    }
}

#[cfg(test)]
mod tests {

    /// `config.example.toml` at the repository's root parses, every key in it (the commented
    /// ones too) is one ohd knows, and the values shown as defaults are the defaults.
    #[test]
    fn the_example_configuration_names_only_known_keys() {
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config.example.toml"
        ))
        .unwrap();
        let mut uncommented = 0;
        let text: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    uncommented += 1;
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert!(uncommented >= 20, "{uncommented} commented keys found");
        let dir = tempfile::tempdir().unwrap();
        let every_key = dir.path().join("every.toml");
        std::fs::write(&every_key, text).unwrap();
        Config::resolve(Overrides {
            config_file: Some(every_key),
            ..Default::default()
        })
        .unwrap();
        // As written (commented keys left out), it changes nothing from the defaults.
        let as_is = dir.path().join("as_is.toml");
        std::fs::write(&as_is, &example).unwrap();
        let from_example = Config::resolve(Overrides {
            config_file: Some(as_is),
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        })
        .unwrap();
        let defaults = Config::resolve(Overrides {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            format!(
                "{:?}",
                Config {
                    config_file: None,
                    ..from_example
                }
            ),
            format!("{defaults:?}")
        );
    }

    use super::*;

    #[test]
    fn a_malformed_line_is_named_without_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[store]\ndurability = \"normal\"\nurl = \"postgres://ohd:hunter2-secret@db/ohd\n",
        )
        .unwrap();
        let err = Config::resolve(Overrides {
            config_file: Some(file),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        // A node's name is checked: it names a folder.
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "[cluster]\nnode_id = \"..\"\n").unwrap();
        let config = Config::resolve(Overrides {
            config_file: Some(file.clone()),
            data_dir: Some(dir.path().to_owned()),
            ..Overrides::default()
        })
        .unwrap();
        std::fs::write(&file, "[cluster]\nnode_id = \"../x\"\n").unwrap();
        assert!(
            Config::resolve(Overrides {
                config_file: Some(file),
                ..Overrides::default()
            })
            .is_err()
        );
        let shared = Config {
            workspaces_dir: Some(dir.path().join("ws")),
            ..config
        };
        assert_eq!(shared.staging_dir(), dir.path().join("ws/.staging/_2e_2e"));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("ohd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[server]\nport = 4000\nhost = \"0.0.0.0\"\n[llm]\nmodel = \"openai/gpt-4o\"\napi_key = \"sk-file\"\n[store]\ndurability = \"full\"\n",
        )
        .unwrap();
        let config = Config::resolve(Overrides {
            config_file: Some(file.clone()),
            port: Some(5000),
            data_dir: Some(dir.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(config.port, 5000);
        assert_eq!(config.host.to_string(), "0.0.0.0");
        assert_eq!(config.llm.model.as_deref(), Some("openai/gpt-4o"));
        assert_eq!(config.durability, Durability::Full);
        assert!(!format!("{config:?}").contains("sk-file"));
        std::fs::write(&file, "[server]\nprot = 1\n").unwrap();
        let err = Config::resolve(Overrides {
            config_file: Some(file),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }
}
