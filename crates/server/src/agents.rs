//! The agents of the running conversations: one task each, started when a conversation is
//! created, joined or sent something, and stopped when it is deleted or the server stops.

use crate::auth::Secret;
use crate::cluster::Cluster;
use crate::config::{AgentConfig, Config, LlmConfig};
use crate::repository::{self, RepoSpec};
use crate::settings::Settings;
use crate::user_secrets::{PROVIDERS, ProviderToken, UserSecretsStore};
use ohd_agent::{Agent, AgentContext, AgentSettings, CondenserSettings, Confirmation, Presence};
use ohd_llm::{LlmClient, LlmSettings};
use ohd_protocol::ConversationId;
use ohd_runtime::sandbox::{Launch, Sandbox, SandboxConfig};
use ohd_runtime::shell::ShellOptions;
use ohd_store::EventLog;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Agents {
    enabled: bool,
    /// What agents started from now on get; running agents keep the one they started with.
    settings: RwLock<Arc<AgentSettings>>,
    llm_config: LlmConfig,
    agent_config: AgentConfig,
    session_key: Option<Secret>,
    /// Places for agents that run at once (`[agent] max_running`).
    slots: Option<Arc<Semaphore>>,
    log: EventLog,
    workspaces: PathBuf,
    running: Mutex<HashMap<ConversationId, Running>>,
    /// Tokens found in the environment at start, by provider name: used where none is saved.
    tokens: Vec<(String, String, Secret)>,
    /// Saved provider tokens and custom secrets.
    user_secrets: Arc<UserSecretsStore>,
    /// Where clones are made before they are moved into a workspace.
    staging: PathBuf,
    sandbox: Arc<SandboxDecision>,
    /// Clients joined to each conversation, kept across its agents: an agent someone is
    /// looking at is not released for being idle.
    clients: Mutex<HashMap<ConversationId, Arc<std::sync::atomic::AtomicUsize>>>,
    /// What agents last saw of each MCP server.
    mcp_board: Arc<ohd_mcp::StatusBoard>,
    /// With several nodes: the lease an agent must hold to run here.
    cluster: Option<Arc<Cluster>>,
    /// For an agent that ends to start its successor (see [`Agents::ensure`]).
    me: std::sync::Weak<Agents>,
    /// Agents stopped by the server's shutdown keep their leases, to be taken over.
    shutting_down: std::sync::atomic::AtomicBool,
}

/// The sandbox, decided once, in the background.
struct SandboxDecision {
    config: SandboxConfig,
    decided: tokio::sync::OnceCell<Arc<Sandbox>>,
}

impl SandboxDecision {
    async fn get(&self) -> Arc<Sandbox> {
        self.decided
            .get_or_init(|| async {
                let config = self.config.clone();
                let fallback = config.clone();
                match tokio::task::spawn_blocking(move || decide_sandbox(config)).await {
                    Ok(sandbox) => Arc::new(sandbox),
                    // Deciding panicked: commands fail to start rather than run unsandboxed.
                    Err(e) => {
                        tracing::error!(error = %e, "the sandbox could not be decided");
                        Arc::new(Sandbox::unusable(
                            fallback,
                            format!("the sandbox could not be decided ({e}); no command may run"),
                        ))
                    }
                }
            })
            .await
            .clone()
    }
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    env: Arc<Mutex<Vec<(String, String)>>>,
    presence: Arc<Presence>,
}

impl Running {
    /// Whether the agent is there to take work: not ended, and not ending for being idle.
    fn alive(&self) -> bool {
        !self.task.is_finished() && !self.presence.is_released()
    }
}

/// Where a conversation's agent is, for the REST status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// No agent (never started, released when idle, or stopped); a join or a message starts it.
    Stopped,
    /// Waiting for a place under `[agent] max_running`.
    Queued,
    Running,
    /// ohd runs without agents: the log is always open.
    Disabled,
}

/// The sandbox the configuration asks for.
fn sandbox_config(config: &Config) -> SandboxConfig {
    SandboxConfig {
        mode: config.sandbox.mode,
        network: config.sandbox.network,
        // The data folder first: it names this ohd's passages.
        hidden: [Some(config.data_dir.clone()), config.config_file.clone()]
            .into_iter()
            .flatten()
            .collect(),
        limits: config.sandbox.limits,
        uid_base: config.sandbox.uid_base,
        layers: config
            .sandbox
            .writable_system
            .then(|| config.sandboxes_dir()),
    }
}

