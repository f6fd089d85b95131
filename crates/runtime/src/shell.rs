//! One persistent bash per conversation, under a PTY, so the working directory, variables and
//! functions persist between commands, and programs that check for a terminal behave as they
//! would for a person.
//!
//! Each command is sent as one `eval $'...'` (so a multi-line command is one command, and lines
//! stay under the terminal's 4,096-byte line limit), and bash's prompt is set to a marker that
//! carries the exit code and working directory. Output is captured until the marker appears.
//! A command that prints nothing new for a while is reported as still running (soft timeout):
//! the model may wait, send input, or interrupt it. A command past its hard timeout is
//! interrupted with Ctrl-C, and its processes killed if that does not stop them.

use crate::sandbox::{Attached, Launch};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Bytes kept from the start and from the end of one command's output; the middle of a larger
/// output is dropped as it arrives, so memory stays bounded whatever a command prints.
const KEEP_HEAD: usize = 256 * 1024;
const KEEP_TAIL: usize = 256 * 1024;
const MARK: u8 = 0x1e;
const MARK_PREFIX: &[u8] = b"\x1eOHD:";

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("cannot start the shell: {0}")]
    Start(String),
    #[error("the shell stopped responding: {0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub struct ShellOptions {
    /// A command with no new output for this long is reported as still running.
    pub no_output_timeout: Duration,
    /// A command without its own timeout is interrupted after this long.
    pub default_hard_timeout: Duration,
}

impl Default for ShellOptions {
    fn default() -> Self {
        ShellOptions {
            no_output_timeout: Duration::from_secs(10),
            default_hard_timeout: Duration::from_secs(120),
        }
    }
}

/// The exit code of a command that was not run (another still runs): not a success, and not
/// -1, which says a command is still running or was cut off.
pub const NOT_RUN_EXIT_CODE: i64 = 1;

/// What came of a command or of input sent to a running one.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// Everything printed, with `\r\n` made `\n`; very large outputs lose their middle.
    pub output: String,
    /// The exit code, or -1 while the command is still running or when it was interrupted.
    pub exit_code: i64,
    pub working_dir: String,
    /// Why the result is not a plain completion, in words for the model.
    pub note: Option<String>,
    pub still_running: bool,
}

#[derive(Default)]
struct CaptureState {
    head: Vec<u8>,
    tail: Vec<u8>,
    omitted: usize,
    eof: bool,
}

