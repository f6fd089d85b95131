//! The conversation page's other panels: the workspace as a zip, uploads into it, its git
//! changes and diffs, its microagents, and the runtime's addresses (there are none: ohd runs no
//! VS Code and no app ports). Every file is reached through the workspace's directory handle
//! (`ohd_runtime::workspace`), so nothing the agent does to the tree meanwhile can make a read
//! or a write land outside it. git runs where the agent's commands run (in its sandbox when
//! there is one) and never with the repository's own config (see [`git`]).

use crate::api::conversations::existing;
use crate::api::files::{Content, fs_error, read_file, resolve, workspace};
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
use std::io::Read;
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

/// A folder of its own under the staging directory (ohd's, outside every workspace), removed
/// with everything in it when dropped. Only what ohd makes for itself goes there (the zip);
/// uploads are staged inside the workspace, through its handle.
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
/// repository (the original copies the whole folder too). The walk goes through the
/// workspace's handle and never into a symlink: links are stored as links (their target's
/// name, never its content), so nothing outside the workspace can end up in the archive.
async fn zip_directory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let workspace = workspace(&state, &id).await?;
    let staging = Staging::new(&state, "zip").await?;
    let zip_path = staging.0.join("workspace.zip");
    let target = zip_path.clone();
    tokio::task::spawn_blocking(move || write_zip(&workspace, &target))
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

/// An archive entry's name for a path relative to the workspace: its components joined with
/// `/`. `None` if any component could make an extracting program write elsewhere: `..` or
/// `.` (also as Windows reads them, trailing dots and spaces dropped: `...` and `.. ` are
/// refused too), empty, holding a `/`, a `\` (a separator on Windows) or a NUL, or a first
/// component that Windows reads as a drive (`C:`). The result is never absolute.
fn zip_entry_name(rel: &FsPath) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in rel.components() {
        let std::path::Component::Normal(part) = component else {
            return None;
        };
        let part = part.to_string_lossy();
        let only_dots = part.trim_end_matches(['.', ' ']).is_empty();
        let drive = parts.is_empty()
            && part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && part.as_bytes().get(1) == Some(&b':');
        if only_dots || drive || part.contains(['/', '\\', '\0']) {
            return None;
        }
        parts.push(part.into_owned());
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// The names in a folder of the workspace, sorted, read from the folder itself (not through
/// a symlink that replaced it since it was seen).
fn sorted_entries(workspace: &Workspace, rel: &FsPath) -> Vec<std::ffi::OsString> {
    use cap_fs_ext::DirExt;
    let read = if rel.as_os_str().is_empty() {
        workspace.dir().entries()
    } else {
        workspace
            .dir()
            .open_dir_nofollow(rel)
            .and_then(|dir| dir.entries())
    };
    let Ok(read) = read else {
        return Vec::new();
    };
    let mut names: Vec<_> = read.flatten().map(|e| e.file_name()).collect();
    names.sort();
    names
}

fn write_zip(workspace: &Workspace, target: &FsPath) -> anyhow::Result<()> {
    let out = std::io::BufWriter::new(std::fs::File::create(target)?);
    let mut zip = zip::ZipWriter::new(out);
    // Depth first in name order, with a stack rather than recursion: a deep tree cannot
    // exhaust the thread's stack.
    let mut todo: Vec<PathBuf> = sorted_entries(workspace, FsPath::new(""))
        .into_iter()
        .rev()
        .map(PathBuf::from)
        .collect();
    while let Some(rel) = todo.pop() {
        if add_to_zip(workspace, &mut zip, &rel)? {
            let children = sorted_entries(workspace, &rel);
            todo.extend(children.into_iter().rev().map(|name| rel.join(name)));
        }
    }
    let mut out = zip.finish()?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// Adds one entry as it is (not followed). `true` for a folder, whose entries come next.
fn add_to_zip<W: std::io::Write + std::io::Seek>(
    workspace: &Workspace,
    zip: &mut zip::ZipWriter<W>,
    rel: &FsPath,
) -> anyhow::Result<bool> {
    use cap_std::fs::MetadataExt;
    use zip::write::SimpleFileOptions;
    let Some(name) = zip_entry_name(rel) else {
        tracing::debug!(path = %rel.display(), "a name unsafe in a zip, left out");
        return Ok(false);
    };
    let Ok(meta) = workspace.dir().symlink_metadata(rel) else {
        return Ok(false);
    };
    let options = SimpleFileOptions::default()
        .unix_permissions(meta.mode() & 0o777)
        .last_modified_time(zip_time(meta.modified().map(|t| t.into_std())));
    let kind = meta.file_type();
    if kind.is_dir() {
        zip.add_directory(format!("{name}/"), options)?;
        return Ok(true);
    }
    if kind.is_symlink() {
        if let Ok(link) = workspace.dir().read_link_contents(rel) {
            zip.add_symlink(name, link.to_string_lossy(), options)?;
        }
        return Ok(false);
    }
    if !kind.is_file() {
        // Sockets, pipes and devices have no content to archive.
        return Ok(false);
    }
    // Not through a symlink (that fails), and the same file the walk saw.
    let Ok(mut file) = workspace.open_nofollow(rel) else {
        return Ok(false);
    };
    match file.metadata() {
        Ok(opened)
            if opened.is_file()
                && std::os::unix::fs::MetadataExt::ino(&opened) == meta.ino()
                && std::os::unix::fs::MetadataExt::dev(&opened) == meta.dev() => {}
        _ => return Ok(false),
    }
    zip.start_file(
        name,
        options
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(meta.len() >= u64::from(u32::MAX)),
    )?;
    std::io::copy(&mut file, zip)?;
    Ok(false)
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

/// Where an uploaded file goes (relative to the workspace), or why it cannot go there.
fn refuse_name(workspace: &Workspace, name: &str) -> Result<PathBuf, String> {
    if name.trim().is_empty() {
        return Err("the file has no name".to_owned());
    }
    let rel = workspace.resolve(name).map_err(|e| e.to_string())?;
    if rel == FsPath::new(".") {
        return Err("the name is the workspace itself".to_owned());
    }
    if workspace.dir().metadata(&rel).is_ok_and(|m| m.is_dir()) {
        return Err("a folder of that name is in the workspace".to_owned());
    }
    Ok(rel)
}

/// Uploaded files waiting in the workspace (hidden names in its root) to be put in place;
/// those not placed are removed when this is dropped, on every way out of the request.
struct Staged {
    workspace: Workspace,
    files: Vec<(String, PathBuf)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (_, temp) in &self.files {
            if let Err(e) = self.workspace.dir().remove_file(temp)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %temp.display(), error = %e, "staged upload not removed");
            }
        }
    }
}

