//! `GET`/`POST /api/settings`: what the web UI's settings pages show and save.

use crate::app::AppState;
use crate::error::{ApiError, ApiJson};
use crate::settings::SettingsError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/settings", get(get_settings).post(save_settings))
}

/// Always 200, with defaults when nothing was saved: on 404 the UI opens a modal that blocks
/// every other control.
async fn get_settings(State(state): State<AppState>) -> Json<Value> {
    let mut view = state.settings.get().await.view(&state.config);
    // Which providers have a token (saved, or from the environment), and their hosts.
    view["provider_tokens_set"] = json!(state.agents.providers_set());
    Json(view)
}

async fn save_settings(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents.clone();
    let config = state.config.clone();
    state
        .settings
        .update(body, |_old, new| {
            // New conversations (and conversations whose agent is started again) get it.
            agents.configure(new, &config);
        })
        .await
        .map_err(|e| match e {
            SettingsError::Invalid(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY", message)
            }
            other => ApiError::internal("cannot save the settings", other),
        })?;
    Ok(Json(json!({"message": "Settings stored"})))
}
