//! Which provider a model name means, where that provider lives, and what its tokens cost.

use crate::error::LlmError;
use crate::types::Usage;

/// The wire format a model is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI Chat Completions, also spoken by vLLM, Ollama, llama.cpp, OpenRouter, LiteLLM...
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// A model setting (`LLM_MODEL`) taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelId {
    pub provider: Provider,
    /// The name sent to the provider (`gpt-4o`, `claude-sonnet-4-5`, `Qwen/Qwen2.5-Coder-7B`).
    pub name: String,
    /// The provider's own address, when the prefix names one. `None` for a prefix this client
    /// does not know: such a model needs a base URL.
    pub default_base_url: Option<&'static str>,
}

impl ModelId {
    /// Reads `provider/model` (`openai/gpt-4o`, `anthropic/claude-sonnet-4-5`) or a bare name,
    /// taken as Anthropic when it starts with `claude` and as OpenAI otherwise.
    ///
    /// LiteLLM's prefixes for OpenAI-compatible services are accepted too (`openrouter/`,
    /// `ollama/`), so the model strings OpenHands users already have keep working. Any other
    /// prefix is kept as part of the model name and sent to an OpenAI-compatible server, which
    /// must then be given by a base URL: Hugging Face names such as `Qwen/Qwen2.5-Coder` are
    /// what vLLM serves.
    pub fn parse(model: &str) -> Result<ModelId, LlmError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(LlmError::NotConfigured(
                "no model is set (LLM_MODEL, e.g. openai/gpt-4o or anthropic/claude-sonnet-4-5)"
                    .into(),
            ));
        }
        let (provider, default_base_url, name) = match model.split_once('/') {
            Some(("openai", name)) => (Provider::OpenAi, Some(OPENAI_BASE_URL), name),
            Some(("anthropic", name)) => (Provider::Anthropic, Some(ANTHROPIC_BASE_URL), name),
            Some(("openrouter", name)) => {
                (Provider::OpenAi, Some("https://openrouter.ai/api/v1"), name)
            }
            Some(("ollama" | "ollama_chat", name)) => {
                (Provider::OpenAi, Some("http://localhost:11434/v1"), name)
            }
            Some(_) => (Provider::OpenAi, None, model),
            None if model.starts_with("claude") => {
                (Provider::Anthropic, Some(ANTHROPIC_BASE_URL), model)
            }
            None => (Provider::OpenAi, Some(OPENAI_BASE_URL), model),
        };
        if name.is_empty() {
            return Err(LlmError::NotConfigured(format!(
                "model `{model}` has no name after the provider"
            )));
        }
        Ok(ModelId {
            provider,
            name: name.to_owned(),
            default_base_url,
        })
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens read from the provider's cache; the input price when not known.
    pub cache_read: f64,
    /// Prompt tokens written to the cache (Anthropic charges extra); the input price when not
    /// known.
    pub cache_write: f64,
}

impl Price {
    /// A price from an input and an output figure, cached tokens charged as input.
    pub fn flat(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cache_read: input,
            cache_write: input,
        }
    }

    /// What `usage` cost in USD. `usage.prompt_tokens` counts every prompt token, cached or not.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cache_read_tokens + usage.cache_write_tokens;
        let uncached = usage.prompt_tokens.saturating_sub(cached);
        (uncached as f64 * self.input
            + usage.cache_read_tokens as f64 * self.cache_read
            + usage.cache_write_tokens as f64 * self.cache_write
            + usage.completion_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// Published list prices of a few well-known models: name, input, output, cache read, cache
/// write (USD per million tokens). Anything else costs what the settings say, or is not counted.
const PRICES: &[(&str, f64, f64, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("gpt-4.1", 2.00, 8.00, 0.50, 2.00),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-5", 1.25, 10.00, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.00, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("o3", 2.00, 8.00, 0.50, 2.00),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
    ("claude-opus-4-1", 15.00, 75.00, 1.50, 18.75),
    ("claude-opus-4", 15.00, 75.00, 1.50, 18.75),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30, 3.75),
    ("claude-sonnet-4", 3.00, 15.00, 0.30, 3.75),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30, 3.75),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00),
];

