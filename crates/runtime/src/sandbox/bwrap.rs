//! The sandbox's policy as bubblewrap arguments. Pure: what each flag is for is said here, and
//! the list is tested without running anything.

use super::SANDBOX_WORKSPACE;
use super::layer::LAYERED;
use super::spawn::{BLOCK_FD, CLONE3_FILTER_FD, INFO_FD, SECCOMP_FD, WORKSPACE_FD, layer_fd};
use std::ffi::OsString;
use std::path::PathBuf;

/// System folders mounted read-only inside the sandbox; anything else (home folders, `/var`,
/// `/srv`, `/mnt`, `/sys`) is not there at all.
const SYSTEM_DIRS: [&str; 7] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"];

pub struct Policy<'a> {
    pub user_namespace: bool,
    pub seccomp: bool,
    /// The network namespace gets pasta attached: bubblewrap says which process to attach to
    /// and waits for the go-ahead before running the command.
    pub pasta: bool,
    pub tmp_bytes: u64,
    pub hidden: &'a [PathBuf],
    /// The system folders come from the writable layer, handed over as descriptors.
    pub layered: bool,
    /// What the host's root keeps to itself under the layered folders (file, or folder).
    pub secrets: &'a [(PathBuf, bool)],
}

/// bubblewrap's arguments up to and including `--`; the command follows.
pub fn arguments(policy: &Policy<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["--die-with-parent"]);
    if policy.user_namespace {
        // Root inside, the sandbox's unprivileged user outside. Nested user namespaces, which
        // would hand the command a fresh set of capabilities, are refused by the seccomp filter.
        push(&["--unshare-user", "--uid", "0", "--gid", "0"]);
    }
    push(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        // Always a network namespace of its own: empty, or with pasta's interface.
        "--unshare-net",
        // bubblewrap keeps every capability for a command it runs as root unless told.
        "--cap-drop",
        "ALL",
        "--hostname",
        "workspace",
    ]);
    if policy.layered {
        for dir in LAYERED {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(dir) {
                        args.push("--symlink".into());
                        args.push(target.into_os_string());
                        args.push(dir.into());
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    // Handed over as a descriptor: the sandbox's user cannot walk into ohd's
                    // data folder by path.
                    args.push("--bind-fd".into());
                    args.push(layer_fd(dir).to_string().into());
                    args.push(dir.into());
                }
                _ => {}
            }
        }
        // The layer shows the host's root as the sandbox's: what that root keeps to itself is
        // covered.
        for (secret, is_dir) in policy.secrets {
            cover(&mut args, secret, *is_dir);
        }
    } else {
        for dir in SYSTEM_DIRS {
            push(&["--ro-bind-try", dir, dir]);
        }
    }
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    // bubblewrap mounts /proc/sys, /proc/sysrq-trigger, /proc/irq and /proc/bus read-only over
    // its new /proc.
    // The rest of /proc is read-only too (a process's own knobs such as `oom_score_adj`).
    push(&["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev"]);
    // Every tmpfs has a size (`--size` applies to the next one only): tmpfs memory is the
    // host's, and no rlimit counts it.
    let tmp_bytes = policy.tmp_bytes.to_string();
    push(&[
        "--size",
        &tmp_bytes,
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
    ]);
    push(&["--size", &tmp_bytes, "--tmpfs", "/tmp"]);
    push(&["--size", &tmp_bytes, "--tmpfs", "/run"]);
    // Where installers and tools log and keep scratch files, bounded like /tmp.
    push(&["--size", &tmp_bytes, "--tmpfs", "/var/log"]);
    push(&["--size", &tmp_bytes, "--tmpfs", "/var/tmp"]);
    // Anything of ohd's that lies under a mounted system folder is covered over
    // (a folder by an empty one, a file such as a config.toml with keys by the null device).
    for hidden in policy.hidden {
        if SYSTEM_DIRS
            .iter()
            .chain(LAYERED.iter())
            .any(|d| hidden.starts_with(d))
        {
            // Nothing there, nothing to cover.
            if let Ok(meta) = std::fs::symlink_metadata(hidden) {
                cover(&mut args, hidden, meta.is_dir());
            }
        }
    }
    let fd = |n: i32| n.to_string();
    let (workspace, seccomp, clone3, info, block) = (
        fd(WORKSPACE_FD),
        fd(SECCOMP_FD),
        fd(CLONE3_FILTER_FD),
        fd(INFO_FD),
        fd(BLOCK_FD),
    );
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        "--bind-fd",
        &workspace,
        SANDBOX_WORKSPACE,
        "--chdir",
        SANDBOX_WORKSPACE,
    ]);
    if policy.seccomp {
        push(&["--add-seccomp-fd", &seccomp, "--add-seccomp-fd", &clone3]);
    }
    if policy.pasta {
        push(&["--info-fd", &info, "--block-fd", &block]);
    }
    // bubblewrap's own root is a tmpfs too: read-only once everything is mounted on it.
    push(&["--remount-ro", "/", "--"]);
    args
}

