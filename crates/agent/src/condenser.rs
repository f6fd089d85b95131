//! What the model sees of a long history: the log stays whole, and a condenser keeps the view
//! sent to the model within bounds, as the original's default condenser does. The first events
//! are kept (the system prompt, the first user message, ...), the forgotten middle is replaced
//! by a summary the model writes, and the newest events follow. Each condensation is stored in
//! the log as a `condensation` action, so a restart or a replay rebuilds the same view.

use crate::prompt;
use ohd_llm::Message;
use ohd_protocol::action::{Action, CondensationArgs};
use ohd_protocol::{Event, EventBody, EventId, Observation, Source};
use std::collections::{BTreeMap, HashSet};

/// How the view is kept small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CondenserSettings {
    /// Off: nothing is condensed for size, only when the model's window overflows.
    pub enabled: bool,
    /// The most events the model sees (`condenser_max_size`).
    pub max_size: usize,
    /// Events kept from the start of the history.
    pub keep_first: usize,
}

impl Default for CondenserSettings {
    fn default() -> Self {
        CondenserSettings {
            enabled: true,
            max_size: 120,
            keep_first: 4,
        }
    }
}

/// One part of the view: an event from the log, or the summary of what was forgotten.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    Event(&'a Event),
    Summary(&'a str),
}

/// The events the model is sent, in order, after every condensation so far.
pub struct View<'a> {
    pub items: Vec<Item<'a>>,
    /// A context overflow asked for a condensation that has not happened yet.
    pub unhandled_request: bool,
}

/// Whether an event becomes part of what the model reads. State changes, condensations and the
/// commands the user runs (their observation tells the model) are not.
fn seen_by_model(event: &Event) -> bool {
    match &event.body {
        EventBody::Action(Action::System(_) | Action::Message(_)) => true,
        EventBody::Action(Action::Condensation(_) | Action::CondensationRequest(_)) => false,
        EventBody::Observation(Observation::AgentStateChanged { .. }) => false,
        EventBody::Observation(Observation::Recall { .. }) => true,
        EventBody::Observation(Observation::Run { .. }) if event.source == Source::User => true,
        _ => event.tool_call_metadata.is_some(),
    }
}

/// The forgotten ids of every condensation, merged: ranges sorted for a binary search, and the
/// ids of condensations that list them one by one.
#[derive(Default)]
struct Forgotten {
    ranges: Vec<(u64, u64)>,
    ids: HashSet<u64>,
}

impl Forgotten {
    fn add(&mut self, args: &CondensationArgs) {
        if let Some(ids) = &args.forgotten_event_ids {
            self.ids.extend(ids.iter().copied());
        } else if let (Some(start), Some(end)) =
            (args.forgotten_events_start_id, args.forgotten_events_end_id)
            && start <= end
        {
            self.ranges.push((start, end));
        }
    }

    fn merge(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for (start, end) in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }

    fn contains(&self, id: u64) -> bool {
        if self.ids.contains(&id) {
            return true;
        }
        let at = self.ranges.partition_point(|(start, _)| *start <= id);
        at > 0 && self.ranges[at - 1].1 >= id
    }
}

/// The view of `history`: every condensation applied, the latest summary in its place.
pub fn view(history: &BTreeMap<EventId, Event>) -> View<'_> {
    let mut forgotten = Forgotten::default();
    let mut summary: Option<(&str, usize)> = None;
    let mut unhandled_request = false;
    for event in history.values() {
        match &event.body {
            EventBody::Action(Action::Condensation(args)) => {
                forgotten.add(args);
                if let (Some(text), Some(offset)) = (&args.summary, args.summary_offset) {
                    summary = Some((text.as_str(), offset));
                }
                unhandled_request = false;
            }
            EventBody::Action(Action::CondensationRequest(_)) => unhandled_request = true,
            _ => {}
        }
    }
    forgotten.merge();
    let mut items: Vec<Item> = Vec::new();
    // Tool results whose call was forgotten would answer nothing: they go too.
    let mut kept_calls: HashSet<&str> = HashSet::new();
    for event in history.values() {
        if !seen_by_model(event) || forgotten.contains(event.id.0) {
            continue;
        }
        if let Some(meta) = &event.tool_call_metadata {
            match &event.body {
                EventBody::Action(_) => {
                    kept_calls.insert(meta.tool_call_id.as_str());
                }
                // An error about a call that could not be parsed answers it without an action.
                EventBody::Observation(_) if event.cause.is_none() => {
                    kept_calls.insert(meta.tool_call_id.as_str());
                }
                EventBody::Observation(_) => {
                    if !kept_calls.contains(meta.tool_call_id.as_str()) {
                        continue;
                    }
                }
            }
        }
        items.push(Item::Event(event));
    }
    if let Some((text, offset)) = summary {
        items.insert(offset.min(items.len()), Item::Summary(text));
    }
    View {
        items,
        unhandled_request,
    }
}

