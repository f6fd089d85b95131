//! The persistent shell, for real: bash under a PTY, with and without bubblewrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_runtime::sandbox::{Limits, Sandbox, SandboxConfig, SandboxMode};
use ohd_runtime::shell::{Shell, ShellOptions};
use std::time::Duration;

fn options() -> ShellOptions {
    ShellOptions {
        no_output_timeout: Duration::from_secs(2),
        default_hard_timeout: Duration::from_secs(20),
    }
}

async fn shell_in(dir: &std::path::Path, mode: SandboxMode) -> Shell {
    let sandbox = Sandbox::decide(SandboxConfig {
        mode,
        network: false,
        ..SandboxConfig::default()
    });
    agent_shell(&sandbox, dir).await
}

/// The agent's shell in `sandbox` for the workspace `dir`.
async fn agent_shell(sandbox: &Sandbox, dir: &std::path::Path) -> Shell {
    let launch = sandbox.launch(
        dir,
        &["bash", "--noprofile", "--norc", "--noediting", "-i"],
        &[],
        true,
    );
    Shell::start(launch, options()).await.unwrap()
}

/// `scripts/test.sh` runs these tests a second time with SIGINT ignored, as a background job
/// would, and says so: that run must really have SIGINT ignored, or it proves nothing.
#[test]
fn sigint_is_ignored_when_the_run_says_it_is() {
    if std::env::var_os("OHD_EXPECT_SIGINT_IGNORED").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(
        ignored & (1 << (libc::SIGINT - 1)),
        0,
        "SIGINT is not ignored: {ignored:x}"
    );
}

#[tokio::test]
async fn state_persists_and_exit_codes_and_directories_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = shell_in(dir.path(), SandboxMode::None).await;
    let r = sh.run("echo hello", None).await.unwrap();
    assert_eq!((r.output.as_str(), r.exit_code), ("hello\n", 0));
    sh.run(
        "export GREETING=hi; f() { echo \"fn $1\"; }; mkdir -p sub && cd sub",
        None,
    )
    .await
    .unwrap();
    let r = sh.run("echo $GREETING; f x; pwd", None).await.unwrap();
    let real = dir.path().canonicalize().unwrap().join("sub");
    assert_eq!(r.output, format!("hi\nfn x\n{}\n", real.display()));
    assert_eq!(r.working_dir, real.display().to_string());
    let r = sh.run("ls /definitely/not/here", None).await.unwrap();
    assert_eq!(r.exit_code, 2);
    assert!(r.output.contains("No such file"));
    let r = sh.run("false", None).await.unwrap();
    assert_eq!(r.exit_code, 1);
    let multi = sh
        .run(
            "for i in 1 2 3; do\n  echo \"n$i\"\ndone\ncat <<'EOF'\nquote ' and \\ backslash\nEOF",
            None,
        )
        .await
        .unwrap();
    assert_eq!(multi.output, "n1\nn2\nn3\nquote ' and \\ backslash\n");
    let long = format!("echo {}", "y".repeat(10_000));
    assert_eq!(sh.run(&long, None).await.unwrap().output.len(), 10_001);
    sh.close().await;
}

#[tokio::test]
async fn a_megabyte_of_output_comes_back_whole_enough_and_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = shell_in(dir.path(), SandboxMode::None).await;
    let r = sh
        .run(
            "head -c 1000000 /dev/zero | tr '\\0' 'a'; echo; echo end",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(r.output.ends_with("end\n"));
    assert!(r.output.len() > 500_000);
    sh.close().await;
}