/// The sandbox decided against what this machine allows. Blocking: it runs bubblewrap to find
/// out. The log says what was decided, loudly when it is weaker than a full sandbox.
fn decide_sandbox(config: SandboxConfig) -> Sandbox {
    let sandbox = Sandbox::decide(config);
    let description = sandbox.description();
    if sandbox.is_sandboxed() {
        tracing::info!(sandbox = %description, "commands are sandboxed");
    } else {
        tracing::warn!(sandbox = %description, "commands are NOT sandboxed");
    }
    for note in sandbox.notes() {
        tracing::warn!("sandbox: {note}");
    }
    sandbox
}

/// Clones the conversation's repository into its workspace if it asks for one (once: a clone
/// already there is kept), before its agent handles anything. A failure is told to the
/// conversation's clients as an error event, and the conversation goes on without it. Returns
/// the repository as the agent sees it: its name, folder and branch.
async fn prepare_repository(
    log: &EventLog,
    conversation: &ConversationId,
    workspace: &std::path::Path,
    sandbox: &Sandbox,
    tokens: Vec<(String, ProviderToken)>,
    staging: &std::path::Path,
) -> Option<ohd_agent::RepositoryInfo> {
    let record = log
        .store()
        .get_conversation(conversation)
        .await
        .ok()
        .flatten()?;
    let spec = RepoSpec {
        full_name: record
            .selected_repository
            .filter(|r| !r.trim().is_empty())?,
        provider: record
            .git_provider
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "github".to_owned()),
        branch: record.selected_branch.filter(|b| !b.trim().is_empty()),
    };
    let token = tokens
        .iter()
        .find(|(provider, _)| *provider == spec.provider)
        .map(|(_, token)| token);
    match repository::clone(
        &spec,
        token,
        workspace,
        staging,
        sandbox.owner_of(workspace),
    )
    .await
    {
        Ok(_) => Some(ohd_agent::RepositoryInfo {
            name: spec.full_name.clone(),
            directory: sandbox
                .agent_root(workspace)
                .join(spec.directory())
                .display()
                .to_string(),
            branch: spec.branch.clone().unwrap_or_default(),
        }),
        Err(why) => {
            tracing::warn!(%conversation, error = %why, "clone failed");
            let event = ohd_protocol::NewEvent::observation(
                ohd_protocol::Source::Environment,
                None,
                ohd_protocol::Observation::error(why.0.clone(), "STATUS$ERROR_REPOSITORY_CLONE"),
            );
            if let Err(e) = log.append(conversation, event).await {
                tracing::warn!(%conversation, error = %e, "clone error not stored");
            }
            log.notify(
                conversation,
                &ohd_protocol::notice::StatusUpdate::error("STATUS$ERROR_REPOSITORY_CLONE", why.0),
            );
            None
        }
    }
}

/// Which model the agents use and how to reach it: the configuration's `[llm]`, with what the
/// settings page saved (`POST /api/settings`) over it.
#[derive(Clone, Default, PartialEq)]
pub struct LlmChoice {
    pub model: Option<String>,
    pub api_key: Option<Secret>,
    pub base_url: Option<String>,
    /// `low`, `medium` or `high`.
    pub reasoning_effort: Option<String>,
}

/// The model client for `choice`, or the message an agent shows when there is none.
pub fn connect_llm(config: &LlmConfig, choice: &LlmChoice) -> Result<Arc<dyn LlmClient>, String> {
    let Some(model) = choice.model.as_deref().filter(|m| !m.trim().is_empty()) else {
        return Err(
            "No language model is configured. Choose one in Settings (no restart needed), or start ohd with LLM_MODEL and LLM_API_KEY (see ohd serve --help)."
                .to_owned(),
        );
    };
    let settings = LlmSettings {
        model: model.to_owned(),
        api_key: choice.api_key.as_ref().map(|k| k.expose().to_owned()),
        base_url: choice.base_url.clone().filter(|u| !u.trim().is_empty()),
        stream: config.stream,
        max_retries: config.max_retries,
        input_cost_per_million: config.input_cost_per_million,
        output_cost_per_million: config.output_cost_per_million,
        native_tool_calling: config.native_tool_calling,
        reasoning_effort: choice.reasoning_effort.clone(),
        thinking_budget_tokens: config.thinking_budget_tokens,
        ..LlmSettings::default()
    };
    ohd_llm::connect(&settings).map_err(|e| {
        format!("The language model cannot be used: {e}. Check the model, API key and base URL in Settings, or LLM_MODEL, LLM_API_KEY and LLM_BASE_URL ([llm] in config.toml).")
    })
}

