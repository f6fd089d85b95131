//! The writable system layer: the sandbox sees the system folders (`/usr`, `/etc`, dpkg's and
//! apt's state, ...) through an overlay whose upper folder belongs to the conversation, so
//! `apt-get install`, `dpkg -i`, `pip install` and `npm install -g` work inside and change
//! nothing on the host. The layer stays on disk across idle releases and restarts and goes
//! with the conversation.
//!
//! The host's system files belong to the host's root, a user the sandbox's user namespace
//! does not map, so inside they would belong to nobody and could not be changed. Each folder
//! is therefore first cloned as an *idmapped* mount (kernel 5.12+) that shows the host's root
//! as the sandbox's user, read-only, and the overlay (idmapped lower layers need 5.19+) is
//! mounted over that. Making idmapped mounts takes root, so only ohd running as root offers
//! the layer; it is decided once at start by trying it.
//!
//! Through the idmapped view, files the host's root keeps to itself (`/etc/shadow`, private
//! keys) would belong to the sandbox's root: [`secrets`] finds them so the sandbox covers them.
//!
//! No crate wraps `open_tree`, `mount_setattr` and `move_mount` yet (rustix has `mount`
//! and `open_tree` but not `mount_setattr`'s idmap), so the three calls are made here.

use super::passage::Passage;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// System folders the layer covers, when they are folders here (a symlink, as `/bin` to
/// `usr/bin` on merged-/usr systems, is recreated as the same symlink).
pub const LAYERED: [&str; 12] = [
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/opt",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/cache/apt",
    "/var/cache/debconf",
];

/// A conversation's layer folder: `<sandboxes>/<conversation>`.
#[derive(Debug, Clone)]
pub struct LayerDirs {
    pub root: PathBuf,
    /// What the sandbox may write into the layer.
    pub limit_bytes: u64,
}

/// Each layered folder's name in the layer's folders: `/var/lib/dpkg` -> `var-lib-dpkg`.
pub fn slot(dir: &str) -> String {
    dir.trim_start_matches('/').replace('/', "-")
}

impl LayerDirs {
    pub fn new(root: PathBuf, limit_bytes: u64) -> Self {
        LayerDirs { root, limit_bytes }
    }

    /// What the sandbox wrote, when the layer is plain folders (without an image).
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The file system image the layer lives in, which holds it to its size.
    pub fn image(&self) -> PathBuf {
        self.root.join("layer.ext4")
    }

    fn work(&self, dir: &str) -> PathBuf {
        self.root.join("work").join(slot(dir))
    }
}

/// A user namespace mapping 0 to `owner`: what the idmapped mounts show the host's root as.
/// Made by a short-lived child that enters a new user namespace and waits; its maps are
/// written from here (root may map any id).
fn idmap_namespace(owner: (u32, u32)) -> std::io::Result<OwnedFd> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("sleep");
    command
        .arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let result = (|| {
        let pid = child.id();
        // The child has unshared once it has exec'd; its namespace differs from ours then.
        let ours = std::fs::read_link("/proc/self/ns/user")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/user"))? == ours {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "the id-mapping namespace did not appear",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {} 1\n", owner.0))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {} 1\n", owner.1))?;
        let file = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(file))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// `source` cloned, read-only, with the host's root shown as the namespace's 0, at `target`.
fn idmapped_clone(source: &Path, target: &Path, namespace: &OwnedFd) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let source = c_path(source)?;
    let target = c_path(target)?;
    let empty = c"";
    // SAFETY: plain system calls with valid NUL-terminated strings and a live struct; the
    // returned descriptor is owned at once.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if tree < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tree = OwnedFd::from_raw_fd(tree as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: namespace.as_raw_fd() as u64,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An overlay of `upper` over `lower` at `merged`, without set-user-id programs or devices.
fn overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> std::io::Result<()> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    rustix::mount::mount(
        "overlay",
        merged,
        "overlay",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        Some(c_path(Path::new(&options))?.as_c_str()),
    )?;
    Ok(())
}

fn owned_dir(path: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
}

/// Where the layer's upper and work folders live: an ext4 image of the layer's size limit,
/// loop-mounted in the passage, so that writing past the limit fails with "No space left on
/// device"; plain folders in the layer's folder where loop devices cannot be had (the size is
/// then only checked after commands).
fn store(dirs: &LayerDirs, passage: &mut Passage) -> std::io::Result<PathBuf> {
    let image = dirs.image();
    if !image.exists()
        && let Err(e) = make_image(&image, dirs.limit_bytes)
    {
        let _ = std::fs::remove_file(&image);
        return Err(e);
    }
    let point = passage.point("store")?;
    let status = std::process::Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
        .arg(&image)
        .arg(&point)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "mounting the layer's image failed ({status})"
        )));
    }
    passage.mounted(point.clone());
    Ok(point)
}

/// A sparse ext4 image of `bytes`, its blocks written only as the layer grows.
fn make_image(image: &Path, bytes: u64) -> std::io::Result<()> {
    let file = std::fs::File::create(image)?;
    file.set_len(bytes)?;
    drop(file);
    let status = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "mkfs.ext4 failed ({status})"
        )))
    }
}

