//! What the model is sent: ohd's system prompt, and the conversation's events turned into chat
//! messages, with every tool call answered by its `tool_call_id` right after the assistant
//! message that made it (as the providers require).

use crate::condenser::Item;
use ohd_llm::{Message, ToolCall};
use ohd_protocol::action::Action;
use ohd_protocol::observation::Observation;
use ohd_protocol::{Event, EventBody, EventId, Source};
use serde_json::Value;
use std::collections::HashMap;

pub fn system_prompt(workspace: &str, sandboxed: bool) -> String {
    let place = if sandboxed {
        format!(
            "You work in a sandbox: the workspace is {workspace}, the rest of the system is read-only, and /tmp is yours."
        )
    } else {
        format!(
            "You work directly on the user's machine, in the workspace {workspace}. Do not change anything outside it."
        )
    };
    format!(
        "You are an autonomous software engineer. You solve the user's tasks by running shell \
commands and editing files with the tools you have, one careful step at a time.\n\n\
{place}\n\n\
How to work:\n\
- Look before you change: explore the files that matter, and read code before editing it.\n\
- Keep changes small and focused on the task; follow the style of the code around them.\n\
- After a change, check it: run the code, the tests, or a quick command that shows it works.\n\
- Commands run in one persistent bash shell. Prefer non-interactive flags (-y, --yes, \
--no-pager). Run servers and other long-running programs in the background with their output \
in a file.\n\
- If a command or an edit fails, read the error, then fix the cause rather than retrying blindly.\n\
- Never print or send secrets (tokens, keys, passwords) you come across.\n\
- When the task is done, or cannot be done, call `finish` with a short summary. When you need \
the user to answer a question, reply without calling a tool."
    )
}

/// Builds the chat messages from the condensed view of the history (in id order), after the
/// system prompt.
pub fn build(system: &str, view: &[Item], vision: bool) -> Vec<Message> {
    let mut builder = Builder {
        vision,
        ..Builder::default()
    };
    builder.out.push(Message::system(system));
    // Which action each observation answers, to find tool calls and user commands.
    let actions: HashMap<EventId, &Event> = view
        .iter()
        .filter_map(|item| match item {
            Item::Event(e) if matches!(e.body, EventBody::Action(_)) => Some((e.id, *e)),
            _ => None,
        })
        .collect();
    for item in view {
        match item {
            Item::Event(event) => builder.add(event, &actions),
            Item::Summary(summary) => {
                builder.close_open_calls();
                builder.push(Message::user(format!(
                    "Summary of the earlier part of this conversation, which you no longer see in full:\n{summary}"
                )));
            }
        }
    }
    builder.close_open_calls();
    builder.flush_deferred();
    builder.out
}

#[derive(Default)]
struct Builder {
    /// Whether the model takes images; without, they are replaced by a note.
    vision: bool,
    out: Vec<Message>,
    /// The response whose tool calls the last assistant message holds.
    current_response: Option<String>,
    /// Calls of that message still without an answer, in order: (id, name).
    open_calls: Vec<(String, String)>,
    /// Messages that arrived while calls were open; they go after the answers.
    deferred: Vec<Message>,
}

impl Builder {
    fn push(&mut self, message: Message) {
        if self.open_calls.is_empty() {
            self.out.push(message);
        } else {
            self.deferred.push(message);
        }
    }

    fn flush_deferred(&mut self) {
        if self.open_calls.is_empty() {
            self.out.append(&mut self.deferred);
        }
    }

    /// Answers every call that will not get a real result (finish, or calls cut off).
    fn close_open_calls(&mut self) {
        for (id, name) in std::mem::take(&mut self.open_calls) {
            let text = if name == crate::tools::FINISH {
                "The task was marked as finished."
            } else {
                "This call was not run."
            };
            self.out.push(Message::tool_result(id, text));
        }
        self.flush_deferred();
    }

