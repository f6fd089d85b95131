//! Tool calls for models and servers that take no `tools`: the tools are described in the system
//! message, the model writes a call as text in the format OpenHands teaches
//!
//! ```text
//! <function=NAME>
//! <parameter=ARG>value</parameter>
//! </function>
//! ```
//!
//! and the reply is read back into [`ToolCall`]s, so that the agent sees what a native call
//! would have given it. Earlier calls in the history are written in that form too, and their
//! results become user messages that name the tool.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::http;
use crate::types::{Completion, CompletionRequest, Message, Role, ToolCall, ToolSpec, set_message};

/// Sent as a stop sequence, so that the model stops once its call is written. Without the `>`,
/// as in the original: the model may be stopped a character earlier than that, never later.
pub(crate) const STOP: &str = "</function";

const OPEN: &str = "<function=";
const CLOSE: &str = "</function>";
const PARAMETER: &str = "<parameter=";
const PARAMETER_CLOSE: &str = "</parameter>";

/// Whether a request needs the prompted form: it offers tools, or its history holds calls.
pub(crate) fn uses_tools(request: &CompletionRequest) -> bool {
    !request.tools.is_empty()
        || request
            .messages
            .iter()
            .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// The request without `tools`: the tools described in the system message, earlier calls as
/// text, their results as user messages.
pub(crate) fn request(request: &CompletionRequest) -> CompletionRequest {
    let mut messages = history(&request.messages, &request.tools);
    if !request.tools.is_empty() {
        let instructions = instructions(&request.tools);
        match messages.iter_mut().find(|m| m.role == Role::System) {
            Some(system) => system.content.push_str(&instructions),
            None => messages.insert(0, Message::system(instructions.trim_start())),
        }
    }
    CompletionRequest {
        messages,
        tools: Vec::new(),
        ..request.clone()
    }
}

/// How to call the tools, appended to the system message.
fn instructions(tools: &[ToolSpec]) -> String {
    format!(
        "\n\nYou can call the functions below.\n\n{}\n\
         To call one, end your reply with the call, written like this:\n\n\
         <function=FUNCTION_NAME>\n\
         <parameter=FIRST_PARAMETER>its value</parameter>\n\
         <parameter=SECOND_PARAMETER>\n\
         a value written\n\
         over several lines\n\
         </parameter>\n\
         </function>\n\n\
         Rules:\n\
         - A call begins with <function= and ends with </function>.\n\
         - Give every required parameter.\n\
         - Write values as they are, without quotes or escapes; write arrays and objects as JSON.\n\
         - Make at most one call per reply. Any explanation goes before the call, nothing after it.\n\
         - When no function is needed, answer in plain text and do not mention functions.\n",
        describe(tools)
    )
}

/// Each tool with its name, description and parameters (type, required or not, description,
/// allowed values), laid out as the original lays them out.
pub(crate) fn describe(tools: &[ToolSpec]) -> String {
    let mut out = String::new();
    for (i, tool) in tools.iter().enumerate() {
        let n = i + 1;
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("---- BEGIN FUNCTION #{n}: {} ----\n", tool.name));
        out.push_str(&format!("Description: {}\n", tool.description.trim_end()));
        let properties = tool
            .parameters
            .get("properties")
            .and_then(Value::as_object)
            .filter(|p| !p.is_empty());
        match properties {
            None => out.push_str("This function takes no parameters.\n"),
            Some(properties) => {
                out.push_str("Parameters:\n");
                let required = required(&tool.parameters);
                for (j, (name, schema)) in properties.iter().enumerate() {
                    let kind = type_names(schema);
                    let status = if required.contains(&name.as_str()) {
                        "required"
                    } else {
                        "optional"
                    };
                    let description = schema
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("(no description)")
                        .trim_end();
                    out.push_str(&format!(
                        "  ({}) {name} ({kind}, {status}): {description}\n",
                        j + 1
                    ));
                    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                        let values: Vec<String> =
                            values.iter().map(|v| format!("`{}`", plain(v))).collect();
                        out.push_str(&format!("Allowed values: [{}]\n", values.join(", ")));
                    }
                }
            }
        }
        out.push_str(&format!("---- END FUNCTION #{n} ----\n"));
    }
    out
}

