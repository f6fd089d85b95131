//! The workspace: one folder per conversation, reached only through a directory handle.
//!
//! The agent names files by the path it sees (`/workspace/...` in the sandbox, the folder's
//! real path without one, or relative). [`Workspace::resolve`] maps such a name to a path
//! *relative to the workspace*: lexically (no `..` above the root, no absolute path elsewhere),
//! then through the symlinks it finds, so that in-tree links (relative, or absolute ones naming
//! the workspace) keep working and links that lead out are refused with a clear error.
//!
//! That mapping is not what keeps files inside, because the agent can change the tree between
//! a check and a use (swap a folder for a symlink). What keeps them inside is that every
//! opening goes through [`Workspace::dir`], a `cap_std` directory handle opened once: on Linux
//! each path is resolved by the kernel (`openat2` with `RESOLVE_BENEATH`), so no path through it
//! can leave the folder, whatever the tree looks like at that moment. An attempt to leave fails
//! with an error for which [`is_escape`] is true.

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many symlinks one path may pass through, as the kernel allows (`ELOOP`).
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct Workspace {
    /// The folder on this machine.
    host_root: PathBuf,
    /// The same folder as the agent's shell sees it.
    agent_root: PathBuf,
    /// The folder itself: the only way to its files.
    dir: Arc<Dir>,
    /// Who owns what ohd creates here, when ohd and the agent's shell are different users.
    owner: Option<Owner>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the path {0} is outside the workspace {1}; only files under it can be used")]
    Outside(String, String),
    #[error("the path {0} is not valid")]
    Invalid(String),
}

/// Whether an error from an operation through the handle means the path led out of the
/// workspace (an absolute symlink, or `..` through a symlink, met while resolving it).
pub fn is_escape(e: &io::Error) -> bool {
    // cap-std reports escapes as `PermissionDenied` without an OS error code (`EXDEV` from
    // `openat2`, or its own check on the fallback path); a real `EACCES` carries its code.
    e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none()
}