/// `multipart/form-data` with the field `files` repeated, each file's name its path in the
/// workspace (folders are made). Each file is written to a new hidden file in the workspace
/// through its handle and renamed into place, through the handle too, only when the whole
/// request has arrived within `max_upload_bytes`; over it, nothing is kept and the answer is
/// 413. A name that would leave the workspace is skipped, with the reason.
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
    let mut staged = Staged {
        workspace: workspace.clone(),
        files: Vec::new(),
    };
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
        let mut file = match (is_file, &refusal) {
            (true, None) => {
                let (temp, file) = workspace
                    .create_temp("upload")
                    .map_err(|e| ApiError::internal("cannot stage the upload", e))?;
                staged.files.push((name.clone(), temp));
                Some(tokio::fs::File::from_std(file))
            }
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
        } else if let Some(reason) = refusal {
            skipped.push(json!({"name": name, "reason": reason}));
        }
    }
    let (uploaded, more_skipped) = tokio::task::spawn_blocking(move || place_all(staged))
        .await
        .map_err(|e| ApiError::internal("cannot place the upload", e))?;
    skipped.extend(more_skipped);
    Ok(Json(
        json!({"uploaded_files": uploaded, "skipped_files": skipped}),
    ))
}

/// Renames each staged file to its name, within the handle. The paths as the agent sees them,
/// and the files skipped with the reason.
fn place_all(mut staged: Staged) -> (Vec<String>, Vec<Value>) {
    let workspace = staged.workspace.clone();
    let mut uploaded = Vec::new();
    let mut skipped = Vec::new();
    for (name, temp) in std::mem::take(&mut staged.files) {
        // Checked again: the workspace may have changed while the request came in.
        let placed = refuse_name(&workspace, &name).and_then(|rel| {
            workspace.place(&temp, &rel).map_err(|e| {
                if ohd_runtime::workspace::is_escape(&e) {
                    format!("the path {name} leads outside the workspace")
                } else {
                    format!("cannot write it: {e}")
                }
            })
        });
        match placed {
            Ok(()) => {
                let shown = workspace.lexical(&name).unwrap_or_default();
                uploaded.push(workspace.agent_path(&shown));
            }
            Err(reason) => {
                // Still staged: removed with the others.
                staged.files.push((name.clone(), temp));
                skipped.push(json!({"name": name, "reason": reason}));
            }
        }
    }
    (uploaded, skipped)
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

/// What `HEAD` of the workspace's repository is, read through the handle.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A commit (a branch's tip, or detached).
    Commit(String),
    /// A branch with no commit yet (`ref: refs/heads/main`).
    Unborn(String),
}

