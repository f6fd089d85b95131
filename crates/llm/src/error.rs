//! One error type for every model call, classified by what the caller should do about it rather
//! than by where it came from: retry later, ask the user for a key, shorten the history, give up.

use std::time::Duration;

/// Why a completion failed. The variants are what the agent acts on; the strings are for people.
/// No message ever holds the API key: errors built from a response pass through
/// [`LlmError::redact`] before they leave the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// 401 or 403: the key is missing, wrong or not allowed this model. Never retried.
    #[error("authentication with the LLM provider failed: {0}")]
    Authentication(String),
    /// 429: too many requests. Retried; this is what is left when the retries ran out.
    #[error("rate limited by the LLM provider{}: {message}", retry_after_text(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The prompt does not fit the model's context window. Shortening the history may help.
    #[error("the prompt is too long for the model's context window: {0}")]
    ContextWindowExceeded(String),
    /// The account has no credit or quota left. Never retried.
    #[error("the LLM account is out of credits: {0}")]
    OutOfCredits(String),
    /// The provider refused the content.
    #[error("the LLM provider refused the content: {0}")]
    ContentPolicyViolation(String),
    /// 502, 503, 504, 529 (overloaded): the provider is there but not serving. Retried.
    #[error("the LLM service is unavailable: {0}")]
    ServiceUnavailable(String),
    /// Any other 5xx. Retried.
    #[error("the LLM provider failed with status {status}: {message}")]
    Server { status: u16, message: String },
    /// The request was refused as malformed (another 4xx): retrying the same request won't help.
    #[error("the LLM provider refused the request: {0}")]
    BadRequest(String),
    /// The connection failed, broke, or timed out. Retried.
    #[error("could not reach the LLM provider: {0}")]
    Network(String),
    /// The provider answered with something this client cannot read.
    #[error("unreadable answer from the LLM provider: {0}")]
    InvalidResponse(String),
    /// The settings cannot make a client (no model, unknown provider, no key for a hosted one).
    #[error("the LLM is not configured: {0}")]
    NotConfigured(String),
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (retry after {:.1}s)", wait.as_secs_f64()),
        None => String::new(),
    }
}

