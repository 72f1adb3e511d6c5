//! The seccomp filter a tool runs under, compiled once per profile.
//!
//! This is a deny list: ordinary command-line tools need hundreds of syscalls, and what they
//! must never reach is a short, stable list of kernel interfaces that either escape or widen the
//! sandbox, or attack the kernel. Denied calls fail with EPERM so the tool prints a usable error.
//! Non-native system call ABIs are closed too: a foreign architecture (i386 `int 0x80`) kills
//! the process (seccompiler's architecture check), and x32 numbers (bit 30 set) fail with EPERM.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

use super::Network;

/// Syscalls no tool may make, each with why.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_ptrace, "inspect or control other processes"),
    (libc::SYS_process_vm_readv, "read another process's memory"),
    (
        libc::SYS_process_vm_writev,
        "write another process's memory",
    ),
    (
        libc::SYS_pidfd_getfd,
        "steal another process's file descriptors",
    ),
    (libc::SYS_kcmp, "probe other processes' kernel objects"),
    (libc::SYS_mount, "change the filesystem view"),
    (libc::SYS_umount2, "change the filesystem view"),
    (libc::SYS_pivot_root, "change the filesystem root"),
    (libc::SYS_chroot, "change the filesystem root"),
    (libc::SYS_open_tree, "new mount API"),
    (libc::SYS_move_mount, "new mount API"),
    (libc::SYS_fsopen, "new mount API"),
    (libc::SYS_fsconfig, "new mount API"),
    (libc::SYS_fsmount, "new mount API"),
    (libc::SYS_fspick, "new mount API"),
    (libc::SYS_mount_setattr, "new mount API"),
    (libc::SYS_unshare, "new namespaces widen the kernel surface"),
    (libc::SYS_setns, "join other namespaces"),
    (libc::SYS_bpf, "load programs into the kernel"),
    (
        libc::SYS_perf_event_open,
        "kernel profiling surface, side channels",
    ),
    (
        libc::SYS_userfaultfd,
        "stalls kernel paths, a common exploit primitive",
    ),
    (
        libc::SYS_io_uring_setup,
        "io_uring bypasses syscall filtering",
    ),
    (
        libc::SYS_io_uring_enter,
        "io_uring bypasses syscall filtering",
    ),
    (
        libc::SYS_io_uring_register,
        "io_uring bypasses syscall filtering",
    ),
    (
        libc::SYS_keyctl,
        "kernel keyrings are shared across the host",
    ),
    (
        libc::SYS_add_key,
        "kernel keyrings are shared across the host",
    ),
    (
        libc::SYS_request_key,
        "kernel keyrings are shared across the host",
    ),
    (libc::SYS_kexec_load, "replace the kernel"),
    (libc::SYS_kexec_file_load, "replace the kernel"),
    (libc::SYS_init_module, "load kernel modules"),
    (libc::SYS_finit_module, "load kernel modules"),
    (libc::SYS_delete_module, "unload kernel modules"),
    (libc::SYS_reboot, "reboot the host"),
    (libc::SYS_swapon, "host memory configuration"),
    (libc::SYS_swapoff, "host memory configuration"),
    (libc::SYS_acct, "host process accounting"),
    (libc::SYS_syslog, "read the kernel log"),
    (libc::SYS_quotactl, "host quota configuration"),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, bypassing paths",
    ),
    (
        libc::SYS_name_to_handle_at,
        "file handles, paired with open_by_handle_at",
    ),
    (libc::SYS_lookup_dcookie, "kernel profiling surface"),
    (libc::SYS_iopl, "raw I/O port access"),
    (libc::SYS_ioperm, "raw I/O port access"),
    (libc::SYS_settimeofday, "set the host clock"),
    (libc::SYS_clock_settime, "set the host clock"),
    (libc::SYS_clock_adjtime, "set the host clock"),
    (libc::SYS_adjtimex, "set the host clock"),
    (libc::SYS_vhangup, "hang up the terminal"),
    (libc::SYS_fanotify_init, "watch the whole filesystem"),
];

/// Namespace flags `clone` must not carry: the same reason as `unshare`.
const CLONE_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Compiles the filter for a tool with the given network access.
pub fn compile(network: Network) -> Result<BpfProgram, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&(nr, _why)| (nr, Vec::new())).collect();
    // Changing the personality can disable address space randomization; personality(0xffffffff)
    // only queries it, and some tools do that.
    rules.insert(
        libc::SYS_personality,
        vec![rule(0, SeccompCmpOp::Ne, 0xffff_ffff)?],
    );
    // Typing into the controlling terminal (TIOCSTI) or the console (TIOCLINUX) reaches whatever
    // reads that terminal next, outside the sandbox.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(1, SeccompCmpOp::Eq, libc::TIOCSTI)?,
            rule(1, SeccompCmpOp::Eq, libc::TIOCLINUX)?,
        ],
    );
    rules.insert(
        libc::SYS_clone,
        CLONE_NAMESPACES
            .iter()
            .map(|&flag| rule(0, SeccompCmpOp::MaskedEq(flag), flag))
            .collect::<Result<_, _>>()?,
    );
    if network == Network::None {
        // Only Unix sockets: no IP, packet or netlink sockets (landlock covers TCP, this covers
        // UDP, raw sockets and everything else).
        rules.insert(
            libc::SYS_socket,
            vec![rule(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?],
        );
    }
    let program: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?
    .try_into()?;
    let mut out = program[..ARCH_CHECK_LEN].to_vec();
    out.extend(native_abi_prologue());
    out.extend_from_slice(&program[ARCH_CHECK_LEN..]);
    Ok(out)
}

/// seccompiler programs open with a three-instruction architecture check.
const ARCH_CHECK_LEN: usize = 3;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn instruction(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Runs after the architecture check, before seccompiler's own rules (which reload the number).
fn native_abi_prologue() -> [sock_filter; 5] {
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | e as u32;
    [
        instruction(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        // x32 numbers reach the same kernel entry points with different argument layouts.
        instruction(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        instruction(BPF_RET_K, 0, 0, errno(libc::EPERM)),
        // clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes the C
        // library fall back to clone, whose namespace flags are checked.
        instruction(BPF_JMP_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        instruction(BPF_RET_K, 0, 0, errno(libc::ENOSYS)),
    ]
}

fn rule(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_short_enough_for_both_network_settings() {
        for network in [Network::None, Network::Allow(Default::default())] {
            let program = compile(network).unwrap();
            // Install cost grows with length (about 0.6 µs an instruction here); seccompiler
            // spends several instructions per syscall, so a deny list stays in the hundreds.
            assert!(program.len() < 400, "{} instructions", program.len());
            assert_eq!(program[3].code, BPF_LD_W_ABS);
            assert_eq!(program[4].k, X32_SYSCALL_BIT);
        }
    }
}
