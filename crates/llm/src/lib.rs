//! Model clients for the agent: one [`LlmClient`] trait, made by [`connect`] from the settings,
//! spoken over OpenAI Chat Completions (which OpenAI-compatible servers share) or Anthropic
//! Messages, streamed or not, retried on rate limits and server errors, with usage and cost.
//!
//! Each concern has its file: `model` (names, providers, prices), `types` (requests and
//! answers), `openai` and `anthropic` (the wire formats), `http` (what both share),
//! `tool_calling` (tools in `tools` or in the prompt) and `prompted` (the prompt's format),
//! `retry` (when and how long to wait), `error` (what went wrong, by what to do about it),
//! `metrics` (the `llm_metrics` totals).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod anthropic;
mod demo;
mod error;
mod http;
mod metrics;
mod model;
mod openai;
mod prompted;
mod retry;
mod tool_calling;
mod types;

pub use anthropic::DEFAULT_MAX_TOKENS;
pub use demo::{DEMO_MODEL, DemoModel};
pub use error::LlmError;
pub use metrics::{Metrics, TokenUsage};
pub use model::{
    ANTHROPIC_BASE_URL, ModelId, OPENAI_BASE_URL, Price, Provider, known_context_window,
    known_models, known_price, known_to_take_images, price_for,
};
pub use retry::{RetryObserver, RetryPolicy, retry_after};
pub use types::{Completion, CompletionRequest, Message, Role, ToolCall, ToolSpec, Usage};

use tool_calling::{Mode, ToolCalling};

/// A model the agent can ask for the next step.
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends the conversation and waits for the whole answer, retrying on rate limits, server
    /// errors and broken connections; `observer` hears of each retry before its wait.
    async fn complete(
        &self,
        request: &CompletionRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError>;

    /// The model as configured (`openai/gpt-4o`).
    fn model(&self) -> &str;
}

/// How to reach the model (`[llm]` in `config.toml`, `LLM_MODEL`, `LLM_API_KEY`,
/// `LLM_BASE_URL`).
#[derive(Clone, PartialEq)]
pub struct LlmSettings {
    /// `provider/model`: `openai/gpt-4o`, `anthropic/claude-sonnet-4-5`, `openai/<name>` for an
    /// OpenAI-compatible server.
    pub model: String,
    pub api_key: Option<String>,
    /// The provider's address when not its default: an OpenAI-compatible server's `/v1` URL.
    pub base_url: Option<String>,
    /// Ask for the answer as a stream of events (the default) or whole.
    pub stream: bool,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff between retries; it doubles up to `retry_max_wait`.
    pub retry_min_wait: Duration,
    pub retry_max_wait: Duration,
    /// USD per million tokens, over the built-in price of a well-known model.
    pub input_cost_per_million: Option<f64>,
    pub output_cost_per_million: Option<f64>,
    /// The most one attempt may take, answer included.
    pub timeout: Duration,
    /// `Some(true)`: tools always go in the request's `tools`. `Some(false)`: they are always
    /// described in the prompt, and calls read from the answer's text, for models and servers
    /// without tool calling. `None` (the default): native, until the server refuses `tools`
    /// (vLLM without `--enable-auto-tool-choice`, an Ollama model without tools, llama.cpp
    /// without `--jinja`...); the client then uses the prompt for the rest of its life.
    pub native_tool_calling: Option<bool>,
    /// `low`, `medium` or `high`, sent as `reasoning_effort` to OpenAI-wire models that take it
    /// (o-series, gpt-5, gpt-oss, Gemini 2.5, DeepSeek R1, wherever served). Not sent to other
    /// models, nor turned into Anthropic thinking (as in the original): for Claude, set
    /// `thinking_budget_tokens`.
    pub reasoning_effort: Option<String>,
    /// Anthropic's extended thinking, with this budget (at least 1024 tokens); `max_tokens`
    /// grows by it, and no temperature is sent. Only for Anthropic's wire.
    pub thinking_budget_tokens: Option<u32>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        LlmSettings {
            model: String::new(),
            api_key: None,
            base_url: None,
            stream: true,
            max_retries: retry.max_retries,
            retry_min_wait: retry.min_wait,
            retry_max_wait: retry.max_wait,
            input_cost_per_million: None,
            output_cost_per_million: None,
            timeout: Duration::from_secs(600),
            native_tool_calling: None,
            reasoning_effort: None,
            thinking_budget_tokens: None,
        }
    }
}

