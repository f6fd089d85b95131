//! ohd started with SIGINT ignored (`nohup`, a background job of a non-interactive shell): the
//! agent's shell must still stop a command with C-c. Its own test binary, because it changes a
//! signal's disposition for the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_runtime::sandbox::{Sandbox, SandboxConfig, SandboxMode};
use ohd_runtime::shell::{Shell, ShellOptions};
use std::time::Duration;

#[tokio::test]
async fn c_c_stops_a_command_when_ohd_was_started_with_sigint_ignored() {
    // SAFETY: setting a disposition; the test owns its process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    for mode in [SandboxMode::None, SandboxMode::Auto] {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::decide(SandboxConfig {
            mode,
            network: false,
            ..SandboxConfig::default()
        });
        let launch = sandbox.launch(
            dir.path(),
            &["bash", "--noprofile", "--norc", "--noediting", "-i"],
            &[],
            true,
        );
        let mut sh = Shell::start(
            launch,
            ShellOptions {
                no_output_timeout: Duration::from_secs(2),
                default_hard_timeout: Duration::from_secs(20),
            },
        )
        .await
        .unwrap();
        // The shell's commands start with SIGINT at its default action.
        let r = sh.run("trap -p INT; echo checked", None).await.unwrap();
        assert_eq!(r.output.trim(), "checked", "{mode:?}: {r:?}");
        let r = sh.run("sleep 37.25", None).await.unwrap();
        assert!(r.still_running, "{mode:?}: {r:?}");
        let r = sh.send_input("C-c").await.unwrap();
        assert!(
            !r.still_running,
            "{mode:?}: C-c did not stop the command: {r:?}"
        );
        assert_eq!(sh.run("echo after", None).await.unwrap().output, "after\n");
        sh.close().await;
    }
}