/// What agents started now run with: the configuration, with the saved settings over it.
fn agent_settings(
    config: &LlmConfig,
    agent: &AgentConfig,
    session_key: Option<&Secret>,
    saved: &Settings,
    full: &Config,
    mcp_board: &Arc<ohd_mcp::StatusBoard>,
) -> AgentSettings {
    let choice = saved.llm_choice(full);
    let prefs = saved.agent_prefs(full);
    let llm = connect_llm(config, &choice);
    log_llm(&llm);
    let model_name = choice
        .model
        .as_deref()
        .and_then(|m| ohd_llm::ModelId::parse(m).ok())
        .map(|id| id.name);
    let priced = model_name.as_deref().is_some_and(|name| {
        ohd_llm::price_for(
            name,
            config.input_cost_per_million,
            config.output_cost_per_million,
        )
        .is_some()
    });
    let budget_note = (prefs.max_budget.is_some() && !priced && llm.is_ok()).then(|| {
        format!(
            "The budget of {:.2} USD per task cannot be kept: the price of {} is not known. Set [llm] input_cost_per_million and output_cost_per_million in config.toml to count its cost.",
            prefs.max_budget.unwrap_or_default(),
            choice.model.as_deref().unwrap_or("this model")
        )
    });
    let condenser_llm = config
        .condenser_model
        .as_ref()
        .and_then(|model| condenser_llm(config, &choice, model));
    let mcp = saved.mcp_config(full);
    AgentSettings {
        llm,
        condenser_llm,
        max_iterations: prefs.max_iterations,
        max_budget: prefs.max_budget,
        budget_note,
        context_window: config.max_input_tokens.or_else(|| {
            model_name
                .as_deref()
                .and_then(ohd_llm::known_context_window)
        }),
        vision: config.supports_images.unwrap_or_else(|| {
            model_name
                .as_deref()
                .is_some_and(ohd_llm::known_to_take_images)
        }),
        condenser: CondenserSettings {
            enabled: prefs.condenser_enabled,
            // Room for the kept head and the summary, at least.
            max_size: prefs.condenser_max_size.max(10),
            ..CondenserSettings::default()
        },
        confirmation: Confirmation {
            enabled: prefs.confirmation_mode,
            analyzer: prefs.security_analyzer,
        },
        stuck_detection: agent.stuck_detection,
        user_microagents: agent.microagents_dir.clone(),
        git_identity: prefs.git_identity,
        idle_timeout: agent.idle_timeout,
        shell: ShellOptions::default(),
        secrets: ohd_agent::Secrets::new(
            config
                .api_key
                .iter()
                .chain(choice.api_key.iter())
                .chain(config.condenser_api_key.iter())
                .chain(session_key)
                .map(|k| k.expose().to_owned())
                .chain(mcp.secrets()),
        ),
        mcp: (!mcp.is_empty()).then(|| Arc::new(mcp)),
        mcp_board: Some(mcp_board.clone()),
    }
}

/// The model that writes the condenser's summaries. It gets its own key and address when
/// `[llm] condenser_api_key` / `condenser_base_url` are set; otherwise it shares the
/// conversation model's only when both are of the same provider, so that no key is ever sent
/// to another provider.
fn condenser_llm(
    config: &LlmConfig,
    choice: &LlmChoice,
    model: &str,
) -> Option<Arc<dyn LlmClient>> {
    let provider = |m: &str| ohd_llm::ModelId::parse(m).ok().map(|id| id.provider);
    let same_provider = choice
        .model
        .as_deref()
        .is_some_and(|main| provider(main).is_some() && provider(main) == provider(model));
    let own = config.condenser_api_key.is_some() || config.condenser_base_url.is_some();
    if !same_provider && !own {
        tracing::warn!(
            model,
            "condenser model not used: it is of another provider than the conversation's model; set [llm] condenser_api_key (and condenser_base_url) for it"
        );
        return None;
    }
    let condenser_choice = if own {
        LlmChoice {
            model: Some(model.to_owned()),
            api_key: config.condenser_api_key.clone(),
            base_url: config.condenser_base_url.clone(),
            reasoning_effort: None,
        }
    } else {
        LlmChoice {
            model: Some(model.to_owned()),
            ..choice.clone()
        }
    };
    connect_llm(config, &condenser_choice)
        .map_err(|why| tracing::warn!("condenser model not used: {why}"))
        .ok()
}

fn log_llm(llm: &Result<Arc<dyn LlmClient>, String>) {
    match llm {
        Ok(client) => tracing::info!(model = client.model(), "language model configured"),
        Err(why) => tracing::warn!("{why}"),
    }
}

