//! The agent's MCP client (Model Context Protocol, on the official `rmcp` SDK): the servers a
//! user configured (`config`), connected per conversation with their tools named for the
//! model and called for it (`hub`), the 2024 SSE transport `rmcp` no longer has (`sse`), and
//! what was last seen of each server (`status`).

pub mod config;
mod hub;
mod sse;
pub mod status;

pub use config::{McpConfig, RemoteServer, StdioServer};
pub use hub::{CONNECT_TIMEOUT, CallOutcome, Launcher, McpHub, OfferedTool, describe};
pub use status::{ServerReport, StatusBoard};
