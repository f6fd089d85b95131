//! What a client may send with `oh_user_action` (or the legacy `oh_action`).
//!
//! Two forms are accepted for a chat message: the OpenHands form
//! `{"action":"message","args":{"content":"..."}}` and the user's document's simplified form
//! `{"type":"message","source":"user","message":"..."}`. Besides messages a client may change the
//! agent's state and run a terminal command; everything else is refused with an [`InputError`].
//! Client-supplied `id`, `source` and `timestamp` are ignored: the server decides those.

use crate::action::{Action, ChangeAgentStateArgs, MessageArgs, RunArgs};
use crate::agent_state::AgentState;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum ClientAction {
    Message(MessageArgs),
    ChangeAgentState(AgentState),
    Run(RunArgs),
}

/// Why a client's input was refused. `code` is stable and machine-readable; `message` says what
/// to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    pub code: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        InputError {
            code,
            message: message.into(),
        }
    }
}

/// The agent states a client may ask for.
pub const CLIENT_SETTABLE_STATES: [AgentState; 5] = [
    AgentState::Stopped,
    AgentState::Paused,
    AgentState::Running,
    AgentState::UserConfirmed,
    AgentState::UserRejected,
];

impl ClientAction {
    pub fn parse(data: &Value) -> Result<ClientAction, InputError> {
        let Some(obj) = data.as_object() else {
            return Err(InputError::new(
                "INVALID_ACTION",
                format!("an action must be a JSON object, got {}", json_kind(data)),
            ));
        };
        match (obj.get("action"), obj.get("type")) {
            (Some(Value::String(kind)), _) => Self::parse_openhands(kind, obj.get("args")),
            (Some(other), _) => Err(InputError::new(
                "INVALID_ACTION",
                format!("\"action\" must be a string, got {}", json_kind(other)),
            )),
            (None, Some(Value::String(kind))) if kind == "message" => match obj.get("message") {
                Some(Value::String(text)) => Ok(ClientAction::Message(MessageArgs::user(text))),
                Some(other) => Err(InputError::new(
                    "INVALID_ARGS",
                    format!("\"message\" must be a string, got {}", json_kind(other)),
                )),
                None => Err(InputError::new(
                    "INVALID_ARGS",
                    "a message needs a \"message\" string",
                )),
            },
            (None, Some(other)) => Err(InputError::new(
                "UNKNOWN_ACTION",
                format!(
                    "unknown event type {}: send {{\"type\":\"message\",\"message\":\"...\"}} or an OpenHands action",
                    other
                ),
            )),
            (None, None) => Err(InputError::new(
                "INVALID_ACTION",
                "an action needs an \"action\" key (or the simplified form {\"type\":\"message\",\"message\":\"...\"})",
            )),
        }
    }

