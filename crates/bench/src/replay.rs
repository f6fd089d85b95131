//! Replay: a conversation of N events; how long one fresh client takes from connecting with
//! `latest_event_id=-1` to holding all of them.

use crate::proc;
use crate::sio::{self, Parsed};
use crate::writer::{self, Pacing};
use crate::{Common, conversation_for, median};
use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fill {
    /// Append through one websocket writer, paced (what a real client does)
    Ws,
    /// POST /bench/seed (the python baseline's in-memory shortcut)
    Seed,
    /// The conversation is already filled
    None,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Characters of message content per event
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    #[arg(long, value_enum, default_value_t = Fill::Ws)]
    pub fill: Fill,
    /// Use this conversation instead of creating one with POST /api/conversations
    #[arg(long)]
    pub conversation: Option<String>,
    /// Events the writer may send before it has seen them echoed back (fill=ws)
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// Fresh clients timed, one after another
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Give up on one replay after this many seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

struct Replay {
    total_s: f64,
    first_event_s: Option<f64>,
    bytes: u64,
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let conversation = conversation_for(&args.common.url, args.conversation.clone()).await?;
    let fill_start = sio::now_ns();
    match args.fill {
        Fill::Ws => {
            let url = sio::socket_url(&args.common.url, &conversation, -1)?;
            let pacing = Pacing {
                events: args.events,
                size: args.size,
                window: args.window,
                max_lag: 0,
                rate: 0.0,
            };
            let report = tokio::time::timeout(
                Duration::from_secs(args.timeout),
                writer::write(&url, &pacing, None),
            )
            .await
            .context("filling the conversation timed out")??;
            if !report.errors.is_empty() || report.echoed != args.events {
                bail!(
                    "filling failed: {} of {} echoed, errors {:?}",
                    report.echoed,
                    args.events,
                    &report.errors[..report.errors.len().min(3)]
                );
            }
        }
        Fill::Seed => {
            let seed = format!(
                "{}/bench/seed?conversation_id={conversation}&count={}&size={}",
                args.common.url.trim_end_matches('/'),
                args.events,
                args.size
            );
            let response = reqwest::Client::new().post(&seed).send().await?;
            if !response.status().is_success() {
                bail!("seeding failed: {}", response.status());
            }
        }
        Fill::None => {}
    }
    let fill_s = (sio::now_ns() - fill_start) as f64 / 1e9;
    eprintln!(
        "replay: {} events in conversation {conversation} (filled in {fill_s:.1} s)",
        args.events
    );

    let url = sio::socket_url(&args.common.url, &conversation, -1)?;
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    let cpu_start = args.common.pid.and_then(|p| proc::cpu_seconds(p).ok());
    let machine_start = proc::machine_busy_seconds().ok();
    let own_start = proc::own_cpu_seconds().ok();
    let wall_start = sio::now_ns();
    for i in 0..args.repeat.max(1) {
        match tokio::time::timeout(
            Duration::from_secs(args.timeout),
            replay_once(&url, args.events),
        )
        .await
        {
            Ok(Ok(r)) => {
                eprintln!(
                    "replay {}: {:.3} s ({:.0} events/s, {:.1} MB)",
                    i + 1,
                    r.total_s,
                    args.events as f64 / r.total_s,
                    r.bytes as f64 / 1e6
                );
                runs.push(r);
            }
            Ok(Err(e)) => problems.push(format!("replay {}: {e:#}", i + 1)),
            Err(_) => problems.push(format!(
                "replay {} timed out after {} s",
                i + 1,
                args.timeout
            )),
        }
    }
    let server_cpu_total = args
        .common
        .pid
        .and_then(|p| proc::cpu_seconds(p).ok())
        .zip(cpu_start)
        .map(|(b, a)| b - a);
    let server_cpu_s = server_cpu_total.map(|c| c / args.repeat.max(1) as f64);
    let wall_s = (sio::now_ns() - wall_start) as f64 / 1e9;
    let other_cpu_s = match (
        proc::machine_busy_seconds().ok().zip(machine_start),
        proc::own_cpu_seconds().ok().zip(own_start),
        server_cpu_total,
    ) {
        (Some((m1, m0)), Some((o1, o0)), Some(s)) => Some(((m1 - m0) - (o1 - o0) - s).max(0.0)),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let note = other_cpu_s.filter(|o| *o > 0.05 * wall_s * cores).map(|o| {
        format!("other processes used {o:.1} s of CPU during these {wall_s:.1} s: the machine was not quiet")
    });
    let server_peak_rss_kib = args.common.pid.and_then(|p| proc::peak_rss_kib(p).ok());
    let totals: Vec<f64> = runs.iter().map(|r| r.total_s).collect();
    let total_s = median(&totals);
    Ok(json!({
        "test": "replay",
        "label": args.common.label,
        "events": args.events,
        "size": args.size,
        "fill": match args.fill { Fill::Ws => "ws", Fill::Seed => "seed", Fill::None => "none" },
        "fill_s": fill_s,
        "runs_s": totals,
        "total_s": total_s,
        "best_s": totals.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v)))),
        "events_per_s": total_s.map(|t| args.events as f64 / t),
        "first_event_s": median(&runs.iter().filter_map(|r| r.first_event_s).collect::<Vec<_>>()),
        "bytes": runs.first().map(|r| r.bytes),
        "server_cpu_s": server_cpu_s,
        "server_peak_rss_kib": server_peak_rss_kib,
        "other_cpu_s": other_cpu_s,
        "note": note,
        "ok": problems.is_empty() && !runs.is_empty(),
        "problems": problems,
    }))
}

/// Connects, joins, and reads until `events` events with ids 0..events-1 have arrived in order.
async fn replay_once(url: &str, events: u64) -> Result<Replay> {
    let start = sio::now_ns();
    let mut next_id = 0u64;
    let mut bytes = 0u64;
    let mut first_event_ns = None;
    let mut problem: Option<String> = None;
    let mut take = |text: &str, next_id: &mut u64| {
        bytes += text.len() as u64;
        match sio::parse_event(text) {
            Some(Parsed::Event { id, .. }) => {
                first_event_ns.get_or_insert_with(sio::now_ns);
                if id != *next_id && problem.is_none() {
                    problem = Some(format!("expected id {next_id}, got {id}"));
                }
                *next_id = id + 1;
            }
            Some(Parsed::Error(body)) => {
                problem.get_or_insert_with(|| format!("error event: {body}"));
            }
            _ => {}
        }
    };
    let mut ws = sio::open(url).await?;
    // python-socketio may send the replay before its CONNECT reply; count those too.
    sio::join(&mut ws, |t| take(t, &mut next_id)).await?;
    while next_id < events {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                } else {
                    take(t.as_str(), &mut next_id);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("connection failed after {next_id} events: {e}"),
            None => bail!("connection ended after {next_id} events"),
        }
    }
    let end = sio::now_ns();
    let _ = ws.close(None).await;
    if let Some(p) = problem {
        bail!("{p}");
    }
    Ok(Replay {
        total_s: (end - start) as f64 / 1e9,
        first_event_s: first_event_ns.map(|f| (f - start) as f64 / 1e9),
        bytes,
    })
}
