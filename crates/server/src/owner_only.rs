//! The data directory is its owner's alone: the store holds every conversation, and
//! `settings.json` an API key. Modes are set where ohd creates each thing, not with a umask,
//! which would also apply to the files the agent's commands create in the workspaces; and
//! tightened at start, for data directories made by earlier versions.

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `path` (and any missing parent) if needed, and makes it owner-only. Parents are left
/// as they are: they may be the user's own folders.
pub fn dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Creates an empty `path` owner-only if it does not exist, or makes it owner-only if it does.
/// SQLite accepts an empty file as a new database and gives its `-wal` and `-shm` files the
/// database file's mode, so creating it first is what keeps those private too.
pub fn file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
}

/// Makes `path` owner-only if it exists.
pub fn existing_file(path: &Path) -> io::Result<()> {
    match std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_and_tightens_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("a/b");
        dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let db = data.join("ohd.db");
        file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        dir(&data).unwrap();
        file(&db).unwrap();
        assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
        existing_file(&data.join("missing")).unwrap();
        assert!(!data.join("missing").exists());
    }
}
