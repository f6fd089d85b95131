//! Identifier newtypes, so a conversation id can never be passed where an event id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An event's position in its conversation's log: dense from 0, assigned by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl EventId {
    pub fn next(self) -> EventId {
        EventId(self.0 + 1)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A conversation id. New ones are 32 lowercase hex digits, like the original's; any id a client
/// names must be 1 to 100 characters of `[A-Za-z0-9_-]`, which keeps ids safe as folder names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ConversationId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid conversation id {0:?}: use 1 to 100 letters, digits, '-' or '_'")]
pub struct InvalidConversationId(pub String);

impl ConversationId {
    pub const MAX_LEN: usize = 100;

    pub fn generate() -> Self {
        ConversationId(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidConversationId> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(ConversationId(raw.to_owned()))
        } else {
            // Keep the echoed value short: it goes back to whoever sent it.
            let shown: String = raw.chars().take(120).collect();
            Err(InvalidConversationId(shown))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        ConversationId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_parse_back() {
        let id = ConversationId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(ConversationId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn ids_that_could_escape_a_folder_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a b",
            "é",
            &"x".repeat(101),
        ] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
