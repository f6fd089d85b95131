//! Attacks from inside the sandbox, as a prompt-injected model would make them: the scripted
//! model asks for each command, ohd runs it in the conversation's sandbox, and the
//! observation says it failed. Run as root (as CI runs) and, from root, with ohd as an
//! unprivileged user.

use crate::common::*;
use ohd_scripted_llm::{Script, Turn};
use serde_json::{Value, json};

fn bash_within(command: &str, timeout: u64) -> Turn {
    Turn::tool_call(
        "execute_bash",
        json!({"command": command, "timeout": timeout}),
    )
}

/// Small limits, so that each is reached quickly.
const LIMITS: &str = "[sandbox]\nmode = \"bubblewrap\"\nnetwork = true\nmemory_mb = 256\nmax_processes = 128\nmax_file_size_mb = 32\ntmp_size_mb = 8\ncommand_cpu_secs = 2\n";

/// Each attack, and what its observation must show.
struct Attack {
    command: Turn,
    check: fn(&str, &Value),
}

fn attacks(config_path: &std::path::Path) -> Vec<(String, Attack)> {
    let read_config = format!("cat {}; echo rc=$?", config_path.display());
    // The test writes ohd's port into the workspace before the task starts.
    let probe_api = "PORT=$(cat ohd-port); curl -s -m 3 -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/alive; echo \" rc=$?\"; \
         (echo > /dev/tcp/127.0.0.1/$PORT) 2>&1 | tail -1";
    let handle_probe = "python3 -c 'import ctypes,os; libc=ctypes.CDLL(None,use_errno=True); \
         buf=ctypes.create_string_buffer(136); buf[0:4]=(128).to_bytes(4,\"little\"); mid=ctypes.c_int(); \
         r=libc.name_to_handle_at(-100,b\"/etc/hostname\",buf,ctypes.byref(mid),0); \
         print(\"name_to_handle_at\", r, os.strerror(ctypes.get_errno())); \
         r=libc.open_by_handle_at(-100,buf,0); print(\"open_by_handle_at\", r, os.strerror(ctypes.get_errno())); \
         r=libc.syscall(0x40000000 | 304, -100, buf, 0); print(\"x32 open_by_handle_at\", r, os.strerror(ctypes.get_errno()))'";
    vec![
        (
            "capabilities".into(),
            Attack {
                command: bash(
                    "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -u; cat /proc/self/uid_map",
                ),
                check: |out, _| {
                    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
                    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
                    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
                    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
                    assert!(out.contains("Seccomp:\t2"), "{out}");
                    // Root inside, mapped to an unprivileged id outside.
                    let map: Vec<&str> = out
                        .lines()
                        .last()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    assert_eq!(map.first(), Some(&"0"), "{out}");
                    assert_ne!(map.get(1), Some(&"0"), "root inside is root outside: {out}");
                },
            },
        ),
        (
            "remount".into(),
            Attack {
                command: bash(
                    "mount -o remount,rw /etc; mount -t tmpfs none /mnt; touch /etc/ohd-escape; unshare -Ur true; echo done",
                ),
                check: |out, _| {
                    assert!(out.contains("mount: /etc: permission denied"), "{out}");
                    assert!(
                        out.contains("unshare failed: Operation not permitted"),
                        "{out}"
                    );
                    // /etc may be writable inside (the conversation's system layer), never on
                    // the host.
                    assert!(!std::path::Path::new("/etc/ohd-escape").exists());
                },
            },
        ),
        (
            "proc sys".into(),
            Attack {
                command: bash(
                    "echo '|/tmp/x' > /proc/sys/kernel/core_pattern; echo 1 > /proc/sysrq-trigger; echo rc=$?; echo 1000 > /proc/self/oom_score_adj",
                ),
                check: |out, _| {
                    assert!(out.contains("rc=1"), "{out}");
                    assert!(
                        out.contains("/proc/self/oom_score_adj: Read-only file system"),
                        "{out}"
                    );
                    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
                        .unwrap_or_default();
                    assert!(!pattern.contains("/tmp/x"), "{pattern}");
                },
            },
        ),
        (
            "ohd's config file".into(),
            Attack {
                command: bash(&read_config),
                check: |out, _| {
                    assert!(
                        !out.contains("memory_mb"),
                        "the config file was read: {out}"
                    );
                    assert!(!out.contains("rc=0") || out.trim() == "rc=0", "{out}");
                },
            },
        ),
        (
            "shadow".into(),
            Attack {
                command: bash("cat /etc/shadow; echo rc=$?"),
                check: |out, _| {
                    assert!(
                        out.contains("rc=1") && out.contains("ermission denied"),
                        "{out}"
                    );
                    assert!(!out.contains("root:"), "{out}");
                },
            },
        ),
        (
            "file handles".into(),
            Attack {
                command: bash(handle_probe),
                check: |out, _| {
                    assert!(
                        out.contains("name_to_handle_at -1 Operation not permitted"),
                        "{out}"
                    );
                    assert!(
                        out.contains("\nopen_by_handle_at -1 Operation not permitted"),
                        "{out}"
                    );
                    assert!(
                        out.contains("x32 open_by_handle_at -1 Function not implemented"),
                        "{out}"
                    );
                },
            },
        ),
        (
            "ohd's API".into(),
            Attack {
                command: bash(probe_api),
                check: |out, _| {
                    assert!(out.contains("000 rc=7"), "curl reached ohd: {out}");
                    assert!(out.contains("Connection refused"), "{out}");
                },
            },
        ),
        (
            "memory hog".into(),
            Attack {
                command: bash("python3 -c 'b = bytearray(1 << 30); print(\"allocated\")'"),
                check: |out, obs| {
                    assert!(!out.contains("allocated"), "{out}");
                    assert!(text(obs).contains("memory limit (256 MiB"), "{obs}");
                },
            },
        ),
        (
            "cpu".into(),
            Attack {
                command: bash("python3 -c 'while True: pass'"),
                check: |_, obs| {
                    assert_eq!(obs["extras"]["metadata"]["exit_code"], 152, "{obs}");
                    assert!(text(obs).contains("CPU time limit (2 s"), "{obs}");
                },
            },
        ),
        (
            "file size".into(),
            Attack {
                command: bash("head -c 64M /dev/zero > /workspace/big.bin"),
                check: |_, obs| {
                    assert_eq!(obs["extras"]["metadata"]["exit_code"], 153, "{obs}");
                    assert!(text(obs).contains("file size limit (32 MiB"), "{obs}");
                },
            },
        ),
        (
            "tmp size".into(),
            Attack {
                command: bash("head -c 16M /dev/zero > /tmp/fill"),
                check: |out, obs| {
                    assert!(out.contains("No space left on device"), "{out}");
                    assert!(text(obs).contains("/tmp holds at most 8 MiB"), "{obs}");
                },
            },
        ),
        (
            "fork bomb".into(),
            Attack {
                command: bash_within("bomb() { bomb | bomb & }; bomb; sleep 3; echo launched", 20),
                check: |_, obs| {
                    assert!(text(obs).contains("128 processes"), "{}", text(obs));
                },
            },
        ),
        (
            "still a place to work".into(),
            Attack {
                command: bash("ls / | head -3; echo alive > still.txt; cat still.txt"),
                check: |out, _| assert!(out.contains("alive"), "{out}"),
            },
        ),
    ]
}