/// The largest `HEAD`, ref or `packed-refs` file read to find the commit.
const MAX_REF_BYTES: u64 = 16 * 1024 * 1024;

fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A ref name git would accept here: under `refs/`, plain components only.
fn is_ref_name(name: &str) -> bool {
    name.starts_with("refs/")
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with('.'))
        && !name.contains(['\0', '\n', '\\', ' ', '~', '^', ':', '?', '*', '['])
}

/// A small regular file of the repository, read without following a symlink at its name.
fn read_git_file(workspace: &Workspace, rel: &str) -> Option<String> {
    let file = workspace.open_nofollow(FsPath::new(rel)).ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_REF_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `HEAD` resolved from `.git/HEAD`, the loose ref, or `packed-refs`, all through the handle;
/// `None` if this does not look like a repository ohd can read (reftable refs included).
fn read_head(workspace: &Workspace) -> Option<Head> {
    let head = read_git_file(workspace, ".git/HEAD")?;
    let head = head.trim();
    if is_object_id(head) {
        return Some(Head::Commit(head.to_owned()));
    }
    let name = head.strip_prefix("ref:")?.trim();
    if !is_ref_name(name) {
        return None;
    }
    if let Some(loose) = read_git_file(workspace, &format!(".git/{name}")) {
        let loose = loose.trim();
        return is_object_id(loose).then(|| Head::Commit(loose.to_owned()));
    }
    let packed = read_git_file(workspace, ".git/packed-refs").unwrap_or_default();
    for line in packed.lines() {
        if let Some((id, packed_name)) = line.split_once(' ')
            && packed_name == name
            && is_object_id(id)
        {
            return Some(Head::Commit(id.to_owned()));
        }
    }
    Some(Head::Unborn(name.to_owned()))
}

/// The repository's object format as its config says (`sha256`), else `sha1`. Only this one
/// value is taken from the repository's config; git itself never reads that file (see [`git`]).
fn object_format(workspace: &Workspace, head: &Head) -> &'static str {
    if let Head::Commit(id) = head {
        return if id.len() == 64 { "sha256" } else { "sha1" };
    }
    let config = read_git_file(workspace, ".git/config").unwrap_or_default();
    let sha256 = config.lines().any(|line| {
        let line = line.trim().to_ascii_lowercase().replace(' ', "");
        line == "objectformat=sha256"
    });
    if sha256 { "sha256" } else { "sha1" }
}

/// The config git gets instead of the repository's: nothing in it runs a program or names a
/// path outside the workspace.
fn shadow_config(format: &str, agent_root: &FsPath) -> String {
    let exclude = agent_root.join(".git/info/exclude");
    let version = if format == "sha1" { 0 } else { 1 };
    let mut config = format!(
        "[core]\n\trepositoryformatversion = {version}\n\tbare = false\n\texcludesFile = {}\n",
        exclude.display()
    );
    if format != "sha1" {
        config.push_str(&format!("[extensions]\n\tobjectformat = {format}\n"));
    }
    config
}

/// Makes a git directory of ohd's own in a fresh temporary folder (in the sandbox's private
/// `/tmp` when there is one, removed afterwards otherwise) holding only `HEAD` (`$1`) and the
/// config (`$2`), then runs git on it with the rest of the arguments. The workspace's objects
/// and index are given by the environment.
const GIT_SHIM: &str = r#"shadow=$(mktemp -d) || exit 125
mkdir "$shadow/refs" || exit 125
printf '%s\n' "$1" > "$shadow/HEAD" || exit 125
printf '%s' "$2" > "$shadow/config" || exit 125
shift 2
GIT_DIR="$shadow" git "$@"
status=$?
rm -rf "$shadow"
exit $status"#;

