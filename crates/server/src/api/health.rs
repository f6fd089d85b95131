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

async fn health() -> Json<&'static str> {
    Json("OK")
}
