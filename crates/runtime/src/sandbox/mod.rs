//! How a conversation's commands are isolated.
//!
//! The sandbox is decided once, at start ([`Sandbox::decide`]), from the configuration and what
//! this machine allows, and said in the log and in `/health`. Its strongest form, used whenever
//! the kernel allows user namespaces:
//! - bubblewrap runs as a user id of the sandbox's own (when ohd is root: one per conversation,
//!   from `uid_base`), in a new user namespace where the command is root, mapped to that
//!   unprivileged id outside, with every capability dropped and `no_new_privs`;
//! - a seccomp filter ([`seccomp`]) refuses the calls namespaces are escaped with;
//! - the system read-only, `/proc/sys` and the rest of `/proc`'s kernel knobs read-only, its own
//!   `/tmp` of bounded size, the workspace at `/workspace`, nothing of ohd's data;
//! - its own network namespace: offline, or reaching out through `pasta` (user-mode
//!   networking), never to this machine's loopback where ohd listens;
//! - rlimits ([`limits`]) on memory, processes, file size and CPU time.
//!
//! Without user namespaces and as root, bubblewrap still runs with capabilities dropped and
//! the seccomp filter, offline; without bubblewrap, commands are plain processes. Either is
//! said loudly. The argument list is built by [`bwrap`], the spawn by [`spawn`].

pub mod bwrap;
pub mod layer;
pub mod limits;
pub mod passage;
pub mod seccomp;
pub mod spawn;

pub use limits::Limits;
pub use spawn::{Attached, Prepared, SpawnPlan};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// bubblewrap if it works on this machine, else a plain process.
    Auto,
    Bubblewrap,
    None,
}

/// What the configuration asks for.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    pub network: bool,
    /// Folders that must never be visible inside (ohd's data directory, its config).
    pub hidden: Vec<PathBuf>,
    pub limits: Limits,
    /// When ohd runs as root, conversation sandboxes run as user ids from here on (one per
    /// conversation, so one conversation's processes never count against another's limit).
    pub uid_base: u32,
    /// Where conversations' writable system layers live (`<data>/sandboxes`); none: no layer.
    pub layers: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Auto,
            network: true,
            hidden: Vec::new(),
            limits: Limits::default(),
            uid_base: DEFAULT_UID_BASE,
            layers: None,
        }
    }
}

/// Far above the ids of people and system services, and below 2^31 for tools that take ids
/// as signed numbers.
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;
/// Conversation ids are spread over this many user ids.
const UID_SPAN: u32 = 65_536;

/// How commands are isolated here, as decided at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap with a user namespace: the full sandbox.
    UserNamespace,
    /// bubblewrap as root without a user namespace (the kernel refuses them): capabilities
    /// dropped and seccomp, but the command's root is the host's root user.
    RootWithoutUserNamespace,
    /// A plain process in the workspace folder.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Its own empty network namespace.
    Off,
    /// Its own network namespace, with `pasta` to the outside and no way to this machine.
    Pasta,
    /// The host's network (only for plain processes).
    Host,
}

/// The sandbox as decided at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    isolation: Isolation,
    network: Network,
    seccomp: Option<Arc<[Vec<u8>]>>,
    /// Whether ohd runs as root, so sandboxes get user ids of their own.
    as_root: bool,
    /// Whether the agent's shell gets a writable system layer ([`layer`]).
    layered: bool,
    /// What the host's root keeps to itself under the layered `/etc`, covered in the sandbox.
    secrets: Arc<[(PathBuf, bool)]>,
    /// Where spawns mount what the sandbox's user must reach ([`passage`]), when ohd is root.
    passages: Option<PathBuf>,
    /// What is weaker than configured, or different, in words for the log and `/health`.
    notes: Vec<String>,
    /// Why no command may start, when the sandbox could not be decided.
    unusable: Option<Arc<str>>,
}

/// The layered folder whose root-private files come and go, so it is looked at for each
/// launch; those of the others are found once, at the decision (a walk of /usr takes a moment).
const SECRETS_PER_LAUNCH: &str = "/etc";

/// What the agent sees as its workspace when sandboxed.
pub const SANDBOX_WORKSPACE: &str = "/workspace";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    /// For a sandboxed launch: descriptors, user and limits to start it with.
    pub plan: Option<SpawnPlan>,
}

