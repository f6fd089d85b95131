//! Long, real tasks (issue 10): commands that run as long as asked, condensation of a history
//! that outgrows its bounds, stuck detection, confirmation mode, settings applied, agents
//! released when idle and capped in number, the model's window in `llm_metrics`. A scripted
//! model over real HTTP records every request, so the tests check what the model was sent.

use crate::common::*;
use ohd_scripted_llm::{Script, ScriptedLlmHandle, Turn};
use serde_json::{Value, json};
use std::time::Duration;

async fn save_settings(ohd: &Ohd, settings: Value) {
    let (status, body) = ohd.post("/api/settings", settings).await;
    assert_eq!(status, 200, "{body}");
}

/// A command that prints 3,000 copies of the `n`th letter: a big output, different each step.
fn print_block(n: u8) -> Turn {
    bash(&format!(
        "head -c 3000 /dev/zero | tr '\\0' {}",
        (b'a' + n) as char
    ))
}

/// The requests of the task (those that offer tools), as the model received them.
fn task_requests(llm: &ScriptedLlmHandle) -> Vec<Value> {
    llm.requests()
        .into_iter()
        .filter(|r| r["tools"].as_array().is_some_and(|t| !t.is_empty()))
        .collect()
}

fn request_text(request: &Value) -> String {
    request["messages"].to_string()
}

#[tokio::test]
async fn a_quiet_command_with_a_timeout_runs_to_its_end_and_a_refused_one_says_so() {
    let (llm, options) = scripted_llm(Script::new(vec![
        Turn::tool_call(
            "execute_bash",
            json!({"command": "sleep 29.5; echo woke", "timeout": 120}),
        ),
        // Without a timeout: reported as still running after 10 s of silence. (A duration no
        // other test uses: tests look for their own sleeps with pgrep.)
        bash("sleep 297"),
        bash("echo marker-42"),
        finish("done"),
    ]))
    .await;
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client
        .send(&user_message("sleep, then print a marker"))
        .await;
    let events = client
        .until_state_within(&["finished", "error"], false, Duration::from_secs(60))
        .await;
    let runs = by_kind(&events, "observation", "run");
    assert_eq!(runs.len(), 3, "{:?}", summary(&events));
    // The quiet command with its own timeout completed, with its output.
    assert_eq!(runs[0]["content"].as_str().unwrap().trim(), "woke");
    assert_eq!(runs[0]["extras"]["metadata"]["exit_code"], 0);
    assert_eq!(runs[0]["success"], true);
    // The one without a timeout was reported as still running.
    assert_eq!(runs[1]["extras"]["metadata"]["exit_code"], -1);
    // The refused command says so in its content, and is no success.
    let refused = runs[2];
    let content = refused["content"].as_str().unwrap();
    assert!(
        content.contains("was not run") && content.contains("sleep 297"),
        "{refused}"
    );
    assert_eq!(refused["success"], false);
    let code = refused["extras"]["metadata"]["exit_code"].as_i64().unwrap();
    assert!(code != 0 && code != -1, "{refused}");
    // The model read the refusal too.
    let requests = task_requests(&llm);
    assert!(request_text(requests.last().unwrap()).contains("was not run"));
}

/// Turns of a long task: commands and thoughts, each different from the others.
fn long_task(steps: usize) -> Vec<Turn> {
    (0..steps)
        .map(|i| {
            if i % 2 == 0 {
                bash(&format!("echo step-{i}"))
            } else {
                Turn::tool_call("think", json!({"thought": format!("thought {i}")}))
            }
        })
        .chain([finish("all steps done")])
        .collect()
}