#[tokio::test]
async fn a_quiet_command_is_reported_running_then_input_and_ctrl_c_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = shell_in(dir.path(), SandboxMode::None).await;
    // A program waiting for input does not hang the caller.
    let r = sh
        .run("read -p 'name? ' name; echo \"hello $name\"", None)
        .await
        .unwrap();
    assert!(r.still_running && r.exit_code == -1, "{r:?}");
    assert!(r.output.contains("name?"));
    let r = sh.send_input("ohd").await.unwrap();
    assert_eq!((r.output.trim(), r.exit_code), ("hello ohd", 0));
    // New commands are refused while one runs; C-c stops it.
    let r = sh.run("sleep 100", None).await.unwrap();
    assert!(r.still_running);
    // The refusal is in the output, which clients show and the model reads, and is no success.
    let refused = sh.run("echo nope", None).await.unwrap();
    assert!(
        refused.output.contains("was not run") && refused.output.contains("sleep 100"),
        "{refused:?}"
    );
    assert!(
        refused.exit_code != 0 && refused.exit_code != -1,
        "{refused:?}"
    );
    let r = sh.send_input("C-c").await.unwrap();
    assert!(!r.still_running, "{r:?}");
    assert_eq!(sh.run("echo after", None).await.unwrap().output, "after\n");
    sh.close().await;
}

#[tokio::test]
async fn a_command_with_its_own_timeout_runs_to_its_end_however_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::decide(SandboxConfig {
        mode: SandboxMode::None,
        ..SandboxConfig::default()
    });
    let launch = sandbox.launch(
        dir.path(),
        &["bash", "--noprofile", "--norc", "--noediting", "-i"],
        &[],
        true,
    );
    let options = ShellOptions {
        no_output_timeout: Duration::from_millis(500),
        ..ShellOptions::default()
    };
    let mut sh = Shell::start(launch, options).await.unwrap();
    // Quiet for four times the silence limit, within its own timeout: it completes.
    let r = sh
        .run("sleep 2; echo woke", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!((r.output.as_str(), r.exit_code), ("woke\n", 0), "{r:?}");
    // Without a timeout of its own the same command is reported as still running.
    let r = sh.run("sleep 2; echo woke", None).await.unwrap();
    assert!(r.still_running && r.exit_code == -1, "{r:?}");
    sh.close().await;
}

#[tokio::test]
async fn the_hard_timeout_interrupts_and_interrupt_kills_what_ignores_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = shell_in(dir.path(), SandboxMode::None).await;
    let r = sh
        .run(
            "while true; do echo tick; sleep 0.2; done",
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert!(r.note.unwrap().contains("interrupted"));
    assert_eq!(sh.run("echo ok", None).await.unwrap().output, "ok\n");
    let r = sh.run("trap '' INT; sleep 1000", None).await.unwrap();
    assert!(r.still_running);
    let r = sh.interrupt().await.unwrap();
    assert!(!r.still_running);
    assert_eq!(sh.run("echo alive", None).await.unwrap().output, "alive\n");
    let r = sh.run("exit 3", None).await.unwrap();
    assert!(r.note.unwrap().contains("new one"));
    assert_eq!(
        sh.run("echo reborn", None).await.unwrap().output,
        "reborn\n"
    );
    sh.close().await;
}

