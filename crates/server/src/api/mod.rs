//! REST routes, in the shapes of the original (`protocol.md` §5). One file per group.

pub mod conversations;
pub mod feedback;
pub mod files;
pub mod git;
pub mod health;
pub mod mcp;
pub mod metrics;
pub mod options;
pub mod secrets;
pub mod settings;
pub mod workspace;

use crate::app::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::http::StatusCode;

/// Routes under `/api`, which need the session key when one is set.
pub fn protected() -> Router<AppState> {
    Router::new()
        .merge(conversations::routes())
        .merge(feedback::routes())
        .merge(files::routes())
        .merge(workspace::routes())
        .merge(options::routes())
        .merge(settings::routes())
        .merge(secrets::routes())
        .merge(git::routes())
        .merge(mcp::routes())
        .merge(metrics::routes())
}

/// Routes that stay open with authentication on.
pub fn open() -> Router<AppState> {
    health::routes()
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {}", uri.path()),
    )
}
