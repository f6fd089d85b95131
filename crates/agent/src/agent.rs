//! One conversation's agent: it follows the conversation's log, reacts to what the user sends,
//! asks the model what to do, does it, and records every step as events.
//!
//! States follow OpenHands (`loading` → `awaiting_user_input`; a message → `running`; `finish`
//! → `finished`; a reply without tool calls → `awaiting_user_input`; `stopped` and `paused` at
//! once; limits and failures → `error` with a reason). Everything the agent knows comes from
//! the log, so after a restart it rebuilds its history from it and goes on.

use crate::prompt;
use crate::redact::Secrets;
use crate::tools::{self, ToolAction};
use ohd_llm::{
    Completion, CompletionRequest, LlmClient, LlmError, Metrics, RetryObserver, ToolSpec,
};
use ohd_protocol::action::{
    Action, EditArgs, FinishArgs, MessageArgs, ReadArgs, RunArgs, SystemArgs, ThinkArgs,
};
use ohd_protocol::notice::StatusUpdate;
use ohd_protocol::observation::{EditExtras, ReadExtras, RunExtras, RunMetadata};
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

/// What every agent of this server shares.
pub struct AgentSettings {
    /// `None` when no model is configured; the message says how to configure one.
    pub llm: Result<Arc<dyn LlmClient>, String>,
    pub max_iterations: u32,
    pub max_budget: Option<f64>,
    pub shell: ShellOptions,
    /// Values hidden from every event (the model's key, the session key).
    pub secrets: Secrets,
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
}

/// Reports retries to the agent's loop so it can show `rate_limited`.
struct RetryNotices(mpsc::UnboundedSender<String>);

