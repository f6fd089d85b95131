//! The MCP servers a user configured, in the original's shape: `[mcp]` in `config.toml`
//! (`stdio_servers`, `sse_servers`, `shttp_servers`) and the settings page's `mcp_config`.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a tool call may take when the server's entry does not say (the original's
/// streamable-HTTP default).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpConfig {
    #[serde(default)]
    pub stdio_servers: Vec<StdioServer>,
    #[serde(default, deserialize_with = "remote_list")]
    pub sse_servers: Vec<RemoteServer>,
    #[serde(default, deserialize_with = "remote_list")]
    pub shttp_servers: Vec<RemoteServer>,
}

/// A server ohd starts and talks to over its standard input and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StdioServer {
    pub name: String,
    pub command: String,
    /// A list, or one string split as a shell would (the original takes both).
    #[serde(default, deserialize_with = "args_list")]
    pub args: Vec<String>,
    /// A map, or `KEY=VALUE` pairs separated by commas (the original takes both).
    #[serde(default, deserialize_with = "env_map")]
    pub env: BTreeMap<String, String>,
    /// Seconds a call may take (ohd's addition; 60 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// A server reached over HTTP: SSE (the 2024 transport) or streamable HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteServer {
    pub url: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Seconds a call may take (60 when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// An entry may be the address alone, as the original also accepts.
fn remote_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RemoteServer>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Url(String),
        Full(RemoteServer),
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| match e {
            Entry::Url(url) => RemoteServer {
                url,
                api_key: None,
                timeout: None,
            },
            Entry::Full(server) => server,
        })
        .collect())
}

fn args_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Args {
        List(Vec<String>),
        Line(String),
    }
    match Option::<Args>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(Args::List(list)) => Ok(list),
        Some(Args::Line(line)) => split_words(&line).map_err(serde::de::Error::custom),
    }
}

fn env_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Env {
        Map(BTreeMap<String, String>),
        Line(String),
    }
    match Option::<Env>::deserialize(d)? {
        None => Ok(BTreeMap::new()),
        Some(Env::Map(map)) => Ok(map),
        Some(Env::Line(line)) => line
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.to_owned()))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "environment entry {pair:?} is not KEY=VALUE"
                ))),
            })
            .collect(),
    }
}

/// Splits a command line into words as a POSIX shell would for quotes and backslashes (no
/// expansion). By hand: the one rule set needed is small, and no variables or globs apply.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {line:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {line:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

impl McpConfig {
    /// Parses the settings page's `mcp_config` (a JSON object).
    pub fn from_json(value: &serde_json::Value) -> Result<McpConfig, String> {
        let config: McpConfig = serde_json::from_value(value.clone())
            .map_err(|e| format!("mcp_config is not in the expected shape: {e}"))?;
        config.check()?;
        Ok(config)
    }

    pub fn is_empty(&self) -> bool {
        self.stdio_servers.is_empty()
            && self.sse_servers.is_empty()
            && self.shttp_servers.is_empty()
    }

    /// What is wrong with the configuration, in words for whoever wrote it.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for server in &self.stdio_servers {
            if server.name.is_empty()
                || !server
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "MCP stdio server name {:?}: use letters, digits, - and _ only",
                    server.name
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err(format!("MCP stdio server {:?} is named twice", server.name));
            }
            if server.command.trim().is_empty() {
                return Err(format!("MCP stdio server {:?} has no command", server.name));
            }
            if let Some(key) = server.env.keys().find(|k| !is_variable_name(k)) {
                return Err(format!(
                    "MCP stdio server {:?}: {key:?} is not an environment variable name",
                    server.name
                ));
            }
        }
        for server in self.sse_servers.iter().chain(&self.shttp_servers) {
            let url = server.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || reqwest::Url::parse(url).is_err()
            {
                return Err(format!(
                    "MCP server address {url:?} is not an http:// or https:// URL"
                ));
            }
        }
        if let Some(zero) = self
            .stdio_servers
            .iter()
            .map(|s| s.timeout)
            .chain(self.sse_servers.iter().map(|s| s.timeout))
            .chain(self.shttp_servers.iter().map(|s| s.timeout))
            .find(|t| *t == Some(0))
        {
            return Err(format!(
                "MCP server timeout {zero:?}: give a number of seconds above 0"
            ));
        }
        Ok(())
    }

    /// The values no event, log line or answer may show: API keys, every environment value
    /// given to a server, and what addresses carry for a server (a password, a query, which
    /// may hold a key), in the servers' addresses and in stdio servers' arguments.
    pub fn secrets(&self) -> Vec<String> {
        let in_addresses = self
            .sse_servers
            .iter()
            .chain(&self.shttp_servers)
            .map(|s| s.url.as_str())
            .chain(
                self.stdio_servers
                    .iter()
                    .flat_map(|s| s.args.iter().map(String::as_str)),
            )
            .filter_map(|text| reqwest::Url::parse(text).ok())
            .flat_map(|url| {
                [
                    url.password().map(str::to_owned),
                    url.query().map(str::to_owned),
                ]
            })
            .flatten();
        self.stdio_servers
            .iter()
            .flat_map(|s| s.env.values().cloned())
            .chain(
                self.sse_servers
                    .iter()
                    .chain(&self.shttp_servers)
                    .filter_map(|s| s.api_key.clone()),
            )
            .chain(in_addresses)
            .filter(|v| !v.is_empty())
            .collect()
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A call's time limit from its entry.
pub(crate) fn call_timeout(seconds: Option<u64>) -> Duration {
    seconds.map_or(DEFAULT_CALL_TIMEOUT, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_originals_shapes_parse_lists_and_lines_alike() {
        let config = McpConfig::from_json(&json!({
            "sse_servers": ["http://127.0.0.1:1/sse", {"url": "https://x.example/sse", "api_key": "k-123456789"}],
            "shttp_servers": [{"url": "http://127.0.0.1:2/mcp", "timeout": 5}],
            "stdio_servers": [
                {"name": "fs", "command": "npx", "args": "-y '@scope/server' \"a b\"", "env": "A=1, B=two"},
                {"name": "py", "command": "python3", "args": ["s.py"], "env": {"TOKEN": "t-987654321"}},
            ],
        }))
        .unwrap();
        assert_eq!(config.sse_servers[0].url, "http://127.0.0.1:1/sse");
        assert_eq!(config.stdio_servers[0].args, ["-y", "@scope/server", "a b"]);
        assert_eq!(config.stdio_servers[0].env["B"], "two");
        assert_eq!(config.shttp_servers[0].timeout, Some(5));
        let secrets = config.secrets();
        assert!(
            secrets.contains(&"k-123456789".to_owned())
                && secrets.contains(&"t-987654321".to_owned())
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            (
                json!({"stdio_servers": [{"name": "a b", "command": "x"}]}),
                "letters",
            ),
            (
                json!({"stdio_servers": [{"name": "a", "command": " "}]}),
                "no command",
            ),
            (
                json!({"stdio_servers": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]}),
                "twice",
            ),
            (json!({"sse_servers": ["ftp://x"]}), "http"),
            (
                json!({"stdio_servers": [{"name": "a", "command": "x", "args": "'open"}]}),
                "unclosed",
            ),
            (
                json!({"shttp_servers": [{"url": "http://x", "timeout": 0}]}),
                "above 0",
            ),
        ] {
            let error = McpConfig::from_json(&bad).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }
}
