//! `ohd-bench`: fan-out, replay, idle memory and startup time of a Socket.IO server speaking
//! ohd's protocol, plus `rawcast`, a raw websocket broadcast to compare against, and `report`,
//! which turns the results into a Markdown table. `bench/run.sh` runs it all.

mod agents;
mod fanout;
mod idle;
mod proc;
mod rawcast;
mod replay;
mod report;
mod sio;
mod startup;
mod writer;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ohd-bench",
    about = "Benchmarks for ohd and the servers it is compared with"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N clients in one conversation, one writer appends E events: time and latency
    Fanout(fanout::Args),
    /// Time for a fresh client to receive a whole conversation from latest_event_id=-1
    Replay(replay::Args),
    /// The server's resident memory idle and per idle connected client
    Idle(idle::Args),
    /// Time from spawning a server to its /alive answering
    Startup(startup::Args),
    /// Memory of N conversations whose agents ran a task, live and after their idle release
    Agents(agents::Args),
    /// Run the raw websocket broadcast reference server
    Rawcast(rawcast::Args),
    /// Print a Markdown table of the JSON results in a folder
    Report(report::Args),
}

/// What every client-side benchmark takes.
#[derive(clap::Args)]
pub struct Common {
    /// The server, e.g. http://127.0.0.1:3000
    #[arg(long)]
    pub url: String,
    /// Name of the target in the results
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Write the result as JSON here as well
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The server's process id: its CPU time and peak memory are reported too
    #[arg(long)]
    pub pid: Option<u32>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (result, out) = match cli.command {
            Command::Rawcast(args) => return rawcast::run(args).await,
            Command::Report(args) => return report::run(args),
            Command::Fanout(args) => {
                let out = args.common.out.clone();
                (fanout::run(args).await?, out)
            }
            Command::Replay(args) => {
                let out = args.common.out.clone();
                (replay::run(args).await?, out)
            }
            Command::Idle(args) => {
                let out = args.common.out.clone();
                (idle::run(args).await?, out)
            }
            Command::Agents(args) => {
                let out = args.common.out.clone();
                (agents::run(args).await?, out)
            }
            Command::Startup(args) => {
                let out = args.out.clone();
                (startup::run(args).await?, out)
            }
        };
        let text = serde_json::to_string_pretty(&result)?;
        println!("{text}");
        if let Some(path) = out {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })
}

/// The conversation to use: the one given, else a new one from `POST /api/conversations`, else
/// (a server without that route, like the python baseline) a made-up id.
pub async fn conversation_for(url: &str, given: Option<String>) -> Result<String> {
    if let Some(id) = given {
        return Ok(id);
    }
    let endpoint = format!("{}/api/conversations", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .json(&serde_json::json!({}))
        .send()
        .await;
    if let Ok(response) = response
        && response.status().is_success()
    {
        let body: serde_json::Value = response.json().await?;
        if let Some(id) = body["conversation_id"].as_str() {
            return Ok(id.to_owned());
        }
    }
    Ok(format!("bench{}x{}", std::process::id(), sio::now_ns()))
}

/// The value at quantile `q` of sorted `values`.
pub fn percentile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}
