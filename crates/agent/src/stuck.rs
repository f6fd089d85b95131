//! Stuck detection: a model that repeats itself is stopped before it spends the budget. The
//! patterns are the original's (`openhands/controller/stuck.py`), looked for in what happened
//! since the user's last message:
//!
//! 1. the same action four times, with the same result each time;
//! 2. the same action three times, each answered by an error;
//! 3. the same message from the agent three times with nothing in between;
//! 4. two actions alternating, with their two results, over the last six steps;
//! 5. condensation after condensation with no step between (the context keeps overflowing).

use ohd_protocol::action::Action;
use ohd_protocol::{Event, EventBody, EventId, Observation, Source};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why the agent is stuck, in words a user understands.
pub fn detect(history: &BTreeMap<EventId, Event>) -> Option<String> {
    // Only what happened since the user's last message counts: a new message starts afresh.
    let since = history
        .values()
        .rev()
        .find(|e| {
            e.source == Source::User && matches!(e.body, EventBody::Action(Action::Message(_)))
        })
        .map(|e| e.id)?;
    let mut steps: Vec<Step> = Vec::new();
    for (_, event) in history.range(since..) {
        match &event.body {
            EventBody::Action(Action::Condensation(_) | Action::CondensationRequest(_)) => {
                steps.push(Step::Condensed)
            }
            EventBody::Action(Action::Message(m)) if event.source == Source::Agent => {
                steps.push(Step::Said(m.content.clone()))
            }
            EventBody::Action(action) if event.source == Source::Agent => {
                if let Some(key) = action_key(action) {
                    steps.push(Step::Acted { key, result: None });
                }
            }
            EventBody::Observation(Observation::AgentStateChanged { .. }) => {}
            EventBody::Observation(observation) if event.source == Source::Agent => {
                if let Some(Step::Acted { result, .. }) = steps.last_mut()
                    && result.is_none()
                {
                    *result = Some(result_key(observation));
                } else {
                    // An error for a call that could not be parsed: a step of its own.
                    steps.push(Step::Acted {
                        key: "invalid call".into(),
                        result: Some(result_key(observation)),
                    });
                }
            }
            _ => {}
        }
    }
    repeated_action(&steps)
        .or_else(|| repeated_error(&steps))
        .or_else(|| monologue(&steps))
        .or_else(|| alternating(&steps))
        .or_else(|| condensation_loop(&steps))
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Acted {
        key: String,
        result: Option<ResultKey>,
    },
    Said(String),
    Condensed,
}

#[derive(Debug, Clone, PartialEq)]
struct ResultKey {
    kind: &'static str,
    content: String,
    is_error: bool,
    /// A command still running (exit code -1): waiting on a quiet build looks the same each
    /// time and is not a loop.
    still_running: bool,
}

/// An action without what does not change what it does (its thought, its risk estimate, its
/// confirmation), as comparable text.
fn action_key(action: &Action) -> Option<String> {
    let mut value = serde_json::to_value(action).ok()?;
    // A think action's thought is what it does; elsewhere the thought is commentary.
    let is_think = matches!(action, Action::Think(_));
    if let Some(Value::Object(args)) = value.get_mut("args") {
        for noise in ["thought", "security_risk", "confirmation_state"] {
            if !(is_think && noise == "thought") {
                args.remove(noise);
            }
        }
    }
    Some(value.to_string())
}

fn result_key(observation: &Observation) -> ResultKey {
    let (content, is_error) = match observation {
        Observation::Run {
            content, extras, ..
        } => (format!("{content}\n{}", extras.metadata.exit_code), false),
        Observation::Error { content, .. } => (content.clone(), true),
        other => (other.message(), false),
    };
    let still_running = matches!(
        observation,
        Observation::Run { extras, .. } if extras.metadata.exit_code == -1
    );
    ResultKey {
        kind: observation.kind(),
        content,
        is_error,
        still_running,
    }
}

fn last_acts(steps: &[Step], n: usize) -> Option<Vec<(&String, &ResultKey)>> {
    let acts: Vec<(&String, &ResultKey)> = steps
        .iter()
        .rev()
        .take_while(|s| matches!(s, Step::Acted { .. }))
        .filter_map(|s| match s {
            Step::Acted {
                key,
                result: Some(result),
            } => Some((key, result)),
            _ => None,
        })
        .take(n)
        .collect();
    (acts.len() == n).then_some(acts)
}

