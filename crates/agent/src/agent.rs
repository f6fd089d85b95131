//! One conversation's agent: it follows the conversation's log, reacts to what the user sends,
//! asks the model what to do, does it, and records every step as events.
//!
//! States follow OpenHands (`loading` → `awaiting_user_input`; a message → `running`; `finish`
//! → `finished`; a reply without tool calls → `awaiting_user_input`; `stopped` and `paused` at
//! once; limits and failures → `error` with a reason). Everything the agent knows comes from
//! the log, so after a restart it rebuilds its history from it and goes on.

use crate::condenser::{self, CondenserSettings};
use crate::prompt;
use crate::redact::Secrets;
use crate::stuck;
use crate::tools::{self, ToolAction};
use base64::Engine as _;
use ohd_llm::{
    Completion, CompletionRequest, LlmClient, LlmError, Metrics, RetryObserver, ToolSpec,
};
use ohd_protocol::action::{
    Action, CondensationArgs, CondensationRequestArgs, ConfirmationState, EditArgs, FinishArgs,
    McpArgs, MessageArgs, ReadArgs, RunArgs, SECURITY_RISK_UNKNOWN, SystemArgs, ThinkArgs,
};
use ohd_protocol::notice::StatusUpdate;
use ohd_protocol::observation::{EditExtras, McpExtras, ReadExtras, RunExtras, RunMetadata};
use ohd_protocol::{
    AgentState, ConversationId, Event, EventBody, EventId, NewEvent, Observation, Source,
    ToolCallMetadata,
};
use ohd_runtime::editor::{Editor, EditorCommand, EditorOutcome};
use ohd_runtime::sandbox::Sandbox;
use ohd_runtime::shell::{CommandResult, Shell, ShellOptions};
use ohd_runtime::truncate;
use ohd_runtime::workspace::Workspace;
use ohd_store::{EventLog, Followed, Follower, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What an agent runs with: the server's configuration with the saved settings over it, taken
/// when the agent starts (a conversation started after a change gets the change).
pub struct AgentSettings {
    /// `None` when no model is configured; the message says how to configure one.
    pub llm: Result<Arc<dyn LlmClient>, String>,
    /// Writes the condenser's summaries (`[llm] condenser_model`); the conversation's model
    /// when none is set.
    pub condenser_llm: Option<Arc<dyn LlmClient>>,
    pub max_iterations: u32,
    pub max_budget: Option<f64>,
    /// Why the budget cannot be kept (the model's price is unknown), said when a task starts.
    pub budget_note: Option<String>,
    /// The model's input window in tokens, when known (price table or `[llm] max_input_tokens`).
    pub context_window: Option<u64>,
    /// Whether the model takes images (user attachments, viewed image files).
    pub vision: bool,
    /// The user's own microagents (`~/.openhands/microagents` by default).
    pub user_microagents: Option<PathBuf>,
    pub condenser: CondenserSettings,
    pub confirmation: Confirmation,
    pub stuck_detection: bool,
    /// The shell's git identity (`git_user_name`, `git_user_email`).
    pub git_identity: Option<(String, String)>,
    /// An agent with nothing to do for this long ends, releasing its shell and sandbox; the
    /// server starts it again (from the log) on the next message or join.
    pub idle_timeout: Option<Duration>,
    pub shell: ShellOptions,
    /// Values hidden from every event (the model's key, the session key).
    pub secrets: Secrets,
    /// The user's MCP servers (`[mcp]`, or the settings page's `mcp_config`).
    pub mcp: Option<Arc<ohd_mcp::McpConfig>>,
    /// Where the agents say what they last saw of each MCP server (`GET /api/mcp`).
    pub mcp_board: Option<Arc<ohd_mcp::StatusBoard>>,
}

impl AgentSettings {
    /// The defaults around a model.
    pub fn new(llm: Result<Arc<dyn LlmClient>, String>) -> AgentSettings {
        AgentSettings {
            llm,
            condenser_llm: None,
            max_iterations: 100,
            max_budget: None,
            budget_note: None,
            context_window: None,
            vision: false,
            user_microagents: None,
            condenser: CondenserSettings::default(),
            confirmation: Confirmation::default(),
            stuck_detection: true,
            git_identity: None,
            idle_timeout: None,
            shell: ShellOptions::default(),
            secrets: Secrets::default(),
            mcp: None,
            mcp_board: None,
        }
    }
}

/// Confirmation mode: which actions wait for the user's yes before they run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Confirmation {
    pub enabled: bool,
    /// `Some("llm")`: the model's own `security_risk` decides, and only what it does not rate
    /// LOW waits. Without an analyzer every action waits.
    pub analyzer: Option<String>,
}

impl Confirmation {
    /// Whether an action with this risk (-1 unknown, 0 low, 1 medium, 2 high) waits.
    pub fn asks(&self, risk: i8) -> bool {
        if !self.enabled {
            return false;
        }
        match self.analyzer.as_deref() {
            // An unrated action waits too: failing safe.
            Some("llm") => risk != 0,
            _ => true,
        }
    }
}

/// One conversation's part.
pub struct AgentContext {
    pub conversation: ConversationId,
    pub log: EventLog,
    pub workspace: PathBuf,
    /// Environment for the shell (provider tokens). Shared with the server, which adds the
    /// tokens of providers that clients name before the shell starts.
    pub env: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// How this conversation's commands are isolated (decided once, at the server's start).
    pub sandbox: Arc<Sandbox>,
    /// Shared with the server: decides, without a race, between this agent ending for being
    /// idle and the server handing it new work.
    pub presence: Arc<Presence>,
    /// Places for agents at work (`[agent] max_running`): held from a task's first step until
    /// the agent stops working (waiting for the user, finished, stopped, in error).
    pub places: Option<Arc<tokio::sync::Semaphore>>,
    /// The user's custom secrets in the shell's environment, by name, with their descriptions:
    /// the model is told they exist (never their values).
    pub secret_names: Vec<(String, String)>,
    /// The repository cloned into the workspace for this conversation, if any.
    pub repository: Option<RepositoryInfo>,
    /// The settings agents started now would get: an agent that has no usable model takes
    /// them at the next message, so a model chosen in Settings works without a new conversation.
    pub latest_settings: Option<LatestSettings>,
}

/// Reads the settings an agent started now would get.
pub type LatestSettings = Arc<dyn Fn() -> Option<Arc<AgentSettings>> + Send + Sync>;

/// A conversation's repository, as the agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryInfo {
    /// `owner/name`.
    pub name: String,
    /// Where it is, in the agent's view (`/workspace/name`).
    pub directory: String,
    /// The branch checked out, when one was asked for.
    pub branch: String,
}

/// Whether an agent still takes work. An agent that wants to end for being idle may only do so
/// if the server has not handed it anything since it last looked ([`Presence::poke`], after
/// the work is in the log); once it has given up, the server starts a new agent instead.
#[derive(Debug, Default)]
pub struct Presence {
    state: std::sync::atomic::AtomicU8,
    /// Clients joined to the conversation: an agent someone is looking at is not released.
    clients: Arc<std::sync::atomic::AtomicUsize>,
    /// Waiting for a place under `[agent] max_running`.
    queued: std::sync::atomic::AtomicBool,
    /// Clients on other nodes of a cluster are joined to the conversation.
    watched_elsewhere: std::sync::atomic::AtomicBool,
}

const ACTIVE: u8 = 0;
const POKED: u8 = 1;
const RELEASING: u8 = 2;

impl Presence {
    /// A presence that counts the conversation's clients in `clients`.
    pub fn with_clients(clients: Arc<std::sync::atomic::AtomicUsize>) -> Presence {
        Presence {
            state: Default::default(),
            clients,
            queued: Default::default(),
            watched_elsewhere: Default::default(),
        }
    }

    /// Whether clients on other nodes look at the conversation: an agent someone looks at is
    /// not released, whichever node they are on.
    pub fn set_watched_elsewhere(&self, watched: bool) {
        self.watched_elsewhere
            .store(watched, std::sync::atomic::Ordering::Release);
    }

    /// Whether the agent waits for a place under `[agent] max_running`.
    pub fn is_queued(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called by the server after it put work in the log: false when the agent is ending (or
    /// has ended for being idle), so a new one must be started.
    pub fn poke(&self) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        match self.state.compare_exchange(
            ACTIVE,
            POKED,
            AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(current) => current == POKED,
        }
    }

    /// The server's side, for an agent that never started here (another node runs it): true
    /// when nothing was handed over since it was started, so it may go; false (and ready
    /// again) when it was poked, so the server should look once more.
    pub fn step_aside(&self) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
        match self
            .state
            .compare_exchange(ACTIVE, RELEASING, AcqRel, Acquire)
        {
            Ok(_) => true,
            Err(_) => {
                self.state.store(ACTIVE, Release);
                false
            }
        }
    }

    /// The server's side, for an agent that ended for another reason than being idle (its
    /// node lost the lease, it failed): work handed over from now on starts a new agent.
    pub fn retire(&self) {
        self.state
            .store(RELEASING, std::sync::atomic::Ordering::Release);
    }

    /// Whether the agent is ending for being idle.
    pub fn is_released(&self) -> bool {
        self.state.load(std::sync::atomic::Ordering::Acquire) == RELEASING
    }

    /// The agent's side, when an event came: whatever the server handed over is in the log,
    /// before that event or soon after it, so the next quiet period may end the agent.
    fn settle(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let _ = self.state.compare_exchange(POKED, ACTIVE, AcqRel, Acquire);
    }

    /// The agent's side: true when it may end; false when it was poked (it then waits again,
    /// and its log follower brings the new work).
    fn try_release(&self) -> bool {
        use std::sync::atomic::Ordering::{Acquire, Release};
        if self.clients.load(Acquire) > 0 || self.watched_elsewhere.load(Acquire) {
            self.state.store(ACTIVE, Release);
            return false;
        }
        // Unwatched, it ends as an agent that another node runs steps aside: only if not poked.
        self.step_aside()
    }
}

