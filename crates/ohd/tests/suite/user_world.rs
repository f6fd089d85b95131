//! The user's world (issue 11, in part): provider tokens and custom secrets set over REST as
//! the web UI's settings tabs do, kept write-only, given to the agent's shell and hidden from
//! every event and from what the model is sent.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use serde_json::{Value, json};

async fn delete(ohd: &Ohd, path: &str) -> (u16, Value) {
    let response = ohd.http.delete(ohd.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put(ohd: &Ohd, path: &str, body: Value) -> (u16, Value) {
    let response = ohd
        .http
        .put(ohd.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn secrets_and_provider_tokens_are_set_listed_and_never_shown() {
    let ohd = Ohd::start().await;
    let value = "s3cret-value-never-shown";
    let (status, body) = ohd
        .post(
            "/api/secrets",
            json!({"name": "DEPLOY_KEY", "value": value, "description": "for deploys"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (201, json!({"message": "Secret created successfully"}))
    );
    let (status, body) = ohd
        .post(
            "/api/secrets",
            json!({"name": "DEPLOY_KEY", "value": "another-value"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"message": "Secret DEPLOY_KEY already exists"}))
    );
    let (status, body) = ohd
        .post("/api/secrets", json!({"name": "not a name", "value": "x"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("environment variable")
    );
    assert_eq!(
        ohd.get("/api/secrets").await,
        (
            200,
            json!({"custom_secrets": [{"name": "DEPLOY_KEY", "description": "for deploys"}]})
        )
    );
    // Renamed, described anew; the value stays.
    assert_eq!(
        put(
            &ohd,
            "/api/secrets/DEPLOY_KEY",
            json!({"name": "RELEASE_KEY", "description": "d2"})
        )
        .await,
        (200, json!({"message": "Secret updated successfully"}))
    );
    assert_eq!(
        put(&ohd, "/api/secrets/NOPE", json!({"name": "X"})).await,
        (404, json!({"error": "Secret with ID NOPE not found"}))
    );

    // Provider tokens: stored, reported by host, never returned.
    let (status, body) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {
                // Hosts that cannot be reached: the tokens cannot be checked, and are kept.
                "github": {"token": "ghp_token_never_shown_1234", "host": "http://127.0.0.1:9"},
                "gitlab": {"token": "glpat-token-never-shown", "host": "gitlab.invalid"},
            }}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Git providers stored"}))
    );
    // The same host without a token keeps the token; another host needs the token again, and
    // a host that would send it in the clear over a network is refused.
    let (status, _) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"gitlab": {"token": "", "host": "gitlab.invalid"}}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"gitlab": {"token": "", "host": "evil.invalid"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"gitlab": {"token": "glpat-x-123456", "host": "http://evil.invalid"}}}),
        )
        .await;
    assert_eq!(status, 400);
    let (_, settings) = ohd.get("/api/settings").await;
    assert_eq!(
        settings["provider_tokens_set"],
        json!({"github": "http://127.0.0.1:9", "gitlab": "gitlab.invalid"})
    );
    // Secret values too short to hide, and names that would change how the shell runs.
    let (status, _) = ohd
        .post("/api/secrets", json!({"name": "PIN", "value": "1234"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = ohd
        .post(
            "/api/secrets",
            json!({"name": "LD_PRELOAD", "value": "/tmp/evil.so"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"nowhere": {"token": "x"}}}),
        )
        .await;
    assert_eq!(status, 400);
    // Nothing any route answers holds a value.
    let mut seen = String::new();
    for path in ["/api/settings", "/api/secrets"] {
        seen.push_str(&ohd.get(path).await.1.to_string());
    }
    for secret in [
        value,
        "ghp_token_never_shown_1234",
        "glpat-token-never-shown",
    ] {
        assert!(!seen.contains(secret), "{secret} was shown");
    }
    // The file holding them is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let file = ohd.data_dir.join("secrets.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        ohd.post("/api/unset-provider-tokens", json!({})).await,
        (200, json!({"message": "Unset Git provider tokens"}))
    );
    assert_eq!(
        ohd.get("/api/settings").await.1["provider_tokens_set"],
        json!({})
    );
    assert_eq!(
        delete(&ohd, "/api/secrets/RELEASE_KEY").await,
        (200, json!({"message": "Secret deleted successfully"}))
    );
    assert_eq!(delete(&ohd, "/api/secrets/RELEASE_KEY").await.0, 404);
    assert_eq!(
        ohd.get("/api/secrets").await.1,
        json!({"custom_secrets": []})
    );
}

#[tokio::test]
async fn a_secret_and_a_saved_token_reach_the_shell_and_are_hidden_everywhere() {
    let (llm, options) = scripted_llm(Script::new(vec![
        Turn::tool_call(
            "execute_bash",
            json!({"command": "echo \"key=$DEPLOY_KEY\"; echo \"token=$GITHUB_TOKEN\"; echo ${#DEPLOY_KEY}"}),
        ),
        Turn::tool_call("finish", json!({"message": "done"})),
    ]))
    .await;
    let ohd = Ohd::start_with(options).await;
    let value = "s3cret-value-never-shown";
    let token = "ghp_saved_token_never_shown";
    let (status, _) = ohd
        .post(
            "/api/secrets",
            json!({"name": "DEPLOY_KEY", "value": value, "description": "the deploy key"}),
        )
        .await;
    assert_eq!(status, 201);
    ohd.post(
        "/api/add-git-providers",
        json!({"provider_tokens": {"github": {"token": token}}}),
    )
    .await;
    let conv = ohd.create_conversation().await;
    // As the web UI does: the socket names the providers whose tokens the shell gets.
    let (events, stdout) = socket_io(&ohd, &conv, "github", "deploy").await;
    let run = events
        .iter()
        .find(|e| e["observation"] == "run")
        .expect("no command output")
        .clone();
    // In the shell, hidden in the event.
    assert_eq!(
        run["content"],
        format!(
            "key=<secret_hidden>\ntoken=<secret_hidden>\n{}\n",
            value.len()
        )
    );
    // Nowhere in what clients received, what is stored, or what the model was sent; the model
    // was told the secret's name.
    let stored = serde_json::to_string(&ohd.events(&conv).await).unwrap();
    let sent =
        serde_json::to_string(&llm.recorded().iter().map(|r| &r.body).collect::<Vec<_>>()).unwrap();
    for secret in [value, token] {
        assert!(!stdout.contains(secret) && !stored.contains(secret) && !sent.contains(secret));
    }
    assert!(sent.contains("DEPLOY_KEY") && sent.contains("the deploy key"));
}

#[tokio::test]
async fn microagents_reach_the_model_as_recalls_and_triggers_bring_knowledge_once() {
    let (llm, mut options) = scripted_llm(Script::new(vec![
        Turn::text("hello"),
        Turn::text("docker noted"),
        Turn::text("again"),
        Turn::text("kubernetes noted"),
    ]))
    .await;
    let user_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        user_dir.path().join("k8s.md"),
        "---\nname: k8s\ntriggers:\n  - kubernetes\n---\nUse kubectl apply -k.\n",
    )
    .unwrap();
    options.config_toml = Some(format!(
        "[agent]\nmicroagents_dir = \"{}\"\n",
        user_dir.path().display()
    ));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let workspace = ohd.data_dir.join("workspaces").join(&conv);
    std::fs::create_dir_all(workspace.join(".openhands/microagents/tools")).unwrap();
    std::fs::write(
        workspace.join(".openhands/microagents/repo.md"),
        "---\nname: repo\n---\nAlways run make test before finishing.\n",
    )
    .unwrap();
    std::fs::write(
        workspace.join("AGENTS.md"),
        "Write commit messages in English.\n",
    )
    .unwrap();
    std::fs::write(
        workspace.join(".openhands/microagents/tools/docker.md"),
        "---\nname: docker\ntriggers: [docker]\n---\nBuild images with docker buildx.\n",
    )
    .unwrap();
    // A link out of the workspace is not followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "OUTSIDE-SECRET-TEXT").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        workspace.join(".cursorrules"),
    )
    .unwrap();

    // With socket.io-client, as the web UI: each message from a new join after the last event
    // seen, as a user who comes back to the conversation.
    let mut all: Vec<Value> = Vec::new();
    for text in [
        "hello",
        "use docker please",
        "docker again",
        "and kubernetes",
    ] {
        let latest = all.last().map_or("-1".to_owned(), |e| e["id"].to_string());
        let (events, _) = socket_io_after(&ohd, &conv, "", &latest, text).await;
        all.extend(events);
    }
    let recalls: Vec<&Value> = all
        .iter()
        .filter(|e| e["observation"] == "recall")
        .collect();
    assert_eq!(recalls.len(), 3, "{:?}", summary(&all));
    // The first: the repository's instructions, as the original's workspace context.
    assert_eq!(recalls[0]["extras"]["recall_type"], "workspace_context");
    let instructions = recalls[0]["extras"]["repo_instructions"].as_str().unwrap();
    assert!(
        instructions.contains("Always run make test") && instructions.contains("commit messages")
    );
    assert!(!instructions.contains("OUTSIDE-SECRET-TEXT"));
    // Each answers a recall action stored with source user, after the message.
    for recall in &recalls {
        let action = all.iter().find(|e| e["id"] == recall["cause"]).unwrap();
        assert_eq!(
            (action["action"].as_str(), action["source"].as_str()),
            (Some("recall"), Some("user"))
        );
    }
    assert_eq!(recalls[1]["extras"]["recall_type"], "knowledge");
    assert_eq!(
        recalls[1]["extras"]["microagent_knowledge"][0]["name"],
        "docker"
    );
    assert_eq!(
        recalls[1]["extras"]["microagent_knowledge"][0]["trigger"],
        "docker"
    );
    assert_eq!(
        recalls[2]["extras"]["microagent_knowledge"][0]["name"],
        "k8s"
    );
    // What the model was sent: the instructions from the start, the docker knowledge once.
    let requests = llm.requests();
    let last = requests.last().unwrap()["messages"].to_string();
    assert!(last.contains("Always run make test"));
    assert_eq!(last.matches("docker buildx").count(), 1);
    assert!(last.contains("kubectl apply"));
    assert!(
        !requests[0]["messages"]
            .to_string()
            .contains("docker buildx")
    );
}

