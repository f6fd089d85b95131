//! The tools the model is given, with the names and parameters of the CodeAct tool set so that
//! models tuned for it work unchanged, and the parsing of the model's calls into actions.
//! The descriptions are ohd's own words.

use ohd_runtime::editor::EditorCommand;
use serde_json::{Map, Value, json};
use std::time::Duration;

pub const EXECUTE_BASH: &str = "execute_bash";
pub const STR_REPLACE_EDITOR: &str = "str_replace_editor";
pub const THINK: &str = "think";
pub const FINISH: &str = "finish";

/// What the model is told about `security_risk`, which decides in confirmation mode (with the
/// `llm` analyzer) whether the user is asked first.
const RISK_DESCRIPTION: &str = "Your estimate of the action's risk: LOW for reading and for \
changes confined to the workspace that are easy to undo; MEDIUM for changes that are harder to \
undo, installing packages, or network access; HIGH for anything destructive, touching secrets, \
or acting outside the workspace.";

/// A tool call the model made, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolAction {
    Run {
        command: String,
        is_input: bool,
        timeout: Option<Duration>,
        security_risk: i8,
    },
    Editor {
        command: EditorCommand,
        security_risk: i8,
    },
    Think {
        thought: String,
    },
    Finish {
        message: String,
        task_completed: Option<String>,
    },
    /// A tool of one of the user's MCP servers, by the name the model was given.
    Mcp {
        name: String,
        arguments: Value,
    },
}

impl ToolAction {
    /// The model's estimate of the action's risk: -1 unknown, 0 low, 1 medium, 2 high.
    pub fn risk(&self) -> i8 {
        match self {
            ToolAction::Run { security_risk, .. } | ToolAction::Editor { security_risk, .. } => {
                *security_risk
            }
            _ => -1,
        }
    }

    /// Whether it may change something (a command, an edit), and so may need confirmation.
    pub fn changes_something(&self) -> bool {
        match self {
            // An MCP tool may do anything its server can: confirmation mode asks.
            ToolAction::Run { .. } | ToolAction::Mcp { .. } => true,
            ToolAction::Editor { command, .. } => !matches!(command, EditorCommand::View { .. }),
            _ => false,
        }
    }
}

/// The tool list sent to the model, in the OpenAI function format.
pub fn specs() -> Vec<(String, String, Value)> {
    vec![
        (
            EXECUTE_BASH.into(),
            "Run a bash command in the workspace's persistent shell. The working directory, \
             environment variables and shell functions carry over between calls. One command per \
             call; chain with && or ; when needed. Long-running commands: run them in the \
             background (`cmd > log 2>&1 &`). A command that prints nothing new for a while is \
             reported as still running: then call again with is_input=\"true\" and an empty \
             command to see more output, send text to it as input, or send C-c to interrupt it. \
             Very long output is cut in the middle."
                .into(),
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The bash command. With is_input=\"true\": text to send to the running command, empty to wait for more output, or a key such as C-c, C-d, C-z."},
                    "is_input": {"type": "string", "enum": ["true", "false"], "description": "\"true\" to send the command as input to the command still running. Default \"false\"."},
                    "timeout": {"type": "number", "description": "Optional hard limit in seconds; the command is interrupted when it runs longer."},
                    "security_risk": {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH"], "description": RISK_DESCRIPTION}
                },
                "required": ["command", "security_risk"]
            }),
        ),
        (
            THINK.into(),
            "Write down a thought: reasoning, a plan, or what you learned. It changes nothing in \
             the workspace and gets no new information; use it when thinking helps before acting."
                .into(),
            json!({
                "type": "object",
                "properties": {"thought": {"type": "string", "description": "The thought."}},
                "required": ["thought"]
            }),
        ),
        (
            FINISH.into(),
            "Say that the task is done (or cannot be done), with a short summary of what you did \
             and anything the user should know. Ends your turn."
                .into(),
            json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "What was done, for the user."},
                    "task_completed": {"type": "string", "enum": ["true", "false", "partial"], "description": "Whether the task was completed."}
                },
                "required": ["message"]
            }),
        ),
        (
            STR_REPLACE_EDITOR.into(),
            "View, create and edit files in the workspace. `view` shows a file with line numbers \
             (or a directory two levels deep, hidden items left out); `create` writes a new file \
             (it does not overwrite); `str_replace` replaces old_str, which must match exactly \
             once, whitespace included, with new_str; `insert` adds new_str after line \
             insert_line (0 for the start); `undo_edit` reverts the last edit of the file. Paths \
             are absolute (under the workspace) or relative to it."
                .into(),
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"], "description": "The command to run."},
                    "path": {"type": "string", "description": "The file or directory."},
                    "file_text": {"type": "string", "description": "For `create`: the file's content."},
                    "old_str": {"type": "string", "description": "For `str_replace`: the exact text to replace."},
                    "new_str": {"type": "string", "description": "For `str_replace`: the replacement (empty to delete); for `insert`: the text to insert."},
                    "insert_line": {"type": "integer", "description": "For `insert`: the line after which new_str goes."},
                    "view_range": {"type": "array", "items": {"type": "integer"}, "description": "For `view` of a file: [first, last] line, 1-based; last -1 means the end."},
                    "security_risk": {"type": "string", "enum": ["LOW", "MEDIUM", "HIGH"], "description": RISK_DESCRIPTION}
                },
                "required": ["command", "path", "security_risk"]
            }),
        ),
    ]
}

