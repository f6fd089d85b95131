//! `/api/conversations`: create, list, read, rename, delete, and read events.

use crate::app::AppState;
use crate::conversations::{ConversationInfo, MAX_TITLE_CHARS, NewConversation};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::socketio::handshake::PROVIDERS;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ohd_protocol::ConversationId;
use ohd_store::EventPage;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route(
            "/api/conversations/{id}",
            get(get_conversation)
                .patch(rename_conversation)
                .delete(delete_conversation),
        )
        .route("/api/conversations/{id}/events", get(list_events))
        .route("/api/conversations/{id}/start", post(start_conversation))
        .route("/api/conversations/{id}/stop", post(stop_conversation))
        .route("/api/conversations/{id}/trajectory", get(trajectory))
}

async fn create_conversation(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NewConversation>,
) -> Result<Json<Value>, ApiError> {
    let record = state.conversations.create(request).await?;
    tracing::info!(conversation = %record.id, "conversation created");
    Ok(Json(json!({
        "status": "ok",
        "conversation_id": record.id,
        "message": null,
        "conversation_status": "RUNNING",
    })))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    page_id: Option<String>,
}

const MAX_LIST: usize = 100;

async fn list_conversations(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be between 1 and {MAX_LIST}"),
        ));
    }
    let page = state
        .conversations
        .log()
        .store()
        .list_conversations(limit, query.page_id.as_deref().filter(|p| !p.is_empty()))
        .await?;
    let results: Vec<ConversationInfo> = futures::future::join_all(
        page.conversations
            .into_iter()
            .map(|r| state.conversations.info(r)),
    )
    .await;
    Ok(Json(
        json!({"results": results, "next_page_id": page.next_page}),
    ))
}

pub(crate) async fn existing(
    state: &AppState,
    raw: &str,
) -> Result<ohd_store::ConversationRecord, ApiError> {
    let id = ConversationId::parse(raw)?;
    state
        .conversations
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::conversation_not_found(&id))
}

async fn get_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConversationInfo>, ApiError> {
    let record = existing(&state, &id).await?;
    Ok(Json(state.conversations.info(record).await))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    title: String,
}

async fn rename_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rename>,
) -> Result<Json<bool>, ApiError> {
    let id = ConversationId::parse(&id)?;
    let title = body.title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ApiError::bad_request(
            "INVALID_TITLE",
            format!("a title has 1 to {MAX_TITLE_CHARS} characters"),
        ));
    }
    if state.conversations.rename(&id, title).await? {
        Ok(Json(true))
    } else {
        Err(ApiError::conversation_not_found(&id))
    }
}

async fn delete_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<bool>, ApiError> {
    let id = ConversationId::parse(&id)?;
    if state.conversations.delete(&id).await? {
        tracing::info!(conversation = %id, "conversation deleted");
        Ok(Json(true))
    } else {
        Err(ApiError::conversation_not_found(&id))
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    start_id: Option<u64>,
    end_id: Option<u64>,
    reverse: Option<bool>,
    limit: Option<usize>,
}

async fn list_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let record = existing(&state, &id).await?;
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be between 1 and {MAX_LIST}"),
        ));
    }
    let page = EventPage {
        start_id: query.start_id.unwrap_or(0),
        end_id: query.end_id,
        reverse: query.reverse.unwrap_or(false),
        limit,
    };
    let (events, has_more) = state
        .conversations
        .log()
        .store()
        .read_page(&record.id, page)
        .await?;
    // The events are stored as the JSON clients get; join them rather than parse and re-encode.
    let mut body =
        String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 32);
    body.push_str("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.json);
    }
    body.push_str("],\"has_more\":");
    body.push_str(if has_more { "true" } else { "false" });
    body.push('}');
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct StartRequest {
    providers_set: Option<Vec<String>>,
}

/// What the UI calls for a conversation it sees as stopped: makes sure its agent runs, with
/// the tokens of the providers named (as `providers_set` does on the socket).
async fn start_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<Json<Value>, ApiError> {
    let providers = body.providers_set.unwrap_or_default();
    if let Some(unknown) = providers.iter().find(|p| !PROVIDERS.contains(&p.as_str())) {
        return Err(ApiError::bad_request(
            "INVALID_PROVIDER",
            format!(
                "unknown provider {unknown:?} in providers_set; use {}",
                PROVIDERS.join(", ")
            ),
        ));
    }
    let record = existing(&state, &id).await?;
    state.agents.ensure(&record.id, &providers);
    let (status, _) =
        crate::conversations::status_of(state.agents.status_anywhere(&record.id).await);
    Ok(Json(json!({
        "status": "ok",
        "conversation_id": record.id,
        "conversation_status": status,
    })))
}

/// Stops the conversation's agent (and whatever its shell runs). The log stays open: the
/// conversation can still be joined, and a new message starts an agent again.
async fn stop_conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = existing(&state, &id).await?;
    let was_running = state.agents.stop(&record.id).await;
    Ok(Json(json!({
        "status": "ok",
        "conversation_id": record.id,
        "message": if was_running {
            "Conversation stopped successfully"
        } else {
            "Conversation was not running"
        },
        "conversation_status": "STOPPED",
    })))
}

/// Events read per store call while the whole log is gathered.
const TRAJECTORY_PAGE: usize = 1000;

/// Every event of the conversation, in order, as stored: `{"trajectory":[...]}`.
async fn trajectory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = existing(&state, &id).await?;
    let store = state.conversations.log().store();
    let mut body = String::from("{\"trajectory\":[");
    let mut after = None;
    let mut first = true;
    loop {
        let events = store.read_after(&record.id, after, TRAJECTORY_PAGE).await?;
        for event in &events {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&event.json);
        }
        match events.last() {
            Some(last) if events.len() == TRAJECTORY_PAGE => after = Some(last.id),
            _ => break,
        }
    }
    body.push_str("]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
