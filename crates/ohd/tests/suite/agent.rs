//! The agent end to end: the real server, a real Socket.IO client, real commands in a real
//! shell, and a scripted model served over HTTP that records what it was sent.

use crate::common::*;
use ohd_scripted_llm::{Script, ScriptedLlmHandle, Turn};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Every request the model got obeys the providers' rules: each tool call of an assistant
/// message is answered, by its id, before anything else comes, and no answer is an orphan.
fn assert_tool_calls_answered(requests: &[Value]) {
    for request in requests {
        let messages = request["messages"].as_array().expect("messages");
        let mut open: Vec<String> = Vec::new();
        for message in messages {
            match message["role"].as_str() {
                Some("tool") => {
                    let id = message["tool_call_id"]
                        .as_str()
                        .expect("tool_call_id")
                        .to_owned();
                    assert!(
                        open.contains(&id),
                        "orphan tool result {id} in {messages:?}"
                    );
                    open.retain(|o| *o != id);
                }
                _ => {
                    assert!(
                        open.is_empty(),
                        "calls {open:?} not answered before {message}"
                    );
                    if let Some(calls) = message["tool_calls"].as_array() {
                        open = calls
                            .iter()
                            .map(|c| c["id"].as_str().unwrap_or("").to_owned())
                            .collect();
                    }
                }
            }
        }
        assert!(open.is_empty(), "calls {open:?} never answered");
    }
}

async fn start(script: Script) -> (Ohd, ScriptedLlmHandle) {
    let (llm, options) = scripted_llm(script).await;
    (Ohd::start_with(options).await, llm)
}