#[tokio::test]
async fn a_300_step_task_keeps_every_request_within_the_saved_condenser_bound() {
    let (llm, options) = scripted_llm(
        Script::new(long_task(300)).with_aside("SUMMARY: steps so far were echoes and thoughts"),
    )
    .await;
    let ohd = Ohd::start_with(options).await;
    // Both settings are saved through the settings page's route and apply to this conversation.
    save_settings(
        &ohd,
        json!({"condenser_max_size": 30, "max_iterations": 400}),
    )
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("run the 300 steps")).await;
    let events = client
        .until_state_within(&["finished", "error"], false, Duration::from_secs(30))
        .await;
    assert_eq!(
        events.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&events[events.len().saturating_sub(5)..])
    );
    let requests = task_requests(&llm);
    assert_eq!(requests.len(), 301);
    for (n, request) in requests.iter().enumerate() {
        let messages = request["messages"].as_array().unwrap();
        // The system prompt, at most 30 events, and the summary.
        assert!(
            messages.len() <= 32,
            "request {n} has {} messages",
            messages.len()
        );
        // The first user message is always kept.
        assert!(
            request_text(request).contains("run the 300 steps"),
            "request {n}"
        );
    }
    let condensations = by_kind(&events, "action", "condensation");
    assert!(condensations.len() >= 10, "{}", condensations.len());
    let args = &condensations[0]["args"];
    assert!(args["forgotten_events_start_id"].as_u64().is_some());
    assert!(args["forgotten_events_end_id"].as_u64() >= args["forgotten_events_start_id"].as_u64());
    assert_eq!(
        args["summary"],
        "SUMMARY: steps so far were echoes and thoughts"
    );
    assert!(args["summary_offset"].as_u64().is_some());
    // The model was asked for each summary, and late requests carry it.
    assert!(llm.asides().len() >= condensations.len());
    assert!(request_text(requests.last().unwrap()).contains("SUMMARY: steps so far"));
    // Early steps are gone from late requests.
    assert!(!request_text(requests.last().unwrap()).contains("echo step-2\""));
}

#[tokio::test]
async fn without_the_default_condenser_the_history_is_sent_whole() {
    let (llm, options) = scripted_llm(Script::new(long_task(40))).await;
    let ohd = Ohd::start_with(options).await;
    save_settings(
        &ohd,
        json!({"enable_default_condenser": false, "condenser_max_size": 10}),
    )
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("forty steps")).await;
    let events = client.until_state(&["finished", "error"]).await;
    assert!(by_kind(&events, "action", "condensation").is_empty());
    let last = task_requests(&llm).pop().unwrap();
    assert!(last["messages"].as_array().unwrap().len() > 80);
}

#[tokio::test]
async fn a_context_overflow_condenses_and_the_task_finishes() {
    // Big outputs, then the provider refuses the prompt as too long once.
    let mut turns: Vec<Turn> = (0..6).map(print_block).collect();
    turns.push(Turn::error(400).with_message(
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
    ));
    turns.push(finish("finished after condensing"));
    let (llm, options) =
        scripted_llm(Script::new(turns).with_aside("SUMMARY: printed six blocks")).await;
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("print blocks")).await;
    let events = client.until_state(&["finished", "error"]).await;
    assert_eq!(events.last().unwrap()["extras"]["agent_state"], "finished");
    assert_eq!(by_kind(&events, "action", "condensation_request").len(), 1);
    let condensation = by_kind(&events, "action", "condensation");
    assert_eq!(condensation.len(), 1, "{:?}", summary(&events));
    let requests = task_requests(&llm);
    let (overflowed, retried) = (&requests[6], &requests[7]);
    // The retry is the condensed view: smaller, with the summary in it.
    assert!(request_text(retried).len() * 2 <= request_text(overflowed).len() + 2000);
    assert!(request_text(retried).contains("SUMMARY: printed six blocks"));
    assert!(request_text(retried).contains("print blocks"));
}

#[tokio::test]
async fn a_message_too_big_for_the_window_ends_in_error_that_says_so() {
    let (_llm, options) = scripted_llm(
        Script::new(vec![
            Turn::error(400).with_message("prompt is too long: 300000 tokens > 200000 maximum"),
        ])
        .repeating_last(),
    )
    .await;
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hello")).await;
    let events = client.until_state(&["error", "finished"]).await;
    let reason = events.last().unwrap()["extras"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("does not fit in the model's context window even condensed"),
        "{reason}"
    );
}

