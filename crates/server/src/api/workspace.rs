//! The conversation page's other panels: the workspace as a zip, uploads into it, its git
//! changes and diffs, its microagents, and the runtime's addresses (there are none: ohd runs no
//! VS Code and no app ports). Every path a client gives is confined to the workspace, and git
//! runs where the agent's commands run (in its sandbox when there is one), because a
//! repository's config can make git run commands.

use crate::api::conversations::existing;
use crate::api::files::{resolve, workspace};
use crate::app::AppState;
use crate::error::{ApiError, ApiQuery};
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ohd_runtime::workspace::Workspace;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/conversations/{id}/zip-directory", get(zip_directory))
        .route(
            "/api/conversations/{id}/upload-files",
            // The upload limit is its own (`max_upload_bytes`), counted as the files arrive.
            post(upload_files).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/conversations/{id}/git/changes", get(git_changes))
        .route("/api/conversations/{id}/git/diff", get(git_diff))
        .route("/api/conversations/{id}/web-hosts", get(web_hosts))
        .route("/api/conversations/{id}/vscode-url", get(vscode_url))
        .route("/api/conversations/{id}/config", get(runtime_config))
        .route("/api/conversations/{id}/microagents", get(microagents))
}

/// A folder of its own under the staging directory, removed with everything in it when dropped.
struct Staging(PathBuf);

impl Staging {
    async fn new(state: &AppState, what: &str) -> Result<Staging, ApiError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = state
            .config
            .staging_dir()
            .join(format!("{what}-{}-{n}", std::process::id()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ApiError::internal("cannot make a staging folder", e))?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "staging folder not removed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// zip-directory

/// The whole workspace as `workspace.zip`. `.git` is included: the download is the workspace
/// as the user would take it away, and a repository without its history is not the
/// repository (the original copies the whole folder too). Symlinks are stored as links, never
/// followed, so nothing outside the workspace can end up in the archive.
async fn zip_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let staging = Staging::new(&state, "zip").await?;
    let zip_path = staging.0.join("workspace.zip");
    let root = workspace.host_root().to_owned();
    let target = zip_path.clone();
    tokio::task::spawn_blocking(move || write_zip(&root, &target))
        .await
        .map_err(|e| ApiError::internal("zipping the workspace failed", e))?
        .map_err(|e| ApiError::internal("zipping the workspace failed", e))?;
    let file = tokio::fs::File::open(&zip_path)
        .await
        .map_err(|e| ApiError::internal("cannot read the zip", e))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("cannot read the zip", e))?
        .len();
    // The open file stays readable after its folder is removed (with `staging`, here).
    drop(staging);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"workspace.zip\"".to_owned(),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response())
}

fn zip_time(modified: std::io::Result<std::time::SystemTime>) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let Ok(modified) = modified else {
        return zip::DateTime::default();
    };
    let t: chrono::DateTime<chrono::Utc> = modified.into();
    let (Ok(year), Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        u16::try_from(t.year()),
        u8::try_from(t.month()),
        u8::try_from(t.day()),
        u8::try_from(t.hour()),
        u8::try_from(t.minute()),
        u8::try_from(t.second()),
    ) else {
        return zip::DateTime::default();
    };
    zip::DateTime::from_date_and_time(year, month, day, hour, minute, second).unwrap_or_default()
}