fn describe(key: &str) -> String {
    let value: Value = serde_json::from_str(key).unwrap_or(Value::Null);
    let args = &value["args"];
    let what = args["command"]
        .as_str()
        .map(|c| format!("`{}`", c.chars().take(80).collect::<String>()))
        .or_else(|| args["path"].as_str().map(|p| format!("on {p}")))
        .unwrap_or_default();
    match value["action"].as_str() {
        Some(kind) => format!("{kind} {what}").trim().to_owned(),
        None => key.to_owned(),
    }
}

fn repeated_action(steps: &[Step]) -> Option<String> {
    let acts = last_acts(steps, 4)?;
    if acts.iter().any(|(_, r)| r.still_running) {
        return None;
    }
    let (key, result) = acts[0];
    acts.iter()
        .all(|(k, r)| *k == key && *r == result)
        .then(|| {
            format!(
                "The agent got stuck in a loop: it ran the same action ({}) four times in a row with the same result.",
                describe(key)
            )
        })
}

fn repeated_error(steps: &[Step]) -> Option<String> {
    let acts = last_acts(steps, 3)?;
    let key = acts[0].0;
    acts.iter()
        .all(|(k, r)| *k == key && r.is_error)
        .then(|| {
            format!(
                "The agent got stuck in a loop: it tried the same action ({}) three times in a row and got an error each time.",
                describe(key)
            )
        })
}

fn monologue(steps: &[Step]) -> Option<String> {
    let said: Vec<&String> = steps
        .iter()
        .rev()
        .take(3)
        .filter_map(|s| match s {
            Step::Said(text) => Some(text),
            _ => None,
        })
        .collect();
    (said.len() == 3 && said.iter().all(|t| *t == said[0])).then(|| {
        "The agent got stuck in a loop: it said the same thing three times in a row without doing anything.".to_owned()
    })
}

fn alternating(steps: &[Step]) -> Option<String> {
    let acts = last_acts(steps, 6)?;
    if acts.iter().any(|(_, r)| r.still_running) {
        return None;
    }
    let (a, b) = (acts[0], acts[1]);
    if a == b {
        return None;
    }
    acts.iter()
        .enumerate()
        .all(|(i, act)| *act == if i % 2 == 0 { a } else { b })
        .then(|| {
            format!(
                "The agent got stuck in a loop: it kept alternating between the same two actions ({} and {}) with the same results.",
                describe(a.0),
                describe(b.0)
            )
        })
}

fn condensation_loop(steps: &[Step]) -> Option<String> {
    let condensed = steps
        .iter()
        .rev()
        .take_while(|s| matches!(s, Step::Condensed))
        .count();
    (condensed >= 4).then(|| {
        "The agent got stuck in a loop: its history kept overflowing the model's context window however much it was condensed.".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acted(key: &str, content: &str, is_error: bool) -> Step {
        Step::Acted {
            key: key.into(),
            result: Some(ResultKey {
                kind: if is_error { "error" } else { "run" },
                content: content.into(),
                is_error,
                still_running: false,
            }),
        }
    }

    #[test]
    fn each_pattern_is_found_and_varied_work_is_not() {
        let same = vec![acted("a", "x", false); 4];
        assert!(repeated_action(&same).is_some());
        // Waiting on a quiet command, poll after poll, is not a loop.
        let mut polls = vec![acted("poll", "", false); 6];
        for poll in &mut polls {
            if let Step::Acted {
                result: Some(r), ..
            } = poll
            {
                r.still_running = true;
            }
        }
        assert!(repeated_action(&polls).is_none() && alternating(&polls).is_none());
        let varied: Vec<Step> = (0..10)
            .map(|i| acted(&format!("a{i}"), "x", false))
            .collect();
        assert!(repeated_action(&varied).is_none() && alternating(&varied).is_none());
        let errors = vec![
            acted("a", "e1", true),
            acted("a", "e2", true),
            acted("a", "e3", true),
        ];
        assert!(repeated_error(&errors).is_some());
        let mut ab = Vec::new();
        for _ in 0..3 {
            ab.push(acted("a", "x", false));
            ab.push(acted("b", "y", false));
        }
        assert!(alternating(&ab).is_some());
        assert!(monologue(&vec![Step::Said("hi".into()); 3]).is_some());
        assert!(condensation_loop(&vec![Step::Condensed; 4]).is_some());
        assert!(condensation_loop(&[Step::Condensed, acted("a", "x", false)]).is_none());
    }
}