impl Workspace {
    pub fn new(host_root: PathBuf, agent_root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&host_root)?;
        let host_root = host_root.canonicalize()?;
        let dir = Dir::open_ambient_dir(&host_root, cap_std::ambient_authority())?;
        Ok(Workspace {
            host_root,
            agent_root,
            dir: Arc::new(dir),
            owner: None,
        })
    }

    /// Gives what ohd creates from now on (files, their folders, uploads) to `uid:gid`, so that
    /// the agent's shell, running as that user, can change it.
    pub fn set_owner(&mut self, uid: u32, gid: u32) {
        self.owner = Some(Owner { uid, gid });
    }

    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }

    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    pub fn agent_root(&self) -> &Path {
        &self.agent_root
    }

    /// The workspace folder as a handle: every path given to it is relative to the workspace
    /// and cannot lead out of it.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The path the agent sees for a host path inside the workspace.
    pub fn to_agent(&self, host: &Path) -> PathBuf {
        match host.strip_prefix(&self.host_root) {
            Ok(rest) if rest.as_os_str().is_empty() => self.agent_root.clone(),
            Ok(rest) => self.agent_root.join(rest),
            Err(_) => host.to_owned(),
        }
    }

    /// The path the agent sees for a path relative to the workspace (`.` is the root).
    pub fn agent_path(&self, rel: &Path) -> String {
        if rel == Path::new(".") || rel.as_os_str().is_empty() {
            return self.agent_root.display().to_string();
        }
        self.agent_root.join(rel).display().to_string()
    }

    /// Maps a path given by the agent (absolute in its view, or relative to the workspace) to
    /// a path relative to the workspace (`.` for the root) with the symlinks on its way
    /// replaced by their targets, refusing anything that would leave the workspace. The result
    /// is only ever used through [`Workspace::dir`]: if the tree changes after this, what is
    /// opened may differ, but it is still inside.
    pub fn resolve(&self, given: &str) -> Result<PathBuf, PathError> {
        let lexical = self.lexical(given)?;
        self.follow_links(given, lexical)
    }

    /// The agent's path relative to the root by its text alone (empty for the root), links
    /// not followed: how a path is shown back to the agent.
    pub fn lexical(&self, given: &str) -> Result<PathBuf, PathError> {
        if given.is_empty() || given.contains('\0') {
            return Err(PathError::Invalid(given.to_owned()));
        }
        let given_path = Path::new(given);
        let relative = if given_path.is_absolute() {
            self.strip_root(given_path)
                .ok_or_else(|| self.outside(given))?
        } else {
            given_path.to_owned()
        };
        let mut clean = PathBuf::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !clean.pop() {
                        return Err(self.outside(given));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathError::Invalid(given.to_owned()));
                }
            }
        }
        Ok(clean)
    }

    /// An absolute path in either view, relative to the root; `None` if it is elsewhere.
    fn strip_root(&self, absolute: &Path) -> Option<PathBuf> {
        absolute
            .strip_prefix(&self.agent_root)
            .or_else(|_| absolute.strip_prefix(&self.host_root))
            .ok()
            .map(Path::to_owned)
    }

    /// Walks `lexical` one component at a time through the handle, replacing each symlink by
    /// its target. The part that does not exist yet is kept as written.
    fn follow_links(&self, given: &str, lexical: PathBuf) -> Result<PathBuf, PathError> {
        let mut todo: VecDeque<OsString> = parts(&lexical);
        let mut done = PathBuf::new();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            if part == ".." {
                if !done.pop() {
                    return Err(self.outside(given));
                }
                continue;
            }
            let next = done.join(&part);
            let Ok(meta) = self.dir.symlink_metadata(&next) else {
                // Missing (or not a folder on the way): the rest is a name to create.
                done = next;
                for rest in todo {
                    if rest == ".." {
                        if !done.pop() {
                            return Err(self.outside(given));
                        }
                    } else {
                        done.push(rest);
                    }
                }
                break;
            };
            if !meta.is_symlink() {
                done = next;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(PathError::Invalid(given.to_owned()));
            }
            let target = self
                .dir
                .read_link_contents(&next)
                .map_err(|_| self.outside(given))?;
            if target.is_absolute() {
                // An absolute link names the workspace in one of its views, or leads out.
                let rest = self
                    .strip_root(&target)
                    .ok_or_else(|| self.outside(given))?;
                done = PathBuf::new();
                prepend(&mut todo, &rest);
            } else {
                prepend(&mut todo, &target);
            }
        }
        if done.as_os_str().is_empty() {
            return Ok(PathBuf::from("."));
        }
        Ok(done)
    }

    fn outside(&self, given: &str) -> PathError {
        PathError::Outside(given.to_owned(), self.agent_root.display().to_string())
    }

    // -----------------------------------------------------------------------------------------
    // Opening and creating, all through the handle.

    /// Opens an existing file to read. `O_NONBLOCK` so that a FIFO the agent left does not
    /// hang the caller; callers check that what they opened is a regular file.
    pub fn open_read(&self, rel: &Path) -> io::Result<std::fs::File> {
        let mut options = OpenOptions::new();
        options.read(true).custom_flags(nonblocking());
        Ok(self.dir.open_with(rel, &options)?.into_std())
    }

    /// Opens what is at `rel` to read without following a symlink in its last component (a
    /// symlink fails with `ELOOP`); for walks that must see each entry as it is.
    pub fn open_nofollow(&self, rel: &Path) -> io::Result<std::fs::File> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(nonblocking());
        Ok(self.dir.open_with(rel, &options)?.into_std())
    }

    /// Opens an existing regular file to be rewritten in place, without following a symlink in
    /// its last component out of the workspace (the handle refuses that) and without creating
    /// it. The caller writes the new content and sets the length.
    ///
    /// Rewriting in place (rather than a temporary file renamed over the old one) keeps the
    /// file's inode, so its owner, mode, hard links and extended attributes stay as they were
    /// without ohd having to copy them, which it could not do for the owner unless it runs as
    /// root. What is given up is atomicity: a crash mid-write leaves a partial file.
    pub fn open_rewrite(&self, rel: &Path) -> io::Result<std::fs::File> {
        let mut options = OpenOptions::new();
        options.write(true).custom_flags(nonblocking());
        let file = self.dir.open_with(rel, &options)?.into_std();
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Creates a new file (never an existing one, never through a symlink in its last
    /// component) and the folders above it that are missing, all owned by the owner if set.
    pub fn create_new(&self, rel: &Path) -> io::Result<std::fs::File> {
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dirs(parent)?;
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = self.dir.open_with(rel, &options)?.into_std();
        self.own(&file)?;
        Ok(file)
    }

    /// Makes the folders of `rel` that are missing, one at a time, each given to the owner.
    pub fn create_dirs(&self, rel: &Path) -> io::Result<()> {
        let mut at = PathBuf::new();
        for part in parts(rel) {
            if part == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "`..` in a path",
                ));
            }
            at.push(part);
            match self.dir.create_dir(&at) {
                Ok(()) => {
                    if self.owner.is_some() {
                        self.own(self.open_folder_nofollow(&at)?)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A folder opened to be changed (not `O_PATH`, as `open_dir` does, which `fchown`
    /// refuses), and not through a symlink: only the folder itself is given away.
    fn open_folder_nofollow(&self, rel: &Path) -> io::Result<std::fs::File> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .follow(FollowSymlinks::No)
            .maybe_dir(true)
            .custom_flags(rustix::fs::OFlags::DIRECTORY.bits() as i32);
        Ok(self.dir.open_with(rel, &options)?.into_std())
    }

    /// A new empty file in the workspace's root with a hidden name of its own, for content
    /// that is put in place later with [`Workspace::place`]. Staging inside the workspace
    /// keeps the final move a rename within one folder tree, through the handle.
    pub fn create_temp(&self, what: &str) -> io::Result<(PathBuf, std::fs::File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = PathBuf::from(format!(".ohd-{what}-{}-{n}", std::process::id()));
            match self.create_new(&name) {
                Ok(file) => return Ok((name, file)),
                // Left by an earlier ohd with the same process id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves `from` to `to` (both relative), making `to`'s missing folders. An existing file at
    /// `to` is replaced; an existing folder is not.
    pub fn place(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.create_dirs(parent)?;
        }
        self.dir.rename(from, &self.dir, to)
    }

    fn own(&self, fd: impl rustix::fd::AsFd) -> io::Result<()> {
        let Some(owner) = self.owner else {
            return Ok(());
        };
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        )?;
        Ok(())
    }
}

/// `O_NONBLOCK`, as `custom_flags` takes it.
fn nonblocking() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// A path's components as names, `..` kept, `.` and roots dropped.
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Puts `path`'s components in front of what is left to walk.
fn prepend(todo: &mut VecDeque<OsString>, path: &Path) {
    for part in parts(path).into_iter().rev() {
        todo.push_front(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"), PathBuf::from("/workspace")).unwrap();
        (dir, ws)
    }

    #[test]
    fn paths_inside_resolve_from_either_view_and_relative() {
        let (_dir, ws) = workspace();
        let root = ws.host_root().to_owned();
        assert_eq!(
            ws.resolve("/workspace/a/b.txt").unwrap(),
            PathBuf::from("a/b.txt")
        );
        assert_eq!(ws.resolve("a/./b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(ws.resolve("a/../b.txt").unwrap(), PathBuf::from("b.txt"));
        let host_view = root.join("c.txt");
        assert_eq!(
            ws.resolve(host_view.to_str().unwrap()).unwrap(),
            PathBuf::from("c.txt")
        );
        assert_eq!(ws.resolve("/workspace").unwrap(), PathBuf::from("."));
        assert_eq!(
            ws.to_agent(&root.join("x/y")),
            PathBuf::from("/workspace/x/y")
        );
        assert_eq!(ws.agent_path(Path::new("x/y")), "/workspace/x/y");
        assert_eq!(ws.agent_path(Path::new(".")), "/workspace");
    }

    #[test]
    fn dot_dot_absolute_and_symlink_escapes_are_refused() {
        let (dir, ws) = workspace();
        for bad in [
            "../secret",
            "/workspace/../etc/passwd",
            "/etc/passwd",
            "a/../../x",
        ] {
            assert!(
                matches!(ws.resolve(bad), Err(PathError::Outside(..))),
                "{bad}"
            );
        }
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, ws.host_root().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), ws.host_root().join("file-link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.join("nowhere"), ws.host_root().join("dangling"))
            .unwrap();
        std::os::unix::fs::symlink("../outside", ws.host_root().join("relative-link")).unwrap();
        for bad in [
            "link/secret",
            "/workspace/link/new.txt",
            "file-link",
            "dangling",
            "relative-link/secret",
        ] {
            assert!(
                matches!(ws.resolve(bad), Err(PathError::Outside(..))),
                "{bad}"
            );
            // The handle refuses the same paths taken as written, which is what holds when
            // the tree changes between `resolve` and the use.
            let as_written = ws.lexical(bad).unwrap();
            let err = ws.open_read(&as_written).unwrap_err();
            assert!(is_escape(&err), "{bad}: {err}");
        }
        let err = ws.create_new(Path::new("link/new.txt")).unwrap_err();
        assert!(is_escape(&err), "{err}");
        assert!(!outside.join("new.txt").exists());
        std::os::unix::fs::symlink(ws.host_root().join("inner"), ws.host_root().join("ok-link"))
            .unwrap();
        std::fs::create_dir_all(ws.host_root().join("inner")).unwrap();
        assert!(ws.resolve("ok-link/file").is_ok());
    }

    #[test]
    fn links_inside_are_followed_to_where_they_lead() {
        let (_dir, ws) = workspace();
        let root = ws.host_root().to_owned();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real/sub", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/workspace/real", root.join("agent-view")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("host-view")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("real/sub/up")).unwrap();
        assert_eq!(ws.resolve("rel/f").unwrap(), PathBuf::from("real/sub/f"));
        assert_eq!(ws.resolve("agent-view/x").unwrap(), PathBuf::from("real/x"));
        assert_eq!(ws.resolve("host-view").unwrap(), PathBuf::from("real"));
        assert_eq!(ws.resolve("rel/up/rel").unwrap(), PathBuf::from("real/sub"));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(matches!(ws.resolve("loop"), Err(PathError::Invalid(_))));
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn what_ohd_creates_goes_to_the_owner_and_a_rewrite_keeps_owner_and_mode() {
        let (_dir, mut ws) = workspace();
        let root = ws.host_root().to_owned();
        // Without an owner: ohd's own user, as before.
        drop(ws.create_new(Path::new("mine.txt")).unwrap());
        let me = std::fs::metadata(root.join("mine.txt")).unwrap();
        assert_eq!(me.uid(), rustix::process::geteuid().as_raw());
        if !is_root() {
            eprintln!("not root: giving files away cannot be tested here");
            return;
        }
        ws.set_owner(4242, 4343);
        drop(ws.create_new(Path::new("a/b/c.txt")).unwrap());
        for made in ["a", "a/b", "a/b/c.txt"] {
            let meta = std::fs::metadata(root.join(made)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{made}");
        }
        let (temp, _file) = ws.create_temp("upload").unwrap();
        ws.place(&temp, Path::new("up/loaded.txt")).unwrap();
        for made in ["up", "up/loaded.txt"] {
            let meta = std::fs::metadata(root.join(made)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{made}");
        }
        // An existing file keeps its owner and mode when rewritten.
        std::fs::write(root.join("theirs.sh"), "old").unwrap();
        std::os::unix::fs::chown(root.join("theirs.sh"), Some(777), Some(778)).unwrap();
        std::fs::set_permissions(
            root.join("theirs.sh"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        let mut file = ws.open_rewrite(Path::new("theirs.sh")).unwrap();
        std::io::Write::write_all(&mut file, b"new").unwrap();
        let meta = std::fs::metadata(root.join("theirs.sh")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (777, 778));
        assert_eq!(meta.permissions().mode() & 0o777, 0o751);
        assert_eq!(
            std::fs::read_to_string(root.join("theirs.sh")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_rewrite_or_create_never_follows_a_link_out_and_a_fifo_does_not_hang() {
        let (dir, ws) = workspace();
        let root = ws.host_root().to_owned();
        let outside = dir.path().join("target.txt");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        assert!(is_escape(&ws.open_rewrite(Path::new("out")).unwrap_err()));
        assert!(ws.create_new(Path::new("out")).is_err());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let read = ws.open_read(Path::new("fifo")).unwrap();
        assert!(!read.metadata().unwrap().is_file());
        assert!(ws.open_rewrite(Path::new("fifo")).is_err());
        assert!(ws.open_nofollow(Path::new("out")).is_err());
    }
}