fn write_zip(root: &FsPath, target: &FsPath) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use zip::write::SimpleFileOptions;
    let out = std::io::BufWriter::new(std::fs::File::create(target)?);
    let mut zip = zip::ZipWriter::new(out);
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(error = %e, "skipped in the zip");
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let name = rel.to_string_lossy().replace('\\', "/");
        // Not followed: this is the entry itself.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let options = SimpleFileOptions::default()
            .unix_permissions(meta.permissions().mode() & 0o777)
            .last_modified_time(zip_time(meta.modified()));
        let kind = meta.file_type();
        if kind.is_dir() {
            zip.add_directory(format!("{name}/"), options)?;
        } else if kind.is_symlink() {
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            zip.add_symlink(name, link.to_string_lossy(), options)?;
        } else if kind.is_file() {
            let Ok(mut file) = std::fs::File::open(entry.path()) else {
                continue;
            };
            // Replaced by a symlink since the walk saw it: what it points to is not ours.
            match file.metadata() {
                Ok(opened) if opened.ino() == meta.ino() && opened.dev() == meta.dev() => {}
                _ => continue,
            }
            zip.start_file(
                name,
                options
                    .compression_method(zip::CompressionMethod::Deflated)
                    .large_file(meta.len() >= u64::from(u32::MAX)),
            )?;
            std::io::copy(&mut file, &mut zip)?;
        }
        // Sockets, pipes and devices have no content to archive.
    }
    let mut out = zip.finish()?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// upload-files

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!(
            "the upload is larger than the {limit} bytes the server accepts (server.max_upload_bytes)"
        ),
    )
}

fn bad_upload(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::bad_request("INVALID_UPLOAD", e.body_text())
}

/// Why a file name cannot be written to, if it cannot.
fn refuse_name(workspace: &Workspace, name: &str) -> Result<PathBuf, String> {
    if name.trim().is_empty() {
        return Err("the file has no name".to_owned());
    }
    let host = workspace.resolve(name).map_err(|e| e.to_string())?;
    if host == workspace.host_root() {
        return Err("the name is the workspace itself".to_owned());
    }
    if host.is_dir() {
        return Err("a folder of that name is in the workspace".to_owned());
    }
    Ok(host)
}

/// `multipart/form-data` with the field `files` repeated, each file's name its path in the
/// workspace (folders are made). Files are assembled outside the workspace and moved in only
/// when the whole request has arrived within `max_upload_bytes`; over it, nothing is kept and
/// the answer is 413. A name that would leave the workspace is skipped, with the reason.
async fn upload_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let limit = state.config.max_upload_bytes;
    // Clearly too large before a byte is read (the form's own overhead is small).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit as u64).saturating_mul(2) + 1024 * 1024) {
        return Err(too_large(limit));
    }
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request("INVALID_UPLOAD", e.body_text()))?;
    let staging = Staging::new(&state, "upload").await?;
    let mut staged: Vec<(String, PathBuf)> = Vec::new();
    let mut skipped: Vec<Value> = Vec::new();
    let mut total: usize = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(bad_upload)? {
        let is_file = field.name() == Some("files");
        let name = field.file_name().unwrap_or_default().to_owned();
        let refusal = if is_file {
            refuse_name(&workspace, &name).err()
        } else {
            None
        };
        let temp = staging.0.join(staged.len().to_string());
        let mut file = match (is_file, &refusal) {
            (true, None) => Some(
                tokio::fs::File::create(&temp)
                    .await
                    .map_err(|e| ApiError::internal("cannot stage the upload", e))?,
            ),
            _ => None,
        };
        // Every byte counts toward the limit, kept or not.
        while let Some(chunk) = field.chunk().await.map_err(bad_upload)? {
            total = total.saturating_add(chunk.len());
            if total > limit {
                return Err(too_large(limit));
            }
            if let Some(file) = &mut file {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| ApiError::internal("cannot stage the upload", e))?;
            }
        }
        if let Some(mut file) = file {
            file.flush()
                .await
                .map_err(|e| ApiError::internal("cannot stage the upload", e))?;
            staged.push((name, temp));
        } else if let Some(reason) = refusal {
            skipped.push(json!({"name": name, "reason": reason}));
        }
    }
    let mut uploaded = Vec::new();
    for (name, temp) in staged {
        // Checked again: the workspace may have changed while the request came in.
        let placed = match refuse_name(&workspace, &name) {
            Ok(host) => place(&temp, &host).await.map(|()| host),
            Err(reason) => Err(reason),
        };
        match placed {
            Ok(host) => uploaded.push(workspace.to_agent(&host).display().to_string()),
            Err(reason) => skipped.push(json!({"name": name, "reason": reason})),
        }
    }
    drop(staging);
    Ok(Json(
        json!({"uploaded_files": uploaded, "skipped_files": skipped}),
    ))
}

