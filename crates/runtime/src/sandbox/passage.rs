//! Where the sandbox's user can reach what it is handed.
//!
//! When ohd runs as root, bubblewrap runs as the conversation's unprivileged user, and
//! bubblewrap resolves even a descriptor it is handed (`--bind-fd`) back to a path and walks it
//! as that user. ohd's data folder is owner-only (and the default one lies under `/root`), so
//! the workspace and the system layer are mounted, for one spawn, in a folder that user can walk
//! to: `<base>/<random>/`, under a root-owned base that others may cross but not list
//! (`/run/ohd/<instance>`). The folder and its mounts go when the spawn's sandbox ends.

use std::path::{Path, PathBuf};

/// Gives this process a mount namespace of its own, where the mounts of passages and system
/// layers live: they are then gone with ohd however it ends (even `kill -9`), with the loop
/// devices of their images, instead of piling up on the host. Mounts of the host still reach
/// ohd (slave propagation); ohd's never reach the host. Root only, and before any thread is
/// started (the kernel refuses a threaded process its own mount namespace).
pub fn private_mounts() -> std::io::Result<()> {
    // SAFETY: only the mount namespace (and with it the file-system context) is unshared, not
    // the descriptor table, so no descriptor is made unusable on another thread.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// One spawn's folder of mounts; unmounted and removed when dropped.
#[derive(Debug)]
pub struct Passage {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

/// The base folder for this ohd's passages, owned by root, crossable by all, listable by none.
/// Whatever a killed ohd left there is detached and removed.
pub fn prepare_base(base: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent)?;
        let meta = std::fs::symlink_metadata(parent)?;
        if !meta.is_dir() || meta.uid() != 0 {
            return Err(std::io::Error::other(format!(
                "{} must be a folder owned by root",
                parent.display()
            )));
        }
        std::fs::set_permissions(parent, PermissionsExt::from_mode(0o711))?;
    }
    super::layer::detach_under(base);
    match std::fs::remove_dir_all(base) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir(base)?;
    std::fs::set_permissions(base, PermissionsExt::from_mode(0o711))
}

impl Passage {
    /// A fresh folder under `base`, named so that nobody can guess it.
    pub fn new(base: &Path) -> std::io::Result<Passage> {
        use std::os::unix::fs::PermissionsExt;
        let mut name = String::with_capacity(32);
        for _ in 0..2 {
            name.push_str(&format!("{:016x}", random_u64()?));
        }
        let dir = base.join(name);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o711))?;
        Ok(Passage {
            dir,
            mounts: Vec::new(),
        })
    }

    /// A mount point in the passage (created empty).
    pub fn point(&self, name: &str) -> std::io::Result<PathBuf> {
        let point = self.dir.join(name);
        std::fs::create_dir_all(&point)?;
        Ok(point)
    }

    /// Records a mount made at `point`, to be detached with the passage.
    pub fn mounted(&mut self, point: PathBuf) {
        self.mounts.push(point);
    }

    /// `source` bound at `name` in the passage; the bind does not follow into mounts below
    /// it and does not propagate anywhere.
    pub fn bind(&mut self, source: &Path, name: &str) -> std::io::Result<PathBuf> {
        let point = self.point(name)?;
        rustix::mount::mount_bind(source, &point)?;
        self.mounted(point.clone());
        rustix::mount::mount_change(&point, rustix::mount::MountPropagationFlags::PRIVATE)?;
        Ok(point)
    }
}

impl Drop for Passage {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
        }
        // Only empty mount points are left; remove_dir never follows into anything else.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn random_u64() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    Ok(u64::from_ne_bytes(bytes))
}
