//! Startup: from spawning the server to its `/alive` answering 200, polled every millisecond.

use crate::median;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the target in the results
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Write the result as JSON here as well
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Times to start the server (each with a fresh port and a fresh {dir})
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Give up on one start after this many seconds
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// The server command; `{port}` is replaced by a free port and `{dir}` by a fresh, empty
    /// directory
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `GET /alive`; true on a 200.
async fn alive(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request =
        format!("GET /alive HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
        _ => false,
    }
}

async fn start_once(args: &Args, run: usize) -> Result<f64> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("ohd-bench-startup-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let subst = |a: &String| {
        a.replace("{port}", &port.to_string())
            .replace("{dir}", &dir.to_string_lossy())
    };
    let program = subst(args.command.first().context("no command")?);
    let rest: Vec<String> = args.command[1..].iter().map(subst).collect();
    let start = Instant::now();
    let mut child = tokio::process::Command::new(&program)
        .args(&rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let deadline = start + Duration::from_secs(args.timeout);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tick.tick().await;
        if alive(port).await {
            break Ok(start.elapsed().as_secs_f64());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "the server exited with {status} before /alive answered"
            ));
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "/alive did not answer within {} s",
                args.timeout
            ));
        }
    };
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    if args.command.is_empty() {
        bail!("no server command given");
    }
    let mut times = Vec::new();
    let mut problems = Vec::new();
    for run in 0..args.repeat.max(1) {
        match start_once(&args, run).await {
            Ok(t) => {
                eprintln!("startup {}: {:.1} ms", run + 1, t * 1000.0);
                times.push(t);
            }
            Err(e) => problems.push(format!("start {}: {e:#}", run + 1)),
        }
    }
    let ms: Vec<f64> = times.iter().map(|t| t * 1000.0).collect();
    Ok(json!({
        "test": "startup",
        "label": args.label,
        "runs_ms": ms,
        "median_ms": median(&ms),
        "min_ms": ms.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v)))),
        "ok": problems.is_empty() && !ms.is_empty(),
        "problems": problems,
    }))
}