#[tokio::test]
async fn after_kill_9_the_next_request_is_the_condensed_view() {
    let (llm, options) =
        scripted_llm(Script::new(long_task(30)).with_aside("SUMMARY: the first steps")).await;
    let mut ohd = Ohd::start_with(options.clone()).await;
    save_settings(&ohd, json!({"condenser_max_size": 12})).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("thirty steps")).await;
    let events = client.until_state(&["finished", "error"]).await;
    assert_eq!(events.last().unwrap()["extras"]["agent_state"], "finished");
    assert!(!by_kind(&events, "action", "condensation").is_empty());
    let before = task_requests(&llm).len();
    ohd.kill9();
    ohd.wait_exit().await;
    llm.set_script(Script::new(vec![finish("again")]).with_aside("SUMMARY: later"));
    let restarted = Ohd::spawn(&ohd.data_dir, &options).await;
    let latest = events.last().unwrap()["id"].to_string();
    let mut client = joined(&restarted, &conv, &latest).await;
    client.send(&user_message("once more")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let requests = task_requests(&llm);
    assert_eq!(requests.len(), before + 1, "{:?}", summary(&events));
    let after = &requests[before];
    let messages = after["messages"].as_array().unwrap();
    // The condensed view, as before the kill: bounded, with the summary, without step 0's echo.
    assert!(messages.len() <= 14, "{}", messages.len());
    assert!(request_text(after).contains("SUMMARY: the first steps"));
    assert!(!request_text(after).contains("echo step-2\""));
    assert!(request_text(after).contains("once more"));
}

#[tokio::test]
async fn each_stuck_pattern_stops_the_agent_and_a_new_message_starts_afresh() {
    let missing = json!({"command": "view", "path": "/workspace/missing.txt"});
    let mut turns = vec![bash("echo same"); 4];
    turns.extend(vec![Turn::tool_call("str_replace_editor", missing); 3]);
    for _ in 0..3 {
        turns.push(bash("echo ping"));
        turns.push(bash("echo pong"));
    }
    turns.push(finish("unstuck"));
    let (_llm, options) = scripted_llm(Script::new(turns)).await;
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    let expected = [
        "ran the same action (run `echo same`) four times",
        "three times in a row and got an error",
        "alternating between the same two actions",
    ];
    for (n, words) in expected.iter().enumerate() {
        client.send(&user_message(&format!("attempt {n}"))).await;
        let events = client.until_state(&["error", "finished"]).await;
        let last = events.last().unwrap();
        let reason = last["extras"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(words), "{n}: {reason}");
        assert!(reason.contains("stuck in a loop"));
        assert!(
            events
                .iter()
                .any(|e| e["status_update"] == true && e["type"] == "error"),
            "no status notice"
        );
    }
    client.send(&user_message("go on")).await;
    let events = client.until_state(&["error", "finished"]).await;
    assert_eq!(events.last().unwrap()["extras"]["agent_state"], "finished");
}

/// Runs the seed's socket.io-client example, joined after event `latest`: sends `actions` and
/// waits as `until` says (`--until-state S` after the agent runs, or `--idle-ms N`).
async fn socket_io_client(
    ohd: &Ohd,
    conv: &str,
    latest: &Value,
    actions: &[Value],
    until: [&str; 2],
) -> Vec<Value> {
    let mut args = vec!["--conversation".to_owned(), conv.to_owned()];
    for action in actions {
        args.extend(["--send".to_owned(), action.to_string()]);
    }
    args.extend(until.map(str::to_owned));
    args.extend(["--timeout-ms", "30000", "--latest"].map(str::to_owned));
    args.push(latest.to_string());
    let run = seed_client(ohd, &args).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.events
}

/// The next action event (status notices, such as a new title, may come first).
async fn next_action(client: &mut RawClient) -> Value {
    loop {
        let event = client.next_event().await.expect("no action came");
        if event.get("action").is_some() {
            return event;
        }
    }
}

fn answer(state: &str) -> Value {
    json!({"action": "change_agent_state", "args": {"agent_state": state}})
}

