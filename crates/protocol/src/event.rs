//! The event envelope: one entry of a conversation's log, as stored and as sent in `oh_event`.

use crate::action::Action;
use crate::ids::EventId;
use crate::observation::Observation;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who an event comes from. `user` for what a client sent and the observations of actions a
/// client started, `agent` for the agent's actions and their observations, `environment` for
/// what the server itself records (state changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    User,
    Agent,
    Environment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventBody {
    Action(Action),
    Observation(Observation),
}

impl EventBody {
    pub fn message(&self) -> String {
        match self {
            EventBody::Action(a) => a.message(),
            EventBody::Observation(o) => o.message(),
        }
    }
}

/// The model's tool call that produced an action, copied onto its observation too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallMetadata {
    pub function_name: String,
    pub tool_call_id: String,
    #[serde(default)]
    pub model_response: Value,
    #[serde(default)]
    pub total_calls_in_response: u32,
}

/// An event before the store has given it an id and a timestamp. Producers (the socket layer,
/// the agent) make these; only the store turns them into [`Event`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub source: Source,
    pub cause: Option<EventId>,
    pub body: EventBody,
    pub tool_call_metadata: Option<ToolCallMetadata>,
    pub llm_metrics: Option<Value>,
    pub timeout: Option<f64>,
}

impl NewEvent {
    pub fn action(source: Source, action: Action) -> Self {
        NewEvent {
            source,
            cause: None,
            body: EventBody::Action(action),
            tool_call_metadata: None,
            llm_metrics: None,
            timeout: None,
        }
    }

    pub fn observation(source: Source, cause: Option<EventId>, observation: Observation) -> Self {
        NewEvent {
            source,
            cause,
            body: EventBody::Observation(observation),
            tool_call_metadata: None,
            llm_metrics: None,
            timeout: None,
        }
    }

    pub fn into_event(self, id: EventId, timestamp: Timestamp) -> Event {
        Event {
            id,
            timestamp,
            source: self.source,
            cause: self.cause,
            body: self.body,
            tool_call_metadata: self.tool_call_metadata,
            llm_metrics: self.llm_metrics,
            timeout: self.timeout,
        }
    }
}

/// A stored event. Its JSON is the same live and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub timestamp: Timestamp,
    pub source: Source,
    pub cause: Option<EventId>,
    pub body: EventBody,
    pub tool_call_metadata: Option<ToolCallMetadata>,
    pub llm_metrics: Option<Value>,
    pub timeout: Option<f64>,
}

/// The wire shape. `message` is derived from the body, never stored separately, so it cannot
/// disagree with it; `type: "message"` marks chat messages, as the user's document expects.
#[derive(Serialize)]
struct WireOut<'a> {
    id: EventId,
    timestamp: Timestamp,
    source: Source,
    message: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_tag: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<EventId>,
    #[serde(flatten)]
    body: &'a EventBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_metadata: &'a Option<ToolCallMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_metrics: &'a Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<f64>,
}

#[derive(Deserialize)]
struct WireIn {
    id: EventId,
    timestamp: Timestamp,
    source: Source,
    #[serde(default)]
    cause: Option<EventId>,
    #[serde(flatten)]
    body: EventBody,
    #[serde(default)]
    tool_call_metadata: Option<ToolCallMetadata>,
    #[serde(default)]
    llm_metrics: Option<Value>,
    #[serde(default)]
    timeout: Option<f64>,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let type_tag = match &self.body {
            EventBody::Action(Action::Message(_)) => Some("message"),
            _ => None,
        };
        WireOut {
            id: self.id,
            timestamp: self.timestamp,
            source: self.source,
            message: self.body.message(),
            type_tag,
            cause: self.cause,
            body: &self.body,
            tool_call_metadata: &self.tool_call_metadata,
            llm_metrics: &self.llm_metrics,
            timeout: self.timeout,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        Ok(Event {
            id: w.id,
            timestamp: w.timestamp,
            source: w.source,
            cause: w.cause,
            body: w.body,
            tool_call_metadata: w.tool_call_metadata,
            llm_metrics: w.llm_metrics,
            timeout: w.timeout,
        })
    }
}

impl Event {
    pub fn agent_state(&self) -> Option<crate::AgentState> {
        match &self.body {
            EventBody::Observation(Observation::AgentStateChanged { extras, .. }) => {
                Some(extras.agent_state)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentState;
    use crate::action::{MessageArgs, RunArgs};
    use crate::observation::{RunExtras, RunMetadata};
    use serde_json::json;

    fn at(id: u64, new: NewEvent) -> Event {
        new.into_event(EventId(id), Timestamp::now())
    }

    #[test]
    fn a_user_message_has_the_openhands_shape_and_the_seed_type() {
        let ev = at(
            3,
            NewEvent::action(
                Source::User,
                Action::Message(MessageArgs::user("list files")),
            ),
        );
        let v = serde_json::to_value(&ev).unwrap_or_default();
        assert_eq!(v["id"], 3);
        assert_eq!(v["source"], "user");
        assert_eq!(v["type"], "message");
        assert_eq!(v["message"], "list files");
        assert_eq!(v["action"], "message");
        assert_eq!(v["args"]["content"], "list files");
        assert_eq!(v["args"]["security_risk"], -1);
        assert!(v.get("cause").is_none() && v.get("observation").is_none());
    }

    #[test]
    fn a_run_observation_has_success_and_cause_at_top_level() {
        let obs = Observation::Run {
            content: "hello\n".into(),
            extras: RunExtras {
                command: "echo hello".into(),
                metadata: RunMetadata {
                    exit_code: 0,
                    pid: -1,
                    username: None,
                    hostname: None,
                    working_dir: Some("/workspace".into()),
                    py_interpreter_path: None,
                    prefix: String::new(),
                    suffix: String::new(),
                },
                hidden: false,
            },
            success: true,
        };
        let ev = at(
            9,
            NewEvent::observation(Source::Agent, Some(EventId(8)), obs),
        );
        let v = serde_json::to_value(&ev).unwrap_or_default();
        assert_eq!(v["observation"], "run");
        assert_eq!(v["cause"], 8);
        assert_eq!(v["success"], true);
        assert_eq!(
            v["message"],
            "Command `echo hello` executed with exit code 0."
        );
        assert_eq!(v["extras"]["metadata"]["exit_code"], 0);
        assert!(v.get("type").is_none());
    }

    #[test]
    fn every_shape_round_trips_through_json() {
        let events = [
            at(
                0,
                NewEvent::observation(
                    Source::Environment,
                    None,
                    Observation::agent_state_changed(AgentState::Loading, ""),
                ),
            ),
            at(
                1,
                NewEvent::action(Source::User, Action::Run(RunArgs::new("ls"))),
            ),
            at(
                2,
                NewEvent::observation(
                    Source::Agent,
                    Some(EventId(1)),
                    Observation::error("boom", "X"),
                ),
            ),
        ];
        for ev in events {
            let text = serde_json::to_string(&ev).unwrap_or_default();
            let back: Event = match serde_json::from_str(&text) {
                Ok(e) => e,
                Err(e) => panic!("{text}: {e}"),
            };
            assert_eq!(back, ev);
        }
        let state = json!({"id":4,"timestamp":"2025-11-28T10:15:02.123456+00:00","source":"agent",
            "message":"","observation":"agent_state_changed","content":"",
            "extras":{"agent_state":"running","reason":""}});
        let ev: Result<Event, _> = serde_json::from_value(state);
        assert_eq!(
            ev.ok().and_then(|e| e.agent_state()),
            Some(AgentState::Running)
        );
    }
}
