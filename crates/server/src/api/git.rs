//! `/api/user/...`: the web UI's repository picker, answered from the git provider's API with
//! the user's token (`crate::providers`), in the original's shapes and statuses.

use crate::app::AppState;
use crate::providers::{Provider, ProviderError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/user/info", get(info))
        .route("/api/user/repositories", get(repositories))
        .route("/api/user/search/repositories", get(search))
        .route("/api/user/repository/branches", get(branches))
        .route("/api/user/search/branches", get(search_branches))
        .route("/api/user/installations", get(installations))
}

/// The provider asked for, or the first with a token (GitHub, then GitLab); the original's 401
/// when there is none.
fn provider(state: &AppState, selected: Option<&str>) -> Result<Provider, Box<Response>> {
    let tokens = state.agents.clone_tokens();
    let wanted: Vec<&str> = match selected.filter(|s| !s.is_empty()) {
        Some(one) => vec![one],
        None => vec!["github", "gitlab"],
    };
    wanted
        .iter()
        .find_map(|name| {
            tokens
                .iter()
                .find(|(provider, _)| provider == name)
                .and_then(|(provider, token)| Provider::new(provider, token, None))
        })
        .ok_or_else(|| {
            Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    Json("Git provider token required. (such as GitHub)."),
                )
                    .into_response(),
            )
        })
}

/// A provider's failure as the original answers it: 401 for a refused token, 500 otherwise,
/// with the reason as a JSON string.
fn failed(e: ProviderError) -> Response {
    let status = match e {
        ProviderError::Refused(_) => StatusCode::UNAUTHORIZED,
        // The provider failed, not ohd: a gateway's error, with the provider's words.
        ProviderError::Failed(_) => StatusCode::BAD_GATEWAY,
    };
    (status, Json(e.to_string())).into_response()
}

async fn info(State(state): State<AppState>) -> Response {
    match provider(&state, None) {
        Ok(p) => p
            .user()
            .await
            .map(|u| Json(u).into_response())
            .unwrap_or_else(failed),
        Err(refusal) => *refusal,
    }
}

#[derive(Deserialize)]
struct ReposQuery {
    sort: Option<String>,
    selected_provider: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

async fn repositories(State(state): State<AppState>, Query(q): Query<ReposQuery>) -> Response {
    let p = match provider(&state, q.selected_provider.as_deref()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    p.repositories(
        q.sort.as_deref().unwrap_or("pushed"),
        q.page.unwrap_or(1).max(1),
        q.per_page.unwrap_or(30).clamp(1, 100),
    )
    .await
    .map(|r| Json(r).into_response())
    .unwrap_or_else(failed)
}

#[derive(Deserialize)]
struct SearchQuery {
    query: String,
    per_page: Option<u32>,
    sort: Option<String>,
    order: Option<String>,
    selected_provider: Option<String>,
}

async fn search(State(state): State<AppState>, Query(q): Query<SearchQuery>) -> Response {
    let p = match provider(&state, q.selected_provider.as_deref()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    p.search(
        &q.query,
        q.per_page.unwrap_or(5).clamp(1, 100),
        q.sort.as_deref().unwrap_or("stars"),
        q.order.as_deref().unwrap_or("desc"),
    )
    .await
    .map(|r| Json(r).into_response())
    .unwrap_or_else(failed)
}

#[derive(Deserialize)]
struct BranchesQuery {
    repository: String,
    page: Option<u32>,
    per_page: Option<u32>,
    selected_provider: Option<String>,
}

async fn branches(State(state): State<AppState>, Query(q): Query<BranchesQuery>) -> Response {
    let p = match provider(&state, q.selected_provider.as_deref()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = not_a_repository(&q.repository) {
        return refusal;
    }
    p.branches(
        &q.repository,
        q.page.unwrap_or(1).max(1),
        q.per_page.unwrap_or(30).clamp(1, 100),
    )
    .await
    .map(|b| Json(b).into_response())
    .unwrap_or_else(failed)
}

/// Only `owner/name` paths reach a provider's URL: the refusal for anything else.
fn not_a_repository(repository: &str) -> Option<Response> {
    (!crate::repository::valid_name(repository)).then(|| {
        (
            StatusCode::BAD_REQUEST,
            Json(format!(
                "{repository:?} is not a repository name (owner/name)"
            )),
        )
            .into_response()
    })
}

#[derive(Deserialize)]
struct SearchBranchesQuery {
    repository: String,
    query: String,
    per_page: Option<u32>,
    selected_provider: Option<String>,
}

async fn search_branches(
    State(state): State<AppState>,
    Query(q): Query<SearchBranchesQuery>,
) -> Response {
    let p = match provider(&state, q.selected_provider.as_deref()) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    if let Some(refusal) = not_a_repository(&q.repository) {
        return refusal;
    }
    p.search_branches(
        &q.repository,
        &q.query,
        q.per_page.unwrap_or(30).clamp(1, 100),
    )
    .await
    .map(|b| Json(b).into_response())
    .unwrap_or_else(failed)
}

#[derive(Deserialize)]
struct InstallationsQuery {
    provider: Option<String>,
}

async fn installations(
    State(state): State<AppState>,
    Query(q): Query<InstallationsQuery>,
) -> Response {
    let name = q.provider.unwrap_or_else(|| "github".to_owned());
    if name != "github" {
        return (
            StatusCode::BAD_REQUEST,
            Json(format!("Provider {name} doesn't support installations")),
        )
            .into_response();
    }
    match provider(&state, Some(&name)) {
        Ok(p) => p
            .installations()
            .await
            .map(|i| Json(i).into_response())
            .unwrap_or_else(failed),
        Err(refusal) => *refusal,
    }
}
