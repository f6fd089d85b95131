//! The user's MCP tools (issue 12): real MCP servers, written with the Python `mcp` package's
//! FastMCP (`e2e/mcp/server.py`) and the published `@modelcontextprotocol/server-everything`,
//! over stdio (in the conversation's sandbox), SSE and streamable HTTP; the scripted model
//! calls their tools and reads the results.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/mcp/server.py");
/// Debian's Python: the sandbox sees /usr, so the `mcp` package installed for it (with
/// `/usr/bin/python3 -m pip install`) is there for stdio servers too.
const PYTHON: &str = "/usr/bin/python3";

/// Whether the MCP servers can run here; under CI they must.
fn servers_or_skip(test: &str, everything: bool) -> bool {
    // Installed under /usr, where the sandbox sees it (not in a user's own site folder).
    let python_mcp = std::process::Command::new(PYTHON)
        .args(["-c", "import mcp.server.fastmcp, mcp; print(mcp.__file__)"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"/usr/"));
    let missing = if !python_mcp {
        Some(format!(
            "no `mcp` package for {PYTHON} ({PYTHON} -m pip install --break-system-packages mcp==1.30.0)"
        ))
    } else if everything && !Path::new("/usr/bin/mcp-server-everything").exists() {
        Some(
            "no mcp-server-everything (npm install -g @modelcontextprotocol/server-everything)"
                .to_owned(),
        )
    } else {
        None
    };
    let Some(missing) = missing else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "{test}: {missing}");
    eprintln!("skipping {test}: {missing}");
    false
}

/// A FastMCP server over HTTP on a free port, stopped when dropped.
struct HttpServer {
    port: u16,
    _child: tokio::process::Child,
}

async fn http_server(transport: &str, key: Option<&str>) -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = tokio::process::Command::new(PYTHON);
    command
        .arg(SERVER)
        .arg(transport)
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(key) = key {
        command.args(["--key", key]);
    }
    let child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the {transport} MCP server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    HttpServer {
        port,
        _child: child,
    }
}