impl Agents {
    /// Agents as the configuration and the saved settings say.
    pub fn new(
        config: &Config,
        log: EventLog,
        saved: &Settings,
        user_secrets: Arc<UserSecretsStore>,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Self> {
        // Deciding the sandbox means running bubblewrap: done beside start-up, so the server
        // answers at once; whatever needs the sandbox waits for the decision.
        let sandbox = Arc::new(SandboxDecision {
            config: sandbox_config(config),
            decided: tokio::sync::OnceCell::new(),
        });
        let early = sandbox.clone();
        tokio::spawn(async move {
            early.get().await;
        });
        let mcp_board = Arc::new(ohd_mcp::StatusBoard::default());
        let settings = agent_settings(
            &config.llm,
            &config.agent,
            config.session_api_key.as_ref(),
            saved,
            config,
            &mcp_board,
        );
        let tokens = PROVIDERS
            .iter()
            .filter_map(|(provider, var)| {
                let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
                Some((
                    (*provider).to_owned(),
                    (*var).to_owned(),
                    Secret::new(value),
                ))
            })
            .collect();
        if !config.agent.enabled {
            tracing::info!("agent turned off: ohd stores and relays events only");
        }
        Arc::new_cyclic(|me| Agents {
            cluster,
            me: me.clone(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            enabled: config.agent.enabled,
            llm_config: config.llm.clone(),
            agent_config: config.agent.clone(),
            session_key: config.session_api_key.clone(),
            slots: config
                .agent
                .max_running
                .map(|n| Arc::new(Semaphore::new(n))),
            settings: RwLock::new(Arc::new(settings)),
            log,
            workspaces: config.workspaces_dir(),
            running: Mutex::new(HashMap::new()),
            tokens,
            sandbox,
            clients: Mutex::new(HashMap::new()),
            mcp_board,
            user_secrets,
            staging: config.staging_dir(),
        })
    }

    /// Every provider's token, saved or from the environment, for cloning.
    pub fn clone_tokens(&self) -> Vec<(String, ProviderToken)> {
        let saved = self.user_secrets.get();
        let mut tokens: Vec<(String, ProviderToken)> = saved.provider_tokens.into_iter().collect();
        for (provider, _, secret) in &self.tokens {
            if !tokens.iter().any(|(p, _)| p == provider) {
                tokens.push((
                    provider.clone(),
                    ProviderToken {
                        token: secret.clone(),
                        host: None,
                    },
                ));
            }
        }
        tokens
    }

    /// `provider_tokens_set`: each provider with a token (saved, or from the environment),
    /// with the host of a self-hosted server or null.
    pub fn providers_set(&self) -> std::collections::BTreeMap<String, Option<String>> {
        let mut set: std::collections::BTreeMap<String, Option<String>> = self
            .tokens
            .iter()
            .map(|(provider, _, _)| (provider.clone(), None))
            .collect();
        for (provider, token) in self.user_secrets.get().provider_tokens {
            set.insert(provider, token.host);
        }
        set
    }

    /// The shell variables of a conversation started now: the tokens of the providers named
    /// (saved ones first, the environment's otherwise), and every custom secret.
    fn shell_env(&self, providers: &[String]) -> Vec<(String, String)> {
        let saved = self.user_secrets.get();
        let mut env: Vec<(String, String)> = PROVIDERS
            .iter()
            .filter(|(provider, _)| providers.iter().any(|p| p == provider))
            .filter_map(|(provider, var)| {
                let token = saved
                    .provider_tokens
                    .get(*provider)
                    .map(|t| t.token.expose().to_owned())
                    .or_else(|| {
                        self.tokens
                            .iter()
                            .find(|(p, _, _)| p == provider)
                            .map(|(_, _, secret)| secret.expose().to_owned())
                    })?;
                Some(((*var).to_owned(), token))
            })
            .collect();
        env.extend(
            saved
                .custom_secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.value.expose().to_owned())),
        );
        env
    }

