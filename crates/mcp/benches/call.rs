//! What ohd adds to an MCP tool call: the same `echo` call, many times, through ohd's client
//! (`McpHub::call`, as the agent makes it) and directly from the Python `mcp` client, against
//! the same FastMCP server (`e2e/mcp/server.py`) in the same run, over stdio and streamable
//! HTTP. The server is not sandboxed here, for either client, so that only the clients differ.
//!
//! Run: `cargo bench -p ohd-mcp --bench call` (needs `/usr/bin/python3` with `mcp`).
//! Options (environment): `MCP_BENCH_CALLS` (default 500).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_mcp::{McpConfig, McpHub, RemoteServer, StdioServer};
use ohd_runtime::sandbox::Launch;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn plain_launcher() -> ohd_mcp::Launcher {
    Arc::new(|argv: &[&str], env: &[(String, String)]| Launch {
        program: argv[0].into(),
        args: argv[1..].iter().map(Into::into).collect(),
        env: env.to_vec(),
        host_cwd: repo(),
        agent_root: repo(),
        sandboxed: false,
        plan: None,
    })
}

struct Figures {
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn figures(mut times: Vec<f64>) -> Figures {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    Figures {
        median_us: times[n / 2],
        p99_us: times[(n * 99 / 100).saturating_sub(1)],
        mean_us: times.iter().sum::<f64>() / n as f64,
    }
}

async fn through_ohd(config: McpConfig, calls: usize) -> Figures {
    let mut hub = McpHub::new(&config, &[], plain_launcher(), None);
    let failures = hub.connect().await;
    assert!(failures.is_empty(), "{failures:?}");
    for _ in 0..20 {
        let outcome = hub.call("echo", json!({"text": "warm"})).await;
        assert!(outcome.failure.is_none(), "{outcome:?}");
    }
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let text = format!("call {i}");
        let started = Instant::now();
        let outcome = hub.call("echo", json!({ "text": text })).await;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        let content: Value = serde_json::from_str(&outcome.content).unwrap();
        assert_eq!(content["content"][0]["text"], text.as_str());
    }
    figures(times)
}

fn directly(args: &[&str], calls: usize) -> Figures {
    let output = std::process::Command::new(PYTHON)
        .arg(repo().join("e2e/mcp/bench_client.py"))
        .args(args)
        .args(["--calls", &calls.to_string()])
        .output()
        .expect("python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    Figures {
        median_us: result["median_us"].as_f64().unwrap(),
        p99_us: result["p99_us"].as_f64().unwrap(),
        mean_us: result["mean_us"].as_f64().unwrap(),
    }
}

fn row(transport: &str, client: &str, f: &Figures) {
    println!(
        "{transport:<16} {client:<16} median {:>8.0} µs   p99 {:>8.0} µs   mean {:>8.0} µs",
        f.median_us, f.p99_us, f.mean_us
    );
}

#[tokio::main]
async fn main() {
    let calls: usize = std::env::var("MCP_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let server = repo().join("e2e/mcp/server.py");
    let server = server.to_str().unwrap();
    println!("MCP tool call (echo), {calls} calls each, after 20 to warm up\n");

    // stdio: each client starts its own server process.
    let stdio = McpConfig {
        stdio_servers: vec![StdioServer {
            name: "bench".into(),
            command: PYTHON.into(),
            args: vec![server.into(), "stdio".into()],
            env: Default::default(),
            timeout: None,
        }],
        ..McpConfig::default()
    };
    let ohd = through_ohd(stdio, calls).await;
    let python = directly(&["stdio", PYTHON, server, "stdio"], calls);
    row("stdio", "ohd (rmcp)", &ohd);
    row("stdio", "python mcp", &python);
    println!(
        "stdio: ohd / python median {:.2}, mean {:.2}\n",
        ohd.median_us / python.median_us,
        ohd.mean_us / python.mean_us
    );

    // Streamable HTTP: one server, both clients in turn.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(PYTHON)
        .args([server, "streamable-http", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/mcp");
    let shttp = McpConfig {
        shttp_servers: vec![RemoteServer {
            url: url.clone(),
            api_key: None,
            timeout: None,
        }],
        ..McpConfig::default()
    };
    let ohd = through_ohd(shttp, calls).await;
    let python = directly(&["shttp", &url], calls);
    let _ = child.kill();
    let _ = child.wait();
    row("streamable HTTP", "ohd (rmcp)", &ohd);
    row("streamable HTTP", "python mcp", &python);
    println!(
        "streamable HTTP: ohd / python median {:.2}, mean {:.2}",
        ohd.median_us / python.median_us,
        ohd.mean_us / python.mean_us
    );
}