#[tokio::test]
async fn confirmation_mode_waits_runs_on_confirm_rejects_and_survives_a_restart() {
    let (_llm, options) = scripted_llm(Script::new(vec![
        bash("echo yes > confirmed.txt").with_text("Writing the first file."),
        bash("echo no > rejected.txt"),
        bash("echo later > after-restart.txt"),
        finish("done"),
    ]))
    .await;
    let mut ohd = Ohd::start_with(options.clone()).await;
    save_settings(&ohd, json!({"confirmation_mode": true})).await;
    let conv = ohd.create_conversation().await;
    let workspace = ohd.data_dir.join("workspaces").join(&conv);
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("write the files")).await;
    let mut events = client.until_state(&["awaiting_user_confirmation"]).await;
    // The waiting action follows the state.
    events.push(next_action(&mut client).await);
    let waiting = by_kind(&events, "action", "run");
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0]["args"]["confirmation_state"],
        "awaiting_confirmation"
    );
    assert_eq!(waiting[0]["args"]["security_risk"], -1);
    // The state comes before the action, as in the original.
    let state_pos = events
        .iter()
        .position(|e| e["extras"]["agent_state"] == "awaiting_user_confirmation")
        .unwrap();
    assert!(events[state_pos]["id"].as_u64() < waiting[0]["id"].as_u64());
    assert!(!workspace.join("confirmed.txt").exists());

    // Confirmed with socket.io-client: the action is stored again, confirmed, and runs.
    let seen = socket_io_client(
        &ohd,
        &conv,
        &waiting[0]["id"],
        &[answer("user_confirmed")],
        ["--until-state", "awaiting_user_confirmation"],
    )
    .await;
    let runs = by_kind(&seen, "action", "run");
    assert_eq!(runs[0]["args"]["confirmation_state"], "confirmed");
    assert_eq!(runs[0]["args"]["thought"], "");
    let observation = by_kind(&seen, "observation", "run")[0];
    assert_eq!(observation["cause"], runs[0]["id"]);
    assert_eq!(
        std::fs::read_to_string(workspace.join("confirmed.txt")).unwrap(),
        "yes\n"
    );
    let states: Vec<&str> = seen
        .iter()
        .filter_map(|e| e["extras"]["agent_state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["user_confirmed", "running", "awaiting_user_confirmation"]
    );

    // Rejected: the original's rejection observation, and the agent waits for the user.
    let last = seen.last().unwrap()["id"].clone();
    // No `running` comes between a rejection and the wait for the user: wait for quiet.
    let seen = socket_io_client(
        &ohd,
        &conv,
        &last,
        &[answer("user_rejected")],
        ["--idle-ms", "2000"],
    )
    .await;
    let states: Vec<&str> = seen
        .iter()
        .filter_map(|e| e["extras"]["agent_state"].as_str())
        .collect();
    assert_eq!(states, ["user_rejected", "awaiting_user_input"]);
    let rejected = by_kind(&seen, "observation", "user_rejected");
    assert_eq!(
        rejected[0]["content"],
        "Action has been rejected by the user! Waiting for further user input."
    );
    assert_eq!(
        by_kind(&seen, "action", "run").last().unwrap()["args"]["confirmation_state"],
        "rejected"
    );
    assert!(!workspace.join("rejected.txt").exists());

    // Waiting across a restart.
    let mut client = joined(&ohd, &conv, &seen.last().unwrap()["id"].to_string()).await;
    client.send(&user_message("one more")).await;
    client.until_state(&["awaiting_user_confirmation"]).await;
    let waiting = next_action(&mut client).await;
    assert_eq!(
        waiting["args"]["confirmation_state"],
        "awaiting_confirmation"
    );
    ohd.kill9();
    ohd.wait_exit().await;
    let restarted = Ohd::spawn(&ohd.data_dir, &options).await;
    let mut client = joined(&restarted, &conv, &waiting["id"].to_string()).await;
    let mut last_state = String::new();
    while let Some(event) = client.next_event_within(Duration::from_secs(5)).await {
        if let Some(state) = event["extras"]["agent_state"].as_str() {
            last_state = state.to_owned();
            if state == "awaiting_user_confirmation" {
                break;
            }
        }
    }
    assert_eq!(last_state, "awaiting_user_confirmation");
    let seen = socket_io_client(
        &restarted,
        &conv,
        &waiting["id"],
        &[answer("user_confirmed")],
        ["--until-state", "finished"],
    )
    .await;
    assert!(!by_kind(&seen, "observation", "run").is_empty());
    assert!(workspace.join("after-restart.txt").exists());
}

