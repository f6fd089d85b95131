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

/// The settings, with defaults for what was not saved. While nothing is saved (no settings, no
/// token or secret) and no model is configured, 404 `{"error":"Settings not found"}`, as the
/// original answers on its first run: the web UI then opens its model set-up dialog.
async fn get_settings(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let saved = state.settings.get().await;
    let secrets = state.user_secrets.get();
    let nothing_saved =
        saved.is_empty() && secrets.provider_tokens.is_empty() && secrets.custom_secrets.is_empty();
    if nothing_saved && saved.llm_choice(&state.config).model.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SETTINGS_NOT_FOUND",
            "Settings not found",
        ));
    }
    let mut view = saved.view(&state.config);
    // Which providers have a token (saved, or from the environment), and their hosts.
    view["provider_tokens_set"] = json!(state.agents.providers_set());
    Ok(Json(view))
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
