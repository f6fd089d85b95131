//! The seccomp filter every sandboxed command runs under: the system calls a workspace command
//! never needs, and that are the usual ways out of a namespace sandbox, fail with `EPERM`.
//! bubblewrap loads it (`--seccomp FD`) as its last step before running the command, after it
//! has used `mount` and friends itself, so ohd is never restricted.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

/// Refused calls, each with why a workspace command has no business making it.
const DENIED: &[(i64, &str)] = &[
    // Changing what the sandbox sees of the file system.
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_chroot, "chroot"),
    // File handles reach files by inode, around every mount: the classic container escape.
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    // Other processes' memory. Within the sandbox's pid namespace only its own processes are
    // visible anyway; debuggers (gdb, strace) are the price, and rarely needed by an agent.
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_kcmp, "kcmp"),
    // Joining other namespaces.
    (libc::SYS_setns, "setns"),
    // The kernel itself: modules, kexec, BPF, keyrings, perf, io_uring.
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
    // The machine's state.
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_sethostname, "sethostname"),
    (libc::SYS_setdomainname, "setdomainname"),
    (libc::SYS_vhangup, "vhangup"),
];

/// The names of the refused calls, for documentation and tests.
pub fn denied_calls() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(_, name)| *name)
}

/// The compiled filters as bubblewrap reads them (each the raw `sock_filter` array): the
/// refused calls, and `clone3` answered "not implemented".
///
/// New user namespaces are refused here rather than with bubblewrap's `--disable-userns`,
/// which nests a second user namespace that `pasta` would then join instead of the one that
/// owns the network namespace. `unshare` and `clone` are refused only with `CLONE_NEWUSER`;
/// `clone3` takes its flags in memory a filter cannot read, so it is answered `ENOSYS`, and
/// the C library falls back to `clone`.
pub fn programs() -> Result<Vec<Vec<u8>>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this processor: {e}"))?;
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let new_user = libc::CLONE_NEWUSER as u64;
    let with_new_user = |arg: u8| -> Result<SeccompRule, String> {
        let condition = SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(new_user),
            new_user,
        )
        .map_err(|e| format!("seccomp filter: {e}"))?;
        SeccompRule::new(vec![condition]).map_err(|e| format!("seccomp filter: {e}"))
    };
    refused.insert(libc::SYS_unshare, vec![with_new_user(0)?]);
    refused.insert(libc::SYS_clone, vec![with_new_user(0)?]);
    let clone3: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_clone3, Vec::new())].into_iter().collect();
    Ok(vec![
        compile(refused, libc::EPERM, arch)?,
        compile(clone3, libc::ENOSYS, arch)?,
    ])
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<Vec<u8>, String> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let mut program = BpfProgram::try_from(filter).map_err(|e| format!("seccomp filter: {e}"))?;
    refuse_x32(&mut program, arch);
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in &program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// On x86-64 the same calls can also be made by their x32 numbers (`nr | 0x40000000`), which
/// carry the x86-64 architecture tag and so would pass a filter keyed on the plain numbers.
/// Right after seccompiler's architecture check (its first three instructions), any x32 number
/// is answered `ENOSYS`, as on kernels built without x32.
fn refuse_x32(program: &mut BpfProgram, arch: TargetArch) {
    const X32_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    if !matches!(arch, TargetArch::x86_64) || program.len() < 3 {
        return;
    }
    let guard = [
        sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_BIT,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ];
    program.splice(3..3, guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_to_whole_instructions_for_this_processor() {
        let programs = programs().unwrap_or_default();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() % 8 == 0));
        // One comparison per refused call at least.
        assert!(programs[0].len() / 8 > DENIED.len());
        assert!(denied_calls().any(|c| c == "open_by_handle_at"));
    }
}