/// Why the agent stopped for good (the task ends; the conversation can start a new one).
#[derive(Debug, thiserror::Error)]
pub enum AgentFailure {
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

pub const VERSION: &str = concat!("ohd-", env!("CARGO_PKG_VERSION"));
const STOPPED_ERROR: &str = "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_STOPPED";
const CUT_OFF_ERROR: &str = "AGENT_ERROR$ERROR_ACTION_NOT_EXECUTED_ERROR";

/// What the user asked for, taken from the log.
#[derive(Debug, Clone, PartialEq)]
enum Control {
    Message,
    State(AgentState),
    Run(EventId, RunArgs),
}

/// How a step ended.
enum StepEnd {
    Continue,
    AwaitUser,
    /// An action waits for the user's confirmation (the state says so already).
    AwaitConfirmation,
    Finished,
    /// Stopped or paused by the user.
    Interrupted(AgentState),
    Failed {
        status_id: String,
        reason: String,
    },
}

/// The log-facing half: history, state, appends. Kept apart from the runtime so a step can
/// borrow both at once.
struct Core {
    ctx: AgentContext,
    /// The server's secrets, and with them the shell's tokens hidden so far.
    base_secrets: Secrets,
    secrets: Secrets,
    tokens_hidden: usize,
    history: BTreeMap<EventId, Event>,
    state: AgentState,
    queue: VecDeque<Control>,
}

struct Runtime {
    shell: Shell,
    editor: Editor,
}

pub struct Agent {
    core: Core,
    settings: Arc<AgentSettings>,
    follower: Follower,
    runtime: Option<Runtime>,
    metrics: Metrics,
    iterations: u32,
    cancel: CancellationToken,
    /// Whether this agent has already asked for a title.
    titled: bool,
    /// The calls of the model's latest answer not performed yet, in order.
    pending: VecDeque<PendingCall>,
    /// The action waiting for the user's confirmation.
    awaiting: Option<Awaiting>,
    /// The most tokens a request may hold, learned from the provider refusing a longer one.
    overflow_bound: Option<u64>,
    /// Whether the user was told that the budget cannot be kept.
    budget_said: bool,
    /// This agent's place among those at work, while it works.
    place: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The user's MCP servers, once the first step needed their tools.
    mcp: Option<ohd_mcp::McpHub>,
    /// This agent in the figures while it lives.
    _counted: ohd_metrics::Running,
}

/// One tool call of a model answer, understood (or why not), with what its action carries.
struct PendingCall {
    parsed: Result<ToolAction, String>,
    thought: String,
    meta: ToolCallMetadata,
    metrics: Option<Value>,
}

/// An action stored as awaiting confirmation, and what to run once confirmed.
struct Awaiting {
    action: ToolAction,
    event: Event,
}

/// What came of asking the model.
// A value that lives for one match after each model call: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Asked {
    Answer(Result<Completion, LlmError>),
    Interrupted(AgentState),
}

/// How many times one step condenses harder after the provider says the prompt is too long.
const MAX_OVERFLOW_RETRIES: u32 = 8;
const REJECTED: &str = "Action has been rejected by the user! Waiting for further user input.";

/// Reports retries to the agent's loop so it can show `rate_limited`.
struct RetryNotices(mpsc::UnboundedSender<Retry>);

/// One retry, as the user is told of it.
struct Retry {
    /// The notice, for example `Could not reach the LLM provider: …; retry 2 in 4.0 s.`
    notice: String,
    /// The `rate_limited` state's reason: what is happening, in a few words.
    state_reason: &'static str,
}

impl RetryObserver for RetryNotices {
    fn retrying(&self, attempt: u32, wait: Duration, reason: &LlmError) {
        let _ = self.0.send(Retry {
            notice: format!(
                "{}; retry {attempt} in {:.1} s.",
                capitalized(&reason.to_string()),
                wait.as_secs_f64()
            ),
            state_reason: retrying_because(reason),
        });
    }
}

/// What a retry is waiting out, for the `rate_limited` state (the only waiting state the
/// protocol has, whatever the cause).
fn retrying_because(reason: &LlmError) -> &'static str {
    match reason {
        LlmError::Network(_) => "could not reach the model, retrying",
        LlmError::RateLimited { .. } => "rate limited, retrying",
        LlmError::ServiceUnavailable(_) | LlmError::Server { .. } => {
            "the model's service is failing, retrying"
        }
        _ => "retrying",
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Core {
    async fn append(&mut self, mut event: NewEvent) -> Result<Event, StoreError> {
        {
            // Provider tokens only ever get added; take in the new ones when there are some.
            let env = self.ctx.env.lock().unwrap_or_else(|p| p.into_inner());
            if env.len() != self.tokens_hidden {
                self.secrets = self.base_secrets.with(env.iter().map(|(_, v)| v.clone()));
                self.tokens_hidden = env.len();
            }
        }
        self.secrets.scrub_event(&mut event);
        let stored = self.ctx.log.append(&self.ctx.conversation, event).await?;
        let event = stored.decode()?;
        self.history.insert(event.id, event.clone());
        Ok(event)
    }

    async fn set_state(&mut self, state: AgentState, reason: &str) -> Result<(), StoreError> {
        if self.state == state && reason.is_empty() {
            return Ok(());
        }
        self.state = state;
        self.append(NewEvent::observation(
            Source::Environment,
            None,
            Observation::agent_state_changed(state, reason),
        ))
        .await?;
        Ok(())
    }

    fn notify(&self, status: &StatusUpdate) {
        self.ctx.log.notify(&self.ctx.conversation, status);
    }

    /// Takes a followed event into the history; a user action becomes a control.
    fn absorb(&mut self, followed: Followed) -> Result<Option<Control>, StoreError> {
        let Followed::Event(stored) = followed else {
            return Ok(None);
        };
        if self.history.contains_key(&stored.id) {
            return Ok(None);
        }
        let event = stored.decode()?;
        let control = match (&event.body, event.source) {
            (EventBody::Action(Action::Message(_)), Source::User) => Some(Control::Message),
            (EventBody::Action(Action::ChangeAgentState(a)), Source::User) => {
                Some(Control::State(a.agent_state))
            }
            (EventBody::Action(Action::Run(run)), Source::User) => {
                Some(Control::Run(event.id, run.clone()))
            }
            _ => None,
        };
        self.history.insert(event.id, event);
        Ok(control)
    }

    /// Takes an event that arrived during a step: a stop or a pause interrupts the step (its
    /// state is returned); a terminal command waits for the step to end; a message is in the
    /// history now, so the next model call sees it.
    fn take_control(&mut self, followed: Followed) -> Option<AgentState> {
        match self.absorb(followed) {
            Ok(Some(Control::State(state @ (AgentState::Stopped | AgentState::Paused)))) => {
                Some(state)
            }
            Ok(Some(control @ Control::Run(..))) => {
                self.queue.push_back(control);
                None
            }
            Ok(Some(Control::State(_) | Control::Message) | None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "event not read");
                None
            }
        }
    }

    fn llm_metrics(metrics: &Metrics) -> Option<Value> {
        Some(metrics.to_json())
    }
}

impl Agent {
    /// Takes the settings agents started now would get, if they have a usable model: the
    /// user chose one since this agent started. Its keys join those kept out of events.
    fn take_latest_settings(&mut self) {
        let Some(latest) = self
            .core
            .ctx
            .latest_settings
            .as_ref()
            .and_then(|read| read())
        else {
            return;
        };
        let Ok(llm) = &latest.llm else {
            return;
        };
        tracing::info!(conversation = %self.core.ctx.conversation, model = llm.model(), "taking the model chosen since the agent started");
        self.core.base_secrets = latest.secrets.clone();
        self.core.secrets = latest.secrets.clone();
        // The provider tokens are added back to the secrets at the next append.
        self.core.tokens_hidden = usize::MAX;
        self.settings = latest;
    }

    pub async fn start(
        ctx: AgentContext,
        settings: Arc<AgentSettings>,
        cancel: CancellationToken,
    ) -> Result<Agent, AgentFailure> {
        let mut history = BTreeMap::new();
        let mut after = None;
        loop {
            let page = ctx
                .log
                .store()
                .read_after(&ctx.conversation, after, 512)
                .await?;
            let full = page.len() == 512;
            for stored in page {
                after = Some(stored.id);
                match stored.decode() {
                    Ok(event) => {
                        history.insert(event.id, event);
                    }
                    Err(e) => {
                        tracing::warn!(conversation = %ctx.conversation, error = %e, "event skipped")
                    }
                }
            }
            if !full {
                break;
            }
        }
        let follower = Follower::new(ctx.log.clone(), ctx.conversation.clone(), after);
        let model = settings
            .llm
            .as_ref()
            .map(|l| l.model().to_owned())
            .unwrap_or_default();
        // The cost so far carries over an agent's restart (or its release for being idle): the
        // budget counts the whole conversation, as the web UI shows it.
        let mut metrics = history
            .values()
            .rev()
            .find_map(|e| e.llm_metrics.clone())
            .and_then(|m| serde_json::from_value::<Metrics>(m).ok())
            .unwrap_or_else(|| Metrics::new(&model));
        metrics.accumulated_token_usage.context_window = settings.context_window.unwrap_or(0);
        metrics.max_budget_per_task = settings.max_budget;
        let mut agent = Agent {
            core: Core {
                ctx,
                base_secrets: settings.secrets.clone(),
                secrets: settings.secrets.clone(),
                tokens_hidden: 0,
                history,
                state: AgentState::Loading,
                queue: VecDeque::new(),
            },
            settings,
            follower,
            runtime: None,
            metrics,
            iterations: 0,
            cancel,
            titled: false,
            pending: VecDeque::new(),
            awaiting: None,
            overflow_bound: None,
            budget_said: false,
            place: None,
            mcp: None,
            _counted: ohd_metrics::Running::agent(),
        };
        agent.recover().await?;
        Ok(agent)
    }

