//! The REST API: shapes, paging, errors, authentication.

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn create_get_list_rename_and_delete_a_conversation() {
    let ohd = Ohd::start().await;
    let (status, created) = ohd
        .post(
            "/api/conversations",
            json!({"initial_user_msg": "say hello"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(created["status"], "ok");
    let id = created["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);

    let (status, info) = ohd.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(status, 200);
    for key in [
        "title",
        "last_updated_at",
        "created_at",
        "status",
        "runtime_status",
        "trigger",
        "num_connections",
        "url",
        "session_api_key",
        "selected_repository",
    ] {
        assert!(info.get(key).is_some(), "missing {key} in {info}");
    }
    assert_eq!(info["conversation_id"], id.as_str());
    assert_eq!(info["url"], Value::Null);

    // The initial message is event 0.
    let events = ohd.events(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["args"]["content"], "say hello");
    assert_eq!(events[0]["source"], "user");

    let response = ohd
        .http
        .patch(ohd.url(&format!("/api/conversations/{id}")))
        .json(&json!({"title": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!(true));
    assert_eq!(
        ohd.get(&format!("/api/conversations/{id}")).await.1["title"],
        "Renamed"
    );

    let other = ohd.create_conversation().await;
    let (_, list) = ohd.get("/api/conversations?limit=1").await;
    assert_eq!(
        list["results"][0]["conversation_id"],
        other.as_str(),
        "newest first"
    );
    let next = list["next_page_id"].as_str().unwrap();
    let (_, page2) = ohd
        .get(&format!("/api/conversations?limit=1&page_id={next}"))
        .await;
    assert_eq!(page2["results"][0]["conversation_id"], id.as_str());
    assert_eq!(page2["next_page_id"], Value::Null);

    let delete = ohd
        .http
        .delete(ohd.url(&format!("/api/conversations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    assert_eq!(ohd.get(&format!("/api/conversations/{id}")).await.0, 404);
    let again = ohd
        .http
        .delete(ohd.url(&format!("/api/conversations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn events_pages_forward_and_backward() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    fill(&ohd, &conv, 30).await;
    let (status, page) = ohd
        .get(&format!(
            "/api/conversations/{conv}/events?start_id=5&limit=10"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ids(page["events"].as_array().unwrap()),
        (5..15).collect::<Vec<_>>()
    );
    assert_eq!(page["has_more"], true);
    let (_, page) = ohd
        .get(&format!(
            "/api/conversations/{conv}/events?end_id=9&reverse=true&limit=3"
        ))
        .await;
    assert_eq!(ids(page["events"].as_array().unwrap()), vec![9, 8, 7]);
    let (_, page) = ohd
        .get(&format!(
            "/api/conversations/{conv}/events?start_id=25&end_id=27"
        ))
        .await;
    assert_eq!(ids(page["events"].as_array().unwrap()), vec![25, 26, 27]);
    assert_eq!(page["has_more"], false);
    assert_eq!(
        ohd.get(&format!("/api/conversations/{conv}/events?limit=0"))
            .await
            .0,
        400
    );
    assert_eq!(
        ohd.get(&format!("/api/conversations/{conv}/events?limit=101"))
            .await
            .0,
        400
    );
    assert_eq!(
        ohd.get(&format!("/api/conversations/{conv}/events?start_id=x"))
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400_always_as_json() {
    let ohd = Ohd::start().await;
    for path in [
        "/api/conversations/0123456789abcdef0123456789abcdef",
        "/api/conversations/0123456789abcdef0123456789abcdef/events",
    ] {
        let (status, body) = ohd.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["code"], "CONVERSATION$NOT_FOUND");
        assert!(body["error"].as_str().unwrap().contains("not found"));
    }
    for path in [
        "/api/conversations/a..b",
        "/api/conversations/a%2Fb",
        "/api/conversations/a%00b",
        &format!("/api/conversations/{}", "x".repeat(101)),
    ] {
        let (status, body) = ohd.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "CONVERSATION$INVALID_ID");
    }
    let (status, body) = ohd.get("/api/nothing-here").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, body) = ohd
        .post("/api/conversations", json!({"bogus_field": 1}))
        .await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("bogus_field"));
    let response = ohd
        .http
        .post(ohd.url("/api/conversations"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let big = reqwest::Client::new()
        .post(ohd.url("/api/conversations"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"initial_user_msg\":\"{}\"}}",
            "x".repeat(5 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(
        big.json::<Value>().await.unwrap()["code"],
        "PAYLOAD_TOO_LARGE"
    );
    let (status, body) = ohd.get("/alive").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    assert_eq!(ohd.get("/health").await.0, 200);
}

#[tokio::test]
async fn with_a_session_key_rest_and_sockets_need_it() {
    let mut options = Options::new();
    options
        .env
        .push(("SESSION_API_KEY".into(), "s3cret-key".into()));
    let ohd = Ohd::start_with(options).await;
    // Open routes stay open.
    let alive = reqwest::get(ohd.url("/alive")).await.unwrap();
    assert_eq!(alive.status(), 200);
    // Without the key: 401 with a JSON body that does not echo any key.
    let response = reqwest::get(ohd.url("/api/conversations")).await.unwrap();
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("AUTH$INVALID_SESSION_API_KEY") && !body.contains("s3cret"));
    let wrong = ohd
        .http
        .get(ohd.url("/api/conversations"))
        .header("X-Session-API-Key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let bearer = ohd
        .http
        .get(ohd.url("/api/conversations"))
        .bearer_auth("s3cret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let conv = ohd.create_conversation().await;

    let base = format!("conversation_id={conv}&latest_event_id=-1");
    let mut no_key = RawClient::open(&ohd.ws_url(&base)).await;
    let refused = no_key.connect("").await;
    assert!(
        refused.starts_with("44") && refused.contains("invalid_session_api_key"),
        "{refused}"
    );
    assert!(!refused.contains("s3cret"));
    // The one-liner without a key is refused too, and stores nothing.
    let mut sneaky = RawClient::open(&ohd.ws_url(&base)).await;
    sneaky.send(&seed_message("should not be stored")).await;
    assert!(sneaky.next_text().await.unwrap().starts_with("44"));

    let mut by_auth = RawClient::open(&ohd.ws_url(&base)).await;
    assert!(
        by_auth
            .connect("{\"session_api_key\":\"s3cret-key\"}")
            .await
            .starts_with("40")
    );
    let mut by_query =
        RawClient::open(&ohd.ws_url(&format!("{base}&session_api_key=s3cret-key"))).await;
    assert!(by_query.connect("").await.starts_with("40"));
    by_query.send(&user_message("authorized")).await;
    assert_eq!(
        by_auth.next_event().await.unwrap()["args"]["content"],
        "authorized"
    );
    assert_eq!(ohd.events(&conv).await.len(), 1);
}

#[tokio::test]
async fn cors_allows_localhost_and_refuses_other_origins() {
    let ohd = Ohd::start().await;
    let preflight = |origin: &'static str| {
        ohd.http
            .request(reqwest::Method::OPTIONS, ohd.url("/api/conversations"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let ok = preflight("http://localhost:5173").await.unwrap();
    assert_eq!(
        ok.headers().get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    // A websocket from another site's page is refused outright.
    let request = http::Request::builder()
        .uri(ohd.ws_url("conversation_id=x"))
        .header("Origin", "https://evil.example")
        .header("Host", &ohd.addr)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "a cross-site websocket was accepted");
}

#[tokio::test]
async fn list_files_and_select_file_show_the_workspace_and_nothing_outside_it() {
    let ohd = Ohd::start().await;
    let conv = ohd.create_conversation().await;
    let ws = ohd.data_dir.join("workspaces").join(&conv);
    for (path, content) in [
        ("src/main.py", "print(1)\n"),
        ("README.md", "# hi\n"),
        ("Docs/guide.md", "x"),
        ("node_modules/x/index.js", "x"),
        (".git/config", "x"),
        ("debug.log", "x"),
        (".gitignore", "*.log\n"),
    ] {
        let file = ws.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    std::fs::write(ws.join("image.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
    std::os::unix::fs::symlink(&ohd.data_dir, ws.join("escape")).unwrap();
    let base = format!("/api/conversations/{conv}");

    let (status, list) = ohd.get(&format!("{base}/list-files")).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!([
            "Docs/",
            "src/",
            ".gitignore",
            "escape",
            "image.bin",
            "README.md"
        ])
    );
    let (_, list) = ohd.get(&format!("{base}/list-files?path=src")).await;
    assert_eq!(list, json!(["src/main.py"]));

    let (status, file) = ohd
        .get(&format!("{base}/select-file?file=src/main.py"))
        .await;
    assert_eq!((status, file), (200, json!({"code": "print(1)\n"})));
    let (status, body) = ohd.get(&format!("{base}/select-file?file=image.bin")).await;
    assert_eq!(status, 415);
    assert!(body["error"].as_str().unwrap().contains("binary"));
    for outside in ["../../ohd.db", "escape/ohd.db", "/etc/passwd"] {
        let (status, body) = ohd.get(&format!("{base}/select-file?file={outside}")).await;
        assert_eq!(status, 403, "{outside}: {body}");
        assert_eq!(body["code"], "PATH_OUTSIDE_WORKSPACE");
    }
    assert_eq!(
        ohd.get(&format!("{base}/list-files?path=/etc")).await.0,
        403
    );
    assert_eq!(
        ohd.get(&format!("{base}/list-files?path=escape")).await.0,
        403
    );
    assert_eq!(
        ohd.get(&format!("{base}/select-file?file=nope.txt"))
            .await
            .0,
        404
    );
    assert_eq!(
        ohd.get("/api/conversations/0123456789abcdef0123456789abcdef/list-files")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn keys_never_reach_the_log_even_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ohd.log");
    let mut options = Options::new();
    options
        .env
        .push(("SESSION_API_KEY".into(), "session-key-in-the-log?".into()));
    options.env.push(("RUST_LOG".into(), "debug".into()));
    options
        .env
        .push(("LLM_API_KEY".into(), "sk-model-key-in-the-log".into()));
    options
        .env
        .push(("LLM_MODEL".into(), "openai/gpt-4o".into()));
    options.log_file = Some(log.clone());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    // The key in a socket's query, in the CONNECT payload, and in a REST header.
    let mut by_query = RawClient::open(&ohd.ws_url(&format!(
        "conversation_id={conv}&session_api_key=session-key-in-the-log%3F"
    )))
    .await;
    assert!(by_query.connect("").await.starts_with("40"));
    let mut by_auth = RawClient::open(&ohd.ws_url(&format!("conversation_id={conv}"))).await;
    assert!(
        by_auth
            .connect("{\"session_api_key\":\"wrong-key-also-secret\"}")
            .await
            .starts_with("44")
    );
    assert_eq!(ohd.get("/api/conversations").await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("client joined"),
        "the log is not being written"
    );
    for secret in [
        "session-key-in-the-log",
        "sk-model-key-in-the-log",
        "wrong-key-also-secret",
    ] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
}
