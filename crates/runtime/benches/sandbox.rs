//! What the sandbox costs: the time to start a shell (the sandbox with it) and the time of one
//! command (`true`) in it, for each kind of sandbox this machine offers.
//!
//! `cargo bench -p ohd-runtime --bench sandbox`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_runtime::sandbox::{Sandbox, SandboxConfig, SandboxMode};
use ohd_runtime::shell::{Shell, ShellOptions};
use std::time::{Duration, Instant};

const STARTS: usize = 20;
const COMMANDS: usize = 200;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(name: &str, config: SandboxConfig) {
    let sandbox = Sandbox::decide(config);
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspaces/bench");
    std::fs::create_dir_all(&workspace).unwrap();
    let args = ["bash", "--noprofile", "--norc", "--noediting", "-i"];
    let mut starts = Vec::new();
    for _ in 0..STARTS {
        let launch = sandbox.launch(&workspace, &args, &[], true);
        let begun = Instant::now();
        let shell = Shell::start(launch, ShellOptions::default()).await.unwrap();
        starts.push(begun.elapsed());
        shell.close().await;
    }
    let launch = sandbox.launch(&workspace, &args, &[], true);
    let mut shell = Shell::start(launch, ShellOptions::default()).await.unwrap();
    let mut commands = Vec::new();
    for _ in 0..COMMANDS {
        let begun = Instant::now();
        let result = shell.run("true", None).await.unwrap();
        commands.push(begun.elapsed());
        assert_eq!(result.exit_code, 0);
    }
    shell.close().await;
    let _ = sandbox.remove_layer(&workspace);
    println!(
        "| {name} | {} | {} |",
        ms(median(starts)),
        ms(median(commands))
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        println!("| sandbox | shell start, median of {STARTS} | `true`, median of {COMMANDS} |");
        println!("| --- | ---: | ---: |");
        let base = || SandboxConfig {
            mode: SandboxMode::Bubblewrap,
            network: false,
            ..SandboxConfig::default()
        };
        measure(
            "none",
            SandboxConfig {
                mode: SandboxMode::None,
                ..base()
            },
        )
        .await;
        measure("bubblewrap, network off", base()).await;
        measure(
            "bubblewrap, network through pasta",
            SandboxConfig {
                network: true,
                ..base()
            },
        )
        .await;
        let layers = tempfile::tempdir().unwrap();
        measure(
            "bubblewrap, pasta, writable system layer (root)",
            SandboxConfig {
                network: true,
                layers: Some(layers.path().to_owned()),
                ..base()
            },
        )
        .await;
    });
}
