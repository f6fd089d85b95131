//! Secrets and the session key check.

use http::HeaderMap;
use std::fmt;
use subtle::ConstantTimeEq;

/// A secret value (API key, session key). Its `Debug` and `Display` never show it, so it cannot
/// reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing tells nothing about the key.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

pub const SESSION_KEY_HEADER: &str = "x-session-api-key";

/// The session key a request carries in its headers: `X-Session-API-Key`, or
/// `Authorization: Bearer <key>`.
pub fn key_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Some(v);
    }
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?} {s}").contains("very"));
        assert!(s.matches("sk-very-secret"));
        assert!(!s.matches("sk-very-secreT"));
        assert!(!s.matches(""));
    }
}
