//! Deciding whether a Socket.IO CONNECT may join a conversation, and from which event.

use crate::app::AppState;
use crate::auth::{self};
use http::HeaderMap;
use ohd_protocol::{ConversationId, EventId};
use serde_json::{Value, json};

/// The git providers whose tokens a conversation may be given (`providers_set`).
pub const PROVIDERS: [&str; 5] = ["github", "gitlab", "bitbucket", "azure_devops", "forgejo"];

#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub conversation: ConversationId,
    /// Replay starts after this id; `None` replays everything.
    pub after: Option<EventId>,
    pub providers: Vec<String>,
}

/// A refused CONNECT: sent as `44{"message":...,"data":{"msg_id":...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub msg_id: Option<&'static str>,
}

impl Refusal {
    /// The refusal's kind, for the figures (never its message, which may quote the query).
    pub fn reason(&self) -> &'static str {
        match self.msg_id {
            None => "no_conversation_id",
            Some("AUTH$INVALID_SESSION_API_KEY") => "invalid_session_api_key",
            Some("CONVERSATION$INVALID_ID") => "invalid_conversation_id",
            Some("CONVERSATION$NOT_FOUND") => "conversation_not_found",
            Some("CONFIGURATION$UNKNOWN_PROVIDER") => "unknown_provider",
            Some(_) => "store_error",
        }
    }

    fn new(message: impl Into<String>, msg_id: Option<&'static str>) -> Self {
        Refusal {
            message: message.into(),
            msg_id,
        }
    }

    pub fn data(&self) -> Option<Value> {
        self.msg_id.map(|id| json!({ "msg_id": id }))
    }
}

/// The handshake query as the original reads it: blank values dropped, first value used.
fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

pub async fn authorize(
    state: &AppState,
    query: &str,
    headers: &HeaderMap,
    auth: Option<&Value>,
) -> Result<Join, Refusal> {
    let Some(raw_id) = query_value(query, "conversation_id") else {
        return Err(Refusal::new("No conversation_id in query params", None));
    };
    if let Some(expected) = &state.config.session_api_key {
        let offered = auth::key_from_headers(headers)
            .map(str::to_owned)
            .or_else(|| {
                auth.and_then(|a| a.get("session_api_key"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .or_else(|| query_value(query, "session_api_key"));
        if !offered.is_some_and(|k| expected.matches(&k)) {
            return Err(Refusal::new(
                "invalid_session_api_key",
                Some("AUTH$INVALID_SESSION_API_KEY"),
            ));
        }
    }
    let conversation = ConversationId::parse(&raw_id)
        .map_err(|e| Refusal::new(e.to_string(), Some("CONVERSATION$INVALID_ID")))?;
    let mut providers = Vec::new();
    if let Some(list) = query_value(query, "providers_set") {
        for name in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !PROVIDERS.contains(&name) {
                return Err(Refusal::new(
                    format!(
                        "unknown provider {name:?} in providers_set; use {}",
                        PROVIDERS.join(", ")
                    ),
                    Some("CONFIGURATION$UNKNOWN_PROVIDER"),
                ));
            }
            providers.push(name.to_owned());
        }
    }
    // Not an integer means -1, as in the original.
    let latest = query_value(query, "latest_event_id")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(-1);
    let mut after = u64::try_from(latest).ok().map(EventId);
    match state.conversations.get(&conversation).await {
        Ok(Some(_)) => {
            // A client that claims more than the log holds (a reset server, a stale tab) starts
            // at the end, so it still gets what comes next, as the original's live stream would.
            // Decided here, before the client is told it joined, so that nothing it sends
            // afterwards can be skipped.
            if let Some(claimed) = after {
                let last = state
                    .log
                    .store()
                    .last_event_id(&conversation)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot read the log's end");
                        Refusal::new(
                            "the server cannot read its store; try again",
                            Some("STATUS$ERROR"),
                        )
                    })?;
                if last.is_none_or(|l| l < claimed) {
                    after = last;
                }
            }
            Ok(Join {
                conversation,
                after,
                providers,
            })
        }
        Ok(None) => Err(Refusal::new(
            format!("conversation {conversation} not found"),
            Some("CONVERSATION$NOT_FOUND"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "conversation lookup failed");
            Err(Refusal::new(
                "the server cannot read its store; try again",
                Some("STATUS$ERROR"),
            ))
        }
    }
}