impl CaptureState {
    fn push(&mut self, bytes: &[u8]) {
        let room = KEEP_HEAD.saturating_sub(self.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.extend_from_slice(rest);
        if self.tail.len() > 2 * KEEP_TAIL {
            let cut = self.tail.len() - KEEP_TAIL;
            self.tail.drain(..cut);
            self.omitted += cut;
        }
    }

    fn clear(&mut self) {
        self.head.clear();
        self.tail.clear();
        self.omitted = 0;
    }

    /// Finds a complete prompt marker: returns (exit code, cwd, output before it).
    fn take_marker(&mut self) -> Option<(i64, String, String)> {
        // The marker is short; it is at the end of the head or anywhere in the tail.
        let buffer: &[u8] = if self.tail.is_empty() {
            &self.head
        } else {
            &self.tail
        };
        let start = find(buffer, MARK_PREFIX)?;
        let body_start = start + MARK_PREFIX.len();
        let end = buffer[body_start..].iter().position(|b| *b == MARK)? + body_start;
        let body = String::from_utf8_lossy(&buffer[body_start..end]).into_owned();
        let (code, cwd) = body.split_once(':')?;
        let exit_code = code.trim().parse::<i64>().unwrap_or(-1);
        let cwd = cwd.to_owned();
        let mut raw = Vec::new();
        if self.tail.is_empty() {
            raw.extend_from_slice(&self.head[..start]);
        } else {
            raw.extend_from_slice(&self.head);
            raw.extend_from_slice(&self.tail[..start]);
        }
        let omitted = self.omitted;
        self.clear();
        let mut text = String::from_utf8_lossy(&raw).replace("\r\n", "\n");
        if omitted > 0 {
            let mut at = KEEP_HEAD.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(
                at,
                &format!("\n[... {omitted} bytes of output omitted ...]\n"),
            );
        }
        Some((exit_code, cwd, text))
    }

    /// What has been printed so far, without waiting for the prompt.
    fn take_partial(&mut self) -> String {
        let mut raw = self.head.clone();
        if self.omitted > 0 {
            raw.extend_from_slice(
                format!("\n[... {} bytes of output omitted ...]\n", self.omitted).as_bytes(),
            );
        }
        raw.extend_from_slice(&self.tail);
        self.clear();
        String::from_utf8_lossy(&raw).replace("\r\n", "\n")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Capture {
    state: Mutex<CaptureState>,
    changed: Notify,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Shell {
    launch: Launch,
    options: ShellOptions,
    writer: pty_process::OwnedWritePty,
    capture: Arc<Capture>,
    child: tokio::process::Child,
    shell_pid: Option<u32>,
    running: Option<String>,
    cwd: String,
    /// The sandbox's network helper and system layer, ended with the shell.
    _attached: Attached,
    /// When the sandbox's processes and layer were last counted: both take a walk over
    /// `/proc` or the layer, so fast commands do not pay it every time.
    last_checks: Option<Instant>,
}

/// How often, at most, the sandbox's processes and layer are counted after a command that
/// shows no sign of having run out of processes.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What a program prints when it cannot fork or start a thread.
fn says_out_of_processes(output: &str) -> bool {
    [
        "Resource temporarily unavailable",
        "Cannot fork",
        "can't start new thread",
    ]
    .iter()
    .any(|sign| output.contains(sign))
}

enum Wait {
    Prompt {
        exit_code: i64,
        cwd: String,
        output: String,
    },
    Quiet(String),
    Deadline(String),
    Exited(String),
}

impl Shell {
    pub async fn start(launch: Launch, options: ShellOptions) -> Result<Shell, ShellError> {
        match Shell::start_once(launch.clone(), options.clone()).await {
            // bubblewrap now and then fails to set up a namespace while many are being made
            // (seen: "loopback: Failed RTM_NEWADDR"); a second try is cheap.
            Err(first) if launch.sandboxed => {
                tracing::warn!(error = %first, "the sandbox did not start; trying once more");
                Shell::start_once(launch, options).await
            }
            result => result,
        }
    }

    async fn start_once(launch: Launch, options: ShellOptions) -> Result<Shell, ShellError> {
        let (pty, pts) = pty_process::open().map_err(|e| ShellError::Start(e.to_string()))?;
        pty.resize(pty_process::Size::new(50, 200))
            .map_err(|e| ShellError::Start(e.to_string()))?;
        // Preparing mounts the system layer and starts a short-lived process: off the async
        // threads, which deliver events meanwhile.
        let to_prepare = launch.clone();
        let prepared = tokio::task::spawn_blocking(move || to_prepare.prepare())
            .await
            .map_err(|e| ShellError::Start(format!("cannot prepare the sandbox: {e}")))?
            .map_err(|e| ShellError::Start(format!("cannot prepare the sandbox: {e}")))?;
        let mut command = pty_process::Command::new(&launch.program)
            .args(&launch.args)
            .env_clear()
            .current_dir(&launch.host_cwd)
            .kill_on_drop(true);
        for (key, value) in &launch.env {
            command = command.env(key, value);
        }
        // One hook: this builder keeps only the last one given.
        let mut hook = prepared.as_ref().map(|p| p.pre_exec());
        if let Some((uid, gid)) = prepared.as_ref().and_then(|p| p.credentials()) {
            command = command.uid(uid).gid(gid);
        }
        // SAFETY: the closure makes only async-signal-safe calls (`signal`, `dup2`,
        // `setrlimit`) and does not allocate.
        command = unsafe {
            command.pre_exec(move || {
                crate::sandbox::spawn::default_signals()?;
                match hook.as_mut() {
                    Some(hook) => hook(),
                    None => Ok(()),
                }
            })
        };
        let child = command
            .spawn(pts)
            .map_err(|e| ShellError::Start(format!("{}: {e}", launch.program.to_string_lossy())))?;
        let attached = match prepared {
            Some(prepared) => prepared.started().await.map_err(ShellError::Start)?,
            None => Attached::default(),
        };
        let (mut reader, writer) = pty.into_split();
        let capture = Arc::new(Capture {
            state: Mutex::new(CaptureState::default()),
            changed: Notify::new(),
        });
        let feed = capture.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        feed.lock().push(&buffer[..n]);
                        feed.changed.notify_one();
                    }
                }
            }
            feed.lock().eof = true;
            feed.changed.notify_one();
        });
        let root_pid = child.id();
        let mut shell = Shell {
            cwd: launch.agent_root.display().to_string(),
            launch,
            options,
            writer,
            capture,
            child,
            shell_pid: None,
            running: None,
            _attached: attached,
            last_checks: None,
        };
        // Echo off, and a prompt that is our marker. Everything before the first marker (bash's
        // default prompt, the echoed setup line) is discarded.
        shell
            .write(b"stty -echo; PROMPT_COMMAND='__ohd_ec=$?'; PS1='\\036OHD:${__ohd_ec}:${PWD}\\036'; PS2=''; set +H; unset HISTFILE\n")
            .await?;
        match shell
            .wait(Instant::now() + Duration::from_secs(15), true)
            .await?
        {
            Wait::Prompt { cwd, .. } => shell.cwd = cwd,
            Wait::Exited(out) | Wait::Quiet(out) | Wait::Deadline(out) => {
                return Err(ShellError::Start(format!(
                    "the shell did not come up: {}",
                    out.trim()
                )));
            }
        }
        shell.shell_pid = root_pid.and_then(find_shell_pid);
        Ok(shell)
    }

    pub fn working_dir(&self) -> &str {
        &self.cwd
    }

    pub fn is_running_command(&self) -> bool {
        self.running.is_some()
    }

    pub fn agent_root(&self) -> PathBuf {
        self.launch.agent_root.clone()
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ShellError> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| ShellError::Io(e.to_string()))?;
        self.writer
            .flush()
            .await
            .map_err(|e| ShellError::Io(e.to_string()))
    }

    /// Runs a command. `hard_timeout` overrides the default.
    pub async fn run(
        &mut self,
        command: &str,
        hard_timeout: Option<Duration>,
    ) -> Result<CommandResult, ShellError> {
        if let Some(previous) = &self.running {
            // Said in the output, which every client shows and the model reads, and with an
            // exit code that is not a success: nothing ran.
            return Ok(CommandResult {
                output: format!(
                    "ERROR: `{command}` was not run: the previous command `{previous}` is still \
                     running. Send empty input (is_input=true, command='') to see more of its \
                     output, send input to it with is_input=true, or interrupt it with \
                     command='C-c' and is_input=true, then run `{command}` again."
                ),
                exit_code: NOT_RUN_EXIT_CODE,
                working_dir: self.cwd.clone(),
                note: Some("The command was not run.".to_owned()),
                still_running: true,
            });
        }
        self.capture.lock().clear();
        // Running from before the write: if this future is dropped while the line is being
        // written (the user stopped the agent), an interrupt still sends Ctrl-C for it.
        self.running = Some(command.to_owned());
        self.write(eval_line(command).as_bytes()).await?;
        // A command given its own timeout runs until it ends or the timeout passes, however
        // quiet it is; only the others are reported as still running after a silence.
        let hard = hard_timeout.unwrap_or(self.options.default_hard_timeout);
        let quiet = hard_timeout.is_none();
        self.finish(Instant::now() + hard, hard, quiet).await
    }

    /// Sends input to the running command (`C-c`, `C-d`, `C-z` as keys; empty text only waits
    /// for more output).
    pub async fn send_input(&mut self, input: &str) -> Result<CommandResult, ShellError> {
        if let Some(key) = control_key(input) {
            self.write(&[key]).await?;
        } else if !input.is_empty() {
            let mut line = input.to_owned();
            line.push('\n');
            self.write(line.as_bytes()).await?;
        }
        if self.running.is_none() && input.is_empty() {
            return Ok(CommandResult {
                output: self.capture.lock().take_partial(),
                exit_code: 0,
                working_dir: self.cwd.clone(),
                note: Some("No command is running.".to_owned()),
                still_running: false,
            });
        }
        self.running.get_or_insert_with(|| input.to_owned());
        let hard = self.options.default_hard_timeout;
        self.finish(Instant::now() + hard, hard, true).await
    }

    async fn finish(
        &mut self,
        deadline: Instant,
        hard: Duration,
        quiet: bool,
    ) -> Result<CommandResult, ShellError> {
        let mut result = self.finish_command(deadline, hard, quiet).await?;
        let due = self
            .last_checks
            .is_none_or(|at| at.elapsed() >= CHECK_EVERY);
        if !(due || says_out_of_processes(&result.output)) {
            return Ok(result);
        }
        self.last_checks = Some(Instant::now());
        for contained in [self.contain_runaway(), self.layer_over_limit()]
            .into_iter()
            .flatten()
        {
            result.note = Some(match result.note.take() {
                Some(note) => format!("{note} {contained}"),
                None => contained,
            });
        }
        Ok(result)
    }

    /// What the sandbox installed into its system layer is checked against its limit after
    /// each command; over it, the model is told to make room.
    fn layer_over_limit(&self) -> Option<String> {
        let plan = self.launch.plan.as_ref()?;
        let dirs = plan.layer.as_ref()?;
        let used = crate::sandbox::layer::size(dirs)?;
        let limit = plan.limits.layer_bytes;
        (used > limit).then(|| {
            format!(
                "The sandbox's system layer (what was installed outside the workspace) holds {} MiB, over its limit of {} MiB: remove what is no longer needed.",
                used / (1024 * 1024),
                limit / (1024 * 1024)
            )
        })
    }

    /// A sandbox that has (nearly) run out of processes is of no more use to anyone: a fork
    /// bomb, or a command that starts processes without end, left running in the background.
    /// Everything in it but the shell is stopped, and the model is told.
    fn contain_runaway(&self) -> Option<String> {
        let limit = self.launch.plan.as_ref()?.limits.processes;
        let tasks: u64 = self
            .sandbox_processes()?
            .into_iter()
            .map(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|entries| entries.count() as u64)
                    .unwrap_or(1)
            })
            .sum();
        if tasks * 10 < limit * 9 {
            return None;
        }
        self.kill_children();
        Some(format!(
            "The sandbox reached its limit of {limit} processes and threads, so every process in it but the shell was stopped."
        ))
    }

    async fn finish_command(
        &mut self,
        deadline: Instant,
        hard: Duration,
        quiet: bool,
    ) -> Result<CommandResult, ShellError> {
        match self.wait(deadline, quiet).await? {
            Wait::Prompt {
                exit_code,
                cwd,
                output,
            } => {
                self.running = None;
                self.cwd = cwd;
                Ok(CommandResult {
                    note: self.launch.explain_limit(exit_code, &output),
                    output,
                    exit_code,
                    working_dir: self.cwd.clone(),
                    still_running: false,
                })
            }
            Wait::Quiet(output) => Ok(CommandResult {
                output,
                exit_code: -1,
                working_dir: self.cwd.clone(),
                note: Some(format!(
                    "The command has printed nothing new for {} seconds and is still running. \
                     Send empty input (is_input=true, command='') to wait for more output, send input \
                     to it with is_input=true, or interrupt it with command='C-c' and is_input=true.",
                    self.options.no_output_timeout.as_secs()
                )),
                still_running: true,
            }),
            Wait::Deadline(mut output) => {
                let rest = self.interrupt().await?;
                output.push_str(&rest.output);
                let limit = self.launch.explain_limit(-1, &output);
                Ok(CommandResult {
                    output,
                    exit_code: -1,
                    working_dir: self.cwd.clone(),
                    note: Some(
                        [
                            Some(format!(
                                "The command was still running after {} seconds and was interrupted.",
                                hard.as_secs()
                            )),
                            limit,
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                    ),
                    still_running: false,
                })
            }
            Wait::Exited(output) => {
                self.restart().await?;
                Ok(CommandResult {
                    output,
                    exit_code: -1,
                    working_dir: self.cwd.clone(),
                    note: Some(
                        "The shell exited; a new one was started in the workspace.".to_owned(),
                    ),
                    still_running: false,
                })
            }
        }
    }

    /// Stops whatever is running: Ctrl-C first, then SIGKILL to every process the shell
    /// started if that was not enough. The shell itself stays, with its state.
    pub async fn interrupt(&mut self) -> Result<CommandResult, ShellError> {
        if self.running.is_none() {
            return Ok(CommandResult {
                output: String::new(),
                exit_code: -1,
                working_dir: self.cwd.clone(),
                note: None,
                still_running: false,
            });
        }
        self.write(&[0x03]).await?;
        let mut output = String::new();
        for attempt in 0..2 {
            match self
                .wait(Instant::now() + Duration::from_secs(2), true)
                .await?
            {
                Wait::Prompt {
                    cwd, output: out, ..
                } => {
                    output.push_str(&out);
                    self.cwd = cwd;
                    self.running = None;
                    break;
                }
                Wait::Exited(out) => {
                    output.push_str(&out);
                    self.restart().await?;
                    break;
                }
                Wait::Quiet(out) | Wait::Deadline(out) => {
                    output.push_str(&out);
                    if attempt == 0 {
                        self.kill_children();
                    }
                }
            }
        }
        self.running = None;
        Ok(CommandResult {
            output,
            exit_code: -1,
            working_dir: self.cwd.clone(),
            note: Some("The command was interrupted.".to_owned()),
            still_running: false,
        })
    }

    /// Kills what the shell started. In a sandbox that is every process of its pid namespace
    /// but the shell and the namespace's init: a command's orphans (daemons, a fork bomb's
    /// children) are the init's children there, not the shell's. A few rounds, since what is
    /// still running may fork while it is being killed.
    fn kill_children(&self) {
        for _ in 0..20 {
            let victims = if self.launch.sandboxed {
                self.sandbox_processes()
            } else {
                self.live_shell_pid().map(descendants)
            };
            let Some(victims) = victims else { return };
            if victims.is_empty() {
                return;
            }
            for pid in victims {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }

    /// Every process of the shell's sandbox but the shell and the namespace's init; `None` when
    /// the shell's id can no longer be trusted, or names ohd's own namespace (that would be
    /// every process of the machine).
    fn sandbox_processes(&self) -> Option<Vec<u32>> {
        let shell = self.live_shell_pid()?;
        let namespace = pid_namespace(shell)?;
        if pid_namespace_of_self().as_ref() == Some(&namespace) {
            return None;
        }
        Some(same_namespace(shell, &namespace))
    }

    /// The shell's process id, if it is still the shell: a shell killed by a command frees its
    /// id for any process of the machine, so the id counts only while the process is still
    /// below the one ohd started.
    fn live_shell_pid(&self) -> Option<u32> {
        let shell = self.shell_pid?;
        let root = self.child.id()?;
        if shell == root {
            return Some(shell);
        }
        let mut current = shell;
        for _ in 0..64 {
            let parent = parent_of(current)?;
            if parent == root {
                return Some(shell);
            }
            if parent <= 1 {
                return None;
            }
            current = parent;
        }
        None
    }

    async fn restart(&mut self) -> Result<(), ShellError> {
        // The old sandbox goes first: its system layer is mounted where the new one's goes.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        drop(std::mem::take(&mut self._attached));
        let fresh = Box::pin(Shell::start(self.launch.clone(), self.options.clone())).await?;
        *self = fresh;
        Ok(())
    }

    /// Waits for the prompt, for `no_output_timeout` of silence (when `quiet` asks for that),
    /// for the deadline, or for the shell to exit.
    async fn wait(&mut self, deadline: Instant, quiet: bool) -> Result<Wait, ShellError> {
        let mut last_change = Instant::now();
        loop {
            let notified = self.capture.changed.notified();
            {
                let mut state = self.capture.lock();
                if let Some((exit_code, cwd, output)) = state.take_marker() {
                    return Ok(Wait::Prompt {
                        exit_code,
                        cwd,
                        output,
                    });
                }
                if state.eof {
                    let out = state.take_partial();
                    return Ok(Wait::Exited(out));
                }
            }
            let quiet_at = last_change + self.options.no_output_timeout;
            tokio::select! {
                _ = notified => last_change = Instant::now(),
                // Without the silence check, only the deadline ends the wait.
                _ = tokio::time::sleep_until(quiet_at.into()), if quiet => {
                    return Ok(Wait::Quiet(self.capture.lock().take_partial()));
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return Ok(Wait::Deadline(self.capture.lock().take_partial()));
                }
            }
        }
    }

    /// Ends the shell and everything it started.
    pub async fn close(mut self) {
        self.kill_children();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A shell dropped without [`Shell::close`] (its agent's task aborted, say when its node lost the
/// conversation's lease) still takes everything it started with it.
impl Drop for Shell {
    fn drop(&mut self) {
        self.kill_children();
    }
}

/// `eval $'...'`, split over continuation lines so no terminal line exceeds the tty's limit.
fn eval_line(command: &str) -> String {
    const CHUNK: usize = 1024;
    let mut chunks = vec![String::new()];
    for c in command.chars() {
        let piece = match c {
            '\\' => "\\\\".to_owned(),
            '\'' => "\\'".to_owned(),
            '\n' => "\\n".to_owned(),
            '\t' => "\\t".to_owned(),
            '\r' => "\\r".to_owned(),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        };
        if chunks.last().is_some_and(|l| l.len() + piece.len() > CHUNK) {
            chunks.push(String::new());
        }
        if let Some(last) = chunks.last_mut() {
            last.push_str(&piece);
        }
    }
    let body = chunks
        .iter()
        .map(|c| format!("$'{c}'"))
        .collect::<Vec<_>>()
        .join("\\\n");
    format!("eval {body}\n")
}

fn control_key(input: &str) -> Option<u8> {
    let key = input
        .strip_prefix("C-")
        .or_else(|| input.strip_prefix("c-"))?;
    let mut chars = key.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    let c = c.to_ascii_lowercase();
    c.is_ascii_lowercase().then(|| c as u8 - b'a' + 1)
}

/// Every process below `root`, read from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == current)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn pid_namespace(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

fn pid_namespace_of_self() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/ns/pid").ok()
}

/// The processes in `namespace` other than `shell` and those above it (the namespace's init).
fn same_namespace(shell: u32, namespace: &std::path::Path) -> Vec<u32> {
    let mut above = Vec::new();
    let mut current = shell;
    while let Some(parent) = parent_of(current).filter(|p| *p > 1) {
        above.push(parent);
        current = parent;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| *pid != shell && !above.contains(pid))
        .filter(|pid| pid_namespace(*pid).as_deref() == Some(namespace))
        .collect()
}

fn stat_fields(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let ppid = stat
        .get(close + 2..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((comm, ppid))
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).map(|(_, ppid)| ppid)
}

/// The bash process itself: the launched program, or (under bubblewrap) its first `bash`
/// descendant.
fn find_shell_pid(root: u32) -> Option<u32> {
    if stat_fields(root).is_some_and(|(comm, _)| comm == "bash") {
        return Some(root);
    }
    descendants(root)
        .into_iter()
        .find(|pid| stat_fields(*pid).is_some_and(|(comm, _)| comm == "bash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_eval_and_split_into_short_lines() {
        assert_eq!(eval_line("echo 'hi'\nls"), "eval $'echo \\'hi\\'\\nls'\n");
        let long = "x".repeat(5000);
        let line = eval_line(&long);
        assert!(line.lines().all(|l| l.len() < 1100));
        assert_eq!(line.matches("$'").count(), 5);
    }

    #[test]
    fn control_keys_map_to_their_bytes() {
        assert_eq!(control_key("C-c"), Some(3));
        assert_eq!(control_key("C-d"), Some(4));
        assert_eq!(control_key("C-Z"), Some(26));
        assert_eq!(control_key("C-cc"), None);
        assert_eq!(control_key("hello"), None);
    }

    #[test]
    fn the_marker_gives_exit_code_cwd_and_output() {
        let mut state = CaptureState::default();
        state.push(b"hello\r\nworld\r\n\x1eOHD:3:/work dir\x1e");
        assert_eq!(
            state.take_marker(),
            Some((3, "/work dir".to_owned(), "hello\nworld\n".to_owned()))
        );
        let mut big = CaptureState::default();
        big.push(&vec![b'a'; 3 * 1024 * 1024]);
        big.push(b"\x1eOHD:0:/w\x1e");
        let (_, _, out) = big.take_marker().unwrap_or_default();
        assert!(out.len() < 700 * 1024 && out.contains("bytes of output omitted"));
    }
}