fn required(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A parameter's type as the description shows it: `string` when the schema does not say.
fn type_names(schema: &Value) -> String {
    match schema.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(Value::Array(kinds)) => {
            let kinds: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
            kinds.join(" or ")
        }
        _ => "string".to_owned(),
    }
}

/// The type a value is read as: the schema's, or its first one but `null`, also among the
/// alternatives of `anyOf` / `oneOf` (how Pydantic, and so FastMCP, writes `Optional[...]`).
fn value_type(schema: Option<&Value>) -> Option<&str> {
    let schema = schema?;
    match schema.get("type") {
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null"),
        _ => ["anyOf", "oneOf"]
            .iter()
            .filter_map(|key| schema.get(*key).and_then(Value::as_array))
            .flatten()
            .filter_map(|alternative| value_type(Some(alternative)))
            .find(|k| *k != "null"),
    }
}

/// A value as written in a call: strings as they are, anything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The history in prompted form. An assistant message that made several calls becomes one
/// message per call, each followed by its result, so that the model only ever sees calls made
/// one at a time, as it is asked to make them.
fn history(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
    let mut out = Vec::with_capacity(messages.len());
    let mut calls: HashMap<&str, &ToolCall> = HashMap::new();
    // Calls of the last assistant message not written yet: each is written before its result.
    let mut held: Vec<&ToolCall> = Vec::new();
    for message in messages {
        match message.role {
            Role::Assistant if !message.tool_calls.is_empty() => {
                write_held(&mut out, &mut held);
                calls.extend(message.tool_calls.iter().map(|c| (c.id.as_str(), c)));
                let mut content = message.content.trim_end().to_owned();
                if let Some(first) = message.tool_calls.first() {
                    if !content.is_empty() {
                        content.push_str("\n\n");
                    }
                    content.push_str(&render(first));
                }
                held.extend(message.tool_calls.iter().skip(1));
                out.push(Message {
                    content,
                    tool_calls: Vec::new(),
                    ..message.clone()
                });
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                if let Some(pos) = held.iter().position(|c| c.id == id) {
                    let call = held.remove(pos);
                    out.push(Message::assistant(render(call), Vec::new()));
                }
                let call = calls.get(id).copied();
                let name = call.map_or("function", |c| c.name.as_str());
                // The agent answers a call it could not read as JSON; the model wrote no JSON,
                // so it is told what was wrong with what it did write.
                let content = match call.and_then(|c| unreadable(c, tools)) {
                    Some(reason) => retry_text(&reason),
                    None => message.content.clone(),
                };
                out.push(
                    Message::user(format!("Result of the call to {name}:\n{content}"))
                        .with_images(message.images.clone()),
                );
            }
            _ => {
                write_held(&mut out, &mut held);
                out.push(message.clone());
            }
        }
    }
    write_held(&mut out, &mut held);
    out
}

/// Writes calls whose results never came (the agent answers every call, so only a history cut
/// short leaves any).
fn write_held(out: &mut Vec<Message>, held: &mut Vec<&ToolCall>) {
    for call in held.drain(..) {
        out.push(Message::assistant(render(call), Vec::new()));
    }
}

/// What the model is told about a call it wrote that could not be read.
fn retry_text(reason: &str) -> String {
    format!(
        "The function call could not be read: {reason}. Write it again in the format given at \
         the start."
    )
}

