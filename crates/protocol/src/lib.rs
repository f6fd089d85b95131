//! The OpenHands V0 wire format, as ohd speaks it.
//!
//! Everything here is plain data: what a client may send (`client`), what the server stores and
//! broadcasts (`event`, `action`, `observation`), and the payloads that are sent but never stored
//! (`notice`). No I/O lives in this crate, so every other crate can depend on it.

pub mod action;
pub mod agent_state;
pub mod client;
pub mod event;
pub mod ids;
pub mod notice;
pub mod observation;
pub mod time;

pub use action::Action;
pub use agent_state::AgentState;
pub use client::{ClientAction, InputError};
pub use event::{Event, EventBody, NewEvent, Source, ToolCallMetadata};
pub use ids::{ConversationId, EventId, InvalidConversationId};
pub use observation::Observation;
pub use time::Timestamp;
