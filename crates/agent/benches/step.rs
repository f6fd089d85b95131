//! The server's own time per agent step: from the model's answer arriving (the model client
//! returns it to the agent; the model is a scripted OpenAI-compatible server on loopback,
//! answering whole) to the step's observation being published to clients. Two steps: `echo hi`
//! in the shell, and viewing a 10 MB file.
//!
//! Run: `cargo bench -p ohd-agent --bench step` (set OHD_BENCH_STEPS for more or fewer steps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ohd_agent::{Agent, AgentSettings, Secrets};
use ohd_llm::{Completion, CompletionRequest, LlmClient, LlmError, LlmSettings, RetryObserver};
use ohd_protocol::action::MessageArgs;
use ohd_protocol::{Action, ConversationId, NewEvent, Source};
use ohd_runtime::sandbox::bubblewrap_available;
use ohd_runtime::shell::ShellOptions;
use ohd_scripted_llm::{Script, ScriptedLlm, Turn};
use ohd_store::sqlite::{Durability, SqliteStore};
use ohd_store::{EventLog, Followed, Follower, LocalNotifier, LogItem, Notifier};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent's model client, noting when each answer reaches the agent.
struct Stamped {
    inner: Arc<dyn LlmClient>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait::async_trait]
impl LlmClient for Stamped {
    async fn complete(
        &self,
        request: &CompletionRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        let answer = self.inner.complete(request, observer).await;
        // Side questions (the title) offer no tools and are not steps.
        if !request.tools.is_empty() {
            self.arrivals.lock().unwrap().push(Instant::now());
        }
        answer
    }

    fn model(&self) -> &str {
        self.inner.model()
    }
}

/// The notifier, noting when each step's observation is published to subscribers: the moment
/// clients' deliveries are told of it.
struct StampedNotifier {
    inner: LocalNotifier,
    published: Arc<Mutex<Vec<Instant>>>,
}

impl Notifier for StampedNotifier {
    fn publish(&self, conversation: &ConversationId, item: LogItem) {
        if let LogItem::Event(e) = &item
            && (e.json.contains("\"observation\":\"run\"")
                || e.json.contains("\"observation\":\"read\""))
        {
            self.published.lock().unwrap().push(Instant::now());
        }
        self.inner.publish(conversation, item);
    }

    fn subscribe(
        &self,
        conversation: &ConversationId,
    ) -> tokio::sync::broadcast::Receiver<LogItem> {
        self.inner.subscribe(conversation)
    }
}

async fn measure(name: &str, turn: Turn, steps: usize, dir: &std::path::Path) -> Vec<Duration> {
    let store = SqliteStore::open(&dir.join(format!("{name}.db")), Durability::Normal)
        .await
        .unwrap();
    let published_at = Arc::new(Mutex::new(Vec::new()));
    let notifier = StampedNotifier {
        inner: LocalNotifier::new(1024),
        published: published_at.clone(),
    };
    let log = EventLog::new(Arc::new(store), Arc::new(notifier));
    let conversation = support::new_conversation(&log).await;
    let mut turns = vec![turn; steps];
    turns.push(Turn::tool_call("finish", json!({"message": "done"})));
    let (base, llm_server) = ScriptedLlm::start(Script::new(turns).with_aside("Bench"))
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
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let llm: Arc<dyn LlmClient> = Arc::new(Stamped {
        inner: llm,
        arrivals: arrivals.clone(),
    });
    let settings = Arc::new(AgentSettings {
        max_iterations: steps as u32 + 5,
        shell: ShellOptions::default(),
        secrets: Secrets::default(),
        ..AgentSettings::new(Ok(llm))
    });
    let ctx = support::agent_context(&log, &conversation, dir);
    let mut follower = Follower::new(log.clone(), conversation.clone(), None);
    let cancel = tokio_util::sync::CancellationToken::new();
    let agent = Agent::start(ctx, settings, cancel.clone()).await.unwrap();
    let running = tokio::spawn(agent.run());
    log.append(
        &conversation,
        NewEvent::action(Source::User, Action::Message(MessageArgs::user("go"))),
    )
    .await
    .unwrap();
    let mut seen = 0;
    while seen < steps {
        match tokio::time::timeout(Duration::from_secs(60), follower.next()).await {
            Ok(Ok(Followed::Event(e)))
                if e.json.contains("\"observation\":\"run\"")
                    || e.json.contains("\"observation\":\"read\"") =>
            {
                seen += 1;
            }
            Ok(Ok(_)) => {}
            other => panic!(
                "{name}: the agent stopped: {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
    }
    cancel.cancel();
    let _ = running.await;
    drop(llm_server);
    let published = published_at.lock().unwrap().clone();
    let arrived = arrivals.lock().unwrap().clone();
    published
        .iter()
        .zip(&arrived)
        .map(|(p, a)| p.duration_since(*a))
        .collect()
}

fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.9), ms(*samples.last().unwrap()))
}

#[tokio::main]
async fn main() {
    let steps: usize = std::env::var("OHD_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workspace")).unwrap();
    // 10 MB of text, 100-character lines.
    let line = format!("{}\n", "x".repeat(99));
    std::fs::write(dir.path().join("workspace/big.txt"), line.repeat(100_000)).unwrap();
    let sandbox = if bubblewrap_available() {
        "bubblewrap"
    } else {
        "none"
    };
    println!(
        "agent step, {steps} steps each, sandbox: {sandbox}, baseline: the original OpenHands server, user message to first event back, median about 100 ms (shared/spec/transcripts/README.md)\n"
    );
    println!("| step | median | p90 | max | median vs 100 ms |");
    println!("| --- | --- | --- | --- | --- |");
    let cases = [
        (
            "echo hi",
            Turn::tool_call("execute_bash", json!({"command": "echo hi"})),
        ),
        (
            "view a 10 MB file",
            Turn::tool_call(
                "str_replace_editor",
                json!({"command": "view", "path": "big.txt"}),
            ),
        ),
    ];
    for (name, turn) in cases {
        let (p50, p90, max) = summary(measure(name, turn, steps, dir.path()).await);
        println!(
            "| {name} | {p50:.2} ms | {p90:.2} ms | {max:.2} ms | {:.0}x faster |",
            100.0 / p50
        );
    }
}
