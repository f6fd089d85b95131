//! A conversation's repository: cloned into its workspace before its first message is handled,
//! on the branch asked for, with the user's provider token. The token goes to git in its
//! environment only (an `Authorization` header through `GIT_CONFIG_*`), so it is neither on a
//! command line nor in `.git/config`, and it is hidden in every error. The clone runs as ohd,
//! outside the sandbox (whose network cannot reach this machine's services, and which should
//! not hold a token the user did not give it); what it wrote is then given to the sandbox's
//! user, and ohd never runs anything from it.

use crate::user_secrets::ProviderToken;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a clone may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(600);

/// What a conversation asks to work on.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoSpec {
    /// `owner/name` (GitLab groups may nest: `group/sub/name`).
    pub full_name: String,
    pub provider: String,
    pub branch: Option<String>,
}

impl RepoSpec {
    /// The folder it is cloned into: the repository's own name.
    pub fn directory(&self) -> String {
        self.full_name
            .rsplit('/')
            .next()
            .unwrap_or(&self.full_name)
            .to_owned()
    }
}

/// Why a clone failed, for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CloneError(pub String);

/// The provider's web address: the token's host when it has one (a self-hosted server; a
/// scheme may be given, `https://` otherwise), else the public service.
fn base_url(provider: &str, host: Option<&str>) -> Option<String> {
    if let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) {
        let host = host.trim_end_matches('/');
        return Some(
            if host.starts_with("http://") || host.starts_with("https://") {
                host.to_owned()
            } else {
                format!("https://{host}")
            },
        );
    }
    let public = match provider {
        "github" => "https://github.com",
        "gitlab" => "https://gitlab.com",
        "bitbucket" => "https://bitbucket.org",
        "azure_devops" => "https://dev.azure.com",
        "forgejo" => "https://codeberg.org",
        _ => return None,
    };
    Some(public.to_owned())
}

/// The user name providers take with a token over HTTP basic auth.
fn token_user(provider: &str) -> &'static str {
    match provider {
        "gitlab" => "oauth2",
        "bitbucket" => "x-token-auth",
        _ => "x-access-token",
    }
}

/// Whether a repository name is only `owner/name` parts (no `..`, no URL, nothing git would
/// read as an option).
pub fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && !p.starts_with('-')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

fn valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && !branch.starts_with('-')
        && !branch.contains("..")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Clones `spec` into `workspace/<name>` unless it is there already; returns that folder.