    /// Forgets a deleted conversation's client count (and, with several nodes, the providers
    /// its clients named).
    pub fn forget(&self, conversation: &ConversationId) {
        if let Some(cluster) = &self.cluster {
            let (cluster, id) = (cluster.clone(), conversation.clone());
            tokio::spawn(async move { cluster.forget_providers(&id).await });
        }
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation);
    }

    /// With several nodes, keeps the providers a client named where the conversation's owner,
    /// on whichever node, finds them.
    fn share_providers(&self, conversation: &ConversationId, providers: &[String]) {
        if let Some(cluster) = &self.cluster
            && !providers.is_empty()
        {
            let (cluster, id, providers) =
                (cluster.clone(), conversation.clone(), providers.to_vec());
            tokio::spawn(async move { cluster.name_providers(&id, &providers).await });
        }
    }

    /// Gives the conversation's agent here the tokens of `providers`, if its shell has not
    /// started yet (as a join naming them does).
    pub fn add_providers(&self, conversation: &ConversationId, providers: &[String]) {
        let tokens = self.shell_env(providers);
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = running.get(conversation) {
            add_tokens(&agent.env, tokens);
        }
    }

    /// Conversations with clients joined on this node.
    pub fn watched_here(&self) -> Vec<ConversationId> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, n)| n.load(std::sync::atomic::Ordering::Acquire) > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The agents running on this node, with what tells them who looks at their conversation.
    pub fn running_here(&self) -> Vec<(ConversationId, Arc<Presence>)> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.alive())
            .map(|(id, r)| (id.clone(), r.presence.clone()))
            .collect()
    }

    /// The count of the conversation's joined clients (the socket layer keeps it).
    pub fn clients(&self, conversation: &ConversationId) -> Arc<std::sync::atomic::AtomicUsize> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(conversation.clone())
            .or_default()
            .clone()
    }

    /// What agents last saw of each MCP server.
    pub fn mcp_board(&self) -> &ohd_mcp::StatusBoard {
        &self.mcp_board
    }

    fn current(&self) -> Arc<AgentSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes saved settings for agents started from now on (a conversation created, or one
    /// whose agent was stopped or released, after the settings changed). Running agents keep
    /// theirs: a task does not change model or rules halfway. Keys seen so far stay hidden.
    pub fn configure(&self, saved: &Settings, config: &Config) {
        let mut next = agent_settings(
            &self.llm_config,
            &self.agent_config,
            self.session_key.as_ref(),
            saved,
            config,
            &self.mcp_board,
        );
        let mut settings = self.settings.write().unwrap_or_else(|p| p.into_inner());
        next.secrets = settings.secrets.with(
            saved
                .llm_choice(config)
                .api_key
                .iter()
                .map(|k| k.expose().to_owned())
                .chain(saved.mcp_config(config).secrets()),
        );
        *settings = Arc::new(next);
    }

    /// Where the conversation's agent is.
    pub fn status(&self, conversation: &ConversationId) -> AgentStatus {
        if !self.enabled {
            return AgentStatus::Disabled;
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(conversation) {
            Some(r) if r.alive() && r.presence.is_queued() => AgentStatus::Queued,
            Some(r) if r.alive() => AgentStatus::Running,
            _ => AgentStatus::Stopped,
        }
    }

    /// Where the conversation's agent is, on this node or (with several) on another: an agent
    /// whose lease another node holds is running there.
    pub async fn status_anywhere(&self, conversation: &ConversationId) -> AgentStatus {
        let here = self.status(conversation);
        let Some(cluster) = &self.cluster else {
            return here;
        };
        if here != AgentStatus::Stopped {
            return here;
        }
        match cluster.leases.lease_holder(conversation).await {
            Ok(Some(holder)) if !holder.expired => AgentStatus::Running,
            _ => here,
        }
    }

    /// The model agents started now would use (`openai/gpt-4o`), if one is usable.
    pub fn model(&self) -> Option<String> {
        self.current()
            .llm
            .as_ref()
            .ok()
            .map(|client| client.model().to_owned())
    }

    /// The workspace as the agent's shell sees it (`/workspace` when sandboxed).
    pub async fn agent_root(&self, host_workspace: &std::path::Path) -> PathBuf {
        self.sandbox().await.agent_root(host_workspace)
    }

    /// How to run a command where the agent's commands run (in its sandbox, when there is
    /// one), so that nothing the agent wrote into the workspace runs with more rights than
    /// the agent has.
    pub async fn launch(&self, host_workspace: &std::path::Path, args: &[&str]) -> Launch {
        self.sandbox()
            .await
            .launch(host_workspace, args, &[], false)
    }

    pub async fn sandbox(&self) -> Arc<Sandbox> {
        self.sandbox.get().await
    }

    /// Starts the conversation's agent unless it runs. `providers` picks which provider tokens
    /// its shell gets (the first start decides).
    pub fn ensure(&self, conversation: &ConversationId, providers: &[String]) {
        if !self.enabled {
            return;
        }
        let tokens = self.shell_env(providers);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Poked under the lock, after the work is in the log: the agent either sees it or has
        // already given up, and then a new one starts.
        if let Some(agent) = running
            .get(conversation)
            .filter(|r| r.alive() && r.presence.poke())
        {
            // A client that joins a waiting conversation hears why nothing happens yet.
            if agent.presence.is_queued() {
                self.log.notify(conversation, &ohd_agent::waiting_notice());
            }
            // Tokens named later still reach a shell that has not started yet.
            add_tokens(&agent.env, tokens);
            self.share_providers(conversation, providers);
            return;
        }
        self.share_providers(conversation, providers);
        let env = Arc::new(Mutex::new(tokens));
        let (log, workspace) = (
            self.log.clone(),
            self.workspaces.join(conversation.as_str()),
        );
        let (shell_env, sandbox) = (env.clone(), self.sandbox.clone());
        let cancel = CancellationToken::new();
        let settings = self.current();
        let token = cancel.clone();
        let id = conversation.clone();
        let slots = self.slots.clone();
        let secret_names: Vec<(String, String)> = self
            .user_secrets
            .get()
            .custom_secrets
            .iter()
            .map(|(name, secret)| (name.clone(), secret.description.clone()))
            .collect();
        let presence = Arc::new(Presence::with_clients(self.clients(conversation)));
        let agent_presence = presence.clone();
        let tokens_for_clone = self.clone_tokens();
        let staging = self.staging.clone();
        let cluster = self.cluster.clone();
        let me = self.me.clone();
        let task = tokio::spawn(async move {
            // With several nodes, only the lease's holder runs the agent, and it writes only
            // while it holds the lease.
            let mut held = None;
            let log = match &cluster {
                None => log,
                Some(cluster) => {
                    let Some((fence, asked)) =
                        take_lease(cluster, &id, &agent_presence, &token).await
                    else {
                        return;
                    };
                    tracing::info!(conversation = %id, node = %cluster.node, token = fence.token, "this node runs the conversation's agent");
                    // Providers its clients named on any node (a takeover's, too).
                    let named = cluster.named_providers(&id).await;
                    if let (false, Some(agents)) = (named.is_empty(), me.upgrade()) {
                        add_tokens(&shell_env, agents.shell_env(&named));
                    }
                    let fenced = log.fenced(cluster.leases.clone(), fence.clone());
                    let (done, lost) = (CancellationToken::new(), CancellationToken::new());
                    let holding = {
                        let (cluster, done, lost) = (cluster.clone(), done.clone(), lost.clone());
                        tokio::spawn(async move { cluster.hold(fence, asked, done, lost).await })
                    };
                    held = Some((done, lost, holding));
                    fenced
                }
            };
            let lease_log = log.clone();
            let host_workspace = workspace.clone();
            let latest_settings: ohd_agent::LatestSettings = {
                let me = me.clone();
                Arc::new(move || me.upgrade().map(|agents| agents.current()))
            };
            let presence_after = agent_presence.clone();
            let running = run_agent(AgentStart {
                latest_settings,
                log,
                id: id.clone(),
                workspace,
                shell_env,
                sandbox,
                presence: agent_presence,
                slots,
                secret_names,
                tokens_for_clone,
                staging,
                settings,
                cancel: token.clone(),
            });
            let (Some((done, lost, holding)), Some(cluster)) = (held, cluster) else {
                running.await;
                return;
            };
            // A lost lease stops the agent. It may try to record the stop (the fence refuses it);
            // if that does not end it at once (the database unreachable), it is dropped, which
            // kills its shell and whatever that started. Either way before the lease can lapse.
            let mut running = Box::pin(running);
            let ran = tokio::select! {
                ran = &mut running => ran,
                _ = lost.cancelled() => {
                    tracing::warn!(conversation = %id, "the agent is stopped: this node no longer holds the conversation's lease");
                    token.cancel();
                    let _ = tokio::time::timeout(cluster.ttl / 8, &mut running).await;
                    Ran::Lost
                }
            };
            drop(running);
            // From here work handed to this conversation starts a new agent, not this one.
            presence_after.retire();
            let Some(agents) = me.upgrade() else {
                return;
            };
            let shutting_down = agents
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire);
            if ran != Ran::Released && ran != Ran::Ended && !shutting_down {
                // Deleted (on another node, say): what this node keeps of it goes too (its
                // system layer; the workspace may have been in use while it was removed), and
                // its lease is ended, so that no node takes it up again.
                let gone = matches!(
                    tokio::time::timeout(cluster.ttl, lease_log.store().get_conversation(&id))
                        .await,
                    Ok(Ok(None))
                );
                if gone {
                    holding.abort();
                    let _ = cluster.leases.revoke_lease(&id).await;
                    let _ = tokio::fs::remove_dir_all(&host_workspace).await;
                    if let Err(e) = agents.sandbox().await.remove_layer(&host_workspace) {
                        tracing::warn!(conversation = %id, error = %e, "system layer not removed");
                    }
                    return;
                }
            }
            if ran == Ran::Failed || shutting_down {
                // Left to lapse, not released: a node (this one too) takes the conversation
                // over and resumes it, as after a crash.
                holding.abort();
                return;
            }
            let kept = if ran == Ran::Lost {
                false
            } else {
                done.cancel();
                holding.await.unwrap_or(false)
            };
            // Work stored while this agent was ending (a message another node took while the
            // lease was still held here, one that came after a stop asked elsewhere) found no
            // agent to take it: start one for it, here or wherever the lease now is.
            if ((kept && ran == Ran::Released) || ran == Ran::Lost)
                && waiting_for_agent(&lease_log, &id).await
            {
                agents.ensure(&id, &[]);
            }
        });
        running.insert(
            conversation.clone(),
            Running {
                cancel,
                task,
                env,
                presence,
            },
        );
    }

    /// Stops a conversation's agent and waits for its shell to end; says whether one ran. With
    /// several nodes, an agent another node runs is stopped too: its lease is revoked, which
    /// fences it out at once and ends it at its owner's next renewal.
    pub async fn stop(&self, conversation: &ConversationId) -> bool {
        let here = self.stop_here(conversation).await;
        let Some(cluster) = &self.cluster else {
            return here;
        };
        let elsewhere = match cluster.leases.lease_holder(conversation).await {
            Ok(Some(holder)) if !holder.expired && holder.node != cluster.node => Some(holder.node),
            _ => None,
        };
        if let Some(owner) = &elsewhere {
            // Said as the user's stop, which the owner's agent follows at once (it interrupts
            // its command), as a stop sent on its own node would be.
            let stop = ohd_protocol::NewEvent::action(
                ohd_protocol::Source::User,
                ohd_protocol::Action::ChangeAgentState(
                    ohd_protocol::action::ChangeAgentStateArgs {
                        agent_state: ohd_protocol::AgentState::Stopped,
                        thought: String::new(),
                    },
                ),
            );
            if let Err(e) = self.log.append(conversation, stop).await {
                tracing::debug!(%conversation, error = %e, "the stop not stored");
            }
            tracing::info!(%conversation, %owner, "stopping the agent another node runs");
        }
        // Any lease not released ends here, whoever held it: the owner elsewhere is fenced out
        // at once and ends its agent at its next renewal, and a lease left by a node that died
        // is not taken up again to restart what the user stopped.
        if let Err(e) = cluster.leases.revoke_lease(conversation).await {
            tracing::warn!(%conversation, error = %e, "the conversation's lease not revoked");
        }
        if elsewhere.is_some() {
            // The owner may be refused before it says so itself: the state is said here.
            let stopped = ohd_protocol::NewEvent::observation(
                ohd_protocol::Source::Environment,
                None,
                ohd_protocol::Observation::agent_state_changed(
                    ohd_protocol::AgentState::Stopped,
                    "",
                ),
            );
            if let Err(e) = self.log.append(conversation, stopped).await {
                tracing::debug!(%conversation, error = %e, "stopped state not stored");
            }
        }
        here || elsewhere.is_some()
    }

    /// Stops the conversation's agent on this node, if one runs here, and waits for its shell
    /// to end; says whether one ran.
    pub async fn stop_here(&self, conversation: &ConversationId) -> bool {
        let removed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation);
        match removed {
            Some(running) => {
                let was_running = !running.task.is_finished();
                running.cancel.cancel();
                let _ = running.task.await;
                was_running
            }
            None => false,
        }
    }

    pub async fn stop_all(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        let all: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for running in &all {
            running.cancel.cancel();
        }
        for running in all {
            let _ = running.task.await;
        }
    }
}