/// Puts the test server where the conversation's stdio servers find it (`.mcp/server.py`,
/// relative to the workspace their command starts in).
fn place_server(ohd: &Ohd, conv: &str) {
    let dir = ohd.data_dir.join("workspaces").join(conv).join(".mcp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(SERVER, dir.join("server.py")).unwrap();
}

fn stdio_entry(name: &str, extra: &str) -> String {
    format!(
        "{{ name = \"{name}\", command = \"{PYTHON}\", args = [\".mcp/server.py\", \"stdio\"]{extra} }}"
    )
}

/// The text of an `mcp` observation's first content block, and whether it is an error.
fn result_text(observation: &Value) -> (String, bool) {
    let content: Value =
        serde_json::from_str(observation["content"].as_str().unwrap_or_default()).unwrap();
    let is_error = content["isError"] == true;
    let text = content["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| content["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (text, is_error)
}

fn mcp_results(events: &[Value]) -> Vec<(String, String, bool)> {
    events
        .iter()
        .filter(|e| e["observation"] == "mcp")
        .map(|e| {
            let (text, is_error) = result_text(e);
            (
                e["extras"]["name"].as_str().unwrap_or_default().to_owned(),
                text,
                is_error,
            )
        })
        .collect()
}

fn offered(llm: &ohd_scripted_llm::ScriptedLlmHandle) -> Vec<String> {
    llm.requests()
        .iter()
        .find(|r| r["tools"].is_array())
        .map(|r| {
            r["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn mcp_tools_are_called_over_stdio_sse_and_streamable_http() {
    if !servers_or_skip("MCP over each transport", false) {
        return;
    }
    const TOKEN: &str = "tok-mcp-secret-4242";
    const KEY: &str = "shttp-key-7777777";
    let sse = http_server("sse", None).await;
    let shttp = http_server("streamable-http", Some(KEY)).await;
    // The stdio server came first, so it keeps the plain names; the others' clash and are
    // offered under their server's name.
    let sse_whoami = format!("127_0_0_1_{}_whoami", sse.port);
    let shttp_whoami = format!("127_0_0_1_{}_whoami", shttp.port);
    let (llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call("add", json!({"a": 2, "b": 3})),
        Turn::tool_call(sse_whoami.as_str(), json!({})),
        Turn::tool_call(shttp_whoami.as_str(), json!({})),
        Turn::tool_call("env", json!({"name": "MCP_TOKEN"})),
        Turn::text("all three answered"),
    ]))
    .await;
    options.config_toml = Some(format!(
        "[mcp]\nstdio_servers = [{}]\nsse_servers = [\"http://127.0.0.1:{}/sse\"]\nshttp_servers = [{{ url = \"http://127.0.0.1:{}/mcp\", api_key = \"{KEY}\" }}]\n",
        stdio_entry("local", &format!(", env = {{ MCP_TOKEN = \"{TOKEN}\" }}")),
        sse.port,
        shttp.port,
    ));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    place_server(&ohd, &conv);

    // With socket.io-client, as the web UI.
    let (events, stdout) = socket_io(&ohd, &conv, "", "use the MCP tools").await;
    let tools = offered(&llm);
    for name in ["execute_bash", "add", "echo", &sse_whoami, &shttp_whoami] {
        assert!(tools.iter().any(|t| t == name), "{name} not in {tools:?}");
    }
    // Each call is the original's call_tool_mcp action, answered by an mcp observation.
    let calls: Vec<&Value> = by_kind(&events, "action", "call_tool_mcp");
    assert_eq!(calls.len(), 4, "{:?}", summary(&events));
    assert_eq!(calls[0]["args"]["name"], "add");
    assert_eq!(calls[0]["args"]["arguments"], json!({"a": 2, "b": 3}));
    let results = mcp_results(&events);
    assert_eq!(results[0], ("add".to_owned(), "5".to_owned(), false));
    assert!(results[1].1.starts_with("sse pid="), "{results:?}");
    assert!(
        results[2].1.starts_with("streamable-http pid="),
        "{results:?}"
    );
    // The server's environment value is a secret: hidden in the events and from the model.
    assert_eq!(results[3].1, "<secret_hidden>", "{results:?}");
    assert!(!stdout.contains(TOKEN) && !stdout.contains(KEY));
    let sent = serde_json::to_string(&llm.requests()).unwrap();
    assert!(!sent.contains(TOKEN) && !sent.contains(KEY));
    // The model read each result.
    assert!(sent.contains("streamable-http pid="));
    assert!(events.iter().any(|e| e["message"] == "all three answered"));

    // What an agent saw of each server.
    let (status, listed) = ohd.get("/api/mcp").await;
    assert_eq!(status, 200);
    let servers = listed["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{listed}");
    for server in servers {
        assert_eq!(server["state"], "connected", "{listed}");
    }
    assert!(!listed.to_string().contains(KEY));
}

#[tokio::test]
async fn mcp_failures_reach_the_model_and_the_user_and_the_conversation_goes_on() {
    if !servers_or_skip("MCP failures", false) {
        return;
    }
    // A port nothing listens on: the SSE server is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call("slow", json!({"seconds": 30})),
        Turn::tool_call("fail", json!({"message": "broken on purpose"})),
        Turn::tool_call("whoami", json!({})),
        Turn::tool_call("crash", json!({})),
        Turn::tool_call("whoami", json!({})),
        Turn::tool_call("add", json!({"a": "not a number"})),
        Turn::text("survived"),
    ]))
    .await;
    options.config_toml = Some(format!(
        // Its address carries a key in its query, which no notice, log or answer may show.
        "[mcp]\nstdio_servers = [{}]\nsse_servers = [\"http://127.0.0.1:{down}/sse?token=q-secret-55555\"]\n",
        stdio_entry("local", ", timeout = 3"),
    ));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    place_server(&ohd, &conv);
    let (events, _) = socket_io(&ohd, &conv, "", "try everything").await;
    let results = mcp_results(&events);
    assert_eq!(results.len(), 6, "{:?}", summary(&events));
    // Slow: the call's time limit.
    assert!(
        results[0].2 && results[0].1.contains("timed out after 3 seconds"),
        "{results:?}"
    );
    // An error the tool raised.
    assert!(
        results[1].2 && results[1].1.contains("broken on purpose"),
        "{results:?}"
    );
    // A crash mid-call; the next call starts the server again.
    let first_pid = results[2].1.clone();
    assert!(
        results[3].2 && results[3].1.contains("stopped during the call"),
        "{results:?}"
    );
    assert!(
        results[4].1.contains("run=") && results[4].1 != first_pid,
        "{results:?}"
    );
    // Arguments the server refuses.
    assert!(results[5].2, "{results:?}");
    // The user heard of the server that is down and of each failed call.
    let notices: Vec<&str> = events
        .iter()
        .filter(|e| e["status_update"] == true)
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("unavailable") && n.contains(&down.to_string())),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("timed out")),
        "{notices:?}"
    );
    assert!(
        !notices.iter().any(|n| n.contains("q-secret-55555")),
        "{notices:?}"
    );
    // Said once, not at every step while it stays down.
    assert_eq!(
        notices.iter().filter(|n| n.contains("unavailable")).count(),
        1,
        "{notices:?}"
    );
    // The model read every failure, and the conversation went on.
    let sent = serde_json::to_string(&llm.requests()).unwrap();
    assert!(sent.contains("timed out after 3 seconds") && sent.contains("broken on purpose"));
    assert!(events.iter().any(|e| e["message"] == "survived"));
    let (_, listed) = ohd.get("/api/mcp").await;
    let sse = listed["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["transport"] == "sse")
        .cloned()
        .unwrap();
    assert_eq!(sse["state"], "unavailable", "{listed}");
    assert!(!listed.to_string().contains("q-secret-55555"), "{listed}");
    assert!(
        sse["error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{listed}"
    );
}

#[tokio::test]
async fn mcp_servers_from_the_settings_page_join_the_configured_ones_and_keep_their_keys() {
    if !servers_or_skip("MCP from the settings page", true) {
        return;
    }
    const KEY: &str = "settings-key-1234567";
    let shttp = http_server("streamable-http", Some(KEY)).await;
    let remote_echo = format!("127_0_0_1_{}_echo", shttp.port);
    let (llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call("echo", json!({"text": "from the configured server"})),
        Turn::tool_call(
            "everything_echo",
            json!({"message": "from the published server"}),
        ),
        Turn::tool_call("get-sum", json!({"a": 40, "b": 2})),
        Turn::tool_call(remote_echo.as_str(), json!({"text": "with the kept key"})),
        Turn::text("done"),
    ]))
    .await;
    options.config_toml = Some(format!(
        "[mcp]\nstdio_servers = [{}]\n",
        stdio_entry("local", "")
    ));
    let ohd = Ohd::start_with(options).await;

    // A mistake is refused with what is wrong.
    let (status, body) = ohd
        .post(
            "/api/settings",
            json!({"mcp_config": {"stdio_servers": [{"name": "has space", "command": "x"}]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("letters"), "{body}");
    // As the MCP tab saves them.
    let mcp_config = json!({
        "sse_servers": [],
        "stdio_servers": [{"name": "everything", "command": "mcp-server-everything", "args": ["stdio"], "env": {}}],
        "shttp_servers": [{"url": format!("http://127.0.0.1:{}/mcp", shttp.port), "api_key": KEY}],
    });
    let (status, body) = ohd
        .post("/api/settings", json!({"mcp_config": mcp_config}))
        .await;
    assert_eq!(status, 200, "{body}");
    // The key is never shown; sent back hidden, it is kept.
    let (_, settings) = ohd.get("/api/settings").await;
    assert!(!settings.to_string().contains(KEY), "{settings}");
    let shown = settings["mcp_config"].clone();
    assert_eq!(shown["shttp_servers"][0]["api_key"], "**********");
    let (status, _) = ohd
        .post("/api/settings", json!({"mcp_config": shown}))
        .await;
    assert_eq!(status, 200);

    let conv = ohd.create_conversation().await;
    place_server(&ohd, &conv);
    let (events, _) = socket_io(&ohd, &conv, "", "use them all").await;
    let tools = offered(&llm);
    // The configured server came first and keeps `echo`; the others' clash predictably.
    for name in ["echo", "everything_echo", "get-sum", &remote_echo] {
        assert!(tools.iter().any(|t| t == name), "{name} not in {tools:?}");
    }
    let results = mcp_results(&events);
    assert_eq!(
        results
            .iter()
            .map(|r| (r.1.as_str(), r.2))
            .collect::<Vec<_>>(),
        [
            ("from the configured server", false),
            ("Echo: from the published server", false),
            ("The sum of 40 and 2 is 42.", false),
            ("with the kept key", false),
        ],
        "{results:?}"
    );
    let (_, listed) = ohd.get("/api/mcp").await;
    assert_eq!(listed["servers"].as_array().unwrap().len(), 3, "{listed}");
}

/// A stdio server is an attacker's process like any command: in the sandbox it must not reach
/// ohd on this machine's loopback (where it would find the API).
#[tokio::test]
async fn a_stdio_server_in_the_sandbox_cannot_reach_ohd() {
    if !servers_or_skip("MCP stdio server reaching ohd", false) {
        return;
    }
    if !ohd_runtime::sandbox::bubblewrap_available() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(!ci, "no sandbox here");
        eprintln!("skipping: no sandbox here");
        return;
    }
    // A server on this machine's loopback, as ohd is: the host reaches it, the sandbox must not.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alive", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/alive", axum::routing::get(|| async { "ok" }));
        let _ = axum::serve(listener, app).await;
    });
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let (_llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call("fetch", json!({ "url": url })),
        Turn::text("done"),
    ]))
    .await;
    options.config_toml = Some(format!(
        "[mcp]\nstdio_servers = [{}]\n",
        stdio_entry("local", "")
    ));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    place_server(&ohd, &conv);
    let (events, _) = socket_io(&ohd, &conv, "", "fetch it").await;
    let results = mcp_results(&events);
    assert_eq!(results.len(), 1, "{:?}", summary(&events));
    assert!(results[0].1.starts_with("unreachable"), "{results:?}");
}
