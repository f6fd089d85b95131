//! `scripted-llm --port P --script FILE`: the scripted model as a standalone server, for
//! end-to-end and browser tests that run ohd as a separate process.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ohd_scripted_llm::{Script, ScriptedLlm};

#[derive(Parser)]
#[command(about = "Serve a scripted model over the OpenAI and Anthropic APIs")]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port; the address is printed either way.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// A JSON list of turns, or {"turns": [...], "when_done": "done"|"repeat_last", "aside":
    /// "text", "refuse_tools": "vllm"|"ollama"}. Without one every request gets a plain `done`.
    #[arg(long)]
    script: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let script = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Script>(&text)
                .with_context(|| format!("{} is not a script", path.display()))?
        }
        None => Script::default(),
    };
    let (_, handle) = ScriptedLlm::bind((args.host.as_str(), args.port), script)
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    // Tests wait for this line to learn the port.
    println!("scripted-llm listening on http://{}", handle.addr());
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}