impl RetryObserver for RetryNotices {
    fn retrying(&self, attempt: u32, wait: Duration, reason: &LlmError) {
        let _ = self.0.send(format!(
            "The model's service answered {reason}; retry {attempt} in {:.1} s.",
            wait.as_secs_f64()
        ));
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
            metrics: Metrics::new(&model),
            iterations: 0,
            cancel,
            titled: false,
        };
        agent.recover().await?;
        Ok(agent)
    }

    /// Rebuilds after a start: answers actions a crash cut off, records the system prompt
    /// once, and decides whether there is work waiting.
    async fn recover(&mut self) -> Result<(), AgentFailure> {
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
            .filter(|e| !answered.contains(&e.id))
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
        // Pending user commands from before the restart are not run now: they are answered.
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
        if waiting_message {
            self.core.queue.push_back(Control::Message);
        }
        self.core
            .set_state(AgentState::AwaitingUserInput, "")
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
            let (quiet, _) = mpsc::unbounded_channel();
            match llm.complete(&request, &RetryNotices(quiet)).await {
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
        prompt::system_prompt(
            &root.display().to_string(),
            self.core.ctx.sandbox.is_sandboxed(),
        )
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
                let end = self.step().await?;
                self.after_step(end).await?;
                continue;
            }
            let control = match self.core.queue.pop_front() {
                Some(control) => control,
                None => {
                    let followed = tokio::select! {
                        _ = self.cancel.cancelled() => return Ok(()),
                        followed = self.follower.next() => followed?,
                    };
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
        match control {
            Control::Message => {
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
                // The limit counts steps per user message.
                self.iterations = 0;
                if !self.titled {
                    self.titled = true;
                    self.name_conversation();
                }
                self.core.set_state(AgentState::Running, "").await?;
            }
            Control::State(AgentState::Stopped) => {
                self.core.set_state(AgentState::Stopped, "").await?
            }
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

    async fn after_step(&mut self, end: StepEnd) -> Result<(), AgentFailure> {
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
            StepEnd::AwaitUser => {
                self.core
                    .set_state(AgentState::AwaitingUserInput, "")
                    .await?
            }
            StepEnd::Finished => self.core.set_state(AgentState::Finished, "").await?,
            StepEnd::Interrupted(state) => self.core.set_state(state, "").await?,
            StepEnd::Failed { status_id, reason } => {
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
            let env = self
                .core
                .ctx
                .env
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
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

    /// One model call and the actions it asks for.
    async fn step(&mut self) -> Result<StepEnd, AgentFailure> {
        let llm = match &self.settings.llm {
            Ok(llm) => llm.clone(),
            Err(how_to) => {
                return Ok(StepEnd::Failed {
                    status_id: "STATUS$ERROR_LLM_NOT_CONFIGURED".into(),
                    reason: how_to.clone(),
                });
            }
        };
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
        let request = CompletionRequest {
            messages: prompt::build(
                &self.system_prompt(),
                &self.core.history.values().collect::<Vec<_>>(),
            ),
            tools: tool_specs(),
            max_tokens: None,
            temperature: None,
        };
        let (notices_tx, mut notices) = mpsc::unbounded_channel();
        let observer = RetryNotices(notices_tx);
        let call = llm.complete(&request, &observer);
        tokio::pin!(call);
        let completion = loop {
            tokio::select! {
                result = &mut call => break result,
                Some(note) = notices.recv() => {
                    self.core.notify(&StatusUpdate::info("STATUS$LLM_RETRY", note));
                    self.core.set_state(AgentState::RateLimited, "").await?;
                }
                _ = self.cancel.cancelled() => return Ok(StepEnd::Interrupted(AgentState::Stopped)),
                followed = self.follower.next() => {
                    if let Some(state) = self.core.take_control(followed?) {
                        return Ok(StepEnd::Interrupted(state));
                    }
                }
            }
        };
        if self.core.state == AgentState::RateLimited {
            self.core.set_state(AgentState::Running, "").await?;
        }
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
            let mut event = NewEvent::action(Source::Agent, Action::Message(message));
            event.llm_metrics = metrics;
            self.core.append(event).await?;
            return Ok(StepEnd::AwaitUser);
        }
        let total = completion.tool_calls.len() as u32;
        for (index, call) in completion.tool_calls.iter().enumerate() {
            let meta = ToolCallMetadata {
                function_name: call.name.clone(),
                tool_call_id: call.id.clone(),
                model_response: completion.model_response.clone(),
                total_calls_in_response: total,
            };
            let thought = if index == 0 {
                completion.text.clone()
            } else {
                String::new()
            };
            let parsed = match tools::parse(&call.name, &call.arguments) {
                Ok(action) => action,
                Err(e) => {
                    let mut observation =
                        NewEvent::observation(Source::Agent, None, Observation::error(e.0, ""));
                    observation.tool_call_metadata = Some(meta);
                    self.core.append(observation).await?;
                    continue;
                }
            };
            let end = self.perform(parsed, thought, meta, metrics.clone()).await?;
            if !matches!(end, StepEnd::Continue) {
                return Ok(end);
            }
        }
        Ok(StepEnd::Continue)
    }

    async fn perform(
        &mut self,
        action: ToolAction,
        thought: String,
        meta: ToolCallMetadata,
        metrics: Option<Value>,
    ) -> Result<StepEnd, AgentFailure> {
        let new_action = |action: Action, timeout: Option<f64>| {
            let mut event = NewEvent::action(Source::Agent, action);
            event.tool_call_metadata = Some(meta.clone());
            event.llm_metrics = metrics.clone();
            event.timeout = timeout;
            event
        };
        let answer = |cause: EventId, observation: Observation| {
            let mut event = NewEvent::observation(Source::Agent, Some(cause), observation);
            event.tool_call_metadata = Some(meta.clone());
            event
        };
        match action {
            ToolAction::Think { thought: text } => {
                let action = self
                    .core
                    .append(new_action(Action::Think(ThinkArgs { thought: text }), None))
                    .await?;
                self.core
                    .append(answer(
                        action.id,
                        Observation::Think {
                            content: "Your thought has been logged.".into(),
                            extras: Default::default(),
                        },
                    ))
                    .await?;
                Ok(StepEnd::Continue)
            }
            ToolAction::Finish {
                message,
                task_completed,
            } => {
                let finish = Action::Finish(FinishArgs {
                    final_thought: message,
                    task_completed,
                    outputs: Value::Object(Default::default()),
                    thought,
                });
                self.core.append(new_action(finish, None)).await?;
                Ok(StepEnd::Finished)
            }
            ToolAction::Run {
                command,
                is_input,
                timeout,
                security_risk,
            } => {
                let mut args = RunArgs::new(command.clone());
                args.is_input = is_input;
                args.thought = thought;
                args.blocking = timeout.is_some();
                args.security_risk = security_risk;
                let action = self
                    .core
                    .append(new_action(
                        Action::Run(args),
                        timeout.map(|t| t.as_secs_f64()),
                    ))
                    .await?;
                match self.execute_command(&command, is_input, timeout).await? {
                    Ok(result) => {
                        let observation = run_observation(&command, result);
                        self.core.append(answer(action.id, observation)).await?;
                        Ok(StepEnd::Continue)
                    }
                    Err(Interrupt::ByUser(state)) => {
                        self.core
                            .append(answer(action.id, Observation::error(
                                "Stop button pressed: the command was interrupted and its processes stopped.",
                                STOPPED_ERROR,
                            )))
                            .await?;
                        Ok(StepEnd::Interrupted(state))
                    }
                    Err(Interrupt::Runtime(message)) => {
                        self.core
                            .append(answer(action.id, Observation::error(message, "")))
                            .await?;
                        Ok(StepEnd::Continue)
                    }
                }
            }
            ToolAction::Editor {
                command,
                security_risk,
            } => {
                let (event_action, is_view) = editor_action(&command, thought, security_risk);
                let action = self.core.append(new_action(event_action, None)).await?;
                let outcome = match self.runtime().await {
                    Ok(runtime) => runtime.editor.execute(command).map_err(|e| e.0),
                    Err(e) => Err(e),
                };
                let observation = match outcome {
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
                            path: action_path(&action),
                            prev_exist: false,
                            old_content: None,
                            new_content: None,
                            impl_source: "oh_aci".into(),
                            diff: None,
                            diff_cache: None,
                        },
                    },
                };
                self.core.append(answer(action.id, observation)).await?;
                Ok(StepEnd::Continue)
            }
        }
    }

    /// Runs a command in the shell while watching for stop and pause.
    async fn execute_command(
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
        let interrupted = {
            let run = async {
                if is_input {
                    runtime.shell.send_input(command).await
                } else {
                    runtime.shell.run(command, timeout).await
                }
            };
            tokio::pin!(run);
            loop {
                tokio::select! {
                    result = &mut run => {
                        return Ok(result.map_err(|e| Interrupt::Runtime(e.to_string())));
                    }
                    _ = cancel.cancelled() => break AgentState::Stopped,
                    followed = follower.next() => {
                        if let Some(state) = core.take_control(followed?) {
                            break state;
                        }
                    }
                }
            }
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

enum Interrupt {
    ByUser(AgentState),
    Runtime(String),
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