#[tokio::test]
async fn with_the_llm_analyzer_only_risky_actions_wait() {
    let (_llm, options) = scripted_llm(Script::new(vec![
        Turn::tool_call(
            "execute_bash",
            json!({"command": "echo low > low.txt", "security_risk": "LOW"}),
        ),
        Turn::tool_call(
            "execute_bash",
            json!({"command": "echo high > high.txt", "security_risk": "HIGH"}),
        ),
        finish("done"),
    ]))
    .await;
    let ohd = Ohd::start_with(options).await;
    let (_, analyzers) = ohd.get("/api/options/security-analyzers").await;
    assert!(analyzers.as_array().unwrap().contains(&json!("llm")));
    save_settings(
        &ohd,
        json!({"confirmation_mode": true, "security_analyzer": "llm"}),
    )
    .await;
    let conv = ohd.create_conversation().await;
    let workspace = ohd.data_dir.join("workspaces").join(&conv);
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("two commands")).await;
    let mut events = client.until_state(&["awaiting_user_confirmation"]).await;
    events.push(next_action(&mut client).await);
    assert!(
        workspace.join("low.txt").exists(),
        "the LOW command ran unasked"
    );
    let runs = by_kind(&events, "action", "run");
    assert_eq!(runs.last().unwrap()["args"]["security_risk"], 2);
    assert_eq!(
        runs.last().unwrap()["args"]["confirmation_state"],
        "awaiting_confirmation"
    );
    assert!(!workspace.join("high.txt").exists());
}

#[tokio::test]
async fn the_saved_git_identity_and_budget_apply_to_new_conversations() {
    let (_llm, mut options) = scripted_llm(Script::new(vec![
        bash("git init -q . && git commit -q --allow-empty -m first && git log -1 --format='%an <%ae>'"),
        bash("echo spend"),
        bash("echo more"),
        finish("done"),
    ]))
    .await;
    // A model outside the price table, priced in the configuration: the budget counts.
    options.config_toml = Some(
        "[llm]\ninput_cost_per_million = 100000.0\noutput_cost_per_million = 100000.0\n".into(),
    );
    let ohd = Ohd::start_with(options).await;
    save_settings(
        &ohd,
        json!({"git_user_name": "Ada Lovelace", "git_user_email": "ada@example.org", "max_budget_per_task": 1.0}),
    )
    .await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("commit")).await;
    let events = client.until_state(&["error", "finished"]).await;
    let runs = by_kind(&events, "observation", "run");
    assert!(
        runs[0]["content"]
            .as_str()
            .unwrap()
            .contains("Ada Lovelace <ada@example.org>"),
        "{}",
        runs[0]
    );
    let reason = events.last().unwrap()["extras"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("maximum budget"), "{reason}");
}

#[tokio::test]
async fn a_budget_that_cannot_be_kept_is_said() {
    let (_llm, options) = scripted_llm(Script::new(vec![finish("done")])).await;
    let ohd = Ohd::start_with(options).await;
    save_settings(&ohd, json!({"max_budget_per_task": 1.0})).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hi")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let notice = events
        .iter()
        .find(|e| e["status_update"] == true && e["id"] == "STATUS$BUDGET_UNKNOWN")
        .expect("no notice that the budget cannot be kept");
    assert!(
        notice["message"]
            .as_str()
            .unwrap()
            .contains("input_cost_per_million")
    );
}

