//! The web pages: ohd's own page in headless Chromium against the real server and a scripted
//! model (`e2e/browser/page.test.mjs`, screenshots in `e2e/artifacts/`), its files over HTTP,
//! and `--web-ui` serving a built frontend with the single-page-app fallback.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Chromium and `playwright-core`, or why they cannot be used. Without them the browser tests
/// are skipped with a notice on a developer's machine, and fail under CI.
pub(crate) fn browser_or_skip(test: &str) -> Option<PathBuf> {
    let chromium = std::env::var_os("OHD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let playwright = Path::new(REPO).join("e2e/node_modules/playwright-core");
    let missing = if !chromium.exists() {
        format!(
            "no Chromium at {} (apt-get install chromium, or set OHD_CHROMIUM)",
            chromium.display()
        )
    } else if !playwright.exists() {
        "no playwright-core in e2e/node_modules (cd e2e && npm ci)".to_owned()
    } else {
        return Some(chromium);
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{test}: {missing}");
    eprintln!("skipping {test}: {missing}");
    None
}

/// Where a browser test's server writes its log (debug level for ohd's own crates), so that a
/// failure can show what the server saw.
pub(crate) fn server_log(options: &mut Options, scenario: &str) {
    let artifacts = Path::new(REPO).join("e2e/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    options.log_file = Some(artifacts.join(format!("{scenario}-server.log")));
    options.env.push((
        "RUST_LOG".into(),
        "ohd_server=debug,ohd_engineio=debug,info".into(),
    ));
}

/// The last lines of a browser test's server log, for its failure message.
fn server_log_tail(ohd: &Ohd) -> String {
    let Some(path) = ohd.log_file() else {
        return String::new();
    };
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    format!(
        "\nthe server's log ({}), last lines:\n{tail}",
        path.display()
    )
}

/// Runs the page test script and returns its JSON lines, failing with its story if it failed.
async fn run_page_test(ohd: &Ohd, chromium: &Path, extra: &[&str]) -> Vec<Value> {
    run_browser_script(ohd, chromium, "page.test.mjs", extra).await
}

/// Runs a script of `e2e/browser/` against `ohd` and returns its JSON lines, failing with its
/// story if it failed.
pub(crate) async fn run_browser_script(
    ohd: &Ohd,
    chromium: &Path,
    script: &str,
    extra: &[&str],
) -> Vec<Value> {
    let script = Path::new(REPO).join("e2e/browser").join(script);
    let artifacts = Path::new(REPO).join("e2e/artifacts");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg("--url")
        .arg(ohd.url(""))
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--chromium")
        .arg(chromium)
        .args(extra)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test did not finish in 3 minutes")
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        output.status.code(),
        Some(0),
        "the browser test failed (screenshot in e2e/artifacts/*-failure.png)\nstdout:\n{stdout}\nstderr:\n{}{}",
        String::from_utf8_lossy(&output.stderr),
        server_log_tail(ohd),
    );
    for line in lines.iter().filter(|l| l["kind"] == "screenshot") {
        let path = line["path"].as_str().unwrap();
        assert!(Path::new(path).is_file(), "no screenshot at {path}");
    }
    lines
}

fn result(lines: &[Value]) -> &Value {
    let result = lines.last().expect("no output");
    assert_eq!(result["kind"], "result", "{lines:?}");
    assert_eq!(result["ok"], true, "{result}");
    result
}

#[tokio::test]
async fn browser_the_built_in_page_runs_a_task_stops_it_resumes_and_reloads() {
    let Some(chromium) = browser_or_skip("the built-in page in Chromium") else {
        return;
    };
    let script = Script::new(vec![
        bash("echo hello-from-agent").with_text("Let me say hello first."),
        editor(json!({"command":"create","path":"/workspace/notes.txt","file_text":"hello\n"})),
        editor(
            json!({"command":"str_replace","path":"/workspace/notes.txt","old_str":"hello","new_str":"hello, world"}),
        ),
        bash("sleep 30").with_text("Now I wait."),
        Turn::tool_call(
            "finish",
            json!({"message": "All done: the shell said hello."}),
        ),
    ]);
    let (llm, mut options) = scripted_llm(script).await;
    server_log(&mut options, "agent");
    let ohd = Ohd::start_with(options).await;
    let lines = run_page_test(&ohd, &chromium, &["--scenario", "agent"]).await;
    let result = result(&lines);

    // The page showed every stored event, once each: the same ids the log holds.
    let conversation = result["conversation"].as_str().unwrap();
    let stored = ohd.events(conversation).await;
    let stored_ids: Vec<u64> = ids(&stored);
    // In page order an observation sits in its action's card, so compare them sorted.
    let mut page_ids: Vec<u64> = result["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    page_ids.sort_unstable();
    assert_eq!(page_ids, stored_ids, "{:?}", summary(&stored));

    // What happened is what the page said: the output, the stop, the finish.
    let output = stored
        .iter()
        .find(|e| e["observation"] == "run")
        .expect("no command output");
    assert_eq!(output["content"], "hello-from-agent\n");
    assert!(stored.iter().any(|e| e["action"] == "change_agent_state"
        && e["args"]["agent_state"] == "stopped"
        && e["source"] == "user"));
    assert!(
        stored
            .iter()
            .any(|e| e["extras"]["error_id"] == "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_STOPPED")
    );
    assert_eq!(
        stored.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&stored)
    );
    let notes = ohd
        .data_dir
        .join("workspaces")
        .join(conversation)
        .join("notes.txt");
    assert_eq!(std::fs::read_to_string(notes).unwrap(), "hello, world\n");
    assert_eq!(llm.requests().len(), 5);
}

#[tokio::test]
async fn browser_the_built_in_page_confirms_one_waiting_action_and_rejects_another() {
    let Some(chromium) = browser_or_skip("confirmation in the built-in page") else {
        return;
    };
    let (_llm, mut options) = scripted_llm(Script::new(vec![
        bash("echo yes > confirmed.txt"),
        bash("echo no > rejected.txt"),
        Turn::tool_call("finish", json!({"message": "unreachable"})),
    ]))
    .await;
    server_log(&mut options, "confirm");
    let ohd = Ohd::start_with(options).await;
    let (status, _) = ohd
        .post("/api/settings", json!({"confirmation_mode": true}))
        .await;
    assert_eq!(status, 200);
    let lines = run_page_test(&ohd, &chromium, &["--scenario", "confirm"]).await;
    let conversation = result(&lines)["conversation"].as_str().unwrap().to_owned();
    let workspace = ohd.data_dir.join("workspaces").join(&conversation);
    assert_eq!(
        std::fs::read_to_string(workspace.join("confirmed.txt")).unwrap(),
        "yes\n"
    );
    assert!(!workspace.join("rejected.txt").exists());
    let stored = ohd.events(&conversation).await;
    assert!(stored.iter().any(|e| e["action"] == "change_agent_state"
        && e["args"]["agent_state"] == "user_rejected"
        && e["source"] == "user"));
}

#[tokio::test]
async fn browser_the_built_in_page_works_with_a_session_key() {
    let Some(chromium) = browser_or_skip("the built-in page with a session key") else {
        return;
    };
    let mut options = Options::new();
    options
        .env
        .push(("SESSION_API_KEY".into(), "page-key-123".into()));
    server_log(&mut options, "auth");
    let ohd = Ohd::start_with(options).await;
    let lines = run_page_test(
        &ohd,
        &chromium,
        &["--scenario", "auth", "--api-key", "page-key-123"],
    )
    .await;
    let result = result(&lines);
    let stored = ohd.events(result["conversation"].as_str().unwrap()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["args"]["content"], "hello with a key");
}

#[tokio::test]
async fn browser_ohd_demo_shows_the_agent_run_commands_edit_a_file_and_finish_with_no_key() {
    let Some(chromium) = browser_or_skip("ohd demo in Chromium") else {
        return;
    };
    let mut options = Options::new();
    options.demo = true;
    server_log(&mut options, "demo");
    let ohd = Ohd::start_with(options).await;
    let lines = run_page_test(&ohd, &chromium, &["--scenario", "demo"]).await;
    let result = result(&lines);
    // The page showed what happened: the file is there, edited, and the log says finished.
    let conversation = result["conversation"].as_str().unwrap();
    let script = ohd
        .data_dir
        .join("workspaces")
        .join(conversation)
        .join("hello.sh");
    assert!(
        std::fs::read_to_string(script)
            .unwrap()
            .contains("Hello again from the sandbox")
    );
    let stored = ohd.events(conversation).await;
    assert_eq!(
        stored.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&stored)
    );
    // The demo keeps its model to itself: no key of the user's is needed, none is shown.
    let (status, settings) = ohd.get("/api/settings").await;
    assert_eq!(status, 200);
    assert_eq!(settings["llm_model"], "ohd/demo");
}

#[tokio::test]
async fn browser_without_a_model_the_error_is_said_once_and_settings_saves_one_the_next_conversation_uses()
 {
    let Some(chromium) = browser_or_skip("no model, then Settings, in Chromium") else {
        return;
    };
    let (base, llm) = ohd_scripted_llm::ScriptedLlm::start(
        Script::new(vec![Turn::tool_call(
            "finish",
            json!({"message": "The saved model answered."}),
        )])
        .repeating_last()
        .with_aside("Saved model title"),
    )
    .await
    .unwrap();
    let mut options = Options::with_agent();
    server_log(&mut options, "no-model");
    let ohd = Ohd::start_with(options).await;
    let base_url = format!("{base}/v1");
    let lines = run_page_test(
        &ohd,
        &chromium,
        &[
            "--scenario",
            "no-model",
            "--model",
            "openai/saved-in-the-page",
            "--base-url",
            &base_url,
            "--model-key",
            "sk-saved-in-the-page",
        ],
    )
    .await;
    result(&lines);
    // The next conversation asked the saved model, with the saved key.
    let recorded = llm.recorded();
    assert!(!recorded.is_empty(), "the saved model was never asked");
    assert!(
        recorded
            .iter()
            .all(|r| r.body["model"] == "saved-in-the-page"
                && r.header("authorization") == Some("Bearer sk-saved-in-the-page"))
    );
    // The key is kept but never shown back.
    let (_, settings) = ohd.get("/api/settings").await;
    assert_eq!(settings["llm_api_key_set"], true);
    assert!(!settings.to_string().contains("sk-saved-in-the-page"));
}

#[tokio::test]
async fn browser_a_model_that_refuses_connections_is_retried_visibly_and_the_failure_said_once() {
    let Some(chromium) = browser_or_skip("an unreachable model in Chromium") else {
        return;
    };
    // Port 9 (discard), where nothing listens on this machine: connections are refused.
    let mut options = llm_options("http://127.0.0.1:9");
    options.config_toml = Some("[llm]\nmax_retries = 2\n".into());
    server_log(&mut options, "unreachable");
    let ohd = Ohd::start_with(options).await;
    let lines = run_page_test(&ohd, &chromium, &["--scenario", "unreachable"]).await;
    let result = result(&lines);
    let stored = ohd.events(result["conversation"].as_str().unwrap()).await;
    // One state change for the retries, saying why; then the error.
    let reasons: Vec<&str> = stored
        .iter()
        .filter(|e| e["extras"]["agent_state"] == "rate_limited")
        .map(|e| e["extras"]["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["could not reach the model, retrying"]);
    assert_eq!(stored.last().unwrap()["extras"]["agent_state"], "error");
    // The server's log says that it gave up, and why.
    let log = std::fs::read_to_string(ohd.log_file().unwrap()).unwrap();
    let gave_up = log
        .lines()
        .find(|l| l.contains("giving up"))
        .unwrap_or_else(|| panic!("the log never says it gave up:\n{log}"));
    assert!(
        gave_up.contains("retries=2") && gave_up.contains("could not reach the LLM provider"),
        "{gave_up}"
    );
    assert!(log.contains("the agent stopped with an error"));
}

async fn get_raw(ohd: &Ohd, path: &str) -> (u16, String, String) {
    let response = ohd.http.get(ohd.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn web_the_built_in_page_and_its_assets_are_served_and_api_paths_stay_json() {
    let ohd = Ohd::start().await;
    let (status, content_type, body) = get_raw(&ohd, "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(body.contains("/assets/ohd/app.js") && body.contains("/assets/ohd/style.css"));
    let (status, content_type, body) = get_raw(&ohd, "/assets/ohd/app.js").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(body.contains("oh_user_action"));
    let (status, content_type, _) = get_raw(&ohd, "/assets/ohd/style.css").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );

    // Everything else is the API's JSON 404, under /api or not.
    for path in [
        "/api/nothing",
        "/conversations/abc",
        "/assets/ohd/missing.js",
    ] {
        let (status, body) = ohd.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "NOT_FOUND", "{path}: {body}");
    }
}

#[tokio::test]
async fn web_the_built_in_page_is_public_but_the_api_behind_it_is_not() {
    let mut options = Options::new();
    options.env.push(("SESSION_API_KEY".into(), "k-123".into()));
    let ohd = Ohd::start_with(options).await;
    let (status, _, _) = get_raw(&ohd, "/").await;
    assert_eq!(status, 200);
    let response = ohd
        .http
        .get(ohd.url("/api/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// A stand-in for a built OpenHands frontend: what `npm run build` leaves, in miniature.
fn fake_build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>fake OpenHands</title><script src=\"/assets/x.js\"></script>",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/x.js"), "console.log('x');\n").unwrap();
    std::fs::create_dir_all(dir.path().join("locales/en")).unwrap();
    std::fs::write(
        dir.path().join("locales/en/translation.json"),
        "{\"HOME$TITLE\":\"Home\"}",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn web_ui_serves_a_built_frontend_with_the_spa_fallback() {
    let build = fake_build();
    let mut options = Options::new();
    options.env.push((
        "OHD_WEB_UI".into(),
        build.path().to_str().unwrap().to_owned(),
    ));
    let ohd = Ohd::start_with(options).await;

    let (status, content_type, body) = get_raw(&ohd, "/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        body.contains("fake OpenHands"),
        "the built-in page is served instead"
    );

    // The app's own routes get index.html, so a conversation's URL opens in the browser.
    for path in ["/conversations/abc", "/settings", "/conversations/abc/"] {
        let (status, content_type, body) = get_raw(&ohd, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        assert!(body.contains("fake OpenHands"), "{path}");
    }

    let (status, content_type, body) = get_raw(&ohd, "/assets/x.js").await;
    assert_eq!(status, 200);
    assert!(content_type.contains("javascript"), "{content_type}");
    assert_eq!(body, "console.log('x');\n");
    let (status, content_type, _) = get_raw(&ohd, "/locales/en/translation.json").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));

    // A missing file is a 404, not index.html run as a script.
    let (status, _, body) = get_raw(&ohd, "/assets/gone-1234.js").await;
    assert_eq!(status, 404);
    assert!(!body.contains("fake OpenHands"));

    // The API is untouched: JSON 404 for unknown paths, routes as before.
    let (status, body) = ohd.get("/api/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    let (status, body) = ohd.get("/api/conversations").await;
    assert_eq!(status, 200);
    assert!(body["results"].is_array());
    // The built-in page's files are not there either.
    let (status, _, _) = get_raw(&ohd, "/assets/ohd/app.js").await;
    assert_eq!(status, 404);

    // The socket still answers on /socket.io/.
    let conversation = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conversation, "-1").await;
    client
        .send(&user_message("through the web UI's origin"))
        .await;
    let event = client.next_event().await.expect("no echo");
    assert_eq!(event["args"]["content"], "through the web UI's origin");
}

#[tokio::test]
async fn web_ui_without_index_html_is_refused_at_start() {
    let empty = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ohd"))
        .args(["serve", "--port", "0", "--no-agent", "--data-dir"])
        .arg(data.path())
        .arg("--web-ui")
        .arg(empty.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("ohd kept running with a --web-ui folder without index.html")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no index.html") && stderr.contains(&empty.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "it listened anyway"
    );
}