/// Removes a file the test put outside its own folders.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An observation as the model and a person see it: content and any note.
fn text(observation: &Value) -> String {
    format!(
        "{} {}",
        observation["content"].as_str().unwrap_or(""),
        observation["extras"]["metadata"]["suffix"]
            .as_str()
            .unwrap_or("")
    )
}

async fn every_attack_fails(run_as: Option<u32>) {
    let pasta = std::process::Command::new("pasta")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ohd_runtime::sandbox::bubblewrap_available() || !pasta {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have bubblewrap and passt"
        );
        eprintln!("skipped: bubblewrap cannot make a sandbox here, or passt is not installed");
        return;
    }
    // A config file in /etc, readable by all as a careless install leaves it: the sandbox must
    // not show it (it may hold keys).
    let config_path = std::path::PathBuf::from(format!(
        "/etc/ohd-sandbox-test-{}-{}.toml",
        std::process::id(),
        run_as.unwrap_or(0)
    ));
    let _remove_config = RemoveOnDrop(config_path.clone());
    let attacks = attacks(&config_path);
    let mut turns: Vec<Turn> = attacks.iter().map(|(_, a)| a.command.clone()).collect();
    turns.push(Turn::tool_call("finish", json!({"message": "done"})));
    let (_llm, mut options) = scripted_llm(Script::new(turns)).await;
    options.config_toml = Some(LIMITS.into());
    options.run_as = run_as;
    options.config_path = Some(config_path);
    let ohd = Ohd::start_with(options).await;
    let (_, health) = ohd.get("/health").await;
    assert_eq!(
        health["sandbox_details"]["user_namespace"], true,
        "{health}"
    );
    assert_eq!(health["sandbox_details"]["seccomp"], true, "{health}");
    assert_eq!(health["sandbox_details"]["network"], "pasta", "{health}");
    let conv = ohd.create_conversation().await;
    let workspace = ohd.data_dir.join("workspaces").join(&conv);
    std::fs::create_dir_all(&workspace).unwrap();
    let port = ohd.addr.rsplit(':').next().unwrap_or_default().to_owned();
    std::fs::write(workspace.join("ohd-port"), port).unwrap();
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("try to get out")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let observations: Vec<&Value> = events
        .iter()
        .filter(|e| e["observation"] == "run" && e["source"] == "agent")
        .collect();
    assert_eq!(observations.len(), attacks.len(), "{:?}", summary(&events));
    for ((name, attack), observation) in attacks.iter().zip(observations) {
        let output = observation["content"].as_str().unwrap_or("");
        eprintln!("{name}: {output}");
        (attack.check)(output, observation);
    }
    // ohd itself carried on.
    assert_eq!(ohd.get("/alive").await.0, 200);
}

