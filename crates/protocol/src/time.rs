//! Event timestamps: ISO 8601 in UTC with microseconds and an explicit offset.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().trunc_subsecs(6))
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Timestamp(at.trunc_subsecs(6))
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `+00:00` rather than `Z`: Python's `datetime.fromisoformat` (3.10 and older) and the
        // original server's own output both use the numeric form.
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_and_offset_and_parses_back() {
        let t = Timestamp::now();
        let text = t.to_string();
        assert_eq!(
            text.len(),
            "2026-11-25T11:52:45.983237+00:00".len(),
            "{text}"
        );
        assert!(text.ends_with("+00:00"));
        let back: Timestamp = serde_json::from_value(serde_json::json!(text)).unwrap_or(t);
        assert_eq!(back, t);
    }
}
