//! What the scripted model says: a list of turns, one per request, read from JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The turns to play, in order, and what to answer once they are used up.
///
/// In JSON either a list of turns, or `{"turns": [...], "when_done": "done" | "repeat_last"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Script {
    pub turns: Vec<Turn>,
    pub when_done: WhenDone,
    /// When set, a request that offers no tools (a side question, such as asking for a
    /// conversation's title) is answered with this text without using a turn, and recorded
    /// apart from the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aside: Option<String>,
    /// When set, a request that offers `tools` is refused with a 400 worded as this server
    /// words it, as a server without tool calling does; it is recorded but uses no turn. A
    /// client that then describes the tools in its prompt gets the turns, tool calls written as
    /// text (see [`Turn`]). In JSON: `"refuse_tools": "vllm"` or `"ollama"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_tools: Option<ToolsRefusal>,
}

/// Which server's words a refusal of `tools` is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolsRefusal {
    /// vLLM started without `--enable-auto-tool-choice`: `"auto" tool choice requires
    /// --enable-auto-tool-choice and --tool-call-parser to be set`, in vLLM's error shape.
    Vllm,
    /// An Ollama model without tool support: `<model> does not support tools`.
    Ollama,
}

impl ToolsRefusal {
    /// The refusal's message for a request for `model`.
    pub fn message(self, model: &str) -> String {
        match self {
            ToolsRefusal::Vllm => "\"auto\" tool choice requires --enable-auto-tool-choice and \
                                   --tool-call-parser to be set"
                .to_owned(),
            ToolsRefusal::Ollama => format!("{model} does not support tools"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenDone {
    /// A plain text answer, `done`: an agent loop ends instead of spinning.
    #[default]
    Done,
    /// The last turn again.
    RepeatLast,
}

impl Script {
    pub fn new(turns: Vec<Turn>) -> Script {
        Script {
            turns,
            when_done: WhenDone::Done,
            aside: None,
            refuse_tools: None,
        }
    }

    /// Refuses every request that offers `tools`, as `server` does when it has no tool calling
    /// (see [`Script::refuse_tools`]).
    pub fn refusing_tools(mut self, server: ToolsRefusal) -> Script {
        self.refuse_tools = Some(server);
        self
    }

    /// Answers side questions (requests without tools) with `text`, outside the turns.
    pub fn with_aside(mut self, text: impl Into<String>) -> Script {
        self.aside = Some(text.into());
        self
    }

    pub fn repeating_last(mut self) -> Script {
        self.when_done = WhenDone::RepeatLast;
        self
    }

    /// The turn that answers request number `n` (from 0).
    pub fn turn(&self, n: usize) -> Turn {
        match (self.turns.get(n), self.when_done, self.turns.last()) {
            (Some(turn), _, _) => turn.clone(),
            (None, WhenDone::RepeatLast, Some(last)) => last.clone(),
            _ => Turn::text("done"),
        }
    }
}

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Script, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Turns(Vec<Turn>),
            Full {
                turns: Vec<Turn>,
                #[serde(default)]
                when_done: WhenDone,
                #[serde(default)]
                aside: Option<String>,
                #[serde(default)]
                refuse_tools: Option<ToolsRefusal>,
            },
        }
        Ok(match Form::deserialize(deserializer)? {
            Form::Turns(turns) => Script::new(turns),
            Form::Full {
                turns,
                when_done,
                aside,
                refuse_tools,
            } => Script {
                turns,
                when_done,
                aside,
                refuse_tools,
            },
        })
    }
}

/// One answer. A `status` other than 200 answers with that error instead (in the provider's
/// error shape, with `Retry-After` when `retry_after` is set).
///
/// Tool calls are sent as native calls, except to a request that offers no `tools` but
/// describes them in its prompt (it holds `<function=`, as a client without native tool
/// calling writes it): they are then written in the text, after the turn's text, in that
/// format (`<function=NAME>`, `<parameter=ARG>value</parameter>`, `</function>`), so that one
/// script serves both kinds of client. Any answer's text ends before the first of the
/// request's stop sequences (`stop`, `stop_sequences`), as a real server's does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Turn {
    pub text: String,
    pub tool_calls: Vec<ScriptedCall>,
    pub status: u16,
    /// Seconds, sent as `Retry-After` on an error turn.
    pub retry_after: Option<u64>,
    /// Waited before answering.
    pub delay_ms: u64,
    /// Reported usage; made up from the sizes of request and answer when not given.
    pub usage: Option<ScriptedUsage>,
    /// The message of an error turn; a provider-like one when not given.
    pub error: Option<String>,
    /// Characters per streamed piece of text or arguments, so that clients must put pieces
    /// together.
    pub chunk_chars: usize,
    /// Waited between streamed events.
    pub chunk_delay_ms: u64,
    /// Leave usage out of the answer, as some OpenAI-compatible servers do.
    pub omit_usage: bool,
    /// Reasoning shown before the answer: OpenAI's `reasoning_content` (or
    /// [`Turn::reasoning_field`]), streamed as deltas too; Anthropic's `thinking` block, with a
    /// signature (`scripted-signature-N`, N the response's number), streamed as
    /// `thinking_delta`s and a `signature_delta`.
    pub reasoning: Option<String>,
    /// The OpenAI field the reasoning goes in: `reasoning_content` (DeepSeek, vLLM, LiteLLM)
    /// when not set, or `reasoning` (OpenRouter, Ollama).
    pub reasoning_field: Option<String>,
    /// The data of an Anthropic `redacted_thinking` block sent before the answer (after the
    /// `thinking` block, if any). Not sent over OpenAI.
    pub redacted_thinking: Option<String>,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            text: String::new(),
            tool_calls: Vec::new(),
            status: 200,
            retry_after: None,
            delay_ms: 0,
            usage: None,
            error: None,
            chunk_chars: 3,
            chunk_delay_ms: 0,
            omit_usage: false,
            reasoning: None,
            reasoning_field: None,
            redacted_thinking: None,
        }
    }
}