/// A call in text form. A call that was not read (its arguments are the text the model wrote)
/// is given back as written.
pub(crate) fn render(call: &ToolCall) -> String {
    if call.arguments.trim_start().starts_with(OPEN) {
        return call.arguments.trim().to_owned();
    }
    let mut out = format!("{OPEN}{}>\n", call.name);
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(Value::Object(arguments)) => {
            for (name, value) in &arguments {
                let value = plain(value);
                if value.contains('\n') {
                    out.push_str(&format!("{PARAMETER}{name}>\n{value}\n{PARAMETER_CLOSE}\n"));
                } else {
                    out.push_str(&format!("{PARAMETER}{name}>{value}{PARAMETER_CLOSE}\n"));
                }
            }
        }
        Ok(Value::Null) => {}
        // Native arguments that were not a JSON object: shown as they were.
        _ if call.arguments.trim().is_empty() => {}
        _ => {
            out.push_str(call.arguments.trim());
            out.push('\n');
        }
    }
    out.push_str(CLOSE);
    out
}

/// Why a call the prompted reader gave back unread (arguments starting with `<function=`)
/// could not be read, read again against the tools.
fn unreadable(call: &ToolCall, tools: &[ToolSpec]) -> Option<String> {
    if !call.arguments.trim_start().starts_with(OPEN) {
        return None;
    }
    Some(match parse(&call.arguments, tools, false) {
        Reply::Invalid { reason, .. } => reason,
        // It reads now, so what stopped it then was the end of the reply.
        _ => "the reply ended before the call was complete".to_owned(),
    })
}

/// A reply read for a call.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// No call in it.
    Text,
    Call {
        /// What came before the call.
        text: String,
        name: String,
        /// A JSON object, values typed by the tool's schema.
        arguments: String,
    },
    /// A call was begun but cannot be made.
    Invalid {
        text: String,
        /// The name written, or empty.
        name: String,
        /// The call as the model wrote it, from `<function=`.
        written: String,
        /// What is wrong, for the model.
        reason: String,
    },
}

/// Reads the first call in `reply`; anything after it is dropped, as the model was told to
/// write nothing there. `cut_off` says the reply stopped at the token limit: a call without its
/// end tag is then incomplete (without it, a missing end tag is the stop sequence at work).
pub(crate) fn parse(reply: &str, tools: &[ToolSpec], cut_off: bool) -> Reply {
    // A call starts a line; `<function=` inside a sentence (the model explaining the format)
    // is not one, unless nothing else is.
    let at_line_start = reply
        .match_indices(OPEN)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || reply[..i].ends_with('\n'));
    let Some(start) = at_line_start.or_else(|| reply.find(OPEN)) else {
        return Reply::Text;
    };
    let text = reply[..start].trim().to_owned();
    let rest = &reply[start..];
    let (written, closed) = match rest.find(CLOSE) {
        Some(end) => (&rest[..end + CLOSE.len()], true),
        None => (rest.trim_end(), false),
    };
    let invalid = |name: &str, reason: String| Reply::Invalid {
        text: text.clone(),
        name: name.to_owned(),
        written: written.to_owned(),
        reason,
    };
    let after = &written[OPEN.len()..];
    let name_end = after.find('>').filter(|&end| !after[..end].contains('\n'));
    let Some(name_end) = name_end else {
        return invalid(
            "",
            "the function name after <function= is not closed with `>`".to_owned(),
        );
    };
    let name = after[..name_end].trim();
    if name.is_empty() {
        return invalid("", "the call names no function after <function=".to_owned());
    }
    if name.contains(['<', ' ']) {
        return invalid("", format!("`{name}` is not a function name"));
    }
    let mut body = &after[name_end + 1..];
    if closed {
        body = body.strip_suffix(CLOSE).unwrap_or(body);
    } else {
        if cut_off {
            return invalid(
                name,
                "the reply reached the token limit before the call was complete".to_owned(),
            );
        }
        body = without_partial_close(body);
    }
    let Some(tool) = tools.iter().find(|t| t.name == name) else {
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        return invalid(
            name,
            format!(
                "there is no function `{name}`; the functions are {}",
                names.join(", ")
            ),
        );
    };
    let arguments = parameters(body).and_then(|written| arguments(tool, written));
    match arguments {
        Ok(arguments) => Reply::Call {
            text,
            name: name.to_owned(),
            arguments: Value::Object(arguments).to_string(),
        },
        Err(reason) => invalid(name, reason),
    }
}