///
/// The clone is made in `staging` (ohd's, out of the agent's reach) and then moved into the
/// workspace through its handle: ohd, possibly root, never writes to a path in the workspace
/// that the agent may have made a link to somewhere else.
pub async fn clone(
    spec: &RepoSpec,
    token: Option<&ProviderToken>,
    workspace: &Path,
    staging: &Path,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, CloneError> {
    if !valid_name(&spec.full_name) {
        return Err(CloneError(format!(
            "The repository name {:?} is not of the form owner/name.",
            spec.full_name
        )));
    }
    if let Some(branch) = &spec.branch
        && !valid_branch(branch)
    {
        return Err(CloneError(format!(
            "The branch name {branch:?} cannot be used."
        )));
    }
    let folder = spec.directory();
    let target = workspace.join(&folder);
    let handle = cap_std::fs::Dir::open_ambient_dir(workspace, cap_std::ambient_authority())
        .map_err(|e| CloneError(format!("The workspace cannot be opened: {e}")))?;
    match handle.symlink_metadata(&folder) {
        Ok(meta) if meta.is_dir() => {
            if handle
                .symlink_metadata(Path::new(&folder).join(".git"))
                .is_ok_and(|m| m.is_dir())
            {
                return Ok(target);
            }
            return Err(CloneError(format!(
                "The workspace already has a folder {folder} that is not a clone of {}; the repository was not cloned.",
                spec.full_name
            )));
        }
        Ok(_) => {
            return Err(CloneError(format!(
                "The workspace already has {folder}, which is not a folder; the repository was not cloned."
            )));
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(staging)
        .map_err(|e| CloneError(format!("The staging folder cannot be made: {e}")))?;
    let staged_name = format!("clone-{:016x}", fastrand::u64(..));
    let staged = staging.join(&staged_name);
    let base = base_url(&spec.provider, token.and_then(|t| t.host.as_deref()))
        .ok_or_else(|| CloneError(format!("Unknown git provider {:?}.", spec.provider)))?;
    let url = format!("{base}/{}.git", spec.full_name);
    let mut command = tokio::process::Command::new("git");
    // git sees no configuration but what is given here: a system or user configuration (a
    // filter such as git-lfs, a credential helper) could send the token elsewhere or run
    // something for the repository.
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", staging)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .arg("-c")
        .arg("core.hooksPath=/dev/null")
        .arg("clone")
        .arg("--quiet")
        .arg("--no-recurse-submodules");
    if let Some(branch) = &spec.branch {
        command.arg("--branch").arg(branch);
    }
    command
        .arg("--")
        .arg(&url)
        .arg(&staged)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        // Only the protocols a provider speaks; nothing from a local path or a helper.
        .env("GIT_ALLOW_PROTOCOL", "https:http")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let secret = token.map(|t| t.token.expose().to_owned());
    if let Some(token) = &secret {
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{token}", token_user(&spec.provider)));
        command
            .env("GIT_CONFIG_COUNT", "1")
            // For the provider's address only, not for anything the repository names.
            .env("GIT_CONFIG_KEY_0", format!("http.{base}/.extraHeader"))
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {credentials}"),
            );
    }
    let hide = |text: &str| match &secret {
        Some(token) => text.replace(token.as_str(), "<secret_hidden>"),
        None => text.to_owned(),
    };
    let output = match tokio::time::timeout(CLONE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(CloneError(format!("git could not be run: {e}")));
        }
        Err(_) => {
            let _ = tokio::fs::remove_dir_all(&staged).await;
            return Err(CloneError(format!(
                "Cloning {} did not finish in {} minutes.",
                spec.full_name,
                CLONE_TIMEOUT.as_secs() / 60
            )));
        }
    };
    if !output.status.success() {
        let _ = tokio::fs::remove_dir_all(&staged).await;
        let said = hide(String::from_utf8_lossy(&output.stderr).trim());
        let refused = [
            "Authentication failed",
            "could not read Username",
            "401",
            "403",
        ];
        let hint = if refused.iter().any(|r| said.contains(r)) {
            " The provider refused the token: check it on the settings page (Git tab)."
        } else if said.contains("Remote branch") {
            " Check the branch name."
        } else {
            ""
        };
        return Err(CloneError(format!(
            "Cloning {} from {base} failed: {said}{hint}",
            spec.full_name
        )));
    }
    // Made ready while still out of the agent's reach: the hook installed, everything given to
    // the sandbox's user. Nothing here is done again on a later start.
    let prepared = install_pre_commit(&staged).and_then(|_| give_to(&staged, owner));
    if let Err(e) = prepared {
        let _ = tokio::fs::remove_dir_all(&staged).await;
        return Err(CloneError(format!("The clone could not be prepared: {e}")));
    }
    let moved = cap_std::fs::Dir::open_ambient_dir(staging, cap_std::ambient_authority())
        .and_then(|from| from.rename(&staged_name, &handle, &folder));
    if let Err(e) = moved {
        let _ = tokio::fs::remove_dir_all(&staged).await;
        return Err(CloneError(format!(
            "The clone could not be put into the workspace as {folder}: {e}"
        )));
    }
    Ok(target)
}

/// Installs `.openhands/pre-commit.sh` as the repository's pre-commit hook, as the original
/// does. The hook only calls the script: both run in the agent's sandbox, never in ohd. Only
/// for a fresh clone in ohd's staging folder, which the agent cannot reach.
fn install_pre_commit(repo: &Path) -> std::io::Result<bool> {
    if !repo.join(".openhands/pre-commit.sh").is_file() {
        return Ok(false);
    }
    let hooks = repo.join(".git/hooks");
    std::fs::create_dir_all(&hooks)?;
    let hook = hooks.join("pre-commit");
    std::fs::write(
        &hook,
        "#!/bin/sh\n# Installed by ohd: runs the repository's .openhands/pre-commit.sh.\nexec bash \"$(git rev-parse --show-toplevel)/.openhands/pre-commit.sh\" \"$@\"\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(true)
}

/// Gives what the clone wrote to the sandbox's user (ohd as root), without following links;
/// only for a fresh clone in ohd's staging folder.
fn give_to(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to(&entry?.path(), Some((uid, gid)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_branches_that_git_could_misread_are_refused() {
        assert!(valid_name("owner/repo") && valid_name("group/sub/repo.js"));
        for bad in [
            "repo",
            "../x/y",
            "owner/-x",
            "owner/re po",
            "https://x/y",
            "a//b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_branch("feature/x-1"));
        assert!(!valid_branch("--upload-pack=x") && !valid_branch("a..b"));
    }

    #[test]
    fn a_host_with_or_without_scheme() {
        assert_eq!(
            base_url("github", None).as_deref(),
            Some("https://github.com")
        );
        assert_eq!(
            base_url("gitlab", Some("git.example.org")).as_deref(),
            Some("https://git.example.org")
        );
        assert_eq!(
            base_url("gitlab", Some("http://127.0.0.1:9/")).as_deref(),
            Some("http://127.0.0.1:9")
        );
    }
}
