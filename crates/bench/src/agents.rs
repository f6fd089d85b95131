//! Memory of conversations whose agents ran a task: N conversations, each of which ran one
//! command and finished, read while their agents are live (shell and sandbox kept), then
//! after the server released them for being idle (`[agent] idle_timeout_secs`). The server
//! must run with a scripted model that answers each conversation's message with one command
//! and then `finish` (`bench/agents.sh` sets it up).

use crate::Common;
use crate::proc::rss_kib;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 100)]
    pub conversations: usize,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// The resident set of `pid` and every process under it (the agents' shells, sandboxes and
/// their network helpers), in KiB, and how many processes that is. Shared pages count once
/// per process, so the sum overstates a little.
fn tree_rss_kib(pid: u32) -> (u64, usize) {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The fields after the command name, which is in parentheses and may hold spaces.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok());
            if let Some(parent) = parent {
                parents.push((child, parent));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let at = tree[i];
        tree.extend(parents.iter().filter(|(_, p)| *p == at).map(|(c, _)| *c));
        i += 1;
    }
    let total = tree.iter().filter_map(|p| rss_kib(*p).ok()).sum();
    (total, tree.len())
}

async fn finished(http: &reqwest::Client, base: &str, id: &str) -> Result<bool> {
    let body: Value = http
        .get(format!(
            "{base}/api/conversations/{id}/events?start_id=0&limit=100&reverse=true"
        ))
        .send()
        .await?
        .json()
        .await?;
    let events = body["events"].as_array().cloned().unwrap_or_default();
    if let Some(state) = events
        .iter()
        .find_map(|e| e["extras"]["agent_state"].as_str())
    {
        if state == "error" {
            bail!("conversation {id} ended in error: {events:?}");
        }
        return Ok(state == "finished");
    }
    Ok(false)
}

async fn status(http: &reqwest::Client, base: &str, id: &str) -> Result<String> {
    let body: Value = http
        .get(format!("{base}/api/conversations/{id}"))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["status"].as_str().unwrap_or_default().to_owned())
}

pub async fn run(args: Args) -> Result<Value> {
    let pid = args.common.pid.context("agents needs the server's --pid")?;
    let base = args.common.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (empty, empty_processes) = tree_rss_kib(pid);
    let server_empty = rss_kib(pid)?;
    let mut ids = Vec::with_capacity(args.conversations);
    // One at a time: the scripted model's turns are shared, two per conversation.
    for n in 0..args.conversations {
        let body: Value = http
            .post(format!("{base}/api/conversations"))
            .json(&json!({"initial_user_msg": format!("task {n}")}))
            .send()
            .await?
            .json()
            .await?;
        let id = body["conversation_id"]
            .as_str()
            .context("no conversation id")?
            .to_owned();
        while !finished(&http, &base, &id).await? {
            if Instant::now() > deadline {
                bail!("conversation {n} did not finish in time");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (live, live_processes) = tree_rss_kib(pid);
    let server_live = rss_kib(pid)?;
    eprintln!(
        "agents: {} live: {live} KiB in {live_processes} processes (server {server_live} KiB); waiting for the release",
        ids.len()
    );
    let released_at = Instant::now();
    for id in &ids {
        while status(&http, &base, id).await? != "STOPPED" {
            if Instant::now() > deadline {
                bail!("conversation {id} was not released in time");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let waited = released_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (released, released_processes) = tree_rss_kib(pid);
    let server_released = rss_kib(pid)?;
    eprintln!(
        "agents: released after {:.1} s: {released} KiB in {released_processes} processes (server {server_released} KiB)",
        waited.as_secs_f64()
    );
    Ok(json!({
        "benchmark": "agents",
        "label": args.common.label,
        "conversations": ids.len(),
        "empty_tree_kib": empty,
        "empty_processes": empty_processes,
        "empty_server_kib": server_empty,
        "live_tree_kib": live,
        "live_processes": live_processes,
        "live_server_kib": server_live,
        "released_tree_kib": released,
        "released_processes": released_processes,
        "released_server_kib": server_released,
        "live_per_conversation_kib": (live.saturating_sub(empty)) as f64 / ids.len().max(1) as f64,
        "released_per_conversation_kib": (released.saturating_sub(empty)) as f64 / ids.len().max(1) as f64,
    }))
}