/// `-c` settings on every git command: belt and braces on top of a config without anything
/// in it, for what could still come from elsewhere (the attributes files in the work tree and
/// `.git/info/attributes` name filter and diff drivers, which are not defined here so run
/// nothing; submodules would start a git of their own on their own config).
const GIT_OVERRIDES: [&str; 13] = [
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.attributesFile=/dev/null",
    "core.untrackedCache=false",
    "core.quotepath=false",
    "core.sshCommand=false",
    "core.askPass=false",
    "credential.helper=",
    "protocol.allow=never",
    "submodule.recurse=false",
    "diff.ignoreSubmodules=all",
    // The work tree may belong to the agent's user rather than to ohd's.
    "safe.directory=*",
];

/// Runs git on the workspace's repository, where the agent's commands run (in its sandbox
/// when there is one).
///
/// The repository is the agent's, so an attacker's: its `.git/config` can name programs
/// (`core.fsmonitor`, filters, `diff.external`, textconv, `core.pager`, hooks, ...) and paths
/// outside (`core.worktree`, a `.git` that is a symlink or a gitfile). So git never reads it:
/// `.git` must be a real folder (checked through the handle), `HEAD` is resolved by ohd
/// through the handle, and git runs on a git directory of ohd's own (see [`GIT_SHIM`]) with
/// only the workspace's objects and index, no system or global config, no attributes outside
/// the work tree, no lazy fetching and no prompts. `None` when the workspace is not a
/// repository ohd can read.
async fn git(
    state: &AppState,
    workspace: &Workspace,
    args: &[&str],
) -> Result<Option<std::process::Output>, ApiError> {
    let is_repository = workspace
        .dir()
        .symlink_metadata(".git")
        .is_ok_and(|m| m.is_dir());
    let head = match is_repository.then(|| read_head(workspace)).flatten() {
        Some(head) => head,
        None => return Ok(None),
    };
    let agent_root = state.agents.agent_root(workspace.host_root()).await;
    let head_line = match &head {
        Head::Commit(id) => id.clone(),
        Head::Unborn(name) => format!("ref: {name}"),
    };
    let config = shadow_config(object_format(workspace, &head), &agent_root);
    let mut full = vec!["sh", "-c", GIT_SHIM, "sh", &head_line, &config];
    for setting in GIT_OVERRIDES {
        full.extend(["-c", setting]);
    }
    full.push("--no-pager");
    full.extend_from_slice(args);
    let launch = state.agents.launch(workspace.host_root(), &full).await;
    let git_dir = agent_root.join(".git");
    // What the sandbox is handed stays open until git has started (it runs offline, so
    // there is nothing to attach afterwards).
    let (mut command, _prepared) = launch
        .command()
        .map_err(|e| ApiError::internal("cannot prepare the sandbox for git", e))?;
    command
        // No HOME: no `~/.gitconfig` and no `~/.config/git`.
        .env_remove("HOME")
        .env("GIT_WORK_TREE", &agent_root)
        .env("GIT_OBJECT_DIRECTORY", git_dir.join("objects"))
        .env("GIT_INDEX_FILE", git_dir.join("index"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_LITERAL_PATHSPECS", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(GIT_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.code() == Some(125) => Err(ApiError::internal(
            "cannot prepare git",
            String::from_utf8_lossy(&output.stderr),
        )),
        Ok(Ok(output)) => Ok(Some(output)),
        Ok(Err(e)) => Err(ApiError::internal("cannot run git (is it installed?)", e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "GIT$TIMEOUT",
            format!("git took longer than {} s", GIT_TIMEOUT.as_secs()),
        )),
    }
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
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignore-submodules=all",
        ],
    )
    .await?
    .ok_or_else(not_a_repository)?;
    if !output.status.success() {
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
    // Read through the handle at `rel`; named to git as given (a tracked symlink is its own
    // entry in the commit).
    let rel = resolve(&workspace, &query.path)?;
    let named = workspace
        .lexical(&query.path)
        .map_err(|e| ApiError::bad_request("INVALID_PATH", e.to_string()))?;
    if named.as_os_str().is_empty() {
        return Err(ApiError::bad_request(
            "INVALID_PATH",
            "the path names the workspace, not a file",
        ));
    }
    // `cat-file blob` applies no filter and no textconv.
    let spec = format!("HEAD:{}", named.to_string_lossy());
    let output = git(&state, &workspace, &["cat-file", "blob", &spec])
        .await?
        .ok_or_else(not_a_repository)?;
    let original = if output.status.success() {
        diff_text(&output.stdout, "original")?
    } else {
        // Not in the last commit (new), or no commit yet.
        String::new()
    };
    let read =
        tokio::task::spawn_blocking(move || read_file(&workspace, &rel, MAX_DIFF_BYTES as u64))
            .await
            .map_err(|e| ApiError::internal("cannot read the file", e))?;
    let modified = match read {
        Ok(Content::Bytes(bytes)) => diff_text(&bytes, "modified")?,
        Ok(Content::TooLarge) => return Err(diff_too_large("modified")),
        // Deleted, or not a file.
        Ok(Content::NotAFile) => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(fs_error(&query.path, e)),
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
        Ok(dir) => dir,
        // A symlink out of the workspace: nothing to show.
        Err(_) => return Ok(Json(json!({"microagents": []}))),
    };
    let found = tokio::task::spawn_blocking(move || read_microagents(&workspace, &dir))
        .await
        .map_err(|e| ApiError::internal("reading microagents failed", e))?;
    Ok(Json(json!({"microagents": found})))
}