#[tokio::test]
async fn a_task_that_creates_edits_views_and_runs_is_recorded_step_by_step() {
    let script = Script::new(vec![
        editor(json!({"command":"create","path":"/workspace/hello.sh","file_text":"echo hi\n"}))
            .with_text("I'll write the script."),
        editor(
            json!({"command":"str_replace","path":"/workspace/hello.sh","old_str":"hi","new_str":"hello"}),
        ),
        editor(json!({"command":"view","path":"/workspace/hello.sh"})),
        bash("bash hello.sh"),
        bash("mkdir -p sub && cd sub && export ANSWER=42"),
        bash("echo $ANSWER; pwd"),
        bash("ls /no/such/dir"),
        finish("The script prints hello."),
    ]);
    let (ohd, llm) = start(script).await;
    let conv = ohd.create_conversation().await;
    let message =
        json!({"action":"message","args":{"content":"Write hello.sh and run it"}}).to_string();
    let run = seed_client(
        &ohd,
        &[
            "--conversation",
            &conv,
            "--send",
            &message,
            "--until-state",
            "finished,error,awaiting_user_input",
            "--timeout-ms",
            "60000",
        ]
        .map(str::to_owned),
    )
    .await;
    let events = run.events;
    assert_eq!(run.code, Some(0), "{:?}", summary(&events));
    assert_eq!(
        events.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&events)
    );

    // On disk.
    let file = ohd.data_dir.join("workspaces").join(&conv).join("hello.sh");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "echo hello\n");

    // In the events: each action answered by an observation that names it.
    let edits = by_kind(&events, "action", "edit");
    assert_eq!(edits.len(), 2);
    assert_eq!(edits[0]["args"]["command"], "create");
    assert_eq!(edits[0]["args"]["thought"], "I'll write the script.");
    let edit_obs = by_kind(&events, "observation", "edit");
    assert_eq!(edit_obs[1]["cause"], edits[1]["id"]);
    assert!(
        edit_obs[1]["extras"]["diff"]
            .as_str()
            .unwrap()
            .contains("-echo hi\n+echo hello")
    );
    let read = by_kind(&events, "observation", "read");
    assert!(
        read[0]["content"]
            .as_str()
            .unwrap()
            .contains("     1\techo hello")
    );
    let runs = by_kind(&events, "observation", "run");
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[0]["content"], "hello\n");
    assert_eq!(runs[0]["success"], true);
    assert_eq!(
        runs[2]["content"].as_str().unwrap().lines().next(),
        Some("42"),
        "shell state kept"
    );
    assert!(
        runs[2]["extras"]["metadata"]["working_dir"]
            .as_str()
            .unwrap()
            .ends_with("/sub")
    );
    assert_eq!(runs[3]["extras"]["metadata"]["exit_code"], 2);
    assert_eq!(runs[3]["success"], false);
    for obs in runs.iter().chain(&edit_obs).chain(&read) {
        assert_eq!(obs["source"], "agent");
        assert!(obs["tool_call_metadata"]["tool_call_id"].is_string());
        let cause = obs["cause"].as_u64().unwrap();
        let action = events.iter().find(|e| e["id"] == cause).unwrap();
        assert_eq!(
            action["tool_call_metadata"]["tool_call_id"],
            obs["tool_call_metadata"]["tool_call_id"]
        );
        assert!(
            action["llm_metrics"]["accumulated_token_usage"]["prompt_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
    let finish = by_kind(&events, "action", "finish");
    assert_eq!(
        finish[0]["args"]["final_thought"],
        "The script prints hello."
    );

    // What the model was sent.
    let requests = llm.requests();
    assert_eq!(requests.len(), 8);
    assert_tool_calls_answered(&requests);
    let tools: HashSet<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        HashSet::from(["execute_bash", "str_replace_editor", "think", "finish"])
    );
    let last = requests.last().unwrap()["messages"].as_array().unwrap();
    assert_eq!(last[0]["role"], "system");
    assert_eq!(last[1]["content"], "Write hello.sh and run it");
    let failing = last.iter().rev().find(|m| m["role"] == "tool").unwrap();
    assert!(
        failing["content"].as_str().unwrap().contains("exit code 2"),
        "{failing}"
    );
    // The key reached the model's server, and no event carries it.
    assert!(
        llm.recorded()[0]
            .header("authorization")
            .unwrap()
            .contains("sk-test-do-not-leak")
    );
    assert!(
        !serde_json::to_string(&ohd.events(&conv).await)
            .unwrap()
            .contains("sk-test-do-not-leak")
    );
}

#[tokio::test]
async fn stop_interrupts_a_running_command_and_answers_it() {
    let (ohd, _llm) = start(Script::new(vec![
        bash("sleep 300; echo never"),
        finish("unreachable"),
    ]))
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("sleep a while")).await;
    // Wait for the command to start.
    let run = loop {
        let e = client
            .next_event_within(std::time::Duration::from_secs(20))
            .await
            .expect("no run action");
        if e["action"] == "run" {
            break e;
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    client.send(r#"42["oh_user_action",{"action":"change_agent_state","args":{"agent_state":"stopped"}}]"#).await;
    let events = client.until_state_from(&["stopped"], true).await;
    let answer = events
        .iter()
        .find(|e| e["cause"] == run["id"])
        .expect("the run was not answered");
    assert_eq!(answer["observation"], "error");
    assert_eq!(
        answer["extras"]["error_id"],
        "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_STOPPED"
    );
    assert!(events.iter().all(|e| e["action"] != "finish"));
    // The sleep is gone.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 300"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "sleep still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test]
async fn a_model_that_never_stops_ends_in_error_at_max_iterations() {
    // Different thoughts each time: a model that repeats itself exactly is stopped sooner,
    // by stuck detection.
    let (llm, mut options) = scripted_llm(Script::new(
        (0..10)
            .map(|i| Turn::tool_call("think", json!({"thought": format!("hmm {i}")})))
            .collect(),
    ))
    .await;
    options.env.push(("OHD_MAX_ITERATIONS".into(), "4".into()));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("think forever")).await;
    let events = client.until_state(&["error"]).await;
    let state = events.last().unwrap();
    assert!(
        state["extras"]["reason"]
            .as_str()
            .unwrap()
            .contains("maximum iteration"),
        "{state}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["status_update"] == true && e["type"] == "error")
    );
    assert_eq!(llm.requests().len(), 4);
    assert_eq!(by_kind(&events, "observation", "think").len(), 4);
}

#[tokio::test]
async fn a_megabyte_of_output_is_cut_for_the_event_and_for_the_model() {
    let (ohd, llm) = start(Script::new(vec![
        bash("head -c 1000000 /dev/zero | tr '\\0' 'x'; echo; echo END"),
        finish("ok"),
    ]))
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("print a lot")).await;
    let events = client.until_state(&["finished"]).await;
    let run = by_kind(&events, "observation", "run")[0];
    let content = run["content"].as_str().unwrap();
    assert!(
        content.len() < 40_000 && content.trim_end().ends_with("END"),
        "{}",
        content.len()
    );
    assert!(content.contains("omitted"));
    let requests = llm.requests();
    let tool = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(tool["content"].as_str().unwrap().len() < 40_000);
}

#[tokio::test]
async fn the_editor_refuses_paths_outside_the_workspace_through_dot_dot_and_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("secret.txt"), "TOPSECRET-7d1f").unwrap();
    let script = Script::new(vec![
        editor(json!({"command":"view","path":"/workspace/../../../etc/passwd"})),
        editor(json!({"command":"view","path":"/etc/passwd"})),
        bash(&format!("ln -s {} link", target.display())),
        editor(json!({"command":"view","path":"link/secret.txt"})),
        editor(json!({"command":"create","path":"link/evil.txt","file_text":"x"})),
        finish("tried"),
    ]);
    let (ohd, _llm) = start(script).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("escape")).await;
    let events = client.until_state(&["finished"]).await;
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["content"]
                .as_str()
                .is_some_and(|c| c.contains("outside the workspace"))
        })
        .collect();
    assert_eq!(refusals.len(), 4, "{:?}", summary(&events));
    assert!(!target.join("evil.txt").exists());
    assert!(!events.iter().any(|e| {
        e["content"]
            .as_str()
            .is_some_and(|c| c.contains("TOPSECRET-7d1f") || c.contains("root:x:0"))
    }));
}