/// The key is shown only as set or not.
impl fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmSettings")
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &self.base_url)
            .field("stream", &self.stream)
            .field("max_retries", &self.max_retries)
            .field("retry_min_wait", &self.retry_min_wait)
            .field("retry_max_wait", &self.retry_max_wait)
            .field("input_cost_per_million", &self.input_cost_per_million)
            .field("output_cost_per_million", &self.output_cost_per_million)
            .field("timeout", &self.timeout)
            .field("native_tool_calling", &self.native_tool_calling)
            .field("reasoning_effort", &self.reasoning_effort)
            .field("thinking_budget_tokens", &self.thinking_budget_tokens)
            .finish()
    }
}

/// A client for the configured model. Fails when the model names no provider and no base URL
/// is given, when a hosted provider is configured without a key, or when `reasoning_effort` or
/// `thinking_budget_tokens` holds a value no provider takes.
pub fn connect(settings: &LlmSettings) -> Result<Arc<dyn LlmClient>, LlmError> {
    if settings.model.trim() == DEMO_MODEL {
        return Ok(Arc::new(DemoModel::new()));
    }
    let id = ModelId::parse(&settings.model)?;
    let effort = reasoning_effort(settings.reasoning_effort.as_deref())?;
    if let Some(budget) = settings.thinking_budget_tokens
        && budget < anthropic::MIN_THINKING_BUDGET
    {
        return Err(LlmError::NotConfigured(format!(
            "thinking_budget_tokens is {budget}; Anthropic takes at least {}",
            anthropic::MIN_THINKING_BUDGET
        )));
    }
    let base_url = settings
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .or(id.default_base_url)
        .ok_or_else(|| {
            LlmError::NotConfigured(format!(
                "model `{}` names no provider ohd knows: use openai/<model> or \
                 anthropic/<model>, or set LLM_BASE_URL to an OpenAI-compatible server",
                settings.model
            ))
        })?
        .to_owned();
    let api_key = settings.api_key.clone().filter(|key| !key.is_empty());
    let hosted = [
        OPENAI_BASE_URL,
        ANTHROPIC_BASE_URL,
        "https://openrouter.ai/api/v1",
    ]
    .contains(&base_url.trim_end_matches('/'));
    if hosted && api_key.is_none() {
        return Err(LlmError::NotConfigured(format!(
            "no API key for {} (LLM_API_KEY)",
            settings.model
        )));
    }
    let retry = RetryPolicy {
        max_retries: settings.max_retries,
        min_wait: settings.retry_min_wait,
        max_wait: settings.retry_max_wait,
        ..RetryPolicy::default()
    };
    let core = http::Core::new(
        settings.model.trim().to_owned(),
        id.name.clone(),
        api_key,
        settings.stream,
        retry,
        price_for(
            &id.name,
            settings.input_cost_per_million,
            settings.output_cost_per_million,
        ),
        settings.timeout,
    )?;
    let mode = match settings.native_tool_calling {
        Some(true) => Mode::Native,
        Some(false) => Mode::Prompted,
        None => Mode::Auto,
    };
    Ok(match id.provider {
        Provider::OpenAi => {
            if settings.thinking_budget_tokens.is_some() {
                tracing::info!(model = %settings.model, "thinking_budget_tokens is for Anthropic's wire only; not sent");
            }
            let wire = openai::OpenAiClient::new(core, &base_url, effort);
            Arc::new(ToolCalling::new(wire, mode))
        }
        Provider::Anthropic => {
            if effort.is_some() {
                tracing::info!(model = %settings.model, "reasoning_effort is not sent to Anthropic; set thinking_budget_tokens for extended thinking");
            }
            let wire =
                anthropic::AnthropicClient::new(core, &base_url, settings.thinking_budget_tokens);
            Arc::new(ToolCalling::new(wire, mode))
        }
    })
}

/// The setting as the value sent; unset or empty is none.
fn reasoning_effort(setting: Option<&str>) -> Result<Option<&'static str>, LlmError> {
    let Some(effort) = setting.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    match effort.to_ascii_lowercase().as_str() {
        "low" => Ok(Some("low")),
        "medium" => Ok(Some("medium")),
        "high" => Ok(Some("high")),
        _ => Err(LlmError::NotConfigured(format!(
            "reasoning_effort `{effort}` is not one of low, medium, high"
        ))),
    }
}