/// A rough token count: about four characters a token in English and code, and a few tokens
/// of framing per message. No tokenizer is exact for every provider; this errs on the side of
/// counting more, and an overflow the provider reports still condenses harder.
pub fn estimate_tokens(text_len: usize) -> u64 {
    (text_len as u64).div_ceil(3) + 4
}

/// The estimated tokens of one item as the model reads it.
pub fn item_tokens(item: &Item) -> u64 {
    match item {
        Item::Summary(text) => estimate_tokens(text.len()),
        Item::Event(event) => {
            estimate_tokens(event_text_len(event)) + IMAGE_TOKENS * images_in(event) as u64
        }
    }
}

/// What an image costs, about, at the providers' sizes: counted the same way for a request and
/// for the events it is made of.
const IMAGE_TOKENS: u64 = 1_000;

/// The summary the model is asked for may take up to this many tokens of the view.
const SUMMARY_RESERVE: u64 = 4_096;

/// The images an event shows the model: a user's attachments, or a viewed image.
fn images_in(event: &Event) -> usize {
    match &event.body {
        EventBody::Action(Action::Message(m)) if event.source == Source::User => {
            m.image_urls.as_ref().map_or(0, Vec::len)
        }
        EventBody::Observation(Observation::Read { content, .. })
            if content.starts_with("data:image/") =>
        {
            1
        }
        _ => 0,
    }
}

fn event_text_len(event: &Event) -> usize {
    let call = event
        .tool_call_metadata
        .as_ref()
        .map(|m| m.model_response.to_string().len() / 2)
        .unwrap_or(0);
    let own = match &event.body {
        EventBody::Action(action) => match action {
            Action::Message(m) => m.content.len(),
            Action::System(s) => s.content.len() + s.tools.to_string().len(),
            other => other.message().len(),
        },
        EventBody::Observation(observation) => prompt::observation_text(observation).len(),
    };
    own + call
}

/// The estimated tokens of a request's messages.
pub fn messages_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            estimate_tokens(
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len() + c.id.len())
                        .sum::<usize>(),
            ) + IMAGE_TOKENS * m.images.len() as u64
        })
        .sum()
}

/// What one condensation forgets: the ids of the events between the kept head and the kept
/// tail, and the summary it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub start: EventId,
    pub end: EventId,
    pub previous_summary: Option<String>,
    /// Where the summary goes in the view: after the kept head.
    pub summary_offset: usize,
}

/// Why nothing can be forgotten.
#[derive(Debug, Clone, PartialEq)]
pub enum CannotCondense {
    /// The view is as small as it gets: the head and the newest events alone.
    NothingLeft,
}

/// Which events to forget so that the view holds at most `max_events / 2` events and
/// `max_tokens / 2` tokens (half, so that a condensation buys room for many more steps), keeping
/// the first `keep_first` events and never splitting a model response from its results.
pub fn plan(
    view: &View,
    keep_first: usize,
    max_events: usize,
    max_tokens: u64,
) -> Result<Plan, CannotCondense> {
    let items = &view.items;
    let previous_summary = items.iter().find_map(|i| match i {
        Item::Summary(text) => Some((*text).to_owned()),
        Item::Event(_) => None,
    });
    // The events, without the old summary, which the new one replaces.
    let events: Vec<&Event> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(*e),
            Item::Summary(_) => None,
        })
        .collect();
    let mut head = keep_first.min(events.len());
    // The head never ends inside a response: its results stay with it.
    while head > 0 && head < events.len() && same_response(events[head - 1], events[head]) {
        head += 1;
    }
    let head_tokens: u64 = events[..head]
        .iter()
        .map(|e| item_tokens(&Item::Event(e)))
        .sum();
    let event_budget = (max_events / 2).saturating_sub(head + 1).max(1);
    // Room is left for the summary that joins the view, so one condensation is enough.
    let token_budget = (max_tokens / 2)
        .saturating_sub(head_tokens)
        .saturating_sub(SUMMARY_RESERVE.min(max_tokens / 4));
    // The tail: the newest events within both budgets, and at least the newest one.
    let mut tail_start = events.len();
    let mut tail_tokens = 0;
    while tail_start > head {
        let tokens = item_tokens(&Item::Event(events[tail_start - 1]));
        let count = events.len() - tail_start;
        if count > 0 && (count + 1 > event_budget || tail_tokens + tokens > token_budget) {
            break;
        }
        tail_tokens += tokens;
        tail_start -= 1;
    }
    // The tail never starts inside a response: results whose call is forgotten go with it.
    while tail_start < events.len()
        && tail_start > head
        && same_response(events[tail_start - 1], events[tail_start])
    {
        tail_start += 1;
    }
    if tail_start <= head {
        return Err(CannotCondense::NothingLeft);
    }
    Ok(Plan {
        start: events[head].id,
        end: events[tail_start - 1].id,
        previous_summary,
        summary_offset: head,
    })
}

