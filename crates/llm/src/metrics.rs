//! Cost and tokens added up over a conversation, in the `llm_metrics` shape OpenHands puts on
//! agent actions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::Completion;

/// What a conversation's model calls have used so far. Serializes to exactly the OpenHands
/// `llm_metrics` object:
///
/// ```json
/// {"accumulated_cost":0.0,"max_budget_per_task":null,
///  "accumulated_token_usage":{"model":"openai/gpt-4o","prompt_tokens":0,"completion_tokens":0,
///    "cache_read_tokens":0,"cache_write_tokens":0,"context_window":0,"per_turn_token":0,
///    "response_id":""},
///  "costs":[],"response_latencies":[],"token_usages":[]}
/// ```
///
/// The three lists are always empty: OpenHands events carry the accumulated-only copy its
/// controller makes, and so do ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub accumulated_cost: f64,
    pub max_budget_per_task: Option<f64>,
    pub accumulated_token_usage: TokenUsage,
    #[serde(default, skip_deserializing)]
    costs: Vec<Value>,
    #[serde(default, skip_deserializing)]
    response_latencies: Vec<Value>,
    #[serde(default, skip_deserializing)]
    token_usages: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// The model's context window when it is configured; 0 when not known.
    pub context_window: u64,
    /// Prompt and completion tokens of the latest call alone.
    pub per_turn_token: u64,
    /// Kept empty in the accumulated usage, as OpenHands does (its sum keeps the first
    /// operand's id, which is the empty starting value).
    pub response_id: String,
}

impl Metrics {
    pub fn new(model: impl Into<String>) -> Metrics {
        Metrics {
            accumulated_cost: 0.0,
            max_budget_per_task: None,
            accumulated_token_usage: TokenUsage {
                model: model.into(),
                ..TokenUsage::default()
            },
            costs: Vec::new(),
            response_latencies: Vec::new(),
            token_usages: Vec::new(),
        }
    }

    pub fn with_max_budget(mut self, max_budget_per_task: Option<f64>) -> Metrics {
        self.max_budget_per_task = max_budget_per_task;
        self
    }

    /// Adds one completion's usage and cost (a completion of unknown price adds no cost).
    pub fn record(&mut self, completion: &Completion) {
        if let Some(cost) = completion.cost {
            self.accumulated_cost += cost;
        }
        let usage = &completion.usage;
        let total = &mut self.accumulated_token_usage;
        total.prompt_tokens += usage.prompt_tokens;
        total.completion_tokens += usage.completion_tokens;
        total.cache_read_tokens += usage.cache_read_tokens;
        total.cache_write_tokens += usage.cache_write_tokens;
        total.per_turn_token = usage.prompt_tokens + usage.completion_tokens;
    }

    /// Whether the cost so far has reached the budget, if there is one.
    pub fn over_budget(&self) -> bool {
        self.max_budget_per_task
            .is_some_and(|budget| self.accumulated_cost >= budget)
    }

    pub fn to_json(&self) -> Value {
        // Serializing plain numbers, strings and options cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