    fn answer(&mut self, tool_call_id: &str, observation: &Observation) {
        if let Some(pos) = self
            .open_calls
            .iter()
            .position(|(id, _)| id == tool_call_id)
        {
            self.open_calls.remove(pos);
            let message = match (image_of(observation), self.vision) {
                (Some((path, url)), true) => {
                    Message::tool_result(tool_call_id, format!("The image {path}:"))
                        .with_images(vec![url.to_owned()])
                }
                _ => Message::tool_result(tool_call_id, observation_text(observation)),
            };
            self.out.push(message);
            self.flush_deferred();
        }
    }

    /// Starts the assistant message of a model response, with every call it made.
    fn open_response(&mut self, model_response: &Value, thought: &str) {
        let id = model_response["id"].as_str().unwrap_or_default().to_owned();
        if self.current_response.as_deref() == Some(id.as_str()) && !id.is_empty() {
            return;
        }
        self.close_open_calls();
        let message = &model_response["choices"][0]["message"];
        let calls: Vec<ToolCall> = message["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| {
                        Some(ToolCall {
                            id: c["id"].as_str()?.to_owned(),
                            name: c["function"]["name"].as_str()?.to_owned(),
                            arguments: c["function"]["arguments"]
                                .as_str()
                                .unwrap_or("{}")
                                .to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The answer's own text; the thought only for a response stored without its message
        // (the thought may be the model's reasoning, which is never sent back as text).
        let text = match message {
            Value::Object(_) => message["content"].as_str().unwrap_or_default(),
            _ => thought,
        }
        .to_owned();
        // Anthropic's thinking blocks go back with the turn they came in, signatures and all:
        // the API requires them beside tool results while thinking is on.
        let thinking: Vec<Value> = message["thinking_blocks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        self.open_calls = calls
            .iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect();
        self.out
            .push(Message::assistant(text, calls).with_thinking_blocks(thinking));
        self.current_response = Some(id);
    }

    fn add(&mut self, event: &Event, actions: &HashMap<EventId, &Event>) {
        if let Some(meta) = &event.tool_call_metadata {
            let thought = match &event.body {
                EventBody::Action(a) => action_thought(a),
                EventBody::Observation(_) => "",
            };
            self.open_response(&meta.model_response, thought);
            if let EventBody::Observation(observation) = &event.body {
                self.answer(&meta.tool_call_id, observation);
            }
            return;
        }
        match (&event.body, event.source) {
            (EventBody::Action(Action::Message(m)), Source::User) => {
                let images: Vec<String> = m
                    .image_urls
                    .iter()
                    .flatten()
                    .filter(|url| is_image_url(url))
                    .cloned()
                    .collect();
                let message = if images.is_empty() {
                    Message::user(m.content.clone())
                } else if self.vision {
                    Message::user(m.content.clone()).with_images(images)
                } else {
                    Message::user(format!(
                        "{}\n\n[The user attached {} image(s), which this model cannot see: it does not take images.]",
                        m.content,
                        images.len()
                    ))
                };
                self.push(message);
            }
            (EventBody::Action(Action::Message(m)), _) => {
                self.close_open_calls();
                self.push(Message::assistant(m.content.clone(), Vec::new()));
            }
            // What the workspace's microagents say.
            (EventBody::Observation(observation @ Observation::Recall { .. }), _) => {
                let text = observation_text(observation);
                if !text.is_empty() {
                    self.push(Message::user(text));
                }
            }
            // A command the user ran in the terminal: the model should know what happened.
            (
                EventBody::Observation(observation @ Observation::Run { extras, .. }),
                Source::User,
            ) => {
                let started_by_user = event
                    .cause
                    .and_then(|c| actions.get(&c))
                    .is_some_and(|a| a.source == Source::User);
                if started_by_user {
                    self.push(Message::user(format!(
                        "I ran `{}` in the terminal myself:\n{}",
                        extras.command,
                        observation_text(observation)
                    )));
                }
            }
            _ => {}
        }
    }
}

fn action_thought(action: &Action) -> &str {
    match action {
        Action::Run(a) => &a.thought,
        Action::Read(a) => &a.thought,
        Action::Edit(a) => &a.thought,
        Action::Finish(a) => &a.thought,
        Action::Mcp(a) => &a.thought,
        _ => "",
    }
}

/// An image a client may attach: a `data:image/...;base64,` URL or an http(s) URL.
pub fn is_image_url(url: &str) -> bool {
    // The formats every provider takes, up to 5 MB (as base64, a third more).
    const FORMATS: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
    const MAX_DATA_URL: usize = 5 * 1024 * 1024 * 4 / 3 + 64;
    if let Some(rest) = url.strip_prefix("data:") {
        return url.len() <= MAX_DATA_URL
            && rest
                .split_once(";base64,")
                .is_some_and(|(media_type, _)| FORMATS.contains(&media_type));
    }
    (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 8192
}

/// The path and data URL of an image a `view` returned.
fn image_of(observation: &Observation) -> Option<(&str, &str)> {
    match observation {
        Observation::Read { content, extras } if content.starts_with("data:image/") => {
            Some((extras.path.as_str(), content.as_str()))
        }
        _ => None,
    }
}

/// An observation as the model reads it.
pub fn observation_text(observation: &Observation) -> String {
    if let Some((path, url)) = image_of(observation) {
        return format!("[The image {path}, {} KB]", url.len() * 3 / 4 / 1024);
    }
    match observation {
        Observation::Run {
            content, extras, ..
        } => {
            let mut text = content.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            if let Some(dir) = &extras.metadata.working_dir {
                text.push_str(&format!("[Current working directory: {dir}]\n"));
            }
            if extras.metadata.suffix.is_empty() {
                text.push_str(&format!(
                    "[Command finished with exit code {}]",
                    extras.metadata.exit_code
                ));
            } else {
                text.push_str(extras.metadata.suffix.trim());
            }
            text
        }
        Observation::Read { content, .. }
        | Observation::Edit { content, .. }
        | Observation::Think { content, .. }
        | Observation::Error { content, .. }
        | Observation::UserRejected { content, .. }
        | Observation::AgentStateChanged { content, .. }
        | Observation::Mcp { content, .. } => content.clone(),
        Observation::Recall { extras, .. } => recall_text(extras),
    }
}

/// What the workspace's microagents tell the model, as a user message (the original's
/// workspace-context and microagent-knowledge blocks, in ohd's words).
fn recall_text(extras: &ohd_protocol::observation::RecallExtras) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !extras.repo_name.is_empty() {
        let branch = if extras.repo_branch.is_empty() {
            String::new()
        } else {
            format!(
                " It is checked out on branch \"{}\": work on that branch unless the user says otherwise.",
                extras.repo_branch
            )
        };
        parts.push(format!(
            "<REPOSITORY_INFO>\nThe repository {} is in {}.{branch}\n</REPOSITORY_INFO>",
            extras.repo_name, extras.repo_directory
        ));
    }
    if !extras.repo_instructions.is_empty() {
        parts.push(format!(
            "<REPOSITORY_INSTRUCTIONS>\n{}\n</REPOSITORY_INSTRUCTIONS>",
            extras.repo_instructions
        ));
    }
    if !extras.conversation_instructions.is_empty() {
        parts.push(format!(
            "<CONVERSATION_INSTRUCTIONS>\n{}\n</CONVERSATION_INSTRUCTIONS>",
            extras.conversation_instructions
        ));
    }
    for knowledge in &extras.microagent_knowledge {
        parts.push(format!(
            "<EXTRA_INFO>\nThis was added because the message mentions \"{}\"; it may or may not be relevant.\n\n{}\n</EXTRA_INFO>",
            knowledge.trigger, knowledge.content
        ));
    }
    parts.join("\n\n")
}
