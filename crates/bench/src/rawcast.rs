//! The reference: a plain tokio-tungstenite broadcast server, no persistence, no Socket.IO
//! library. It speaks just enough Engine.IO/Socket.IO framing for the same benchmark clients:
//! the open packet, the CONNECT reply, and for every `oh_user_action` message one `oh_event` with
//! the next id, serialized once and sent to every joined client (the sender included). The event
//! is the one ohd and the python baseline send for that message, byte for byte in size.

use anyhow::Result;
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

const OPEN: &str =
    r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
const CONNECTED: &str = r#"40{"sid":"x"}"#;
/// Events kept for clients that fall behind; beyond this a client loses events (no store).
const CAPACITY: usize = 1 << 16;
const READ_BUFFER: usize = 1024;
/// Messages written before one flush.
const BATCH: usize = 64;

struct Hub {
    next_id: Mutex<u64>,
    tx: broadcast::Sender<Message>,
}

impl Hub {
    /// Stores nothing: numbers the message and broadcasts it as the same event ohd and the
    /// python baseline send for it (the OpenHands message event: the text twice, as `message`
    /// and `args.content`, with a timestamp and the same fields), so that every server puts the
    /// same bytes on the wire.
    fn publish(&self, action: &str) {
        let Some(text) = message_text(action) else {
            return;
        };
        let text = serde_json::Value::String(text).to_string();
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next;
        *next += 1;
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
        let event = format!(
            "42[\"oh_event\",{{\"id\":{id},\"timestamp\":\"{timestamp}\",\"source\":\"user\",\
             \"message\":{text},\"type\":\"message\",\"action\":\"message\",\"args\":{{\
             \"content\":{text},\"file_urls\":null,\"image_urls\":null,\
             \"wait_for_response\":false,\"security_risk\":-1}}}}]"
        );
        // Sent under the lock, so ids go out in order.
        let _ = self.tx.send(Message::text(event));
    }
}

/// The text of a message action, in either form the benchmark clients send.
fn message_text(action: &str) -> Option<String> {
    let action: serde_json::Value = serde_json::from_str(action).ok()?;
    let text = action
        .pointer("/args/content")
        .or_else(|| action.get("message"))?;
    text.as_str().map(str::to_owned)
}

pub async fn run(args: Args) -> Result<()> {
    let listener = TcpListener::bind((args.host.as_str(), args.port)).await?;
    println!("rawcast listening on http://{}", listener.local_addr()?);
    let hub = Arc::new(Hub {
        next_id: Mutex::new(0),
        tx: broadcast::channel(CAPACITY).0,
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let hub = hub.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, hub).await {
                eprintln!("rawcast: client ended: {e}");
            }
        });
    }
}

async fn serve(stream: TcpStream, hub: Arc<Hub>) -> Result<()> {
    stream.set_nodelay(true)?;
    // The read buffer ohd uses too, instead of tungstenite's 128 KiB.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    ws.send(Message::text(OPEN)).await?;
    let mut events: Option<broadcast::Receiver<Message>> = None;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "40" || t.starts_with("40{") {
                        if events.is_none() {
                            events = Some(hub.tx.subscribe());
                        }
                        ws.send(Message::text(CONNECTED)).await?;
                    } else if let Some(action) = crate::sio::user_action_payload(t) {
                        hub.publish(action);
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            message = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match message {
                Ok(first) => {
                    ws.feed(first).await?;
                    let mut more = 1;
                    while more < BATCH {
                        let Some(rx) = events.as_mut() else { break };
                        match rx.try_recv() {
                            Ok(m) => { ws.feed(m).await?; more += 1; }
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                eprintln!("rawcast: a client lost {n} events");
                            }
                            Err(_) => break,
                        }
                    }
                    ws.flush().await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("rawcast: a client lost {n} events");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_text_of_both_message_forms() {
        let openhands = r#"{"action":"message","args":{"content":"hi \"there\""}}"#;
        assert_eq!(message_text(openhands).as_deref(), Some("hi \"there\""));
        assert_eq!(
            message_text(r#"{"type":"message","message":"x"}"#).as_deref(),
            Some("x")
        );
        assert_eq!(message_text(r#"{"action":"run","args":{}}"#), None);
        assert_eq!(message_text("not json"), None);
    }
}