/// Adds tokens to a shell's environment that it does not have yet.
fn add_tokens(env: &Mutex<Vec<(String, String)>>, tokens: Vec<(String, String)>) {
    let mut env = env.lock().unwrap_or_else(|p| p.into_inner());
    for token in tokens {
        if !env.contains(&token) {
            env.push(token);
        }
    }
}

/// How an agent's task ended.
#[derive(PartialEq)]
enum Ran {
    /// Released for being idle: a later message starts another.
    Released,
    /// Stopped (by the user, a delete, or the server's shutdown).
    Ended,
    /// It could not start, or it ended on an error of its own (the store failing, say).
    Failed,
    /// This node lost the conversation's lease (revoked, or not renewed in time).
    Lost,
}

/// Takes the conversation's lease for an agent to start here, with when it was asked for; `None`
/// when another node runs the agent (and nothing was handed to this one meanwhile) or the
/// lease cannot be read.
async fn take_lease(
    cluster: &Cluster,
    id: &ConversationId,
    presence: &Presence,
    stopped: &CancellationToken,
) -> Option<(ohd_store::Fence, std::time::Instant)> {
    let mut failures = 0u32;
    loop {
        // A stop (or the server's shutdown) does not wait for a database that fails.
        if stopped.is_cancelled() {
            return None;
        }
        let asked = std::time::Instant::now();
        match cluster.acquire(id).await {
            Ok(Some(fence)) => return Some((fence, asked)),
            Ok(None) => {
                // Work handed over since this agent was wanted may have come while the owner
                // was letting go: look once more before leaving it to the owner.
                if presence.step_aside() {
                    tracing::debug!(conversation = %id, "another node runs the conversation's agent");
                    return None;
                }
            }
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    tracing::warn!(conversation = %id, error = %e, "the conversation's lease cannot be read; its agent does not start here");
                    return None;
                }
                tokio::select! {
                    _ = stopped.cancelled() => return None,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200 << failures)) => {}
                }
            }
        }
    }
}

