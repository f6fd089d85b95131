//! The workspace: one folder per conversation. The agent names files by the path it sees
//! (`/workspace/...` in the sandbox, the folder's real path without one); every such path is
//! checked to stay inside the folder, through `..` and through symlinks alike.

use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Workspace {
    /// The folder on this machine.
    host_root: PathBuf,
    /// The same folder as the agent's shell sees it.
    agent_root: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the path {0} is outside the workspace {1}; only files under it can be used")]
    Outside(String, String),
    #[error("the path {0} is not valid")]
    Invalid(String),
}

impl Workspace {
    pub fn new(host_root: PathBuf, agent_root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&host_root)?;
        Ok(Workspace {
            host_root: host_root.canonicalize()?,
            agent_root,
        })
    }

    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    pub fn agent_root(&self) -> &Path {
        &self.agent_root
    }

    /// The path the agent sees for a host path inside the workspace.
    pub fn to_agent(&self, host: &Path) -> PathBuf {
        match host.strip_prefix(&self.host_root) {
            Ok(rest) if rest.as_os_str().is_empty() => self.agent_root.clone(),
            Ok(rest) => self.agent_root.join(rest),
            Err(_) => host.to_owned(),
        }
    }

    /// Maps a path given by the agent (absolute in its view, or relative to the workspace) to
    /// the host path, refusing anything that would leave the workspace.
    pub fn resolve(&self, given: &str) -> Result<PathBuf, PathError> {
        if given.is_empty() || given.contains('\0') {
            return Err(PathError::Invalid(given.to_owned()));
        }
        let given_path = Path::new(given);
        let relative = if given_path.is_absolute() {
            if let Ok(rest) = given_path.strip_prefix(&self.agent_root) {
                rest.to_owned()
            } else if let Ok(rest) = given_path.strip_prefix(&self.host_root) {
                rest.to_owned()
            } else {
                return Err(self.outside(given));
            }
        } else {
            given_path.to_owned()
        };
        // Lexical check: no component may climb above the root.
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
        let host = self.host_root.join(&clean);
        // Symlink check: the deepest part of the path that exists must resolve inside.
        let mut existing = host.as_path();
        loop {
            match existing.canonicalize() {
                Ok(real) => {
                    if real.starts_with(&self.host_root) {
                        break;
                    }
                    return Err(self.outside(given));
                }
                Err(_) => match existing.parent() {
                    Some(parent) => existing = parent,
                    None => return Err(self.outside(given)),
                },
            }
        }
        // A dangling symlink at the end would be followed by a write: refuse it too.
        if let Ok(meta) = std::fs::symlink_metadata(&host)
            && meta.file_type().is_symlink()
            && host.canonicalize().is_err()
        {
            return Err(self.outside(given));
        }
        Ok(host)
    }

    fn outside(&self, given: &str) -> PathError {
        PathError::Outside(given.to_owned(), self.agent_root.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            root.join("a/b.txt")
        );
        assert_eq!(ws.resolve("a/./b.txt").unwrap(), root.join("a/b.txt"));
        assert_eq!(ws.resolve("a/../b.txt").unwrap(), root.join("b.txt"));
        let host_view = root.join("c.txt");
        assert_eq!(ws.resolve(host_view.to_str().unwrap()).unwrap(), host_view);
        assert_eq!(ws.resolve("/workspace").unwrap(), root);
        assert_eq!(
            ws.to_agent(&root.join("x/y")),
            PathBuf::from("/workspace/x/y")
        );
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
        for bad in [
            "link/secret",
            "/workspace/link/new.txt",
            "file-link",
            "dangling",
        ] {
            assert!(
                matches!(ws.resolve(bad), Err(PathError::Outside(..))),
                "{bad}"
            );
        }
        std::os::unix::fs::symlink(ws.host_root().join("inner"), ws.host_root().join("ok-link"))
            .unwrap();
        std::fs::create_dir_all(ws.host_root().join("inner")).unwrap();
        assert!(ws.resolve("ok-link/file").is_ok());
    }
}