#[tokio::test]
async fn under_bubblewrap_the_shell_sees_only_its_workspace() {
    if !ohd_runtime::sandbox::bubblewrap_available() {
        eprintln!("bubblewrap is not available here; CI installs it");
        assert!(std::env::var_os("CI").is_none(), "CI must have bubblewrap");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let ws = data.path().join("workspaces/one");
    let other = data.path().join("workspaces/two");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret.txt"), "secret").unwrap();
    let mut sh = shell_in(&ws, SandboxMode::Bubblewrap).await;
    let r = sh
        .run("pwd; echo made > mine.txt; ls /", None)
        .await
        .unwrap();
    assert!(r.output.starts_with("/workspace\n"), "{}", r.output);
    assert!(!r.output.contains("root\n") && !r.output.contains("home\n"));
    assert_eq!(
        std::fs::read_to_string(ws.join("mine.txt")).unwrap(),
        "made\n"
    );
    let r = sh
        .run(&format!("cat {}/secret.txt", other.display()), None)
        .await
        .unwrap();
    assert_ne!(
        r.exit_code, 0,
        "another conversation's file was readable: {}",
        r.output
    );
    let r = sh.run("touch /usr/evil", None).await.unwrap();
    assert_ne!(r.exit_code, 0);
    let r = sh
        .run("echo tmp > /tmp/x && cat /tmp/x", None)
        .await
        .unwrap();
    assert_eq!(r.output, "tmp\n");
    sh.close().await;
}

#[tokio::test]
async fn the_sandbox_network_is_off_or_on_by_configuration() {
    if !ohd_runtime::sandbox::bubblewrap_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must have bubblewrap");
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let dir = tempfile::tempdir().unwrap();
    // The host's loopback (where ohd listens) is out of reach either way; with the network
    // on, the sandbox has a way out (pasta's interface and default route).
    let probe = format!(
        "(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached || echo unreachable; \
         grep -q '^[^ \t]*\t00000000' /proc/net/route && echo routed || echo no-route"
    );
    for (network, expected) in [
        (false, "unreachable\nno-route\n"),
        (true, "unreachable\nrouted\n"),
    ] {
        let sandbox = Sandbox::decide(SandboxConfig {
            mode: SandboxMode::Bubblewrap,
            network,
            ..SandboxConfig::default()
        });
        let mut sh = agent_shell(&sandbox, dir.path()).await;
        assert_eq!(
            sh.run(&probe, None).await.unwrap().output,
            expected,
            "network {network}"
        );
        sh.close().await;
    }
}

/// A Debian package the test builds: one script, `/usr/bin/ohd-hello`.
fn build_deb(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: ohd-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: ohd tests <t@example.invalid>\nDescription: a test package\n",
    )
    .unwrap();
    let script = root.join("usr/bin/ohd-hello");
    std::fs::write(&script, "#!/bin/sh\necho hello from a package\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let deb = dir.join("ohd-hello.deb");
    let status = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&root).unwrap();
    deb
}

/// A pure-Python wheel the test builds: `import ohdwheel; ohdwheel.VALUE`.
fn build_wheel(dir: &std::path::Path) -> std::path::PathBuf {
    let wheel = dir.join("ohdwheel-0.1-py3-none-any.whl");
    let script = format!(
        "import zipfile\nz = zipfile.ZipFile({:?}, 'w')\nz.writestr('ohdwheel/__init__.py', 'VALUE = 42\\n')\nz.writestr('ohdwheel-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: ohdwheel\\nVersion: 0.1\\n')\nz.writestr('ohdwheel-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\nz.writestr('ohdwheel-0.1.dist-info/RECORD', '')\nz.close()\n",
        wheel.display().to_string()
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    wheel
}

/// The writable system layer: a package installed with dpkg and a wheel installed with pip,
/// system-wide inside the sandbox, work there, survive a new sandbox, and leave the host as it
/// was; removing the layer removes them.
#[tokio::test]
async fn packages_install_into_the_sandbox_layer_and_not_onto_the_host() {
    let root = rustix::process::geteuid().is_root();
    if !ohd_runtime::sandbox::bubblewrap_available() || !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this as root with bubblewrap"
        );
        eprintln!("skipped: the writable system layer needs ohd as root and bubblewrap");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspaces/layer-test");
    std::fs::create_dir_all(&workspace).unwrap();
    build_deb(&workspace);
    build_wheel(&workspace);
    let sandbox = Sandbox::decide(SandboxConfig {
        mode: SandboxMode::Bubblewrap,
        network: false,
        layers: Some(dir.path().join("sandboxes")),
        limits: Limits {
            layer_bytes: 64 * 1024 * 1024,
            ..Limits::default()
        },
        ..SandboxConfig::default()
    });
    assert!(sandbox.has_layer(), "{:?}", sandbox.notes());
    let start = || agent_shell(&sandbox, &workspace);
    let mut sh = start().await;
    let r = sh
        .run(
            "dpkg -i /workspace/ohd-hello.deb >/dev/null && ohd-hello",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.output.as_str(), r.exit_code),
        ("hello from a package\n", 0),
        "{r:?}"
    );
    let r = sh
        .run(
            "pip3 install -q --no-index --break-system-packages /workspace/ohdwheel-0.1-py3-none-any.whl 2>&1 | grep -v WARNING; python3 -c 'import ohdwheel; print(ohdwheel.VALUE)'",
            None,
        )
        .await
        .unwrap();
    assert!(r.output.ends_with("42\n"), "{r:?}");
    // The layer holds no more than its limit.
    let r = sh
        .run("head -c 100M /dev/zero > /usr/local/share/big", None)
        .await
        .unwrap();
    assert!(r.output.contains("No space left on device"), "{r:?}");
    assert!(r.note.unwrap_or_default().contains("at most 64 MiB"));
    let r = sh
        .run("rm /usr/local/share/big && echo removed", None)
        .await
        .unwrap();
    assert_eq!(r.output, "removed\n");
    // The host's secrets stay covered although the layer shows root's files as the sandbox's.
    let r = sh.run("cat /etc/shadow", None).await.unwrap();
    assert!(r.exit_code != 0 && !r.output.contains("root:"), "{r:?}");
    sh.close().await;

    // Nothing reached the host.
    assert!(!std::path::Path::new("/usr/bin/ohd-hello").exists());
    let on_host = std::process::Command::new("dpkg")
        .args(["-s", "ohd-hello"])
        .output()
        .unwrap();
    assert!(!on_host.status.success());
    let on_host = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import ohdwheel"])
        .output()
        .unwrap();
    assert!(!on_host.status.success());

    // A new sandbox (after an idle release or a restart) finds what was installed.
    let mut sh = start().await;
    let r = sh.run("ohd-hello", None).await.unwrap();
    assert_eq!(r.output, "hello from a package\n");
    sh.close().await;

    // Deleting the conversation takes the layer with it.
    sandbox.remove_layer(&workspace).unwrap();
    assert!(!dir.path().join("sandboxes/layer-test").exists());
    let mut sh = start().await;
    let r = sh
        .run("command -v ohd-hello || echo gone", None)
        .await
        .unwrap();
    assert_eq!(r.output, "gone\n");
    sh.close().await;
    sandbox.remove_layer(&workspace).unwrap();
}

