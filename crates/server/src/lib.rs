//! The ohd server: REST and Socket.IO in front of the event log.
//!
//! - [`config`]: settings from flags, environment and `config.toml`.
//! - [`api`]: the REST routes, one file per group.
//! - [`socketio`]: the Socket.IO protocol on top of Engine.IO, and each client connection.
//! - [`delivery`]: the one place that decides what a client is sent and in what order.
//! - [`conversations`]: creating, finding and feeding conversations.
//! - [`settings`]: what the web UI's settings page saves, and the model it picks.
//! - [`user_secrets`]: provider tokens and custom secrets (write-only).
//! - [`web`]: ohd's own web page, or a built OpenHands frontend (`--web-ui`).
//! - [`guard`]: the Host, Origin and body-type checks every request passes first.
//! - [`listener`]: accepting connections, with timeouts and a cap.
//! - [`app`]: puts them together behind one listener.

pub mod agents;
pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conversations;
pub mod delivery;
pub mod documents;
pub mod error;
pub mod guard;
pub mod listener;
pub mod owner_only;
pub mod providers;
pub mod repository;
pub mod settings;
pub mod socketio;
pub mod user_secrets;
pub mod web;

pub use app::{AppState, Server};
pub use config::Config;
