//! A minimal raw Engine.IO v4 / Socket.IO v5 client over one websocket, and the cheap parsing
//! the benchmark does on every received frame.

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The prefix of every `oh_event` packet, as ohd, python-socketio and rawcast write it.
pub const OH_EVENT: &str = "42[\"oh_event\",";
const USER_ACTION: &str = "42[\"oh_user_action\",";

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's clock base; senders and receivers share it.
pub fn now_ns() -> u64 {
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `http://host:port` → `ws://host:port/socket.io/?EIO=4&transport=websocket&...`
pub fn socket_url(base: &str, conversation: &str, latest_event_id: i64) -> Result<String> {
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url must start with http:// (got {base})"))?
        .trim_end_matches('/');
    Ok(format!(
        "ws://{host}/socket.io/?EIO=4&transport=websocket&conversation_id={conversation}&latest_event_id={latest_event_id}"
    ))
}

/// Opens the websocket and reads the Engine.IO open packet (`0{...}`).
pub async fn open(url: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.starts_with("0{") => Ok(ws),
        Ok(other) => bail!("expected the Engine.IO open packet, got {other:?}"),
        Err(_) => bail!("no Engine.IO open packet within 30 s"),
    }
}

/// Sends CONNECT (`40`) and waits for `40{...}`; answers pings on the way. Events that arrive
/// before the CONNECT reply are handed to `early`.
pub async fn join(ws: &mut Ws, mut early: impl FnMut(&str)) -> Result<()> {
    ws.send(Message::text("40")).await?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| anyhow!("no reply to CONNECT within 60 s"))?;
        match frame {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if t == "2" {
                    ws.send(Message::text("3")).await?;
                } else if t.starts_with("40") {
                    return Ok(());
                } else if t.starts_with("44") {
                    bail!("CONNECT refused: {t}");
                } else {
                    early(t);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before the CONNECT reply"),
        }
    }
}

pub async fn open_and_join(url: &str) -> Result<Ws> {
    let mut ws = open(url).await?;
    join(&mut ws, |_| {}).await?;
    Ok(ws)
}

/// What one `oh_event` frame says, read without a JSON parser.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// An event with an id; `stamp` is the benchmark's `(seq, sent_ns)` if its content is ours.
    Event { id: u64, stamp: Option<(u64, u64)> },
    /// An error notice (`"error":true`), e.g. RATE_LIMITED.
    Error(&'a str),
    /// Any other `oh_event` without an id (status notices).
    Other,
}

/// Parses the payload of a text frame that starts with [`OH_EVENT`].
pub fn parse_event(text: &str) -> Option<Parsed<'_>> {
    let body = text.strip_prefix(OH_EVENT)?;
    // The event id is the first `"id":` key; ohd, python-socketio and rawcast all write it
    // first, and nothing the benchmark sends contains that string.
    let Some(at) = body.find("\"id\":") else {
        if body.contains("\"error\":true") || body.contains("\"error\": true") {
            return Some(Parsed::Error(body));
        }
        return Some(Parsed::Other);
    };
    let id = leading_number(&body[at + 5..])?;
    Some(Parsed::Event {
        id,
        stamp: stamp(body),
    })
}

/// The `(seq, sent_ns)` the benchmark's writer put at the start of the message content.
fn stamp(body: &str) -> Option<(u64, u64)> {
    let at = body.find("\"content\":")?;
    let rest = body[at + 10..].trim_start().strip_prefix('"')?;
    let rest = rest.strip_prefix("b:")?;
    let (seq, rest) = rest.split_once(' ')?;
    let (ns, _) = rest.split_once(' ')?;
    Some((seq.parse().ok()?, ns.parse().ok()?))
}

fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The writer's message: content `b:<seq> <sent_ns> xxxx…`, padded to `size` characters.
pub fn user_message(seq: u64, size: usize) -> String {
    let mut content = format!("b:{seq} {} ", now_ns());
    while content.len() < size {
        content.push('x');
    }
    format!("{USER_ACTION}{{\"action\":\"message\",\"args\":{{\"content\":\"{content}\"}}}}]")
}

/// The action object of an `oh_user_action` packet, as raw JSON text.
pub fn user_action_payload(text: &str) -> Option<&str> {
    text.strip_prefix(USER_ACTION)?.strip_suffix(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_stamps_and_errors() {
        let msg = user_message(7, 60);
        let payload = user_action_payload(&msg).unwrap_or_default();
        let ev = format!(
            "{OH_EVENT}{{\"id\":12,\"source\":\"user\",{}]",
            &payload[1..]
        );
        match parse_event(&ev) {
            Some(Parsed::Event {
                id: 12,
                stamp: Some((7, _)),
            }) => {}
            other => panic!("{other:?}"),
        }
        let py = format!("{OH_EVENT}{{\"id\": 3,\"args\":{{\"content\":\"xxxx\"}}}}]");
        assert_eq!(parse_event(&py), Some(Parsed::Event { id: 3, stamp: None }));
        let err = format!("{OH_EVENT}{{\"error\":true,\"code\":\"RATE_LIMITED\"}}]");
        assert!(matches!(parse_event(&err), Some(Parsed::Error(_))));
        assert_eq!(parse_event("42[\"other\",{}]"), None);
    }
}
