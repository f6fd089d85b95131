use crate::app::AppState;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/alive", get(alive))
        .route("/health", get(health))
}

async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Healthy, and how commands are isolated: a server running without a sandbox, or with a
/// weaker one than configured, says so (`sandbox_details.notes`).
async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Json<Value> {
    let sandbox = state.agents.sandbox().await;
    Json(json!({
        "status": "OK",
        "sandbox": sandbox.description(),
        "sandbox_details": sandbox.report(),
    }))
}