impl Turn {
    pub fn text(text: impl Into<String>) -> Turn {
        Turn {
            text: text.into(),
            ..Turn::default()
        }
    }

    /// A turn that calls one tool; `arguments` is an object (sent as its JSON text) or a string
    /// (sent as it is, valid JSON or not).
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Turn {
        Turn::default().and_call(name, arguments)
    }

    /// This turn with one more tool call.
    pub fn and_call(mut self, name: impl Into<String>, arguments: Value) -> Turn {
        self.tool_calls.push(ScriptedCall {
            name: name.into(),
            arguments,
        });
        self
    }

    /// An error answer with this status.
    pub fn error(status: u16) -> Turn {
        Turn {
            status,
            ..Turn::default()
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Turn {
        self.text = text.into();
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Turn {
        self.error = Some(message.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Turn {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_usage(mut self, usage: ScriptedUsage) -> Turn {
        self.usage = Some(usage);
        self
    }

    pub fn with_chunk_chars(mut self, chars: usize) -> Turn {
        self.chunk_chars = chars;
        self
    }

    pub fn with_delay_ms(mut self, delay_ms: u64) -> Turn {
        self.delay_ms = delay_ms;
        self
    }

    pub fn without_usage(mut self) -> Turn {
        self.omit_usage = true;
        self
    }

    /// This turn with reasoning shown before it (see [`Turn::reasoning`]):
    /// `Turn::text("4").with_reasoning("2 + 2 is 4")`.
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Turn {
        self.reasoning = Some(reasoning.into());
        self
    }

    /// Sends the reasoning under OpenAI-compatible field `field` (`reasoning`, as OpenRouter
    /// and Ollama do) instead of `reasoning_content`.
    pub fn with_reasoning_field(mut self, field: impl Into<String>) -> Turn {
        self.reasoning_field = Some(field.into());
        self
    }

    /// This turn with an Anthropic `redacted_thinking` block holding `data`.
    pub fn with_redacted_thinking(mut self, data: impl Into<String>) -> Turn {
        self.redacted_thinking = Some(data.into());
        self
    }

    /// The OpenAI field the reasoning goes in.
    pub fn openai_reasoning_field(&self) -> &str {
        self.reasoning_field
            .as_deref()
            .unwrap_or("reasoning_content")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

impl ScriptedCall {
    /// The arguments as the model would write them: JSON text.
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(text) => text.clone(),
            Value::Null => "{}".to_owned(),
            other => other.to_string(),
        }
    }

    /// The call as a model without native tool calling writes it: each argument as a
    /// parameter (strings as they are, a value of several lines on lines of its own, other
    /// values as JSON), or arguments given as a string written as they are.
    pub fn prompted_text(&self) -> String {
        let mut out = format!("<function={}>\n", self.name);
        match &self.arguments {
            Value::Object(arguments) => {
                for (name, value) in arguments {
                    let value = match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    if value.contains('\n') {
                        out.push_str(&format!("<parameter={name}>\n{value}\n</parameter>\n"));
                    } else {
                        out.push_str(&format!("<parameter={name}>{value}</parameter>\n"));
                    }
                }
            }
            Value::String(text) => {
                out.push_str(text);
                out.push('\n');
            }
            _ => {}
        }
        out.push_str("</function>");
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptedUsage {
    /// Every prompt token, cached or not (OpenAI's way of counting).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// `text` in pieces of `size` characters (at least one piece, even for empty text).
pub(crate) fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(size.max(1))
        .map(|piece| piece.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_forms_read() {
        let list: Script = serde_json::from_str(
            r#"[{"text":"hi"},{"tool_calls":[{"name":"execute_bash","arguments":{"command":"ls"}}]}]"#,
        )
        .unwrap();
        assert_eq!(list.turns.len(), 2);
        assert_eq!(list.turns[0].status, 200);
        assert_eq!(list.turn(5), Turn::text("done"));
        let full: Script = serde_json::from_str(
            r#"{"turns":[{"status":429,"retry_after":1}],"when_done":"repeat_last"}"#,
        )
        .unwrap();
        assert_eq!(full.turn(3).status, 429);
    }

    #[test]
    fn refusals_and_reasoning_read_from_json() {
        let script: Script = serde_json::from_str(
            r#"{"turns":[{"text":"4","reasoning":"2+2","reasoning_field":"reasoning"}],"refuse_tools":"ollama"}"#,
        )
        .unwrap();
        assert_eq!(script.refuse_tools, Some(ToolsRefusal::Ollama));
        assert_eq!(
            script.turns[0],
            Turn::text("4")
                .with_reasoning("2+2")
                .with_reasoning_field("reasoning")
        );
        assert_eq!(
            ToolsRefusal::Ollama.message("llama2"),
            "llama2 does not support tools"
        );
    }

    #[test]
    fn calls_are_written_as_text_for_prompted_clients() {
        let call = ScriptedCall {
            name: "str_replace_editor".into(),
            arguments: serde_json::json!({"command": "create", "file_text": "a\nb", "view_range": [1, 2]}),
        };
        assert_eq!(
            call.prompted_text(),
            "<function=str_replace_editor>\n<parameter=command>create</parameter>\n\
             <parameter=file_text>\na\nb\n</parameter>\n<parameter=view_range>[1,2]</parameter>\n\
             </function>"
        );
    }

    #[test]
    fn pieces_split_on_characters() {
        assert_eq!(pieces("héllo", 2), ["hé", "ll", "o"]);
        assert_eq!(pieces("", 2), [""]);
    }
}
