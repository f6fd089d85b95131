//! The agents of the running conversations: one task each, started when a conversation is
//! created, joined or sent something, and stopped when it is deleted or the server stops.

use crate::config::Config;
use ohd_agent::{Agent, AgentContext, AgentSettings};
use ohd_llm::LlmSettings;
use ohd_protocol::ConversationId;
use ohd_runtime::sandbox::{SandboxConfig, bubblewrap_available};
use ohd_runtime::shell::ShellOptions;
use ohd_store::EventLog;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Provider token variables, by `providers_set` name.
const PROVIDER_TOKENS: [(&str, &str); 5] = [
    ("github", "GITHUB_TOKEN"),
    ("gitlab", "GITLAB_TOKEN"),
    ("bitbucket", "BITBUCKET_TOKEN"),
    ("azure_devops", "AZURE_DEVOPS_TOKEN"),
    ("forgejo", "FORGEJO_TOKEN"),
];

pub struct Agents {
    enabled: bool,
    settings: Arc<AgentSettings>,
    log: EventLog,
    workspaces: PathBuf,
    running: Mutex<HashMap<ConversationId, Running>>,
    /// Tokens found in the environment at start, by provider name.
    tokens: Vec<(String, String, crate::auth::Secret)>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    env: Arc<Mutex<Vec<(String, String)>>>,
}

/// What `/health` and the log say about how commands are isolated.
pub fn sandbox_description(sandbox: &SandboxConfig) -> String {
    if sandbox.uses_bubblewrap() {
        format!(
            "bubblewrap (network {})",
            if sandbox.network { "on" } else { "off" }
        )
    } else if bubblewrap_available() {
        "none (turned off by configuration)".to_owned()
    } else {
        "none: bubblewrap is not installed or cannot run here; commands run as plain processes in the workspace".to_owned()
    }
}

impl Agents {
    pub fn new(config: &Config, log: EventLog) -> Self {
        let llm = match &config.llm.model {
            None => Err(
                "No language model is configured, so the agent cannot work. Set LLM_MODEL (for example openai/gpt-4o or anthropic/claude-sonnet-4-5) and LLM_API_KEY, plus LLM_BASE_URL for an OpenAI-compatible server (vLLM, Ollama, llama.cpp), or the [llm] section of config.toml, then restart ohd."
                    .to_owned(),
            ),
            Some(model) => {
                let settings = LlmSettings {
                    model: model.clone(),
                    api_key: config.llm.api_key.as_ref().map(|k| k.expose().to_owned()),
                    base_url: config.llm.base_url.clone(),
                    stream: config.llm.stream,
                    max_retries: config.llm.max_retries,
                    input_cost_per_million: config.llm.input_cost_per_million,
                    output_cost_per_million: config.llm.output_cost_per_million,
                    ..LlmSettings::default()
                };
                ohd_llm::connect(&settings).map_err(|e| {
                    format!("The language model cannot be used: {e}. Check LLM_MODEL, LLM_API_KEY and LLM_BASE_URL (or [llm] in config.toml), then restart ohd.")
                })
            }
        };
        match &llm {
            Ok(client) => tracing::info!(model = client.model(), "language model configured"),
            Err(why) => tracing::warn!("{why}"),
        }
        let sandbox = SandboxConfig {
            mode: config.sandbox.mode,
            network: config.sandbox.network,
            hidden: vec![config.data_dir.clone()],
        };
        let description = sandbox_description(&sandbox);
        if sandbox.uses_bubblewrap() {
            tracing::info!(sandbox = %description, "commands are sandboxed");
        } else {
            tracing::warn!(sandbox = %description, "commands are NOT sandboxed");
        }
        let tokens = PROVIDER_TOKENS
            .iter()
            .filter_map(|(provider, var)| {
                let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
                Some((
                    (*provider).to_owned(),
                    (*var).to_owned(),
                    crate::auth::Secret::new(value),
                ))
            })
            .collect();
        if !config.agent.enabled {
            tracing::info!("agent turned off: ohd stores and relays events only");
        }
        Agents {
            enabled: config.agent.enabled,
            settings: Arc::new(AgentSettings {
                llm,
                max_iterations: config.agent.max_iterations,
                max_budget: config.agent.max_budget_per_task,
                sandbox,
                shell: ShellOptions::default(),
                secrets: ohd_agent::Secrets::new(
                    config
                        .llm
                        .api_key
                        .iter()
                        .chain(config.session_api_key.iter())
                        .map(|k| k.expose().to_owned()),
                ),
            }),
            log,
            workspaces: config.workspaces_dir(),
            running: Mutex::new(HashMap::new()),
            tokens,
        }
    }

    /// The workspace as the agent's shell sees it (`/workspace` when sandboxed).
    pub fn agent_root(&self, host_workspace: &std::path::Path) -> PathBuf {
        self.settings.sandbox.agent_root(host_workspace)
    }

    pub fn sandbox(&self) -> String {
        sandbox_description(&self.settings.sandbox)
    }

    /// Starts the conversation's agent unless it runs. `providers` picks which provider tokens
    /// its shell gets (the first start decides).
    pub fn ensure(&self, conversation: &ConversationId, providers: &[String]) {
        if !self.enabled {
            return;
        }
        let tokens: Vec<(String, String)> = self
            .tokens
            .iter()
            .filter(|(provider, _, _)| providers.contains(provider))
            .map(|(_, var, secret)| (var.clone(), secret.expose().to_owned()))
            .collect();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(agent) = running.get(conversation).filter(|r| !r.task.is_finished()) {
            // Tokens named later still reach a shell that has not started yet.
            let mut env = agent.env.lock().unwrap_or_else(|p| p.into_inner());
            for token in tokens {
                if !env.contains(&token) {
                    env.push(token);
                }
            }
            return;
        }
        let env = Arc::new(Mutex::new(tokens));
        let ctx = AgentContext {
            conversation: conversation.clone(),
            log: self.log.clone(),
            workspace: self.workspaces.join(conversation.as_str()),
            env: env.clone(),
        };
        let cancel = CancellationToken::new();
        let settings = self.settings.clone();
        let token = cancel.clone();
        let id = conversation.clone();
        let task = tokio::spawn(async move {
            match Agent::start(ctx, settings, token).await {
                Ok(agent) => agent.run().await,
                Err(e) => tracing::error!(conversation = %id, error = %e, "agent did not start"),
            }
        });
        running.insert(conversation.clone(), Running { cancel, task, env });
    }

    /// Stops a conversation's agent and waits for its shell to end.
    pub async fn stop(&self, conversation: &ConversationId) {
        let removed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation);
        if let Some(running) = removed {
            running.cancel.cancel();
            let _ = running.task.await;
        }
    }

    pub async fn stop_all(&self) {
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