    /// Rebuilds after a start: answers actions a crash cut off, records the system prompt
    /// once, and decides whether there is work waiting.
    async fn recover(&mut self) -> Result<(), AgentFailure> {
        // What the user sent after the last event an agent wrote reached no agent (none was
        // running: released for being idle, waiting for a place, or restarting): terminal
        // commands and state changes among it are still to be done. Messages are found below.
        let last_own = self
            .core
            .history
            .values()
            .rev()
            .find(|e| e.source != Source::User)
            .map(|e| e.id);
        let unseen: Vec<Control> = self
            .core
            .history
            .values()
            .filter(|e| e.source == Source::User && last_own.is_none_or(|own| e.id > own))
            .filter_map(|e| match &e.body {
                EventBody::Action(Action::Run(run)) => Some(Control::Run(e.id, run.clone())),
                EventBody::Action(Action::ChangeAgentState(a)) => {
                    Some(Control::State(a.agent_state))
                }
                _ => None,
            })
            .collect();
        let unseen_runs: std::collections::HashSet<EventId> = unseen
            .iter()
            .filter_map(|c| match c {
                Control::Run(id, _) => Some(*id),
                _ => None,
            })
            .collect();
        let answered: std::collections::HashSet<EventId> = self
            .core
            .history
            .values()
            .filter_map(|e| match e.body {
                EventBody::Observation(_) => e.cause,
                _ => None,
            })
            .collect();
        let cut_off: Vec<Event> = self
            .core
            .history
            .values()
            .filter(|e| !answered.contains(&e.id) && !unseen_runs.contains(&e.id))
            // Actions that waited for confirmation are answered through their re-added copy.
            .filter(|e| confirmation_of(e) != Some(ConfirmationState::AwaitingConfirmation))
            // Any terminal command, and the agent's tool actions that get an observation.
            .filter(|e| match (&e.body, e.source) {
                (EventBody::Action(Action::Run(_)), _) => true,
                (
                    EventBody::Action(Action::Read(_) | Action::Edit(_) | Action::Think(_)),
                    source,
                ) => source == Source::Agent,
                _ => false,
            })
            .cloned()
            .collect();
        // Actions an agent started and could not finish are answered, not run again.
        for action in cut_off {
            let mut observation = NewEvent::observation(
                action.source,
                Some(action.id),
                Observation::error(
                    "The server stopped while this action was running, so it did not finish.",
                    CUT_OFF_ERROR,
                ),
            );
            observation.tool_call_metadata = action.tool_call_metadata.clone();
            self.core.append(observation).await?;
        }
        let last_state_id = self
            .core
            .history
            .values()
            .filter(|e| e.agent_state().is_some())
            .map(|e| e.id)
            .next_back();
        let waiting_message = self.core.history.values().any(|e| {
            e.source == Source::User
                && matches!(e.body, EventBody::Action(Action::Message(_)))
                && last_state_id.is_none_or(|s| e.id > s)
        });
        // Always recorded, even though the agent starts in this state: clients learn from it
        // that the agent is (re)starting.
        self.core
            .append(NewEvent::observation(
                Source::Environment,
                None,
                Observation::agent_state_changed(AgentState::Loading, ""),
            ))
            .await?;
        let has_system = self
            .core
            .history
            .values()
            .any(|e| matches!(e.body, EventBody::Action(Action::System(_))));
        if !has_system {
            let system = Action::System(SystemArgs {
                content: self.system_prompt(),
                tools: serde_json::to_value(tool_specs()).unwrap_or_default(),
                openhands_version: VERSION.to_owned(),
                agent_class: "CodeActAgent".to_owned(),
            });
            self.core
                .append(NewEvent::action(Source::Agent, system))
                .await?;
        }
        self.core.queue.extend(unseen);
        if waiting_message {
            self.core.queue.push_back(Control::Message);
        }
        // A cloned repository is set up before anything is handled.
        self.set_up_repository().await?;
        // An action that waited for confirmation when the server stopped waits again.
        self.awaiting = still_awaiting(&self.core.history);
        let state = if self.awaiting.is_some() {
            AgentState::AwaitingUserConfirmation
        } else {
            AgentState::AwaitingUserInput
        };
        self.core.set_state(state, "").await?;
        Ok(())
    }