/// What one agent's task needs, gathered in [`Agents::ensure`].
struct AgentStart {
    latest_settings: ohd_agent::LatestSettings,
    log: EventLog,
    id: ConversationId,
    workspace: PathBuf,
    shell_env: Arc<Mutex<Vec<(String, String)>>>,
    sandbox: Arc<SandboxDecision>,
    presence: Arc<Presence>,
    slots: Option<Arc<Semaphore>>,
    secret_names: Vec<(String, String)>,
    tokens_for_clone: Vec<(String, ProviderToken)>,
    staging: PathBuf,
    settings: Arc<AgentSettings>,
    cancel: CancellationToken,
}

/// Sets up and runs one conversation's agent (a clone first, when asked for) until it ends.
async fn run_agent(start: AgentStart) -> Ran {
    let AgentStart {
        latest_settings,
        log,
        id,
        workspace,
        shell_env,
        sandbox,
        presence,
        slots,
        secret_names,
        tokens_for_clone,
        staging,
        settings,
        cancel,
    } = start;
    let sandbox = sandbox.get().await;
    // A stop or a delete does not wait for a clone.
    let repository = tokio::select! {
        repository = prepare_repository(
            &log,
            &id,
            &workspace,
            &sandbox,
            tokens_for_clone,
            &staging,
        ) => repository,
        _ = cancel.cancelled() => return Ran::Ended,
    };
    let ctx = AgentContext {
        conversation: id.clone(),
        log,
        workspace,
        env: shell_env,
        sandbox,
        presence: presence.clone(),
        places: slots,
        secret_names,
        repository,
        latest_settings: Some(latest_settings),
    };
    match Agent::start(ctx, settings, cancel.clone()).await {
        Ok(agent) => {
            agent.run().await;
            // An agent released for being idle freed its history: give it back.
            if presence.is_released() {
                let _ = tokio::task::spawn_blocking(crate::listener::give_back_freed_memory).await;
                return Ran::Released;
            }
            // An agent ends when it is stopped or released; otherwise it failed.
            if cancel.is_cancelled() {
                Ran::Ended
            } else {
                Ran::Failed
            }
        }
        Err(e) => {
            tracing::error!(conversation = %id, error = %e, "agent did not start");
            Ran::Failed
        }
    }
}