async fn place(temp: &FsPath, host: &FsPath) -> Result<(), String> {
    if let Some(parent) = host.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot make its folder: {e}"))?;
    }
    if tokio::fs::rename(temp, host).await.is_ok() {
        return Ok(());
    }
    // Another file system: copy instead.
    tokio::fs::copy(temp, host)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot write it: {e}"))
}

// ---------------------------------------------------------------------------------------------
// git

/// Longest a git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest file `git/diff` shows, either side.
const MAX_DIFF_BYTES: usize = 10 * 1024 * 1024;

fn not_a_repository() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "GIT$NOT_A_REPOSITORY",
        "Not a git repository",
    )
}

/// Runs git in the workspace, where the agent's commands run. Only the workspace itself is
/// looked at as a repository: git does not search the folders above it.
async fn git(
    state: &AppState,
    workspace: &Workspace,
    args: &[&str],
) -> Result<std::process::Output, ApiError> {
    let mut full = vec![
        "git",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.quotepath=false",
        "--no-pager",
    ];
    full.extend_from_slice(args);
    let launch = state.agents.launch(workspace.host_root(), &full);
    let ceiling = workspace
        .agent_root()
        .parent()
        .unwrap_or_else(|| FsPath::new("/"))
        .display()
        .to_string();
    // What the sandbox is handed stays open until git has started (it runs offline, so
    // there is nothing to attach afterwards).
    let (mut command, _prepared) = launch
        .command()
        .map_err(|e| ApiError::internal("cannot prepare the sandbox for git", e))?;
    command
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(GIT_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(ApiError::internal("cannot run git (is it installed?)", e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "GIT$TIMEOUT",
            format!("git took longer than {} s", GIT_TIMEOUT.as_secs()),
        )),
    }
}

fn says_not_a_repository(output: &std::process::Output) -> bool {
    String::from_utf8_lossy(&output.stderr)
        .to_ascii_lowercase()
        .contains("not a git repository")
}

/// One letter for the UI from git's two (index, work tree).
fn change_letter(x: u8, y: u8) -> &'static str {
    match (x, y) {
        (b'?', b'?') => "A",
        (b'U', _) | (_, b'U') | (b'A', b'A') | (b'D', b'D') => "U",
        (b'R', _) => "R",
        (b'D', _) | (_, b'D') => "D",
        (b'A', _) | (b'C', _) => "A",
        _ => "M",
    }
}

/// `git status --porcelain -z` as `[{"status","path"}]`.
fn parse_status(stdout: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut entries = stdout.split(|b| *b == 0).filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        if entry.len() < 4 {
            continue;
        }
        let (x, y) = (entry[0], entry[1]);
        let path = String::from_utf8_lossy(&entry[3..]).into_owned();
        if x == b'R' || x == b'C' {
            // The original name follows.
            entries.next();
        }
        out.push(json!({"status": change_letter(x, y), "path": path}));
    }
    out
}

