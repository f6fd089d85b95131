//! The real clients: the user's JavaScript example on socket.io-client 4, and python-socketio 5,
//! over websocket and long-polling. They run as child processes and print what they receive.

use crate::common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use tokio::process::Command;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

struct Run {
    code: i32,
    lines: Vec<Value>,
}

impl Run {
    fn events(&self) -> Vec<Value> {
        self.lines
            .iter()
            .filter(|l| l["kind"] == "event")
            .map(|l| l["event"].clone())
            .collect()
    }

    fn first(&self, kind: &str) -> Option<&Value> {
        self.lines.iter().find(|l| l["kind"] == kind)
    }
}

/// The Python that has the e2e clients' packages: `scripts/test.sh`'s own virtual environment
/// (`e2e/.venv`) when there is one, else the `python3` on the PATH.
fn python() -> String {
    let venv = e2e_dir().join(".venv/bin/python");
    if venv.exists() {
        venv.display().to_string()
    } else {
        "python3".to_owned()
    }
}

async fn run(program: &str, script: &str, args: &[String]) -> Run {
    let program = if program == "python3" {
        python()
    } else {
        program.to_owned()
    };
    let output = Command::new(&program)
        .arg(e2e_dir().join("clients").join(script))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (install the e2e dependencies, see README): {e}")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if output.status.code() != Some(0) {
        eprintln!(
            "{script} stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Run {
        code: output.status.code().unwrap_or(-1),
        lines,
    }
}

fn args(ohd: &Ohd, conv: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--url".to_owned(),
        format!("http://{}", ohd.addr),
        "--conversation".into(),
        conv.to_owned(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test]
async fn the_seed_javascript_example_sends_and_receives_over_socket_io_client() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 3).await;
    let message = json!({"type":"message","source":"user","message":"Hello, can you help me with my project?"}).to_string();
    let run = run(
        "node",
        "seed_client.mjs",
        &args(
            &ohd,
            &conv,
            &[
                "--latest",
                "-1",
                "--providers",
                "github,gitlab",
                "--send",
                &message,
                "--until-id",
                "3",
            ],
        ),
    )
    .await;
    assert_eq!(run.code, 0, "{:?}", run.lines);
    assert!(run.first("connect").is_some());
    let events = run.events();
    assert_eq!(ids(&events), vec![0, 1, 2, 3]);
    let mine = &events[3];
    assert_eq!(
        (mine["source"].as_str(), mine["type"].as_str()),
        (Some("user"), Some("message"))
    );
    assert_eq!(mine["message"], "Hello, can you help me with my project?");
    assert_eq!(ohd.events(&conv).await, events);
}

#[tokio::test]
async fn socket_io_client_over_long_polling_and_the_legacy_event_name() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let message = json!({"action":"message","args":{"content":"via polling"}}).to_string();
    let run = run(
        "node",
        "seed_client.mjs",
        &args(
            &ohd,
            &conv,
            &[
                "--transport",
                "polling",
                "--emit-event",
                "oh_action",
                "--send",
                &message,
                "--until-id",
                "0",
            ],
        ),
    )
    .await;
    assert_eq!(run.code, 0, "{:?}", run.lines);
    assert_eq!(run.events()[0]["args"]["content"], "via polling");
}

#[tokio::test]
async fn socket_io_client_upgrades_from_long_polling_to_websocket_without_loss() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut extra = vec!["--transport".to_owned(), "default".to_owned()];
    for i in 0..6 {
        extra.push("--send".to_owned());
        extra.push(json!({"action":"message","args":{"content":format!("m{i}")}}).to_string());
    }
    extra.extend(["--until-id".to_owned(), "5".to_owned()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let run = run("node", "seed_client.mjs", &args(&ohd, &conv, &extra)).await;
    assert_eq!(run.code, 0, "{:?}", run.lines);
    assert_eq!(
        run.first("upgrade").map(|l| l["transport"].clone()),
        Some(json!("websocket")),
        "{:?}",
        run.lines
    );
    assert_eq!(
        run.first("done").map(|l| l["transport"].clone()),
        Some(json!("websocket"))
    );
    // Whichever transport carried each event, each came once and in order.
    let events = run.events();
    assert_eq!(ids(&events), (0..6).collect::<Vec<u64>>());
    assert_eq!(ohd.events(&conv).await, events);
}

#[tokio::test]
async fn socket_io_client_sees_connect_error_data_for_an_unknown_conversation() {
    let ohd = Ohd::start().await;
    let run = run(
        "node",
        "seed_client.mjs",
        &args(
            &ohd,
            "0123456789abcdef0123456789abcdef",
            &["--no-reconnect"],
        ),
    )
    .await;
    assert_eq!(run.code, 2);
    let error = run.first("connect_error").unwrap();
    assert_eq!(
        error["message"],
        "conversation 0123456789abcdef0123456789abcdef not found"
    );
    assert_eq!(error["data"]["msg_id"], "CONVERSATION$NOT_FOUND");
    let run = self::run(
        "node",
        "seed_client.mjs",
        &[
            "--url".into(),
            format!("http://{}", ohd.addr),
            "--no-reconnect".into(),
        ],
    )
    .await;
    assert_eq!(
        run.first("connect_error").unwrap()["message"],
        "No conversation_id in query params"
    );
}

#[tokio::test]
async fn python_socketio_and_socket_io_client_see_identical_streams() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 5).await;
    let js_args = args(&ohd, &conv, &["--until-id", "7"]);
    let py_args = args(
        &ohd,
        &conv,
        &[
            "--until-id",
            "7",
            "--emit-event",
            "oh_action",
            "--send",
            &json!({"action":"message","args":{"content":"from python"}}).to_string(),
        ],
    );
    let js = tokio::spawn(async move { run("node", "seed_client.mjs", &js_args).await });
    // Let the JS client join first so it sees the Python client's messages live.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let py = tokio::spawn(async move { run("python3", "py_client.py", &py_args).await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut writer =
        RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}&latest_event_id=99"))).await;
    assert!(writer.connect("").await.starts_with("40"));
    writer.send(&user_message("six")).await;
    writer.send(&user_message("seven")).await;
    let js = js.await.unwrap();
    let py = py.await.unwrap();
    assert_eq!(py.code, 0, "{:?}", py.lines);
    assert_eq!(js.code, 0, "{:?}", js.lines);
    assert_eq!(ids(&js.events()), (0..8).collect::<Vec<_>>());
    // python-engineio's threading client runs each message's handler in a thread of its own, so
    // the order in which the script prints is not the order on the wire; the set must match.
    let mut from_python = py.events();
    from_python.sort_by_key(|e| e["id"].as_u64());
    assert_eq!(js.events(), from_python);
    assert_eq!(js.events()[5]["args"]["content"], "from python");
}

#[tokio::test]
async fn python_socketio_over_polling_resumes_from_latest_event_id() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 6).await;
    let run = run(
        "python3",
        "py_client.py",
        &args(
            &ohd,
            &conv,
            &["--transport", "polling", "--latest", "3", "--until-id", "5"],
        ),
    )
    .await;
    assert_eq!(run.code, 0, "{:?}", run.lines);
    let mut got = ids(&run.events());
    got.sort(); // handlers run in threads of their own: print order is not wire order
    assert_eq!(got, vec![4, 5]);
}
