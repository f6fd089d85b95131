//! Starting a sandboxed process: the file descriptors bubblewrap is handed (the workspace
//! folder, the seccomp filter, and for a networked sandbox the info and block pipes), the
//! user id and rlimits it starts with, and the user-mode network (`pasta`) attached to its
//! network namespace before the command may run.

use super::layer::{self, LayerDirs};
use super::limits::{Limits, Rlimit, tasks_of_user};
use super::passage::Passage;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The descriptor numbers bubblewrap's arguments name; the real descriptors are moved there
/// between fork and exec.
pub const WORKSPACE_FD: RawFd = 3;
pub const SECCOMP_FD: RawFd = 4;
pub const INFO_FD: RawFd = 5;
pub const BLOCK_FD: RawFd = 6;
pub const CLONE3_FILTER_FD: RawFd = 7;
/// The layered system folders follow, one number each, in [`layer::LAYERED`]'s order.
const FIRST_LAYER_FD: RawFd = 8;

/// The descriptor number a layered system folder is handed over as.
pub fn layer_fd(dir: &str) -> RawFd {
    let index = layer::LAYERED.iter().position(|d| *d == dir).unwrap_or(0);
    FIRST_LAYER_FD + index as RawFd
}
/// Descriptors are first opened at or above this, so moving one to its number never
/// overwrites another still to be moved.
const HIGH_FD: RawFd = 64;

/// What a sandboxed launch needs at spawn time, beyond program and arguments.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    /// The user and group bubblewrap runs as (ohd running as root), or ohd's own.
    pub credentials: Option<(u32, u32)>,
    pub limits: Limits,
    /// The compiled seccomp filters (refused calls, `clone3`), handed to bubblewrap.
    pub seccomp: Option<Arc<[Vec<u8>]>>,
    /// The workspace folder, opened here and handed over as a descriptor: bubblewrap, running
    /// as the sandbox's user, may not be able to walk to it by path (ohd's data folder is
    /// owner-only), and a descriptor cannot be swapped under it.
    pub workspace: PathBuf,
    /// Whether `pasta` gives the sandbox's own network namespace a way out.
    pub pasta: bool,
    /// The writable system layer, mounted for this spawn.
    pub layer: Option<LayerDirs>,
    /// Where passages are made for this ohd ([`Passage`]), when the sandbox runs as another user.
    pub passages: Option<PathBuf>,
    /// Why nothing may start (the sandbox could not be decided).
    pub refused: Option<Arc<str>>,
}

/// Descriptors and settings for one spawn; kept until the process has started.
pub struct Prepared {
    moves: Vec<(OwnedFd, RawFd)>,
    rlimits: Vec<Rlimit>,
    credentials: Option<(u32, u32)>,
    info: Option<OwnedFd>,
    block: Option<OwnedFd>,
    pasta: bool,
    passage: Option<Passage>,
}

/// What must live as long as the sandbox: the network helper and the system layer's mounts.
#[derive(Debug, Default)]
pub struct Attached {
    // Dropped in this order: the network helper, then the mounts.
    _pasta: Option<tokio::process::Child>,
    _passage: Option<Passage>,
}

fn high(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let moved = rustix::io::fcntl_dupfd_cloexec(&fd, HIGH_FD)?;
    Ok(moved)
}

/// A folder as a path-only descriptor, not following a symlink at its end.
fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((read, write))
}