    fn parse_openhands(kind: &str, args: Option<&Value>) -> Result<ClientAction, InputError> {
        let empty = serde_json::Map::new();
        let args = match args {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(InputError::new(
                    "INVALID_ARGS",
                    format!("\"args\" must be an object, got {}", json_kind(other)),
                ));
            }
        };
        let string_arg = |name: &str| -> Result<String, InputError> {
            match args.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(InputError::new(
                    "INVALID_ARGS",
                    format!("args.{name} must be a string, got {}", json_kind(other)),
                )),
                None => Err(InputError::new(
                    "INVALID_ARGS",
                    format!("{kind} needs args.{name}"),
                )),
            }
        };
        let url_list = |name: &str| -> Result<Option<Vec<String>>, InputError> {
            match args.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
                    .map(Some)
                    .map_err(|_| {
                        InputError::new(
                            "INVALID_ARGS",
                            format!("args.{name} must be a list of strings"),
                        )
                    }),
            }
        };
        match kind {
            "message" => {
                let mut message = MessageArgs::user(string_arg("content")?);
                message.image_urls = url_list("image_urls")?;
                message.file_urls = url_list("file_urls")?;
                Ok(ClientAction::Message(message))
            }
            "change_agent_state" => {
                let raw = string_arg("agent_state")?;
                CLIENT_SETTABLE_STATES
                    .into_iter()
                    .find(|s| s.as_str() == raw)
                    .map(ClientAction::ChangeAgentState)
                    .ok_or_else(|| {
                        InputError::new(
                            "INVALID_AGENT_STATE",
                            format!(
                                "agent_state {raw:?} cannot be set by a client; use one of {}",
                                CLIENT_SETTABLE_STATES.map(|s| s.as_str()).join(", ")
                            ),
                        )
                    })
            }
            "run" => {
                let mut run = RunArgs::new(string_arg("command")?);
                match args.get("hidden") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(b)) => run.hidden = *b,
                    Some(other) => {
                        return Err(InputError::new(
                            "INVALID_ARGS",
                            format!("args.hidden must be a boolean, got {}", json_kind(other)),
                        ));
                    }
                }
                Ok(ClientAction::Run(run))
            }
            other => Err(InputError::new(
                "UNKNOWN_ACTION",
                format!(
                    "action {other:?} cannot be sent by a client; use message, change_agent_state or run"
                ),
            )),
        }
    }

    /// The action as it is stored. A state change is stored as the request it is; the agent
    /// answers it with an `agent_state_changed` observation once it has taken effect.
    pub fn into_action(self) -> Action {
        match self {
            ClientAction::Message(m) => Action::Message(m),
            ClientAction::Run(r) => Action::Run(r),
            ClientAction::ChangeAgentState(state) => {
                Action::ChangeAgentState(ChangeAgentStateArgs {
                    agent_state: state,
                    thought: String::new(),
                })
            }
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_form_and_the_openhands_form_give_the_same_message() {
        let seed = ClientAction::parse(
            &json!({"type":"message","source":"user","message":"Hello, agent!"}),
        );
        let oh =
            ClientAction::parse(&json!({"action":"message","args":{"content":"Hello, agent!"}}));
        assert_eq!(
            seed,
            Ok(ClientAction::Message(MessageArgs::user("Hello, agent!")))
        );
        assert_eq!(seed, oh);
    }

    #[test]
    fn the_web_ui_message_keeps_its_urls_and_ignores_the_timestamp() {
        let parsed = ClientAction::parse(&json!({"action":"message","args":{"content":"hi",
            "image_urls":[],"file_urls":["a"],"timestamp":"2025-01-01T00:00:00"}}));
        let Ok(ClientAction::Message(m)) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(m.image_urls, Some(vec![]));
        assert_eq!(m.file_urls, Some(vec!["a".to_owned()]));
    }

    #[test]
    fn state_changes_and_runs_are_accepted() {
        assert_eq!(
            ClientAction::parse(
                &json!({"action":"change_agent_state","args":{"agent_state":"stopped"}})
            ),
            Ok(ClientAction::ChangeAgentState(AgentState::Stopped))
        );
        let run =
            ClientAction::parse(&json!({"action":"run","args":{"command":"ls","hidden":true}}));
        let Ok(ClientAction::Run(r)) = run else {
            panic!("{run:?}")
        };
        assert!(r.hidden && r.command == "ls");
    }

    #[test]
    fn bad_input_names_what_is_wrong() {
        let cases = [
            (json!("hello"), "INVALID_ACTION"),
            (json!([1, 2]), "INVALID_ACTION"),
            (json!({}), "INVALID_ACTION"),
            (json!({"action": 5}), "INVALID_ACTION"),
            (json!({"action":"browse","args":{}}), "UNKNOWN_ACTION"),
            (json!({"type":"observation"}), "UNKNOWN_ACTION"),
            (json!({"type":"message"}), "INVALID_ARGS"),
            (json!({"type":"message","message":42}), "INVALID_ARGS"),
            (
                json!({"action":"message","args":{"content":7}}),
                "INVALID_ARGS",
            ),
            (json!({"action":"message","args":"x"}), "INVALID_ARGS"),
            (
                json!({"action":"message","args":{"content":"x","image_urls":"nope"}}),
                "INVALID_ARGS",
            ),
            (
                json!({"action":"change_agent_state","args":{"agent_state":"finished"}}),
                "INVALID_AGENT_STATE",
            ),
            (
                json!({"action":"run","args":{"command":"ls","hidden":"yes"}}),
                "INVALID_ARGS",
            ),
        ];
        for (input, code) in cases {
            match ClientAction::parse(&input) {
                Err(e) => assert_eq!(e.code, code, "{input}: {}", e.message),
                Ok(a) => panic!("{input} was accepted as {a:?}"),
            }
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Any JSON value, nested a few levels, with the keys actions use more likely than not.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                any::<String>().prop_map(Value::String),
                prop_oneof![
                    Just("message"),
                    Just("run"),
                    Just("change_agent_state"),
                    Just("stopped"),
                    Just("user"),
                ]
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                let key = prop_oneof![
                    Just("action".to_owned()),
                    Just("type".to_owned()),
                    Just("args".to_owned()),
                    Just("message".to_owned()),
                    Just("content".to_owned()),
                    Just("command".to_owned()),
                    Just("agent_state".to_owned()),
                    any::<String>(),
                ];
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    proptest::collection::btree_map(key, inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_json_is_an_action_or_an_error(value in json()) {
                if let Err(e) = ClientAction::parse(&value) {
                    prop_assert!(!e.code.is_empty() && !e.message.is_empty());
                }
            }

            #[test]
            fn any_text_parsed_as_json_is_an_action_or_an_error(text in any::<String>()) {
                if let Ok(value) = serde_json::from_str::<Value>(&text) {
                    let _ = ClientAction::parse(&value);
                }
            }
        }
    }
}
