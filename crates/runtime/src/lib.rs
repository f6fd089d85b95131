//! Where the agent acts.
//!
//! - [`sandbox`]: how a conversation's shell is isolated (bubblewrap, or a plain process).
//! - [`shell`]: one persistent bash under a PTY per conversation.
//! - [`editor`]: the `str_replace_editor` commands, confined to the workspace.
//! - [`workspace`]: mapping the paths the agent sees to paths on this machine, safely.
//! - [`truncate`]: keeping long outputs to a size a model and a client can take.

pub mod editor;
pub mod sandbox;
pub mod shell;
pub mod truncate;
pub mod workspace;