impl LlmError {
    /// The OpenHands status id for a `status_update` of type `error`, as its agent controller
    /// picks it (`_react_to_exception`).
    ///
    /// `RateLimited` has no error status there: the controller moves the agent to the
    /// `rate_limited` state instead, and the web UI's message for a rate-limited agent that
    /// stopped is the id returned here.
    pub fn status_id(&self) -> &'static str {
        match self {
            LlmError::Authentication(_) => "STATUS$ERROR_LLM_AUTHENTICATION",
            LlmError::ServiceUnavailable(_) | LlmError::Network(_) => {
                "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"
            }
            LlmError::Server { .. } => "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR",
            LlmError::OutOfCredits(_) => "STATUS$ERROR_LLM_OUT_OF_CREDITS",
            LlmError::ContentPolicyViolation(_) => "STATUS$ERROR_LLM_CONTENT_POLICY_VIOLATION",
            LlmError::RateLimited { .. } => "CHAT_INTERFACE$AGENT_RATE_LIMITED_STOPPED_MESSAGE",
            LlmError::ContextWindowExceeded(_)
            | LlmError::BadRequest(_)
            | LlmError::InvalidResponse(_)
            | LlmError::NotConfigured(_) => "STATUS$ERROR",
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::ServiceUnavailable(_)
                | LlmError::Server { .. }
                | LlmError::Network(_)
        )
    }

    /// The wait the provider asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error from an HTTP status and the provider's error message. `retry_after` is what the
    /// response's headers asked for, if anything.
    pub fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> LlmError {
        let lower = message.to_lowercase();
        if is_out_of_credits(&lower) {
            return LlmError::OutOfCredits(message);
        }
        match status {
            401 | 403 => LlmError::Authentication(message),
            429 => LlmError::RateLimited {
                retry_after,
                message,
            },
            413 => LlmError::ContextWindowExceeded(message),
            // Not retried whatever the status (llama.cpp answers 500): the same request is
            // refused again. The client may fall back to tools described in the prompt.
            // A 5xx only with llama.cpp's own words ("requires --jinja"), so that an outage
            // that happens to name a tool is still retried.
            _ if refuses_tools(&lower) && (status < 500 || lower.contains("requires --")) => {
                LlmError::BadRequest(format!("status {status}: {message}"))
            }
            _ if status < 500 && is_context_window(&lower) => {
                LlmError::ContextWindowExceeded(message)
            }
            _ if status < 500 && is_content_policy(&lower) => {
                LlmError::ContentPolicyViolation(message)
            }
            // 408 is the server giving up on a slow request: like a network timeout.
            408 => LlmError::Network(message),
            502 | 503 | 504 | 529 => LlmError::ServiceUnavailable(message),
            500..=599 => LlmError::Server { status, message },
            _ => LlmError::BadRequest(format!("status {status}: {message}")),
        }
    }

    /// The same error with every occurrence of `secret` replaced. Providers echo keys back in
    /// their messages ("Incorrect API key provided: sk-...").
    pub fn redact(self, secret: Option<&str>) -> LlmError {
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return self;
        };
        let clean = |s: String| s.replace(secret, "[redacted]");
        match self {
            LlmError::Authentication(m) => LlmError::Authentication(clean(m)),
            LlmError::RateLimited {
                retry_after,
                message,
            } => LlmError::RateLimited {
                retry_after,
                message: clean(message),
            },
            LlmError::ContextWindowExceeded(m) => LlmError::ContextWindowExceeded(clean(m)),
            LlmError::OutOfCredits(m) => LlmError::OutOfCredits(clean(m)),
            LlmError::ContentPolicyViolation(m) => LlmError::ContentPolicyViolation(clean(m)),
            LlmError::ServiceUnavailable(m) => LlmError::ServiceUnavailable(clean(m)),
            LlmError::Server { status, message } => LlmError::Server {
                status,
                message: clean(message),
            },
            LlmError::BadRequest(m) => LlmError::BadRequest(clean(m)),
            LlmError::Network(m) => LlmError::Network(clean(m)),
            LlmError::InvalidResponse(m) => LlmError::InvalidResponse(clean(m)),
            LlmError::NotConfigured(m) => LlmError::NotConfigured(clean(m)),
        }
    }
}

