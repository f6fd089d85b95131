//! Models without native tool calling, and reasoning models (issue 12, points 3 and 4): the
//! scripted model over OpenAI's and Anthropic's wire formats, checked in the events and in the
//! requests it received.

use crate::common::*;
use ohd_scripted_llm::{Script, ToolsRefusal, Turn};
use serde_json::{Value, json};

/// ohd with `model` served by the scripted model (Anthropic's models at its root, OpenAI's
/// under /v1), `config` as config.toml.
async fn ohd_with(
    script: Script,
    model: &str,
    config: &str,
) -> (ohd_scripted_llm::ScriptedLlmHandle, Ohd) {
    let (llm, mut options) = scripted_llm(script).await;
    for (name, value) in options.env.iter_mut() {
        match name.as_str() {
            "LLM_MODEL" => *value = model.to_owned(),
            "LLM_BASE_URL" if model.starts_with("anthropic/") => {
                *value = value.trim_end_matches("/v1").to_owned();
            }
            _ => {}
        }
    }
    options.config_toml = Some(config.to_owned());
    (llm, Ohd::start_with(options).await)
}

/// The requests of the task (the title request aside has no system prompt of the agent).
fn task_requests(llm: &ohd_scripted_llm::ScriptedLlmHandle) -> Vec<Value> {
    llm.requests()
        .into_iter()
        .filter(|r| r.to_string().contains("execute_bash"))
        .collect()
}

#[tokio::test]
async fn a_model_without_tool_calling_gets_the_tools_in_its_prompt_and_the_same_events() {
    let (llm, ohd) = ohd_with(
        Script::new(vec![
            bash("echo prompted-call-42"),
            // A call that does not parse: the model hears what was wrong.
            Turn::text(
                "Let me look.\n<function=execute_bash>\n<parameter=no_such_parameter>x</parameter>\n</function>",
            ),
            Turn::text("done without native tools"),
        ]),
        "openai/scripted-model",
        "[llm]\nnative_tool_calling = false\n",
    )
    .await;
    let conv = ohd.create_conversation().await;
    let (events, _) = socket_io(&ohd, &conv, "", "run something").await;
    // The same events as with native calls: a run action and its observation.
    let runs = by_kind(&events, "action", "run");
    assert_eq!(
        runs[0]["args"]["command"],
        "echo prompted-call-42",
        "{:?}",
        summary(&events)
    );
    let outputs = by_kind(&events, "observation", "run");
    assert!(
        outputs[0]["content"]
            .as_str()
            .unwrap()
            .contains("prompted-call-42")
    );
    // The malformed call came back as an error, and the conversation went on.
    let errors = by_kind(&events, "observation", "error");
    assert_eq!(errors.len(), 1, "{:?}", summary(&events));
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "done without native tools")
    );
    // No request carried `tools`; the system prompt described them, with the call format.
    let requests = task_requests(&llm);
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert!(request.get("tools").is_none(), "{request}");
    }
    let first = requests[0]["messages"].to_string();
    assert!(first.contains("<function=") && first.contains("str_replace_editor"));
    // The call's result went back as text, and the model was told what was wrong with the
    // malformed one.
    let second = requests[1]["messages"].to_string();
    assert!(second.contains("prompted-call-42"));
    let third = requests[2]["messages"].to_string();
    assert!(third.contains("no_such_parameter"), "{third}");
}

