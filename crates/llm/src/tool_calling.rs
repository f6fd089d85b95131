//! Native or prompted tool calls. A model is offered its tools in the request's `tools`
//! (native), or, for models and servers that take none, in its prompt ([`crate::prompted`]).
//! By default a client starts native and, the first time a server refuses `tools`, turns to
//! prompted calls for the rest of its life, sending the refused request again at once.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::LlmClient;
use crate::error::{LlmError, refuses_tools};
use crate::http::Wire;
use crate::prompted;
use crate::retry::RetryObserver;
use crate::types::{Completion, CompletionRequest};

/// How tools reach the model (`native_tool_calling` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Always in `tools`.
    Native,
    /// Always in the prompt.
    Prompted,
    /// In `tools` until a server refuses them, then in the prompt.
    Auto,
}

pub(crate) struct ToolCalling<W> {
    wire: W,
    mode: Mode,
    /// Set (in `Auto` mode) once a server refused `tools`.
    refused: AtomicBool,
}

impl<W: Wire> ToolCalling<W> {
    pub(crate) fn new(wire: W, mode: Mode) -> ToolCalling<W> {
        ToolCalling {
            wire,
            mode,
            refused: AtomicBool::new(false),
        }
    }

    fn prompted_now(&self) -> bool {
        match self.mode {
            Mode::Native => false,
            Mode::Prompted => true,
            Mode::Auto => self.refused.load(Ordering::Relaxed),
        }
    }

    async fn complete_prompted(
        &self,
        request: &CompletionRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        if !prompted::uses_tools(request) {
            return self.wire.send(request, &[], observer).await;
        }
        let offered = !request.tools.is_empty();
        let stop: &[&str] = if offered && self.wire.takes_stop() {
            &[prompted::STOP]
        } else {
            &[]
        };
        let completion = self
            .wire
            .send(&prompted::request(request), stop, observer)
            .await?;
        Ok(if offered {
            prompted::read_reply(completion, &request.tools)
        } else {
            completion
        })
    }
}

#[async_trait]
impl<W: Wire> LlmClient for ToolCalling<W> {
    async fn complete(
        &self,
        request: &CompletionRequest,
        observer: &dyn RetryObserver,
    ) -> Result<Completion, LlmError> {
        if self.prompted_now() {
            return self.complete_prompted(request, observer).await;
        }
        match self.wire.send(request, &[], observer).await {
            Err(LlmError::BadRequest(message))
                if self.mode == Mode::Auto
                    && prompted::uses_tools(request)
                    && refuses_tools(&message) =>
            {
                // The message went through the client's redaction: it holds no key.
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        model = %self.wire.model(),
                        refusal = %message,
                        "the model server takes no tools; describing them in the prompt from now on"
                    );
                }
                self.complete_prompted(request, observer).await
            }
            answer => answer,
        }
    }

    fn model(&self) -> &str {
        self.wire.model()
    }
}
