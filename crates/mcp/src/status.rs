//! What ohd last saw of each MCP server, across conversations, for `GET /api/mcp`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerReport {
    pub name: String,
    /// `stdio`, `sse` or `shttp`.
    pub transport: String,
    /// The command, or the address without its query.
    pub target: String,
    /// `connected` or `unavailable`.
    pub state: String,
    /// The names its tools are offered under.
    pub tools: Vec<String>,
    /// The last failure, when the server is unavailable or a call failed.
    pub error: Option<String>,
}

/// A server's name, transport and target.
type ServerKey = (String, String, String);

#[derive(Debug, Default)]
pub struct StatusBoard {
    /// By name, transport and target: two entries may run the same command.
    seen: Mutex<BTreeMap<ServerKey, (ServerReport, SystemTime)>>,
}

impl StatusBoard {
    pub fn record(&self, report: ServerReport) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            (
                report.name.clone(),
                report.transport.clone(),
                report.target.clone(),
            ),
            (report, SystemTime::now()),
        );
    }

    /// The last report on the server with this name, transport and target, and when it came.
    pub fn last(
        &self,
        name: &str,
        transport: &str,
        target: &str,
    ) -> Option<(ServerReport, SystemTime)> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&(name.to_owned(), transport.to_owned(), target.to_owned()))
            .cloned()
    }
}
