//! The settings the web UI saves (`GET`/`POST /api/settings`), kept in
//! `<data_dir>/settings.json`.
//!
//! The model, its API key and its base URL saved here win over the configuration's `[llm]`;
//! they and the agent's fields (iterations, budget, confirmation mode, security analyzer,
//! condenser, git identity) take effect for agents started afterwards. The other fields
//! (language, analytics consent, sound, ...) are kept and shown back as the UI saved them. API keys are write-only: they are
//! held as [`Secret`]s, written to the file (mode 0600, as the original keeps them in its file
//! store) and never returned; `llm_api_key_set` says whether there is one.

use crate::agents::LlmChoice;
use crate::auth::Secret;
use crate::config::Config;
use crate::documents::DocumentPlace;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The most the saved settings may take: the UI's come to a few kilobytes.
const MAX_SETTINGS_BYTES: usize = 1024 * 1024;

const DEFAULT_GIT_NAME: &str = "openhands";
const DEFAULT_GIT_EMAIL: &str = "openhands@all-hands.dev";
const DEFAULT_CONDENSER_MAX_SIZE: usize = 120;

/// How agents started from now on work, as the settings page left it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPrefs {
    pub max_iterations: u32,
    pub max_budget: Option<f64>,
    pub confirmation_mode: bool,
    pub security_analyzer: Option<String>,
    pub condenser_enabled: bool,
    pub condenser_max_size: usize,
    /// Name and e-mail, when the settings page saved either.
    pub git_identity: Option<(String, String)>,
}

/// What was saved. `None` for the model fields means "not set here: the configuration's".
#[derive(Clone, Default)]
pub struct Settings {
    pub llm_model: Option<String>,
    pub llm_api_key: Option<Secret>,
    /// `Some("")` is an explicit choice: the provider's own address, whatever `[llm]` says.
    pub llm_base_url: Option<String>,
    pub search_api_key: Option<Secret>,
    /// Everything else the UI saved, by name, as it sent it.
    pub prefs: Map<String, Value>,
}

/// The file's layout.
#[derive(Serialize, Deserialize, Default)]
struct OnDisk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    llm_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    llm_api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    llm_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    search_api_key: Option<String>,
    #[serde(default)]
    prefs: Map<String, Value>,
}

/// The type a known field must have.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    Count,
    Number,
    Object,
}

/// Fields of the original's `Settings` that are stored as given.
const KNOWN: &[(&str, Kind)] = &[
    ("language", Kind::Text),
    ("agent", Kind::Text),
    ("max_iterations", Kind::Count),
    ("security_analyzer", Kind::Text),
    ("confirmation_mode", Kind::Bool),
    ("remote_runtime_resource_factor", Kind::Number),
    ("enable_default_condenser", Kind::Bool),
    ("condenser_max_size", Kind::Count),
    ("enable_sound_notifications", Kind::Bool),
    ("enable_proactive_conversation_starters", Kind::Bool),
    ("enable_solvability_analysis", Kind::Bool),
    ("user_consents_to_analytics", Kind::Bool),
    ("max_budget_per_task", Kind::Number),
    ("mcp_config", Kind::Object),
    ("email", Kind::Text),
    ("git_user_name", Kind::Text),
    ("git_user_email", Kind::Text),
    ("reasoning_effort", Kind::Text),
];

/// Fields the server works out itself, or that carry secrets this server does not keep: a
/// POST may send them (the UI sends back what it got) and they are dropped.
const NOT_STORED: &[&str] = &[
    "llm_api_key_set",
    "search_api_key_set",
    "provider_tokens_set",
    "provider_tokens",
    "secrets_store",
    "custom_secrets",
    "sandbox_api_key",
    "email_verified",
];

/// A field the settings page does not name is kept unless its name says it holds a secret:
/// nothing that looks like a key is ever stored where `GET` would show it.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["key", "token", "secret", "password"]
        .iter()
        .any(|w| name.contains(w))
}

fn type_ok(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Text => value.is_string(),
        Kind::Bool => value.is_boolean(),
        Kind::Count => value.as_u64().is_some(),
        Kind::Number => value.as_f64().is_some_and(|n| n >= 0.0),
        Kind::Object => value.is_object(),
    }
}