#[tokio::test]
async fn a_server_that_refuses_tools_is_answered_with_the_tools_in_the_prompt() {
    let (llm, ohd) = ohd_with(
        Script::new(vec![bash("echo fell-back-ok"), Turn::text("finished")])
            .refusing_tools(ToolsRefusal::Vllm),
        "openai/local-model",
        "",
    )
    .await;
    let conv = ohd.create_conversation().await;
    let (events, _) = socket_io(&ohd, &conv, "", "go").await;
    let outputs = by_kind(&events, "observation", "run");
    assert!(
        outputs[0]["content"]
            .as_str()
            .unwrap()
            .contains("fell-back-ok"),
        "{:?}",
        summary(&events)
    );
    assert!(events.iter().any(|e| e["message"] == "finished"));
    let requests = task_requests(&llm);
    // The first with `tools`, refused; every later one without.
    assert!(requests[0].get("tools").is_some());
    assert!(requests[1..].iter().all(|r| r.get("tools").is_none()));
    // No error reached the user.
    assert!(
        by_kind(&events, "observation", "error").is_empty(),
        "{:?}",
        summary(&events)
    );
}

#[tokio::test]
async fn reasoning_effort_goes_to_a_reasoning_model_and_its_reasoning_is_stored() {
    let (llm, ohd) = ohd_with(
        Script::new(vec![
            bash("echo reasoned").with_reasoning("The user wants a command; echo is harmless."),
            Turn::text("done").with_reasoning("Nothing left to do."),
        ]),
        "openai/o4-mini",
        "[llm]\nreasoning_effort = \"high\"\n",
    )
    .await;
    let conv = ohd.create_conversation().await;
    let (events, _) = socket_io(&ohd, &conv, "", "think, then act").await;
    for request in task_requests(&llm) {
        assert_eq!(request["reasoning_effort"], "high", "{request}");
    }
    // A call with no text of its own shows the reasoning as its thought.
    let runs = by_kind(&events, "action", "run");
    assert_eq!(
        runs[0]["args"]["thought"],
        "The user wants a command; echo is harmless."
    );
    assert_eq!(
        runs[0]["tool_call_metadata"]["model_response"]["choices"][0]["message"]["reasoning_content"],
        "The user wants a command; echo is harmless."
    );
    // The agent's answer carries its reasoning too.
    let answer = events
        .iter()
        .find(|e| e["message"] == "done" && e["source"] == "agent")
        .unwrap();
    assert_eq!(answer["args"]["reasoning_content"], "Nothing left to do.");

    // The settings page's effort wins for agents started afterwards.
    let (status, _) = ohd
        .post("/api/settings", json!({"reasoning_effort": "low"}))
        .await;
    assert_eq!(status, 200);
    let conv = ohd.create_conversation().await;
    socket_io(&ohd, &conv, "", "again").await;
    let last = llm.requests().into_iter().last().unwrap();
    assert_eq!(last["reasoning_effort"], "low", "{last}");
}

#[tokio::test]
async fn anthropic_thinking_is_asked_for_and_its_blocks_go_back_across_tool_calls() {
    let (llm, ohd) = ohd_with(
        Script::new(vec![
            bash("echo thought-through").with_reasoning("First I will run a command."),
            Turn::text("done"),
        ]),
        "anthropic/claude-sonnet-4-5",
        "[llm]\nthinking_budget_tokens = 2048\n",
    )
    .await;
    let conv = ohd.create_conversation().await;
    let (events, _) = socket_io(&ohd, &conv, "", "think about it").await;
    assert!(
        events.iter().any(|e| e["message"] == "done"),
        "{:?}",
        summary(&events)
    );
    let requests = task_requests(&llm);
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(
            request["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048}),
            "{request}"
        );
        assert!(request["max_tokens"].as_u64().unwrap() > 2048);
        assert!(request.get("temperature").is_none());
    }
    // The turn with the tool call goes back with its thinking block first, signature kept.
    let assistant = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .cloned()
        .unwrap();
    let first_block = &assistant["content"][0];
    assert_eq!(first_block["type"], "thinking", "{assistant}");
    assert_eq!(first_block["thinking"], "First I will run a command.");
    assert!(
        first_block["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(assistant["content"][1]["type"], "tool_use", "{assistant}");
    // The reasoning is stored on the action.
    let runs = by_kind(&events, "action", "run");
    assert_eq!(runs[0]["args"]["thought"], "First I will run a command.");
}
