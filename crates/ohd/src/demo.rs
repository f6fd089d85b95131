//! `ohd demo`: ohd with a built-in scripted model, so that a newcomer sees the agent work with
//! no API key and no network. The model is the test suite's scripted model, served on a free
//! loopback port for this process only; every message plays the same short task.

use ohd_scripted_llm::{Script, ScriptedLlm, ScriptedLlmHandle, Turn};
use serde_json::json;

/// The model name ohd is given; `openai/` because the scripted model speaks OpenAI's API.
pub const MODEL: &str = "openai/ohd-demo";
/// The scripted model checks no key; ohd wants one to be set.
pub const API_KEY: &str = "ohd-demo-no-key-needed";

/// Starts the demo's model on 127.0.0.1 and returns its OpenAI base URL with the handle that
/// keeps it running.
pub async fn start_model() -> std::io::Result<(String, ScriptedLlmHandle)> {
    let (root, handle) = ScriptedLlm::start(script()).await?;
    Ok((format!("{root}/v1"), handle))
}

/// Whatever the user asks: look around, write a script, run it, change it, run it again, finish.
/// Played from the start for every user message, in every conversation.
fn script() -> Script {
    let bash = |command: &str| Turn::tool_call("execute_bash", json!({ "command": command }));
    let editor = |args: serde_json::Value| Turn::tool_call("str_replace_editor", args);
    Script::new(vec![
        bash("pwd && ls -A").with_text(
            "I am ohd's demo model: I play the same short task whatever you ask, so you can \
             see how the agent works without an API key. First, a look at the workspace.",
        ),
        editor(json!({
            "command": "create",
            "path": "/workspace/hello.sh",
            "file_text": "#!/bin/sh\n# Written by ohd's demo model.\necho \"Hello from the sandbox, $(whoami)!\"\n",
        }))
        .with_text("Now a small script, made with the file editor."),
        bash("sh hello.sh"),
        editor(json!({
            "command": "str_replace",
            "path": "/workspace/hello.sh",
            "old_str": "Hello from the sandbox",
            "new_str": "Hello again from the sandbox",
        }))
        .with_text("It works. Now an edit, which the editor shows as a diff."),
        bash("sh hello.sh && ls -l hello.sh"),
        Turn::tool_call(
            "finish",
            json!({
                "message": "Done: I looked at the workspace, wrote hello.sh, ran it, edited it \
                            and ran it again. To use a real model, stop the demo and start \
                            `ohd serve` with LLM_MODEL and LLM_API_KEY, or save one in the \
                            settings.",
            }),
        ),
    ])
    .per_message()
    .with_aside("Demo: a shell script written, run and edited")
}