#[tokio::test]
async fn the_model_window_is_in_llm_metrics() {
    let (_llm, mut options) =
        scripted_llm(Script::new(vec![bash("echo hi"), finish("done")])).await;
    // A priced model's window comes from the table.
    for (name, value) in options.env.iter_mut() {
        if name == "LLM_MODEL" {
            *value = "openai/gpt-4o".into();
        }
    }
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hi")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let run = by_kind(&events, "action", "run")[0];
    assert_eq!(
        run["llm_metrics"]["accumulated_token_usage"]["context_window"],
        128_000
    );

    // Any other model's, from [llm] max_input_tokens.
    let (_llm, mut options) =
        scripted_llm(Script::new(vec![bash("echo hi"), finish("done")])).await;
    options.config_toml = Some("[llm]\nmax_input_tokens = 32768\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("hi")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let run = by_kind(&events, "action", "run")[0];
    assert_eq!(
        run["llm_metrics"]["accumulated_token_usage"]["context_window"],
        32768
    );
}

#[tokio::test]
async fn an_idle_agent_is_released_and_comes_back_with_its_workspace_and_history() {
    let (llm, mut options) = scripted_llm(Script::new(vec![
        bash("echo kept > note.txt; sleep 1234 &"),
        finish("written"),
        bash("cat note.txt"),
        finish("read"),
    ]))
    .await;
    options.config_toml = Some("[agent]\nidle_timeout_secs = 2\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("write a note")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let (_, info) = ohd.get(&format!("/api/conversations/{conv}")).await;
    assert_eq!(info["status"], "RUNNING");
    // Someone looking keeps it: released only once the client has gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, info) = ohd.get(&format!("/api/conversations/{conv}")).await;
    assert_eq!(
        info["status"], "RUNNING",
        "released while a client was joined"
    );
    let latest = events.last().unwrap()["id"].to_string();
    client.close().await;
    // Idle: released, with its shell and what it left running.
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, info) = ohd.get(&format!("/api/conversations/{conv}")).await;
        if info["status"] == "STOPPED" {
            assert_eq!(info["runtime_status"], Value::Null);
            released = true;
            break;
        }
    }
    assert!(released, "the idle agent was not released");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 1234"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the shell's processes outlived the release"
    );
    // The web UI's Start button brings it back.
    let (status, started) = ohd
        .post(&format!("/api/conversations/{conv}/start"), json!({}))
        .await;
    assert_eq!(
        (status, started["conversation_status"].as_str()),
        (200, Some("RUNNING"))
    );
    let mut client = joined(&ohd, &conv, &latest).await;
    client.send(&user_message("read the note")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let run = by_kind(&events, "observation", "run")[0];
    assert_eq!(run["content"].as_str().unwrap().trim(), "kept");
    // Its history came back too: the model saw the first task.
    let last = task_requests(&llm).pop().unwrap();
    assert!(request_text(&last).contains("write a note"));
}

#[tokio::test]
async fn over_the_running_cap_a_conversation_waits_and_says_so() {
    // The first conversation's agent is at work (a quiet command); the second's must wait.
    let (_llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call(
            "execute_bash",
            json!({"command": "sleep 30", "timeout": 60}),
        ),
        finish("second done"),
    ]))
    .await;
    options.config_toml = Some("[agent]\nmax_running = 1\n".into());
    let ohd = Ohd::start_with(options).await;
    let first = ohd.create_conversation().await;
    let mut first_client = joined(&ohd, &first, "-1").await;
    first_client.until_ready().await;
    first_client.send(&user_message("sleep")).await;
    loop {
        let e = first_client.next_event().await.expect("no command");
        if e["action"] == "run" {
            break;
        }
    }
    // An agent waiting for its user holds no place: the second one starts and is ready...
    let second = ohd.create_conversation().await;
    let mut second_client = joined(&ohd, &second, "-1").await;
    second_client.until_ready().await;
    // ...but its task waits, says so, and its REST status too.
    second_client.send(&user_message("go")).await;
    let notice = loop {
        let e = second_client.next_event().await.expect("no notice");
        // (The title notice may come first.)
        if e["status_update"] == true && e.get("conversation_title").is_none() {
            break e;
        }
    };
    assert_eq!(notice["id"], "STATUS$WAITING_FOR_AGENT", "{notice}");
    let (_, info) = ohd.get(&format!("/api/conversations/{second}")).await;
    assert_eq!(info["status"], "STARTING");
    // The first one stops: the second gets its place and finishes.
    let (status, _) = ohd
        .post(&format!("/api/conversations/{first}/stop"), json!({}))
        .await;
    assert_eq!(status, 200);
    let events = second_client
        .until_state_from(&["finished", "error"], true)
        .await;
    assert_eq!(events.last().unwrap()["extras"]["agent_state"], "finished");
    let (_, info) = ohd.get(&format!("/api/conversations/{second}")).await;
    assert_eq!(info["status"], "RUNNING");
}

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];
const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGMAAQAABQABDQottAAAAABJRU5ErkJggg==";