/// Whether two neighbouring events belong to the same model response (its calls and their
/// results), which the model must see whole or not at all.
fn same_response(a: &Event, b: &Event) -> bool {
    match (&a.tool_call_metadata, &b.tool_call_metadata) {
        (Some(x), Some(y)) => {
            // An empty id says nothing (older events of servers that sent none).
            let id = |m: &ohd_protocol::ToolCallMetadata| {
                m.model_response["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
            };
            x.tool_call_id == y.tool_call_id || (id(x).is_some() && id(x) == id(y))
        }
        _ => false,
    }
}

/// The most characters of one forgotten event put into the summary request.
const EVENT_CHARS_FOR_SUMMARY: usize = 2_000;

/// The request that asks the model for the summary of the forgotten events: the previous
/// summary and each forgotten event, cut to size, within `max_chars` all together.
pub fn summary_request(
    history: &BTreeMap<EventId, Event>,
    plan: &Plan,
    max_chars: usize,
) -> Vec<Message> {
    let mut text = String::from(SUMMARY_INSTRUCTIONS);
    text.push_str("\n\n<PREVIOUS SUMMARY>\n");
    text.push_str(&cut(plan.previous_summary.as_deref().unwrap_or(""), 8_000));
    text.push_str("\n</PREVIOUS SUMMARY>\n\n");
    let forgotten: Vec<&Event> = history
        .range(plan.start..=plan.end)
        .map(|(_, e)| e)
        .filter(|e| seen_by_model(e))
        .collect();
    // An even share of the room for each event, so the newest are not the ones cut.
    let share = (max_chars.saturating_sub(text.len()) / forgotten.len().max(1))
        .clamp(200, EVENT_CHARS_FOR_SUMMARY);
    for event in forgotten {
        text.push_str(&format!(
            "<EVENT id={}>\n{}\n</EVENT>\n",
            event.id.0,
            cut(&describe(event), share)
        ));
    }
    text.push_str("Now summarize the events using the rules above.");
    vec![Message::user(text)]
}

/// A summary written without the model, when asking it failed: what was done, in one line per
/// action, so the task can go on.
pub fn plain_summary(history: &BTreeMap<EventId, Event>, plan: &Plan, why: &str) -> String {
    let mut text = format!(
        "(The model could not summarize the earlier events ({why}); this is a plain list of them.)\n"
    );
    if let Some(previous) = &plan.previous_summary {
        text.push_str(&cut(previous, 4_000));
        text.push('\n');
    }
    for (_, event) in history.range(plan.start..=plan.end) {
        if let EventBody::Action(action) = &event.body
            && seen_by_model(event)
        {
            text.push_str(&format!("- {}\n", cut(&action.message(), 160)));
        }
    }
    cut(&text, 12_000)
}

fn describe(event: &Event) -> String {
    let who = match event.source {
        Source::User => "user",
        Source::Agent => "agent",
        Source::Environment => "environment",
    };
    match &event.body {
        EventBody::Action(Action::Message(m)) => format!("{who} message: {}", m.content),
        EventBody::Action(action) => format!("{who} {}: {}", action.kind(), action.message()),
        EventBody::Observation(observation) => format!(
            "{} result: {}",
            observation.kind(),
            prompt::observation_text(observation)
        ),
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), its middle left out.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let half = max / 2;
    let mut head_end = half;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - half;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}\n[... cut ...]\n{}",
        &text[..head_end],
        &text[tail_start..]
    )
}

/// ohd's own words for what the original's summarizing condenser asks of the model.
const SUMMARY_INSTRUCTIONS: &str = "You keep the memory of an autonomous software agent whose \
conversation has grown too long. Below are the previous summary, if any, and the events that \
are about to leave the agent's view. Write a new summary that replaces both, so the agent can \
carry on without them. Keep it short and factual, under these headings, leaving out those that \
do not apply:\n\
USER_CONTEXT: what the user asked for, with every requirement and clarification\n\
COMPLETED: what is done, with results\n\
PENDING: what is left to do\n\
CURRENT_STATE: where things stand (directories, running processes, variables)\n\
CODE_STATE: files, functions and data structures touched\n\
TESTS: tests run, failures and error messages\n\
CHANGES: edits made\n\
DEPS: dependencies installed or changed\n\
VERSION_CONTROL_STATUS: branch, commits, pull requests\n\
Keep exact names, paths, ids and numbers.";

#[cfg(test)]
mod tests {
    use super::*;
    use ohd_protocol::action::{MessageArgs, RunArgs, SystemArgs};
    use ohd_protocol::{NewEvent, ToolCallMetadata};
    use serde_json::json;