/// The body of a call stopped by the stop sequence: whatever part of `</function` the server
/// left at its end removed.
fn without_partial_close(body: &str) -> &str {
    let body = body.trim_end();
    (2..=STOP.len())
        .rev()
        .find_map(|n| body.strip_suffix(&STOP[..n]))
        .unwrap_or(body)
}

/// The `<parameter=NAME>value</parameter>` pairs of a call's body, in order.
fn parameters(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(found);
        }
        let Some(after) = rest.strip_prefix(PARAMETER) else {
            return Err(format!(
                "expected <parameter=NAME> but found `{}`",
                preview(rest)
            ));
        };
        let Some(head_end) = after.find('>') else {
            return Err("a <parameter= tag is not closed with `>`".to_owned());
        };
        let head = &after[..head_end];
        // A slip some models make, as the original notes: `<parameter=name=value</parameter>`.
        if let Some(lt) = head.find('<') {
            let slip = (&head[lt..] == "</parameter")
                .then(|| head[..lt].split_once('='))
                .flatten();
            let Some((name, value)) = slip else {
                return Err(format!(
                    "the tag <parameter={}> is not closed with `>`",
                    preview(head)
                ));
            };
            found.push((name.trim().to_owned(), value.to_owned()));
            rest = &after[head_end + 1..];
            continue;
        }
        let name = head.trim();
        if name.is_empty() {
            return Err("a <parameter=> tag has no name".to_owned());
        }
        let value_and_rest = &after[head_end + 1..];
        let Some(end) = value_and_rest.find(PARAMETER_CLOSE) else {
            return Err(format!(
                "the value of `{name}` is not closed with {PARAMETER_CLOSE}"
            ));
        };
        found.push((
            name.to_owned(),
            unwrapped(&value_and_rest[..end]).to_owned(),
        ));
        rest = &value_and_rest[end + PARAMETER_CLOSE.len()..];
    }
}

/// A value without the line break the format puts after its start tag and before its end tag.
fn unwrapped(value: &str) -> &str {
    let value = value
        .strip_prefix("\r\n")
        .or_else(|| value.strip_prefix('\n'))
        .unwrap_or(value);
    value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(value)
}

/// The written parameters as a tool's arguments: each one known to the tool, typed by its
/// schema and among its allowed values.
fn arguments(
    tool: &ToolSpec,
    written: Vec<(String, String)>,
) -> Result<Map<String, Value>, String> {
    let properties = tool
        .parameters
        .get("properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty());
    let mut arguments = Map::new();
    for (name, text) in written {
        let schema = properties.and_then(|p| p.get(&name));
        if let (Some(properties), None) = (properties, schema) {
            let known: Vec<&str> = properties.keys().map(String::as_str).collect();
            return Err(format!(
                "`{}` has no parameter `{name}`; its parameters are {}",
                tool.name,
                known.join(", ")
            ));
        }
        if arguments.contains_key(&name) {
            return Err(format!("the parameter `{name}` is given twice"));
        }
        let value = typed(&name, text, value_type(schema))?;
        if let Some(allowed) = schema.and_then(|s| s.get("enum")).and_then(Value::as_array)
            && !allowed.contains(&value)
        {
            let allowed: Vec<String> = allowed.iter().map(plain).collect();
            return Err(format!(
                "`{name}` must be one of {}, not `{}`",
                allowed.join(", "),
                preview(&plain(&value))
            ));
        }
        arguments.insert(name, value);
    }
    // A missing required parameter is left to whoever runs the tool, as for a native call:
    // the agent's own tools have defaults for some (`security_risk`), and an MCP server
    // checks its own.
    Ok(arguments)
}

/// A written value as the JSON its schema asks for; strings (and anything of no known type)
/// kept exactly as written.
fn typed(name: &str, text: String, kind: Option<&str>) -> Result<Value, String> {
    let trimmed = text.trim();
    let wrong = |what: &str| format!("`{name}` must be {what}, not `{}`", preview(trimmed));
    match kind {
        Some("integer") => trimmed
            .parse::<i64>()
            .ok()
            .or_else(|| {
                // `5.0` is an integer too.
                let number = trimmed.parse::<f64>().ok()?;
                (number.fract() == 0.0 && number.abs() < 9.0e15).then_some(number as i64)
            })
            .map(Value::from)
            .ok_or_else(|| wrong("an integer")),
        Some("number") => match trimmed.parse::<i64>() {
            Ok(integer) => Ok(Value::from(integer)),
            Err(_) => trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| wrong("a number")),
        },
        Some("boolean") => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        Some("array") => match serde_json::from_str(trimmed) {
            Ok(Value::Array(items)) => Ok(Value::Array(items)),
            _ => Err(wrong("a JSON array")),
        },
        Some("object") => match serde_json::from_str(trimmed) {
            Ok(Value::Object(fields)) => Ok(Value::Object(fields)),
            _ => Err(wrong("a JSON object")),
        },
        _ => Ok(Value::String(text)),
    }
}

