//! Where the settings and the user's secrets are kept: an owner-only file in the data folder
//! (one node), or a document in the shared database, so that every node of a cluster sees the
//! same model, keys and tokens.

use ohd_store::DocumentStore;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub enum DocumentPlace {
    File(PathBuf),
    Shared {
        store: Arc<dyn DocumentStore>,
        name: &'static str,
    },
}

impl DocumentPlace {
    /// The document's bytes, `None` when nothing was saved yet.
    pub async fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            DocumentPlace::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            DocumentPlace::Shared { store, name } => store
                .get_document(name)
                .await
                .map(|doc| doc.map(String::into_bytes))
                .map_err(std::io::Error::other),
        }
    }

    /// Replaces the document whole: a file through a private temporary file and a rename, a
    /// shared document in one statement.
    pub async fn write(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        match self {
            DocumentPlace::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    crate::settings::write_atomically(&path, &bytes)
                })
                .await
                .map_err(std::io::Error::other)?
            }
            DocumentPlace::Shared { store, name } => {
                let json = String::from_utf8(bytes).map_err(std::io::Error::other)?;
                store
                    .put_document(name, &json)
                    .await
                    .map_err(std::io::Error::other)
            }
        }
    }

    /// As [`DocumentPlace::write`], only if the document still holds `expected` (`None`: only
    /// if there is none): false when another node changed it since it was read. A file has one
    /// writer, the process that holds its store's lock.
    pub async fn write_if(&self, expected: Option<&[u8]>, bytes: Vec<u8>) -> std::io::Result<bool> {
        match self {
            DocumentPlace::File(_) => self.write(bytes).await.map(|()| true),
            DocumentPlace::Shared { store, name } => {
                let json = String::from_utf8(bytes).map_err(std::io::Error::other)?;
                let expected = expected
                    .map(|e| std::str::from_utf8(e).map_err(std::io::Error::other))
                    .transpose()?;
                store
                    .replace_document(name, expected, &json)
                    .await
                    .map_err(std::io::Error::other)
            }
        }
    }

    /// Another node may change a shared document: callers read it again before changing it.
    pub fn is_shared(&self) -> bool {
        matches!(self, DocumentPlace::Shared { .. })
    }
}

impl std::fmt::Display for DocumentPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocumentPlace::File(path) => write!(f, "{}", path.display()),
            DocumentPlace::Shared { name, .. } => write!(f, "the database's {name} document"),
        }
    }
}