/// A task that looks at an attached image and at an image file in the workspace, on `model`
/// (its provider decides the wire format); returns the task's requests.
async fn look_at_images(model: &str, config: Option<&str>) -> Vec<Value> {
    let (llm, mut options) = scripted_llm(Script::new(vec![
        Turn::tool_call(
            "str_replace_editor",
            json!({"command": "view", "path": "/workspace/dot.png"}),
        ),
        finish("seen"),
    ]))
    .await;
    let base = options
        .env
        .iter()
        .find(|(name, _)| name == "LLM_BASE_URL")
        .map(|(_, value)| value.trim_end_matches("/v1").to_owned())
        .unwrap();
    for (name, value) in options.env.iter_mut() {
        match name.as_str() {
            "LLM_MODEL" => *value = model.to_owned(),
            "LLM_BASE_URL" if model.starts_with("anthropic/") => *value = base.clone(),
            _ => {}
        }
    }
    options.config_toml = config.map(str::to_owned);
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    std::fs::write(
        ohd.data_dir.join("workspaces").join(&conv).join("dot.png"),
        PNG,
    )
    .unwrap();
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    let message = json!({"action": "message", "args": {
        "content": "What is in these pictures?",
        "image_urls": [format!("data:image/png;base64,{PNG_BASE64}"), "https://example.org/cat.jpg"],
    }});
    client
        .send(&format!("42{}", json!(["oh_user_action", message])))
        .await;
    let events = client.until_state(&["finished", "error"]).await;
    assert_eq!(
        events.last().unwrap()["extras"]["agent_state"],
        "finished",
        "{:?}",
        summary(&events)
    );
    task_requests(&llm)
}

#[tokio::test]
async fn images_reach_a_model_that_takes_them_in_the_openai_format() {
    let requests = look_at_images(
        "openai/scripted-model",
        Some("[llm]\nsupports_images = true\n"),
    )
    .await;
    // The attachment: image parts of the user message.
    let user = requests[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let parts = user["content"].as_array().expect("content parts");
    assert_eq!(parts[0]["text"], "What is in these pictures?");
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{PNG_BASE64}")
    );
    assert_eq!(parts[2]["image_url"]["url"], "https://example.org/cat.jpg");
    // The viewed file: a tool result, then its image in a user message after the results.
    let messages = requests[1]["messages"].as_array().unwrap();
    let tool = messages.iter().position(|m| m["role"] == "tool").unwrap();
    assert!(
        messages[tool]["content"]
            .as_str()
            .unwrap()
            .contains("dot.png")
    );
    let after = &messages[tool + 1];
    assert_eq!(after["role"], "user");
    assert!(after.to_string().contains(PNG_BASE64));
}