#[tokio::test]
async fn without_a_model_a_message_gets_an_error_that_says_what_to_set() {
    let ohd = Ohd::start_with(Options::with_agent()).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hello?")).await;
    let error = loop {
        let e = client.next_event().await.expect("no error");
        if e["observation"] == "error" {
            break e;
        }
    };
    let text = error["content"].as_str().unwrap();
    assert!(
        text.contains("LLM_MODEL") && text.contains("LLM_API_KEY"),
        "{text}"
    );
    assert_eq!(ohd.get("/alive").await.0, 200);
}

#[tokio::test]
async fn a_run_action_from_the_user_runs_in_the_agents_shell() {
    let (ohd, _llm) = start(Script::new(vec![
        bash("export SHARED=yes"),
        Turn::text("Set."),
    ]))
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("set a variable")).await;
    client.until_state(&["awaiting_user_input"]).await;
    client
        .send(r#"42["oh_user_action",{"action":"run","args":{"command":"echo shared=$SHARED"}}]"#)
        .await;
    let (action, observation) = loop {
        let e = client.next_event().await.expect("no observation");
        if e["observation"] == "run" && e["source"] == "user" {
            let events = ohd.events(&conv).await;
            let action = events
                .iter()
                .find(|a| a["id"] == e["cause"])
                .unwrap()
                .clone();
            break (action, e);
        }
    };
    assert_eq!(action["source"], "user");
    assert_eq!(observation["content"], "shared=yes\n");
}

