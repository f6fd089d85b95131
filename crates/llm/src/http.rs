//! The part of a model client that both providers share: the HTTP client, sending a request and
//! classifying a refusal, reading server-sent events, and one completion from first attempt to
//! priced answer.

use std::future::Future;
use std::time::{Duration, Instant};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::error::{LlmError, error_message};
use crate::model::Price;
use crate::retry::{self, RetryObserver, RetryPolicy};
use crate::types::{Completion, CompletionRequest, ToolCall, Usage, model_response};

/// What a provider read from one successful response, before timing and pricing.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub response_id: String,
    /// The model the provider says answered; empty if it did not say.
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    /// The reasoning text, empty when the provider showed none.
    pub reasoning: String,
    /// Anthropic's thinking blocks as received.
    pub thinking_blocks: Vec<Value>,
    pub usage: Usage,
}

/// One wire format's client, below the choice between native and prompted tool calls
/// ([`crate::tool_calling`]), which needs to ask for stop sequences.
#[async_trait::async_trait]
pub(crate) trait Wire: Send + Sync {
    /// Sends `request` as it is, with `stop` as the provider's stop sequences when not empty.
    async fn send(
        &self,
        request: &CompletionRequest,
        stop: &[&str],
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError>;

    /// Whether the model takes stop sequences (OpenAI's reasoning models refuse them).
    fn takes_stop(&self) -> bool;

    /// The model as configured (`openai/gpt-4o`).
    fn model(&self) -> &str;
}

/// Everything a client needs besides its wire format.
pub(crate) struct Core {
    client: reqwest::Client,
    api_key: Option<String>,
    /// The model as configured (`openai/gpt-4o`).
    pub model: String,
    /// The name sent to the provider (`gpt-4o`).
    pub name: String,
    pub stream: bool,
    retry: RetryPolicy,
    price: Option<Price>,
}

impl Core {
    pub(crate) fn new(
        model: String,
        name: String,
        api_key: Option<String>,
        stream: bool,
        retry: RetryPolicy,
        price: Option<Price>,
        timeout: Duration,
    ) -> Result<Core, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15).min(timeout))
            // The whole exchange, streamed answer included: a model that is still writing
            // after this long is taken as stuck, and the attempt is retried.
            .timeout(timeout)
            .build()
            .map_err(|e| LlmError::NotConfigured(format!("cannot build the HTTP client: {e}")))?;
        Ok(Core {
            client,
            api_key: api_key.filter(|k| !k.is_empty()),
            model,
            name,
            stream,
            retry,
            price,
        })
    }

    pub(crate) fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// A header value for the key, marked sensitive so that it is never printed.
    pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, LlmError> {
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            LlmError::NotConfigured("the API key holds characters a header cannot".into())
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends `body` to `url` until an attempt succeeds or retrying is no use, reading each
    /// successful response with `read`.
    pub(crate) async fn complete<R, Fut>(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Value,
        observer: &dyn RetryObserver,
        read: R,
    ) -> Result<Completion, LlmError>
    where
        R: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<Answer, LlmError>>,
    {
        let (headers, body, read) = (&headers, &body, &read);
        let (answer, latency) = retry::run(&self.retry, observer, move || async move {
            let started = Instant::now();
            let answer = match self.post(url, headers, body).await {
                Ok(response) => read(response).await,
                Err(err) => Err(err),
            };
            answer
                .map(|answer| (answer, started.elapsed()))
                .map_err(|err| err.redact(self.api_key()))
        })
        .await?;
        // Every answer gets an id of its own: the agent tells responses apart by it, and some
        // servers send none (or the same one each time is not worth guarding against here).
        let mut answer = answer;
        if answer.response_id.trim().is_empty() {
            answer.response_id = format!("chatcmpl-{:016x}", fastrand::u64(..));
        }
        let model = if answer.model.is_empty() {
            self.name.as_str()
        } else {
            answer.model.as_str()
        };
        Ok(Completion {
            model_response: model_response(&answer, model),
            cost: self.price.map(|price| price.cost(&answer.usage)),
            response_id: answer.response_id,
            text: answer.text,
            tool_calls: answer.tool_calls,
            finish_reason: answer.finish_reason,
            reasoning: Some(answer.reasoning).filter(|r| !r.is_empty()),
            thinking_blocks: answer.thinking_blocks,
            usage: answer.usage,
            latency,
        })
    }

    /// One POST; a status other than 2xx becomes the error it means.
    async fn post(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<reqwest::Response, LlmError> {
        let response = self
            .client
            .post(url)
            .headers(headers.clone())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let mut message = error_message(&text);
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        Err(LlmError::from_status(status.as_u16(), message, retry_after))
    }
}

/// A failure below HTTP: no connection, a broken one, a timeout. The message names the causes
/// (reqwest's own says only "error sending request").
pub(crate) fn transport(err: reqwest::Error) -> LlmError {
    let mut message = err.to_string();
    let mut innermost = None;
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    // A refused or unroutable connection is said in a few words: where, and what the system
    // said ("connection refused"), not the chain of layers that passed it on.
    if err.is_connect()
        && let (Some(url), Some(cause)) = (err.url(), innermost)
    {
        let place = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "the server".to_owned(),
        };
        let cause = cause.split(" (os error").next().unwrap_or_default();
        return LlmError::Network(format!(
            "cannot connect to {place}: {}",
            cause.to_lowercase()
        ));
    }
    if err.is_decode() {
        LlmError::InvalidResponse(message)
    } else {
        LlmError::Network(message)
    }
}

/// Whether a response is plain JSON rather than an event stream: some OpenAI-compatible servers
/// ignore `stream: true`, and errors come as JSON whatever was asked.
pub(crate) fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The body of a response as JSON.
pub(crate) async fn json_body(response: reqwest::Response) -> Result<Value, LlmError> {
    let bytes = response.bytes().await.map_err(transport)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        LlmError::InvalidResponse(format!(
            "not JSON ({e}): {}",
            crate::error::truncate(&String::from_utf8_lossy(&bytes), 200)
        ))
    })
}

/// The server-sent events of a streamed response.
pub(crate) fn events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, LlmError>> + Send {
    response
        .bytes_stream()
        .eventsource()
        .map(|event| match event {
            Ok(event) => Ok(event),
            Err(EventStreamError::Transport(e)) => Err(transport(e)),
            Err(e) => Err(LlmError::InvalidResponse(format!("bad event stream: {e}"))),
        })
}

/// Parses one event's data as JSON.
pub(crate) fn event_json(data: &str) -> Result<Value, LlmError> {
    serde_json::from_str(data).map_err(|e| {
        LlmError::InvalidResponse(format!(
            "bad event data ({e}): {}",
            crate::error::truncate(data, 200)
        ))
    })
}

/// A tool call id for servers that send none (some local ones): unique enough to pair the call
/// with its result across the conversation.
pub(crate) fn fresh_call_id() -> String {
    format!("call_{:016x}", fastrand::u64(..))
}

/// Tool arguments as JSON text: servers send a string as the API says, a few an object.
pub(crate) fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