/// Phrases the providers and the common OpenAI-compatible servers use for a prompt that is too
/// long: OpenAI and vLLM ("maximum context length", `context_length_exceeded`), Anthropic
/// ("prompt is too long"), llama.cpp ("context size"), and generic "too many tokens".
fn is_context_window(lower: &str) -> bool {
    [
        "context length",
        "context_length",
        "context window",
        "context size",
        "too many tokens",
        "prompt is too long",
        "input is too long",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// Whether a refusal says the model or server takes no tools: vLLM started without
/// `--enable-auto-tool-choice` ("\"auto\" tool choice requires --enable-auto-tool-choice and
/// --tool-call-parser to be set"), Ollama ("<model> does not support tools"), llama.cpp without
/// `--jinja` ("tools param requires --jinja flag"), LiteLLM ("does not support parameters:
/// ['tools']"), DeepSeek's reasoner ("does not support Function Calling"), OpenRouter ("No
/// endpoints found that support tool use"), Mistral and Gemini ("Function calling is not
/// enabled").
pub(crate) fn refuses_tools(message: &str) -> bool {
    let lower = message.to_lowercase();
    let about_tools = ["tool", "function call", "function_call", "functions"]
        .iter()
        .any(|p| lower.contains(p));
    let refused = [
        "not support",
        "unsupported",
        "not enabled",
        "not available",
        "requires --",
        "no endpoints found",
    ]
    .iter()
    .any(|p| lower.contains(p));
    about_tools && refused
}

/// OpenAI's `insufficient_quota` (a 429 that no wait will fix), Anthropic's "credit balance is
/// too low", and LiteLLM proxies' `ExceededBudget`.
fn is_out_of_credits(lower: &str) -> bool {
    [
        "insufficient_quota",
        "credit balance",
        "exceededbudget",
        "out of credits",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

fn is_content_policy(lower: &str) -> bool {
    [
        "content_policy",
        "content policy",
        "content_filter",
        "content management policy",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// The human part of a provider's error body. OpenAI and most compatible servers send
/// `{"error":{"message":..}}`, Anthropic `{"type":"error","error":{"type":..,"message":..}}`,
/// some `{"error":".."}`, `{"message":..}` or `{"detail":..}`; anything else is shown as text,
/// cut to a readable length (a proxy's HTML error page, say).
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        let error = value.get("error").unwrap_or(&value);
        let message = error
            .get("message")
            .or_else(|| error.get("detail"))
            .and_then(|m| m.as_str())
            .or_else(|| error.as_str());
        if let Some(message) = message {
            // Keep the machine-readable code too: it is what tells `insufficient_quota` from an
            // ordinary 429.
            let code = error
                .get("code")
                .and_then(|c| c.as_str())
                .or_else(|| error.get("type").and_then(|t| t.as_str()));
            return match code {
                Some(code) if !message.contains(code) => format!("{message} ({code})"),
                _ => message.to_owned(),
            };
        }
    }
    truncate(body.trim(), 500)
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_400_is_context_window_exceeded() {
        let err = LlmError::from_status(
            400,
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.".into(),
            None,
        );
        assert!(matches!(err, LlmError::ContextWindowExceeded(_)));
        let err = LlmError::from_status(
            400,
            "prompt is too long: 208310 tokens > 200000 maximum".into(),
            None,
        );
        assert!(matches!(err, LlmError::ContextWindowExceeded(_)));
    }

    #[test]
    fn insufficient_quota_429_is_not_retried() {
        let body = r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let err = LlmError::from_status(429, error_message(body), None);
        assert!(matches!(err, LlmError::OutOfCredits(_)));
        assert!(!err.is_retryable());
        assert_eq!(err.status_id(), "STATUS$ERROR_LLM_OUT_OF_CREDITS");
    }

    #[test]
    fn statuses_map_to_openhands_ids() {
        let cases = [
            (401, "STATUS$ERROR_LLM_AUTHENTICATION"),
            (403, "STATUS$ERROR_LLM_AUTHENTICATION"),
            (500, "STATUS$ERROR_LLM_INTERNAL_SERVER_ERROR"),
            (503, "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"),
            (529, "STATUS$ERROR_LLM_SERVICE_UNAVAILABLE"),
            (404, "STATUS$ERROR"),
        ];
        for (status, id) in cases {
            assert_eq!(
                LlmError::from_status(status, "x".into(), None).status_id(),
                id
            );
        }
    }

    #[test]
    fn error_bodies_of_each_shape_are_read() {
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded (overloaded_error)"
        );
        assert_eq!(
            error_message(r#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(
            error_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn servers_that_take_no_tools_are_recognised_and_not_retried() {
        let refusals = [
            (
                400,
                "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
            ),
            (
                400,
                "registry.ollama.ai/library/gemma3:1b does not support tools",
            ),
            (500, "tools param requires --jinja flag"),
            (
                400,
                "litellm.UnsupportedParamsError: ollama does not support parameters: ['tools'], for model=llama2",
            ),
            (400, "deepseek-reasoner does not support Function Calling"),
            (
                404,
                "No endpoints found that support tool use. To learn more about provider routing, visit: https://openrouter.ai/docs/provider-routing",
            ),
            (400, "Function calling is not enabled for this model"),
        ];
        for (status, message) in refusals {
            assert!(refuses_tools(message), "{message}");
            let err = LlmError::from_status(status, message.into(), None);
            assert!(matches!(err, LlmError::BadRequest(_)), "{err:?}");
            assert!(!err.is_retryable());
        }
        for other in [
            "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'",
            "tool_use ids were found without tool_result blocks immediately after",
            "The model `gpt-5` does not exist",
        ] {
            assert!(!refuses_tools(other), "{other}");
        }
    }

    #[test]
    fn redact_removes_the_key_everywhere() {
        let err = LlmError::Authentication("Incorrect API key provided: sk-secret-123".into())
            .redact(Some("sk-secret-123"));
        assert!(!err.to_string().contains("sk-secret-123"));
    }
}