/// Whether a user's message or command waits with no agent at it: it came after the agent's
/// last change of state (as an agent starting up judges it).
async fn waiting_for_agent(log: &EventLog, conversation: &ConversationId) -> bool {
    let page = ohd_store::EventPage {
        start_id: 0,
        end_id: None,
        reverse: true,
        limit: 64,
    };
    let Ok((events, _)) = log.store().read_page(conversation, page).await else {
        return false;
    };
    for event in events {
        let Ok(event) = event.decode() else {
            continue;
        };
        if event.agent_state().is_some() {
            return false;
        }
        if event.source == ohd_protocol::Source::User
            && matches!(
                event.body,
                ohd_protocol::EventBody::Action(
                    ohd_protocol::Action::Message(_) | ohd_protocol::Action::Run(_)
                )
            )
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlmConfig {
        crate::config::Config::resolve(crate::config::Overrides {
            data_dir: Some(std::env::temp_dir()),
            ..Default::default()
        })
        .map(|c| c.llm)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_condenser_model_never_gets_another_providers_key() {
        let main = LlmChoice {
            model: Some("anthropic/claude-sonnet-4-5".into()),
            api_key: Some(Secret::new("sk-ant-main".to_owned())),
            base_url: None,
            reasoning_effort: None,
        };
        // Another provider, no key of its own: not used.
        assert!(condenser_llm(&config(), &main, "openai/gpt-4o-mini").is_none());
        // The same provider: shares the key.
        assert!(condenser_llm(&config(), &main, "anthropic/claude-haiku-4-5").is_some());
        // Another provider with its own key: used.
        let mut own = config();
        own.condenser_api_key = Some(Secret::new("sk-openai-own".to_owned()));
        assert!(condenser_llm(&own, &main, "openai/gpt-4o-mini").is_some());
    }
}