/// Mounts the layer for a sandbox running as `owner`, in `passage` (where the sandbox's user
/// can reach it); the mounts go with the passage. Returns where each layered folder is.
pub fn mount(
    dirs: &LayerDirs,
    owner: (u32, u32),
    passage: &mut Passage,
) -> std::io::Result<Vec<(&'static str, PathBuf)>> {
    let namespace = idmap_namespace(owner)?;
    owned_dir(&dirs.root, owner)?;
    std::fs::set_permissions(
        &dirs.root,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let store = match store(dirs, passage) {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!(error = %e, "the system layer's size is not enforced: plain folders");
            dirs.root.clone()
        }
    };
    let mut merged_dirs = Vec::new();
    for dir in LAYERED {
        let host = Path::new(dir);
        let Ok(meta) = std::fs::symlink_metadata(host) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let (upper, work) = (
            store.join("upper").join(slot(dir)),
            store.join("work").join(slot(dir)),
        );
        owned_dir(&upper, owner)?;
        owned_dir(&work, owner)?;
        let lower = passage.point(&format!("lower-{}", slot(dir)))?;
        idmapped_clone(host, &lower, &namespace)?;
        passage.mounted(lower.clone());
        let merged = passage.point(&format!("layer-{}", slot(dir)))?;
        overlay(&lower, &upper, &work, &merged)?;
        passage.mounted(merged.clone());
        merged_dirs.push((dir, merged));
    }
    Ok(merged_dirs)
}

/// Detaches every mount at or under `root` (deepest first): what a killed ohd left behind.
pub fn detach_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Whether the layer works here: root, and a kernel with idmapped overlay layers. Tried on a
/// scratch folder under `sandboxes` with `/etc`.
pub fn supported(sandboxes: &Path, owner: (u32, u32)) -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("only ohd running as root can make the idmapped mounts it needs".to_owned());
    }
    let scratch = LayerDirs::new(sandboxes.join(".probe"), 0);
    let result = (|| -> std::io::Result<()> {
        let namespace = idmap_namespace(owner)?;
        let lower = scratch.root.join("lower");
        let upper = scratch.upper().join("etc");
        let (work, merged) = (scratch.work("/etc"), scratch.root.join("merged"));
        for dir in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(dir)?;
        }
        idmapped_clone(Path::new("/etc"), &lower, &namespace)?;
        overlay(&lower, &upper, &work, &merged)
    })();
    detach_under(&scratch.root);
    let _ = std::fs::remove_dir_all(&scratch.root);
    result.map_err(|e| format!("the kernel refused an idmapped overlay ({e})"))
}

/// Files and folders under `dir` that only the host's root, or its group, may read: the layer
/// shows root's user and group as the sandbox's own, so the sandbox covers these. Folders
/// others cannot cross are not entered (the sandbox could not reach into them anyway), and
/// empty files (lock files such as dpkg's, which must stay usable) hold nothing to hide.
pub fn secrets(dir: &Path) -> Vec<(PathBuf, bool)> {
    use std::os::unix::fs::MetadataExt;
    let private_to_root = |meta: &std::fs::Metadata| {
        let mode = meta.mode();
        let others_read = mode & 0o004 != 0;
        let owner_read = meta.uid() == 0 && mode & 0o400 != 0;
        let group_read = meta.gid() == 0 && mode & 0o040 != 0;
        !others_read && (owner_read || group_read)
    };
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() || (meta.is_file() && meta.len() == 0) {
                continue;
            }
            if private_to_root(&meta) {
                found.push((path, meta.is_dir()));
            } else if meta.is_dir() && meta.mode() & 0o001 != 0 {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Bytes the sandbox has written into its layer, when it lives in plain folders; `None` when
/// it lives in an image, which holds it to its size itself.
pub fn size(dirs: &LayerDirs) -> Option<u64> {
    if dirs.image().exists() {
        return None;
    }
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dirs.upper()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_have_flat_slots() {
        assert_eq!(slot("/var/lib/dpkg"), "var-lib-dpkg");
        let dirs = LayerDirs::new(PathBuf::from("/d/sandboxes/c1"), 1);
        assert_eq!(dirs.image(), PathBuf::from("/d/sandboxes/c1/layer.ext4"));
        assert_eq!(dirs.upper(), PathBuf::from("/d/sandboxes/c1/upper"));
    }

    #[test]
    fn secrets_are_root_owned_entries_others_cannot_read() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let public = dir.path().join("public");
        let hidden = dir.path().join("public/key");
        std::fs::create_dir_all(&public).unwrap_or_default();
        std::fs::write(&hidden, "k").unwrap_or_default();
        std::fs::set_permissions(&public, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_default();
        std::fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_default();
        // Readable by root's group only: the layer maps that group too.
        let group = dir.path().join("public/group-only");
        std::fs::write(&group, "g").unwrap_or_default();
        std::fs::set_permissions(&group, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap_or_default();
        // An empty lock file hides nothing and must stay usable.
        let lock = dir.path().join("public/lock");
        std::fs::write(&lock, "").unwrap_or_default();
        std::fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_default();
        assert_eq!(secrets(dir.path()), vec![(group, false), (hidden, false)]);
    }
}