/// Why a call could not be understood; sent back to the model as the call's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, CallError> {
    Err(CallError(message.into()))
}

struct Args<'a> {
    tool: &'a str,
    map: Map<String, Value>,
}

impl Args<'_> {
    fn check_known(&self, known: &[&str]) -> Result<(), CallError> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            err(format!(
                "Unknown parameter(s) {} for {}; it takes {}.",
                unknown.join(", "),
                self.tool,
                known.join(", ")
            ))
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, CallError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => err(format!(
                "Parameter {name} of {} must be a string, not {other}.",
                self.tool
            )),
        }
    }

    fn required(&self, name: &str) -> Result<String, CallError> {
        self.string(name)?.ok_or_else(|| {
            CallError(format!(
                "Missing required parameter {name} for {}.",
                self.tool
            ))
        })
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, CallError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                CallError(format!(
                    "Parameter {name} of {} must be an integer.",
                    self.tool
                ))
            }),
            Some(_) => err(format!(
                "Parameter {name} of {} must be an integer.",
                self.tool
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, CallError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
            Some(other) => err(format!(
                "Parameter {name} of {} must be \"true\" or \"false\", not {other}.",
                self.tool
            )),
        }
    }

    fn risk(&self) -> i8 {
        match self.map.get("security_risk").and_then(Value::as_str) {
            Some("LOW") => 0,
            Some("MEDIUM") => 1,
            Some("HIGH") => 2,
            _ => -1,
        }
    }
}

/// Parses a call of an MCP tool: its arguments must be a JSON object (or nothing).
pub fn parse_mcp(name: &str, arguments: &str) -> Result<ToolAction, CallError> {
    let arguments = if arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(map)) => Value::Object(map),
            Ok(_) => return err(format!("The arguments of {name} must be a JSON object.")),
            Err(e) => {
                return err(format!(
                    "The arguments of {name} are not valid JSON ({e}). Send them again as a JSON object."
                ));
            }
        }
    };
    Ok(ToolAction::Mcp {
        name: name.to_owned(),
        arguments,
    })
}