    fn event(id: u64, new: NewEvent) -> Event {
        Event {
            id: EventId(id),
            timestamp: ohd_protocol::time::Timestamp::now(),
            source: new.source,
            cause: new.cause,
            body: new.body,
            tool_call_metadata: new.tool_call_metadata,
            llm_metrics: None,
            timeout: None,
        }
    }

    fn meta(call: &str) -> ToolCallMetadata {
        ToolCallMetadata {
            function_name: "execute_bash".into(),
            tool_call_id: call.into(),
            model_response: json!({"id": format!("resp-{call}"), "choices": [{"message": {"tool_calls": [{"id": call, "function": {"name": "execute_bash", "arguments": "{}"}}]}}]}),
            total_calls_in_response: 1,
        }
    }

    /// System, a user message, then `steps` commands with their results.
    fn history(steps: u64) -> BTreeMap<EventId, Event> {
        let mut h = BTreeMap::new();
        let add = |h: &mut BTreeMap<EventId, Event>, new: NewEvent| {
            let id = h.len() as u64;
            h.insert(EventId(id), event(id, new));
        };
        add(
            &mut h,
            NewEvent::action(
                Source::Agent,
                Action::System(SystemArgs {
                    content: "sys".into(),
                    tools: json!([]),
                    openhands_version: String::new(),
                    agent_class: String::new(),
                }),
            ),
        );
        add(
            &mut h,
            NewEvent::action(Source::User, Action::Message(MessageArgs::user("do it"))),
        );
        for step in 0..steps {
            let call = format!("c{step}");
            let mut action = NewEvent::action(Source::Agent, Action::Run(RunArgs::new("ls")));
            action.tool_call_metadata = Some(meta(&call));
            let action_id = h.len() as u64;
            add(&mut h, action);
            let mut observation = NewEvent::observation(
                Source::Agent,
                Some(EventId(action_id)),
                Observation::error("out", ""),
            );
            observation.tool_call_metadata = Some(meta(&call));
            add(&mut h, observation);
            add(
                &mut h,
                NewEvent::observation(
                    Source::Environment,
                    None,
                    Observation::agent_state_changed(ohd_protocol::AgentState::Running, ""),
                ),
            );
        }
        h
    }

    #[test]
    fn a_plan_keeps_the_head_and_tail_and_never_splits_a_call_from_its_result() {
        let mut h = history(100);
        let v = view(&h);
        assert_eq!(v.items.len(), 202);
        let p = plan(&v, 4, 120, u64::MAX).unwrap();
        // Head: system, message, first call and its result (4); the tail starts at a call.
        assert_eq!(p.start, EventId(5));
        let args = CondensationArgs {
            forgotten_events_start_id: Some(p.start.0),
            forgotten_events_end_id: Some(p.end.0),
            summary: Some("summary".into()),
            summary_offset: Some(4),
            ..Default::default()
        };
        let next = h.keys().next_back().unwrap().0 + 1;
        h.insert(
            EventId(next),
            event(
                next,
                NewEvent::action(Source::Agent, Action::Condensation(args)),
            ),
        );
        let v = view(&h);
        assert!(v.items.len() <= 60, "{}", v.items.len());
        assert!(matches!(v.items[4], Item::Summary("summary")));
        // Every result in the view has its call before it.
        let mut calls = HashSet::new();
        for item in &v.items {
            if let Item::Event(e) = item
                && let Some(m) = &e.tool_call_metadata
            {
                match e.body {
                    EventBody::Action(_) => {
                        calls.insert(m.tool_call_id.clone());
                    }
                    EventBody::Observation(_) => assert!(calls.contains(&m.tool_call_id)),
                }
            }
        }
    }

    #[test]
    fn a_token_bound_forgets_more_and_nothing_left_is_said() {
        let h = history(50);
        let v = view(&h);
        let loose = plan(&v, 4, 60, u64::MAX).unwrap();
        let tight = plan(&v, 4, 60, 400).unwrap();
        assert!(tight.end > loose.end);
        let short = history(1);
        assert_eq!(
            plan(&view(&short), 4, 120, 10),
            Err(CannotCondense::NothingLeft)
        );
    }

    #[test]
    fn forgotten_ranges_merge_and_answer_lookups() {
        let mut f = Forgotten::default();
        for (a, b) in [(10, 20), (5, 9), (30, 40), (15, 25)] {
            f.add(&CondensationArgs {
                forgotten_events_start_id: Some(a),
                forgotten_events_end_id: Some(b),
                ..Default::default()
            });
        }
        f.merge();
        assert_eq!(f.ranges, vec![(5, 25), (30, 40)]);
        assert!(f.contains(5) && f.contains(25) && f.contains(35));
        assert!(!f.contains(4) && !f.contains(26) && !f.contains(41));
    }
}