impl Settings {
    /// Applies a POST: a field present with a value sets it; `null` resets it to the default,
    /// except the model, its key and its base URL, which `null` (or absence) keeps, as in the
    /// original. An empty key removes the saved key.
    pub fn apply(&mut self, body: Map<String, Value>) -> Result<(), String> {
        let text = |name: &str, value: &Value| -> Result<Option<String>, String> {
            match value {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.trim().to_owned())),
                _ => Err(format!("settings field {name} must be a string or null")),
            }
        };
        for (name, value) in body {
            match name.as_str() {
                "llm_model" => {
                    if let Some(model) = text(&name, &value)? {
                        self.llm_model = Some(model).filter(|m| !m.is_empty());
                    }
                }
                "llm_base_url" => {
                    if let Some(url) = text(&name, &value)? {
                        self.llm_base_url = Some(url);
                    }
                }
                "llm_api_key" => {
                    if let Some(key) = text(&name, &value)? {
                        self.llm_api_key = Some(key).filter(|k| !k.is_empty()).map(Secret::new);
                    }
                }
                "search_api_key" => {
                    if let Some(key) = text(&name, &value)? {
                        self.search_api_key = Some(key).filter(|k| !k.is_empty()).map(Secret::new);
                    }
                }
                "mcp_config" if !value.is_null() => {
                    let mut given = ohd_mcp::McpConfig::from_json(&value)?;
                    // The page sends back what GET showed: a hidden value keeps the saved one.
                    let saved = self
                        .prefs
                        .get("mcp_config")
                        .and_then(|v| ohd_mcp::McpConfig::from_json(v).ok())
                        .unwrap_or_default();
                    restore_hidden(&mut given, &saved);
                    let value = serde_json::to_value(&given)
                        .map_err(|e| format!("mcp_config cannot be stored: {e}"))?;
                    self.prefs.insert(name, value);
                }
                n if NOT_STORED.contains(&n) => {}
                n => {
                    if let Some((_, kind)) = KNOWN.iter().find(|(k, _)| *k == n) {
                        if value.is_null() {
                            self.prefs.remove(n);
                        } else if type_ok(*kind, &value) {
                            self.prefs.insert(name, value);
                        } else {
                            return Err(format!("settings field {n} has the wrong type"));
                        }
                    } else if looks_secret(n) {
                        tracing::debug!(
                            field = n,
                            "settings field not stored: it may hold a secret"
                        );
                    } else if value.is_null() {
                        self.prefs.remove(n);
                    } else {
                        self.prefs.insert(name, value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether nothing was ever saved.
    pub fn is_empty(&self) -> bool {
        self.llm_model.is_none()
            && self.llm_api_key.is_none()
            && self.llm_base_url.is_none()
            && self.search_api_key.is_none()
            && self.prefs.is_empty()
    }

    /// The model agents use: these settings over the configuration's `[llm]`.
    pub fn llm_choice(&self, config: &Config) -> LlmChoice {
        LlmChoice {
            model: self.llm_model.clone().or_else(|| config.llm.model.clone()),
            api_key: self
                .llm_api_key
                .clone()
                .or_else(|| config.llm.api_key.clone()),
            base_url: match &self.llm_base_url {
                Some(url) => Some(url.clone()).filter(|u| !u.is_empty()),
                None => config.llm.base_url.clone(),
            },
            reasoning_effort: self
                .prefs
                .get("reasoning_effort")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .or_else(|| config.llm.reasoning_effort.clone()),
        }
    }

    /// The MCP servers agents started now use: `[mcp]` and the page's `mcp_config` together,
    /// as the original merges them, the page's entry winning where both name the same server
    /// (a stdio server's name, a remote server's address).
    pub fn mcp_config(&self, config: &Config) -> ohd_mcp::McpConfig {
        let mut merged = config.mcp.clone();
        let Some(saved) = self
            .prefs
            .get("mcp_config")
            .and_then(|v| ohd_mcp::McpConfig::from_json(v).ok())
        else {
            return merged;
        };
        for server in saved.stdio_servers {
            merged.stdio_servers.retain(|s| s.name != server.name);
            merged.stdio_servers.push(server);
        }
        for server in saved.sse_servers {
            merged.sse_servers.retain(|s| s.url != server.url);
            merged.sse_servers.push(server);
        }
        for server in saved.shttp_servers {
            merged.shttp_servers.retain(|s| s.url != server.url);
            merged.shttp_servers.push(server);
        }
        merged
    }

    /// What the settings page says about how agents work, over the configuration.
    pub fn agent_prefs(&self, config: &Config) -> AgentPrefs {
        let prefs = &self.prefs;
        let text = |name: &str| {
            prefs
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        AgentPrefs {
            max_iterations: prefs
                .get("max_iterations")
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(config.agent.max_iterations),
            max_budget: prefs
                .get("max_budget_per_task")
                .and_then(Value::as_f64)
                .filter(|b| *b > 0.0)
                .or(config.agent.max_budget_per_task),
            confirmation_mode: prefs
                .get("confirmation_mode")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            security_analyzer: text("security_analyzer"),
            condenser_enabled: prefs
                .get("enable_default_condenser")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            condenser_max_size: prefs
                .get("condenser_max_size")
                .and_then(Value::as_u64)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .unwrap_or(DEFAULT_CONDENSER_MAX_SIZE),
            // Only a saved identity is given to git, so a repository's own stays otherwise.
            git_identity: match (text("git_user_name"), text("git_user_email")) {
                (None, None) => None,
                (name, email) => Some((
                    name.unwrap_or_else(|| DEFAULT_GIT_NAME.to_owned()),
                    email.unwrap_or_else(|| DEFAULT_GIT_EMAIL.to_owned()),
                )),
            },
        }
    }

    /// `GET /api/settings`: the original's `Settings` shape, defaults filled in from the
    /// configuration, keys replaced by whether they are set.
    pub fn view(&self, config: &Config) -> Value {
        let choice = self.llm_choice(config);
        let mut out = json!({
            "language": "en",
            "agent": "CodeActAgent",
            "max_iterations": null,
            "security_analyzer": null,
            "confirmation_mode": false,
            "remote_runtime_resource_factor": 1,
            "enable_default_condenser": true,
            "condenser_max_size": DEFAULT_CONDENSER_MAX_SIZE,
            "enable_sound_notifications": false,
            "enable_proactive_conversation_starters": false,
            "enable_solvability_analysis": false,
            "user_consents_to_analytics": false,
            "max_budget_per_task": config.agent.max_budget_per_task,
            "mcp_config": {"sse_servers": [], "stdio_servers": [], "shttp_servers": []},
            "email": "",
            "git_user_name": DEFAULT_GIT_NAME,
            "git_user_email": DEFAULT_GIT_EMAIL,
        });
        if let Value::Object(map) = &mut out {
            for (name, value) in &self.prefs {
                map.insert(name.clone(), value.clone());
            }
            if let Some(mcp) = map.get_mut("mcp_config") {
                hide_mcp_secrets(mcp);
            }
            // The UI reads a null consent as "not asked yet" and opens a modal over everything.
            if !map
                .get("user_consents_to_analytics")
                .is_some_and(Value::is_boolean)
            {
                map.insert("user_consents_to_analytics".into(), Value::Bool(false));
            }
            let computed = [
                ("llm_model", json!(choice.model.unwrap_or_default())),
                ("llm_base_url", json!(choice.base_url.unwrap_or_default())),
                ("llm_api_key", Value::Null),
                ("llm_api_key_set", json!(choice.api_key.is_some())),
                ("search_api_key", Value::Null),
                ("search_api_key_set", json!(self.search_api_key.is_some())),
                ("provider_tokens_set", json!({})),
                // false would put the UI's email-verification guard in the way.
                ("email_verified", Value::Bool(true)),
            ];
            for (name, value) in computed {
                map.insert(name.to_owned(), value);
            }
        }
        out
    }

    fn from_disk(disk: OnDisk) -> Self {
        Settings {
            llm_model: disk.llm_model,
            llm_api_key: disk.llm_api_key.map(Secret::new),
            llm_base_url: disk.llm_base_url,
            search_api_key: disk.search_api_key.map(Secret::new),
            prefs: disk.prefs,
        }
    }

    fn to_disk(&self) -> OnDisk {
        OnDisk {
            llm_model: self.llm_model.clone(),
            llm_api_key: self.llm_api_key.as_ref().map(|k| k.expose().to_owned()),
            llm_base_url: self.llm_base_url.clone(),
            search_api_key: self.search_api_key.as_ref().map(|k| k.expose().to_owned()),
            prefs: self.prefs.clone(),
        }
    }
}

/// What `GET /api/settings` shows in place of an MCP server's key or environment value.
const HIDDEN_VALUE: &str = "**********";

/// Hides the keys and environment values of `mcp_config`.
fn hide_mcp_secrets(mcp: &mut Value) {
    for list in ["sse_servers", "shttp_servers"] {
        let servers = mcp.get_mut(list).and_then(Value::as_array_mut);
        for server in servers.into_iter().flatten() {
            if let Some(key) = server.get_mut("api_key")
                && key.as_str().is_some_and(|k| !k.is_empty())
            {
                *key = json!(HIDDEN_VALUE);
            }
        }
    }
    let stdio = mcp.get_mut("stdio_servers").and_then(Value::as_array_mut);
    for server in stdio.into_iter().flatten() {
        if let Some(env) = server.get_mut("env").and_then(Value::as_object_mut) {
            for value in env.values_mut() {
                *value = json!(HIDDEN_VALUE);
            }
        }
    }
}

/// Puts the saved value back wherever the page sent the hidden one.
fn restore_hidden(given: &mut ohd_mcp::McpConfig, saved: &ohd_mcp::McpConfig) {
    let remote = |list: &mut Vec<ohd_mcp::RemoteServer>, saved: &[ohd_mcp::RemoteServer]| {
        for server in list {
            if server.api_key.as_deref() == Some(HIDDEN_VALUE) {
                server.api_key = saved
                    .iter()
                    .find(|s| s.url == server.url)
                    .and_then(|s| s.api_key.clone());
            }
        }
    };
    remote(&mut given.sse_servers, &saved.sse_servers);
    remote(&mut given.shttp_servers, &saved.shttp_servers);
    for server in &mut given.stdio_servers {
        // Only for the same command and arguments: a changed command must not be handed the
        // values the user saved for another.
        let before = saved.stdio_servers.iter().find(|s| {
            s.name == server.name && s.command == server.command && s.args == server.args
        });
        server.env.retain(|key, value| {
            if value != HIDDEN_VALUE {
                return true;
            }
            match before.and_then(|b| b.env.get(key)) {
                Some(old) => {
                    value.clone_from(old);
                    true
                }
                None => false,
            }
        });
    }
}

/// The saved settings and their file. Changes are serialized: each is written whole to a
/// temporary file and renamed over the old one, so the file is always one complete version.
pub struct SettingsStore {
    place: DocumentPlace,
    current: tokio::sync::Mutex<Current>,
}

/// The settings as last read or written, with the bytes they came from, so that a shared
/// document read again is known to have changed or not.
struct Current {
    settings: Settings,
    raw: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot save {place}: {source}")]
    Save {
        place: String,
        source: std::io::Error,
    },
}

/// Parses saved settings; `None` (nothing saved) is the defaults.
fn parse(raw: Option<&[u8]>, place: &DocumentPlace) -> anyhow::Result<Settings> {
    match raw {
        Some(bytes) => {
            let disk: OnDisk = serde_json::from_slice(bytes).map_err(|e| {
                anyhow::anyhow!("{place} is not valid settings ({e}); fix or remove it")
            })?;
            Ok(Settings::from_disk(disk))
        }
        None => Ok(Settings::default()),
    }
}

impl SettingsStore {
    /// Reads the file if there is one. A file that cannot be read or parsed stops the server
    /// with a message naming it, rather than being silently replaced.
    pub fn load(path: PathBuf) -> anyhow::Result<SettingsStore> {
        let place = DocumentPlace::File(path.clone());
        let raw = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let settings = parse(raw.as_deref(), &place)?;
        Ok(SettingsStore {
            place,
            current: tokio::sync::Mutex::new(Current { settings, raw }),
        })
    }

    /// Reads the settings wherever they are kept (a file, or the cluster's database).
    pub async fn open(place: DocumentPlace) -> anyhow::Result<SettingsStore> {
        let raw = place
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {place}: {e}"))?;
        let settings = parse(raw.as_deref(), &place)?;
        Ok(SettingsStore {
            place,
            current: tokio::sync::Mutex::new(Current { settings, raw }),
        })
    }

    pub async fn get(&self) -> Settings {
        self.current.lock().await.settings.clone()
    }

    /// Reads a shared document again; the new settings when another node changed them.
    pub async fn refresh(&self) -> anyhow::Result<Option<Settings>> {
        if !self.place.is_shared() {
            return Ok(None);
        }
        let mut current = self.current.lock().await;
        let raw = self
            .place
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.place))?;
        if raw == current.raw {
            return Ok(None);
        }
        current.settings = parse(raw.as_deref(), &self.place)?;
        current.raw = raw;
        Ok(Some(current.settings.clone()))
    }

    /// Applies `body`, saves the result, then calls `then` with the old and new settings while
    /// still holding the lock, so that what follows a change happens in the order of changes.
    pub async fn update(
        &self,
        body: Map<String, Value>,
        then: impl FnOnce(&Settings, &Settings),
    ) -> Result<Settings, SettingsError> {
        let mut current = self.current.lock().await;
        let save_error = |source: std::io::Error| SettingsError::Save {
            place: self.place.to_string(),
            source,
        };
        // Another node may save at the same moment: change what is there now, and write only
        // if it is still what was read (tried again, a few times, if it is not).
        let mut attempts = 0;
        let (next, bytes) = loop {
            if self.place.is_shared() {
                let raw = self.place.read().await.map_err(save_error)?;
                if raw != current.raw {
                    current.settings = parse(raw.as_deref(), &self.place)
                        .map_err(|e| save_error(std::io::Error::other(e.to_string())))?;
                    current.raw = raw;
                }
            }
            let mut next = current.settings.clone();
            next.apply(body.clone()).map_err(SettingsError::Invalid)?;
            let bytes = serde_json::to_vec_pretty(&next.to_disk())
                .map_err(|e| save_error(std::io::Error::other(e)))?;
            if bytes.len() > MAX_SETTINGS_BYTES {
                return Err(SettingsError::Invalid(format!(
                    "the settings would be larger than {MAX_SETTINGS_BYTES} bytes"
                )));
            }
            if self
                .place
                .write_if(current.raw.as_deref(), bytes.clone())
                .await
                .map_err(save_error)?
            {
                break (next, bytes);
            }
            attempts += 1;
            if attempts >= 5 {
                return Err(save_error(std::io::Error::other(
                    "other nodes keep changing the settings; try again",
                )));
            }
        };
        then(&current.settings, &next);
        *current = Current {
            settings: next.clone(),
            raw: Some(bytes),
        };
        Ok(next)
    }
}

/// Writes `bytes` to a temporary file beside `path` (readable by the owner only: it holds API
/// keys), flushes it to disk, and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "settings.json".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the folder is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut config = Config::resolve(crate::config::Overrides {
            data_dir: Some(std::env::temp_dir()),
            ..Default::default()
        })
        .unwrap();
        config.llm.model = Some("openai/from-config".into());
        config.llm.base_url = Some("http://config/v1".into());
        config
    }

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn null_or_absent_keeps_the_model_fields_and_an_empty_base_url_clears_it() {
        let config = config();
        let mut s = Settings::default();
        s.apply(body(
            json!({"llm_model": "anthropic/x", "llm_api_key": "sk-1", "language": "fr"}),
        ))
        .unwrap();
        s.apply(body(
            json!({"llm_model": null, "llm_api_key": null, "language": null}),
        ))
        .unwrap();
        let choice = s.llm_choice(&config);
        assert_eq!(choice.model.as_deref(), Some("anthropic/x"));
        assert_eq!(choice.api_key.as_ref().map(Secret::expose), Some("sk-1"));
        assert_eq!(choice.base_url.as_deref(), Some("http://config/v1"));
        assert_eq!(s.view(&config)["language"], "en");
        s.apply(body(json!({"llm_base_url": "", "llm_api_key": ""})))
            .unwrap();
        let choice = s.llm_choice(&config);
        assert_eq!(choice.base_url, None);
        assert!(choice.api_key.is_none());
    }

    #[test]
    fn mcp_keys_are_hidden_and_kept_only_for_the_same_server() {
        let config = config();
        let mut settings = Settings::default();
        let saved = json!({
            "stdio_servers": [{"name": "gh", "command": "mcp-gh", "args": ["stdio"], "env": {"TOKEN": "env-secret-1"}}],
            "shttp_servers": [{"url": "http://mcp.example/mcp", "api_key": "api-secret-2"}],
        });
        settings.apply(body(json!({"mcp_config": saved}))).unwrap();
        let shown = settings.view(&config)["mcp_config"].clone();
        assert!(!shown.to_string().contains("secret"), "{shown}");
        // Sent back as shown: the values are kept.
        settings
            .apply(body(json!({"mcp_config": shown.clone()})))
            .unwrap();
        let merged = settings.mcp_config(&config);
        assert_eq!(merged.stdio_servers[0].env["TOKEN"], "env-secret-1");
        assert_eq!(
            merged.shttp_servers[0].api_key.as_deref(),
            Some("api-secret-2")
        );
        // A changed command, or another address, does not get them.
        let mut changed = shown;
        changed["stdio_servers"][0]["command"] = json!("sh");
        changed["shttp_servers"][0]["url"] = json!("http://evil.example/mcp");
        settings
            .apply(body(json!({"mcp_config": changed})))
            .unwrap();
        let merged = settings.mcp_config(&config);
        assert!(merged.stdio_servers[0].env.is_empty(), "{merged:?}");
        assert_eq!(merged.shttp_servers[0].api_key, None);
        assert!(!format!("{merged:?}").contains("secret"));
    }

    #[test]
    fn keys_are_never_shown_and_secret_looking_fields_never_kept() {
        let config = config();
        let mut s = Settings::default();
        s.apply(body(json!({
            "llm_api_key": "sk-hidden-1",
            "search_api_key": "tv-hidden-2",
            "github_token": "gh-hidden-3",
            "provider_tokens": {"github": {"token": "gh-hidden-4"}},
            "temperature": 0.5,
            "user_consents_to_analytics": null,
        })))
        .unwrap();
        let view = s.view(&config).to_string();
        assert!(!view.contains("hidden"), "{view}");
        let view = s.view(&config);
        assert_eq!(view["llm_api_key"], Value::Null);
        assert_eq!(view["llm_api_key_set"], true);
        assert_eq!(view["search_api_key_set"], true);
        assert_eq!(view["temperature"], 0.5);
        assert_eq!(view["user_consents_to_analytics"], false);
        assert_eq!(view["email_verified"], true);
        assert!(
            s.apply(body(json!({"confirmation_mode": "yes"})))
                .unwrap_err()
                .contains("confirmation_mode")
        );
    }

    #[test]
    fn the_file_round_trips_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SettingsStore::load(path.clone()).unwrap();
            store
                .update(
                    body(json!({"llm_model": "openai/m", "llm_api_key": "sk-x"})),
                    |_, _| {},
                )
                .await
                .unwrap();
        });
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "settings must be private: {mode:o}");
        }
        let again = SettingsStore::load(path.clone()).unwrap();
        let s = rt.block_on(again.get());
        assert_eq!(s.llm_model.as_deref(), Some("openai/m"));
        assert_eq!(s.llm_api_key.as_ref().map(Secret::expose), Some("sk-x"));
        std::fs::write(&path, "{not json").unwrap();
        assert!(SettingsStore::load(path).is_err());
    }
}
