//! Socket.IO v5 packets, as text (<https://socket.io/docs/v4/socket-io-protocol/>).
//!
//! Written here rather than taken from socketioxide because ohd must do three things its
//! protocol layer cannot: put a `data` object in CONNECT_ERROR (the web UI reads
//! `data.msg_id`), take an EVENT that arrives before CONNECT as an implicit connect (the user's
//! `websocat` one-liner does that), and answer a malformed packet with an error event instead of
//! closing the connection. The transport (Engine.IO, polling and websocket) is `ohd-engineio`.

use ohd_protocol::notice::ErrorNotice;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Connect {
        namespace: String,
        auth: Option<Value>,
    },
    Disconnect {
        namespace: String,
    },
    Event {
        namespace: String,
        ack: Option<u64>,
        name: String,
        args: Vec<Value>,
    },
    /// Acks from the client, and binary packets, which no OpenHands client sends.
    Ignored {
        kind: u8,
        namespace: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PacketError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, PacketError> {
    Err(PacketError(message.into()))
}

impl Packet {
    pub fn namespace(&self) -> &str {
        match self {
            Packet::Connect { namespace, .. }
            | Packet::Disconnect { namespace }
            | Packet::Event { namespace, .. }
            | Packet::Ignored { namespace, .. } => namespace,
        }
    }

    pub fn parse(text: &str) -> Result<Packet, PacketError> {
        let text = text.trim_end_matches(['\r', '\n']);
        let mut rest = text;
        let Some(kind) = rest.bytes().next().filter(u8::is_ascii_digit) else {
            return fail("a Socket.IO packet starts with its type, a digit from 0 to 6");
        };
        let kind = kind - b'0';
        rest = &rest[1..];
        if kind == 5 || kind == 6 {
            // Binary packets carry "<attachments>-"; skip it, the packet is ignored anyway.
            if let Some(dash) = rest.find('-') {
                rest = &rest[dash + 1..];
            }
        }
        let mut namespace = "/";
        if rest.starts_with('/') {
            match rest.find(',') {
                Some(comma) => {
                    namespace = &rest[..comma];
                    rest = &rest[comma + 1..];
                }
                None => {
                    namespace = rest;
                    rest = "";
                }
            }
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack = if digits > 0 {
            match rest[..digits].parse::<u64>() {
                Ok(id) => Some(id),
                Err(_) => return fail("the ack id is too large"),
            }
        } else {
            None
        };
        rest = &rest[digits..];
        let namespace = namespace.to_owned();
        let payload = || -> Result<Option<Value>, PacketError> {
            if rest.trim().is_empty() {
                Ok(None)
            } else {
                serde_json::from_str(rest).map(Some).map_err(|e| {
                    PacketError(format!("the packet's payload is not valid JSON: {e}"))
                })
            }
        };
        match kind {
            0 => {
                let auth = payload()?;
                if matches!(auth, Some(ref a) if !a.is_object()) {
                    return fail("a CONNECT payload must be a JSON object");
                }
                Ok(Packet::Connect { namespace, auth })
            }
            1 => Ok(Packet::Disconnect { namespace }),
            2 => {
                let Some(Value::Array(mut items)) = payload()? else {
                    return fail(
                        "an EVENT payload must be a JSON array: [\"event name\", data...]",
                    );
                };
                if items.is_empty() {
                    return fail("an EVENT payload needs the event name first");
                }
                let Value::String(name) = items.remove(0) else {
                    return fail("an EVENT's first element must be the event name, a string");
                };
                Ok(Packet::Event {
                    namespace,
                    ack,
                    name,
                    args: items,
                })
            }
            3..=6 => Ok(Packet::Ignored { kind, namespace }),
            _ => fail(format!("unknown Socket.IO packet type {kind}")),
        }
    }
}

/// Outgoing packets, written directly: the event JSON is already serialized by the store, so
/// wrapping it is a copy, not a second serialization. Engine.IO adds its own `4` (message) in
/// front of each, so `2[...]` goes on the wire as `42[...]`.
pub fn event(name: &str, json: &str) -> String {
    let mut out = String::with_capacity(json.len() + name.len() + 8);
    out.push_str("2[\"");
    out.push_str(name);
    out.push_str("\",");
    out.push_str(json);
    out.push(']');
    out
}

/// An `oh_event` carrying an error notice, for the client it concerns.
pub fn error_event(notice: &ErrorNotice) -> serde_json::Result<String> {
    serde_json::to_string(notice).map(|json| event("oh_event", &json))
}

pub fn ack(id: u64, json_args: &str) -> String {
    format!("3{id}{json_args}")
}

pub fn connect_ok(sid: &str) -> String {
    format!("0{}", serde_json::json!({ "sid": sid }))
}

pub fn connect_error(namespace: &str, message: &str, data: Option<Value>) -> String {
    let mut body = serde_json::json!({ "message": message });
    if let Some(data) = data {
        body["data"] = data;
    }
    if namespace == "/" {
        format!("4{body}")
    } else {
        format!("4{namespace},{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_clients_send() {
        assert_eq!(
            Packet::parse("0"),
            Ok(Packet::Connect {
                namespace: "/".into(),
                auth: None
            })
        );
        assert_eq!(
            Packet::parse("0{}"),
            Ok(Packet::Connect {
                namespace: "/".into(),
                auth: Some(json!({}))
            })
        );
        assert_eq!(
            Packet::parse("0/admin,{\"token\":1}"),
            Ok(Packet::Connect {
                namespace: "/admin".into(),
                auth: Some(json!({"token":1}))
            })
        );
        assert_eq!(
            Packet::parse("2[\"oh_user_action\",{\"type\":\"message\"}]\n"),
            Ok(Packet::Event {
                namespace: "/".into(),
                ack: None,
                name: "oh_user_action".into(),
                args: vec![json!({"type":"message"})],
            })
        );
        assert_eq!(
            Packet::parse("217[\"ev\"]"),
            Ok(Packet::Event {
                namespace: "/".into(),
                ack: Some(17),
                name: "ev".into(),
                args: vec![]
            })
        );
        assert_eq!(
            Packet::parse("1"),
            Ok(Packet::Disconnect {
                namespace: "/".into()
            })
        );
    }

    #[test]
    fn refuses_malformed_packets_with_a_reason() {
        for bad in [
            "",
            "x",
            "9",
            "2not json",
            "2{\"a\":1}",
            "2[]",
            "2[1,2]",
            "0[1]",
            "2[\"a\",{bad",
        ] {
            assert!(Packet::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn writes_what_clients_expect() {
        assert_eq!(
            event("oh_event", "{\"id\":1}"),
            "2[\"oh_event\",{\"id\":1}]"
        );
        let refused = connect_error("/", "no", Some(json!({"msg_id":"X"})));
        let body: Value = serde_json::from_str(&refused[1..]).unwrap_or_default();
        assert_eq!(body, json!({"message":"no","data":{"msg_id":"X"}}));
        assert!(connect_error("/admin", "no", None).starts_with("4/admin,{"));
        assert_eq!(ack(3, "[]"), "33[]");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_is_a_packet_or_an_error(text in any::<String>()) {
                let _ = Packet::parse(&text);
            }

            #[test]
            fn any_text_after_a_packet_type_is_a_packet_or_an_error(
                kind in 0u8..10,
                namespace in proptest::option::of("/[a-z]{0,8}"),
                ack in proptest::option::of(any::<u64>()),
                rest in any::<String>(),
            ) {
                let namespace = namespace.map(|n| format!("{n},")).unwrap_or_default();
                let ack = ack.map(|a| a.to_string()).unwrap_or_default();
                let _ = Packet::parse(&format!("{kind}{namespace}{ack}{rest}"));
            }

            #[test]
            fn an_event_keeps_its_name_ack_and_data(
                name in any::<String>(),
                ack in proptest::option::of(any::<u64>()),
                data in any::<String>(),
            ) {
                let payload = serde_json::json!([name, data]);
                let ack_text = ack.map(|a| a.to_string()).unwrap_or_default();
                let parsed = Packet::parse(&format!("2{ack_text}{payload}"));
                prop_assert_eq!(parsed, Ok(Packet::Event {
                    namespace: "/".into(),
                    ack,
                    name,
                    args: vec![Value::String(data)],
                }));
            }
        }
    }
}
