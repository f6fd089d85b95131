//! The agent with a long history: its own time per step (everything but the model: reading the
//! log, condensing it (the summary call itself excluded), building the request, storing the
//! action and its observation), and the size of the request it sends, for histories of 100,
//! 1,000 and 10,000 events. The steps are `think` calls, so no shell time counts either; the
//! model is a scripted OpenAI-compatible server on loopback whose time is measured around each
//! call and taken out.
//!
//! Run: `cargo bench -p ohd-agent --bench history` (OHD_BENCH_STEPS sets the steps per size).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ohd_agent::{Agent, AgentSettings, Secrets};
use ohd_llm::{Completion, CompletionRequest, LlmClient, LlmError, LlmSettings, RetryObserver};
use ohd_protocol::action::{MessageArgs, SystemArgs, ThinkArgs};
use ohd_protocol::{
    Action, AgentState, ConversationId, EventId, NewEvent, Observation, Source, ToolCallMetadata,
};
use ohd_scripted_llm::{Script, ScriptedLlm, Turn};
use ohd_store::sqlite::{Durability, SqliteStore};
use ohd_store::{EventLog, Followed, Follower, LocalNotifier};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One model call: when it started and ended, whether it was a step (tools offered) or a
/// summary, and the size of what was sent.
#[derive(Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    step: bool,
    request_bytes: usize,
}

struct Timed {
    inner: Arc<dyn LlmClient>,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[async_trait::async_trait]
impl LlmClient for Timed {
    async fn complete(
        &self,
        request: &CompletionRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        let request_bytes = serde_json::to_string(&request.messages).unwrap().len();
        let start = Instant::now();
        let answer = self.inner.complete(request, observer).await;
        self.calls.lock().unwrap().push(Call {
            start,
            end: Instant::now(),
            step: !request.tools.is_empty(),
            request_bytes,
        });
        answer
    }