fn memfd_with(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("ohd-seccomp", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

impl SpawnPlan {
    /// Opens what the spawn hands over. Run for every spawn: a descriptor is read by the
    /// process it is given to.
    pub fn prepare(&self) -> std::io::Result<Prepared> {
        if let Some(why) = &self.refused {
            return Err(std::io::Error::other(why.to_string()));
        }
        if let Some((uid, gid)) = self.credentials {
            give_workspace_to(&self.workspace, uid, gid)?;
        }
        let mut moves = Vec::new();
        let passage = match (self.credentials, &self.passages) {
            (Some(owner), Some(base)) => {
                let mut passage = Passage::new(base)?;
                let workspace = passage.bind(&self.workspace, "workspace")?;
                moves.push((high(open_path(&workspace)?)?, WORKSPACE_FD));
                if let Some(dirs) = &self.layer {
                    for (dir, merged) in layer::mount(dirs, owner, &mut passage)? {
                        moves.push((high(open_path(&merged)?)?, layer_fd(dir)));
                    }
                }
                Some(passage)
            }
            _ => {
                moves.push((high(open_path(&self.workspace)?)?, WORKSPACE_FD));
                None
            }
        };
        if let Some(programs) = &self.seccomp {
            for (program, fd) in programs.iter().zip([SECCOMP_FD, CLONE3_FILTER_FD]) {
                moves.push((high(memfd_with(program)?)?, fd));
            }
        }
        let (mut info, mut block) = (None, None);
        if self.pasta {
            let (info_read, info_write) = pipe()?;
            let (block_read, block_write) = pipe()?;
            moves.push((high(info_write)?, INFO_FD));
            moves.push((high(block_read)?, BLOCK_FD));
            info = Some(info_read);
            block = Some(block_write);
        }
        let in_use = match self.credentials {
            Some(_) => 0,
            None => tasks_of_user(rustix::process::getuid().as_raw()),
        };
        Ok(Prepared {
            moves,
            rlimits: self.limits.rlimits(in_use),
            credentials: self.credentials,
            info,
            block,
            pasta: self.pasta,
            passage,
        })
    }
}

/// Between fork and exec: the signals ohd may have been started with ignored (by `nohup`, or a
/// shell's background job ignoring SIGINT) are given back their default action, so that a C-c
/// sent to the agent's command, and a stop, reach what it started.
pub fn default_signals() -> std::io::Result<()> {
    for signal in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGPIPE,
        libc::SIGTERM,
    ] {
        // SAFETY: `signal` is async-signal-safe; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    Ok(())
}

impl Prepared {
    pub fn credentials(&self) -> Option<(u32, u32)> {
        self.credentials
    }

    /// What runs in the child between fork and exec: descriptors to their numbers, rlimits.
    /// Only async-signal-safe calls (`dup2`, `setrlimit`), and no allocation.
    pub fn pre_exec(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let moves: Vec<(RawFd, RawFd)> = self
            .moves
            .iter()
            .map(|(fd, to)| (fd.as_raw_fd(), *to))
            .collect();
        let rlimits = self.rlimits.clone();
        move || {
            for (from, to) in &moves {
                // SAFETY: both are descriptor numbers; dup2 replaces `to` and clears its
                // close-on-exec flag, which is what hands it over.
                if unsafe { libc::dup2(*from, *to) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for limit in &rlimits {
                let value = libc::rlimit {
                    rlim_cur: limit.soft,
                    rlim_max: limit.hard,
                };
                // SAFETY: a plain system call with a valid pointer to a local.
                if unsafe { libc::setrlimit(limit.resource, &value) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        }
    }

    /// After the spawn: lets go of the child's descriptors and, for a networked sandbox,
    /// attaches `pasta` to its network namespace, then lets the command start.
    pub async fn started(mut self) -> Result<Attached, String> {
        self.moves.clear();
        let passage = self.passage.take();
        let (true, Some(info), Some(block)) = (self.pasta, self.info.take(), self.block.take())
        else {
            return Ok(Attached {
                _pasta: None,
                _passage: passage,
            });
        };
        let child_pid = tokio::task::spawn_blocking(move || read_child_pid(info))
            .await
            .map_err(|e| format!("sandbox start: {e}"))??;
        let pasta = start_pasta(child_pid, self.credentials).await?;
        fence_off_this_machine(child_pid).await?;
        let mut block = std::fs::File::from(block);
        block
            .write_all(b"1")
            .map_err(|e| format!("the sandbox did not start: {e}"))?;
        Ok(Attached {
            _pasta: Some(pasta),
            _passage: passage,
        })
    }
}

/// bubblewrap's `--info-fd` answer: `{"child-pid": N, ...}`, then end of file.
fn read_child_pid(info: OwnedFd) -> Result<u32, String> {
    let mut text = String::new();
    std::fs::File::from(info)
        .read_to_string(&mut text)
        .map_err(|e| format!("sandbox start: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        "the sandbox did not start (bubblewrap failed before it was set up)".to_owned()
    })?;
    value
        .get("child-pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| "bubblewrap did not say which process is the sandbox".to_owned())
}

/// Starts `pasta` in the sandbox's network namespace, as the sandbox's own user, with nothing
/// forwarded in either direction and the gateway not mapped to the host: the sandbox reaches
/// the outside world, never this machine's loopback (where ohd listens).
async fn start_pasta(
    child_pid: u32,
    credentials: Option<(u32, u32)>,
) -> Result<tokio::process::Child, String> {
    let mut command = tokio::process::Command::new("pasta");
    command
        .args(["--foreground", "--quiet", "--stderr", "--config-net"])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .arg("--no-map-gw")
        .arg("--netns")
        .arg(format!("/proc/{child_pid}/ns/net"))
        .arg("--userns")
        .arg(format!("/proc/{child_pid}/ns/user"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Quiet, so nothing fills the pipe while it runs; read if it fails to start.
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some((uid, gid)) = credentials {
        command.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe. pasta ends with the thread that started it, should
    // ohd be killed without a chance to stop it.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start pasta for the sandbox's network: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if has_default_route(child_pid) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "pasta could not set up the sandbox's network ({status})"
            ));
        }
        if Instant::now() > deadline {
            return Err("pasta did not set up the sandbox's network within 10 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// pasta reaches out through this machine's own sockets, so any address of this machine other
/// than loopback (a second interface, a bridge, a VPN) would lead back to it, and to ohd if it
/// listens there. Inside the sandbox's network namespace, before the command may run, each such
/// address, and the link-local range where cloud metadata services answer, is made
/// unreachable. The sandbox cannot undo it: it has no capabilities.
async fn fence_off_this_machine(child_pid: u32) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut routes: Vec<String> = this_machines_addresses()
        .into_iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => format!("route add unreachable {v4}/32"),
            std::net::IpAddr::V6(v6) => format!("route add unreachable {v6}/128"),
        })
        .collect();
    routes.push("route add unreachable 169.254.0.0/16".to_owned());
    let as_root = rustix::process::geteuid().is_root();
    let open = |kind: &str| {
        std::fs::File::open(format!("/proc/{child_pid}/ns/{kind}"))
            .map(OwnedFd::from)
            .map_err(|e| format!("the sandbox's {kind} namespace: {e}"))
    };
    let (user, net) = (open("user")?, open("net")?);
    let (user_fd, net_fd) = (user.as_raw_fd(), net.as_raw_fd());
    let mut command = std::process::Command::new("ip");
    command
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setns is async-signal-safe. Root changes the namespace's routes from outside its
    // user namespace; another user enters that user namespace first, where it is root.
    unsafe {
        command.pre_exec(move || {
            if !as_root && libc::setns(user_fd, libc::CLONE_NEWUSER) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(net_fd, libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run ip to fence the sandbox's network: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let script = routes.join("\n") + "\n";
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("fencing the sandbox's network: {e}"))?;
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "fencing the sandbox's network took over 10 s".to_owned())?
        .map_err(|e| format!("fencing the sandbox's network: {e}"))?;
    drop((user, net));
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fencing the sandbox's network failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// This machine's addresses but loopback and IPv6 link-local ones (the sandbox has loopback
/// of its own, and link-local addresses need an interface to mean anything).
fn this_machines_addresses() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases; every
    // address is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut item = list;
        while let Some(entry) = item.as_ref() {
            if let Some(addr) = entry.ifa_addr.as_ref() {
                match i32::from(addr.sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            item = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    });
    found.sort();
    found.dedup();
    found
}

/// Whether the namespace of `pid` has a default route yet: pasta's last step.
fn has_default_route(pid: u32) -> bool {
    let v4 = std::fs::read_to_string(format!("/proc/{pid}/net/route")).unwrap_or_default();
    let v6 = std::fs::read_to_string(format!("/proc/{pid}/net/ipv6_route")).unwrap_or_default();
    v4.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
        || v6
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000000 00") && !l.contains(" lo"))
}

/// The workspace belongs to the sandbox's user, so the agent can write in it. A workspace
/// made before (by ohd as root) is handed over once, whole; symlinks are not followed.
fn give_workspace_to(root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let open_dir = |at: &OwnedFd, name: &std::ffi::CStr| {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let root = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&root)?;
    if stat.st_uid == uid && stat.st_gid == gid {
        return Ok(());
    }
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    // Every step is relative to an open folder and follows no symlink, so a folder swapped for
    // a link while this runs cannot lead it outside; what vanishes meanwhile is skipped.
    let gone = |e: &rustix::io::Errno| {
        matches!(
            *e,
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP
        )
    };
    let mut pending = vec![root.try_clone()?];
    while let Some(dir) = pending.pop() {
        let mut entries = rustix::fs::Dir::read_from(&dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            match rustix::fs::chownat(&dir, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW) {
                Err(e) if gone(&e) => continue,
                other => other?,
            }
            if entry.file_type() == FileType::Directory {
                match open_dir(&dir, name) {
                    Ok(child) => pending.push(child),
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    rustix::fs::fchown(&root, owner.0, owner.1)?;
    // The folder is owner-only, as every folder ohd makes.
    rustix::fs::fchmod(&root, Mode::from_raw_mode(0o700))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn handing_over_a_workspace_never_follows_a_link_out() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (workspace, outside) = (dir.path().join("ws"), dir.path().join("outside"));
        for d in [workspace.join("sub"), outside.clone()] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(outside.join("secret"), "s").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(workspace.join("sub/file"), "f").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&outside, workspace.join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        give_workspace_to(&workspace, 4_000_000, 4_000_000).unwrap_or_else(|e| panic!("{e}"));
        let uid = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.uid()).unwrap_or(1);
        assert_eq!(uid(&workspace.join("sub/file")), 4_000_000);
        assert_eq!(uid(&workspace.join("link")), 4_000_000);
        assert_eq!(uid(&outside), 0);
        assert_eq!(uid(&outside.join("secret")), 0);
    }
}