/// pasta reaches out through this machine's own sockets, so the machine's other addresses (a
/// second interface, a bridge) would lead back to it: the sandbox must not reach a service
/// listening on all of them. An address is added to this machine for the test (root only).
#[tokio::test]
async fn the_machines_other_addresses_are_out_of_the_sandboxs_reach() {
    if !ohd_runtime::sandbox::bubblewrap_available() || !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this as root with bubblewrap"
        );
        eprintln!("skipped: needs root and bubblewrap");
        return;
    }
    let extra = "10.254.254.1";
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(ip(&["addr", "add", &format!("{extra}/32"), "dev", "lo"]));
    struct Remove(&'static str);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["addr", "del", &format!("{}/32", self.0), "dev", "lo"])
                .status();
        }
    }
    let _remove = Remove(extra);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    // Reachable from this machine itself, so a refusal inside is the sandbox's doing.
    assert!(std::net::TcpStream::connect((extra, port)).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::decide(SandboxConfig {
        mode: SandboxMode::Bubblewrap,
        network: true,
        ..SandboxConfig::default()
    });
    let mut sh = agent_shell(&sandbox, dir.path()).await;
    let probe = format!(
        "(timeout 3 bash -c 'echo > /dev/tcp/{extra}/{port}') 2>/dev/null && echo reached || echo unreachable; \
         (timeout 3 bash -c 'echo > /dev/tcp/169.254.169.254/80') 2>/dev/null && echo metadata || echo no-metadata; \
         grep -q '^[^ \t]*\t00000000' /proc/net/route && echo routed || echo no-route"
    );
    let r = sh.run(&probe, None).await.unwrap();
    assert_eq!(r.output, "unreachable\nno-metadata\nrouted\n", "{r:?}");
    sh.close().await;
}

/// A sandbox that could not be decided runs nothing, rather than something less sandboxed.
#[tokio::test]
async fn an_undecided_sandbox_starts_no_shell() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::unusable(SandboxConfig::default(), "no decision".to_owned());
    let launch = sandbox.launch(
        dir.path(),
        &["bash", "--noprofile", "--norc", "--noediting", "-i"],
        &[],
        true,
    );
    match Shell::start(launch, options()).await {
        Err(e) => assert!(e.to_string().contains("no decision"), "{e}"),
        Ok(_) => panic!("a shell started in an undecided sandbox"),
    }
}
