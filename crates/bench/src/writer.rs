//! The one connection that appends the benchmark's events, paced so that it never floods the
//! server: at most `window` messages it has not yet seen echoed back, and (in fan-out) at most
//! `max_lag` events ahead of the slowest receiving client.

use crate::sio::{self, Parsed};
use anyhow::{Result, bail};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;

pub struct Pacing {
    pub events: u64,
    pub size: usize,
    /// Messages sent but not yet echoed back to the writer.
    pub window: usize,
    /// Events the writer may be ahead of the slowest client (0: no limit).
    pub max_lag: u64,
    /// Events per second (0: as fast as the pacing above allows).
    pub rate: f64,
}

#[derive(Debug, Default)]
pub struct WriterReport {
    pub first_send_ns: u64,
    pub last_send_ns: u64,
    pub sent: u64,
    pub echoed: u64,
    /// Error notices the writer received (RATE_LIMITED would be a benchmark bug).
    pub errors: Vec<String>,
    pub order_errors: u64,
    /// How often the writer waited for the slowest client.
    pub lag_waits: u64,
}

/// Appends `pacing.events` messages through one Socket.IO connection to `url` and waits for all
/// of them to come back. `progress` holds each receiving client's count of events so far.
pub async fn write(
    url: &str,
    pacing: &Pacing,
    progress: Option<Arc<Vec<AtomicU64>>>,
) -> Result<WriterReport> {
    let ws = sio::open_and_join(url).await?;
    let (sink, mut stream) = ws.split();
    let sink = Arc::new(Mutex::new(sink));
    let permits = Arc::new(Semaphore::new(pacing.window));
    let events = pacing.events;

    let reader = {
        let sink = sink.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut report = WriterReport::default();
            let mut next_seq = 0u64;
            while report.echoed + (report.errors.len() as u64) < events {
                let frame = match stream.next().await {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        report.errors.push("writer connection closed".into());
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        report.errors.push(format!("writer connection failed: {e}"));
                        break;
                    }
                };
                let text = frame.as_str();
                if text == "2" {
                    let _ = sink.lock().await.send(Message::text("3")).await;
                    continue;
                }
                match sio::parse_event(text) {
                    Some(Parsed::Event {
                        stamp: Some((seq, _)),
                        ..
                    }) => {
                        if seq != next_seq {
                            report.order_errors += 1;
                        }
                        next_seq = seq + 1;
                        report.echoed += 1;
                        permits.add_permits(1);
                    }
                    Some(Parsed::Error(body)) => {
                        // The message it answers was dropped: free its slot and report it.
                        report.errors.push(body.chars().take(300).collect());
                        permits.add_permits(1);
                    }
                    _ => {}
                }
            }
            report
        })
    };

    let mut first_send_ns = 0;
    let mut last_send_ns = 0;
    let mut lag_waits = 0;
    let start = tokio::time::Instant::now();
    for seq in 0..events {
        permits.acquire().await?.forget();
        if let Some(progress) = &progress
            && pacing.max_lag > 0
        {
            let mut waited = false;
            loop {
                let slowest = progress
                    .iter()
                    .map(|p| p.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(seq);
                if seq < slowest + pacing.max_lag {
                    break;
                }
                waited = true;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            lag_waits += u64::from(waited);
        }
        if pacing.rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / pacing.rate))
                .await;
        }
        let message = sio::user_message(seq, pacing.size);
        last_send_ns = sio::now_ns();
        if seq == 0 {
            first_send_ns = last_send_ns;
        }
        if let Err(e) = sink.lock().await.send(Message::text(message)).await {
            bail!("writer could not send event {seq}: {e}");
        }
    }
    let mut report = reader.await?;
    report.first_send_ns = first_send_ns;
    report.last_send_ns = last_send_ns;
    report.sent = events;
    report.lag_waits = lag_waits;
    let _ = sink.lock().await.close().await;
    Ok(report)
}