    /// Runs the repository's `.openhands/setup.sh` in the sandbox, once per conversation, before
    /// any message is handled; its output is stored as a `run` observation.
    async fn set_up_repository(&mut self) -> Result<(), AgentFailure> {
        let Some(repo) = self.core.ctx.repository.clone() else {
            return Ok(());
        };
        let Some(folder) = std::path::Path::new(&repo.directory).file_name() else {
            return Ok(());
        };
        // Checked through the workspace's handle: a link the repository planted is not followed.
        let root = self.core.ctx.sandbox.agent_root(&self.core.ctx.workspace);
        let present = Workspace::new(self.core.ctx.workspace.clone(), root)
            .ok()
            .and_then(|w| {
                w.open_read(&std::path::Path::new(folder).join(".openhands/setup.sh"))
                    .ok()
            })
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.is_file());
        let done = self.core.history.values().any(|e| {
            e.source == Source::Environment
                && matches!(&e.body, EventBody::Action(Action::Run(r)) if r.command.contains(".openhands/setup.sh"))
        });
        if !present || done {
            return Ok(());
        }
        let command = format!(
            "cd {} && bash .openhands/setup.sh",
            shell_quote(&repo.directory)
        );
        let action = self
            .core
            .append(NewEvent::action(
                Source::Environment,
                Action::Run(RunArgs::new(command.clone())),
            ))
            .await?;
        let observation = match self
            .execute_command(&command, false, Some(Duration::from_secs(600)))
            .await?
        {
            Ok(result) => run_observation(&command, result),
            Err(Interrupt::ByUser(_)) => {
                Observation::error("The set-up script was interrupted.", STOPPED_ERROR)
            }
            Err(Interrupt::Runtime(message)) => Observation::error(message, ""),
        };
        self.core
            .append(NewEvent::observation(
                Source::Environment,
                Some(action.id),
                observation,
            ))
            .await?;
        Ok(())
    }

    /// Asks the model, beside the task, for a short title once the first message is in, unless
    /// the conversation already has a title of its own.
    fn name_conversation(&self) {
        let Ok(llm) = self.settings.llm.clone() else {
            return;
        };
        let Some(first) = self
            .core
            .history
            .values()
            .find_map(|e| match (&e.body, e.source) {
                (EventBody::Action(Action::Message(m)), Source::User) => Some(m.content.clone()),
                _ => None,
            })
        else {
            return;
        };
        let log = self.core.ctx.log.clone();
        let conversation = self.core.ctx.conversation.clone();
        tokio::spawn(async move {
            match log.store().get_conversation(&conversation).await {
                Ok(Some(record))
                    if record.title
                        == ohd_store::ConversationRecord::default_title(&conversation) => {}
                _ => return,
            }
            let request = CompletionRequest {
                messages: vec![
                    ohd_llm::Message::system(
                        "You name conversations. Answer with a title of at most six words for the conversation that starts with the user's message: no quotes, no punctuation at the end, nothing else.",
                    ),
                    ohd_llm::Message::user(first.chars().take(2000).collect::<String>()),
                ],
                tools: Vec::new(),
                max_tokens: Some(32),
                temperature: None,
            };
            match llm.complete(&request, &()).await {
                Ok(answer) => {
                    let title: String = answer
                        .text
                        .trim()
                        .trim_matches(['"', '\'', '.'])
                        .chars()
                        .take(100)
                        .collect();
                    if !title.is_empty()
                        && let Err(e) = log.rename(&conversation, &title).await
                    {
                        tracing::warn!(%conversation, error = %e, "title not saved");
                    }
                }
                Err(e) => tracing::debug!(%conversation, error = %e, "no title from the model"),
            }
        });
    }

    fn system_prompt(&self) -> String {
        let root = self.core.ctx.sandbox.agent_root(&self.core.ctx.workspace);
        let mut prompt = prompt::system_prompt(
            &root.display().to_string(),
            self.core.ctx.sandbox.is_sandboxed(),
        );
        if !self.core.ctx.secret_names.is_empty() {
            prompt.push_str(
                "\n\nThe user's secrets are in the shell's environment; use them by name (for example \"$NAME\"), never print them:",
            );
            for (name, description) in &self.core.ctx.secret_names {
                prompt.push_str(&format!("\n- {name}"));
                if !description.is_empty() {
                    prompt.push_str(&format!(": {description}"));
                }
            }
        }
        prompt
    }

    /// The agent's life: take controls, run steps, until cancelled or the store fails.
    pub async fn run(mut self) {
        if let Err(e) = self.main_loop().await {
            tracing::error!(conversation = %self.core.ctx.conversation, error = %e, "agent stopped");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shell.close().await;
        }
    }

    async fn main_loop(&mut self) -> Result<(), AgentFailure> {
        loop {
            if self.core.state == AgentState::Running {
                if let Some(end) = self.take_place().await? {
                    self.after_step(end).await?;
                    continue;
                }
                let end = self.step().await?;
                self.after_step(end).await?;
                continue;
            }
            // Not at work: the place goes to an agent that waits for one.
            self.place = None;
            let control = match self.core.queue.pop_front() {
                Some(control) => control,
                None => {
                    // Each event that arrives starts the idle wait over.
                    let idle = self.settings.idle_timeout.unwrap_or(Duration::MAX);
                    let followed = tokio::select! {
                        _ = self.cancel.cancelled() => return Ok(()),
                        followed = self.follower.next() => followed?,
                        _ = tokio::time::sleep(idle), if self.settings.idle_timeout.is_some() => {
                            if self.core.ctx.presence.try_release() {
                                tracing::info!(conversation = %self.core.ctx.conversation, "agent idle: released");
                                return Ok(());
                            }
                            continue;
                        }
                    };
                    self.core.ctx.presence.settle();
                    match self.core.absorb(followed)? {
                        Some(control) => control,
                        None => continue,
                    }
                }
            };
            self.on_control_idle(control).await?;
        }
    }

    async fn on_control_idle(&mut self, control: Control) -> Result<(), AgentFailure> {
        let awaiting = self.core.state == AgentState::AwaitingUserConfirmation;
        match control {
            Control::Message => {
                if awaiting {
                    // A new message instead of an answer: the waiting action does not run.
                    self.resolve_confirmation(
                        false,
                        "The user sent a new message instead of confirming this action, so it was not run.",
                    )
                    .await?;
                }
                if self.settings.llm.is_err() {
                    self.take_latest_settings();
                }
                if let Err(how_to) = &self.settings.llm {
                    let how_to = how_to.clone();
                    self.core
                        .append(NewEvent::observation(
                            Source::Environment,
                            None,
                            Observation::error(how_to.clone(), "STATUS$ERROR_LLM_NOT_CONFIGURED"),
                        ))
                        .await?;
                    self.core.notify(&StatusUpdate::error(
                        "STATUS$ERROR_LLM_NOT_CONFIGURED",
                        how_to.clone(),
                    ));
                    self.core.set_state(AgentState::Error, &how_to).await?;
                    return Ok(());
                }
                if let Some(note) = &self.settings.budget_note
                    && !self.budget_said
                {
                    self.budget_said = true;
                    self.core
                        .notify(&StatusUpdate::info("STATUS$BUDGET_UNKNOWN", note.clone()));
                }
                // The limit counts steps per user message.
                self.iterations = 0;
                self.pending.clear();
                self.recall().await?;
                if !self.titled {
                    self.titled = true;
                    self.name_conversation();
                }
                self.core.set_state(AgentState::Running, "").await?;
            }
            Control::State(AgentState::UserConfirmed) if awaiting => {
                self.resolve_confirmation(true, "").await?
            }
            Control::State(AgentState::UserRejected) if awaiting => {
                self.resolve_confirmation(false, REJECTED).await?
            }
            Control::State(AgentState::Stopped) => {
                if let Some(waiting) = self.awaiting.take() {
                    let mut answer = NewEvent::observation(
                        Source::Agent,
                        Some(waiting.event.id),
                        Observation::error(
                            "Stop button pressed. The action has not been executed.",
                            STOPPED_ERROR,
                        ),
                    );
                    answer.tool_call_metadata = waiting.event.tool_call_metadata.clone();
                    self.core.append(answer).await?;
                }
                self.pending.clear();
                self.core.set_state(AgentState::Stopped, "").await?
            }
            // Waiting for a confirmation is not something to pause or resume.
            Control::State(_) if awaiting => {}
            Control::State(AgentState::Paused) => {
                self.core.set_state(AgentState::Paused, "").await?
            }
            Control::State(AgentState::Running) => {
                if matches!(
                    self.core.state,
                    AgentState::Paused | AgentState::Stopped | AgentState::Error
                ) && self.settings.llm.is_ok()
                {
                    if self.core.state == AgentState::Error {
                        self.iterations = 0;
                    }
                    self.core.set_state(AgentState::Running, "").await?;
                }
            }
            Control::State(_) => {}
            Control::Run(id, run) => self.run_for_user(id, run).await?,
        }
        Ok(())
    }

    /// What the microagents say about the user's newest message, told to the model as the
    /// original's `recall` action (source user) and observation: the repository's instructions
    /// with the first message, and each knowledge microagent once, when a message names one of
    /// its trigger words. Nothing is stored when they have nothing to say.
    async fn recall(&mut self) -> Result<(), AgentFailure> {
        let history = &self.core.history;
        let Some(text) = history
            .values()
            .rev()
            .find_map(|e| match (&e.body, e.source) {
                (EventBody::Action(Action::Message(m)), Source::User) => Some(m.content.clone()),
                _ => None,
            })
        else {
            return Ok(());
        };
        let first = !history
            .values()
            .any(|e| matches!(e.body, EventBody::Observation(Observation::Recall { .. })));
        let already: Vec<String> = history
            .values()
            .filter_map(|e| match &e.body {
                EventBody::Observation(Observation::Recall { extras, .. }) => {
                    Some(extras.microagent_knowledge.iter().map(|k| k.name.clone()))
                }
                _ => None,
            })
            .flatten()
            .collect();
        let root = self.core.ctx.sandbox.agent_root(&self.core.ctx.workspace);
        let Ok(workspace) = Workspace::new(self.core.ctx.workspace.clone(), root.clone()) else {
            return Ok(());
        };
        // A cloned repository's microagents are in its folder.
        let base = self
            .core
            .ctx
            .repository
            .as_ref()
            .and_then(|r| {
                std::path::Path::new(&r.directory)
                    .file_name()
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let found =
            crate::microagents::load(&workspace, &base, self.settings.user_microagents.as_deref());
        let knowledge: Vec<ohd_protocol::observation::MicroagentKnowledge> = found
            .triggered(&text, &already)
            .into_iter()
            .map(
                |(k, trigger)| ohd_protocol::observation::MicroagentKnowledge {
                    name: k.name.clone(),
                    trigger: trigger.to_owned(),
                    content: k.content.clone(),
                },
            )
            .collect();
        let instructions = if first {
            found.repo_instructions()
        } else {
            String::new()
        };
        if instructions.is_empty()
            && knowledge.is_empty()
            && !(first && self.core.ctx.repository.is_some())
        {
            return Ok(());
        }
        let recall_type = if first {
            "workspace_context"
        } else {
            "knowledge"
        };
        let action = self
            .core
            .append(NewEvent::action(
                Source::User,
                Action::Recall(ohd_protocol::action::RecallArgs {
                    recall_type: recall_type.to_owned(),
                    query: text,
                    thought: String::new(),
                }),
            ))
            .await?;
        let mut extras = ohd_protocol::observation::RecallExtras {
            recall_type: recall_type.to_owned(),
            microagent_knowledge: knowledge,
            ..Default::default()
        };
        if first {
            if let Some(repo) = &self.core.ctx.repository {
                extras.repo_name = repo.name.clone();
                extras.repo_directory = repo.directory.clone();
                extras.repo_branch = repo.branch.clone();
            }
            extras.repo_instructions = instructions;
            extras.working_dir = root.display().to_string();
            extras.date = ohd_protocol::Timestamp::now()
                .to_string()
                .chars()
                .take(10)
                .collect();
            extras.custom_secrets_descriptions =
                self.core.ctx.secret_names.iter().cloned().collect();
        }
        let content = if first {
            "Added workspace context"
        } else {
            "Retrieved knowledge from microagents"
        };
        self.core
            .append(NewEvent::observation(
                Source::Environment,
                Some(action.id),
                Observation::Recall {
                    content: content.to_owned(),
                    extras,
                },
            ))
            .await?;
        Ok(())
    }

    /// The user's answer to the waiting action: it is stored again with its new confirmation
    /// state (as the original does), then run, or answered with `why` as a rejection.
    async fn resolve_confirmation(
        &mut self,
        confirmed: bool,
        why: &str,
    ) -> Result<(), AgentFailure> {
        let Some(Awaiting { action, event }) = self.awaiting.take() else {
            return Ok(());
        };
        let EventBody::Action(mut body) = event.body.clone() else {
            return Ok(());
        };
        set_confirmation(
            &mut body,
            if confirmed {
                ConfirmationState::Confirmed
            } else {
                ConfirmationState::Rejected
            },
        );
        let mut again = NewEvent::action(Source::Agent, body);
        again.tool_call_metadata = event.tool_call_metadata.clone();
        again.llm_metrics = event.llm_metrics.clone();
        again.timeout = event.timeout;
        let again = self.core.append(again).await?;
        let Some(meta) = event.tool_call_metadata.clone() else {
            return Ok(());
        };
        if confirmed {
            self.core.set_state(AgentState::UserConfirmed, "").await?;
            let end = self.execute(action, &again, meta).await?;
            if matches!(end, StepEnd::Continue) {
                self.core.set_state(AgentState::Running, "").await?;
            }
            return self.after_step(end).await;
        }
        self.pending.clear();
        self.core.set_state(AgentState::UserRejected, "").await?;
        let mut answer = NewEvent::observation(
            Source::Agent,
            Some(again.id),
            Observation::UserRejected {
                content: why.to_owned(),
                extras: Default::default(),
            },
        );
        answer.tool_call_metadata = Some(meta);
        self.core.append(answer).await?;
        self.core
            .set_state(AgentState::AwaitingUserInput, "")
            .await?;
        Ok(())
    }

    async fn after_step(&mut self, end: StepEnd) -> Result<(), AgentFailure> {
        let outcome = match &end {
            StepEnd::Continue => "continue",
            StepEnd::AwaitUser => "await_user",
            StepEnd::AwaitConfirmation => "awaiting_confirmation",
            StepEnd::Finished => "finished",
            StepEnd::Interrupted(_) => "interrupted",
            StepEnd::Failed { status_id, .. } => {
                ohd_metrics::metrics().error(status_id);
                "failed"
            }
        };
        ohd_metrics::metrics()
            .agent_steps
            .get_or_create(&ohd_metrics::Outcome { outcome })
            .inc();
        if !matches!(end, StepEnd::Continue | StepEnd::AwaitConfirmation) {
            self.pending.clear();
        }
        match end {
            StepEnd::Continue => {
                // Commands the user sent while the agent worked run between steps.
                while let Some(pos) = self
                    .core
                    .queue
                    .iter()
                    .position(|c| matches!(c, Control::Run(..)))
                {
                    if let Some(Control::Run(id, run)) = self.core.queue.remove(pos) {
                        self.run_for_user(id, run).await?;
                    }
                }
            }
            StepEnd::AwaitConfirmation => {}
            StepEnd::AwaitUser => {
                self.core
                    .set_state(AgentState::AwaitingUserInput, "")
                    .await?
            }
            StepEnd::Finished => self.core.set_state(AgentState::Finished, "").await?,
            StepEnd::Interrupted(state) => self.core.set_state(state, "").await?,
            StepEnd::Failed { status_id, reason } => {
                tracing::warn!(conversation = %self.core.ctx.conversation, status = %status_id, %reason, "the agent stopped with an error");
                self.core
                    .notify(&StatusUpdate::error(&status_id, reason.clone()));
                self.core.set_state(AgentState::Error, &reason).await?;
            }
        }
        Ok(())
    }

    async fn runtime(&mut self) -> Result<&mut Runtime, String> {
        if self.runtime.is_none() {
            let sandbox = self.core.ctx.sandbox.clone();
            let mut env = self
                .core
                .ctx
                .env
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // The identity the settings give git, for commits the agent makes.
            if let Some((name, email)) = &self.settings.git_identity {
                for (var, value) in [
                    ("GIT_AUTHOR_NAME", name),
                    ("GIT_COMMITTER_NAME", name),
                    ("GIT_AUTHOR_EMAIL", email),
                    ("GIT_COMMITTER_EMAIL", email),
                ] {
                    env.push((var.to_owned(), value.clone()));
                }
            }
            let launch = sandbox.launch(
                &self.core.ctx.workspace,
                &["bash", "--noprofile", "--norc", "--noediting", "-i"],
                &env,
                true,
            );
            let mut workspace =
                Workspace::new(self.core.ctx.workspace.clone(), launch.agent_root.clone())
                    .map_err(|e| format!("The workspace cannot be opened: {e}"))?;
            // What the editor creates belongs to the sandbox's user, so commands can change it.
            if let Some((uid, gid)) = sandbox.owner_of(&self.core.ctx.workspace) {
                workspace.set_owner(uid, gid);
            }
            let shell = Shell::start(launch, self.settings.shell.clone())
                .await
                .map_err(|e| e.to_string())?;
            self.runtime = Some(Runtime {
                shell,
                editor: Editor::new(workspace),
            });
        }
        self.runtime
            .as_mut()
            .ok_or_else(|| "the runtime did not start".to_owned())
    }

    /// A place among the agents at work, waited for when all are taken (with a notice to the
    /// conversation's clients, and the REST status saying so); a stop or pause ends the wait.
    async fn take_place(&mut self) -> Result<Option<StepEnd>, AgentFailure> {
        let Some(places) = self.core.ctx.places.clone() else {
            return Ok(None);
        };
        if self.place.is_some() {
            return Ok(None);
        }
        if let Ok(place) = places.clone().try_acquire_owned() {
            self.place = Some(place);
            return Ok(None);
        }
        ohd_metrics::metrics().limit("max_running");
        let presence = self.core.ctx.presence.clone();
        presence
            .queued
            .store(true, std::sync::atomic::Ordering::Release);
        self.core.notify(&waiting_notice());
        let end = loop {
            tokio::select! {
                place = places.clone().acquire_owned() => {
                    self.place = place.ok();
                    break None;
                }
                _ = self.cancel.cancelled() => break Some(StepEnd::Interrupted(AgentState::Stopped)),
                followed = self.follower.next() => {
                    if let Some(state) = self.core.take_control(followed?) {
                        break Some(StepEnd::Interrupted(state));
                    }
                }
            }
        };
        presence
            .queued
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(end)
    }

    /// The most tokens a request may hold: the model's window (with room left for its answer)
    /// when the condenser is on, and what an overflow taught.
    fn token_bound(&self) -> Option<u64> {
        let window = self
            .settings
            .condenser
            .enabled
            .then_some(self.settings.context_window)
            .flatten()
            .map(|w| w - w / 10);
        match (window, self.overflow_bound) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Asks the model while watching for stop and pause; retries show as `rate_limited`.
    async fn ask(
        &mut self,
        llm: &Arc<dyn LlmClient>,
        request: &CompletionRequest,
    ) -> Result<Asked, AgentFailure> {
        let (notices_tx, mut notices) = mpsc::unbounded_channel();
        let observer = RetryNotices(notices_tx);
        let started = std::time::Instant::now();
        let mut shown_reason = None;
        let call = llm.complete(request, &observer);
        tokio::pin!(call);
        let answer = loop {
            tokio::select! {
                result = &mut call => break result,
                Some(retry) = notices.recv() => {
                    self.core.notify(&StatusUpdate::info("STATUS$LLM_RETRY", retry.notice));
                    // One state change per cause: the notices say each retry.
                    if shown_reason != Some(retry.state_reason) {
                        shown_reason = Some(retry.state_reason);
                        self.core.set_state(AgentState::RateLimited, retry.state_reason).await?;
                    }
                }
                _ = self.cancel.cancelled() => return Ok(Asked::Interrupted(AgentState::Stopped)),
                followed = self.follower.next() => {
                    if let Some(state) = self.core.take_control(followed?) {
                        return Ok(Asked::Interrupted(state));
                    }
                }
            }
        };
        if self.core.state == AgentState::RateLimited {
            self.core.set_state(AgentState::Running, "").await?;
        }
        record_model_call(llm.model(), started.elapsed(), &answer);
        Ok(Asked::Answer(answer))
    }

    /// The messages of the next request, condensing the history first when it is over its
    /// bounds (events, tokens) or an overflow asked for it.
    async fn prepare_messages(
        &mut self,
        system: &str,
        tools_tokens: u64,
        llm: &Arc<dyn LlmClient>,
    ) -> Result<Result<Vec<ohd_llm::Message>, StepEnd>, AgentFailure> {
        let settings = self.settings.condenser;
        loop {
            let bound = self.token_bound();
            let (messages, plan, tokens) = {
                let view = condenser::view(&self.core.history);
                let messages = prompt::build(system, &view.items, self.settings.vision);
                let tokens = condenser::messages_tokens(&messages) + tools_tokens;
                let too_many = settings.enabled && view.items.len() > settings.max_size;
                let too_big = bound.is_some_and(|b| tokens > b);
                if !(too_many || too_big || view.unhandled_request) {
                    return Ok(Ok(messages));
                }
                let mut max_tokens = bound
                    .map(|b| b.saturating_sub(tools_tokens))
                    .unwrap_or(u64::MAX);
                if view.unhandled_request && !too_big {
                    max_tokens = max_tokens.min(tokens);
                }
                let max_events = if too_many {
                    settings.max_size
                } else {
                    usize::MAX
                };
                let plan = condenser::plan(&view, settings.keep_first, max_events, max_tokens);
                (messages, plan.map_err(|_| too_big), tokens)
            };
            match plan {
                Ok(plan) => {
                    if let Some(end) = self.condense(plan, llm).await? {
                        return Ok(Err(end));
                    }
                }
                Err(true) => {
                    return Ok(Err(StepEnd::Failed {
                        status_id: "STATUS$ERROR".into(),
                        reason: context_too_small(tokens, bound),
                    }));
                }
                // Nothing to forget, and nothing says the request is too big: send it.
                Err(false) => return Ok(Ok(messages)),
            }
        }
    }

    /// Forgets what `plan` says, with a summary the model writes (a plain list when it
    /// cannot), stored as a `condensation` action.
    async fn condense(
        &mut self,
        plan: condenser::Plan,
        llm: &Arc<dyn LlmClient>,
    ) -> Result<Option<StepEnd>, AgentFailure> {
        let summarizer = self
            .settings
            .condenser_llm
            .clone()
            .unwrap_or_else(|| llm.clone());
        // The summary request must fit too: at most about two thirds of the bound.
        let max_chars = self
            .token_bound()
            .map(|b| usize::try_from(b).unwrap_or(usize::MAX).saturating_mul(2))
            .unwrap_or(400_000)
            .clamp(8_000, 400_000);
        let request = CompletionRequest {
            messages: condenser::summary_request(&self.core.history, &plan, max_chars),
            tools: Vec::new(),
            max_tokens: Some(4096),
            temperature: None,
        };
        let summary = match self.ask(&summarizer, &request).await? {
            Asked::Interrupted(state) => return Ok(Some(StepEnd::Interrupted(state))),
            Asked::Answer(Ok(completion)) => {
                self.metrics.record(&completion);
                if completion.text.trim().is_empty() {
                    condenser::plain_summary(&self.core.history, &plan, "it answered nothing")
                } else {
                    completion.text
                }
            }
            Asked::Answer(Err(e)) => {
                tracing::warn!(conversation = %self.core.ctx.conversation, error = %e, "no summary from the model");
                condenser::plain_summary(&self.core.history, &plan, &e.to_string())
            }
        };
        let args = CondensationArgs {
            forgotten_event_ids: None,
            forgotten_events_start_id: Some(plan.start.0),
            forgotten_events_end_id: Some(plan.end.0),
            summary: Some(summary),
            summary_offset: Some(plan.summary_offset),
        };
        let mut event = NewEvent::action(Source::Agent, Action::Condensation(args));
        event.llm_metrics = Core::llm_metrics(&self.metrics);
        self.core.append(event).await?;
        Ok(None)
    }

    /// One model call and the actions it asks for; or, while calls of the last answer are
    /// left, the next of them.
    async fn step(&mut self) -> Result<StepEnd, AgentFailure> {
        if !self.pending.is_empty() {
            return self.perform_pending().await;
        }
        let llm = match &self.settings.llm {
            Ok(llm) => llm.clone(),
            Err(how_to) => {
                return Ok(StepEnd::Failed {
                    status_id: "STATUS$ERROR_LLM_NOT_CONFIGURED".into(),
                    reason: how_to.clone(),
                });
            }
        };
        if self.settings.stuck_detection
            && let Some(reason) = stuck::detect(&self.core.history)
        {
            return Ok(StepEnd::Failed {
                status_id: "STATUS$ERROR".into(),
                reason: format!(
                    "AgentStuckInLoopError: {reason} Send a new message to start afresh."
                ),
            });
        }
        if self.iterations >= self.settings.max_iterations {
            return Ok(StepEnd::Failed {
                status_id: "STATUS$ERROR".into(),
                reason: format!(
                    "RuntimeError: Agent reached maximum iteration. Current iteration: {}, max iteration: {}",
                    self.iterations, self.settings.max_iterations
                ),
            });
        }
        if let Some(budget) = self.settings.max_budget {
            let spent = self.metrics.accumulated_cost;
            if spent >= budget {
                return Ok(StepEnd::Failed {
                    status_id: "STATUS$ERROR".into(),
                    reason: format!(
                        "RuntimeError: Agent reached maximum budget for conversation. Current budget: {spent:.2}, max budget: {budget:.2}"
                    ),
                });
            }
        }
        self.iterations += 1;
        let system = self.system_prompt();
        if let Some(state) = self.connect_mcp().await? {
            return Ok(StepEnd::Interrupted(state));
        }
        let mut tools = tool_specs();
        if let Some(hub) = &self.mcp {
            tools.extend(hub.tools().iter().map(|t| ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            }));
        }
        let tools_tokens = tools
            .iter()
            .map(|t| {
                condenser::estimate_tokens(
                    t.name.len() + t.description.len() + t.parameters.to_string().len(),
                )
            })
            .sum();
        let mut overflows = 0;
        let completion = loop {
            let messages = match self.prepare_messages(&system, tools_tokens, &llm).await? {
                Ok(messages) => messages,
                Err(end) => return Ok(end),
            };
            let request = CompletionRequest {
                messages,
                tools: tools.clone(),
                max_tokens: None,
                temperature: None,
            };
            match self.ask(&llm, &request).await? {
                Asked::Interrupted(state) => return Ok(StepEnd::Interrupted(state)),
                Asked::Answer(Err(LlmError::ContextWindowExceeded(message)))
                    if overflows < MAX_OVERFLOW_RETRIES =>
                {
                    // The provider's window is smaller than this request: condense to half
                    // of it, and ask again.
                    overflows += 1;
                    let sent = condenser::messages_tokens(&request.messages) + tools_tokens;
                    let half = (sent / 2).max(1);
                    self.overflow_bound = Some(self.overflow_bound.map_or(half, |b| b.min(half)));
                    tracing::info!(conversation = %self.core.ctx.conversation, %message, "context window exceeded; condensing");
                    self.core
                        .append(NewEvent::action(
                            Source::Agent,
                            Action::CondensationRequest(CondensationRequestArgs {}),
                        ))
                        .await?;
                }
                Asked::Answer(Err(LlmError::ContextWindowExceeded(_))) => {
                    return Ok(StepEnd::Failed {
                        status_id: "STATUS$ERROR".into(),
                        reason: context_too_small(
                            condenser::messages_tokens(&request.messages) + tools_tokens,
                            self.overflow_bound,
                        ),
                    });
                }
                Asked::Answer(answer) => break answer,
            }
        };
        let completion = match completion {
            Ok(c) => c,
            Err(e) => {
                return Ok(StepEnd::Failed {
                    status_id: e.status_id().to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        self.metrics.record(&completion);
        self.act(completion).await
    }

    async fn act(&mut self, completion: Completion) -> Result<StepEnd, AgentFailure> {
        let metrics = Core::llm_metrics(&self.metrics);
        if completion.tool_calls.is_empty() {
            let mut message = MessageArgs::user(completion.text.clone());
            message.wait_for_response = true;
            message.reasoning_content = completion.reasoning.clone();
            let mut event = NewEvent::action(Source::Agent, Action::Message(message));
            event.llm_metrics = metrics;
            self.core.append(event).await?;
            return Ok(StepEnd::AwaitUser);
        }
        let total = completion.tool_calls.len() as u32;
        let thought = match &completion.reasoning {
            Some(reasoning) if completion.text.trim().is_empty() => reasoning.clone(),
            _ => completion.text.clone(),
        };
        for (index, call) in completion.tool_calls.iter().enumerate() {
            let is_mcp = self.mcp.as_ref().is_some_and(|hub| hub.offers(&call.name));
            let parsed = if is_mcp {
                tools::parse_mcp(&call.name, &call.arguments)
            } else {
                tools::parse(&call.name, &call.arguments)
            };
            self.pending.push_back(PendingCall {
                parsed: parsed.map_err(|e| e.0),
                // The answer's text goes with its first call only; a model that wrote no
                // text but reasoned shows its reasoning there, where clients show a thought.
                thought: if index == 0 {
                    thought.clone()
                } else {
                    String::new()
                },
                meta: ToolCallMetadata {
                    function_name: call.name.clone(),
                    tool_call_id: call.id.clone(),
                    model_response: completion.model_response.clone(),
                    total_calls_in_response: total,
                },
                metrics: metrics.clone(),
            });
        }
        self.perform_pending().await
    }

    /// Performs the calls left of the model's answer until one ends the step.
    async fn perform_pending(&mut self) -> Result<StepEnd, AgentFailure> {
        while let Some(call) = self.pending.pop_front() {
            let end = match call.parsed {
                Err(message) => {
                    let mut observation =
                        NewEvent::observation(Source::Agent, None, Observation::error(message, ""));
                    observation.tool_call_metadata = Some(call.meta);
                    self.core.append(observation).await?;
                    StepEnd::Continue
                }
                Ok(action) => {
                    self.perform(action, call.thought, call.meta, call.metrics)
                        .await?
                }
            };
            if !matches!(end, StepEnd::Continue) {
                return Ok(end);
            }
        }
        Ok(StepEnd::Continue)
    }

    /// Stores the action a call asks for and, unless it must wait for the user's
    /// confirmation, does it.
    async fn perform(
        &mut self,
        action: ToolAction,
        thought: String,
        meta: ToolCallMetadata,
        metrics: Option<Value>,
    ) -> Result<StepEnd, AgentFailure> {
        let asks = action.changes_something() && self.settings.confirmation.asks(action.risk());
        let (body, timeout) = action_body(&action, thought, asks);
        let mut event = NewEvent::action(Source::Agent, body);
        event.tool_call_metadata = Some(meta.clone());
        event.llm_metrics = metrics;
        event.timeout = timeout;
        if asks {
            // As the original: the state first, then the action that waits.
            self.core
                .set_state(AgentState::AwaitingUserConfirmation, "")
                .await?;
            let event = self.core.append(event).await?;
            self.awaiting = Some(Awaiting { action, event });
            return Ok(StepEnd::AwaitConfirmation);
        }
        let event = self.core.append(event).await?;
        self.execute(action, &event, meta).await
    }

    /// Does what a stored action asks and stores its observation.
    async fn execute(
        &mut self,
        action: ToolAction,
        stored: &Event,
        meta: ToolCallMetadata,
    ) -> Result<StepEnd, AgentFailure> {
        let answer = |observation: Observation| {
            let mut event = NewEvent::observation(Source::Agent, Some(stored.id), observation);
            event.tool_call_metadata = Some(meta.clone());
            event
        };
        match action {
            ToolAction::Think { .. } => {
                self.core
                    .append(answer(Observation::Think {
                        content: "Your thought has been logged.".into(),
                        extras: Default::default(),
                    }))
                    .await?;
                Ok(StepEnd::Continue)
            }
            ToolAction::Finish { .. } => Ok(StepEnd::Finished),
            ToolAction::Mcp { name, arguments } => {
                let content = match self.call_mcp(&name, arguments.clone()).await? {
                    Ok(content) => content,
                    Err(state) => {
                        self.core
                            .append(answer(Observation::error(
                                "Stop button pressed: the MCP tool call was abandoned.",
                                STOPPED_ERROR,
                            )))
                            .await?;
                        return Ok(StepEnd::Interrupted(state));
                    }
                };
                self.core
                    .append(answer(Observation::Mcp {
                        content,
                        extras: McpExtras { name, arguments },
                    }))
                    .await?;
                Ok(StepEnd::Continue)
            }
            ToolAction::Run {
                command,
                is_input,
                timeout,
                ..
            } => match self.execute_command(&command, is_input, timeout).await? {
                Ok(result) => {
                    self.core
                        .append(answer(run_observation(&command, result)))
                        .await?;
                    Ok(StepEnd::Continue)
                }
                Err(Interrupt::ByUser(state)) => {
                    self.core
                        .append(answer(Observation::error(
                            "Stop button pressed: the command was interrupted and its processes stopped.",
                            STOPPED_ERROR,
                        )))
                        .await?;
                    Ok(StepEnd::Interrupted(state))
                }
                Err(Interrupt::Runtime(message)) => {
                    self.core
                        .append(answer(Observation::error(message, "")))
                        .await?;
                    Ok(StepEnd::Continue)
                }
            },
            ToolAction::Editor { command, .. } => {
                let is_view = matches!(command, EditorCommand::View { .. });
                let outcome = match self.runtime().await {
                    Ok(runtime) => runtime.editor.execute(command).map_err(|e| e.0),
                    Err(e) => Err(e),
                };
                let observation = match outcome {
                    Ok(EditorOutcome::Image {
                        path,
                        media_type,
                        bytes,
                    }) => Observation::Read {
                        content: if self.settings.vision {
                            format!(
                                "data:{media_type};base64,{}",
                                base64::engine::general_purpose::STANDARD.encode(&bytes)
                            )
                        } else {
                            format!(
                                "{path} is an image ({media_type}, {} KB). This model does not take images, so it cannot be shown; describe what you need from it to the user, or inspect it with shell tools.",
                                bytes.len() / 1024
                            )
                        },
                        extras: ReadExtras {
                            path,
                            impl_source: "oh_aci".into(),
                        },
                    },
                    Ok(EditorOutcome::Viewed { path, content }) => Observation::Read {
                        content,
                        extras: ReadExtras {
                            path,
                            impl_source: "oh_aci".into(),
                        },
                    },
                    Ok(EditorOutcome::Edited {
                        path,
                        content,
                        prev_exist,
                        old_content,
                        new_content,
                        diff,
                    }) => Observation::Edit {
                        content,
                        extras: EditExtras {
                            path,
                            prev_exist,
                            old_content,
                            new_content,
                            impl_source: "oh_aci".into(),
                            diff: Some(diff),
                            diff_cache: None,
                        },
                    },
                    Err(message) if is_view => Observation::error(format!("ERROR:\n{message}"), ""),
                    Err(message) => Observation::Edit {
                        content: format!("ERROR:\n{message}"),
                        extras: EditExtras {
                            path: action_path(stored),
                            prev_exist: false,
                            old_content: None,
                            new_content: None,
                            impl_source: "oh_aci".into(),
                            diff: None,
                            diff_cache: None,
                        },
                    },
                };
                self.core.append(answer(observation)).await?;
                Ok(StepEnd::Continue)
            }
        }
    }

    /// The user's MCP servers, made ready (not yet connected) the first time they are needed.
    fn mcp_hub(&mut self) -> Option<&mut ohd_mcp::McpHub> {
        let config = self.settings.mcp.clone().filter(|c| !c.is_empty())?;
        if self.mcp.is_none() {
            let sandbox = self.core.ctx.sandbox.clone();
            let workspace = self.core.ctx.workspace.clone();
            let launcher: ohd_mcp::Launcher = Arc::new(move |argv, env| {
                let mut env = env.to_vec();
                if sandbox.is_sandboxed() {
                    // A server's caches and state stay out of the user's workspace.
                    env.push(("HOME".to_owned(), "/tmp".to_owned()));
                }
                sandbox.launch_service(&workspace, argv, &env)
            });
            let reserved: Vec<String> = tools::specs().into_iter().map(|(name, ..)| name).collect();
            let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
            self.mcp = Some(ohd_mcp::McpHub::new(
                &config,
                &reserved,
                launcher,
                self.settings.mcp_board.clone(),
            ));
        }
        self.mcp.as_mut()
    }

    /// Connects the user's MCP servers that are due (all of them, at the first step), so
    /// that their tools go to the model; a server that cannot be reached is said to the user
    /// (once while it stays so), and the agent goes on without its tools. Stop and pause
    /// interrupt it: the state the user asked for.
    async fn connect_mcp(&mut self) -> Result<Option<AgentState>, AgentFailure> {
        if self.mcp_hub().is_none() {
            return Ok(None);
        }
        let Agent {
            mcp,
            follower,
            core,
            cancel,
            ..
        } = self;
        let Some(hub) = mcp.as_mut() else {
            return Ok(None);
        };
        let failures = match unless_interrupted(hub.connect(), cancel, follower, core).await? {
            Ok(failures) => failures,
            Err(state) => return Ok(Some(state)),
        };
        for failure in failures {
            let failure = core.secrets.scrub_text(&failure);
            core.notify(&StatusUpdate::info("STATUS$MCP_UNAVAILABLE", failure));
        }
        Ok(None)
    }

    /// Calls an MCP tool while watching for stop and pause: the tool's result (the original's
    /// `mcp` observation content), or the state the user asked for.
    async fn call_mcp(
        &mut self,
        name: &str,
        arguments: Value,
    ) -> Result<Result<String, AgentState>, AgentFailure> {
        // After a restart (a confirmed call waiting from before it), the servers come first.
        if self.mcp.is_none()
            && let Some(state) = self.connect_mcp().await?
        {
            return Ok(Err(state));
        }
        let Agent {
            mcp,
            follower,
            core,
            cancel,
            ..
        } = self;
        let Some(hub) = mcp.as_mut() else {
            return Ok(Ok(serde_json::json!({"isError": true, "error": "no MCP server is configured", "content": []}).to_string()));
        };
        let outcome =
            match unless_interrupted(hub.call(name, arguments), cancel, follower, core).await? {
                Ok(outcome) => outcome,
                Err(state) => return Ok(Err(state)),
            };
        ohd_metrics::metrics()
            .mcp_calls
            .get_or_create(&ohd_metrics::Outcome {
                outcome: if outcome.failure.is_some() {
                    "error"
                } else {
                    "ok"
                },
            })
            .inc();
        if let Some(failure) = &outcome.failure {
            let failure = core.secrets.scrub_text(failure);
            core.notify(&StatusUpdate::info("STATUS$MCP_TOOL_FAILED", failure));
        }
        Ok(Ok(outcome.content))
    }

    /// Runs a command in the shell while watching for stop and pause.
    async fn execute_command(
        &mut self,
        command: &str,
        is_input: bool,
        timeout: Option<Duration>,
    ) -> Result<Result<CommandResult, Interrupt>, AgentFailure> {
        let started = std::time::Instant::now();
        let result = self.run_in_shell(command, is_input, timeout).await?;
        let exit = match &result {
            Ok(r) if r.still_running => "still_running",
            Ok(r) if r.exit_code == 0 => "0",
            Ok(r) if r.exit_code == -1 => "interrupted",
            Ok(_) => "nonzero",
            Err(Interrupt::ByUser(_)) => "stopped",
            Err(Interrupt::Runtime(_)) => "error",
        };
        let figures = ohd_metrics::metrics();
        figures
            .commands
            .get_or_create(&ohd_metrics::Exit { exit })
            .inc();
        figures
            .command_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(result)
    }

    async fn run_in_shell(
        &mut self,
        command: &str,
        is_input: bool,
        timeout: Option<Duration>,
    ) -> Result<Result<CommandResult, Interrupt>, AgentFailure> {
        if let Err(message) = self.runtime().await {
            return Ok(Err(Interrupt::Runtime(message)));
        }
        let Agent {
            runtime,
            follower,
            core,
            cancel,
            ..
        } = self;
        let Some(runtime) = runtime.as_mut() else {
            return Ok(Err(Interrupt::Runtime("the runtime did not start".into())));
        };
        let run = async {
            if is_input {
                runtime.shell.send_input(command).await
            } else {
                runtime.shell.run(command, timeout).await
            }
        };
        let interrupted = match unless_interrupted(run, cancel, follower, core).await? {
            Ok(result) => return Ok(result.map_err(|e| Interrupt::Runtime(e.to_string()))),
            Err(state) => state,
        };
        // The command's future is gone; stop what it started.
        if let Err(e) = runtime.shell.interrupt().await {
            tracing::warn!(error = %e, "interrupt failed");
        }
        Ok(Err(Interrupt::ByUser(interrupted)))
    }

    /// A terminal command the user sent: run in the same shell, answered with source `user`.
    async fn run_for_user(&mut self, id: EventId, run: RunArgs) -> Result<(), AgentFailure> {
        let observation = match self
            .execute_command(&run.command, run.is_input, None)
            .await?
        {
            Ok(result) => run_observation(&run.command, result),
            Err(Interrupt::ByUser(_)) => {
                Observation::error("The command was interrupted.", STOPPED_ERROR)
            }
            Err(Interrupt::Runtime(message)) => Observation::error(message, ""),
        };
        let mut event = NewEvent::observation(Source::User, Some(id), observation);
        if let EventBody::Observation(Observation::Run { extras, .. }) = &mut event.body {
            extras.hidden = run.hidden;
        }
        self.core.append(event).await?;
        Ok(())
    }
}

/// Awaits `work` while watching for stop and pause: its output, or the state the user asked
/// for (the work is then dropped). A stop or pause already waiting comes first, before `work`
/// is first polled: a command typed and interrupted in the same instant could start after its
/// C-c and outlive the stop.
async fn unless_interrupted<T>(
    work: impl std::future::Future<Output = T>,
    cancel: &CancellationToken,
    follower: &mut Follower,
    core: &mut Core,
) -> Result<Result<T, AgentState>, AgentFailure> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(Err(AgentState::Stopped)),
            followed = follower.next() => {
                if let Some(state) = core.take_control(followed?) {
                    return Ok(Err(state));
                }
            }
            output = &mut work => return Ok(Ok(output)),
        }
    }
}

enum Interrupt {
    ByUser(AgentState),
    Runtime(String),
}

/// A model request in the figures: by model and outcome, its time, tokens and cost.
fn record_model_call(model: &str, took: Duration, answer: &Result<Completion, LlmError>) {
    let figures = ohd_metrics::metrics();
    let model = ohd_metrics::model_label(model);
    let outcome = match answer {
        Ok(_) => "ok",
        Err(e) => e.status_id(),
    };
    figures
        .llm_requests
        .get_or_create(&ohd_metrics::ModelOutcome {
            model: model.clone(),
            outcome,
        })
        .inc();
    figures
        .llm_request_seconds
        .get_or_create(&ohd_metrics::Model {
            model: model.clone(),
        })
        .observe(took.as_secs_f64());
    let Ok(completion) = answer else {
        return;
    };
    let usage = &completion.usage;
    for (kind, count) in [
        ("prompt", usage.prompt_tokens),
        ("completion", usage.completion_tokens),
        ("cache_read", usage.cache_read_tokens),
        ("cache_write", usage.cache_write_tokens),
    ] {
        figures
            .llm_tokens
            .get_or_create(&ohd_metrics::ModelTokens {
                model: model.clone(),
                kind,
            })
            .inc_by(count);
    }
    if let Some(cost) = completion.cost.filter(|c| c.is_finite() && *c > 0.0) {
        figures
            .llm_cost_microdollars
            .get_or_create(&ohd_metrics::Model { model })
            .inc_by((cost * 1e6).round() as u64);
    }
}

fn tool_specs() -> Vec<ToolSpec> {
    tools::specs()
        .into_iter()
        .map(|(name, description, parameters)| ToolSpec {
            name,
            description,
            parameters,
        })
        .collect()
}

fn run_observation(command: &str, result: CommandResult) -> Observation {
    let (content, cut) = truncate::middle(&result.output, truncate::MAX_OUTPUT_CHARS);
    let mut suffix = match &result.note {
        Some(note) => format!("\n[{note}]"),
        None => format!(
            "\n[The command completed with exit code {}.]",
            result.exit_code
        ),
    };
    if cut {
        suffix.push_str("\n[The output was long; its middle was cut.]");
    }
    Observation::Run {
        content,
        extras: RunExtras {
            command: command.to_owned(),
            metadata: RunMetadata {
                exit_code: result.exit_code,
                pid: -1,
                username: None,
                hostname: None,
                working_dir: Some(result.working_dir),
                py_interpreter_path: None,
                prefix: String::new(),
                suffix,
            },
            hidden: false,
        },
        success: result.exit_code == 0,
    }
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Said to a conversation's clients while its agent waits for a place.
pub fn waiting_notice() -> StatusUpdate {
    StatusUpdate::info(
        "STATUS$WAITING_FOR_AGENT",
        "As many agents as this server runs at once are at work ([agent] max_running); this conversation's agent starts as soon as one of them is done.",
    )
}

/// Why the agent cannot go on when even the condensed view does not fit the model's window.
fn context_too_small(tokens: u64, bound: Option<u64>) -> String {
    let window = bound.map_or_else(String::new, |b| format!(", and the model takes about {b}"));
    format!(
        "LLMContextWindowExceedError: The conversation does not fit in the model's context window even condensed: what must be kept (the newest message, and the first message and steps of the task) comes to about {tokens} tokens with the system prompt and the tools{window}. Send a shorter message, start a new conversation, or choose a model with a larger context window."
    )
}

/// The action a call asks for, as stored; `asks` marks it as waiting for confirmation.
fn action_body(action: &ToolAction, thought: String, asks: bool) -> (Action, Option<f64>) {
    match action {
        ToolAction::Think { thought: text } => (
            Action::Think(ThinkArgs {
                thought: text.clone(),
            }),
            None,
        ),
        ToolAction::Finish {
            message,
            task_completed,
        } => (
            Action::Finish(FinishArgs {
                final_thought: message.clone(),
                task_completed: task_completed.clone(),
                outputs: Value::Object(Default::default()),
                thought,
            }),
            None,
        ),
        ToolAction::Run {
            command,
            is_input,
            timeout,
            security_risk,
        } => {
            let mut args = RunArgs::new(command.clone());
            args.is_input = *is_input;
            args.thought = thought;
            args.blocking = timeout.is_some();
            args.security_risk = *security_risk;
            if asks {
                args.confirmation_state = ConfirmationState::AwaitingConfirmation;
            }
            (Action::Run(args), timeout.map(|t| t.as_secs_f64()))
        }
        ToolAction::Editor {
            command,
            security_risk,
        } => {
            let (mut action, _) = editor_action(command, thought, *security_risk);
            if asks {
                set_confirmation(&mut action, ConfirmationState::AwaitingConfirmation);
            }
            (action, None)
        }
        ToolAction::Mcp { name, arguments } => (
            Action::Mcp(McpArgs {
                name: name.clone(),
                arguments: arguments.clone(),
                thought,
                security_risk: SECURITY_RISK_UNKNOWN,
                confirmation_state: asks.then_some(ConfirmationState::AwaitingConfirmation),
            }),
            None,
        ),
    }
}

/// Marks an action with the user's answer; a re-added action loses its thought, as in the
/// original, so clients do not show it twice.
fn set_confirmation(action: &mut Action, state: ConfirmationState) {
    match action {
        Action::Run(args) => {
            args.confirmation_state = state;
            if state != ConfirmationState::AwaitingConfirmation {
                args.thought.clear();
            }
        }
        Action::Edit(args) => {
            args.confirmation_state = Some(state);
            if state != ConfirmationState::AwaitingConfirmation {
                args.thought.clear();
            }
        }
        Action::Mcp(args) => {
            args.confirmation_state = Some(state);
            if state != ConfirmationState::AwaitingConfirmation {
                args.thought.clear();
            }
        }
        _ => {}
    }
}

/// An action's confirmation state, for the actions that have one.
fn confirmation_of(event: &Event) -> Option<ConfirmationState> {
    match &event.body {
        EventBody::Action(Action::Run(args)) => Some(args.confirmation_state),
        EventBody::Action(Action::Edit(args)) => args.confirmation_state,
        EventBody::Action(Action::Mcp(args)) => args.confirmation_state,
        _ => None,
    }
}

/// The action still waiting for the user's confirmation in `history`, if any: the last one
/// stored as waiting, neither stored again with an answer nor answered (by a stop).
fn still_awaiting(history: &BTreeMap<EventId, Event>) -> Option<Awaiting> {
    let waiting = history.values().rev().find(|e| {
        e.source == Source::Agent
            && confirmation_of(e) == Some(ConfirmationState::AwaitingConfirmation)
    })?;
    let meta = waiting.tool_call_metadata.as_ref()?;
    let resolved = history.range(waiting.id.next()..).any(|(_, e)| {
        e.cause == Some(waiting.id)
            || (matches!(e.body, EventBody::Action(_))
                && e.tool_call_metadata
                    .as_ref()
                    .is_some_and(|m| m.tool_call_id == meta.tool_call_id))
            || (e.source == Source::User && matches!(e.body, EventBody::Action(Action::Message(_))))
    });
    if resolved {
        return None;
    }
    // What to run is read back from the model's call, as it was parsed the first time.
    let arguments = meta.model_response["choices"][0]["message"]["tool_calls"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(meta.tool_call_id.as_str()))?["function"]["arguments"]
        .as_str()?
        .to_owned();
    let action = match &waiting.body {
        EventBody::Action(Action::Mcp(_)) => tools::parse_mcp(&meta.function_name, &arguments),
        _ => tools::parse(&meta.function_name, &arguments),
    }
    .ok()?;
    Some(Awaiting {
        action,
        event: waiting.clone(),
    })
}

fn editor_action(command: &EditorCommand, thought: String, security_risk: i8) -> (Action, bool) {
    let edit = |command: &str, path: &str| EditArgs {
        path: path.to_owned(),
        command: command.to_owned(),
        file_text: None,
        old_str: None,
        new_str: None,
        insert_line: None,
        content: String::new(),
        start: 1,
        end: -1,
        thought: thought.clone(),
        security_risk,
        impl_source: "oh_aci".to_owned(),
        confirmation_state: None,
    };
    match command {
        EditorCommand::View { path, view_range } => (
            Action::Read(ReadArgs {
                path: path.clone(),
                start: 0,
                end: -1,
                thought: thought.clone(),
                security_risk,
                impl_source: "oh_aci".to_owned(),
                view_range: view_range.map(|(a, b)| vec![a, b]),
            }),
            true,
        ),
        EditorCommand::Create { path, file_text } => (
            Action::Edit(EditArgs {
                file_text: Some(file_text.clone()),
                ..edit("create", path)
            }),
            false,
        ),
        EditorCommand::StrReplace {
            path,
            old_str,
            new_str,
        } => (
            Action::Edit(EditArgs {
                old_str: Some(old_str.clone()),
                new_str: Some(new_str.clone()),
                ..edit("str_replace", path)
            }),
            false,
        ),
        EditorCommand::Insert {
            path,
            insert_line,
            new_str,
        } => (
            Action::Edit(EditArgs {
                insert_line: Some(*insert_line),
                new_str: Some(new_str.clone()),
                ..edit("insert", path)
            }),
            false,
        ),
        EditorCommand::UndoEdit { path } => (Action::Edit(edit("undo_edit", path)), false),
    }
}

fn action_path(event: &Event) -> String {
    match &event.body {
        EventBody::Action(Action::Edit(e)) => e.path.clone(),
        EventBody::Action(Action::Read(r)) => r.path.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_poked_before_it_gives_up_stays_and_one_that_gave_up_is_replaced() {
        let presence = Presence::default();
        assert!(presence.poke());
        // Work came: the agent does not end, and may end at the next quiet period.
        assert!(!presence.try_release());
        assert!(presence.try_release());
        assert!(presence.is_released());
        // It gave up first: the server must start a new one.
        assert!(!presence.poke());
        // Someone is looking: it stays.
        let clients = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let watched = Presence::with_clients(clients.clone());
        assert!(!watched.try_release());
        clients.store(0, std::sync::atomic::Ordering::Release);
        assert!(watched.try_release());
    }

    #[test]
    fn without_an_analyzer_every_action_asks_and_with_llm_only_what_is_not_low() {
        let every = Confirmation {
            enabled: true,
            analyzer: None,
        };
        assert!([-1, 0, 1, 2].iter().all(|r| every.asks(*r)));
        let llm = Confirmation {
            enabled: true,
            analyzer: Some("llm".into()),
        };
        assert!(!llm.asks(0) && llm.asks(1) && llm.asks(2) && llm.asks(-1));
        assert!(!Confirmation::default().asks(2));
    }
}
