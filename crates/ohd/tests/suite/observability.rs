//! Watching ohd (issue 13): `/metrics` in the OpenMetrics text format, behind the session key
//! or alone on `[server] metrics_addr`, and `--log-format json`.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use std::collections::BTreeMap;

/// The samples of a scrape: `name{labels}` to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

async fn scrape(ohd: &Ohd, key: Option<&str>) -> (u16, String, String) {
    let mut request = ohd.http.get(ohd.url("/metrics"));
    if let Some(key) = key {
        request = request.header("X-Session-API-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_move_as_a_scripted_task_does() {
    let (_llm, options) = scripted_llm(Script::new(vec![
        bash("echo counted"),
        bash("false"),
        Turn::text("done"),
    ]))
    .await;
    let ohd = Ohd::start_with(options).await;
    let (status, content_type, before) = scrape(&ohd, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(before.trim_end().ends_with("# EOF"));
    let before = samples(&before);

    let conv = ohd.create_conversation().await;
    // A refused join: a conversation that does not exist.
    let mut refused =
        RawClient::open(&ohd.ws_url("conversation_id=0123456789abcdef0123456789abcdef")).await;
    refused.connect("").await;
    // An error answered over REST.
    let (status, body) = ohd
        .get("/api/conversations/0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!(status, 404);
    let error_code = body["code"].as_str().unwrap().to_owned();
    let (events, _) = socket_io(&ohd, &conv, "", "run two commands").await;
    assert!(events.iter().any(|e| e["message"] == "done"));
    let (_, _, after) = scrape(&ohd, None).await;
    let after_text = after.clone();
    let after = samples(&after);
    let grew = |name: &str, by: f64| {
        let (b, a) = (value(&before, name), value(&after, name));
        assert!(a - b >= by, "{name}: {b} -> {a}\n{after_text}");
    };
    grew("ohd_joins_total", 1.0);
    grew(
        "ohd_join_refusals_total{reason=\"conversation_not_found\"}",
        1.0,
    );
    grew("ohd_events_appended_total", 8.0);
    grew("ohd_events_delivered_total", 8.0);
    grew("ohd_store_commit_seconds_count", 1.0);
    grew("ohd_replay_events_count", 1.0);
    grew("ohd_connections_opened_total{transport=\"websocket\"}", 2.0);
    grew("ohd_agent_steps_total{outcome=\"continue\"}", 2.0);
    grew("ohd_agent_steps_total{outcome=\"await_user\"}", 1.0);
    grew(
        "ohd_llm_requests_total{model=\"openai/scripted-model\",outcome=\"ok\"}",
        3.0,
    );
    grew(
        "ohd_llm_request_seconds_count{model=\"openai/scripted-model\"}",
        3.0,
    );
    grew("ohd_commands_total{exit=\"0\"}", 1.0);
    grew("ohd_commands_total{exit=\"nonzero\"}", 1.0);
    grew("ohd_command_seconds_count", 2.0);
    grew(&format!("ohd_errors_total{{code=\"{error_code}\"}}"), 1.0);
    assert!(value(&after, "ohd_agents_running") >= 1.0, "{after_text}");
    // No conversation id, message text or key in any label.
    assert!(!after_text.contains(&conv));
    assert!(!after_text.contains("run two commands"));
    assert!(!after_text.contains("sk-test-do-not-leak"));
}

#[tokio::test]
async fn metrics_need_the_session_key_or_their_own_address() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = Options::new();
    options
        .env
        .push(("SESSION_API_KEY".into(), "metrics-key-123".into()));
    options.config_toml = Some(format!(
        "[server]\nmetrics_addr = \"127.0.0.1:{metrics_port}\"\n"
    ));
    let ohd = Ohd::start_with(options).await;
    let (status, _, body) = scrape(&ohd, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("ohd_joins_total"));
    let (status, _, body) = scrape(&ohd, Some("metrics-key-123")).await;
    assert_eq!(status, 200);
    assert!(body.contains("ohd_joins_total"));
    // The metrics address serves them alone, for a scraper on a private network.
    let alone = ohd
        .http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(alone.status(), 200);
    assert!(alone.text().await.unwrap().contains("ohd_joins_total"));
    let other = ohd
        .http
        .get(format!("http://127.0.0.1:{metrics_port}/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn json_logs_carry_the_same_fields_as_text() {
    let mut options = Options::new();
    options.env.push(("OHD_LOG_FORMAT".into(), "json".into()));
    let dir = tempfile::tempdir().unwrap();
    options.log_file = Some(dir.path().join("ohd.log"));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.send(&user_message("hello")).await;
    client.events(1).await;
    let log = std::fs::read_to_string(dir.path().join("ohd.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "starting ohd")
        .expect("no start line");
    assert_eq!(started["level"], "INFO");
    assert!(started["fields"]["data_dir"].is_string());
    let joined = lines
        .iter()
        .find(|l| l["fields"]["message"] == "client joined")
        .expect("no join line");
    assert_eq!(joined["fields"]["conversation"], conv.as_str());
    assert!(joined["timestamp"].is_string() && joined["target"].is_string());
}

#[tokio::test]
async fn a_port_in_use_is_one_line_with_the_fix_and_no_backtrace() {
    let ohd = Ohd::start().await;
    let port = ohd.addr.rsplit(':').next().unwrap().to_owned();
    let data = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ohd"))
        .args(["serve", "--no-agent", "--port"])
        .arg(&port)
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_BACKTRACE", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("port {port} is in use")) && errors[0].contains("--port"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("WARN"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_help_names_the_environment_and_every_config_section() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ohd"))
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in [
        "LLM_MODEL",
        "LLM_API_KEY",
        "LLM_BASE_URL",
        "SESSION_API_KEY",
        "GITHUB_TOKEN",
        "OHD_PORT",
        "OHD_LOG_FORMAT",
        "[server]",
        "[store]",
        "[cluster]",
        "OHD_DATABASE_URL",
        "[llm]",
        "[agent]",
        "[sandbox]",
        "[mcp]",
        "config.example.toml",
    ] {
        assert!(help.contains(name), "{name} not in\n{help}");
    }
    // The demo reads no config file, and says what it does read.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ohd"))
        .args(["demo", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in ["SESSION_API_KEY", "RUST_LOG", "no config file"] {
        assert!(help.contains(name), "{name} not in\n{help}");
    }
}
