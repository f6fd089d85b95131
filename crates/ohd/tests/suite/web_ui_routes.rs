//! Every request the OpenHands web UI makes (`web-ui.md`), answered in the shape it reads:
//! options, settings, the conversation's start and stop, its files, git, microagents and
//! trajectory; the errors; and that no answer ever carries an API key.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Keys given to ohd in these tests. Every answer read here is checked not to contain them.
const SETTINGS_KEY: &str = "sk-settings-key-0123456789abcdef";
const CONFIG_KEY: &str = "sk-config-key-fedcba9876543210";
const KEYS: [&str; 3] = [SETTINGS_KEY, CONFIG_KEY, "sk-test-do-not-leak"];
const UNKNOWN: &str = "0123456789abcdef0123456789abcdef";

fn assert_no_key(body: &[u8], what: &str) {
    for key in KEYS {
        assert!(
            !body.windows(key.len()).any(|w| w == key.as_bytes()),
            "{what} contains an API key"
        );
    }
}

/// Status and raw body of a response, checked for keys.
async fn read(response: reqwest::Response, what: &str) -> (u16, Vec<u8>) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap().to_vec();
    assert_no_key(&body, what);
    (status, body)
}

async fn get(ohd: &Ohd, path: &str) -> (u16, Value) {
    let (status, body) = read(ohd.http.get(ohd.url(path)).send().await.unwrap(), path).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post(ohd: &Ohd, path: &str, body: Value) -> (u16, Value) {
    let response = ohd
        .http
        .post(ohd.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response, path).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A `multipart/form-data` body with each `(file name, content)` as a `files` field.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "ohd-test-boundary-5f2c";
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(ohd: &Ohd, conv: &str, files: &[(&str, &[u8])]) -> (u16, Value) {
    let (content_type, body) = multipart(files);
    let path = format!("/api/conversations/{conv}/upload-files");
    let response = ohd
        .http
        .post(ohd.url(&path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response, &path).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn workspace(ohd: &Ohd, conv: &str) -> PathBuf {
    ohd.data_dir.join("workspaces").join(conv)
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        // The workspace belongs to the sandbox's user when ohd runs as root.
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("git must be installed for these tests");
    assert!(status.success(), "git {args:?} failed");
}

#[tokio::test]
async fn options_answer_in_the_shapes_the_ui_reads() {
    let mut options = Options::new();
    options
        .env
        .push(("LLM_MODEL".into(), "openai/my-local-model".into()));
    options
        .env
        .push(("LLM_BASE_URL".into(), "http://127.0.0.1:9/v1".into()));
    options.env.push(("LLM_API_KEY".into(), CONFIG_KEY.into()));
    let ohd = Ohd::start_with(options).await;
    let (status, config) = get(&ohd, "/api/options/config").await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({
            "APP_MODE": "oss",
            "GITHUB_CLIENT_ID": "",
            "POSTHOG_CLIENT_KEY": "",
            "PROVIDERS_CONFIGURED": [],
            "FEATURE_FLAGS": {
                "ENABLE_BILLING": false,
                "HIDE_LLM_SETTINGS": false,
                "ENABLE_JIRA": false,
                "ENABLE_JIRA_DC": false,
                "ENABLE_LINEAR": false,
            },
        })
    );
    let (status, models) = get(&ohd, "/api/options/models").await;
    assert_eq!(status, 200);
    let models: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for model in [
        "openai/my-local-model",
        "openai/gpt-4o",
        "anthropic/claude-sonnet-4-5",
    ] {
        assert!(models.contains(&model), "{model} not in {models:?}");
    }
    assert_eq!(
        get(&ohd, "/api/options/agents").await,
        (200, json!(["CodeActAgent"]))
    );
    assert_eq!(
        get(&ohd, "/api/options/security-analyzers").await,
        (200, json!(["llm"]))
    );
    // The configuration's model, as the settings page shows it before anything is saved.
    let (status, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(status, 200);
    assert_eq!(settings["llm_model"], "openai/my-local-model");
    assert_eq!(settings["llm_base_url"], "http://127.0.0.1:9/v1");
    assert_eq!(settings["llm_api_key"], Value::Null);
    assert_eq!(settings["llm_api_key_set"], true);
}

#[tokio::test]
async fn settings_are_saved_in_the_data_directory_with_keys_write_only() {
    let mut ohd = Ohd::start().await;
    // Nothing saved and no model configured: 404, as the original's first run, so the web UI
    // opens its model set-up dialog.
    let (status, body) = get(&ohd, "/api/settings").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("Settings not found")),
        "{body}"
    );
    assert!(!ohd.data_dir.join("settings.json").exists());
    // Something saved (the UI's analytics question answered): 200, defaults for the rest.
    let (status, _) = post(
        &ohd,
        "/api/settings",
        json!({"user_consents_to_analytics": false}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(status, 200);
    for (key, value) in [
        ("llm_model", json!("")),
        ("llm_base_url", json!("")),
        ("llm_api_key", Value::Null),
        ("llm_api_key_set", json!(false)),
        ("search_api_key_set", json!(false)),
        ("user_consents_to_analytics", json!(false)),
        ("email_verified", json!(true)),
        ("provider_tokens_set", json!({})),
        ("agent", json!("CodeActAgent")),
        ("language", json!("en")),
        ("confirmation_mode", json!(false)),
    ] {
        assert_eq!(settings[key], value, "{key} in {settings}");
    }
    for key in [
        "security_analyzer",
        "enable_default_condenser",
        "enable_sound_notifications",
        "enable_proactive_conversation_starters",
        "max_budget_per_task",
        "mcp_config",
        "email",
        "git_user_name",
        "git_user_email",
        "remote_runtime_resource_factor",
    ] {
        assert!(settings.get(key).is_some(), "missing {key} in {settings}");
    }

    let (status, body) = post(
        &ohd,
        "/api/settings",
        json!({
            "llm_model": "openai/from-settings",
            "llm_api_key": SETTINGS_KEY,
            "llm_base_url": "http://127.0.0.1:9/v1",
            "language": "fr",
            "user_consents_to_analytics": true,
            "temperature": 0.25,
            "github_token": SETTINGS_KEY,
            "llm_api_key_set": false,
        }),
    )
    .await;
    assert_eq!((status, body), (200, json!({"message": "Settings stored"})));
    let (_, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(settings["llm_model"], "openai/from-settings");
    assert_eq!(settings["llm_base_url"], "http://127.0.0.1:9/v1");
    assert_eq!(settings["llm_api_key"], Value::Null);
    assert_eq!(settings["llm_api_key_set"], true);
    assert_eq!(settings["language"], "fr");
    assert_eq!(settings["user_consents_to_analytics"], true);
    assert_eq!(settings["temperature"], 0.25);
    assert!(settings.get("github_token").is_none());

    // Null or absent model, key and base URL keep what was saved; null resets the rest.
    let (status, _) = post(
        &ohd,
        "/api/settings",
        json!({"llm_model": null, "llm_api_key": null, "language": null, "user_consents_to_analytics": null}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(settings["llm_model"], "openai/from-settings");
    assert_eq!(settings["llm_api_key_set"], true);
    assert_eq!(settings["language"], "en");
    assert_eq!(settings["user_consents_to_analytics"], false);
    let (models_status, models) = get(&ohd, "/api/options/models").await;
    assert_eq!(models_status, 200);
    assert!(
        models
            .as_array()
            .unwrap()
            .contains(&json!("openai/from-settings"))
    );

    // Wrong types are refused, and change nothing.
    let (status, body) = post(&ohd, "/api/settings", json!({"confirmation_mode": "yes"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("confirmation_mode")
    );
    let (status, _) = post(&ohd, "/api/settings", json!({"llm_api_key": 5})).await;
    assert_eq!(status, 422);
    let response = ohd
        .http
        .post(ohd.url("/api/settings"))
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(read(response, "settings").await.0, 422);

    // Kept in the data directory, readable by its owner only, and there after a restart.
    let file = ohd.data_dir.join("settings.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "settings.json is readable by others: {mode:o}"
        );
    }
    ohd.terminate().await;
    let data_dir = ohd.data_dir.clone();
    let ohd = Ohd::spawn(&data_dir, &Options::new()).await;
    let (_, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(settings["llm_model"], "openai/from-settings");
    assert_eq!(settings["llm_api_key_set"], true);
    assert_eq!(settings["temperature"], 0.25);

    // An empty key removes it.
    post(&ohd, "/api/settings", json!({"llm_api_key": ""})).await;
    let (_, settings) = get(&ohd, "/api/settings").await;
    assert_eq!(settings["llm_api_key_set"], false);
}

#[tokio::test]
async fn with_a_session_key_the_ui_routes_need_it_too() {
    let mut options = Options::new();
    options
        .env
        .push(("SESSION_API_KEY".into(), "s3cret-session".into()));
    let ohd = Ohd::start_with(options).await;
    for path in [
        "/api/options/config",
        "/api/settings",
        "/api/options/models",
    ] {
        let response = reqwest::get(ohd.url(path)).await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = ohd
        .http
        .get(ohd.url("/api/options/config"))
        .header("X-Session-API-Key", "s3cret-session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // With the key, the settings answer as without authentication: a first run's 404.
    let response = ohd
        .http
        .get(ohd.url("/api/settings"))
        .header("X-Session-API-Key", "s3cret-session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_model_saved_in_settings_answers_in_new_conversations() {
    let (llm, with_model) =
        scripted_llm(Script::new(vec![Turn::text("Hello from the saved model")]).repeating_last())
            .await;
    let base = with_model
        .env
        .iter()
        .find(|(k, _)| k == "LLM_BASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    // ohd itself starts with no model at all.
    let ohd = Ohd::start_with(Options::with_agent()).await;
    let before = ohd.create_conversation().await;
    let mut old = joined(&ohd, &before, "-1").await;
    old.until_ready().await;

    let (status, _) = post(
        &ohd,
        "/api/settings",
        json!({"llm_model": "openai/scripted-model", "llm_base_url": base, "llm_api_key": SETTINGS_KEY}),
    )
    .await;
    assert_eq!(status, 200);

    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hello, saved model")).await;
    let events = client.until_state(&["awaiting_user_input"]).await;
    assert!(
        events
            .iter()
            .any(|e| e["source"] == "agent" && e["message"] == "Hello from the saved model"),
        "{:?}",
        summary(&events)
    );
    let recorded = llm.recorded();
    assert!(!recorded.is_empty());
    assert!(
        recorded.iter().all(|r| {
            r.header("authorization") == Some(format!("Bearer {SETTINGS_KEY}").as_str())
        })
    );
    assert!(
        recorded[0].body["model"] == "scripted-model",
        "{}",
        recorded[0].body
    );

    // The agent that was running before the change had no model: it takes the saved one at
    // its next message, without a new conversation or a restart.
    old.send(&user_message("hello?")).await;
    loop {
        let e = old
            .next_event()
            .await
            .expect("no answer from the saved model");
        assert_ne!(e["observation"], "error", "{e}");
        if e["source"] == "agent" && e["message"] == "Hello from the saved model" {
            break;
        }
    }
    assert!(
        llm.recorded()
            .iter()
            .any(|r| r.body.to_string().contains("hello?"))
    );
    // A stop, and a start, and the next agent of that conversation has the saved model too.
    let (status, stopped) = post(
        &ohd,
        &format!("/api/conversations/{before}/stop"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stopped,
        json!({
            "status": "ok",
            "conversation_id": before,
            "message": "Conversation stopped successfully",
            "conversation_status": "STOPPED",
        })
    );
    let (_, again) = post(
        &ohd,
        &format!("/api/conversations/{before}/stop"),
        json!({}),
    )
    .await;
    assert_eq!(again["message"], "Conversation was not running");
    let (status, started) = post(
        &ohd,
        &format!("/api/conversations/{before}/start"),
        json!({"providers_set": ["github"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        started,
        json!({"status": "ok", "conversation_id": before, "conversation_status": "RUNNING"})
    );
    old.send(&user_message("and now?")).await;
    loop {
        let e = old.next_event().await.expect("no answer after the restart");
        if e["source"] == "agent" && e["message"] == "Hello from the saved model" {
            break;
        }
    }
    // The key is in no event (and no answer: every read above was checked).
    for id in [&conv, &before] {
        let (_, trajectory) = get(&ohd, &format!("/api/conversations/{id}/trajectory")).await;
        assert!(!trajectory["trajectory"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn conversation_routes_answer_in_shape_404_for_unknown_and_400_for_bad_ids() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let base = format!("/api/conversations/{conv}");

    let (status, info) = get(&ohd, &base).await;
    assert_eq!(status, 200);
    assert_eq!(info["status"], "RUNNING");
    assert_eq!(info["runtime_status"], "STATUS$READY");
    assert_eq!(info["url"], Value::Null);
    assert_eq!(info["session_api_key"], Value::Null);

    assert_eq!(
        get(&ohd, &format!("{base}/config")).await,
        (200, json!({"runtime_id": null, "session_id": conv}))
    );
    assert_eq!(
        get(&ohd, &format!("{base}/web-hosts")).await,
        (200, json!({"hosts": {}}))
    );
    assert_eq!(
        get(&ohd, &format!("{base}/vscode-url")).await,
        (200, json!({"vscode_url": null}))
    );
    assert_eq!(
        get(&ohd, &format!("{base}/microagents")).await,
        (200, json!({"microagents": []}))
    );
    // Without an agent, start has nothing to start but answers as the UI expects.
    assert_eq!(
        post(&ohd, &format!("{base}/start"), json!({})).await,
        (
            200,
            json!({"status": "ok", "conversation_id": conv, "conversation_status": "RUNNING"})
        )
    );
    let (status, body) = post(
        &ohd,
        &format!("{base}/start"),
        json!({"providers_set": ["nowhere"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nowhere"));
    let (status, stopped) = post(&ohd, &format!("{base}/stop"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(stopped["conversation_status"], "STOPPED");

    // The trajectory is every event, across the store's pages.
    fill(&ohd, &conv, 1005).await;
    let (status, trajectory) = get(&ohd, &format!("{base}/trajectory")).await;
    assert_eq!(status, 200);
    let events = trajectory["trajectory"].as_array().unwrap();
    assert_eq!(ids(events), (0..1005).collect::<Vec<_>>());
    assert_eq!(events[3]["args"]["content"], "message 3");

    let gets = [
        "",
        "/config",
        "/web-hosts",
        "/vscode-url",
        "/microagents",
        "/trajectory",
        "/git/changes",
        "/git/diff?path=a.txt",
        "/zip-directory",
        "/list-files",
        "/select-file?file=a.txt",
    ];
    let posts = ["/start", "/stop"];
    for (id, expected, code) in [
        (UNKNOWN, 404, "CONVERSATION$NOT_FOUND"),
        ("a..b", 400, "CONVERSATION$INVALID_ID"),
    ] {
        for route in gets {
            let (status, body) = get(&ohd, &format!("/api/conversations/{id}{route}")).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (expected, Some(code)),
                "GET {route}"
            );
        }
        for route in posts {
            let (status, body) =
                post(&ohd, &format!("/api/conversations/{id}{route}"), json!({})).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (expected, Some(code)),
                "POST {route}"
            );
        }
        let (status, body) = upload(&ohd, id, &[("a.txt", b"x")]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (expected, Some(code)),
            "upload"
        );
    }
}

#[tokio::test]
async fn uploads_land_in_the_workspace_within_the_limit_and_nowhere_else() {
    let mut options = Options::new();
    options.config_toml = Some("[server]\nmax_upload_bytes = 4096\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let ws = workspace(&ohd, &conv);

    let (status, body) = upload(
        &ohd,
        &conv,
        &[
            ("a.txt", b"alpha\n"),
            ("nested/dir/b.txt", b"beta\n"),
            ("../escape.txt", b"no"),
            ("/etc/ohd-evil", b"no"),
            ("image.bin", &[0, 159, 146, 150, 0, 1]),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let uploaded: Vec<&str> = body["uploaded_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(uploaded.len(), 3, "{body}");
    // As the agent sees them: under /workspace when sandboxed, the folder itself otherwise.
    let canonical = ws.canonicalize().unwrap();
    let roots = ["/workspace".to_owned(), canonical.display().to_string()];
    for (path, name) in uploaded
        .iter()
        .zip(["a.txt", "nested/dir/b.txt", "image.bin"])
    {
        assert!(
            roots.iter().any(|r| *path == format!("{r}/{name}")),
            "{path} for {name}"
        );
    }
    let skipped = body["skipped_files"].as_array().unwrap();
    let names: Vec<&str> = skipped
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["../escape.txt", "/etc/ohd-evil"]);
    assert!(skipped.iter().all(|s| s["reason"].is_string()));
    assert_eq!(
        std::fs::read_to_string(ws.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("nested/dir/b.txt")).unwrap(),
        "beta\n"
    );
    assert!(!ws.parent().unwrap().join("escape.txt").exists());
    assert!(!Path::new("/etc/ohd-evil").exists());

    // What was uploaded can be opened, except binary files (415).
    let base = format!("/api/conversations/{conv}");
    assert_eq!(
        get(&ohd, &format!("{base}/select-file?file=nested/dir/b.txt")).await,
        (200, json!({"code": "beta\n"}))
    );
    let (status, body) = get(&ohd, &format!("{base}/select-file?file=image.bin")).await;
    assert_eq!((status, body["code"].as_str()), (415, Some("BINARY_FILE")));
    let (status, _) = get(&ohd, &format!("{base}/select-file?file=../../ohd.db")).await;
    assert_eq!(status, 403);

    // Over the limit: 413, and nothing of that request is kept, not even its small files.
    let big = vec![b'x'; 5000];
    let (status, body) = upload(&ohd, &conv, &[("small.txt", b"s"), ("big.txt", &big)]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    assert!(!ws.join("small.txt").exists());
    assert!(!ws.join("big.txt").exists());
    // Several files under the limit each but over it together are refused the same way.
    let part = vec![b'y'; 3000];
    let (status, _) = upload(&ohd, &conv, &[("p1.txt", &part), ("p2.txt", &part)]).await;
    assert_eq!(status, 413);
    assert!(!ws.join("p1.txt").exists());
    // Nothing is left behind in the staging folder either.
    let staging = ohd.data_dir.join("staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);

    // A body that is not multipart is refused by its type: a JSON 415.
    let (status, body) = post(&ohd, &format!("{base}/upload-files"), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("UNSUPPORTED_MEDIA_TYPE"))
    );
}

#[tokio::test]
async fn zip_directory_holds_the_workspace_and_nothing_outside_it() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let ws = workspace(&ohd, &conv);
    write(
        &ws,
        &[
            ("README.md", "# hello\n"),
            ("src/main.py", "print(1)\n"),
            (".git/HEAD", "ref: refs/heads/main\n"),
        ],
    );
    std::fs::write(ohd.data_dir.join("outside-secret.txt"), "TOPSECRET-zip").unwrap();
    std::os::unix::fs::symlink(ohd.data_dir.join("outside-secret.txt"), ws.join("escape")).unwrap();
    std::os::unix::fs::symlink(&ohd.data_dir, ws.join("escape-dir")).unwrap();

    let path = format!("/api/conversations/{conv}/zip-directory");
    let response = ohd.http.get(ohd.url(&path)).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/zip"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("workspace.zip")
    );
    let (status, bytes) = read(response, &path).await;
    assert_eq!(status, 200);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ".git/",
            ".git/HEAD",
            "README.md",
            "escape",
            "escape-dir",
            "src/",
            "src/main.py"
        ]
    );
    let mut read_entry = |name: &str| {
        let mut entry = archive.by_name(name).unwrap();
        let symlink = entry.is_symlink();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        (symlink, text)
    };
    assert_eq!(read_entry("src/main.py"), (false, "print(1)\n".to_owned()));
    // Links are kept as links: their target's name, never its content.
    let (symlink, target) = read_entry("escape");
    assert!(symlink);
    assert!(target.ends_with("outside-secret.txt") && !target.contains("TOPSECRET"));
    assert!(read_entry("escape-dir").0);
}

#[tokio::test]
async fn git_changes_and_diff_of_a_workspace_that_is_a_repository() {
    git_changes_and_diff(Options::new()).await;
}

/// Without the sandbox git runs on the host, where the folders above the workspace are there
/// to be found: it must still look at the workspace only.
#[tokio::test]
async fn git_changes_and_diff_without_the_sandbox() {
    let mut options = Options::new();
    options.config_toml = Some("[sandbox]\nmode = \"none\"\n".into());
    git_changes_and_diff(options).await;
}

async fn git_changes_and_diff(options: Options) {
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let ws = workspace(&ohd, &conv);
    let base = format!("/api/conversations/{conv}");
    write(
        &ws,
        &[
            ("a.txt", "one\n"),
            ("gone.txt", "bye\n"),
            ("keep.txt", "same\n"),
        ],
    );

    // Not a repository, even inside one: only the workspace itself counts.
    git(&ohd.data_dir, &["init", "-q"]);
    let (status, body) = get(&ohd, &format!("{base}/git/changes")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "Not a git repository");
    let (status, _) = get(&ohd, &format!("{base}/git/diff?path=a.txt")).await;
    assert_eq!(status, 404);

    git(&ws, &["init", "-q"]);
    // A fresh repository: everything is new.
    let (status, changes) = get(&ohd, &format!("{base}/git/changes")).await;
    assert_eq!(status, 200);
    assert_eq!(changes.as_array().unwrap().len(), 3, "{changes}");
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "A")
    );

    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "first"]);
    assert_eq!(
        get(&ohd, &format!("{base}/git/changes")).await,
        (200, json!([]))
    );
    write(&ws, &[("a.txt", "one\ntwo\n"), ("dir/new.txt", "fresh\n")]);
    std::fs::remove_file(ws.join("gone.txt")).unwrap();
    let (status, changes) = get(&ohd, &format!("{base}/git/changes")).await;
    assert_eq!(status, 200);
    let mut changes = changes.as_array().unwrap().clone();
    changes.sort_by_key(|c| c["path"].as_str().unwrap().to_owned());
    assert_eq!(
        changes,
        vec![
            json!({"status": "M", "path": "a.txt"}),
            json!({"status": "A", "path": "dir/new.txt"}),
            json!({"status": "D", "path": "gone.txt"}),
        ]
    );

    assert_eq!(
        get(&ohd, &format!("{base}/git/diff?path=a.txt")).await,
        (200, json!({"modified": "one\ntwo\n", "original": "one\n"}))
    );
    assert_eq!(
        get(&ohd, &format!("{base}/git/diff?path=dir/new.txt")).await,
        (200, json!({"modified": "fresh\n", "original": ""}))
    );
    assert_eq!(
        get(&ohd, &format!("{base}/git/diff?path=gone.txt")).await,
        (200, json!({"modified": "", "original": "bye\n"}))
    );
    for outside in ["../../settings.json", "/etc/passwd", "../x"] {
        let (status, body) = get(&ohd, &format!("{base}/git/diff?path={outside}")).await;
        assert_eq!(status, 403, "{outside}: {body}");
        assert_eq!(body["code"], "PATH_OUTSIDE_WORKSPACE");
    }
    let (status, _) = get(&ohd, &format!("{base}/git/diff")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn microagents_come_from_the_workspace() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let ws = workspace(&ohd, &conv);
    write(
        &ws,
        &[
            (
                ".openhands/microagents/repo.md",
                "This repository uses cargo.\n",
            ),
            (
                ".openhands/microagents/docker.md",
                "---\nname: docker-helper\ntype: knowledge\ntriggers:\n- docker\n- container\n---\nUse docker compose.\n",
            ),
            (".openhands/microagents/README.md", "not a microagent"),
        ],
    );
    std::os::unix::fs::symlink("/etc/passwd", ws.join(".openhands/microagents/leak.md")).unwrap();
    let (status, body) = get(&ohd, &format!("/api/conversations/{conv}/microagents")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"microagents": [
            {
                "name": "docker-helper",
                "type": "knowledge",
                "content": "Use docker compose.\n",
                "triggers": ["docker", "container"],
                "inputs": [],
                "tools": [],
            },
            {
                "name": "repo",
                "type": "repo",
                "content": "This repository uses cargo.\n",
                "triggers": [],
                "inputs": [],
                "tools": [],
            },
        ]})
    );
}

#[tokio::test]
async fn git_routes_never_run_what_a_hostile_repository_config_names() {
    hostile_repository(Options::new()).await;
}

/// Without the sandbox, git runs as ohd itself: what a repository names must not run there
/// either.
#[tokio::test]
async fn git_routes_never_run_what_a_hostile_repository_config_names_without_the_sandbox() {
    let mut options = Options::new();
    options.config_toml = Some("[sandbox]\nmode = \"none\"\n".into());
    hostile_repository(options).await;
}

/// A repository whose config and attributes name a program in every place git would run one
/// from (`core.fsmonitor`, a pager, an external diff, a textconv and a filter chosen by
/// `.gitattributes`, hooks, credential and ssh helpers) and a work tree outside the workspace.
/// `git/changes` and `git/diff` answer from the workspace alone, and nothing runs.
async fn hostile_repository(options: Options) {
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let ws = workspace(&ohd, &conv);
    let base = format!("/api/conversations/{conv}");
    write(&ws, &[("a.txt", "one\n"), ("keep.txt", "same\n")]);
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "first"]);
    std::fs::write(ohd.data_dir.join("outside-worktree-file.txt"), "x").unwrap();

    // Each program leaves a marker: in the workspace (its working folder, seen with or
    // without the sandbox) and in the data directory (seen only without it).
    let outside_marker = ohd.data_dir.join("pwned");
    let run = |what: &str| {
        format!(
            "touch pwned-{what} {}-{what}; cat",
            outside_marker.display()
        )
    };
    let config = format!(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = \"{fsmonitor}\"\n\tpager = \"{pager}\"\n\thooksPath = .git/evil-hooks\n\tworktree = {outside}\n\tsshCommand = \"{ssh}\"\n\teditor = \"{editor}\"\n\talternateRefsCommand = \"{refs}\"\n[diff]\n\texternal = \"{external}\"\n[diff \"evil\"]\n\ttextconv = \"{textconv}\"\n\tcommand = \"{command}\"\n[filter \"evil\"]\n\tclean = \"{clean}\"\n\tsmudge = \"{smudge}\"\n[filter \"evil2\"]\n\tprocess = \"{process}\"\n[credential]\n\thelper = \"!{credential}\"\n[gpg]\n\tprogram = \"{gpg}\"\n[uploadpack]\n\tpackObjectsHook = \"{pack}\"\n",
        fsmonitor = run("fsmonitor"),
        pager = run("pager"),
        outside = ohd.data_dir.display(),
        ssh = run("ssh"),
        editor = run("editor"),
        refs = run("refs"),
        external = run("external"),
        textconv = run("textconv"),
        command = run("diffcommand"),
        clean = run("clean"),
        smudge = run("smudge"),
        process = run("process"),
        credential = run("credential"),
        gpg = run("gpg"),
        pack = run("pack"),
    );
    std::fs::write(ws.join(".git/config"), config).unwrap();
    std::fs::create_dir_all(ws.join(".git/evil-hooks")).unwrap();
    for hook in [
        "post-index-change",
        "pre-commit",
        "post-checkout",
        "reference-transaction",
    ] {
        let path = ws.join(".git/evil-hooks").join(hook);
        std::fs::write(&path, format!("#!/bin/sh\n{}\n", run(hook))).unwrap();
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&path, executable).unwrap();
    }
    let attributes = "* filter=evil diff=evil\n*.txt filter=evil2\n";
    std::fs::write(ws.join(".gitattributes"), attributes).unwrap();
    std::fs::create_dir_all(ws.join(".git/info")).unwrap();
    std::fs::write(ws.join(".git/info/attributes"), attributes).unwrap();
    // Same size, new time: git must read the file again (through a clean filter, if any).
    std::fs::write(ws.join("keep.txt"), "SAME\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(ws.join("keep.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::fs::write(ws.join("a.txt"), "one\ntwo\n").unwrap();

    let (status, changes) = get(&ohd, &format!("{base}/git/changes")).await;
    let diff_a = get(&ohd, &format!("{base}/git/diff?path=a.txt")).await;
    let diff_keep = get(&ohd, &format!("{base}/git/diff?path=keep.txt")).await;

    // Nothing ran (checked first: it matters most).
    let ran: Vec<String> = std::fs::read_dir(&ws)
        .unwrap()
        .chain(std::fs::read_dir(&ohd.data_dir).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("pwned"))
        .collect();
    assert!(ran.is_empty(), "git ran what the repository named: {ran:?}");
    assert_eq!(status, 200, "{changes}");
    let mut changes = changes.as_array().unwrap().clone();
    changes.sort_by_key(|c| c["path"].as_str().unwrap().to_owned());
    // The workspace's changes, not the data directory's files.
    assert_eq!(
        changes,
        vec![
            json!({"status": "A", "path": ".gitattributes"}),
            json!({"status": "M", "path": "a.txt"}),
            json!({"status": "M", "path": "keep.txt"}),
        ]
    );
    assert_eq!(
        diff_a,
        (200, json!({"modified": "one\ntwo\n", "original": "one\n"}))
    );
    assert_eq!(
        diff_keep,
        (200, json!({"modified": "SAME\n", "original": "same\n"}))
    );
}

#[tokio::test]
async fn feedback_is_kept_in_the_data_directory_with_the_conversation() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.send(&user_message("worth sharing")).await;
    client.events(1).await;
    let (status, body) = post(
        &ohd,
        &format!("/api/conversations/{conv}/submit-feedback"),
        json!({"email": "me@example.com", "version": "1.0", "permissions": "private", "polarity": "positive", "feedback": "positive"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["statusCode"], 200);
    let id = body["body"]["feedback_id"].as_str().unwrap();
    assert!(
        body["body"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was sent")
    );
    let path = ohd.data_dir.join("feedback").join(format!("{id}.json"));
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["polarity"], "positive");
    assert_eq!(stored["conversation_id"], conv.as_str());
    assert!(stored["trajectory"].to_string().contains("worth sharing"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    // What is not the original's shape is refused, with what is wrong.
    let (status, body) = post(
        &ohd,
        &format!("/api/conversations/{conv}/submit-feedback"),
        json!({"polarity": "meh"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("polarity"));
    let (status, _) = post(
        &ohd,
        "/api/conversations/0123456789abcdef0123456789abcdef/submit-feedback",
        json!({"polarity": "negative"}),
    )
    .await;
    assert_eq!(status, 404);
}
