//! Payloads sent on `oh_event` that are not events: they are never stored and never replayed.

use crate::ids::ConversationId;
use serde::Serialize;

/// `{"status_update":true,...}`: runtime progress, errors that change the agent's state, and
/// title changes. Sent to the clients connected at the time only, as in the original.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusUpdate {
    pub status_update: bool,
    #[serde(rename = "type")]
    pub kind: StatusKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Info,
    Error,
}

impl StatusUpdate {
    pub fn info(id: &str, message: impl Into<String>) -> Self {
        StatusUpdate {
            status_update: true,
            kind: StatusKind::Info,
            id: Some(id.to_owned()),
            message: message.into(),
            conversation_title: None,
        }
    }

    pub fn error(id: &str, message: impl Into<String>) -> Self {
        StatusUpdate {
            kind: StatusKind::Error,
            ..StatusUpdate::info(id, message)
        }
    }

    pub fn title(conversation: &ConversationId, title: impl Into<String>) -> Self {
        StatusUpdate {
            status_update: true,
            kind: StatusKind::Info,
            id: None,
            message: conversation.to_string(),
            conversation_title: Some(title.into()),
        }
    }
}

/// `{"error":true,"message":...,"code":...}`: bad input, sent to its sender only. A notice
/// about one message the client sent that it cannot otherwise tell apart (one dropped as
/// `RATE_LIMITED`) also names it: `"event"`, and when known `"action"` and `"ack_id"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorNotice {
    pub error: bool,
    pub message: String,
    pub code: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub about: Option<MessageRef>,
}

/// Which message a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRef {
    /// The Socket.IO event name (`oh_user_action`); absent if the message was not an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The action's `action` (or `type`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The ack id the client gave the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_id: Option<u64>,
}

impl ErrorNotice {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorNotice {
            error: true,
            message: message.into(),
            code: code.to_owned(),
            about: None,
        }
    }

    pub fn about(self, message: MessageRef) -> Self {
        ErrorNotice {
            about: Some(message),
            ..self
        }
    }
}

impl From<&crate::client::InputError> for ErrorNotice {
    fn from(e: &crate::client::InputError) -> Self {
        ErrorNotice::new(e.code, e.message.clone())
    }
}
