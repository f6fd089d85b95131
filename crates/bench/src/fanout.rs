//! Fan-out: N clients joined to one conversation, one writer appends E events; how long until
//! every client has every event, and how long each delivery took.

use crate::proc;
use crate::sio::{self, Parsed, Ws};
use crate::writer::{self, Pacing};
use crate::{Common, conversation_for, percentile};
use anyhow::{Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Characters of message content per event
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Join this conversation instead of creating one with POST /api/conversations
    #[arg(long)]
    pub conversation: Option<String>,
    /// Events the writer may send before it has seen them echoed back
    #[arg(long, default_value_t = 200)]
    pub window: usize,
    /// Events the writer may be ahead of the slowest client (0: unlimited)
    #[arg(long, default_value_t = 1000)]
    pub max_lag: u64,
    /// Events per second the writer sends at (0: as fast as the pacing allows)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connections opened at once while the clients join
    #[arg(long, default_value_t = 50)]
    pub connect_concurrency: usize,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Servers the clients join, in turn (several ohd nodes over one database); the writer
    /// stays on --url. Default: --url
    #[arg(long, value_delimiter = ',')]
    pub client_urls: Vec<String>,
}

struct CpuUse {
    wall_s: f64,
    machine_s: Option<f64>,
    bench_s: Option<f64>,
}

#[derive(Default)]
struct ClientStats {
    events: u64,
    next_id: u64,
    next_seq: u64,
    order_errors: u64,
    first_order_error: Option<String>,
    errors: Vec<String>,
    error_count: u64,
    others: u64,
    latencies_us: Vec<u32>,
    done_ns: Option<u64>,
    ended: Option<String>,
}

struct Shared {
    progress: Arc<Vec<AtomicU64>>,
    joined: AtomicUsize,
    join_failed: AtomicUsize,
    finished: AtomicUsize,
    changed: Notify,
}