/// Covers `path` in the sandbox: a folder by an empty one (small: tmpfs memory is the host's
/// and no rlimit counts it), a file by the null device (which cannot be opened on these
/// `nodev` mounts).
fn cover(args: &mut Vec<OsString>, path: &std::path::Path, is_dir: bool) {
    if is_dir {
        args.extend(["--size".into(), "4096".into(), "--tmpfs".into()]);
    } else {
        args.extend(["--ro-bind".into(), "/dev/null".into()]);
    }
    args.push(path.as_os_str().to_owned());
}

/// What a probe's sandbox has in common with and without a user namespace: it runs `true`.
const PROBE: [&str; 11] = [
    "--unshare-pid",
    "--unshare-net",
    "--cap-drop",
    "ALL",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--",
    "true",
];

/// A sandbox with a user namespace, as commands get it, running `true`.
pub fn user_namespace_probe() -> Vec<&'static str> {
    let mut args = vec!["--unshare-user", "--uid", "0", "--gid", "0"];
    args.extend(PROBE);
    args
}

/// The same without a user namespace, which only root can make.
pub fn root_probe() -> Vec<&'static str> {
    PROBE.to_vec()
}

/// Whether bubblewrap runs `args` successfully here, as `user` when given. Running it is the
/// only reliable test: containers and hardened kernels refuse namespaces in many ways.
pub fn probe(args: &[&str], user: Option<(u32, u32)>) -> bool {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("bwrap");
    command
        .args(args)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command.status().is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(policy: &Policy<'_>) -> Vec<String> {
        arguments(policy)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn has(args: &[String], window: &[&str]) -> bool {
        args.windows(window.len())
            .any(|w| w.iter().zip(window).all(|(a, b)| a == b))
    }

    #[test]
    fn the_full_sandbox_drops_capabilities_in_its_own_namespaces() {
        let hidden = vec![
            PathBuf::from("/etc/apt"),
            PathBuf::from("/root/data"),
            PathBuf::from("/etc/hostname"),
        ];
        let args = strings(&Policy {
            user_namespace: true,
            seccomp: true,
            pasta: true,
            tmp_bytes: 1024,
            hidden: &hidden,
            layered: false,
            secrets: &[],
        });
        for window in [
            &["--unshare-user", "--uid", "0", "--gid", "0"][..],
            &["--unshare-net"],
            &["--unshare-pid"],
            &["--cap-drop", "ALL"],
            &["--size", "1024", "--tmpfs", "/tmp"],
            &["--size", "1024", "--tmpfs", "/run"],
            &[
                "--size",
                "1024",
                "--tmpfs",
                "/dev/shm",
                "--remount-ro",
                "/dev",
            ],
            &["--remount-ro", "/", "--"],
            &["--tmpfs", "/etc/apt"],
            // A file, such as a config.toml that holds a key.
            &["--ro-bind", "/dev/null", "/etc/hostname"],
            &["--bind-fd", "3", "/workspace"],
            &["--add-seccomp-fd", "4", "--add-seccomp-fd", "7"],
            &["--info-fd", "5", "--block-fd", "6"],
            &["--ro-bind-try", "/usr", "/usr"],
        ] {
            assert!(has(&args, window), "{window:?} in {args:?}");
        }
        // Folders outside the system ones are simply not mounted.
        assert!(!args.iter().any(|a| a == "/root/data"));
        assert!(!args.iter().any(|a| a == "--bind" || a == "/sys"));
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }

    #[test]
    fn without_a_user_namespace_or_network_those_parts_are_left_out() {
        let args = strings(&Policy {
            user_namespace: false,
            seccomp: true,
            pasta: false,
            tmp_bytes: 1,
            hidden: &[],
            layered: false,
            secrets: &[],
        });
        assert!(!has(&args, &["--unshare-user"]));
        assert!(!has(&args, &["--info-fd"]));
        assert!(has(&args, &["--unshare-net"]));
        assert!(has(&args, &["--cap-drop", "ALL"]));
    }
}