    fn model(&self) -> &str {
        self.inner.model()
    }
}

/// A history of `events` events as the agent writes them: its system prompt, the user's
/// task, then thoughts with their observations and state changes.
async fn fill(log: &EventLog, conversation: &ConversationId, events: usize) {
    let mut batch = vec![
        NewEvent::action(
            Source::Agent,
            Action::System(SystemArgs {
                content: "You are a bench agent.".into(),
                tools: json!([]),
                openhands_version: "bench".into(),
                agent_class: "CodeActAgent".into(),
            }),
        ),
        NewEvent::action(
            Source::User,
            Action::Message(MessageArgs::user("Do a long task.")),
        ),
    ];
    let mut n = 0;
    while batch.len() + 3 <= events {
        let call = format!("call_fill_{n}");
        let meta = ToolCallMetadata {
            function_name: "think".into(),
            tool_call_id: call.clone(),
            model_response: json!({"id": format!("resp_fill_{n}"), "choices": [{"message": {"content": null, "tool_calls": [{"id": call, "type": "function", "function": {"name": "think", "arguments": format!("{{\"thought\":\"step {n} of the earlier work, with some detail about what was found\"}}")}}]}}]}),
            total_calls_in_response: 1,
        };
        let mut action = NewEvent::action(
            Source::Agent,
            Action::Think(ThinkArgs {
                thought: format!(
                    "step {n} of the earlier work, with some detail about what was found"
                ),
            }),
        );
        action.tool_call_metadata = Some(meta.clone());
        batch.push(action);
        // Observations point at their action: its id is the next free one at append time.
        let mut observation = NewEvent::observation(
            Source::Agent,
            None,
            Observation::Think {
                content: "Your thought has been logged.".into(),
                extras: Default::default(),
            },
        );
        observation.tool_call_metadata = Some(meta);
        batch.push(observation);
        batch.push(NewEvent::observation(
            Source::Environment,
            None,
            Observation::agent_state_changed(AgentState::Running, ""),
        ));
        n += 1;
    }
    // Causes: each observation answers the action just before it.
    let base = 0u64;
    for (i, event) in batch.iter_mut().enumerate() {
        if matches!(
            event.body,
            ohd_protocol::EventBody::Observation(Observation::Think { .. })
        ) {
            event.cause = Some(EventId(base + i as u64 - 1));
        }
    }
    for chunk in batch.chunks(500) {
        log.append_all(conversation, chunk.to_vec()).await.unwrap();
    }
    // A finished task, so the agent waits for the next message.
    log.append(
        conversation,
        NewEvent::observation(
            Source::Environment,
            None,
            Observation::agent_state_changed(AgentState::Finished, ""),
        ),
    )
    .await
    .unwrap();
}

struct Outcome {
    /// The agent's own time per step: the step's wall time without its model calls.
    own: Vec<Duration>,
    request_bytes: Vec<usize>,
    condensations: usize,
}

async fn measure(history: usize, steps: usize, dir: &std::path::Path) -> Outcome {
    let store = SqliteStore::open(&dir.join(format!("h{history}.db")), Durability::Normal)
        .await
        .unwrap();
    let log = EventLog::new(Arc::new(store), Arc::new(LocalNotifier::new(1024)));
    let conversation = support::new_conversation(&log).await;
    fill(&log, &conversation, history).await;
    let mut turns: Vec<Turn> = (0..steps)
        .map(|i| Turn::tool_call("think", json!({"thought": format!("new step {i}")})))
        .collect();
    turns.push(Turn::tool_call("finish", json!({"message": "done"})));
    let (base, llm_server) = ScriptedLlm::start(
        Script::new(turns).with_aside("USER_CONTEXT: a long task. COMPLETED: many steps."),
    )
    .await
    .unwrap();
    let llm = ohd_llm::connect(&LlmSettings {
        model: "openai/bench-model".into(),
        api_key: Some("sk-bench".into()),
        base_url: Some(format!("{base}/v1")),
        stream: false,
        ..LlmSettings::default()
    })
    .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let llm: Arc<dyn LlmClient> = Arc::new(Timed {
        inner: llm,
        calls: calls.clone(),
    });
    let settings = Arc::new(AgentSettings {
        max_iterations: steps as u32 + 5,
        secrets: Secrets::default(),
        ..AgentSettings::new(Ok(llm))
    });
    let ctx = support::agent_context(&log, &conversation, dir);
    let last = log
        .store()
        .read_after(&conversation, None, 100_000)
        .await
        .unwrap()
        .last()
        .map(|e| e.id);
    let mut follower = Follower::new(log.clone(), conversation.clone(), last);
    let cancel = tokio_util::sync::CancellationToken::new();
    let agent = Agent::start(ctx, settings, cancel.clone()).await.unwrap();
    let running = tokio::spawn(agent.run());
    let asked = Instant::now();
    log.append(
        &conversation,
        NewEvent::action(Source::User, Action::Message(MessageArgs::user("go on"))),
    )
    .await
    .unwrap();
    let mut condensations = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(120), follower.next()).await {
            Ok(Ok(Followed::Event(e))) => {
                if e.json.contains("\"action\":\"condensation\"") {
                    condensations += 1;
                }
                if e.json.contains("\"agent_state\":\"finished\"") {
                    break;
                }
                if e.json.contains("\"agent_state\":\"error\"") {
                    panic!("the agent stopped in error: {}", e.json);
                }
            }
            Ok(Ok(_)) => {}
            other => panic!("the agent stopped: {:?}", other.map(|r| r.map(|_| ()))),
        }
    }
    cancel.cancel();
    let _ = running.await;
    drop(llm_server);
    let calls = calls.lock().unwrap().clone();
    // A step: from the end of one step's model call to the end of the next one's, less the
    // model calls in between (the next step's own, and any summary).
    let step_calls: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].step).collect();
    // The first step: from the message to its model call's end, the first condensation of
    // the old history included.
    let first = step_calls[0];
    let before: Duration = calls[..=first].iter().map(|c| c.end - c.start).sum();
    let mut own = vec![(calls[first].end - asked).saturating_sub(before)];
    for pair in step_calls.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let wall = calls[to].end - calls[from].end;
        let model: Duration = calls[from + 1..=to].iter().map(|c| c.end - c.start).sum();
        own.push(wall.saturating_sub(model));
    }
    Outcome {
        own,
        request_bytes: step_calls.iter().map(|&i| calls[i].request_bytes).collect(),
        condensations,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let steps: usize = std::env::var("OHD_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workspace")).unwrap();
    println!(
        "agent with a long history, {steps} think steps each, default condenser (120 events), model time excluded\n"
    );
    println!(
        "| history | own time per step: median | p99 | max | mean | condensations | request: first | largest | last |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for history in [100, 1_000, 10_000] {
        let outcome = measure(history, steps, dir.path()).await;
        let mut own = outcome.own.clone();
        own.sort();
        let at = |q: f64| ms(own[((own.len() - 1) as f64 * q).round() as usize]);
        let mean = ms(own.iter().sum::<Duration>()) / own.len() as f64;
        let kb = |b: usize| b as f64 / 1024.0;
        println!(
            "| {history} events | {:.2} ms | {:.2} ms | {:.2} ms | {mean:.2} ms | {} | {:.1} KiB | {:.1} KiB | {:.1} KiB |",
            at(0.5),
            at(0.99),
            ms(*own.last().unwrap()),
            outcome.condensations,
            kb(outcome.request_bytes[0]),
            kb(*outcome.request_bytes.iter().max().unwrap()),
            kb(*outcome.request_bytes.last().unwrap()),
        );
    }
}