/// The regular files under `dir` (relative to the workspace), at most `depth` folders down,
/// as paths relative to `dir`, in name order; symlinks are not followed.
fn files_below(workspace: &Workspace, dir: &FsPath, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![(PathBuf::new(), depth)];
    while let Some((below, depth)) = todo.pop() {
        let Ok(read) = workspace.dir().read_dir(dir.join(&below)) else {
            continue;
        };
        let mut entries: Vec<_> = read.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = below.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_file() => out.push(rel),
                Ok(t) if t.is_dir() && depth > 1 => todo.push((rel, depth - 1)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn read_microagents(workspace: &Workspace, dir: &FsPath) -> Vec<Value> {
    let mut out = Vec::new();
    for rel in files_below(workspace, dir, 4) {
        if out.len() >= MAX_MICROAGENTS {
            break;
        }
        let is_markdown = rel
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md"));
        let is_readme = rel
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("README.md"));
        if !is_markdown || is_readme {
            continue;
        }
        // Not through a symlink that replaced the file since the walk.
        let Ok(file) = workspace.open_nofollow(&dir.join(&rel)) else {
            continue;
        };
        if !file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_MICROAGENT_BYTES)
        {
            continue;
        }
        let mut text = String::new();
        if file
            .take(MAX_MICROAGENT_BYTES)
            .read_to_string(&mut text)
            .is_err()
        {
            continue;
        }
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
    fn zip_entry_names_are_relative_and_never_climb() {
        assert_eq!(
            zip_entry_name(FsPath::new("a/b.txt")).as_deref(),
            Some("a/b.txt")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a\\..\\..\\x",
            "C:\\x",
            "C:x",
            "a/...",
            "a/.. /b",
        ] {
            assert_eq!(zip_entry_name(FsPath::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn a_zip_of_odd_names_holds_only_safe_entry_names_and_no_linked_content() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("ws");
        for (name, content) in [
            ("ok.txt", "ok"),
            ("..\\..\\evil.txt", "backslashes"),
            ("dir/..\\x", "nested backslashes"),
            ("dir/inner.txt", "inner"),
            ("...", "three dots"),
            ("-rf", "a dash"),
        ] {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        std::fs::write(temp.path().join("secret.txt"), "TOPSECRET-zip-unit").unwrap();
        std::os::unix::fs::symlink(temp.path().join("secret.txt"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(temp.path(), root.join("dir-link")).unwrap();
        let ws = Workspace::new(root, PathBuf::from("/workspace")).unwrap();
        let target = temp.path().join("out.zip");
        write_zip(&ws, &target).unwrap();

        let mut archive = zip::ZipArchive::new(std::fs::File::open(&target).unwrap()).unwrap();
        let mut names = Vec::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().into_owned();
            assert!(
                !name.starts_with('/') && !name.contains('\\'),
                "unsafe name {name:?}"
            );
            assert!(
                name.split('/').all(|part| part != ".." && part != "."),
                "unsafe name {name:?}"
            );
            assert!(entry.enclosed_name().is_some(), "unsafe name {name:?}");
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            assert!(!String::from_utf8_lossy(&content).contains("TOPSECRET"));
            names.push(name);
        }
        names.sort();
        assert_eq!(
            names,
            ["-rf", "dir-link", "dir/", "dir/inner.txt", "link", "ok.txt"]
        );
    }

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
