//! The workspace's files, for the web UI's file browser: `list-files` and `select-file`, as
//! `protocol.md` §5 describes them. Every path is checked to stay inside the workspace.

use crate::app::AppState;
use crate::error::{ApiError, ApiQuery};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ohd_protocol::ConversationId;
use ohd_runtime::workspace::Workspace;
use serde::Deserialize;
use serde_json::{Value, json};

/// Entries never listed, as in the original.
const ALWAYS_HIDDEN: [&str; 6] = [
    ".git",
    "node_modules",
    "__pycache__",
    ".DS_Store",
    "lost+found",
    ".vscode",
];
/// Largest file `select-file` returns.
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/conversations/{id}/list-files", get(list_files))
        .route("/api/conversations/{id}/select-file", get(select_file))
}

pub(crate) async fn workspace(state: &AppState, raw: &str) -> Result<Workspace, ApiError> {
    let id = ConversationId::parse(raw)?;
    if state.conversations.get(&id).await?.is_none() {
        return Err(ApiError::conversation_not_found(&id));
    }
    let host = state.conversations.workspace(&id);
    let agent_root = state.agents.agent_root(&host);
    Workspace::new(host, agent_root).map_err(|e| ApiError::internal("cannot open the workspace", e))
}

pub(crate) fn resolve(workspace: &Workspace, given: &str) -> Result<std::path::PathBuf, ApiError> {
    workspace.resolve(given).map_err(|e| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "PATH_OUTSIDE_WORKSPACE",
            e.to_string(),
        )
    })
}

#[derive(Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<String>>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let given = query
        .path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".to_owned());
    let dir = resolve(&workspace, &given)?;
    if !dir.is_dir() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{given} is not a directory in the workspace"),
        ));
    }
    let root = workspace.host_root().to_owned();
    let entries = tokio::task::spawn_blocking(move || list(&root, &dir))
        .await
        .map_err(|e| ApiError::internal("listing failed", e))?;
    Ok(Json(entries))
}

/// One level of `dir`, directories first with a trailing `/`, case-insensitively sorted, with
/// `.gitignore` rules applied; paths relative to the workspace root.
fn list(root: &std::path::Path, dir: &std::path::Path) -> Vec<String> {
    let walker = ignore::WalkBuilder::new(dir)
        .max_depth(Some(1))
        .hidden(false)
        .git_ignore(true)
        .require_git(false)
        .parents(true)
        .follow_links(false)
        .build();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in walker.flatten() {
        if entry.depth() == 0 {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if ALWAYS_HIDDEN.contains(&name.as_ref()) {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .display()
            .to_string();
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            dirs.push(format!("{rel}/"));
        } else {
            files.push(rel);
        }
    }
    dirs.sort_by_key(|a| a.to_lowercase());
    files.sort_by_key(|a| a.to_lowercase());
    dirs.extend(files);
    dirs
}

#[derive(Deserialize)]
struct SelectQuery {
    file: String,
}

async fn select_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<SelectQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let path = resolve(&workspace, &query.file)?;
    let meta = tokio::fs::metadata(&path).await.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no file {} in the workspace", query.file),
        )
    })?;
    if !meta.is_file() {
        return Err(ApiError::bad_request(
            "NOT_A_FILE",
            format!("{} is not a file", query.file),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            format!("{} is larger than {MAX_FILE_BYTES} bytes", query.file),
        ));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal("cannot read the file", e))?;
    match String::from_utf8(bytes) {
        Ok(code) if !code.contains('\0') => Ok(Json(json!({ "code": code }))),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BINARY_FILE",
            format!("Unable to open binary file: {}", query.file),
        )),
    }
}
