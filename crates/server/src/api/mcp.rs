//! `GET /api/mcp`: the MCP servers agents use (the configuration's and the settings page's),
//! with what an agent last saw of each. Behind the session key: targets may name local
//! commands and addresses.

use crate::app::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/mcp", get(servers))
}

async fn servers(State(state): State<AppState>) -> Json<Value> {
    let config = state.settings.get().await.mcp_config(&state.config);
    let board = state.agents.mcp_board();
    let servers: Vec<Value> = ohd_mcp::describe(&config)
        .into_iter()
        .map(
            |(name, transport, target)| match board.last(&name, transport, &target) {
                Some((report, at)) => json!({
                    "name": name,
                    "transport": transport,
                    "target": target,
                    "state": report.state,
                    "tools": report.tools,
                    "error": report.error,
                    "checked_at": chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339(),
                }),
                None => json!({
                    "name": name,
                    "transport": transport,
                    "target": target,
                    "state": "not_connected_yet",
                    "tools": [],
                    "error": null,
                    "checked_at": null,
                }),
            },
        )
        .collect();
    Json(json!({"servers": servers}))
}
