//! The agent: an LLM with tools, one per conversation, acting through the runtime and
//! recording every step in the conversation's log.
//!
//! - [`tools`]: the CodeAct tool set offered to the model, and parsing its calls.
//! - [`prompt`]: the system prompt and the history as chat messages.
//! - [`condenser`]: the condensed view of a long history the model is sent.
//! - [`stuck`]: noticing a model that repeats itself.
//! - [`agent`]: the loop and its states, confirmation mode.

pub mod agent;
pub mod condenser;
pub mod microagents;
pub mod prompt;
pub mod redact;
pub mod stuck;
pub mod tools;

pub use agent::{
    Agent, AgentContext, AgentSettings, Confirmation, LatestSettings, Presence, RepositoryInfo,
    waiting_notice,
};
pub use condenser::CondenserSettings;
pub use redact::Secrets;
