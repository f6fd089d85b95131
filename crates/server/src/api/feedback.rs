//! `POST /api/conversations/{id}/submit-feedback`: the web UI's thumbs up/down "Share". The
//! original sends it to All Hands' servers; ohd keeps it in its data directory (`feedback/`,
//! its owner's only) and sends nothing anywhere. Sharing is what the user chose by submitting:
//! the conversation's events go with it, as in the original.

use crate::app::AppState;
use crate::error::{ApiError, ApiJson};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ohd_protocol::ConversationId;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/conversations/{id}/submit-feedback",
        post(submit_feedback),
    )
}

#[derive(Deserialize)]
struct Feedback {
    #[serde(default)]
    email: String,
    #[serde(default)]
    version: String,
    #[serde(default = "private")]
    permissions: String,
    #[serde(default)]
    polarity: String,
}

fn private() -> String {
    "private".to_owned()
}

/// Events stored per read of the log.
const PAGE: usize = 1000;

async fn submit_feedback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(feedback): ApiJson<Feedback>,
) -> Result<Json<Value>, ApiError> {
    let id = ConversationId::parse(&id)?;
    if state.conversations.get(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CONVERSATION$NOT_FOUND",
            format!("conversation {id} not found"),
        ));
    }
    if !["positive", "negative"].contains(&feedback.polarity.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
            "polarity must be \"positive\" or \"negative\"",
        ));
    }
    if !["public", "private"].contains(&feedback.permissions.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_BODY",
            "permissions must be \"public\" or \"private\"",
        ));
    }
    let store = state.log.store();
    let mut trajectory: Vec<Value> = Vec::new();
    let mut after = None;
    loop {
        let events = store.read_after(&id, after, PAGE).await?;
        for event in &events {
            trajectory.push(serde_json::from_str(&event.json).unwrap_or(Value::Null));
        }
        match events.last() {
            Some(last) if events.len() == PAGE => after = Some(last.id),
            _ => break,
        }
    }
    // 32 random hex digits, as a conversation id is.
    let feedback_id = ConversationId::generate().to_string();
    let record = json!({
        "feedback_id": feedback_id,
        "conversation_id": id.to_string(),
        "created_at": chrono::Utc::now().to_rfc3339(),
        "email": feedback.email,
        "version": feedback.version,
        "permissions": feedback.permissions,
        "polarity": feedback.polarity,
        "trajectory": trajectory,
    });
    let dir = state.config.data_dir.join("feedback");
    let path = dir.join(format!("{feedback_id}.json"));
    let bytes = serde_json::to_vec_pretty(&record)
        .map_err(|e| ApiError::internal("cannot store the feedback", e))?;
    tokio::task::spawn_blocking(move || {
        crate::owner_only::dir(&dir)?;
        crate::settings::write_atomically(&path, &bytes)
    })
    .await
    .map_err(|e| ApiError::internal("cannot store the feedback", e))?
    .map_err(|e| ApiError::internal("cannot store the feedback", e))?;
    tracing::info!(conversation = %id, feedback = %feedback_id, "feedback stored");
    // The original's answer, from its feedback service: the UI reads `body`.
    Ok(Json(json!({
        "statusCode": 200,
        "body": {
            "message": "Thank you: the feedback is kept on this ohd server, in its data directory; nothing was sent anywhere.",
            "feedback_id": feedback_id,
            "password": "",
        },
    })))
}
