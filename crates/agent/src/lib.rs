//! The agent: an LLM with tools, one per conversation, acting through the runtime and
//! recording every step in the conversation's log.
//!
//! - [`tools`]: the CodeAct tool set offered to the model, and parsing its calls.
//! - [`prompt`]: the system prompt and the history as chat messages.
//! - [`agent`]: the loop and its states.

pub mod agent;
pub mod prompt;
pub mod redact;
pub mod tools;

pub use agent::{Agent, AgentContext, AgentSettings};
pub use redact::Secrets;