/// Input windows (tokens) of the same models, as published.
const CONTEXT_WINDOWS: &[(&str, u64)] = &[
    ("gpt-4o", 128_000),
    ("gpt-4o-mini", 128_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4.1-mini", 1_047_576),
    ("gpt-4.1-nano", 1_047_576),
    ("gpt-5", 272_000),
    ("gpt-5-mini", 272_000),
    ("gpt-5-nano", 272_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("claude-opus-4-1", 200_000),
    ("claude-opus-4", 200_000),
    ("claude-sonnet-4-5", 200_000),
    ("claude-sonnet-4", 200_000),
    ("claude-3-7-sonnet", 200_000),
    ("claude-haiku-4-5", 200_000),
    ("claude-3-5-haiku", 200_000),
];

/// Whether `model` is `name`, a dated snapshot of it or its `-latest` alias.
fn is_family(model: &str, name: &str) -> bool {
    model.strip_prefix(name).is_some_and(|rest| {
        rest.is_empty()
            || rest == "-latest"
            || rest
                .strip_prefix('-')
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The input window of a well-known model (bare name, as for [`known_price`]).
pub fn known_context_window(model: &str) -> Option<u64> {
    CONTEXT_WINDOWS
        .iter()
        .filter(|(name, _)| is_family(model, name))
        .max_by_key(|(name, _)| name.len())
        .map(|&(_, window)| window)
}

/// Whether a well-known model takes images (every model in the tables does).
pub fn known_to_take_images(model: &str) -> bool {
    known_context_window(model).is_some()
}

/// The models with a built-in price, as `provider/model`: what a settings page can offer.
pub fn known_models() -> Vec<String> {
    PRICES
        .iter()
        .map(|(name, ..)| {
            let provider = if name.starts_with("claude") {
                "anthropic"
            } else {
                "openai"
            };
            format!("{provider}/{name}")
        })
        .collect()
}

/// The list price of `model`, matching dated snapshots (`gpt-4o-2024-08-06`,
/// `claude-sonnet-4-5-20250929`) and `-latest` aliases to their family, but not other variants
/// (`gpt-4o-audio-preview` is not priced as `gpt-4o`).
pub fn known_price(model: &str) -> Option<Price> {
    PRICES
        .iter()
        .filter(|(name, ..)| is_family(model, name))
        .max_by_key(|(name, ..)| name.len())
        .map(|&(_, input, output, cache_read, cache_write)| Price {
            input,
            output,
            cache_read,
            cache_write,
        })
}

/// The price to charge: configured figures win over the table; one configured figure keeps the
/// table's other one when there is a table entry, and is charged alone (the other as zero)
/// when there is not.
pub fn price_for(model: &str, input: Option<f64>, output: Option<f64>) -> Option<Price> {
    let known = known_price(model);
    match (input, output, known) {
        (None, None, known) => known,
        (input, output, Some(known)) => Some(Price {
            input: input.unwrap_or(known.input),
            output: output.unwrap_or(known.output),
            cache_read: input.unwrap_or(known.cache_read),
            cache_write: input.unwrap_or(known.cache_write),
        }),
        (input, output, None) => Some(Price::flat(input.unwrap_or(0.0), output.unwrap_or(0.0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_prefixes_and_bare_names() {
        let m = ModelId::parse("openai/gpt-4o").unwrap();
        assert_eq!((m.provider, m.name.as_str()), (Provider::OpenAi, "gpt-4o"));
        let m = ModelId::parse("anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(
            (m.provider, m.name.as_str(), m.default_base_url),
            (
                Provider::Anthropic,
                "claude-sonnet-4-5",
                Some(ANTHROPIC_BASE_URL)
            )
        );
        assert_eq!(
            ModelId::parse("claude-3-5-haiku").unwrap().provider,
            Provider::Anthropic
        );
        assert_eq!(ModelId::parse("gpt-4o").unwrap().provider, Provider::OpenAi);
        // A Hugging Face name for an OpenAI-compatible server keeps its slash.
        let m = ModelId::parse("openai/Qwen/Qwen2.5-Coder-7B").unwrap();
        assert_eq!(m.name, "Qwen/Qwen2.5-Coder-7B");
        let m = ModelId::parse("Qwen/Qwen2.5-Coder-7B").unwrap();
        assert_eq!(
            (m.name.as_str(), m.default_base_url),
            ("Qwen/Qwen2.5-Coder-7B", None)
        );
        assert!(ModelId::parse("").is_err());
        assert!(ModelId::parse("openai/").is_err());
    }

    #[test]
    fn prices_match_snapshots_but_not_variants() {
        assert_eq!(known_price("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(known_price("gpt-4o-mini").unwrap().input, 0.15);
        assert_eq!(
            known_price("claude-sonnet-4-5-20250929").unwrap().output,
            15.0
        );
        assert!(known_price("gpt-4o-audio-preview").is_none());
        assert!(known_price("llama3").is_none());
    }

    #[test]
    fn configured_prices_win() {
        let p = price_for("llama3", Some(1.0), Some(2.0)).unwrap();
        assert_eq!((p.input, p.output), (1.0, 2.0));
        let p = price_for("gpt-4o", None, Some(20.0)).unwrap();
        assert_eq!((p.input, p.output), (2.5, 20.0));
        assert!(price_for("llama3", None, None).is_none());
    }

    #[test]
    fn cached_prompt_tokens_are_charged_at_the_cache_price() {
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cache_read_tokens: 500_000,
            cache_write_tokens: 0,
        };
        let cost = known_price("gpt-4o").unwrap().cost(&usage);
        assert!((cost - (1.25 + 0.625 + 10.0)).abs() < 1e-9, "{cost}");
    }
}