/// The Changes tab: what differs from the last commit, untracked files included.
async fn git_changes(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let output = git(
        &state,
        &workspace,
        &["status", "--porcelain=v1", "-z", "--untracked-files=all"],
    )
    .await?;
    if !output.status.success() {
        if says_not_a_repository(&output) {
            return Err(not_a_repository());
        }
        return Err(ApiError::internal(
            "git status failed",
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    Ok(Json(parse_status(&output.stdout)))
}

#[derive(Deserialize)]
struct DiffQuery {
    path: String,
}

fn diff_too_large(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "FILE_TOO_LARGE",
        format!("the {what} file is larger than {MAX_DIFF_BYTES} bytes"),
    )
}

fn diff_text(bytes: &[u8], what: &str) -> Result<String, ApiError> {
    if bytes.len() > MAX_DIFF_BYTES {
        return Err(diff_too_large(what));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// One file's two sides: `modified` (the work tree, empty if deleted) and `original` (the last
/// commit, empty if new).
async fn git_diff(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let host = resolve(&workspace, &query.path)?;
    let rel = host
        .strip_prefix(workspace.host_root())
        .map_err(|_| ApiError::bad_request("INVALID_PATH", "the path names no file"))?
        .to_string_lossy()
        .into_owned();
    if rel.is_empty() {
        return Err(ApiError::bad_request(
            "INVALID_PATH",
            "the path names the workspace, not a file",
        ));
    }
    let spec = format!("HEAD:{rel}");
    let output = git(&state, &workspace, &["cat-file", "blob", &spec]).await?;
    let original = if output.status.success() {
        diff_text(&output.stdout, "original")?
    } else if says_not_a_repository(&output) {
        return Err(not_a_repository());
    } else {
        // Not in the last commit (new), or no commit yet.
        String::new()
    };
    let modified = match tokio::fs::metadata(&host).await {
        Ok(meta) if meta.is_file() => {
            if meta.len() > MAX_DIFF_BYTES as u64 {
                return Err(diff_too_large("modified"));
            }
            let bytes = tokio::fs::read(&host)
                .await
                .map_err(|e| ApiError::internal("cannot read the file", e))?;
            diff_text(&bytes, "modified")?
        }
        _ => String::new(),
    };
    Ok(Json(json!({"modified": modified, "original": original})))
}

// ---------------------------------------------------------------------------------------------
// runtime addresses and identity

/// The app ports the runtime exposes: none.
async fn web_hosts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    existing(&state, &id).await?;
    Ok(Json(json!({"hosts": {}})))
}

/// ohd runs no VS Code server; the UI's Code tab stays empty.
async fn vscode_url(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    existing(&state, &id).await?;
    Ok(Json(json!({"vscode_url": null})))
}

/// As the original: no separate runtime, the session is the conversation.
async fn runtime_config(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = existing(&state, &id).await?;
    Ok(Json(json!({"runtime_id": null, "session_id": record.id})))
}

// ---------------------------------------------------------------------------------------------
// microagents

/// Where a workspace keeps its microagents.
const MICROAGENTS_DIR: &str = ".openhands/microagents";
/// At most this many are read, each at most this large; the rest are left out.
const MAX_MICROAGENTS: usize = 100;
const MAX_MICROAGENT_BYTES: u64 = 256 * 1024;

/// `.openhands/microagents/**/*.md` of the workspace (none if the folder is missing).
async fn microagents(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let dir = match workspace.resolve(MICROAGENTS_DIR) {
        Ok(dir) if dir.is_dir() => dir,
        // Missing, or a symlink out of the workspace: nothing to show.
        _ => return Ok(Json(json!({"microagents": []}))),
    };
    let found = tokio::task::spawn_blocking(move || read_microagents(&dir))
        .await
        .map_err(|e| ApiError::internal("reading microagents failed", e))?;
    Ok(Json(json!({"microagents": found})))
}

fn read_microagents(dir: &FsPath) -> Vec<Value> {
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .follow_links(false)
        .max_depth(Some(4))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut out = Vec::new();
    for entry in walker.flatten() {
        if out.len() >= MAX_MICROAGENTS {
            break;
        }
        let path = entry.path();
        let is_markdown = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md"));
        let is_readme = path
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("README.md"));
        // Regular files only: a symlink could point anywhere.
        if !entry.file_type().is_some_and(|t| t.is_file()) || !is_markdown || is_readme {
            continue;
        }
        if entry
            .metadata()
            .map_or(true, |m| m.len() > MAX_MICROAGENT_BYTES)
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let default_name = rel.with_extension("").to_string_lossy().into_owned();
        out.push(parse_microagent(&default_name, &text));
    }
    out
}

/// A scalar as YAML writes it: quotes removed.
fn unquote(value: &str) -> String {
    let v = value.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

/// The frontmatter (`---` ... `---`) as simple `key: value` pairs and lists (`[a, b]` or
/// `- a` lines), and the text after it. Anything more elaborate is ignored, not an error.
fn frontmatter(text: &str) -> (Vec<(String, Vec<String>)>, &str) {
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    let rest = text.trim_start_matches('\u{feff}');
    let Some(after_open) = rest
        .strip_prefix("---\n")
        .or_else(|| rest.strip_prefix("---\r\n"))
    else {
        return (fields, text);
    };
    let mut end = None;
    let mut offset = 0;
    for line in after_open.split_inclusive('\n') {
        if line.trim_end() == "---" {
            end = Some((offset, offset + line.len()));
            break;
        }
        offset += line.len();
    }
    let Some((front_end, body_start)) = end else {
        return (fields, text);
    };
    for line in after_open[..front_end].lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ") {
            if line.starts_with([' ', '\t', '-'])
                && let Some((_, values)) = fields.last_mut()
            {
                values.push(unquote(item));
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let values = if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']'))
        {
            inner
                .split(',')
                .map(unquote)
                .filter(|v| !v.is_empty())
                .collect()
        } else if value.is_empty() {
            Vec::new()
        } else {
            vec![unquote(value)]
        };
        fields.push((key.trim().to_owned(), values));
    }
    (fields, &after_open[body_start..])
}

/// A microagent as the UI lists it. Its type is the frontmatter's when valid; otherwise
/// `repo.md` and files without triggers are `repo` (always on) and files with triggers are
/// `knowledge`, as the original decides.
fn parse_microagent(default_name: &str, text: &str) -> Value {
    let (fields, body) = frontmatter(text);
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let name = get("name")
        .and_then(|v| v.first())
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| default_name.to_owned());
    let triggers: Vec<String> = get("triggers").cloned().unwrap_or_default();
    let declared = get("type").and_then(|v| v.first()).map(String::as_str);
    let kind = match declared {
        Some(t @ ("repo" | "knowledge" | "task")) => t,
        _ if default_name == "repo" => "repo",
        _ if !triggers.is_empty() => "knowledge",
        _ => "repo",
    };
    json!({
        "name": name,
        "type": kind,
        "content": body.trim_start(),
        "triggers": triggers,
        "inputs": [],
        "tools": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_status_entries_become_one_letter_each() {
        let out = parse_status(
            b" M a.txt\0A  b.txt\0 D c.txt\0R  new.txt\0old.txt\0?? d/e.txt\0UU f.txt\0",
        );
        assert_eq!(
            out,
            vec![
                json!({"status": "M", "path": "a.txt"}),
                json!({"status": "A", "path": "b.txt"}),
                json!({"status": "D", "path": "c.txt"}),
                json!({"status": "R", "path": "new.txt"}),
                json!({"status": "A", "path": "d/e.txt"}),
                json!({"status": "U", "path": "f.txt"}),
            ]
        );
    }

    #[test]
    fn microagent_frontmatter_in_its_common_forms() {
        let m = parse_microagent(
            "docker",
            "---\nname: docker-helper\ntype: knowledge\ntriggers:\n  - docker\n  - \"container\"\n---\nUse docker.\n",
        );
        assert_eq!(m["name"], "docker-helper");
        assert_eq!(m["type"], "knowledge");
        assert_eq!(m["triggers"], json!(["docker", "container"]));
        assert_eq!(m["content"], "Use docker.\n");
        let m = parse_microagent("git", "---\ntriggers: [git, 'github']\n---\nbody");
        assert_eq!(
            (m["name"].as_str(), m["type"].as_str()),
            (Some("git"), Some("knowledge"))
        );
        assert_eq!(m["triggers"], json!(["git", "github"]));
        let m = parse_microagent("repo", "Just instructions, no frontmatter.");
        assert_eq!(m["type"], "repo");
        assert_eq!(m["content"], "Just instructions, no frontmatter.");
        // Unterminated frontmatter is text.
        let m = parse_microagent("x", "---\nname: y\nno end");
        assert_eq!(m["name"], "x");
        assert_eq!(m["type"], "repo");
    }
}
