//! `/api/options/*`: what the web UI asks before anything else (`config`) and what its settings
//! pages offer to choose from.

use crate::app::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/options/config", get(config))
        .route("/api/options/models", get(models))
        .route("/api/options/agents", get(agents))
        .route("/api/options/security-analyzers", get(security_analyzers))
}

/// OSS mode: no login, no billing. An empty PostHog key keeps the UI's analytics off.
async fn config() -> Json<Value> {
    Json(json!({
        "APP_MODE": "oss",
        "GITHUB_CLIENT_ID": "",
        "POSTHOG_CLIENT_KEY": "",
        "PROVIDERS_CONFIGURED": [],
        "FEATURE_FLAGS": {
            "ENABLE_BILLING": false,
            "HIDE_LLM_SETTINGS": false,
            "ENABLE_JIRA": false,
            "ENABLE_JIRA_DC": false,
            "ENABLE_LINEAR": false,
        },
    }))
}

/// The models ohd knows by name, with the one in use and the one saved in the settings.
async fn models(State(state): State<AppState>) -> Json<Vec<String>> {
    let mut models = ohd_llm::known_models();
    let saved = state.settings.get().await.llm_choice(&state.config).model;
    models.extend(saved);
    models.extend(state.agents.model());
    models.sort();
    models.dedup();
    Json(models)
}

async fn agents() -> Json<Value> {
    Json(json!(["CodeActAgent"]))
}

/// `llm`: in confirmation mode, the model's own `security_risk` decides which actions wait
/// (LOW runs unasked). The original's other analyzers (invariant, grayswan) need services ohd
/// does not run.
async fn security_analyzers() -> Json<Value> {
    Json(json!(["llm"]))
}
