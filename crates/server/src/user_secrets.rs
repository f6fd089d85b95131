//! The user's provider tokens and custom secrets, set from the web UI's Git and Secrets settings
//! tabs and kept in `<data_dir>/secrets.json` (the owner's only, like `settings.json`). Values
//! are write-only: nothing returns them; the agent's shell gets them, and every event hides them.

use crate::auth::Secret;
use crate::documents::DocumentPlace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;

/// The providers the original knows, by their `providers_set` name, and the shell variable
/// that carries each one's token.
pub const PROVIDERS: [(&str, &str); 5] = [
    ("github", "GITHUB_TOKEN"),
    ("gitlab", "GITLAB_TOKEN"),
    ("bitbucket", "BITBUCKET_TOKEN"),
    ("azure_devops", "AZURE_DEVOPS_TOKEN"),
    ("forgejo", "FORGEJO_TOKEN"),
];

/// A provider's token, with the host of a self-hosted server when there is one.
#[derive(Clone)]
pub struct ProviderToken {
    pub token: Secret,
    pub host: Option<String>,
}

#[derive(Clone)]
pub struct CustomSecret {
    pub value: Secret,
    pub description: String,
}

#[derive(Clone, Default)]
pub struct UserSecrets {
    pub provider_tokens: BTreeMap<String, ProviderToken>,
    pub custom_secrets: BTreeMap<String, CustomSecret>,
}

#[derive(Serialize, Deserialize, Default)]
struct OnDisk {
    #[serde(default)]
    provider_tokens: BTreeMap<String, TokenOnDisk>,
    #[serde(default)]
    custom_secrets: BTreeMap<String, SecretOnDisk>,
}

#[derive(Serialize, Deserialize)]
struct TokenOnDisk {
    token: String,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SecretOnDisk {
    secret: String,
    #[serde(default)]
    description: String,
}

impl UserSecrets {
    fn from_disk(disk: OnDisk) -> Self {
        UserSecrets {
            provider_tokens: disk
                .provider_tokens
                .into_iter()
                .map(|(name, t)| {
                    (
                        name,
                        ProviderToken {
                            token: Secret::new(t.token),
                            host: t.host,
                        },
                    )
                })
                .collect(),
            custom_secrets: disk
                .custom_secrets
                .into_iter()
                .map(|(name, s)| {
                    (
                        name,
                        CustomSecret {
                            value: Secret::new(s.secret),
                            description: s.description,
                        },
                    )
                })
                .collect(),
        }
    }