#[tokio::test]
async fn after_kill_9_the_history_is_rebuilt_and_the_next_message_carries_on() {
    let (llm, options) = scripted_llm(Script::new(vec![
        bash("echo first-step"),
        Turn::text("First part done."),
    ]))
    .await;
    let mut ohd = Ohd::start_with(options).await;
    let data_dir = ohd.data_dir.clone();
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("do the first part")).await;
    client.until_state(&["awaiting_user_input"]).await;
    ohd.kill9();
    ohd.wait_exit().await;

    llm.set_script(Script::new(vec![Turn::text("Second part done.")]).with_aside("Title"));
    let options = llm_options(&format!("http://{}", llm.addr()));
    let restarted = Ohd::spawn(&data_dir, &options).await;
    let mut client = joined(&restarted, &conv, "1000000").await;
    client.until_ready().await;
    client.send(&user_message("now the second part")).await;
    client.until_state(&["awaiting_user_input"]).await;
    let requests = llm.requests();
    assert_tool_calls_answered(&requests);
    let messages = requests.last().unwrap()["messages"].as_array().unwrap();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(texts[1], "do the first part");
    assert!(texts.iter().any(|t| t.contains("first-step")), "{texts:?}");
    assert!(texts.iter().any(|t| t == "First part done."));
    assert_eq!(texts.last().unwrap(), "now the second part");
    drop(ohd);
}

