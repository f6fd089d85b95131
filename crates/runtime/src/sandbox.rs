//! How a conversation's shell is isolated.
//!
//! With bubblewrap, the shell runs in its own user-invisible namespaces: the system read-only,
//! its own `/tmp`, `/proc` and `/dev`, the conversation's workspace at `/workspace`, no home
//! folders, no view of other conversations or of ohd's data, and no network unless configured.
//! Without bubblewrap it is a plain process in the workspace folder with a clean environment,
//! which is said in the log and in `/health`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap if it works on this machine, else a plain process.
    Auto,
    Bubblewrap,
    None,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    pub network: bool,
    /// Folders that must never be visible inside (ohd's data directory, its config).
    pub hidden: Vec<PathBuf>,
}

/// What the agent sees as its workspace when sandboxed.
pub const SANDBOX_WORKSPACE: &str = "/workspace";

/// System folders mounted read-only inside the sandbox; anything else (home folders, `/var`,
/// `/srv`, `/mnt`) is not there at all.
const SYSTEM_DIRS: [&str; 7] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"];

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether bubblewrap is installed and can make namespaces here. Checked once: running it is
/// the only reliable test (containers often forbid user namespaces).
pub fn bubblewrap_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::process::Command::new("bwrap")
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-pid",
                "--unshare-ipc",
                "--",
                "true",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// The command that starts a shell, and how paths look from inside it.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// The host folder the process starts in.
    pub host_cwd: PathBuf,
    /// The workspace as the shell sees it.
    pub agent_root: PathBuf,
    pub sandboxed: bool,
}

impl SandboxConfig {
    pub fn uses_bubblewrap(&self) -> bool {
        match self.mode {
            SandboxMode::Bubblewrap => true,
            SandboxMode::None => false,
            SandboxMode::Auto => bubblewrap_available(),
        }
    }

    /// How the workspace looks to the agent under this configuration.
    pub fn agent_root(&self, host_workspace: &Path) -> PathBuf {
        if self.uses_bubblewrap() {
            PathBuf::from(SANDBOX_WORKSPACE)
        } else {
            host_workspace.to_owned()
        }
    }

    /// The launch of `shell_args` (a shell and its arguments) for a workspace, with `extra_env`
    /// (provider tokens) added to a clean environment.
    pub fn launch(
        &self,
        host_workspace: &Path,
        shell_args: &[&str],
        extra_env: &[(String, String)],
    ) -> Launch {
        let agent_root = self.agent_root(host_workspace);
        let mut env = vec![
            ("PATH".to_owned(), PATH.to_owned()),
            ("HOME".to_owned(), agent_root.display().to_string()),
            ("TERM".to_owned(), "dumb".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("PAGER".to_owned(), "cat".to_owned()),
            ("GIT_PAGER".to_owned(), "cat".to_owned()),
            ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ];
        env.extend(extra_env.iter().cloned());
        if !self.uses_bubblewrap() {
            let (program, args) = match shell_args.split_first() {
                Some((program, args)) => (
                    OsString::from(program),
                    args.iter().map(OsString::from).collect(),
                ),
                None => (OsString::from("bash"), Vec::new()),
            };
            return Launch {
                program,
                args,
                env,
                host_cwd: host_workspace.to_owned(),
                agent_root,
                sandboxed: false,
            };
        }
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&[
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if !self.network {
            push(&["--unshare-net"]);
        }
        push(&["--hostname", "workspace"]);
        for dir in SYSTEM_DIRS {
            push(&["--ro-bind-try", dir, dir]);
        }
        push(&[
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
        ]);
        // Anything of ohd's that lies under a mounted system folder is covered over.
        for hidden in &self.hidden {
            if SYSTEM_DIRS.iter().any(|d| hidden.starts_with(d)) {
                args.push("--tmpfs".into());
                args.push(hidden.clone().into_os_string());
            }
        }
        args.push("--bind".into());
        args.push(host_workspace.as_os_str().to_owned());
        args.push(SANDBOX_WORKSPACE.into());
        args.push("--chdir".into());
        args.push(SANDBOX_WORKSPACE.into());
        args.push("--".into());
        args.extend(shell_args.iter().map(OsString::from));
        Launch {
            program: "bwrap".into(),
            args,
            env,
            host_cwd: host_workspace.to_owned(),
            agent_root,
            sandboxed: true,
        }
    }
}