#[tokio::test]
async fn every_attack_from_inside_the_sandbox_fails() {
    every_attack_fails(None).await;
}

/// The same with ohd as an unprivileged user: the sandbox shares ohd's user id then, so the
/// process limit counts on top of what that user runs.
#[tokio::test]
async fn every_attack_fails_with_ohd_as_an_unprivileged_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: run as root to start ohd as another user");
        return;
    }
    every_attack_fails(Some(65_534)).await;
}

/// The sandbox stays a place to work: the agent installs a Debian package with `dpkg -i` and a
/// wheel with the system's `pip` (both made in the workspace by the script's first command),
/// uses them, and the host is left as it was.
#[tokio::test]
async fn an_agent_installs_a_package_and_a_wheel_system_wide_inside_its_sandbox() {
    if !ohd_runtime::sandbox::bubblewrap_available() || !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this as root with bubblewrap"
        );
        eprintln!("skipped: the writable system layer needs ohd as root and bubblewrap");
        return;
    }
    let make = "mkdir -p pkg/DEBIAN pkg/usr/bin && \
        printf 'Package: ohd-agent-hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@example.invalid>\\nDescription: test\\n' > pkg/DEBIAN/control && \
        printf '#!/bin/sh\\necho hello from the agent package\\n' > pkg/usr/bin/ohd-agent-hello && chmod 755 pkg/usr/bin/ohd-agent-hello && \
        dpkg-deb --root-owner-group --build pkg hello.deb >/dev/null && \
        python3 -c \"import zipfile; z = zipfile.ZipFile('ohdagentwheel-0.1-py3-none-any.whl', 'w'); z.writestr('ohdagentwheel/__init__.py', 'VALUE = 7\\n'); z.writestr('ohdagentwheel-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: ohdagentwheel\\nVersion: 0.1\\n'); z.writestr('ohdagentwheel-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'); z.writestr('ohdagentwheel-0.1.dist-info/RECORD', ''); z.close()\" && echo made";
    let (_llm, mut options) = scripted_llm(Script::new(vec![
        // What ohd's editor creates, the sandbox's root may change.
        Turn::tool_call(
            "str_replace_editor",
            json!({"command": "create", "path": "/workspace/notes/made.txt", "file_text": "by the editor\n"}),
        ),
        bash("echo by the shell >> notes/made.txt && cat notes/made.txt && touch notes/other"),
        bash(make),
        bash("dpkg -i hello.deb >/dev/null 2>&1; ohd-agent-hello; dpkg -s ohd-agent-hello | grep Status"),
        bash("pip3 install -q --no-index --break-system-packages ./ohdagentwheel-0.1-py3-none-any.whl 2>&1 | grep -v WARNING; cd /tmp && python3 -c 'import ohdagentwheel; print(ohdagentwheel.VALUE)'"),
        Turn::tool_call("finish", json!({"message": "installed"})),
    ]))
    .await;
    options.config_toml = Some("[sandbox]\nmode = \"bubblewrap\"\nnetwork = false\n".into());
    let ohd = Ohd::start_with(options).await;
    let (_, health) = ohd.get("/health").await;
    assert_eq!(
        health["sandbox_details"]["writable_system_layer"], true,
        "{health}"
    );
    let conv = ohd.create_conversation().await;
    let mut client = joined(&ohd, &conv, "-1").await;
    client.until_ready().await;
    client.send(&user_message("install them")).await;
    let events = client.until_state(&["finished", "error"]).await;
    let outputs: Vec<&str> = events
        .iter()
        .filter(|e| e["observation"] == "run")
        .map(|e| e["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outputs.len(), 4, "{:?}", summary(&events));
    assert_eq!(outputs[0], "by the editor\nby the shell\n");
    assert!(outputs[1].contains("made"), "{}", outputs[1]);
    assert!(
        outputs[2].contains("hello from the agent package"),
        "{}",
        outputs[2]
    );
    assert!(
        outputs[2].contains("Status: install ok installed"),
        "{}",
        outputs[2]
    );
    assert!(outputs[3].trim_end().ends_with('7'), "{}", outputs[3]);
    // The host is as it was.
    assert!(!std::path::Path::new("/usr/bin/ohd-agent-hello").exists());
    let host_dpkg = std::process::Command::new("dpkg")
        .args(["-s", "ohd-agent-hello"])
        .output()
        .unwrap();
    assert!(!host_dpkg.status.success());
    let host_python = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import ohdagentwheel"])
        .output()
        .unwrap();
    assert!(!host_python.status.success());
    // Deleting the conversation takes its layer.
    let status = ohd
        .http
        .delete(ohd.url(&format!("/api/conversations/{conv}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(!ohd.data_dir.join("sandboxes").join(&conv).exists());
}
