//! Engine.IO packets: a one-character type, then the payload. Over polling, several packets go
//! in one body, separated by the record separator, and binary ones as `b` + base64.

use crate::{Config, Message, Utf8Bytes};
use base64::Engine as _;
use bytes::Bytes;

pub const CLOSE: char = '1';
pub const PING: char = '2';
pub const PONG: char = '3';
pub const MESSAGE: char = '4';
/// [`MESSAGE`] as a string, to put before a message's payload.
pub const MESSAGE_STR: &str = "4";
pub const UPGRADE: char = '5';
pub const NOOP: char = '6';
/// Separates packets in a long-polling body.
pub const SEPARATOR: u8 = 0x1e;

/// What a client sent.
#[derive(Debug)]
pub enum Inbound {
    Close,
    Ping { probe: bool },
    Pong,
    Message(Utf8Bytes),
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Reads one text packet (a websocket text frame, or one packet of a polling body).
pub fn parse(text: Utf8Bytes) -> Result<Inbound, String> {
    let kind = text.as_str().chars().next();
    Ok(match kind {
        Some(CLOSE) => Inbound::Close,
        Some(PING) => Inbound::Ping {
            probe: text.as_str() == "2probe",
        },
        Some(PONG) => Inbound::Pong,
        Some(MESSAGE) => {
            let payload = Bytes::from(text).slice(1..);
            // The type character is ASCII, so the rest is still UTF-8; this cannot fail.
            Inbound::Message(
                Utf8Bytes::try_from(payload).map_err(|_| "message is not UTF-8".to_owned())?,
            )
        }
        Some(UPGRADE) => Inbound::Upgrade,
        Some(NOOP) => Inbound::Noop,
        Some('b') => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(text.as_str().get(1..).unwrap_or(""))
                .map_err(|e| format!("binary packet is not base64: {e}"))?;
            Inbound::Binary(Bytes::from(data))
        }
        Some(other) => return Err(format!("unknown Engine.IO packet type {other:?}")),
        None => return Err("empty Engine.IO packet".to_owned()),
    })
}

/// Reads one packet from bytes (a part of a polling body), which must be UTF-8.
pub fn parse_bytes(bytes: Bytes) -> Result<Inbound, String> {
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => parse(text),
        Err(_) => Err("packet is not UTF-8".to_owned()),
    }
}

/// What the server queues for a client.
#[derive(Debug, Clone)]
pub enum Outbound {
    Message(Message),
    Ping,
    Pong,
    Noop,
}

impl Outbound {
    pub fn as_str(&self) -> &str {
        match self {
            Outbound::Message(m) => m.0.as_str(),
            Outbound::Ping => "2",
            Outbound::Pong => "3",
            Outbound::Noop => "6",
        }
    }

    pub fn is_message(&self) -> bool {
        matches!(self, Outbound::Message(_))
    }
}

/// The open packet that starts every session, its fields in the order engine.io servers send
/// them.
pub fn open(sid: &str, can_upgrade: bool, config: &Config) -> String {
    let sid = serde_json::Value::from(sid);
    let upgrades = if can_upgrade {
        r#"["websocket"]"#
    } else {
        "[]"
    };
    format!(
        r#"0{{"sid":{sid},"upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_packet_type() {
        assert!(matches!(parse("1".into()), Ok(Inbound::Close)));
        assert!(matches!(
            parse("2probe".into()),
            Ok(Inbound::Ping { probe: true })
        ));
        assert!(matches!(
            parse("2".into()),
            Ok(Inbound::Ping { probe: false })
        ));
        assert!(matches!(parse("3".into()), Ok(Inbound::Pong)));
        assert!(matches!(parse("5".into()), Ok(Inbound::Upgrade)));
        assert!(matches!(parse("6".into()), Ok(Inbound::Noop)));
        match parse("42[\"é\"]".into()) {
            Ok(Inbound::Message(m)) => assert_eq!(m.as_str(), "2[\"é\"]"),
            other => panic!("{other:?}"),
        }
        match parse("bAQID".into()) {
            Ok(Inbound::Binary(b)) => assert_eq!(&b[..], &[1, 2, 3]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_is_not_engine_io() {
        assert!(parse("".into()).is_err());
        assert!(parse("x".into()).is_err());
        assert!(parse("9".into()).is_err());
        assert!(parse("b!!".into()).is_err());
    }

    #[test]
    fn the_open_packet_names_the_upgrade_only_over_polling() {
        let config = Config::default();
        let polling = open("abc", true, &config);
        assert!(polling.starts_with("0{"));
        let v: serde_json::Value = serde_json::from_str(&polling[1..]).unwrap_or_default();
        assert_eq!(v["sid"], "abc");
        assert_eq!(v["upgrades"][0], "websocket");
        assert_eq!(v["pingInterval"], 25000);
        assert!(
            polling.starts_with(r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"#)
        );
        let ws = open("abc", false, &config);
        let v: serde_json::Value = serde_json::from_str(&ws[1..]).unwrap_or_default();
        assert_eq!(v["upgrades"].as_array().map(Vec::len), Some(0));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_is_a_packet_or_an_error(text in any::<String>()) {
                let _ = parse(text.into());
            }

            #[test]
            fn any_bytes_are_a_packet_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = parse_bytes(Bytes::from(bytes));
            }

            #[test]
            fn a_message_keeps_its_payload(payload in any::<String>()) {
                match parse(format!("4{payload}").into()) {
                    Ok(Inbound::Message(m)) => prop_assert_eq!(m.as_str(), payload.as_str()),
                    other => prop_assert!(false, "{:?}", other),
                }
            }

            #[test]
            fn a_binary_packet_keeps_its_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
                let text = format!("b{}", base64::engine::general_purpose::STANDARD.encode(&data));
                match parse(text.into()) {
                    Ok(Inbound::Binary(b)) => prop_assert_eq!(&b[..], &data[..]),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