    fn to_disk(&self) -> OnDisk {
        OnDisk {
            provider_tokens: self
                .provider_tokens
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        TokenOnDisk {
                            token: t.token.expose().to_owned(),
                            host: t.host.clone(),
                        },
                    )
                })
                .collect(),
            custom_secrets: self
                .custom_secrets
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        SecretOnDisk {
                            secret: s.value.expose().to_owned(),
                            description: s.description.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Variables a secret may not set: they change how programs run (the shell's, and those ohd
/// starts around it), not what they are given.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "TERM",
    "PWD",
    "IFS",
    "ENV",
    "BASH_ENV",
    "PS1",
    "PS2",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "TMPDIR",
    "LANG",
    "LC_ALL",
];

/// Whether `name` is kept for the system (see [`RESERVED`], and every `LD_`, `BASH_FUNC`,
/// `GIT_` and `OHD_` name).
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
        || ["LD_", "BASH_FUNC", "GIT_", "OHD_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// Values shorter than this are refused: every event hides secret values by replacing them,
/// which would mangle ordinary output for very short ones (and so they would not be hidden).
pub const MIN_SECRET_LEN: usize = 8;

/// Whether a provider's host is a plain host name or address with an optional port, with an
/// optional `https://`; plain `http://` only for this machine (a local test or mirror), so a
/// token is never sent in the clear over a network.
pub fn valid_host(host: &str) -> bool {
    let (rest, local_only) = match host.strip_prefix("https://") {
        Some(rest) => (rest, false),
        None => match host.strip_prefix("http://") {
            Some(rest) => (rest, true),
            None => (host, false),
        },
    };
    let rest = rest.trim_end_matches('/');
    let name = rest.rsplit_once(':').map_or(rest, |(name, port)| {
        if port.parse::<u16>().is_ok() {
            name
        } else {
            rest
        }
    });
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    plain && (!local_only || matches!(name, "127.0.0.1" | "localhost"))
}

/// Whether `name` can be a shell variable, as a secret's name must be to reach the shell.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// The file and what it holds. Reads are plain (the agents read it when they start, from
/// synchronous code); changes are serialized and written whole, then swapped in.
pub struct UserSecretsStore {
    place: DocumentPlace,
    current: RwLock<UserSecrets>,
    /// Held while changing; holds the bytes last read or written, so that a shared document
    /// read again is known to have changed or not.
    writing: tokio::sync::Mutex<Option<Vec<u8>>>,
}

fn parse(raw: Option<&[u8]>, place: &DocumentPlace) -> anyhow::Result<UserSecrets> {
    match raw {
        Some(bytes) => Ok(UserSecrets::from_disk(
            serde_json::from_slice(bytes)
                .map_err(|e| anyhow::anyhow!("{place} is not valid ({e}); fix or remove it"))?,
        )),
        None => Ok(UserSecrets::default()),
    }
}

impl UserSecretsStore {
    /// Reads the file if there is one; a file that cannot be read stops the server with a
    /// message naming it, rather than being silently replaced.
    pub fn load(path: PathBuf) -> anyhow::Result<UserSecretsStore> {
        let raw = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let place = DocumentPlace::File(path);
        let secrets = parse(raw.as_deref(), &place)?;
        Ok(UserSecretsStore {
            place,
            current: RwLock::new(secrets),
            writing: tokio::sync::Mutex::new(raw),
        })
    }

    /// Reads the secrets wherever they are kept (a file, or the cluster's database).
    pub async fn open(place: DocumentPlace) -> anyhow::Result<UserSecretsStore> {
        let raw = place
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {place}: {e}"))?;
        let secrets = parse(raw.as_deref(), &place)?;
        Ok(UserSecretsStore {
            place,
            current: RwLock::new(secrets),
            writing: tokio::sync::Mutex::new(raw),
        })
    }

    /// Reads a shared document again, taking in what another node saved.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        if !self.place.is_shared() {
            return Ok(());
        }
        let mut last = self.writing.lock().await;
        self.reload(&mut last).await
    }

    async fn reload(&self, last: &mut Option<Vec<u8>>) -> anyhow::Result<()> {
        let raw = self
            .place
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.place))?;
        if raw != *last {
            let secrets = parse(raw.as_deref(), &self.place)?;
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = secrets;
            *last = raw;
        }
        Ok(())
    }

    pub fn get(&self) -> UserSecrets {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` (which may refuse, with its error), saves, and swaps the result in.
    pub async fn update<E>(
        &self,
        change: impl FnOnce(&mut UserSecrets) -> Result<(), E>,
    ) -> Result<Result<(), E>, std::io::Error> {
        let mut last = self.writing.lock().await;
        // Another node may have saved since: change what is there now.
        if self.place.is_shared() {
            self.reload(&mut last)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        let mut next = self.get();
        if let Err(refused) = change(&mut next) {
            return Ok(Err(refused));
        }
        let bytes = serde_json::to_vec_pretty(&next.to_disk()).map_err(std::io::Error::other)?;
        // Written only if no other node changed them since they were read: a change is never
        // lost, and the rare loser of a race is asked to try again.
        if !self.place.write_if(last.as_deref(), bytes.clone()).await? {
            return Err(std::io::Error::other(
                "another node changed the secrets at the same moment; try again",
            ));
        }
        *last = Some(bytes);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_plain_and_clear_text_only_for_this_machine() {
        for ok in [
            "github.example.com",
            "gitlab.example.org:8443",
            "https://git.example.net/",
            "http://127.0.0.1:9",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "https://user@host",
            "host/path",
            "https://h:99999",
            "",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        assert!(is_reserved("PATH") && is_reserved("LD_PRELOAD") && !is_reserved("API_KEY"));
    }

    #[test]
    fn names_that_can_be_shell_variables() {
        for ok in ["API_KEY", "_x", "a1"] {
            assert!(is_variable_name(ok), "{ok}");
        }
        for bad in ["", "1A", "MY KEY", "A-B", "ä"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn values_round_trip_through_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("secrets.json");
        let store = UserSecretsStore::load(path.clone()).unwrap_or_else(|e| panic!("{e}"));
        store
            .update(|s| {
                s.custom_secrets.insert(
                    "API_KEY".into(),
                    CustomSecret {
                        value: Secret::new("value-123456"),
                        description: "d".into(),
                    },
                );
                Ok::<(), ()>(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|()| panic!("refused"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = UserSecretsStore::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.get().custom_secrets["API_KEY"].value.expose(),
            "value-123456"
        );
    }
}
