//! The workspace's files, for the web UI's file browser: `list-files` and `select-file`, as
//! `protocol.md` §5 describes them. Every file is reached through the workspace's directory
//! handle, which no path can lead out of (see `ohd_runtime::workspace`).

use crate::app::AppState;
use crate::error::{ApiError, ApiQuery};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use ohd_protocol::ConversationId;
use ohd_runtime::workspace::{self, Workspace};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};

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
/// Largest ignore file `list-files` reads.
const MAX_IGNORE_BYTES: u64 = 1024 * 1024;

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
    let agent_root = state.agents.agent_root(&host).await;
    let owner = state.agents.sandbox().await.owner_of(&host);
    let mut workspace = Workspace::new(host, agent_root)
        .map_err(|e| ApiError::internal("cannot open the workspace", e))?;
    // What an upload creates belongs to the sandbox's user, so the agent can change it.
    if let Some((uid, gid)) = owner {
        workspace.set_owner(uid, gid);
    }
    Ok(workspace)
}

fn outside(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "PATH_OUTSIDE_WORKSPACE", message)
}

/// The path relative to the workspace that a client's path names, to use through the handle.
pub(crate) fn resolve(workspace: &Workspace, given: &str) -> Result<PathBuf, ApiError> {
    workspace.resolve(given).map_err(|e| outside(e.to_string()))
}

/// An error of the handle as an answer: 403 for a path that led out of the workspace (the
/// tree changed after `resolve`), 404 for a missing one.
pub(crate) fn fs_error(given: &str, e: std::io::Error) -> ApiError {
    if workspace::is_escape(&e) {
        return outside(format!("the path {given} leads outside the workspace"));
    }
    if e.kind() == std::io::ErrorKind::NotFound {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no file {given} in the workspace"),
        );
    }
    ApiError::internal("cannot use the workspace", e)
}

/// A regular file's content, read through the handle, if it is at most `max` bytes.
pub(crate) enum Content {
    Bytes(Vec<u8>),
    NotAFile,
    TooLarge,
}

pub(crate) fn read_file(workspace: &Workspace, rel: &FsPath, max: u64) -> std::io::Result<Content> {
    let file = workspace.open_read(rel)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Content::NotAFile);
    }
    if meta.len() > max {
        return Ok(Content::TooLarge);
    }
    // The file may grow after the check: never read more than the limit.
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Content::TooLarge);
    }
    Ok(Content::Bytes(bytes))
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
    // Shown as the client named it (links not replaced).
    let shown = workspace
        .lexical(&given)
        .map_err(|e| outside(e.to_string()))?;
    let listed = tokio::task::spawn_blocking(move || list(&workspace, &dir, &shown))
        .await
        .map_err(|e| ApiError::internal("listing failed", e))?;
    match listed {
        Ok(entries) => Ok(Json(entries)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("{given} is not a directory in the workspace"),
            ))
        }
        Err(e) => Err(fs_error(&given, e)),
    }
}

/// One level of `dir` (relative to the workspace), directories first with a trailing `/`,
/// case-insensitively sorted, with `.gitignore` rules applied; paths are `shown/name`.
fn list(workspace: &Workspace, dir: &FsPath, shown: &FsPath) -> std::io::Result<Vec<String>> {
    let ignored = IgnoreRules::for_folder(workspace, dir);
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in workspace.dir().read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ALWAYS_HIDDEN.contains(&name.as_ref()) {
            continue;
        }
        // The entry itself: a symlink is listed as a file, never followed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if ignored.matches(&dir.join(name.as_ref()), is_dir) {
            continue;
        }
        let rel = shown.join(name.as_ref()).display().to_string();
        if is_dir {
            dirs.push(format!("{rel}/"));
        } else {
            files.push(rel);
        }
    }
    dirs.sort_by_key(|a| a.to_lowercase());
    files.sort_by_key(|a| a.to_lowercase());
    dirs.extend(files);
    Ok(dirs)
}

/// The `.gitignore` files from the workspace's root down to one folder (and the root's
/// `.git/info/exclude`), read through the handle. Folders above the workspace are not looked at.
struct IgnoreRules {
    /// The workspace's host path, only as the name the rules are matched against.
    root: PathBuf,
    /// Deepest folder last: a deeper file's rules win, as in git.
    levels: Vec<ignore::gitignore::Gitignore>,
}

impl IgnoreRules {
    fn for_folder(workspace: &Workspace, dir: &FsPath) -> IgnoreRules {
        let mut folders = vec![PathBuf::new()];
        let mut at = PathBuf::new();
        for part in dir.components() {
            if let std::path::Component::Normal(part) = part {
                at.push(part);
                folders.push(at.clone());
            }
        }
        let levels = folders
            .iter()
            .enumerate()
            .map(|(depth, folder)| {
                // Matched by name only: this path is never opened.
                let mut builder =
                    ignore::gitignore::GitignoreBuilder::new(workspace.host_root().join(folder));
                let mut sources = vec![folder.join(".gitignore")];
                if depth == 0 {
                    sources.insert(0, PathBuf::from(".git/info/exclude"));
                }
                for source in sources {
                    for line in read_small_text(workspace, &source).lines() {
                        let _ = builder.add_line(None, line);
                    }
                }
                builder
                    .build()
                    .unwrap_or_else(|_| ignore::gitignore::Gitignore::empty())
            })
            .collect();
        IgnoreRules {
            root: workspace.host_root().to_owned(),
            levels,
        }
    }

    fn matches(&self, rel: &FsPath, is_dir: bool) -> bool {
        for level in self.levels.iter().rev() {
            match level.matched(self.root.join(rel), is_dir) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => {}
            }
        }
        false
    }
}

/// A small regular file's text, or nothing.
fn read_small_text(workspace: &Workspace, rel: &FsPath) -> String {
    let Ok(file) = workspace.open_nofollow(rel) else {
        return String::new();
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.take(MAX_IGNORE_BYTES).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
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
    let rel = resolve(&workspace, &query.file)?;
    let read = tokio::task::spawn_blocking(move || read_file(&workspace, &rel, MAX_FILE_BYTES))
        .await
        .map_err(|e| ApiError::internal("cannot read the file", e))?
        .map_err(|e| fs_error(&query.file, e))?;
    let bytes = match read {
        Content::Bytes(bytes) => bytes,
        Content::NotAFile => {
            return Err(ApiError::bad_request(
                "NOT_A_FILE",
                format!("{} is not a file", query.file),
            ));
        }
        Content::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "FILE_TOO_LARGE",
                format!("{} is larger than {MAX_FILE_BYTES} bytes", query.file),
            ));
        }
    };
    match String::from_utf8(bytes) {
        Ok(code) if !code.contains('\0') => Ok(Json(json!({ "code": code }))),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BINARY_FILE",
            format!("Unable to open binary file: {}", query.file),
        )),
    }
}
