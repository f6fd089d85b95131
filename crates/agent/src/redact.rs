//! Secrets never reach an event: provider tokens, the model's API key and the session key are
//! replaced in everything the agent records. The model reads its history from the events, so it
//! never sees them either.

use ohd_protocol::{EventBody, NewEvent, Observation};

/// Shorter values are not treated as secrets: replacing them would mangle ordinary output.
const MIN_SECRET_LEN: usize = 8;
pub const HIDDEN: &str = "<secret_hidden>";

#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets(values)
    }

    pub fn with(&self, more: impl IntoIterator<Item = String>) -> Self {
        Secrets::new(self.0.iter().cloned().chain(more))
    }

    /// `text` with every secret hidden.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        self.scrub(&mut text);
        text
    }

    fn scrub(&self, text: &mut String) {
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                *text = text.replace(secret.as_str(), HIDDEN);
            }
        }
    }

    fn scrub_opt(&self, text: &mut Option<String>) {
        if let Some(text) = text {
            self.scrub(text);
        }
    }

    fn scrub_value(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.scrub(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.scrub_value(v)),
            _ => {}
        }
    }

    /// Scrubs the parts of an event that carry text from the outside world.
    pub fn scrub_event(&self, event: &mut NewEvent) {
        if self.0.is_empty() {
            return;
        }
        if let EventBody::Observation(observation) = &mut event.body {
            match observation {
                Observation::Run {
                    content, extras, ..
                } => {
                    self.scrub(content);
                    self.scrub(&mut extras.command);
                }
                Observation::Read { content, .. }
                | Observation::Think { content, .. }
                | Observation::Error { content, .. }
                | Observation::UserRejected { content, .. }
                | Observation::AgentStateChanged { content, .. } => self.scrub(content),
                Observation::Edit { content, extras } => {
                    self.scrub(content);
                    self.scrub_opt(&mut extras.old_content);
                    self.scrub_opt(&mut extras.new_content);
                    self.scrub_opt(&mut extras.diff);
                }
                Observation::Mcp { content, extras } => {
                    self.scrub(content);
                    self.scrub_value(&mut extras.arguments);
                }
                Observation::Recall { content, extras } => {
                    self.scrub(content);
                    self.scrub(&mut extras.repo_instructions);
                    for knowledge in &mut extras.microagent_knowledge {
                        self.scrub(&mut knowledge.content);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ohd_protocol::Source;

    #[test]
    fn secrets_in_command_output_are_hidden() {
        let secrets = Secrets::new(["ghp_abcdefgh1234".to_owned(), "short".to_owned()]);
        let mut event = NewEvent::observation(
            Source::Agent,
            None,
            Observation::error("GITHUB_TOKEN=ghp_abcdefgh1234 short", ""),
        );
        secrets.scrub_event(&mut event);
        let EventBody::Observation(Observation::Error { content, .. }) = event.body else {
            panic!()
        };
        assert_eq!(content, "GITHUB_TOKEN=<secret_hidden> short");
    }
}
