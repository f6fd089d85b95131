//! The 2024 HTTP+SSE transport, client side: a `GET` opens an event stream whose first
//! `endpoint` event says where to `POST` messages; answers come back as `message` events.
//! Written here because `rmcp` no longer ships a client for it, and OpenHands users' servers
//! (and the original's `sse_servers`) still speak it.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::PollSender;

/// Messages queued to or from one server before the other side waits.
const QUEUE: usize = 64;

pub(crate) type SseTransport = (
    PollSender<ClientJsonRpcMessage>,
    ReceiverStream<ServerJsonRpcMessage>,
);

/// Opens the event stream at `url` and waits for its `endpoint`. The transport closes when
/// the stream ends or a message cannot be posted, which fails the requests still waiting.
pub(crate) async fn connect(
    http: reqwest::Client,
    url: &str,
    api_key: Option<&str>,
) -> Result<SseTransport, String> {
    let base = reqwest::Url::parse(url).map_err(|e| format!("the address is not a URL: {e}"))?;
    // Errors name the server without its password or query, which may hold a key.
    let url = &shown(&base);
    let mut request = http
        .get(base.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", without_url(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let mut events = response.bytes_stream().eventsource();
    let endpoint = loop {
        match events.next().await {
            Some(Ok(event)) if event.event == "endpoint" => break event.data,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("{url}: the event stream broke: {e}")),
            None => return Err(format!("{url} closed the event stream before its endpoint")),
        }
    };
    let post_to = base
        .join(endpoint.trim())
        .map_err(|e| format!("{url} gave an endpoint that is not a URL: {e}"))?;
    // The key goes only where it was configured for: an endpoint elsewhere would receive it.
    if post_to.origin() != base.origin() {
        return Err(format!(
            "{url} asked for messages to go to another server ({}); refused",
            post_to.origin().ascii_serialization()
        ));
    }

    let (incoming_tx, incoming_rx) = mpsc::channel::<ServerJsonRpcMessage>(QUEUE);
    let reader = tokio::spawn({
        let url = url.to_owned();
        async move {
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::debug!(%url, error = %e, "MCP event stream broke");
                        break;
                    }
                };
                if event.event != "message" && !event.event.is_empty() {
                    continue;
                }
                match serde_json::from_str::<ServerJsonRpcMessage>(&event.data) {
                    Ok(message) => {
                        if incoming_tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%url, error = %e, "MCP server sent what is not a message")
                    }
                }
            }
        }
    });

    let (outgoing_tx, mut outgoing_rx) = mpsc::channel::<ClientJsonRpcMessage>(QUEUE);
    let api_key = api_key.map(str::to_owned);
    tokio::spawn(async move {
        while let Some(message) = outgoing_rx.recv().await {
            let mut request = http.post(post_to.clone()).json(&message);
            if let Some(key) = &api_key {
                request = request.bearer_auth(key);
            }
            let failed = match request.send().await {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("answered {}", response.status())),
                Err(e) => Some(without_url(&e)),
            };
            if let Some(why) = failed {
                tracing::debug!(error = %why, "an MCP message could not be posted; closing");
                break;
            }
        }
        // Either side ending ends the transport.
        reader.abort();
    });
    Ok((
        PollSender::new(outgoing_tx),
        ReceiverStream::new(incoming_rx),
    ))
}

/// An address as it may be shown: without a password or query.
pub(crate) fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    let _ = url.set_password(None);
    url.to_string()
}

/// A request error without its URL, which may carry a key in its query.
pub(crate) fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "the server");
    }
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    if error.is_connect() {
        return format!("connection refused or unreachable ({text})");
    }
    text
}
