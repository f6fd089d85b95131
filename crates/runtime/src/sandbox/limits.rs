//! What one conversation's commands may use, as resource limits of the sandbox's processes.
//!
//! Without a delegated cgroup v2 (this is the case in most containers and CI machines), the
//! limits are rlimits, set on bubblewrap before it starts and inherited by every process in the
//! sandbox. They are per process (memory, file size, CPU time) or per user id (processes: the
//! sandbox runs as a user id of its own when ohd runs as root).

/// The limits, in the configuration's units turned to bytes and seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Writable memory of one process (`RLIMIT_DATA`: heap and private mappings; address space
    /// merely reserved, as by the JVM or Go, does not count).
    pub memory_bytes: u64,
    /// Processes and threads the sandbox's user may have at once (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Largest file a command may write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Size of the sandbox's `/tmp` (a tmpfs).
    pub tmp_bytes: u64,
    /// CPU time of one process (`RLIMIT_CPU`): a command's processes each get this much.
    pub cpu_secs: u64,
    /// What the sandbox may write into its system layer (checked after each command).
    pub layer_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 4096 * MIB,
            processes: 1024,
            file_size_bytes: 4096 * MIB,
            tmp_bytes: 1024 * MIB,
            cpu_secs: 3600,
            layer_bytes: 8192 * MIB,
        }
    }
}

/// One rlimit to set: resource and value (soft and hard alike, except CPU time, whose hard
/// limit is a second later so the process gets `SIGXCPU`, a signal the shell names, first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

impl Limits {
    /// The rlimits for the sandbox. `processes_in_use` counts what the sandbox's user id
    /// already runs (ohd's own threads, when the sandbox shares ohd's user id).
    pub fn rlimits(&self, processes_in_use: u64) -> Vec<Rlimit> {
        let same = |resource, value| Rlimit {
            resource,
            soft: value,
            hard: value,
        };
        vec![
            same(libc::RLIMIT_DATA, self.memory_bytes),
            same(libc::RLIMIT_NPROC, self.processes + processes_in_use),
            same(libc::RLIMIT_FSIZE, self.file_size_bytes),
            Rlimit {
                resource: libc::RLIMIT_CPU,
                soft: self.cpu_secs,
                hard: self.cpu_secs + 1,
            },
            // No core files in the workspace from crashing or limited programs.
            same(libc::RLIMIT_CORE, 0),
        ]
    }

    /// Which limit, if any, stopped a command, judged from its exit code and output, in words
    /// for the model and the user.
    pub fn explain(&self, exit_code: i64, output: &str) -> Option<String> {
        const SIGXCPU_EXIT: i64 = 128 + libc::SIGXCPU as i64;
        const SIGXFSZ_EXIT: i64 = 128 + libc::SIGXFSZ as i64;
        if exit_code == 0 {
            return None;
        }
        let mib = |bytes: u64| bytes / MIB;
        let has = |needle: &str| output.contains(needle);
        if exit_code == SIGXCPU_EXIT || has("CPU time limit exceeded") {
            return Some(format!(
                "The command was stopped by the sandbox's CPU time limit ({} s of CPU per process).",
                self.cpu_secs
            ));
        }
        if exit_code == SIGXFSZ_EXIT || has("File size limit exceeded") || has("File too large") {
            return Some(format!(
                "The command was stopped by the sandbox's file size limit ({} MiB per file).",
                mib(self.file_size_bytes)
            ));
        }
        if has("fork: Resource temporarily unavailable")
            || has("fork: retry: Resource temporarily unavailable")
            || has("can't start new thread")
            || has("Cannot fork")
        {
            return Some(format!(
                "The command reached the sandbox's process limit ({} processes and threads).",
                self.processes
            ));
        }
        if has("MemoryError")
            || has("Cannot allocate memory")
            || has("memory allocation of")
            || has("std::bad_alloc")
            || has("out of memory")
            || has("Out of memory")
        {
            return Some(format!(
                "The command reached the sandbox's memory limit ({} MiB per process).",
                mib(self.memory_bytes)
            ));
        }
        if has("No space left on device") {
            return Some(format!(
                "A disk filled up: /tmp holds at most {} MiB (write large files to the workspace instead), and what is installed outside the workspace at most {} MiB.",
                mib(self.tmp_bytes),
                mib(self.layer_bytes)
            ));
        }
        None
    }
}

/// How many processes and threads `uid` runs now, from `/proc`.
pub fn tasks_of_user(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            total += field("Threads:").unwrap_or(1);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_from_what_the_command_left() {
        let limits = Limits::default();
        let says = |code, out: &str| limits.explain(code, out).unwrap_or_default();
        assert!(says(152, "").contains("CPU time limit"));
        assert!(says(153, "").contains("file size limit"));
        assert!(
            says(1, "bash: fork: retry: Resource temporarily unavailable")
                .contains("process limit")
        );
        assert!(says(1, "Traceback...\nMemoryError\n").contains("memory limit"));
        assert!(says(1, "dd: error writing '/tmp/x': No space left on device").contains("/tmp"));
        assert_eq!(limits.explain(1, "ls: cannot access 'x'"), None);
        assert_eq!(limits.explain(0, "MemoryError"), None);
    }

    #[test]
    fn processes_count_on_top_of_what_the_user_already_runs() {
        let limits = Limits::default();
        let nproc = limits
            .rlimits(40)
            .into_iter()
            .find(|r| r.resource == libc::RLIMIT_NPROC)
            .map(|r| r.soft);
        assert_eq!(nproc, Some(limits.processes + 40));
        assert!(tasks_of_user(rustix::process::getuid().as_raw()) >= 1);
    }
}