/// A git server for the tests: a bare repository served over HTTP (git's "dumb" protocol),
/// behind basic auth that accepts one token, as a provider would.
struct GitServer {
    url: String,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn git_server(token: &str) -> GitServer {
    git_server_with_api(token, axum::Router::new()).await
}

/// As [`git_server`], with `api` answering under `/api/` (a provider's REST API on the same
/// host, as GitHub Enterprise serves it; it checks its token itself).
async fn git_server_with_api(token: &str, api: axum::Router) -> GitServer {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join(".openhands/microagents")).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("README.md"), "the project\n").unwrap();
    std::fs::write(
        src.join(".openhands/microagents/repo.md"),
        "Run make check before finishing.\n",
    )
    .unwrap();
    std::fs::write(
        src.join(".openhands/setup.sh"),
        "echo setup-ran-here\necho ok > setup-marker.txt\n",
    )
    .unwrap();
    std::fs::write(src.join(".openhands/pre-commit.sh"), "exit 0\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "first"]);
    git(&src, &["checkout", "-qb", "feature"]);
    std::fs::write(src.join("feature.txt"), "on the feature branch\n").unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "feature"]);
    git(&src, &["checkout", "-q", "main"]);
    let served = dir.path().join("served/owner");
    std::fs::create_dir_all(&served).unwrap();
    git(
        dir.path(),
        &["clone", "-q", "--bare", "src", "served/owner/repo.git"],
    );
    git(&served.join("repo.git"), &["update-server-info"]);

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let auth = axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let expected = expected.clone();
            async move {
                if request.uri().path().starts_with("/api/") {
                    return next.run(request).await;
                }
                let given = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if given == expected {
                    next.run(request).await
                } else {
                    axum::response::Response::builder()
                        .status(401)
                        .header("www-authenticate", "Basic realm=\"git\"")
                        .body(axum::body::Body::empty())
                        .unwrap()
                }
            }
        },
    );
    let app = api
        .fallback_service(tower_http::services::ServeDir::new(
            dir.path().join("served"),
        ))
        .layer(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    GitServer {
        url,
        _dir: dir,
        _server: server,
    }
}