#[tokio::test]
async fn initial_user_msg_starts_work_at_once_and_bad_tool_calls_go_back_to_the_model() {
    let script = Script::new(vec![
        Turn::tool_call("browser", json!({"url": "x"})),
        Turn::tool_call("execute_bash", json!("{not json")),
        Turn::tool_call("execute_bash", json!({})),
        bash("echo recovered"),
        finish("done"),
    ]);
    let (ohd, llm) = start(script).await;
    let (status, created) = ohd
        .post("/api/conversations", json!({"initial_user_msg": "go"}))
        .await;
    assert_eq!(status, 200);
    let conv = created["conversation_id"].as_str().unwrap().to_owned();
    let mut client = joined(&ohd, &conv, "-1").await;
    let events = client.until_state(&["finished", "error"]).await;
    assert_eq!(
        events.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&events)
    );
    let errors = by_kind(&events, "observation", "error");
    assert_eq!(errors.len(), 3, "{:?}", summary(&events));
    assert!(
        errors[0]["content"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert!(
        errors[1]["content"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(
        errors[2]["content"]
            .as_str()
            .unwrap()
            .contains("Missing required parameter command")
    );
    assert!(
        errors
            .iter()
            .all(|e| e["tool_call_metadata"]["tool_call_id"].is_string())
    );
    assert_eq!(
        by_kind(&events, "observation", "run")[0]["content"],
        "recovered\n"
    );
    let requests = llm.requests();
    assert_tool_calls_answered(&requests);
    let second = requests[1]["messages"].as_array().unwrap();
    assert!(
        second
            .iter()
            .any(|m| m["role"] == "tool"
                && m["content"].as_str().unwrap().contains("does not exist"))
    );
}

#[tokio::test]
async fn pause_holds_the_agent_and_running_resumes_it() {
    let script = Script::new(vec![
        bash("sleep 30").with_text("Waiting."),
        bash("echo resumed"),
        finish("done"),
    ]);
    let (ohd, _llm) = start(script).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("work")).await;
    loop {
        let e = client.next_event().await.expect("no run");
        if e["action"] == "run" {
            break;
        }
    }
    client.send(r#"42["oh_user_action",{"action":"change_agent_state","args":{"agent_state":"paused"}}]"#).await;
    let paused = client.until_state_from(&["paused"], true).await;
    assert!(
        paused
            .iter()
            .any(|e| e["extras"]["error_id"] == "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_STOPPED")
    );
    client.send(r#"42["oh_user_action",{"action":"change_agent_state","args":{"agent_state":"running"}}]"#).await;
    let resumed = client.until_state(&["finished"]).await;
    assert_eq!(
        by_kind(&resumed, "observation", "run")[0]["content"],
        "resumed\n"
    );
}

#[tokio::test]
async fn an_anthropic_model_answers_whole_and_rate_limits_are_waited_out() {
    let (base, llm) = ohd_scripted_llm::ScriptedLlm::start(
        Script::new(vec![
            Turn::error(429).with_retry_after(1),
            bash("echo from-claude"),
            Turn::text("All set."),
        ])
        .with_aside("Claude title"),
    )
    .await
    .unwrap();
    let mut options = Options::with_agent();
    options
        .env
        .push(("LLM_MODEL".into(), "anthropic/claude-scripted".into()));
    options.env.push(("LLM_BASE_URL".into(), base));
    options
        .env
        .push(("LLM_API_KEY".into(), "sk-ant-test".into()));
    options.config_toml = Some("[llm]\nstream = false\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hi claude")).await;
    let events = client.until_state(&["awaiting_user_input", "error"]).await;
    // The wait is said as what it is: a rate limit, not an unreachable model.
    let waits: Vec<&Value> = events
        .iter()
        .filter(|e| e["extras"]["agent_state"] == "rate_limited")
        .collect();
    assert_eq!(waits.len(), 1, "{:?}", summary(&events));
    assert_eq!(waits[0]["extras"]["reason"], "rate limited, retrying");
    assert_eq!(
        events.last().unwrap()["extras"]["agent_state"],
        "awaiting_user_input"
    );
    assert_eq!(
        by_kind(&events, "observation", "run")[0]["content"],
        "from-claude\n"
    );
    let reply = events
        .iter()
        .rev()
        .find(|e| e["action"] == "message")
        .unwrap();
    assert_eq!(reply["message"], "All set.");
    assert_eq!(reply["source"], "agent");
    let recorded = llm.recorded();
    assert!(
        recorded
            .iter()
            .all(|r| r.path == "/v1/messages" && r.body["stream"] != true)
    );
    assert_eq!(recorded[0].header("x-api-key"), Some("sk-ant-test"));
    // Tool results go back as tool_result blocks naming their call.
    let last = &recorded.last().unwrap().body["messages"];
    assert!(last.to_string().contains("tool_result") && last.to_string().contains("from-claude"));
}

#[tokio::test]
async fn provider_tokens_reach_the_shell_but_never_an_event() {
    let (llm, mut options) = scripted_llm(Script::new(vec![
        bash("printf %s \"$GITHUB_TOKEN\" | wc -c; echo \"token=$GITHUB_TOKEN\"; echo \"gitlab=${GITLAB_TOKEN:-none}\""),
        finish("done"),
    ]))
    .await;
    options
        .env
        .push(("GITHUB_TOKEN".into(), "ghp_secret_value_123".into()));
    options
        .env
        .push(("GITLAB_TOKEN".into(), "glpat_not_asked_for_456".into()));
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1&providers_set=github").await;
    client.until_ready().await;
    client.send(&user_message("use the token")).await;
    let events = client.until_state(&["finished"]).await;
    let run = by_kind(&events, "observation", "run")[0];
    assert_eq!(run["content"], "20\ntoken=<secret_hidden>\ngitlab=none\n");
    let everything = serde_json::to_string(&ohd.events(&conv).await).unwrap();
    assert!(!everything.contains("ghp_secret_value_123"));
    let sent = serde_json::to_string(&llm.requests()).unwrap();
    assert!(!sent.contains("ghp_secret_value_123"));
}

#[tokio::test]
async fn the_first_message_gets_a_title_from_the_model_sent_live_and_saved() {
    let (llm, options) =
        scripted_llm(Script::new(vec![Turn::text("Hi!")]).with_aside("Greeting the agent")).await;
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hello there, agent")).await;
    let notice = loop {
        let e = client.next_event().await.expect("no title notice");
        if e["conversation_title"].is_string() {
            break e;
        }
    };
    assert_eq!(notice["conversation_title"], "Greeting the agent");
    assert_eq!(notice["status_update"], true);
    assert_eq!(
        ohd.get(&format!("/api/conversations/{conv}")).await.1["title"],
        "Greeting the agent"
    );
    let asides = llm.asides();
    assert_eq!(asides.len(), 1);
    assert!(
        asides[0]["messages"]
            .to_string()
            .contains("hello there, agent")
    );
    // A title the user gave is kept.
    let response = ohd
        .http
        .patch(ohd.url(&format!("/api/conversations/{conv}")))
        .json(&json!({"title": "Mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    client.send(&user_message("again")).await;
    client.until_state(&["awaiting_user_input"]).await;
    assert_eq!(
        ohd.get(&format!("/api/conversations/{conv}")).await.1["title"],
        "Mine"
    );
    assert_eq!(llm.asides().len(), 1);
}

#[tokio::test]
async fn a_budget_stops_the_agent_with_an_error_and_health_names_the_sandbox() {
    let (llm, mut options) = scripted_llm(
        Script::new(vec![Turn::tool_call("think", json!({"thought": "costly"}))]).repeating_last(),
    )
    .await;
    // A made-up price of a dollar per token makes the first call spend the whole budget; the
    // OpenAI client answers whole here, to run the loop without streaming too.
    options.config_toml = Some(
        "[llm]\nstream = false\ninput_cost_per_million = 1000000.0\noutput_cost_per_million = 1000000.0\n[agent]\nmax_budget_per_task = 0.5\n".into(),
    );
    let ohd = Ohd::start_with(options).await;
    let (status, health) = ohd.get("/health").await;
    assert_eq!(status, 200);
    let sandbox = health["sandbox"].as_str().unwrap();
    if ohd_runtime::sandbox::bubblewrap_available() {
        assert!(sandbox.starts_with("bubblewrap"), "{sandbox}");
    } else {
        assert!(sandbox.starts_with("none"), "{sandbox}");
    }
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("spend")).await;
    let events = client.until_state(&["error"]).await;
    let reason = events.last().unwrap()["extras"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("maximum budget"), "{reason}");
    assert_eq!(llm.requests().len(), 1);
    assert!(llm.requests().iter().all(|r| r["stream"] != true));
    let think = by_kind(&events, "action", "think")[0];
    assert!(think["llm_metrics"]["accumulated_cost"].as_f64().unwrap() > 0.5);
}

#[tokio::test]
async fn a_command_cut_off_by_kill_9_is_answered_with_an_error_after_the_restart() {
    let (llm, options) = scripted_llm(Script::new(vec![bash("sleep 60")])).await;
    let mut ohd = Ohd::start_with(options).await;
    let data_dir = ohd.data_dir.clone();
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("sleep")).await;
    let run = loop {
        let e = client.next_event().await.expect("no run action");
        if e["action"] == "run" {
            break e;
        }
    };
    ohd.kill9();
    ohd.wait_exit().await;

    llm.set_script(Script::new(vec![Turn::text("Noted.")]).with_aside("Title"));
    let options = llm_options(&format!("http://{}", llm.addr()));
    let restarted = Ohd::spawn(&data_dir, &options).await;
    let mut client = joined(&restarted, &conv, &run["id"].to_string()).await;
    let events = client.until_ready().await;
    let answer = events
        .iter()
        .find(|e| e["cause"] == run["id"])
        .expect("the cut-off run was not answered");
    assert_eq!(answer["observation"], "error");
    assert_eq!(
        answer["extras"]["error_id"],
        "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_ERROR"
    );
    assert_eq!(
        answer["tool_call_metadata"]["tool_call_id"],
        run["tool_call_metadata"]["tool_call_id"]
    );
    // The next message carries on, and the model sees the call answered.
    client.send(&user_message("what happened?")).await;
    client.until_state(&["awaiting_user_input"]).await;
    let requests = llm.requests();
    assert_tool_calls_answered(&requests);
    assert!(
        requests
            .last()
            .unwrap()
            .to_string()
            .contains("did not finish")
    );
    drop(ohd);
}