#[tokio::test]
async fn images_reach_a_model_that_takes_them_in_the_anthropic_format() {
    let requests = look_at_images("anthropic/claude-sonnet-4-5", None).await;
    let messages = requests[1]["messages"].as_array().unwrap();
    let user = &messages[0]["content"];
    let image = user
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .expect("no image block for the attachment");
    assert_eq!(image["source"]["type"], "base64");
    assert_eq!(image["source"]["media_type"], "image/png");
    assert_eq!(image["source"]["data"], PNG_BASE64);
    assert!(
        user.to_string()
            .contains("\"url\":\"https://example.org/cat.jpg\"")
    );
    let result = messages
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_result")
        .expect("no tool result");
    let blocks = result["content"].as_array().expect("result blocks");
    assert!(
        blocks
            .iter()
            .any(|b| b["type"] == "image" && b["source"]["data"] == PNG_BASE64)
    );
}

#[tokio::test]
async fn a_model_without_images_gets_a_note_instead() {
    let requests = look_at_images("openai/scripted-model", None).await;
    let text = request_text(&requests[1]);
    assert!(!text.contains(PNG_BASE64) && !text.contains("image_url"));
    assert!(text.contains("attached 2 image(s), which this model cannot see"));
    assert!(text.contains("does not take images"));
}

#[tokio::test]
async fn a_known_window_condenses_before_the_provider_refuses_with_the_condenser_model() {
    // Outputs of about 3,000 characters a step, a window of 6,000 tokens: the history passes
    // it after a few steps, and is condensed before any request would exceed it.
    let mut turns: Vec<Turn> = (0..16).map(print_block).collect();
    turns.push(finish("done"));
    let (llm, mut options) =
        scripted_llm(Script::new(turns).with_aside("SUMMARY: blocks were printed")).await;
    options.config_toml =
        Some("[llm]\nmax_input_tokens = 6000\ncondenser_model = \"openai/summarizer\"\n".into());
    let ohd = Ohd::start_with(options).await;
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("print sixteen blocks")).await;
    let events = client.until_state(&["finished", "error"]).await;
    assert_eq!(events.last().unwrap()["extras"]["agent_state"], "finished");
    assert!(by_kind(&events, "action", "condensation_request").is_empty());
    assert!(!by_kind(&events, "action", "condensation").is_empty());
    // No request came near the window: 6,000 tokens are at least 18,000 characters of text.
    for request in task_requests(&llm) {
        let size: usize = request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .sum();
        assert!(size < 18_000, "a request of {size} characters");
    }
    // The summaries were asked of the condenser's model.
    let summaries: Vec<Value> = llm
        .asides()
        .into_iter()
        .filter(|r| r.to_string().contains("summarize"))
        .collect();
    assert!(!summaries.is_empty());
    assert!(
        summaries.iter().all(|r| r["model"] == "summarizer"),
        "{summaries:?}"
    );
}

#[tokio::test]
async fn what_the_user_sends_while_no_agent_runs_is_done_when_one_starts() {
    // Stored by ohd running without an agent (an event log only)...
    let mut relay = Ohd::start_with(Options::new()).await;
    let conv = relay.create_conversation().await;
    let mut client = joined(&relay, &conv, "-1").await;
    client
        .send(r#"42["oh_user_action",{"action":"run","args":{"command":"echo ran > while-away.txt"}}]"#)
        .await;
    let stored = loop {
        let e = client
            .next_event()
            .await
            .expect("the command was not stored");
        if e["action"] == "run" {
            break e;
        }
    };
    relay.terminate().await;
    let data_dir = relay.data_dir.clone();
    let workspace = data_dir.join("workspaces").join(&conv);
    assert!(!workspace.join("while-away.txt").exists());
    // ...is done by the agent that starts next: the command runs, once.
    let (_llm, options) = scripted_llm(Script::new(vec![finish("done")])).await;
    let ohd = Ohd::spawn(&data_dir, &options).await;
    let mut client = joined(&ohd, &conv, &stored["id"].to_string()).await;
    let answer = loop {
        let e = client
            .next_event()
            .await
            .expect("the command was not answered");
        if e["cause"] == stored["id"] {
            break e;
        }
    };
    assert_eq!(answer["observation"], "run", "{answer}");
    assert_eq!(answer["extras"]["metadata"]["exit_code"], 0);
    assert_eq!(
        std::fs::read_to_string(workspace.join("while-away.txt")).unwrap(),
        "ran\n"
    );
}