/// Saves a GitHub token for `host`, as the settings page's Git tab does.
async fn save_github_token(ohd: &Ohd, token: &str, host: &str) {
    let (status, body) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"github": {"token": token, "host": host}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn create_on_repository(ohd: &Ohd, branch: &str) -> String {
    let (status, body) = ohd
        .post(
            "/api/conversations",
            json!({"repository": "owner/repo", "git_provider": "github", "selected_branch": branch}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["conversation_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_conversation_on_a_repository_starts_with_it_cloned_set_up_and_described() {
    let token = "ghp_clone_token_never_shown_42";
    let server = git_server(token).await;
    let (llm, options) = scripted_llm(Script::new(vec![Turn::text("seen")])).await;
    let ohd = Ohd::start_with(options).await;
    save_github_token(&ohd, token, &server.url).await;
    let conv = create_on_repository(&ohd, "feature").await;
    // With socket.io-client, as the web UI: the clone, the set-up run and the recall, in order.
    let (events, _) = socket_io(&ohd, &conv, "github", "what is this?").await;
    let position = |test: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(test)
            .unwrap_or_else(|| panic!("missing in {:?}", summary(&events)))
    };
    // (The client may send its message before the agent is up: it is stored at once, and
    // handled only after the clone and the set-up.)
    let setup_at = position(&|e| e["observation"] == "run" && e["source"] == "environment");
    let recall_at = position(&|e| e["observation"] == "recall");
    let working_at = position(&|e| e["extras"]["agent_state"] == "running");
    assert!(
        setup_at < recall_at && recall_at < working_at,
        "{:?}",
        summary(&events)
    );
    // Cloned on the branch asked for; the token is not kept in git's configuration.
    let repo = ohd.data_dir.join("workspaces").join(&conv).join("repo");
    assert_eq!(
        std::fs::read_to_string(repo.join("feature.txt")).unwrap(),
        "on the feature branch\n"
    );
    let config = std::fs::read_to_string(repo.join(".git/config")).unwrap();
    assert!(!config.contains(token));
    assert!(repo.join(".git/hooks/pre-commit").is_file());
    // The set-up script ran in the sandbox, its output in the log.
    let setup = &events[setup_at];
    assert!(
        setup["content"]
            .as_str()
            .unwrap()
            .contains("setup-ran-here"),
        "{setup}"
    );
    assert!(repo.join("setup-marker.txt").exists());
    // The first message brought the repository's description and instructions.
    let recall = &events[recall_at];
    assert_eq!(recall["extras"]["repo_name"], "owner/repo");
    assert_eq!(recall["extras"]["repo_branch"], "feature");
    assert!(
        recall["extras"]["repo_instructions"]
            .as_str()
            .unwrap()
            .contains("make check")
    );
    let sent = llm.requests().last().unwrap()["messages"].to_string();
    assert!(sent.contains("owner/repo") && sent.contains("make check"));
    let stored = serde_json::to_string(&ohd.events(&conv).await).unwrap();
    assert!(!stored.contains(token));
}

#[tokio::test]
async fn a_clone_that_fails_says_why_and_the_conversation_stays_usable() {
    let server = git_server("ghp_the_right_token_123").await;
    let (_llm, options) = scripted_llm(Script::new(vec![
        Turn::text("still here"),
        Turn::text("here too"),
    ]))
    .await;
    let ohd = Ohd::start_with(options).await;
    // With socket.io-client, as the web UI: the error comes first, the message is then handled.
    let clone_error = |events: &[Value]| -> String {
        let error = events
            .iter()
            .find(|e| e["observation"] == "error")
            .unwrap_or_else(|| panic!("no error event in {:?}", summary(events)));
        error["content"].as_str().unwrap_or_default().to_owned()
    };
    save_github_token(&ohd, "ghp_a_wrong_token_456", &server.url).await;
    let conv = create_on_repository(&ohd, "main").await;
    let (events, stdout) = socket_io(&ohd, &conv, "github", "hello").await;
    let text = clone_error(&events);
    assert!(
        text.contains("Cloning owner/repo") && text.contains("token"),
        "{text}"
    );
    assert!(!stdout.contains("ghp_a_wrong_token_456"));
    assert!(events.iter().any(|e| e["message"] == "still here"));

    // An unknown branch, with the right token.
    save_github_token(&ohd, "ghp_the_right_token_123", &server.url).await;
    let conv = create_on_repository(&ohd, "no-such-branch").await;
    let (events, _) = socket_io(&ohd, &conv, "github", "hello").await;
    assert!(
        clone_error(&events).contains("branch"),
        "{:?}",
        summary(&events)
    );
    assert!(events.iter().any(|e| e["message"] == "here too"));
}

#[tokio::test]
async fn a_link_planted_where_the_clone_goes_is_not_followed() {
    let token = "ghp_the_right_token_789";
    let server = git_server(token).await;
    let (_llm, options) = scripted_llm(Script::new(vec![Turn::text("ok")])).await;
    let ohd = Ohd::start_with(options).await;
    // No token yet: the clone fails, and the agent (or anyone with the shell) links the
    // repository's folder to a place outside the workspace.
    let conv = create_on_repository(&ohd, "main").await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    let outside = tempfile::tempdir().unwrap();
    let workspace = ohd.data_dir.join("workspaces").join(&conv);
    std::os::unix::fs::symlink(outside.path(), workspace.join("repo")).unwrap();
    save_github_token(&ohd, token, &server.url).await;
    // The agent starts again, and with it the clone.
    ohd.post(&format!("/api/conversations/{conv}/stop"), json!({}))
        .await;
    let latest = ohd.events(&conv).await.last().unwrap()["id"].to_string();
    let mut client = joined(&ohd, &conv, &latest).await;
    let ready = client.until_ready().await;
    let error = ready
        .iter()
        .find(|e| e["observation"] == "error")
        .expect("no error");
    assert!(
        error["content"].as_str().unwrap().contains("not a folder"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "the clone went outside"
    );
}

/// The one stand-in for a provider: GitHub's and GitLab's documented REST shapes, answering
/// only the token it was given (GitHub's `Authorization: Bearer`, GitLab's `PRIVATE-TOKEN`).
async fn provider_api(github_token: &'static str, gitlab_token: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    fn github(headers: &HeaderMap, token: &str) -> bool {
        headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {token}"))
    }
    fn gitlab(headers: &HeaderMap, token: &str) -> bool {
        headers.get("private-token").and_then(|v| v.to_str().ok()) == Some(token)
    }
    let refused = || {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Bad credentials"})),
        )
    };
    let app = axum::Router::new()
        .route(
            "/api/v3/user",
            get(move |h: HeaderMap| async move {
                if !github(&h, github_token) {
                    return Err(refused());
                }
                Ok(axum::Json(json!({"id": 7, "login": "octo", "avatar_url": "https://a/octo.png", "company": null, "name": "Octo Cat", "email": null})))
            }),
        )
        .route(
            "/api/v3/user/repos",
            get(move |h: HeaderMap| async move {
                if !github(&h, github_token) {
                    return Err(refused());
                }
                Ok((
                    [("link", "<http://x/user/repos?page=2>; rel=\"next\"")],
                    axum::Json(json!([{"id": 1296269, "full_name": "octo/hello", "private": false, "stargazers_count": 80, "pushed_at": "2026-11-01T00:00:00Z", "owner": {"type": "User"}, "default_branch": "main"}])),
                ))
            }),
        )
        .route(
            "/api/v3/repos/octo/hello/branches",
            get(move |h: HeaderMap| async move {
                if !github(&h, github_token) {
                    return Err(refused());
                }
                Ok(axum::Json(json!([{"name": "main", "commit": {"sha": "abc123"}, "protected": true}, {"name": "dev", "commit": {"sha": "def456"}, "protected": false}])))
            }),
        )
        .route(
            "/api/v3/repos/octo/hello/git/matching-refs/heads/fe",
            get(move |h: HeaderMap| async move {
                if !github(&h, github_token) {
                    return Err(refused());
                }
                Ok(axum::Json(json!([{"ref": "refs/heads/feature-x", "object": {"sha": "a1"}}])))
            }),
        )
        .route(
            "/api/v3/search/repositories",
            get(move |h: HeaderMap| async move {
                if !github(&h, github_token) {
                    return Err(refused());
                }
                Ok(axum::Json(json!({"total_count": 1, "items": [{"id": 3, "full_name": "rust-lang/rust", "private": false, "stargazers_count": 100000, "owner": {"type": "Organization"}, "default_branch": "master"}]})))
            }),
        )
        .route(
            "/api/v4/projects",
            get(move |h: HeaderMap| async move {
                if !gitlab(&h, gitlab_token) {
                    return Err(refused());
                }
                Ok(axum::Json(json!([{"id": 42, "path_with_namespace": "group/project", "visibility": "private", "star_count": 2, "last_activity_at": "2026-11-02T00:00:00Z", "namespace": {"kind": "group"}, "default_branch": "main"}])))
            }),
        )
        .route(
            "/api/v4/projects/group%2Fproject/repository/branches",
            get(move |h: HeaderMap| async move {
                if !gitlab(&h, gitlab_token) {
                    return Err(refused());
                }
                Ok((
                    [("x-next-page", "2"), ("x-total", "3")],
                    axum::Json(json!([{"name": "main", "commit": {"id": "f00", "committed_date": "2026-11-03T00:00:00Z"}, "protected": false}])),
                ))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn the_repository_picker_answers_from_github_and_gitlab_in_the_originals_shapes() {
    let api = provider_api("ghp_picker_token_1234", "glpat-picker-token-5678").await;
    let ohd = Ohd::start().await;
    // Without a token: the original's 401.
    assert_eq!(
        ohd.get("/api/user/info").await,
        (401, json!("Git provider token required. (such as GitHub)."))
    );
    ohd.post(
        "/api/add-git-providers",
        json!({"provider_tokens": {
            "github": {"token": "ghp_picker_token_1234", "host": api},
            "gitlab": {"token": "glpat-picker-token-5678", "host": api},
        }}),
    )
    .await;
    assert_eq!(
        ohd.get("/api/user/info").await,
        (
            200,
            json!({"id": "7", "login": "octo", "avatar_url": "https://a/octo.png", "company": null, "name": "Octo Cat", "email": null})
        )
    );
    let (status, repos) = ohd
        .get("/api/user/repositories?sort=pushed&selected_provider=github&page=1&per_page=30")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        repos[0],
        json!({"id": "1296269", "full_name": "octo/hello", "git_provider": "github", "is_public": true, "stargazers_count": 80, "link_header": "<http://x/user/repos?page=2>; rel=\"next\"", "pushed_at": "2026-11-01T00:00:00Z", "owner_type": "user", "main_branch": "main"})
    );
    let (_, found) = ohd
        .get("/api/user/search/repositories?query=rust&per_page=5&selected_provider=github")
        .await;
    assert_eq!(found[0]["full_name"], "rust-lang/rust");
    assert_eq!(found[0]["owner_type"], "organization");
    let (_, branches) = ohd
        .get("/api/user/repository/branches?repository=octo/hello&selected_provider=github")
        .await;
    assert_eq!(
        branches,
        json!({"branches": [
            {"name": "main", "commit_sha": "abc123", "protected": true, "last_push_date": null},
            {"name": "dev", "commit_sha": "def456", "protected": false, "last_push_date": null},
        ], "has_next_page": false, "current_page": 1, "per_page": 30, "total_count": null})
    );
    let (_, found) = ohd
        .get("/api/user/search/branches?repository=octo/hello&query=fe&selected_provider=github")
        .await;
    assert_eq!(
        found,
        json!([{"name": "feature-x", "commit_sha": "a1", "protected": false, "last_push_date": null}])
    );
    let (status, _) = ohd
        .get("/api/user/search/branches?repository=../../x&query=fe&selected_provider=github")
        .await;
    assert_eq!(status, 400);
    // GitLab: its own shapes mapped to the same ones.
    let (_, repos) = ohd
        .get("/api/user/repositories?selected_provider=gitlab")
        .await;
    assert_eq!(repos[0]["full_name"], "group/project");
    assert_eq!(repos[0]["git_provider"], "gitlab");
    assert_eq!(repos[0]["is_public"], false);
    assert_eq!(repos[0]["owner_type"], "organization");
    let (_, branches) = ohd
        .get("/api/user/repository/branches?repository=group/project&selected_provider=gitlab")
        .await;
    assert_eq!(branches["branches"][0]["commit_sha"], "f00");
    assert_eq!(branches["has_next_page"], true);
    assert_eq!(branches["total_count"], 3);
    // A token the provider refuses is not stored, as the original checks it.
    let (status, body) = ohd
        .post(
            "/api/add-git-providers",
            json!({"provider_tokens": {"github": {"token": "ghp_revoked_token_0000", "host": api}}}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "Invalid token. Please make sure it is a valid github token."})
        )
    );
    assert_eq!(ohd.get("/api/user/info").await.0, 200);
}

#[tokio::test]
async fn a_restart_never_writes_into_a_clone_the_agent_has_changed() {
    let token = "ghp_the_right_token_321";
    let server = git_server(token).await;
    let (_llm, options) = scripted_llm(Script::new(vec![Turn::text("ok")])).await;
    let ohd = Ohd::start_with(options).await;
    save_github_token(&ohd, token, &server.url).await;
    let conv = create_on_repository(&ohd, "main").await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    // What the agent could do in its clone: point the hook at a file of this machine.
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "untouched\n").unwrap();
    let hook = ohd
        .data_dir
        .join("workspaces")
        .join(&conv)
        .join("repo/.git/hooks/pre-commit");
    std::fs::remove_file(&hook).unwrap();
    std::os::unix::fs::symlink(&victim, &hook).unwrap();
    // The agent starts again: the clone is kept as it is, and nothing is written through it.
    ohd.post(&format!("/api/conversations/{conv}/stop"), json!({}))
        .await;
    let latest = ohd.events(&conv).await.last().unwrap()["id"].to_string();
    let mut client = joined(&ohd, &conv, &latest).await;
    client.until_ready().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}

/// GitHub's REST API for one user holding `owner/repo` (branches `main` and `feature`),
/// answering only `token`, under `/api/v3` as GitHub Enterprise serves it.
fn github_api_for_owner_repo(token: &'static str) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let answer = move |body: Value| {
        move |h: HeaderMap| async move {
            let given = h.get("authorization").and_then(|v| v.to_str().ok());
            if given == Some(format!("Bearer {token}").as_str()) {
                Ok(axum::Json(body))
            } else {
                Err((
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"message": "Bad credentials"})),
                ))
            }
        }
    };
    let repo = json!({"id": 501, "full_name": "owner/repo", "private": true, "stargazers_count": 3, "pushed_at": "2026-11-20T00:00:00Z", "owner": {"type": "User"}, "default_branch": "main"});
    axum::Router::new()
        .route(
            "/api/v3/user",
            get(answer(json!({"id": 9, "login": "owner", "avatar_url": "", "company": null, "name": "The Owner", "email": null}))),
        )
        .route("/api/v3/user/repos", get(answer(json!([repo.clone()]))))
        .route(
            "/api/v3/search/repositories",
            get(answer(json!({"total_count": 1, "items": [repo]}))),
        )
        .route(
            "/api/v3/user/installations",
            get(answer(json!({"total_count": 0, "installations": []}))),
        )
        .route(
            "/api/v3/repos/owner/repo/branches",
            get(answer(json!([
                {"name": "main", "commit": {"sha": "aaa111"}, "protected": false},
                {"name": "feature", "commit": {"sha": "bbb222"}, "protected": false},
            ]))),
        )
        // What the branch box asks as the user types.
        .route(
            "/api/v3/repos/owner/repo/git/matching-refs/heads/{*prefix}",
            get(answer(json!([{"ref": "refs/heads/feature", "object": {"sha": "bbb222"}}]))),
        )
}