/// Parses a tool call (`name`, and `arguments` as the raw JSON text the model sent).
pub fn parse(name: &str, arguments: &str) -> Result<ToolAction, CallError> {
    let map = if arguments.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return err(format!("The arguments of {name} must be a JSON object.")),
            Err(e) => {
                return err(format!(
                    "The arguments of {name} are not valid JSON ({e}). Send them again as a JSON object."
                ));
            }
        }
    };
    let args = Args { tool: name, map };
    match name {
        EXECUTE_BASH => {
            args.check_known(&["command", "is_input", "timeout", "security_risk"])?;
            let timeout = match args.map.get("timeout") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let secs = v
                        .as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| CallError("Parameter timeout of execute_bash must be a positive number of seconds.".into()))?;
                    Some(Duration::from_secs_f64(secs.min(24.0 * 3600.0)))
                }
            };
            Ok(ToolAction::Run {
                command: args.required("command")?,
                is_input: args.boolean("is_input")?,
                timeout,
                security_risk: args.risk(),
            })
        }
        THINK => {
            args.check_known(&["thought"])?;
            Ok(ToolAction::Think {
                thought: args.required("thought")?,
            })
        }
        FINISH => {
            args.check_known(&["message", "task_completed", "outputs"])?;
            Ok(ToolAction::Finish {
                message: args.required("message")?,
                task_completed: args.string("task_completed")?,
            })
        }
        STR_REPLACE_EDITOR => {
            args.check_known(&[
                "command",
                "path",
                "file_text",
                "old_str",
                "new_str",
                "insert_line",
                "view_range",
                "security_risk",
            ])?;
            let path = args.required("path")?;
            let command = match args.required("command")?.as_str() {
                "view" => {
                    let view_range = match args.map.get("view_range") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(items)) if items.len() == 2 => {
                            match (items[0].as_i64(), items[1].as_i64()) {
                                (Some(a), Some(b)) => Some((a, b)),
                                _ => return err("view_range must be two integers, [first, last]."),
                            }
                        }
                        Some(_) => return err("view_range must be two integers, [first, last]."),
                    };
                    EditorCommand::View { path, view_range }
                }
                "create" => EditorCommand::Create {
                    path,
                    file_text: args.string("file_text")?.ok_or_else(|| {
                        CallError("Missing required parameter file_text for create.".into())
                    })?,
                },
                "str_replace" => EditorCommand::StrReplace {
                    path,
                    old_str: args.string("old_str")?.ok_or_else(|| {
                        CallError("Missing required parameter old_str for str_replace.".into())
                    })?,
                    new_str: args.string("new_str")?.unwrap_or_default(),
                },
                "insert" => EditorCommand::Insert {
                    path,
                    insert_line: args.integer("insert_line")?.ok_or_else(|| {
                        CallError("Missing required parameter insert_line for insert.".into())
                    })?,
                    new_str: args.string("new_str")?.ok_or_else(|| {
                        CallError("Missing required parameter new_str for insert.".into())
                    })?,
                },
                "undo_edit" => EditorCommand::UndoEdit { path },
                other => {
                    return err(format!(
                        "Unknown command {other:?} for str_replace_editor; use view, create, str_replace, insert or undo_edit."
                    ));
                }
            };
            Ok(ToolAction::Editor {
                command,
                security_risk: args.risk(),
            })
        }
        other => err(format!(
            "Tool {other} does not exist. The tools are execute_bash, str_replace_editor, think and finish."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_parse_into_actions() {
        assert_eq!(
            parse(
                EXECUTE_BASH,
                r#"{"command":"ls","is_input":"false","timeout":5}"#
            ),
            Ok(ToolAction::Run {
                command: "ls".into(),
                is_input: false,
                timeout: Some(Duration::from_secs(5)),
                security_risk: -1
            })
        );
        assert_eq!(
            parse(
                STR_REPLACE_EDITOR,
                r#"{"command":"view","path":"/workspace","view_range":[1,-1],"security_risk":"LOW"}"#
            ),
            Ok(ToolAction::Editor {
                command: EditorCommand::View {
                    path: "/workspace".into(),
                    view_range: Some((1, -1))
                },
                security_risk: 0
            })
        );
        assert_eq!(
            parse(FINISH, r#"{"message":"done"}"#),
            Ok(ToolAction::Finish {
                message: "done".into(),
                task_completed: None
            })
        );
    }

    #[test]
    fn bad_calls_say_what_to_fix() {
        let cases = [
            (EXECUTE_BASH, "{not json", "not valid JSON"),
            (EXECUTE_BASH, "{}", "Missing required parameter command"),
            (
                EXECUTE_BASH,
                r#"{"command":"ls","verbose":true}"#,
                "Unknown parameter(s) verbose",
            ),
            (
                STR_REPLACE_EDITOR,
                r#"{"command":"create","path":"a"}"#,
                "file_text",
            ),
            (
                STR_REPLACE_EDITOR,
                r#"{"command":"delete","path":"a"}"#,
                "Unknown command",
            ),
            ("browser", "{}", "does not exist"),
        ];
        for (tool, args, expected) in cases {
            let e = parse(tool, args).unwrap_err();
            assert!(e.0.contains(expected), "{tool} {args}: {e}");
        }
    }
}