impl Shared {
    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let conversation = conversation_for(&args.common.url, args.conversation.clone()).await?;
    let url = sio::socket_url(&args.common.url, &conversation, -1)?;
    let client_urls = if args.client_urls.is_empty() {
        vec![url.clone()]
    } else {
        args.client_urls
            .iter()
            .map(|u| sio::socket_url(u, &conversation, -1))
            .collect::<Result<Vec<_>>>()?
    };
    let n = args.clients;
    let shared = Arc::new(Shared {
        progress: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
        joined: AtomicUsize::new(0),
        join_failed: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);

    eprintln!("fanout: joining {n} clients to conversation {conversation}");
    let mut tasks = Vec::with_capacity(n);
    for index in 0..n {
        let url = client_urls[index % client_urls.len()].clone();
        let shared = shared.clone();
        let connecting = connecting.clone();
        let stop = stop_rx.clone();
        let events = args.events;
        tasks.push(tokio::spawn(async move {
            let ws = {
                let _permit = connecting.acquire().await;
                sio::open_and_join(&url).await
            };
            match ws {
                Ok(ws) => {
                    shared.bump(&shared.joined);
                    client(ws, index, events, &shared, stop).await
                }
                Err(e) => {
                    shared.bump(&shared.join_failed);
                    shared.bump(&shared.finished);
                    ClientStats {
                        ended: Some(format!("join failed: {e:#}")),
                        ..ClientStats::default()
                    }
                }
            }
        }));
    }
    let join_start = sio::now_ns();
    while shared.joined.load(Ordering::SeqCst) + shared.join_failed.load(Ordering::SeqCst) < n {
        if tokio::time::timeout_at(deadline, shared.changed.notified())
            .await
            .is_err()
        {
            bail!("clients did not join in time");
        }
    }
    let join_s = (sio::now_ns() - join_start) as f64 / 1e9;
    let join_failed = shared.join_failed.load(Ordering::SeqCst);
    eprintln!(
        "fanout: {} joined in {join_s:.1} s, {join_failed} failed",
        n - join_failed
    );

    let pacing = Pacing {
        events: args.events,
        size: args.size,
        window: args.window,
        max_lag: args.max_lag,
        rate: args.rate,
    };
    let cpu_start = args.common.pid.and_then(|p| proc::cpu_seconds(p).ok());
    let machine_start = proc::machine_busy_seconds().ok();
    let own_start = proc::own_cpu_seconds().ok();
    let wall_start = sio::now_ns();
    let writer = {
        let url = url.clone();
        let progress = shared.progress.clone();
        tokio::spawn(async move { writer::write(&url, &pacing, Some(progress)).await })
    };
    let mut timed_out = false;
    let mut last_print = sio::now_ns();
    while shared.finished.load(Ordering::SeqCst) < n {
        let tick = tokio::time::Instant::now() + Duration::from_secs(5);
        if tokio::time::timeout_at(tick.min(deadline), shared.changed.notified())
            .await
            .is_err()
            && tokio::time::Instant::now() >= deadline
        {
            timed_out = true;
            break;
        }
        if sio::now_ns() - last_print > 5_000_000_000 {
            last_print = sio::now_ns();
            let delivered: u64 = shared
                .progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .sum();
            eprintln!(
                "fanout: {delivered} of {} deliveries, {} clients done",
                args.events * n as u64,
                shared.finished.load(Ordering::SeqCst)
            );
        }
    }
    let writer = if timed_out {
        writer.abort();
        None
    } else {
        match tokio::time::timeout_at(deadline, writer).await {
            Ok(Ok(Ok(report))) => Some(report),
            Ok(Ok(Err(e))) => {
                eprintln!("fanout: writer failed: {e:#}");
                None
            }
            _ => None,
        }
    };
    let server = args.common.pid.map(|pid| {
        let cpu = proc::cpu_seconds(pid)
            .ok()
            .zip(cpu_start)
            .map(|(b, a)| b - a);
        (cpu, proc::peak_rss_kib(pid).ok())
    });
    let wall_s = (sio::now_ns() - wall_start) as f64 / 1e9;
    let machine_s = proc::machine_busy_seconds()
        .ok()
        .zip(machine_start)
        .map(|(b, a)| b - a);
    let own_s = proc::own_cpu_seconds()
        .ok()
        .zip(own_start)
        .map(|(b, a)| b - a);
    let cpu = CpuUse {
        wall_s,
        machine_s,
        bench_s: own_s,
    };
    let _ = stop_tx.send(true);
    let mut stats = Vec::with_capacity(n);
    for task in tasks {
        if let Ok(s) = task.await {
            stats.push(s);
        }
    }
    Ok(summarize(
        &args, &stats, writer, join_s, timed_out, server, cpu,
    ))
}

/// One receiving client: counts, checks and times every event until it has them all, then
/// keeps answering pings until the run ends.
async fn client(
    mut ws: Ws,
    index: usize,
    events: u64,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> ClientStats {
    let mut s = ClientStats {
        latencies_us: Vec::with_capacity(events as usize),
        ..ClientStats::default()
    };
    let progress = &shared.progress[index];
    if events == 0 {
        s.done_ns = Some(sio::now_ns());
        shared.bump(&shared.finished);
    }
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = stop.changed() => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                s.ended = Some(format!("closed by the server: {c:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                s.ended = Some(format!("connection failed: {e}"));
                break;
            }
            None => {
                s.ended = Some("connection ended".into());
                break;
            }
        };
        let text = text.as_str();
        if text == "2" {
            let _ = ws.send(Message::text("3")).await;
            continue;
        }
        match sio::parse_event(text) {
            Some(Parsed::Event { id, stamp }) => {
                let now = sio::now_ns();
                if id != s.next_id {
                    s.order_errors += 1;
                    s.first_order_error
                        .get_or_insert_with(|| format!("expected id {}, got {id}", s.next_id));
                }
                s.next_id = id + 1;
                match stamp {
                    Some((seq, sent)) => {
                        if seq != s.next_seq {
                            s.order_errors += 1;
                            s.first_order_error.get_or_insert_with(|| {
                                format!("expected message {}, got {seq}", s.next_seq)
                            });
                        }
                        s.next_seq = seq + 1;
                        let us = now.saturating_sub(sent) / 1000;
                        s.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        s.events += 1;
                        progress.store(s.events, Ordering::Relaxed);
                        if s.events == events {
                            s.done_ns = Some(now);
                            shared.bump(&shared.finished);
                        }
                    }
                    None => s.others += 1,
                }
            }
            Some(Parsed::Error(body)) => {
                s.error_count += 1;
                if s.errors.len() < 5 {
                    s.errors.push(body.chars().take(300).collect());
                }
            }
            Some(Parsed::Other) => s.others += 1,
            None => {}
        }
    }
    if s.done_ns.is_none() {
        shared.bump(&shared.finished);
    }
    let _ = ws.close(None).await;
    s
}

fn summarize(
    args: &Args,
    stats: &[ClientStats],
    writer: Option<writer::WriterReport>,
    join_s: f64,
    timed_out: bool,
    server: Option<(Option<f64>, Option<u64>)>,
    cpu: CpuUse,
) -> serde_json::Value {
    let n = args.clients;
    let complete = stats.iter().filter(|s| s.done_ns.is_some()).count();
    let delivered: u64 = stats.iter().map(|s| s.events).sum();
    let expected = args.events * n as u64;
    let order_errors: u64 = stats.iter().map(|s| s.order_errors).sum();
    let error_events: u64 = stats.iter().map(|s| s.error_count).sum();
    let ended: Vec<&str> = stats
        .iter()
        .filter(|s| s.done_ns.is_none())
        .filter_map(|s| s.ended.as_deref())
        .collect();
    let mut latencies: Vec<u32> = Vec::with_capacity(delivered as usize);
    for s in stats {
        latencies.extend_from_slice(&s.latencies_us);
    }
    latencies.sort_unstable();
    let ms = |us: Option<u32>| us.map(|v| f64::from(v) / 1000.0);
    let first_send = writer.as_ref().map(|w| w.first_send_ns);
    let last_done = stats.iter().filter_map(|s| s.done_ns).max();
    let total_s = match (first_send, last_done) {
        (Some(a), Some(b)) if complete == n => Some((b.saturating_sub(a)) as f64 / 1e9),
        _ => None,
    };
    let mut problems = Vec::new();
    if timed_out {
        problems.push(format!("timed out after {} s", args.timeout));
    }
    if complete < n {
        problems.push(format!(
            "{} of {n} clients did not get every event ({} of {expected} deliveries)",
            n - complete,
            delivered
        ));
    }
    if order_errors > 0 {
        let first = stats
            .iter()
            .find_map(|s| s.first_order_error.clone())
            .unwrap_or_default();
        problems.push(format!(
            "{order_errors} out-of-order/missing ids (first: {first})"
        ));
    }
    if error_events > 0 {
        let first = stats
            .iter()
            .find_map(|s| s.errors.first().cloned())
            .unwrap_or_default();
        problems.push(format!("{error_events} error events (first: {first})"));
    }
    if let Some(first) = ended.first() {
        problems.push(format!("{} clients cut off (first: {first})", ended.len()));
    }
    match &writer {
        Some(w) if !w.errors.is_empty() => problems.push(format!(
            "writer got {} errors (first: {})",
            w.errors.len(),
            w.errors[0]
        )),
        Some(w) if w.order_errors > 0 => {
            problems.push(format!("writer saw {} echoes out of order", w.order_errors))
        }
        None => problems.push("writer did not finish".into()),
        _ => {}
    }
    let others: u64 = stats.iter().map(|s| s.others).sum();
    let (server_cpu_s, server_peak_rss_kib) = server.unwrap_or((None, None));
    // CPU the machine spent on neither the server nor this benchmark while it ran.
    let other_cpu_s = match (cpu.machine_s, cpu.bench_s, server_cpu_s) {
        (Some(m), Some(b), Some(s)) => Some((m - b - s).max(0.0)),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let note = other_cpu_s
        .filter(|o| *o > 0.05 * cpu.wall_s * cores)
        .map(|o| {
            format!(
                "other processes used {o:.1} s of CPU during this {:.1} s run: the machine was not quiet",
                cpu.wall_s
            )
        });
    json!({
        "test": "fanout",
        "label": args.common.label,
        "clients": n,
        "events": args.events,
        "size": args.size,
        "window": args.window,
        "max_lag": args.max_lag,
        "rate": args.rate,
        "join_s": join_s,
        "total_s": total_s,
        "deliveries_per_s": total_s.map(|t| expected as f64 / t),
        "delivered": delivered,
        "expected": expected,
        "complete_clients": complete,
        "p50_ms": ms(percentile(&latencies, 0.50)),
        "p99_ms": ms(percentile(&latencies, 0.99)),
        "p999_ms": ms(percentile(&latencies, 0.999)),
        "max_ms": ms(latencies.last().copied()),
        "mean_ms": if latencies.is_empty() { None } else {
            Some(latencies.iter().map(|&v| f64::from(v)).sum::<f64>() / latencies.len() as f64 / 1000.0)
        },
        "writer_send_s": writer.as_ref().map(|w| (w.last_send_ns - w.first_send_ns) as f64 / 1e9),
        "writer_lag_waits": writer.as_ref().map(|w| w.lag_waits),
        "other_events": others,
        "server_cpu_s": server_cpu_s,
        "server_cpu_s_per_million": server_cpu_s.map(|c| c * 1e6 / expected.max(1) as f64),
        "server_peak_rss_kib": server_peak_rss_kib,
        "bench_cpu_s": cpu.bench_s,
        "other_cpu_s": other_cpu_s,
        "wall_s": cpu.wall_s,
        "note": note,
        "ok": problems.is_empty(),
        "problems": problems,
    })
}
