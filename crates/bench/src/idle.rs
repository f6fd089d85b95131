//! Idle memory: the server's resident set before and after N clients join one conversation
//! and sit idle.

use crate::proc::rss_kib;
use crate::sio;
use crate::{Common, conversation_for};
use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Join this conversation instead of creating one with POST /api/conversations
    #[arg(long)]
    pub conversation: Option<String>,
    /// Connections opened at once
    #[arg(long, default_value_t = 50)]
    pub connect_concurrency: usize,
    /// Seconds to wait after the last join before reading the resident set
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Only open the Engine.IO transport, without the Socket.IO CONNECT (to tell the cost
    /// of the transport from that of a joined session)
    #[arg(long)]
    pub no_join: bool,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let pid = args.common.pid.context("idle needs the server's --pid")?;
    let conversation = conversation_for(&args.common.url, args.conversation.clone()).await?;
    let url = sio::socket_url(&args.common.url, &conversation, -1)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    eprintln!(
        "idle: server RSS {before} KiB; joining {} clients",
        args.clients
    );

    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let changed = Arc::new(Notify::new());
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = sio::now_ns();
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let url = url.clone();
        let (joined, failed, changed, connecting, first_failure) = (
            joined.clone(),
            failed.clone(),
            changed.clone(),
            connecting.clone(),
            first_failure.clone(),
        );
        let mut stop = stop_rx.clone();
        let no_join = args.no_join;
        tasks.push(tokio::spawn(async move {
            let ws = {
                let _permit = connecting.acquire().await;
                if no_join {
                    sio::open(&url).await
                } else {
                    sio::open_and_join(&url).await
                }
            };
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    if let Ok(mut f) = first_failure.lock() {
                        f.get_or_insert_with(|| format!("{e:#}"));
                    }
                    failed.fetch_add(1, Ordering::SeqCst);
                    changed.notify_one();
                    return;
                }
            };
            joined.fetch_add(1, Ordering::SeqCst);
            changed.notify_one();
            // Idle: answer pings, nothing else.
            loop {
                tokio::select! {
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                            let _ = ws.send(Message::text("3")).await;
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    _ = stop.changed() => break,
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while joined.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < args.clients {
        if tokio::time::timeout_at(deadline, changed.notified())
            .await
            .is_err()
        {
            let _ = stop_tx.send(true);
            bail!(
                "only {} of {} clients joined in {} s",
                joined.load(Ordering::SeqCst),
                args.clients,
                args.timeout
            );
        }
    }
    let join_s = (sio::now_ns() - start) as f64 / 1e9;
    let n_joined = joined.load(Ordering::SeqCst);
    eprintln!(
        "idle: {n_joined} joined in {join_s:.1} s; waiting {} s",
        args.settle
    );
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = rss_kib(pid)?;
    let per_client = (after.saturating_sub(before) as f64 * 1024.0) / n_joined.max(1) as f64;
    eprintln!(
        "idle: server RSS {after} KiB with {n_joined} clients: {:.1} KiB per client",
        per_client / 1024.0
    );
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let n_failed = failed.load(Ordering::SeqCst);
    let mut problems = Vec::new();
    if n_failed > 0 {
        let first = first_failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        problems.push(format!(
            "{n_failed} clients failed to join (first: {first})"
        ));
    }
    Ok(json!({
        "test": "idle",
        "label": args.common.label,
        "clients": args.clients,
        "joined": n_joined,
        "no_join": args.no_join,
        "join_s": join_s,
        "rss_idle_kib": before,
        "rss_clients_kib": after,
        "per_client_bytes": per_client,
        "ok": problems.is_empty(),
        "problems": problems,
    }))
}