/// The OpenHands web UI's Git and Secrets tabs and its repository picker, in Chromium, against
/// ohd. It needs a built 0.59 frontend (`OHD_WEB_UI_BUILD`, see the README): one cannot be built
/// where the tests run in CI (the frontend's source is not reachable there), so without it the
/// test says so and does nothing; the REST shapes the UI reads are checked by the tests above.
#[tokio::test]
async fn browser_the_web_uis_git_and_secrets_tabs_and_repository_picker_drive_ohd() {
    let Some(build) = std::env::var_os("OHD_WEB_UI_BUILD") else {
        eprintln!(
            "skipping the OpenHands web UI in Chromium: set OHD_WEB_UI_BUILD to a built 0.59 frontend"
        );
        return;
    };
    let Some(chromium) = crate::suite::browser::browser_or_skip("the OpenHands web UI in Chromium")
    else {
        return;
    };
    const TOKEN: &str = "ghp_web_ui_token_never_shown_77";
    let server = git_server_with_api(TOKEN, github_api_for_owner_repo(TOKEN)).await;
    let (_llm, mut options) = scripted_llm(Script::new(vec![Turn::text("cloned and ready")])).await;
    options
        .env
        .push(("OHD_WEB_UI".into(), build.to_string_lossy().into_owned()));
    crate::suite::browser::server_log(&mut options, "web-ui");
    let ohd = Ohd::start_with(options).await;
    // A returning user: the model chosen and the analytics question answered, so that the UI
    // opens no dialog of its own over the pages.
    let (status, body) = ohd
        .post(
            "/api/settings",
            json!({"llm_model": "openai/scripted", "user_consents_to_analytics": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let lines = crate::suite::browser::run_browser_script(
        &ohd,
        &chromium,
        "web_ui.test.mjs",
        &[
            "--token",
            TOKEN,
            "--host",
            &server.url,
            "--repo",
            "owner/repo",
            "--branch",
            "feature",
            "--secret-name",
            "WEB_UI_SECRET",
            "--secret-value",
            "web-ui-secret-value-31",
        ],
    )
    .await;
    let result = lines.last().expect("no output");
    assert_eq!(result["ok"], true, "{lines:?}");
    let conv = result["conversation"].as_str().unwrap().to_owned();

    // What the UI saved, as ohd reports it: the token set for the stand-in's host, the secret
    // listed without its value.
    let (_, settings) = ohd.get("/api/settings").await;
    assert_eq!(
        settings["provider_tokens_set"]["github"],
        json!(server.url),
        "{settings}"
    );
    let (_, secrets) = ohd.get("/api/secrets").await;
    assert_eq!(
        secrets["custom_secrets"][0]["name"], "WEB_UI_SECRET",
        "{secrets}"
    );
    assert!(!secrets.to_string().contains("web-ui-secret-value-31"));
    // The conversation the picker launched: on owner/repo and its feature branch, cloned by
    // the time the UI's own socket has brought its agent up.
    let (_, info) = ohd.get(&format!("/api/conversations/{conv}")).await;
    assert_eq!(info["selected_repository"], "owner/repo", "{info}");
    assert_eq!(info["selected_branch"], "feature", "{info}");
    let cloned = ohd
        .data_dir
        .join("workspaces")
        .join(&conv)
        .join("repo/feature.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cloned.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        cloned.exists(),
        "the repository was not cloned on the feature branch"
    );
    let stored = serde_json::to_string(&ohd.events(&conv).await).unwrap();
    assert!(!stored.contains(TOKEN) && !stored.contains("web-ui-secret-value-31"));
}
