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
        .post("/api/secrets", json!({"name": "DEPLOY_KEY", "value": "x"}))
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
                "github": {"token": "ghp_token_never_shown_1234", "host": null},
                "gitlab": {"token": "glpat-token-never-shown", "host": "gitlab.example.org"},
            }}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Git providers stored"}))
    );
    // A host alone keeps the token.
    ohd.post(
        "/api/add-git-providers",
        json!({"provider_tokens": {"gitlab": {"token": "", "host": "git.example.net"}}}),
    )
    .await;
    let (_, settings) = ohd.get("/api/settings").await;
    assert_eq!(
        settings["provider_tokens_set"],
        json!({"github": null, "gitlab": "git.example.net"})
    );
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
    let message = json!({"action": "message", "args": {"content": "deploy"}}).to_string();
    let output = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../e2e/clients/seed_client.mjs"
        ))
        .args([
            "--url",
            &format!("http://{}", ohd.addr),
            "--conversation",
            &conv,
            "--providers",
            "github",
            "--send",
            &message,
            "--until-state",
            "finished,error",
            "--timeout-ms",
            "30000",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let run = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["kind"] == "event")
        .map(|l| l["event"].clone())
        .find(|e| e["observation"] == "run")
        .expect("no command output");
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

    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    let mut all = Vec::new();
    for text in [
        "hello",
        "use docker please",
        "docker again",
        "and kubernetes",
    ] {
        client.send(&user_message(text)).await;
        all.extend(client.until_state(&["awaiting_user_input", "error"]).await);
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