impl Sandbox {
    /// Decides, once, how commands are isolated here: runs bubblewrap to see what the kernel
    /// allows. Blocking (it starts processes).
    pub fn decide(config: SandboxConfig) -> Sandbox {
        let as_root = rustix::process::geteuid().is_root();
        let mut notes = Vec::new();
        let isolation = match config.mode {
            SandboxMode::None => {
                notes.push("the sandbox is turned off by configuration ([sandbox] mode = \"none\"): commands run as plain processes with ohd's rights".to_owned());
                Isolation::None
            }
            mode => {
                let probe_user = as_root.then_some((config.uid_base, config.uid_base));
                if bwrap::probe(&bwrap::user_namespace_probe(), probe_user) {
                    Isolation::UserNamespace
                } else if as_root && bwrap::probe(&bwrap::root_probe(), None) {
                    notes.push("the kernel refuses user namespaces: commands run under bubblewrap as the host's root user with every capability dropped and the seccomp filter, offline; allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) for the full sandbox".to_owned());
                    Isolation::RootWithoutUserNamespace
                } else if mode == SandboxMode::Bubblewrap {
                    notes.push("bubblewrap cannot make a sandbox here (is it installed, and does the kernel allow user namespaces?); commands will fail to start, as [sandbox] mode = \"bubblewrap\" asks for nothing weaker".to_owned());
                    Isolation::UserNamespace
                } else {
                    notes.push("bubblewrap is not installed or cannot make a sandbox here: commands run as plain processes in the workspace with ohd's rights; install bubblewrap (apt-get install bubblewrap) for the sandbox".to_owned());
                    Isolation::None
                }
            }
        };
        let network = match (isolation, config.network) {
            (Isolation::None, _) => Network::Host,
            (_, false) => Network::Off,
            (Isolation::UserNamespace, true) if pasta_available() => Network::Pasta,
            (Isolation::UserNamespace, true) => {
                notes.push("sandboxed commands are offline although [sandbox] network = true: pasta is not installed (apt-get install passt), and without it the sandbox would share this machine's network and reach ohd itself".to_owned());
                Network::Off
            }
            (Isolation::RootWithoutUserNamespace, true) => Network::Off,
        };
        let seccomp = match isolation {
            Isolation::None => None,
            _ => match seccomp::programs() {
                Ok(programs) => Some(Arc::from(programs)),
                Err(e) => {
                    notes.push(format!("no seccomp filter: {e}"));
                    None
                }
            },
        };
        let layered = match (&config.layers, isolation) {
            (Some(layers), Isolation::UserNamespace) => {
                match layer::supported(layers, (config.uid_base, config.uid_base)) {
                    Ok(()) => true,
                    Err(why) => {
                        notes.push(format!("no writable system layer: {why}; commands cannot install system packages (apt-get, pip without --user), and the system stays read-only"));
                        false
                    }
                }
            }
            _ => false,
        };
        // What the layer would show of root's private files, but under SECRETS_PER_LAUNCH.
        let secrets = if layered {
            layer::LAYERED
                .iter()
                .filter(|dir| **dir != SECRETS_PER_LAUNCH)
                // A folder that is a symlink (`/bin` to `usr/bin`) is walked as its target.
                .filter(|dir| std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()))
                .flat_map(|dir| layer::secrets(Path::new(dir)))
                .collect()
        } else {
            Vec::new()
        };
        let passages = if as_root && isolation == Isolation::UserNamespace {
            let base = passage_base(&config.hidden);
            match passage::prepare_base(&base) {
                Ok(()) => Some(base),
                Err(e) => {
                    notes.push(format!("cannot prepare {} for the sandbox's mounts ({e}); commands will fail to start", base.display()));
                    None
                }
            }
        } else {
            None
        };
        Sandbox {
            config,
            isolation,
            network,
            seccomp,
            as_root,
            layered,
            secrets: secrets.into(),
            passages,
            notes,
            unusable: None,
        }
    }

    /// A sandbox that could not be decided: every launch of it fails to start, with `why`,
    /// rather than run less sandboxed than configured.
    pub fn unusable(config: SandboxConfig, why: String) -> Sandbox {
        Sandbox {
            config,
            isolation: Isolation::UserNamespace,
            network: Network::Off,
            seccomp: None,
            as_root: false,
            layered: false,
            secrets: Arc::from(Vec::new()),
            passages: None,
            notes: vec![why.clone()],
            unusable: Some(Arc::from(why)),
        }
    }

    /// Whether the agent's shell gets a writable system layer.
    pub fn has_layer(&self) -> bool {
        self.layered
    }

    /// A conversation's layer folder, when there are layers.
    fn layer_of(&self, host_workspace: &Path) -> Option<layer::LayerDirs> {
        let layers = self.config.layers.as_ref().filter(|_| self.layered)?;
        Some(layer::LayerDirs::new(
            layers.join(host_workspace.file_name()?),
            self.config.limits.layer_bytes,
        ))
    }

    /// Removes a conversation's layer (its agent stopped; the conversation is deleted).
    pub fn remove_layer(&self, host_workspace: &Path) -> std::io::Result<()> {
        let Some(dirs) = self.layer_of(host_workspace) else {
            return Ok(());
        };
        layer::detach_under(&dirs.root);
        match std::fs::remove_dir_all(&dirs.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    pub fn network(&self) -> Network {
        self.network
    }

    pub fn limits(&self) -> Limits {
        self.config.limits
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn is_sandboxed(&self) -> bool {
        self.isolation != Isolation::None
    }

    /// One line for the log and `/health`.
    pub fn description(&self) -> String {
        let network = match self.network {
            Network::Off => "off",
            Network::Pasta => "on, through pasta",
            Network::Host => "the host's",
        };
        match self.isolation {
            Isolation::UserNamespace => format!(
                "bubblewrap with a user namespace, no capabilities, seccomp, rlimits (network {network})"
            ),
            Isolation::RootWithoutUserNamespace => format!(
                "bubblewrap as root without a user namespace, no capabilities, seccomp, rlimits (network {network})"
            ),
            Isolation::None => "none: commands run as plain processes in the workspace".to_owned(),
        }
    }

    /// The details `/health` shows.
    pub fn report(&self) -> serde_json::Value {
        let limits = self.config.limits;
        serde_json::json!({
            "kind": match self.isolation {
                Isolation::UserNamespace => "bubblewrap",
                Isolation::RootWithoutUserNamespace => "bubblewrap-without-user-namespace",
                Isolation::None => "none",
            },
            "user_namespace": self.isolation == Isolation::UserNamespace,
            "seccomp": self.seccomp.is_some(),
            "network": match self.network {
                Network::Off => "off",
                Network::Pasta => "pasta",
                Network::Host => "host",
            },
            "limits": if self.is_sandboxed() { "rlimits" } else { "none" },
            "writable_system_layer": self.layered,
            "system_layer_mb": limits.layer_bytes / (1024 * 1024),
            "memory_mb": limits.memory_bytes / (1024 * 1024),
            "max_processes": limits.processes,
            "max_file_size_mb": limits.file_size_bytes / (1024 * 1024),
            "tmp_size_mb": limits.tmp_bytes / (1024 * 1024),
            "command_cpu_secs": limits.cpu_secs,
            "notes": self.notes,
        })
    }

    /// How the workspace looks to the agent.
    pub fn agent_root(&self, host_workspace: &Path) -> PathBuf {
        if self.is_sandboxed() {
            PathBuf::from(SANDBOX_WORKSPACE)
        } else {
            host_workspace.to_owned()
        }
    }

    /// The user and group a conversation's sandbox runs as, when ohd is root: one per
    /// conversation (its workspace folder's name), the same across restarts.
    pub fn owner_of(&self, host_workspace: &Path) -> Option<(u32, u32)> {
        if !(self.as_root && self.isolation == Isolation::UserNamespace) {
            return None;
        }
        let name = host_workspace.file_name()?.as_encoded_bytes();
        let spread = (stable_hash(name) % u64::from(UID_SPAN)) as u32;
        let id = self.config.uid_base.saturating_add(spread);
        Some((id, id))
    }

    /// The launch of `shell_args` (a program and its arguments) for a workspace, with
    /// `extra_env` (provider tokens) added to a clean environment. `agent_shell`: the agent's
    /// own shell, which gets the network and the writable system layer; REST helpers such as
    /// git get neither.
    pub fn launch(
        &self,
        host_workspace: &Path,
        shell_args: &[&str],
        extra_env: &[(String, String)],
        agent_shell: bool,
    ) -> Launch {
        self.launch_with(
            host_workspace,
            shell_args,
            extra_env,
            agent_shell,
            agent_shell,
        )
    }

    /// The launch of a service the agent uses beside its shell (an MCP server): the same
    /// sandbox and network as the shell, without the shell's writable system layer, which one
    /// mount at a time may hold.
    pub fn launch_service(
        &self,
        host_workspace: &Path,
        args: &[&str],
        extra_env: &[(String, String)],
    ) -> Launch {
        self.launch_with(host_workspace, args, extra_env, true, false)
    }

    fn launch_with(
        &self,
        host_workspace: &Path,
        shell_args: &[&str],
        extra_env: &[(String, String)],
        network: bool,
        layered: bool,
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
        if !self.is_sandboxed() {
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
                plan: None,
            };
        }
        let pasta = network && self.network == Network::Pasta;
        let layer = self.layer_of(host_workspace).filter(|_| layered);
        let secrets: Vec<(PathBuf, bool)> = match layer {
            Some(_) => self
                .secrets
                .iter()
                .cloned()
                .chain(layer::secrets(Path::new(SECRETS_PER_LAUNCH)))
                .collect(),
            None => Vec::new(),
        };
        let policy = bwrap::Policy {
            user_namespace: self.isolation == Isolation::UserNamespace,
            seccomp: self.seccomp.is_some(),
            pasta,
            tmp_bytes: self.config.limits.tmp_bytes,
            hidden: &self.config.hidden,
            layered: layer.is_some(),
            secrets: &secrets,
        };
        let mut args = bwrap::arguments(&policy);
        args.extend(shell_args.iter().map(OsString::from));
        Launch {
            program: "bwrap".into(),
            args,
            env,
            // bubblewrap changes into the workspace itself; it may not be able to reach the
            // host folder by path as the sandbox's user.
            host_cwd: PathBuf::from("/"),
            agent_root,
            sandboxed: true,
            plan: Some(SpawnPlan {
                credentials: self.owner_of(host_workspace),
                limits: self.config.limits,
                seccomp: self.seccomp.clone(),
                workspace: host_workspace.to_owned(),
                pasta,
                layer,
                passages: self.passages.clone(),
                refused: self.unusable.clone(),
            }),
        }
    }
}

impl Launch {
    /// Opens what this launch hands over, for one spawn (`None` for a plain process).
    pub fn prepare(&self) -> std::io::Result<Option<Prepared>> {
        self.plan.as_ref().map(SpawnPlan::prepare).transpose()
    }

    /// Which of the sandbox's limits, if any, stopped a command.
    pub fn explain_limit(&self, exit_code: i64, output: &str) -> Option<String> {
        self.plan
            .as_ref()
            .and_then(|plan| plan.limits.explain(exit_code, output))
    }

    /// A process for this launch with a clean environment, ready for its standard streams;
    /// spawn it, then call [`Prepared::started`] on what came with it.
    pub fn command(&self) -> std::io::Result<(tokio::process::Command, Option<Prepared>)> {
        let prepared = self.prepare()?;
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.host_cwd);
        if let Some(prepared) = &prepared {
            if let Some((uid, gid)) = prepared.credentials() {
                command.uid(uid).gid(gid);
            }
            // SAFETY: the closure makes only async-signal-safe calls and does not allocate.
            unsafe {
                command.pre_exec(prepared.pre_exec());
            }
        }
        // SAFETY: `signal` is async-signal-safe, and nothing is allocated.
        unsafe {
            command.pre_exec(spawn::default_signals);
        }
        Ok((command, prepared))
    }
}

/// FNV-1a: the same for the same bytes across builds and restarts, unlike the standard
/// hasher, for names that must be found again (a conversation's user id, an instance's folder).
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// This ohd's folder of passages: one per data folder (the first hidden folder), so that a
/// restart finds what a killed ohd left; one per decision without one (tests).
fn passage_base(hidden: &[PathBuf]) -> PathBuf {
    let root = if Path::new("/run").is_dir() {
        PathBuf::from("/run/ohd")
    } else {
        std::env::temp_dir().join("ohd-run")
    };
    let name = match hidden.first() {
        Some(data) => format!("{:016x}", stable_hash(data.as_os_str().as_encoded_bytes())),
        // Each decision its own: tests decide many sandboxes in one process, and preparing a
        // base clears it.
        None => {
            static DECIDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = DECIDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("pid-{}-{n}", std::process::id())
        }
    };
    root.join(name)
}

/// Whether bubblewrap makes a sandbox here with the default configuration (decided once).
pub fn bubblewrap_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| Sandbox::decide(SandboxConfig::default()).is_sandboxed())
}

/// Whether `pasta` (from passt) is installed and runs.
fn pasta_available() -> bool {
    std::process::Command::new("pasta")
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