/// The start of a piece of text, for a message.
fn preview(text: &str) -> String {
    crate::error::truncate(text.trim(), 60)
}

/// A prompted reply in native form: the call read from its text (see [`parse`]) as a
/// [`ToolCall`] with a fresh id, the text before the call as the text, `tool_calls` as the
/// finish reason, and `model_response` showing the call as a native one.
///
/// A call that cannot be made comes back as a call all the same, so that the agent answers it
/// as it answers a native call with broken arguments: its name as written (or empty) and, as
/// its arguments, the call as written, which is not JSON. The next prompted request tells the
/// model what was wrong with it (see [`history`]).
pub(crate) fn read_reply(mut completion: Completion, tools: &[ToolSpec]) -> Completion {
    // A server that answered with native calls anyway: they are what the agent wants.
    if !completion.tool_calls.is_empty() {
        return completion;
    }
    let cut_off = completion.finish_reason.as_deref() == Some("length");
    let (text, call) = match parse(&completion.text, tools, cut_off) {
        Reply::Text => return completion,
        Reply::Call {
            text,
            name,
            arguments,
        } => (
            text,
            ToolCall {
                id: http::fresh_call_id(),
                name,
                arguments,
            },
        ),
        Reply::Invalid {
            text,
            name,
            written,
            reason,
        } => {
            tracing::debug!(function = %name, %reason, "a prompted function call could not be read");
            (
                text,
                ToolCall {
                    id: http::fresh_call_id(),
                    name,
                    arguments: written,
                },
            )
        }
    };
    completion.text = text;
    completion.tool_calls = vec![call];
    completion.finish_reason = Some("tool_calls".to_owned());
    if let Some(Value::Object(message)) =
        completion.model_response.pointer_mut("/choices/0/message")
    {
        set_message(message, &completion.text, &completion.tool_calls);
    }
    if let Some(Value::Object(choice)) = completion.model_response.pointer_mut("/choices/0") {
        choice.insert("finish_reason".into(), "tool_calls".into());
    }
    completion
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bash() -> ToolSpec {
        ToolSpec {
            name: "execute_bash".into(),
            description: "Run a command.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command."},
                    "is_input": {"type": "string", "enum": ["true", "false"]},
                    "timeout": {"type": "number"},
                },
                "required": ["command"],
            }),
        }
    }

    fn editor() -> ToolSpec {
        ToolSpec {
            name: "str_replace_editor".into(),
            description: "Edit files.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": ["view", "create", "insert"]},
                    "path": {"type": "string"},
                    "file_text": {"type": "string"},
                    "insert_line": {"type": "integer"},
                    "view_range": {"type": "array", "items": {"type": "integer"}},
                    "options": {"type": "object"},
                    "dry_run": {"type": ["boolean", "null"]},
                },
                "required": ["command", "path"],
            }),
        }
    }

    fn finish() -> ToolSpec {
        ToolSpec {
            name: "finish".into(),
            description: "Say the task is done.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }
    }

    fn tools() -> Vec<ToolSpec> {
        vec![bash(), editor(), finish()]
    }

    fn call(reply: &str) -> (String, String, Value) {
        match parse(reply, &tools(), false) {
            Reply::Call {
                text,
                name,
                arguments,
            } => (text, name, serde_json::from_str(&arguments).unwrap()),
            other => panic!("not a call: {other:?}"),
        }
    }

    fn reason(reply: &str) -> String {
        match parse(reply, &tools(), false) {
            Reply::Invalid { reason, .. } => reason,
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn tools_are_described_with_their_parameters() {
        let text = describe(&tools());
        assert!(text.starts_with("---- BEGIN FUNCTION #1: execute_bash ----\nDescription: Run a command.\nParameters:\n"), "{text}");
        assert!(
            text.contains("  (1) command (string, required): The command.\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "is_input (string, optional): (no description)\nAllowed values: [`true`, `false`]\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("dry_run (boolean or null, optional)"),
            "{text}"
        );
        assert!(text.contains("---- END FUNCTION #2 ----\n\n---- BEGIN FUNCTION #3: finish ----\nDescription: Say the task is done.\nThis function takes no parameters.\n"), "{text}");
    }

    #[test]
    fn the_request_describes_the_tools_and_offers_none() {
        let request = CompletionRequest {
            messages: vec![Message::system("Be careful."), Message::user("hi")],
            tools: tools(),
            ..CompletionRequest::default()
        };
        let sent = super::request(&request);
        assert!(sent.tools.is_empty());
        assert!(
            sent.messages[0]
                .content
                .starts_with("Be careful.\n\nYou can call")
        );
        assert!(
            sent.messages[0]
                .content
                .contains("<function=FUNCTION_NAME>\n")
        );
        assert!(
            sent.messages[0]
                .content
                .contains("BEGIN FUNCTION #2: str_replace_editor")
        );
        assert_eq!(sent.messages[1], Message::user("hi"));
        // Without a system message, one is added.
        let sent = super::request(&CompletionRequest {
            messages: vec![Message::user("hi")],
            ..request
        });
        assert_eq!(sent.messages[0].role, Role::System);
        assert!(sent.messages[0].content.starts_with("You can call"));
    }

    #[test]
    fn history_calls_become_text_and_results_name_their_tool() {
        let calls = vec![
            ToolCall {
                id: "a".into(),
                name: "execute_bash".into(),
                arguments: r#"{"command":"ls","timeout":5}"#.into(),
            },
            ToolCall {
                id: "b".into(),
                name: "str_replace_editor".into(),
                arguments:
                    json!({"command": "create", "path": "/w/a.py", "file_text": "x = 1\nprint(x)"})
                        .to_string(),
            },
        ];
        let thinking = vec![json!({"type": "thinking", "thinking": "hmm", "signature": "s"})];
        let messages = vec![
            Message::system("sys"),
            Message::user("go"),
            Message::assistant("Let me look.", calls).with_thinking_blocks(thinking.clone()),
            Message::tool_result("a", "a.txt").with_images(vec!["data:image/png;base64,AA".into()]),
            Message::tool_result("b", "File created."),
            Message::assistant("Done.", Vec::new()),
        ];
        let out = history(&messages, &tools());
        let shape: Vec<(Role, &str)> = out.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            shape,
            [
                (Role::System, "sys"),
                (Role::User, "go"),
                (
                    Role::Assistant,
                    "Let me look.\n\n<function=execute_bash>\n<parameter=command>ls</parameter>\n<parameter=timeout>5</parameter>\n</function>"
                ),
                (Role::User, "Result of the call to execute_bash:\na.txt"),
                (
                    Role::Assistant,
                    "<function=str_replace_editor>\n<parameter=command>create</parameter>\n<parameter=file_text>\nx = 1\nprint(x)\n</parameter>\n<parameter=path>/w/a.py</parameter>\n</function>"
                ),
                (
                    Role::User,
                    "Result of the call to str_replace_editor:\nFile created."
                ),
                (Role::Assistant, "Done."),
            ]
        );
        assert!(
            out.iter()
                .all(|m| m.tool_calls.is_empty() && m.tool_call_id.is_none())
        );
        assert_eq!(out[2].thinking_blocks, thinking);
        assert_eq!(out[3].images, ["data:image/png;base64,AA"]);
        // What is written reads back as the same call.
        let (_, name, arguments) = call(&out[4].content);
        assert_eq!(name, "str_replace_editor");
        assert_eq!(arguments["file_text"], "x = 1\nprint(x)");
    }

    #[test]
    fn a_call_is_read_with_the_text_before_it_and_multi_line_values() {
        let reply = "I will create it.\n<function=str_replace_editor>\n<parameter=command>create</parameter>\n<parameter=path>/w/a.py</parameter>\n<parameter=file_text>\n    indented\n\nlast line\n</parameter>\n</function>\nignored";
        let (text, name, arguments) = call(reply);
        assert_eq!(text, "I will create it.");
        assert_eq!(name, "str_replace_editor");
        assert_eq!(
            arguments,
            json!({"command": "create", "path": "/w/a.py", "file_text": "    indented\n\nlast line"})
        );
    }

    #[test]
    fn values_are_typed_by_the_schema() {
        let (_, _, arguments) = call(
            "<function=str_replace_editor>\n<parameter=command>view</parameter>\n<parameter=path>/w</parameter>\n<parameter=insert_line> 3 </parameter>\n<parameter=view_range>[1, -1]</parameter>\n<parameter=options>{\"a\": 1}</parameter>\n<parameter=dry_run>True</parameter>\n</function>",
        );
        assert_eq!(
            arguments,
            json!({"command": "view", "path": "/w", "insert_line": 3, "view_range": [1, -1], "options": {"a": 1}, "dry_run": true})
        );
        let (_, _, arguments) = call(
            "<function=execute_bash>\n<parameter=command>sleep 1</parameter>\n<parameter=timeout>2.5</parameter>\n</function>",
        );
        assert_eq!(arguments, json!({"command": "sleep 1", "timeout": 2.5}));
        // Strings are kept as written, numbers-looking ones too.
        let (_, _, arguments) =
            call("<function=execute_bash>\n<parameter=command>42</parameter>\n</function>");
        assert_eq!(arguments, json!({"command": "42"}));
    }

    #[test]
    fn a_reply_stopped_before_the_end_tag_is_read() {
        for end in ["", "</", "</function", "\n</func"] {
            let reply =
                format!("<function=execute_bash>\n<parameter=command>ls</parameter>\n{end}");
            let (_, name, arguments) = call(&reply);
            assert_eq!(
                (name.as_str(), arguments),
                ("execute_bash", json!({"command": "ls"})),
                "{end:?}"
            );
        }
        // A slip some models make.
        let (_, _, arguments) =
            call("<function=execute_bash>\n<parameter=command=pwd</parameter>\n</function>");
        assert_eq!(arguments, json!({"command": "pwd"}));
        // Parameterless tools.
        let (_, name, arguments) = call("Done.\n<function=finish>\n</function>");
        assert_eq!((name.as_str(), arguments), ("finish", json!({})));
    }

    #[test]
    fn a_call_starts_a_line_and_optional_values_are_typed() {
        let reply = "Calls look like <function=NAME> in this format.\n<function=execute_bash>\n<parameter=command>ls</parameter>\n</function>";
        let (text, name, arguments) = call(reply);
        assert_eq!(
            (name.as_str(), arguments["command"].as_str()),
            ("execute_bash", Some("ls"))
        );
        assert!(text.starts_with("Calls look like"));
        let optional =
            json!({"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]});
        assert_eq!(value_type(Some(&optional)), Some("array"));
    }

    #[test]
    fn malformed_calls_say_what_is_wrong() {
        assert_eq!(parse("Just text.", &tools(), false), Reply::Text);
        let unknown = parse(
            "Hm.\n<function=run_python>\n<parameter=code>1</parameter>\n</function>",
            &tools(),
            false,
        );
        assert_eq!(
            unknown,
            Reply::Invalid {
                text: "Hm.".into(),
                name: "run_python".into(),
                written: "<function=run_python>\n<parameter=code>1</parameter>\n</function>".into(),
                reason: "there is no function `run_python`; the functions are execute_bash, str_replace_editor, finish".into(),
            }
        );
        assert_eq!(
            reason("<function=execute_bash>\n<parameter=command>ls\n</function>"),
            "the value of `command` is not closed with </parameter>"
        );
        assert_eq!(
            reason("<function=execute_bash>\ncommand: ls\n</function>"),
            "expected <parameter=NAME> but found `command: ls`"
        );
        assert_eq!(
            reason("<function=execute_bash>\n<parameter=cmd>ls</parameter>\n</function>"),
            "`execute_bash` has no parameter `cmd`; its parameters are command, is_input, timeout"
        );
        assert_eq!(
            reason(
                "<function=execute_bash>\n<parameter=command>ls</parameter>\n<parameter=timeout>soon</parameter>\n</function>"
            ),
            "`timeout` must be a number, not `soon`"
        );
        assert_eq!(
            reason(
                "<function=str_replace_editor>\n<parameter=command>delete</parameter>\n<parameter=path>/w</parameter>\n</function>"
            ),
            "`command` must be one of view, create, insert, not `delete`"
        );
        assert_eq!(
            reason("<function=execute_bash\n<parameter=command>ls</parameter>"),
            "the function name after <function= is not closed with `>`"
        );
        // Cut off by the token limit: the call is not made half-written.
        assert!(matches!(
            parse("<function=execute_bash>\n<parameter=command>ls</parameter>\n", &tools(), true),
            Reply::Invalid { reason, .. } if reason.contains("token limit")
        ));
    }

    #[test]
    fn a_malformed_call_comes_back_unreadable_as_json_and_its_result_says_why() {
        let completion = Completion {
            response_id: "r".into(),
            text: "Hm.\n<function=execute_bash>\n<parameter=timeout>soon</parameter>\n</function>"
                .into(),
            tool_calls: Vec::new(),
            finish_reason: Some("stop".into()),
            reasoning: None,
            thinking_blocks: Vec::new(),
            usage: Default::default(),
            model_response: json!({"choices": [{"finish_reason": "stop", "message": {"content": "x"}}]}),
            latency: Default::default(),
            cost: None,
        };
        let read = read_reply(completion, &tools());
        assert_eq!(read.text, "Hm.");
        assert_eq!(read.finish_reason.as_deref(), Some("tool_calls"));
        let call = &read.tool_calls[0];
        assert_eq!(call.name, "execute_bash");
        assert!(serde_json::from_str::<Value>(&call.arguments).is_err());
        assert_eq!(
            read.model_response["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(
            read.model_response["choices"][0]["message"]["content"],
            "Hm."
        );
        assert_eq!(
            read.model_response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            json!(call.arguments)
        );
        // The agent answers it as broken JSON; the model is told what was wrong instead.
        let messages = vec![
            Message::assistant(read.text.clone(), read.tool_calls.clone()),
            Message::tool_result(&call.id, "The arguments of execute_bash are not valid JSON"),
        ];
        let out = history(&messages, &tools());
        assert_eq!(
            out[0].content,
            "Hm.\n\n<function=execute_bash>\n<parameter=timeout>soon</parameter>\n</function>"
        );
        assert_eq!(
            out[1].content,
            "Result of the call to execute_bash:\nThe function call could not be read: `timeout` must be a number, not `soon`. Write it again in the format given at the start."
        );
    }
}
