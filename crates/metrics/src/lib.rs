//! ohd's figures, for `GET /metrics` (Prometheus scrapes the OpenMetrics text format).
//!
//! One registry for the process, reached through [`metrics()`], so that each crate records
//! where the thing happens without threading a handle through every call. Labels are closed
//! sets (a transport, a reason, an outcome, a model name) and never a conversation id, a
//! message's text or a secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transport {
    /// `websocket` or `polling`.
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelOutcome {
    /// The configured model (`openai/gpt-4o`), as [`model_label`] bounds it.
    pub model: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Model {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelTokens {
    pub model: String,
    /// `prompt`, `completion`, `cache_read` or `cache_write`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Exit {
    /// `0`, `nonzero`, `still_running` (returned while it runs on), `interrupted` (by its
    /// time limit or a key), `stopped` (by the user) or `error` (the shell could not run it).
    pub exit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Limit {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

/// Every figure ohd keeps.
pub struct Metrics {
    registry: Registry,
    pub connections_open: Family<Transport, Gauge>,
    pub connections_opened: Family<Transport, Counter>,
    pub joins: Counter,
    pub join_refusals: Family<Reason, Counter>,
    pub events_appended: Counter,
    pub events_delivered: Counter,
    pub store_commit_seconds: Histogram,
    pub replay_events: Histogram,
    pub agent_steps: Family<Outcome, Counter>,
    pub llm_requests: Family<ModelOutcome, Counter>,
    pub llm_request_seconds: Family<Model, Histogram>,
    pub llm_tokens: Family<ModelTokens, Counter>,
    /// Micro-dollars, so that the counter stays an integer.
    pub llm_cost_microdollars: Family<Model, Counter>,
    pub commands: Family<Exit, Counter>,
    pub command_seconds: Histogram,
    pub mcp_calls: Family<Outcome, Counter>,
    pub limits_hit: Family<Limit, Counter>,
    pub errors: Family<Code, Counter>,
    pub agents_running: Gauge,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ohd");
        let connections_open = Family::<Transport, Gauge>::default();
        registry.register(
            "connections_open",
            "Engine.IO connections open now, by transport",
            connections_open.clone(),
        );
        let connections_opened = Family::<Transport, Counter>::default();
        registry.register(
            "connections_opened",
            "Engine.IO connections opened, by transport",
            connections_opened.clone(),
        );
        let joins = Counter::default();
        registry.register("joins", "Conversations joined by a client", joins.clone());
        let join_refusals = Family::<Reason, Counter>::default();
        registry.register(
            "join_refusals",
            "Joins refused, by reason",
            join_refusals.clone(),
        );
        let events_appended = Counter::default();
        registry.register(
            "events_appended",
            "Events stored in conversations' logs",
            events_appended.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Events sent to clients, replays included",
            events_delivered.clone(),
        );
        let store_commit_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch of appends to the store (successful commits)",
            store_commit_seconds.clone(),
        );
        let replay_events = Histogram::new([0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]);
        registry.register(
            "replay_events",
            "Stored events a joining client is replayed, as far as the first page read (256) shows",
            replay_events.clone(),
        );
        let agent_steps = Family::<Outcome, Counter>::default();
        registry.register(
            "agent_steps",
            "Agent steps, by how each ended (continue, await_user, finished, interrupted, failed, awaiting_confirmation)",
            agent_steps.clone(),
        );
        let llm_requests = Family::<ModelOutcome, Counter>::default();
        registry.register(
            "llm_requests",
            "Model requests, by model and outcome (ok or the error's kind)",
            llm_requests.clone(),
        );
        let llm_request_seconds =
            Family::<Model, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register(
            "llm_request_seconds",
            "Time from sending a model request to the end of its answer, retries included",
            llm_request_seconds.clone(),
        );
        let llm_tokens = Family::<ModelTokens, Counter>::default();
        registry.register(
            "llm_tokens",
            "Tokens used, by model and kind",
            llm_tokens.clone(),
        );
        let llm_cost_microdollars = Family::<Model, Counter>::default();
        registry.register(
            "llm_cost_microdollars",
            "Cost of model requests in millionths of a US dollar, where the price is known",
            llm_cost_microdollars.clone(),
        );
        let commands = Family::<Exit, Counter>::default();
        registry.register(
            "commands",
            "Shell commands the agent ran, by exit status",
            commands.clone(),
        );
        let command_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "command_seconds",
            "How long the agent's shell commands ran",
            command_seconds.clone(),
        );
        let mcp_calls = Family::<Outcome, Counter>::default();
        registry.register(
            "mcp_calls",
            "MCP tool calls, by outcome (ok, error)",
            mcp_calls.clone(),
        );
        let limits_hit = Family::<Limit, Counter>::default();
        registry.register(
            "limits_hit",
            "Times a limit refused or held back something, by limit",
            limits_hit.clone(),
        );
        let errors = Family::<Code, Counter>::default();
        registry.register(
            "errors",
            "Errors answered to clients or recorded in conversations, by code",
            errors.clone(),
        );
        let agents_running = Gauge::default();
        registry.register(
            "agents_running",
            "Agents started and not yet ended",
            agents_running.clone(),
        );
        Metrics {
            registry,
            connections_open,
            connections_opened,
            joins,
            join_refusals,
            events_appended,
            events_delivered,
            store_commit_seconds,
            replay_events,
            agent_steps,
            llm_requests,
            llm_request_seconds,
            llm_tokens,
            llm_cost_microdollars,
            commands,
            command_seconds,
            mcp_calls,
            limits_hit,
            errors,
            agents_running,
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts an error by its code (`STATUS$ERROR_LLM_AUTHENTICATION`, `INVALID_BODY`, ...).
    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&Code {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn limit(&self, limit: &'static str) {
        self.limits_hit.get_or_create(&Limit { limit }).inc();
    }
}

/// Counts one running thing for as long as it lives (an agent in [`Metrics::agents_running`]).
pub struct Running(Gauge);

impl Running {
    pub fn agent() -> Running {
        let gauge = metrics().agents_running.clone();
        gauge.inc();
        Running(gauge)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The most model names the figures tell apart: the settings page takes any name, and each
/// new one would add series for the life of the process.
const MODEL_LABELS: usize = 32;

/// A model's name as a label: at most 100 characters, and `other` once 32 names are known.
pub fn model_label(model: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let name: String = model.chars().take(100).collect();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(&name) {
        return name;
    }
    if seen.len() < MODEL_LABELS {
        seen.push(name.clone());
        return name;
    }
    "other".to_owned()
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's figures.
pub fn metrics() -> &'static Metrics {
    &METRICS
}
