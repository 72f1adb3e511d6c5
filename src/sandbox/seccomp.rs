//! The seccomp filter a tool runs under: a named allowlist profile plus what its policy adds.
//!
//! A profile lists syscalls in groups, each under the reason tools need them: `minimal` for
//! static, simple programs, `default` for ordinary command-line tools (coreutils, grep, find,
//! sed, awk, diff, git, python3, curl, tar). A policy may `allow` more syscalls by their x86_64
//! kernel name (as strace prints them). Anything not allowed fails with EPERM, so the tool prints
//! a usable error, or, with [`DenyAction::Kill`], kills the process with SIGSYS.
//!
//! Invariants, whatever the profile and policy say:
//! - [`ALWAYS_DENIED`] syscalls (those that escape or widen the sandbox, or attack the kernel)
//!   are in no profile, and a policy naming one is refused at load with the reason;
//! - foreign ABIs are closed: i386 (`int 0x80`) kills the process, x32 numbers are denied;
//! - `clone3` answers ENOSYS: seccomp cannot read its flags, and ENOSYS makes the C library fall
//!   back to `clone`, whose flags are checked;
//! - four syscalls are allowed only after an argument check ([`arg_check`]): `ioctl` (no typing
//!   into the terminal), `clone` (no new namespaces), `socket` (families by [`Network`]) and
//!   `personality` (query only).
//!
//! Security assumptions: the filter is installed after `no_new_privs`, immediately before
//! `execve`, and covers the executed program and everything it starts. Landlock, not seccomp,
//! decides which files and TCP ports are reachable and which processes can be signalled; the
//! filter narrows the kernel surface those checks sit on. Attribute changes (chmod, chown,
//! utimes) are not landlock rights: the mount view, read-only outside the write paths, is what
//! limits them. The encoding is in `bpf.rs`.

use std::collections::BTreeSet;

use seccompiler::sock_filter;

use super::Network;
use super::bpf::{self, ArgCheck, Filter, Test};

/// What a tool's policy asks of its syscall filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeccompSpec {
    /// A profile name, one of [`profiles`].
    pub profile: String,
    /// Syscalls allowed on top of the profile, by x86_64 kernel name.
    pub allow: Vec<String>,
    /// What a denied syscall gets.
    pub deny_action: DenyAction,
    /// Which socket families `socket(2)` may create (TCP ports are landlock's).
    pub network: Network,
}

/// What a denied syscall gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenyAction {
    /// It fails with EPERM: the tool sees an error it can report.
    #[default]
    Errno,
    /// The whole process is killed with SIGSYS (`SECCOMP_RET_KILL_PROCESS`).
    Kill,
}

/// Why a seccomp specification cannot be compiled; messages say what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile name is not one of [`profiles`].
    #[error("unknown seccomp profile `{name}`: use one of {}", .known.join(", "))]
    UnknownProfile {
        /// The name given.
        name: String,
        /// The profiles there are.
        known: Vec<&'static str>,
    },
    /// A name in `allow` is not an x86_64 syscall.
    #[error(
        "unknown syscall `{name}` in the seccomp allow list: use the x86_64 kernel name, as strace prints it{}",
        did_you_mean(.name)
    )]
    UnknownSyscall {
        /// The name given.
        name: String,
    },
    /// `allow` names a syscall no tool may make.
    #[error(
        "syscall `{name}` cannot be allowed for any tool ({why}): remove it from the seccomp allow list"
    )]
    AlwaysDenied {
        /// The name given.
        name: String,
        /// Why it is denied.
        why: &'static str,
    },
    /// The program exceeds the kernel's limit on filter length.
    #[error(
        "the seccomp filter would be {0} instructions, over the kernel's limit of {max}: allow fewer syscalls",
        max = MAX_INSTRUCTIONS
    )]
    TooLong(usize),
}

/// The kernel's `BPF_MAXINSNS`.
const MAX_INSTRUCTIONS: usize = libc::BPF_MAXINSNS as usize;

/// Compiles `spec` into a seccomp program for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub fn compile(spec: &SeccompSpec) -> Result<Vec<sock_filter>, Error> {
    let mut allowed: BTreeSet<i64> = profile(&spec.profile)?
        .iter()
        .map(|syscall| syscall.nr)
        .collect();
    for name in &spec.allow {
        allowed.insert(allowable(name)?);
    }
    let deny = match spec.deny_action {
        DenyAction::Errno => bpf::errno(libc::EPERM),
        DenyAction::Kill => bpf::KILL_PROCESS,
    };
    let mut filter = Filter {
        allow: BTreeSet::new(),
        fixed: FIXED
            .iter()
            .map(|&(nr, errno, _why)| (nr as u32, bpf::errno(errno)))
            .collect(),
        checked: Vec::new(),
        deny,
    };
    for nr in allowed {
        match arg_check(nr, &spec.network) {
            Some(check) => filter.checked.push((nr as u32, check)),
            None => {
                filter.allow.insert(nr as u32);
            }
        }
    }
    let program = bpf::encode(&filter);
    if program.len() > MAX_INSTRUCTIONS {
        return Err(Error::TooLong(program.len()));
    }
    Ok(program)
}

/// The profile names, for documentation and diagnostics.
pub fn profiles() -> &'static [&'static str] {
    &PROFILE_NAMES
}

const PROFILE_NAMES: [&str; PROFILES.len()] = {
    let mut names = [""; PROFILES.len()];
    let mut i = 0;
    while i < PROFILES.len() {
        names[i] = PROFILES[i].0;
        i += 1;
    }
    names
};

fn profile(name: &str) -> Result<Vec<&'static Syscall>, Error> {
    let (_, parts) = PROFILES
        .iter()
        .find(|(known, _)| *known == name)
        .ok_or_else(|| Error::UnknownProfile {
            name: name.to_owned(),
            known: profiles().to_vec(),
        })?;
    Ok(parts.iter().flat_map(|part| part.iter()).collect())
}

/// The number of the syscall `name`, if a policy may allow it.
fn allowable(name: &str) -> Result<i64, Error> {
    let nr = number(name).ok_or_else(|| Error::UnknownSyscall {
        name: name.to_owned(),
    })?;
    let refused = ALWAYS_DENIED
        .iter()
        .copied()
        .chain(FIXED.iter().map(|&(fixed, _, why)| (fixed, why)))
        .find(|&(denied, _)| denied == nr);
    match refused {
        Some((_, why)) => Err(Error::AlwaysDenied {
            name: name.to_owned(),
            why,
        }),
        None => Ok(nr),
    }
}

fn number(name: &str) -> Option<i64> {
    SYSCALLS
        .iter()
        .find(|syscall| syscall.name == name)
        .map(|syscall| syscall.nr)
}

/// " (did you mean `x`?)" for a near miss (a missing `64` or `new`, a typo), or nothing.
fn did_you_mean(name: &str) -> String {
    let names = || SYSCALLS.iter().map(|syscall| syscall.name);
    let near = names()
        .find(|known| *known == format!("{name}64") || *known == format!("new{name}"))
        .or_else(|| names().find(|known| edit_distance(known, name) <= 1));
    near.map(|known| format!(" (did you mean `{known}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The argument check a syscall is allowed under, if it has one.
///
/// Every checked argument is an `int` or `unsigned int` to the kernel, so only its low 32 bits
/// are compared (see `bpf.rs`).
fn arg_check(nr: i64, network: &Network) -> Option<ArgCheck> {
    let test = match nr {
        // Typing into the controlling terminal (TIOCSTI) or the console (TIOCLINUX) reaches
        // whatever reads that terminal next, outside the sandbox. Device ioctls are landlock's
        // (ABI 5); the rest (TCGETS, FIONREAD, FIOCLEX...) are what tools use.
        libc::SYS_ioctl => ArgCheck {
            arg: 1,
            test: Test::DenyEqual(vec![libc::TIOCSTI as u32, libc::TIOCLINUX as u32]),
        },
        // New namespaces widen the kernel surface a tool reaches (user namespaces especially);
        // the same reason as `unshare`. CLONE_NEWTIME is absent: that bit is part of the exit
        // signal for clone and only means a namespace to clone3 and unshare, both closed.
        libc::SYS_clone => ArgCheck {
            arg: 0,
            test: Test::DenyAnyBit(
                (libc::CLONE_NEWNS
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUSER
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWCGROUP) as u32,
            ),
        },
        // Without network only Unix sockets (landlock covers TCP; this covers UDP, raw and
        // packet sockets and every other family). With network: IP, and netlink for the C
        // library's address lookups (getaddrinfo's AI_ADDRCONFIG), never packet sockets.
        libc::SYS_socket => ArgCheck {
            arg: 0,
            test: Test::AllowEqual(match network {
                Network::None => vec![libc::AF_UNIX as u32],
                Network::Allow(_) => [
                    libc::AF_UNIX,
                    libc::AF_INET,
                    libc::AF_INET6,
                    libc::AF_NETLINK,
                ]
                .map(|family| family as u32)
                .to_vec(),
            }),
        },
        // Changing the personality can turn off address space randomization (and READ_IMPLIES_
        // EXEC makes data executable); personality(0xffffffff) only queries it, as some tools do.
        libc::SYS_personality => ArgCheck {
            arg: 0,
            test: Test::AllowEqual(vec![0xffff_ffff]),
        },
        _ => return None,
    };
    Some(test)
}

/// A syscall by its x86_64 name and number (from libc).
#[derive(Clone, Copy, Debug)]
struct Syscall {
    name: &'static str,
    nr: i64,
}

/// `SYS_read` → `read`, at compile time.
const fn bare(constant: &'static str) -> &'static str {
    constant.split_at("SYS_".len()).1
}

/// `syscalls![SYS_read, ...]`: the syscalls with their names and libc's numbers.
macro_rules! syscalls {
    ($($constant:ident),* $(,)?) => {
        &[$(Syscall { name: bare(stringify!($constant)), nr: libc::$constant }),*]
    };
}

/// Profiles by name; `default` includes `minimal`.
const PROFILES: &[(&str, &[&[Syscall]])] =
    &[("default", &[MINIMAL, DEFAULT]), ("minimal", &[MINIMAL])];

/// Static, simple programs (C or Rust): each group of syscalls after the reason it is needed.
#[rustfmt::skip]
const MINIMAL: &[Syscall] = syscalls![
    // read and write the descriptors a program was given or opened
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_lseek, SYS_close,
    // open and inspect files (landlock decides which)
    SYS_openat, SYS_fstat, SYS_newfstatat,
    // map memory and grow the heap
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk,
    // install signal handlers, mask signals, return from handlers
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn,
    // read clocks and sleep; resume a sleep interrupted by a stop signal
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday,
    SYS_time, SYS_restart_syscall,
    // random numbers: hash seeds, stack protector, pointer guard
    SYS_getrandom,
    // C library start-up, static or not: thread pointer (TLS), thread id address, robust futex
    // list, restartable sequences, the stack limit, the program's path (/proc/self/exe)
    SYS_arch_prctl, SYS_set_tid_address, SYS_set_robust_list, SYS_rseq, SYS_prlimit64,
    SYS_readlink,
    // stdio and Rust's runtime at start-up: is stdout a terminal (ioctl, checked), are fds 0-2
    // open (poll: Rust aborts if it fails), a signal stack for overflow reports, own thread id
    // and CPUs (the main thread's stack bounds)
    SYS_ioctl, SYS_poll, SYS_sigaltstack, SYS_gettid, SYS_sched_getaffinity,
    // execute the program (the filter is installed before execve) and exit
    SYS_execve, SYS_exit, SYS_exit_group,
];

/// Ordinary command-line tools, on top of [`MINIMAL`].
#[rustfmt::skip]
const DEFAULT: &[Syscall] = syscalls![
    // read and write at offsets and scatter-gather
    SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev, SYS_preadv2, SYS_pwritev2,
    // open and create files (landlock decides which); descriptor bookkeeping
    SYS_open, SYS_creat, SYS_openat2, SYS_close_range, SYS_dup, SYS_dup2, SYS_dup3, SYS_fcntl,
    SYS_flock,
    // file metadata and access checks: ls, find, test
    SYS_stat, SYS_lstat, SYS_statx, SYS_access, SYS_faccessat, SYS_faccessat2, SYS_statfs,
    SYS_fstatfs, SYS_readlinkat,
    // list and walk directories, change the working directory
    SYS_getdents, SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir,
    // create, rename, link and remove files (landlock decides where)
    SYS_mkdir, SYS_mkdirat, SYS_rmdir, SYS_rename, SYS_renameat, SYS_renameat2, SYS_link,
    SYS_linkat, SYS_symlink, SYS_symlinkat, SYS_unlink, SYS_unlinkat,
    // modes, owners and times of files: touch, cp -p, tar x (not landlock rights: the mount
    // view, read-only outside the write paths, limits them)
    SYS_chmod, SYS_fchmod, SYS_fchmodat, SYS_fchmodat2, SYS_chown, SYS_fchown, SYS_lchown,
    SYS_fchownat, SYS_umask, SYS_utime, SYS_utimes, SYS_utimensat, SYS_futimesat,
    // file size and durability: truncate, preallocate, flush
    SYS_truncate, SYS_ftruncate, SYS_fallocate, SYS_fsync, SYS_fdatasync,
    // read extended attributes: ls looks for ACLs and security labels, cp -a copies them
    SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_listxattr, SYS_llistxattr, SYS_flistxattr,
    // copy between descriptors in the kernel (cat, cp, tar) and hint access patterns
    SYS_sendfile, SYS_copy_file_range, SYS_splice, SYS_tee, SYS_fadvise64, SYS_readahead,
    // memory: flush mappings, residency, barriers for runtimes, anonymous files
    SYS_msync, SYS_mincore, SYS_membarrier, SYS_memfd_create,
    // start programs (clone's namespace flags are checked) and wait for them
    SYS_clone, SYS_fork, SYS_vfork, SYS_execveat, SYS_wait4, SYS_waitid,
    // who am I: process, thread, user and group ids
    SYS_getpid, SYS_getppid, SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid,
    SYS_getresuid, SYS_getresgid, SYS_getgroups,
    // process groups and sessions: shells, timeout, xargs
    SYS_getpgrp, SYS_getpgid, SYS_getsid, SYS_setpgid, SYS_setsid,
    // send and wait for signals (landlock scopes signals to the sandbox), alternate stacks
    SYS_kill, SYS_tgkill, SYS_tkill, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_rt_sigpending,
    SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_pause, SYS_signalfd, SYS_signalfd4, SYS_pidfd_open,
    SYS_pidfd_send_signal,
    // timers and alarms: timeout, sleep, event loops
    SYS_alarm, SYS_getitimer, SYS_setitimer, SYS_timer_create, SYS_timer_settime, SYS_timer_gettime,
    SYS_timer_getoverrun, SYS_timer_delete, SYS_timerfd_create, SYS_timerfd_settime,
    SYS_timerfd_gettime,
    // threads: locks and yielding
    SYS_futex, SYS_sched_yield,
    // scheduling queries (thread pools size themselves by the CPUs they may use); setting a
    // realtime policy is left out, it could starve the host
    SYS_sched_setaffinity, SYS_sched_getparam, SYS_sched_getscheduler,
    SYS_sched_getattr, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
    SYS_sched_rr_get_interval, SYS_getpriority, SYS_getcpu,
    // resource limits and usage: shells set limits, time(1) reads usage
    SYS_getrlimit, SYS_setrlimit, SYS_getrusage, SYS_times,
    // system information: uname, and sysinfo for sort's buffer size
    SYS_uname, SYS_sysinfo,
    // pipes, event descriptors and waiting for descriptors
    SYS_pipe, SYS_pipe2, SYS_eventfd, SYS_eventfd2, SYS_ppoll, SYS_select, SYS_pselect6,
    SYS_epoll_create, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait,
    SYS_epoll_pwait2,
    // watch files for changes: tail -f, build tools
    SYS_inotify_init, SYS_inotify_init1, SYS_inotify_add_watch, SYS_inotify_rm_watch,
    // sockets: families are checked on socket(2), landlock limits TCP ports
    SYS_socket, SYS_socketpair, SYS_connect, SYS_bind, SYS_listen, SYS_accept, SYS_accept4,
    SYS_getsockname, SYS_getpeername, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg,
    SYS_sendmmsg, SYS_recvmmsg, SYS_shutdown, SYS_setsockopt, SYS_getsockopt,
    // process attributes: thread names, no_new_privs, more seccomp filters (which only restrict);
    // the options that would matter need capabilities
    SYS_prctl,
    // query the execution domain, personality(0xffffffff), and nothing else
    SYS_personality,
];

/// Syscalls answered with a fixed errno in every filter, and why; a policy cannot allow them.
const FIXED: &[(i64, i32, &str)] = &[(
    libc::SYS_clone3,
    libc::ENOSYS,
    "seccomp cannot read clone3's flags; ENOSYS makes the C library fall back to clone, \
     whose flags are checked",
)];

/// Syscalls no profile contains and no policy may allow, each with why.
#[rustfmt::skip]
const ALWAYS_DENIED: &[(i64, &str)] = &[
    (libc::SYS_io_uring_setup, "io_uring operations bypass seccomp"),
    (libc::SYS_io_uring_enter, "io_uring operations bypass seccomp"),
    (libc::SYS_io_uring_register, "io_uring operations bypass seccomp"),
    (libc::SYS_ptrace, "inspects and controls other processes"),
    (libc::SYS_process_vm_readv, "reads another process's memory"),
    (libc::SYS_process_vm_writev, "writes another process's memory"),
    (libc::SYS_process_madvise, "acts on another process's memory"),
    (libc::SYS_pidfd_getfd, "steals another process's file descriptors"),
    (libc::SYS_kcmp, "probes other processes' kernel objects"),
    (libc::SYS_bpf, "loads programs into the kernel"),
    (libc::SYS_perf_event_open, "kernel profiling surface and side channels"),
    (libc::SYS_lookup_dcookie, "kernel profiling surface"),
    (libc::SYS_userfaultfd, "stalls kernel paths at will, a common exploit primitive"),
    (libc::SYS_keyctl, "kernel keyrings are not namespaced"),
    (libc::SYS_add_key, "kernel keyrings are not namespaced"),
    (libc::SYS_request_key, "kernel keyrings are not namespaced"),
    (libc::SYS_mount, "changes the filesystem view"),
    (libc::SYS_umount2, "changes the filesystem view"),
    (libc::SYS_pivot_root, "changes the filesystem root"),
    (libc::SYS_chroot, "changes the filesystem root"),
    (libc::SYS_open_tree, "mount API: changes the filesystem view"),
    (libc::SYS_move_mount, "mount API: changes the filesystem view"),
    (libc::SYS_fsopen, "mount API: changes the filesystem view"),
    (libc::SYS_fsconfig, "mount API: changes the filesystem view"),
    (libc::SYS_fsmount, "mount API: changes the filesystem view"),
    (libc::SYS_fspick, "mount API: changes the filesystem view"),
    (libc::SYS_mount_setattr, "mount API: changes the filesystem view"),
    (libc::SYS_unshare, "new namespaces widen the kernel surface"),
    (libc::SYS_setns, "joins other namespaces"),
    (libc::SYS_kexec_load, "replaces the running kernel"),
    (libc::SYS_kexec_file_load, "replaces the running kernel"),
    (libc::SYS_init_module, "loads kernel modules"),
    (libc::SYS_finit_module, "loads kernel modules"),
    (libc::SYS_delete_module, "unloads kernel modules"),
    (libc::SYS_reboot, "reboots the host"),
    (libc::SYS_swapon, "host memory configuration"),
    (libc::SYS_swapoff, "host memory configuration"),
    (libc::SYS_acct, "host process accounting"),
    (libc::SYS_syslog, "reads and clears the kernel log"),
    (libc::SYS_quotactl, "host quota configuration"),
    (libc::SYS_quotactl_fd, "host quota configuration"),
    (libc::SYS_open_by_handle_at, "opens files by handle, bypassing paths and landlock"),
    (libc::SYS_name_to_handle_at, "file handles, the half of open_by_handle_at"),
    (libc::SYS_iopl, "raw I/O port access"),
    (libc::SYS_ioperm, "raw I/O port access"),
    (libc::SYS_settimeofday, "sets the host clock"),
    (libc::SYS_clock_settime, "sets the host clock"),
    (libc::SYS_clock_adjtime, "sets the host clock"),
    (libc::SYS_adjtimex, "sets the host clock"),
    (libc::SYS_sethostname, "renames the host unless in a UTS namespace"),
    (libc::SYS_setdomainname, "renames the host unless in a UTS namespace"),
    (libc::SYS_fanotify_init, "watches whole filesystems"),
    (libc::SYS_vhangup, "hangs up the terminal"),
    (libc::SYS_nfsservctl, "removed from the kernel; nothing legitimate calls it"),
    (libc::SYS_modify_ldt, "segment descriptors: old, exploited kernel surface"),
    (libc::SYS_uselib, "obsolete loader, exploited kernel surface"),
];

/// Every x86_64 syscall libc names: what a policy's `allow` may name.
#[rustfmt::skip]
const SYSCALLS: &[Syscall] = syscalls![
    SYS_read, SYS_write, SYS_open, SYS_close, SYS_stat, SYS_fstat, SYS_lstat, SYS_poll, SYS_lseek,
    SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction, SYS_rt_sigprocmask,
    SYS_rt_sigreturn, SYS_ioctl, SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_access,
    SYS_pipe, SYS_select, SYS_sched_yield, SYS_mremap, SYS_msync, SYS_mincore, SYS_madvise,
    SYS_shmget, SYS_shmat, SYS_shmctl, SYS_dup, SYS_dup2, SYS_pause, SYS_nanosleep, SYS_getitimer,
    SYS_alarm, SYS_setitimer, SYS_getpid, SYS_sendfile, SYS_socket, SYS_connect, SYS_accept,
    SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_shutdown, SYS_bind, SYS_listen,
    SYS_getsockname, SYS_getpeername, SYS_socketpair, SYS_setsockopt, SYS_getsockopt, SYS_clone,
    SYS_fork, SYS_vfork, SYS_execve, SYS_exit, SYS_wait4, SYS_kill, SYS_uname, SYS_semget,
    SYS_semop, SYS_semctl, SYS_shmdt, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_fcntl,
    SYS_flock, SYS_fsync, SYS_fdatasync, SYS_truncate, SYS_ftruncate, SYS_getdents, SYS_getcwd,
    SYS_chdir, SYS_fchdir, SYS_rename, SYS_mkdir, SYS_rmdir, SYS_creat, SYS_link, SYS_unlink,
    SYS_symlink, SYS_readlink, SYS_chmod, SYS_fchmod, SYS_chown, SYS_fchown, SYS_lchown, SYS_umask,
    SYS_gettimeofday, SYS_getrlimit, SYS_getrusage, SYS_sysinfo, SYS_times, SYS_ptrace, SYS_getuid,
    SYS_syslog, SYS_getgid, SYS_setuid, SYS_setgid, SYS_geteuid, SYS_getegid, SYS_setpgid,
    SYS_getppid, SYS_getpgrp, SYS_setsid, SYS_setreuid, SYS_setregid, SYS_getgroups, SYS_setgroups,
    SYS_setresuid, SYS_getresuid, SYS_setresgid, SYS_getresgid, SYS_getpgid, SYS_setfsuid,
    SYS_setfsgid, SYS_getsid, SYS_capget, SYS_capset, SYS_rt_sigpending, SYS_rt_sigtimedwait,
    SYS_rt_sigqueueinfo, SYS_rt_sigsuspend, SYS_sigaltstack, SYS_utime, SYS_mknod, SYS_uselib,
    SYS_personality, SYS_ustat, SYS_statfs, SYS_fstatfs, SYS_sysfs, SYS_getpriority,
    SYS_setpriority, SYS_sched_setparam, SYS_sched_getparam, SYS_sched_setscheduler,
    SYS_sched_getscheduler, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
    SYS_sched_rr_get_interval, SYS_mlock, SYS_munlock, SYS_mlockall, SYS_munlockall, SYS_vhangup,
    SYS_modify_ldt, SYS_pivot_root, SYS__sysctl, SYS_prctl, SYS_arch_prctl, SYS_adjtimex,
    SYS_setrlimit, SYS_chroot, SYS_sync, SYS_acct, SYS_settimeofday, SYS_mount, SYS_umount2,
    SYS_swapon, SYS_swapoff, SYS_reboot, SYS_sethostname, SYS_setdomainname, SYS_iopl, SYS_ioperm,
    SYS_init_module, SYS_delete_module, SYS_quotactl, SYS_nfsservctl, SYS_getpmsg, SYS_putpmsg,
    SYS_afs_syscall, SYS_tuxcall, SYS_security, SYS_gettid, SYS_readahead, SYS_setxattr,
    SYS_lsetxattr, SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_listxattr,
    SYS_llistxattr, SYS_flistxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr, SYS_tkill,
    SYS_time, SYS_futex, SYS_sched_setaffinity, SYS_sched_getaffinity, SYS_set_thread_area,
    SYS_io_setup, SYS_io_destroy, SYS_io_getevents, SYS_io_submit, SYS_io_cancel,
    SYS_get_thread_area, SYS_lookup_dcookie, SYS_epoll_create, SYS_epoll_ctl_old,
    SYS_epoll_wait_old, SYS_remap_file_pages, SYS_getdents64, SYS_set_tid_address,
    SYS_restart_syscall, SYS_semtimedop, SYS_fadvise64, SYS_timer_create, SYS_timer_settime,
    SYS_timer_gettime, SYS_timer_getoverrun, SYS_timer_delete, SYS_clock_settime, SYS_clock_gettime,
    SYS_clock_getres, SYS_clock_nanosleep, SYS_exit_group, SYS_epoll_wait, SYS_epoll_ctl,
    SYS_tgkill, SYS_utimes, SYS_vserver, SYS_mbind, SYS_set_mempolicy, SYS_get_mempolicy,
    SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify,
    SYS_mq_getsetattr, SYS_kexec_load, SYS_waitid, SYS_add_key, SYS_request_key, SYS_keyctl,
    SYS_ioprio_set, SYS_ioprio_get, SYS_inotify_init, SYS_inotify_add_watch, SYS_inotify_rm_watch,
    SYS_migrate_pages, SYS_openat, SYS_mkdirat, SYS_mknodat, SYS_fchownat, SYS_futimesat,
    SYS_newfstatat, SYS_unlinkat, SYS_renameat, SYS_linkat, SYS_symlinkat, SYS_readlinkat,
    SYS_fchmodat, SYS_faccessat, SYS_pselect6, SYS_ppoll, SYS_unshare, SYS_set_robust_list,
    SYS_get_robust_list, SYS_splice, SYS_tee, SYS_sync_file_range, SYS_vmsplice, SYS_move_pages,
    SYS_utimensat, SYS_epoll_pwait, SYS_signalfd, SYS_timerfd_create, SYS_eventfd, SYS_fallocate,
    SYS_timerfd_settime, SYS_timerfd_gettime, SYS_accept4, SYS_signalfd4, SYS_eventfd2,
    SYS_epoll_create1, SYS_dup3, SYS_pipe2, SYS_inotify_init1, SYS_preadv, SYS_pwritev,
    SYS_rt_tgsigqueueinfo, SYS_perf_event_open, SYS_recvmmsg, SYS_fanotify_init, SYS_fanotify_mark,
    SYS_prlimit64, SYS_name_to_handle_at, SYS_open_by_handle_at, SYS_clock_adjtime, SYS_syncfs,
    SYS_sendmmsg, SYS_setns, SYS_getcpu, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp,
    SYS_finit_module, SYS_sched_setattr, SYS_sched_getattr, SYS_renameat2, SYS_seccomp,
    SYS_getrandom, SYS_memfd_create, SYS_kexec_file_load, SYS_bpf, SYS_execveat, SYS_userfaultfd,
    SYS_membarrier, SYS_mlock2, SYS_copy_file_range, SYS_preadv2, SYS_pwritev2, SYS_pkey_mprotect,
    SYS_pkey_alloc, SYS_pkey_free, SYS_statx, SYS_rseq, SYS_pidfd_send_signal, SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_io_uring_register, SYS_open_tree, SYS_move_mount, SYS_fsopen,
    SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_pidfd_open, SYS_clone3, SYS_close_range, SYS_openat2,
    SYS_pidfd_getfd, SYS_faccessat2, SYS_process_madvise, SYS_epoll_pwait2, SYS_mount_setattr,
    SYS_quotactl_fd, SYS_landlock_create_ruleset, SYS_landlock_add_rule, SYS_landlock_restrict_self,
    SYS_memfd_secret, SYS_process_mrelease, SYS_futex_waitv, SYS_set_mempolicy_home_node,
    SYS_fchmodat2, SYS_mseal,
];

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    //! Unit tests on the encoding (interpreted), the kernel's behaviour under the filter (in a
    //! forked child) and real programs under the default profile (Command with pre_exec).

    use std::ffi::CStr;
    use std::io::{self, Read, Write};
    use std::net::TcpListener;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Command, Output, Stdio};

    use super::*;

    fn spec(profile: &str, network: Network, deny_action: DenyAction) -> SeccompSpec {
        SeccompSpec {
            profile: profile.to_owned(),
            allow: Vec::new(),
            deny_action,
            network,
        }
    }

    fn network_allowed() -> Network {
        Network::Allow(super::super::TcpPorts::default())
    }

    fn default_spec() -> SeccompSpec {
        spec("default", Network::None, DenyAction::Errno)
    }

    fn program(spec: &SeccompSpec) -> Vec<sock_filter> {
        compile(spec).expect("the spec compiles")
    }

    fn names(syscalls: &[&Syscall]) -> BTreeSet<&'static str> {
        syscalls.iter().map(|syscall| syscall.name).collect()
    }

    // ---- the program, interpreted ------------------------------------------------------------

    #[test]
    fn programs_are_compact() {
        for profile in profiles() {
            for (network, network_name) in [(Network::None, "none"), (network_allowed(), "allow")] {
                for action in [DenyAction::Errno, DenyAction::Kill] {
                    let len = program(&spec(profile, network.clone(), action)).len();
                    println!("{profile:8} network {network_name:5} {action:?}: {len} instructions");
                    // Install cost grows with length; a linear encoding of `default` is ~1000.
                    let bound = if *profile == "minimal" { 64 } else { 120 };
                    assert!(len <= bound, "{profile}: {len} instructions, over {bound}");
                }
            }
        }
    }

    #[test]
    fn decides_every_syscall_as_its_profile_says() {
        for profile_name in profiles() {
            let listed: BTreeSet<i64> = profile(profile_name)
                .unwrap()
                .iter()
                .map(|syscall| syscall.nr)
                .collect();
            for action in [DenyAction::Errno, DenyAction::Kill] {
                let spec = spec(profile_name, network_allowed(), action);
                let program = program(&spec);
                let deny = match action {
                    DenyAction::Errno => bpf::errno(libc::EPERM),
                    DenyAction::Kill => bpf::KILL_PROCESS,
                };
                for nr in 0..1024 {
                    let got = bpf::run(&program, bpf::AUDIT_ARCH_X86_64, nr, [0; 6]);
                    let nr = i64::from(nr);
                    let want = if nr == libc::SYS_clone3 {
                        bpf::errno(libc::ENOSYS)
                    } else if !listed.contains(&nr) {
                        deny
                    } else if arg_check(nr, &spec.network).is_some() {
                        continue; // decided by an argument: see checks_arguments
                    } else {
                        bpf::ALLOW
                    };
                    assert_eq!(got, want, "{profile_name} {action:?}: syscall {nr}");
                }
            }
        }
    }

    #[test]
    fn checks_arguments() {
        let program = program(&spec("default", Network::None, DenyAction::Errno));
        let call =
            |nr: i64, args: [u64; 6]| bpf::run(&program, bpf::AUDIT_ARCH_X86_64, nr as u32, args);
        let eperm = bpf::errno(libc::EPERM);
        let tiocsti = libc::TIOCSTI;
        assert_eq!(call(libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), eperm);
        assert_eq!(
            call(libc::SYS_ioctl, [0, tiocsti | 1 << 32, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::TIOCLINUX, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::TCGETS, 0, 0, 0, 0]),
            bpf::ALLOW
        );
        let sigchld = libc::SIGCHLD as u64;
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(call(libc::SYS_clone, [sigchld, 0, 0, 0, 0, 0]), bpf::ALLOW);
        assert_eq!(
            call(libc::SYS_clone, [newuser | sigchld, 0, 0, 0, 0, 0]),
            eperm
        );
        let query = 0xffff_ffff;
        assert_eq!(
            call(libc::SYS_personality, [query, 0, 0, 0, 0, 0]),
            bpf::ALLOW
        );
        assert_eq!(call(libc::SYS_personality, [0, 0, 0, 0, 0, 0]), eperm);
        let socket = |family: i32| call(libc::SYS_socket, [family as u64, 1, 0, 0, 0, 0]);
        assert_eq!(socket(libc::AF_UNIX), bpf::ALLOW);
        assert_eq!(socket(libc::AF_INET), eperm);
        let allowed = spec("default", network_allowed(), DenyAction::Errno);
        let program = super::compile(&allowed).unwrap();
        let socket = |family: i32| {
            let args = [family as u64, 1, 0, 0, 0, 0];
            bpf::run(
                &program,
                bpf::AUDIT_ARCH_X86_64,
                libc::SYS_socket as u32,
                args,
            )
        };
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(socket(family), bpf::ALLOW, "family {family}");
        }
        assert_eq!(socket(libc::AF_PACKET), eperm);
        assert_eq!(socket(libc::AF_VSOCK), eperm);
    }

    #[test]
    fn policy_adds_syscalls_with_their_checks() {
        let mut spec = spec("minimal", Network::None, DenyAction::Errno);
        spec.allow = vec!["mlock".into(), "socket".into(), "read".into()];
        let program = program(&spec);
        let run = |nr: i64, arg0: u64| {
            bpf::run(
                &program,
                bpf::AUDIT_ARCH_X86_64,
                nr as u32,
                [arg0, 0, 0, 0, 0, 0],
            )
        };
        assert_eq!(run(libc::SYS_mlock, 0), bpf::ALLOW);
        assert_eq!(run(libc::SYS_socket, libc::AF_UNIX as u64), bpf::ALLOW);
        assert_eq!(
            run(libc::SYS_socket, libc::AF_INET as u64),
            bpf::errno(libc::EPERM)
        );
        assert_eq!(run(libc::SYS_getpid, 0), bpf::errno(libc::EPERM));
    }

    #[test]
    fn refuses_what_no_policy_may_have_with_what_to_write() {
        let with = |profile: &str, allow: &str| {
            let mut spec = spec(profile, Network::None, DenyAction::Errno);
            spec.allow = vec![allow.to_owned()];
            compile(&spec).unwrap_err().to_string()
        };
        let message = with("strict", "read");
        assert!(message.contains("use one of default, minimal"), "{message}");
        let message = with("default", "fstatat");
        assert!(message.contains("did you mean `newfstatat`"), "{message}");
        let message = with("default", "pread");
        assert!(message.contains("did you mean `pread64`"), "{message}");
        let message = with("default", "frobnicate");
        assert!(
            message.contains("unknown syscall `frobnicate`"),
            "{message}"
        );
        let message = with("default", "ptrace");
        assert!(
            message.contains("inspects and controls other processes"),
            "{message}"
        );
        assert!(
            message.contains("remove it from the seccomp allow list"),
            "{message}"
        );
        let message = with("minimal", "clone3");
        assert!(message.contains("fall back to clone"), "{message}");
        for &(nr, _) in ALWAYS_DENIED {
            let name = SYSCALLS.iter().find(|s| s.nr == nr).unwrap().name;
            let mut spec = default_spec();
            spec.allow = vec![name.to_owned()];
            assert!(
                matches!(compile(&spec), Err(Error::AlwaysDenied { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn tables_agree() {
        let mut seen_names = BTreeSet::new();
        let mut seen_numbers = BTreeSet::new();
        for syscall in SYSCALLS {
            assert!(seen_names.insert(syscall.name), "{} twice", syscall.name);
            assert!(seen_numbers.insert(syscall.nr), "{} twice", syscall.nr);
        }
        for &(nr, _) in ALWAYS_DENIED {
            assert!(seen_numbers.contains(&nr), "always-denied {nr} has no name");
        }
        for name in profiles() {
            let listed = profile(name).unwrap();
            assert_eq!(
                names(&listed).len(),
                listed.len(),
                "{name} lists a syscall twice"
            );
            for syscall in &listed {
                assert_eq!(number(syscall.name), Some(syscall.nr), "{}", syscall.name);
                assert!(
                    allowable(syscall.name).is_ok(),
                    "{name} has {}",
                    syscall.name
                );
            }
        }
        let minimal = names(&profile("minimal").unwrap());
        let default = names(&profile("default").unwrap());
        assert!(minimal.is_subset(&default));
        assert!(profiles().iter().eq(PROFILES.iter().map(|(name, _)| name)));
    }

    // ---- the kernel, in a forked child --------------------------------------------------------

    /// How a child ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Ended {
        /// It exited: with the check's result (0 done, else the errno it got).
        Exited(i32),
        /// A signal killed it.
        Killed(i32),
    }

    const EPERM: Ended = Ended::Exited(libc::EPERM);
    const SIGSYS: Ended = Ended::Killed(libc::SIGSYS);
    const DONE: Ended = Ended::Exited(0);

    /// Runs `check` in a forked child, under `filter` if given; its result is the exit code.
    ///
    /// The test process has other threads: the child only makes syscalls and exits.
    fn in_child(filter: Option<&[sock_filter]>, check: impl Fn() -> i32) -> Ended {
        let fprog = filter.map(|filter| libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        });
        // SAFETY: the child makes raw syscalls only (no allocation, no locks) and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: plain syscalls on data prepared before the fork.
            unsafe {
                // A SIGSYS kill would dump core otherwise.
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if let Some(fprog) = &fprog
                    && install(fprog).is_err()
                {
                    libc::_exit(250);
                }
                libc::_exit(check())
            }
        }
        wait(pid)
    }

    /// What the sandbox's child does before execve: no_new_privs, then the filter.
    ///
    /// Two syscalls, nothing allocated: fine between fork and exec.
    fn install(fprog: &libc::sock_fprog) -> io::Result<()> {
        // SAFETY: prctl takes integers; seccomp reads `fprog` and the instructions it points to.
        let failed = unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    fprog as *const libc::sock_fprog,
                ) != 0
        };
        if failed {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn wait(pid: libc::pid_t) -> Ended {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is valid for writing.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            let error = io::Error::last_os_error();
            assert_eq!(error.kind(), io::ErrorKind::Interrupted, "waitpid: {error}");
        }
        if libc::WIFSIGNALED(status) {
            Ended::Killed(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        }
    }

    /// 0 for a successful syscall, else its errno.
    fn errno_of(ret: libc::c_long) -> i32 {
        if ret >= 0 {
            0
        } else {
            // SAFETY: reads this thread's errno.
            unsafe { *libc::__errno_location() }
        }
    }

    /// Outside, under the default profile (EPERM), under the default profile with Kill.
    fn outcomes(check: impl Fn() -> i32 + Copy) -> [Ended; 3] {
        let errno = program(&default_spec());
        let kill = program(&spec("default", Network::None, DenyAction::Kill));
        [
            in_child(None, check),
            in_child(Some(&errno), check),
            in_child(Some(&kill), check),
        ]
    }

    /// Whether this process is root; if not, the test skips with a message (fails when CI=true).
    fn root(test: &str) -> bool {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test} needs root"
        );
        eprintln!("skipping {test}: it needs root");
        false
    }

    /// A check run in a child: 0 when the call worked, else its errno.
    type Check = fn() -> i32;

    /// Harmless calls of always-denied syscalls: outside a filter they fail with another errno
    /// (as root) or do nothing.
    const ALWAYS_DENIED_CALLS: &[(&str, Check)] = &[
        ("ptrace", || {
            // SAFETY: a register query on a process we do not trace: ESRCH.
            errno_of(unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_GETREGS, 1, 0, 0) })
        }),
        ("keyctl", || {
            // SAFETY: an operation that does not exist: EOPNOTSUPP.
            errno_of(unsafe { libc::syscall(libc::SYS_keyctl, 0x7fff, 0, 0, 0, 0) })
        }),
        ("unshare", || {
            // SAFETY: unsharing nothing does nothing.
            errno_of(unsafe { libc::syscall(libc::SYS_unshare, 0) })
        }),
        ("bpf", || {
            // SAFETY: a command that does not exist: EINVAL.
            errno_of(unsafe { libc::syscall(libc::SYS_bpf, 0x7fff, 0, 0) })
        }),
        ("io_uring_setup", || {
            // SAFETY: zero entries: EINVAL.
            errno_of(unsafe { libc::syscall(libc::SYS_io_uring_setup, 0, 0) })
        }),
        ("acct", || {
            let path: &CStr = c"/nonexistent/toolgate-acct";
            // SAFETY: a path that does not exist: ENOENT (EPERM before that if not root).
            errno_of(unsafe { libc::syscall(libc::SYS_acct, path.as_ptr()) })
        }),
    ];

    #[test]
    fn always_denied_syscalls_fail_or_kill_as_root() {
        if !root("always_denied_syscalls_fail_or_kill_as_root") {
            return;
        }
        for &(name, call) in ALWAYS_DENIED_CALLS {
            let [outside, errno, kill] = outcomes(call);
            println!("{name}: outside {outside:?}, filtered {errno:?}, kill {kill:?}");
            assert!(
                matches!(outside, Ended::Exited(code) if code != libc::EPERM),
                "{name}"
            );
            assert_eq!(errno, EPERM, "{name}");
            assert_eq!(kill, SIGSYS, "{name}");
        }
    }

    #[test]
    fn allows_what_the_profile_lists() {
        let getpid = || {
            // SAFETY: no arguments.
            errno_of(unsafe { libc::syscall(libc::SYS_getpid) })
        };
        assert_eq!(outcomes(getpid), [DONE, DONE, DONE]);
        let fork = || {
            // SAFETY: the grandchild exits at once; glibc's fork uses clone without namespaces.
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(7) },
                -1 => errno_of(-1),
                pid => i32::from(wait(pid) != Ended::Exited(7)),
            }
        };
        assert_eq!(outcomes(fork), [DONE, DONE, DONE]);
    }

    #[test]
    fn denies_syscalls_outside_the_profile() {
        let unix_socket = || {
            // SAFETY: creates and closes a socket.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            errno_of(fd.into())
        };
        let minimal = program(&spec("minimal", Network::None, DenyAction::Errno));
        let default = program(&default_spec());
        assert_eq!(in_child(None, unix_socket), DONE);
        assert_eq!(in_child(Some(&default), unix_socket), DONE);
        assert_eq!(in_child(Some(&minimal), unix_socket), EPERM);
        let minimal = program(&spec("minimal", Network::None, DenyAction::Kill));
        assert_eq!(in_child(Some(&minimal), unix_socket), SIGSYS);
    }

    #[test]
    fn closes_foreign_abis() {
        let x32_getpid = || {
            // SAFETY: getpid through the x32 ABI: no arguments.
            errno_of(unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) })
        };
        let [outside, errno, kill] = outcomes(x32_getpid);
        println!("x32 getpid: outside {outside:?}, filtered {errno:?}, kill {kill:?}");
        // This kernel has no x32 ABI (ENOSYS): the EPERM below is the filter's answer.
        assert!(matches!(outside, Ended::Exited(code) if code != libc::EPERM));
        assert_eq!([errno, kill], [EPERM, SIGSYS]);

        let i386_getpid = || {
            let ret: i64;
            // SAFETY: the i386 getpid (20) through int 0x80, which takes no arguments; the
            // kernel clears r8-r11 on that path.
            unsafe {
                std::arch::asm!(
                    "int 0x80",
                    inlateout("rax") 20i64 => ret,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                    options(nostack),
                );
            }
            i32::from(ret <= 0)
        };
        let [outside, errno, kill] = outcomes(i386_getpid);
        println!("i386 getpid: outside {outside:?}, filtered {errno:?}, kill {kill:?}");
        assert_ne!(outside, SIGSYS);
        assert_eq!(
            [errno, kill],
            [SIGSYS, SIGSYS],
            "i386 dies whatever the deny action"
        );
    }

    #[test]
    fn refuses_typing_into_the_terminal() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let [read_end, write_end] = fds;
        let ioctl = move |fd: i32, request: u64| {
            let byte = b'x';
            // SAFETY: TIOCSTI and TIOCLINUX read one byte; `byte` lives through the call.
            errno_of(unsafe { libc::syscall(libc::SYS_ioctl, fd, request, &byte) })
        };
        let tiocsti = libc::TIOCSTI;
        let tiocsti_high = tiocsti | 1 << 32;
        let tioclinux = libc::TIOCLINUX;
        let filter = program(&default_spec());
        for request in [tiocsti, tiocsti_high, tioclinux] {
            // Outside, a pipe is no terminal; with the filter the kernel never sees the call.
            let outside = in_child(None, || ioctl(read_end, request));
            assert_eq!(outside, Ended::Exited(libc::ENOTTY), "{request:#x}");
            let inside = in_child(Some(&filter), || ioctl(read_end, request));
            assert_eq!(inside, EPERM, "{request:#x}");
        }
        assert_eq!(in_child(Some(&filter), || ioctl(0, tiocsti)), EPERM);
        let fionread = || {
            let mut queued: libc::c_int = 0;
            // SAFETY: writes three bytes from a static buffer, FIONREAD fills an int, then the
            // three bytes are read back into `buf`.
            unsafe {
                let mut buf = [0u8; 3];
                libc::write(write_end, b"abc".as_ptr().cast(), 3);
                let ret = libc::ioctl(read_end, libc::FIONREAD, &mut queued);
                libc::read(read_end, buf.as_mut_ptr().cast(), 3);
                if ret < 0 {
                    errno_of(-1)
                } else {
                    i32::from(queued != 3)
                }
            }
        };
        assert_eq!(in_child(None, fionread), DONE);
        assert_eq!(in_child(Some(&filter), fionread), DONE);
        // SAFETY: closes the descriptors this test opened.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
    }

    #[test]
    fn refuses_new_namespaces_on_clone_as_root() {
        if !root("refuses_new_namespaces_on_clone_as_root") {
            return;
        }
        let filter = program(&default_spec());
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            let clone = move || {
                let flags = (flag | libc::SIGCHLD) as u64;
                // SAFETY: like fork (no CLONE_VM, no new stack): the grandchild exits at once.
                match unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) } {
                    0 => unsafe { libc::_exit(0) },
                    -1 => errno_of(-1),
                    pid => i32::from(wait(pid as libc::pid_t) != DONE),
                }
            };
            assert_eq!(in_child(None, clone), DONE, "{flag:#x} outside");
            assert_eq!(in_child(Some(&filter), clone), EPERM, "{flag:#x}");
        }
    }

    #[test]
    fn answers_clone3_with_enosys() {
        let clone3 = || {
            // SAFETY: no arguments: EINVAL when the kernel looks at them.
            errno_of(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) })
        };
        let enosys = Ended::Exited(libc::ENOSYS);
        assert_eq!(
            outcomes(clone3),
            [Ended::Exited(libc::EINVAL), enosys, enosys]
        );
    }

    #[test]
    fn allows_personality_queries_only() {
        let set_personality = |persona: u64| {
            // SAFETY: a persona for this (child) process only.
            errno_of(unsafe { libc::syscall(libc::SYS_personality, persona) })
        };
        assert_eq!(
            outcomes(|| set_personality(0xffff_ffff)),
            [DONE, DONE, DONE]
        );
        let no_aslr = || set_personality(libc::ADDR_NO_RANDOMIZE as u64);
        assert_eq!(outcomes(no_aslr), [DONE, EPERM, SIGSYS]);
    }

    #[test]
    fn checks_socket_families_against_network_as_root() {
        if !root("checks_socket_families_against_network_as_root") {
            return;
        }
        let none = program(&default_spec());
        let allow = program(&spec("default", network_allowed(), DenyAction::Errno));
        for (family, kind, outside_network) in [
            (libc::AF_UNIX, libc::SOCK_STREAM, [DONE, DONE]),
            (libc::AF_INET, libc::SOCK_STREAM, [EPERM, DONE]),
            (libc::AF_INET, libc::SOCK_DGRAM, [EPERM, DONE]),
            (libc::AF_NETLINK, libc::SOCK_RAW, [EPERM, DONE]),
            (libc::AF_PACKET, libc::SOCK_RAW, [EPERM, EPERM]),
        ] {
            let socket = move || {
                // SAFETY: creates and closes a socket.
                let fd = unsafe { libc::socket(family, kind, 0) };
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
                errno_of(fd.into())
            };
            assert_eq!(in_child(None, socket), DONE, "family {family} outside");
            let got = [
                in_child(Some(&none), socket),
                in_child(Some(&allow), socket),
            ];
            assert_eq!(
                got, outside_network,
                "family {family} (network none, allow)"
            );
        }
    }

    /// Installs the filter between fork and exec of a `Command`.
    struct PreExecFilter {
        _filter: Vec<sock_filter>,
        fprog: libc::sock_fprog,
    }

    // SAFETY: `fprog` points into `_filter`'s heap buffer, owned by the same value and never
    // changed; moving the value does not move the buffer.
    unsafe impl Send for PreExecFilter {}
    // SAFETY: as above, and nothing is mutated through a shared reference.
    unsafe impl Sync for PreExecFilter {}

    impl PreExecFilter {
        fn new(filter: Vec<sock_filter>) -> Self {
            let fprog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            Self {
                _filter: filter,
                fprog,
            }
        }

        fn install(&self) -> io::Result<()> {
            install(&self.fprog)
        }
    }

    /// Runs `argv` under `spec` with `stdin`, in the C locale.
    fn run_under(spec: &SeccompSpec, argv: &[&str], stdin: &[u8]) -> Output {
        let filter = PreExecFilter::new(program(spec));
        let mut command = Command::new(argv[0]);
        command
            .args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the hook runs between fork and exec; it makes two syscalls with data prepared
        // before spawn, allocates nothing and takes no lock.
        unsafe { command.pre_exec(move || filter.install()) };
        let mut child = command.spawn().expect("spawn");
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    }

    /// Runs `argv` under `spec` and asserts it exits with `code` and its output contains
    /// `expected`; then again with the Kill action, which proves the program made no syscall
    /// outside the profile (with EPERM it might have carried on regardless).
    #[track_caller]
    fn assert_runs(spec: &SeccompSpec, argv: &[&str], stdin: &[u8], code: i32, expected: &str) {
        let kill = SeccompSpec {
            deny_action: DenyAction::Kill,
            ..spec.clone()
        };
        for spec in [spec, &kill] {
            let output = run_under(spec, argv, stdin);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.code() == Some(code) && stdout.contains(expected),
                "{argv:?} under {} ({:?}): {} (want {code} and {expected:?})\nstdout: {stdout}\
                 \nstderr: {}\nif a syscall is missing, `strace -f` the command to find it",
                spec.profile,
                spec.deny_action,
                output.status,
                String::from_utf8_lossy(&output.stderr),
            );
        }
    }

    /// Whether all `programs` are installed; if not, skips (fails when CI=true).
    fn installed(test: &str, programs: &[&str]) -> bool {
        let missing: Vec<_> = programs.iter().filter(|p| !Path::new(p).exists()).collect();
        if missing.is_empty() {
            return true;
        }
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test}: no {missing:?}"
        );
        eprintln!("skipping {test}: {missing:?} not installed");
        false
    }

    #[test]
    fn text_tools_run_under_default() {
        let tools = [
            "/bin/ls",
            "/bin/cat",
            "/usr/bin/sort",
            "/bin/grep",
            "/usr/bin/find",
            "/bin/sed",
            "/usr/bin/awk",
            "/usr/bin/diff",
        ];
        if !installed("text_tools_run_under_default", &tools) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::write(&old, "one\ntwo\n").unwrap();
        std::fs::write(&new, "one\n2\n").unwrap();
        let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
        let hostname = std::fs::read_to_string("/etc/hostname").unwrap();
        let spec = default_spec();
        assert_runs(&spec, &["/bin/ls", "-la", "/"], b"", 0, " etc\n");
        assert_runs(&spec, &["/bin/cat", "/etc/hostname"], b"", 0, &hostname);
        assert_runs(&spec, &["/usr/bin/sort"], b"b\nc\na\n", 0, "a\nb\nc\n");
        assert_runs(
            &spec,
            &["/bin/grep", "-r", "root", "/etc/passwd"],
            b"",
            0,
            "root:",
        );
        let find = ["/usr/bin/find", "/usr/share/doc", "-maxdepth", "1"];
        assert_runs(&spec, &find, b"", 0, "/usr/share/doc\n");
        assert_runs(&spec, &["/bin/sed", "-e", "s/a/b/"], b"aaa\n", 0, "baa\n");
        assert_runs(
            &spec,
            &["/usr/bin/awk", "{ print $2 }"],
            b"a b c\n",
            0,
            "b\n",
        );
        assert_runs(&spec, &["/usr/bin/diff", old, old], b"", 0, "");
        assert_runs(
            &spec,
            &["/usr/bin/diff", "-u", old, new],
            b"",
            1,
            "-two\n+2\n",
        );
    }

    #[test]
    fn python_runs_under_default() {
        if !installed(
            "python_runs_under_default",
            &["/usr/bin/python3", "/bin/echo"],
        ) {
            return;
        }
        let script = "import json,os,subprocess,re,pathlib,hashlib; \
                      print(subprocess.run(['/bin/echo','x'],capture_output=True).stdout)";
        let argv = ["/usr/bin/python3", "-I", "-c", script];
        assert_runs(&default_spec(), &argv, b"", 0, "b'x\\n'");
    }

    #[test]
    fn git_reads_a_repository_under_default() {
        const GIT: &str = "/usr/bin/git";
        if !installed("git_reads_a_repository_under_default", &[GIT]) {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        let repo = home.path().join("repo");
        let git = |args: &[&str]| {
            // Outside the filter: creating the repository is not what is tested.
            let status = Command::new(GIT)
                .args(args)
                .current_dir(home.path())
                .env("HOME", home.path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}: {status}");
        };
        git(&["init", "-q", "repo"]);
        std::fs::write(repo.join("README"), "hello\n").unwrap();
        git(&["-C", "repo", "add", "README"]);
        let identity = ["-c", "user.name=T", "-c", "user.email=t@example.com"];
        git(&[
            &identity[..],
            &["-C", "repo", "commit", "-q", "-m", "first commit"],
        ]
        .concat());
        let spec = default_spec();
        assert_runs(&spec, &[GIT, "--version"], b"", 0, "git version");
        let repo = repo.to_str().unwrap();
        assert_runs(
            &spec,
            &[GIT, "-C", repo, "log", "--oneline"],
            b"",
            0,
            " first commit\n",
        );
        assert_runs(&spec, &[GIT, "-C", repo, "status", "--short"], b"", 0, "");
        assert_runs(
            &spec,
            &[GIT, "-C", repo, "show", "HEAD:README"],
            b"",
            0,
            "hello\n",
        );
    }

    #[test]
    fn curl_fetches_over_loopback_with_network_allowed() {
        const CURL: &str = "/usr/bin/curl";
        if !installed("curl_fetches_over_loopback_with_network_allowed", &[CURL]) {
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Two requests: assert_runs fetches with each deny action.
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "connection closed mid-request");
                    request.extend_from_slice(&buf[..n]);
                }
                let body = "hello from the test\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).unwrap();
            }
        });
        let allow = spec("default", network_allowed(), DenyAction::Errno);
        assert_runs(&allow, &[CURL, "--version"], b"", 0, "curl ");
        let fetch = [CURL, "-q", "-s", "--noproxy", "*", url.as_str()];
        assert_runs(&allow, &fetch, b"", 0, "hello from the test\n");
        server.join().unwrap();
        // Without network, socket(AF_INET) fails: curl cannot connect (exit 7).
        let output = run_under(&default_spec(), &fetch, b"");
        assert_eq!(output.status.code(), Some(7), "{output:?}");
    }

    #[test]
    fn tar_and_gzip_run_under_default() {
        let tools = ["/bin/tar", "/bin/gzip"];
        if !installed("tar_and_gzip_run_under_default", &tools) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/file"), "contents\n").unwrap();
        let archive = dir.path().join("x.tgz");
        let (tree, archive) = (tree.to_str().unwrap(), archive.to_str().unwrap());
        let spec = default_spec();
        // tar runs gzip as a child: fork and exec under the filter.
        let create = [
            "/bin/tar",
            "-C",
            dir.path().to_str().unwrap(),
            "-czf",
            archive,
            "tree",
        ];
        assert_runs(&spec, &create, b"", 0, "");
        assert_runs(
            &spec,
            &["/bin/tar", "-tzf", archive],
            b"",
            0,
            "tree/sub/file\n",
        );
        assert_runs(&spec, &["/bin/gzip", "-c"], b"data", 0, "");
        assert!(Path::new(tree).exists());
    }

    #[test]
    fn static_program_runs_under_minimal() {
        const LDCONFIG: &str = "/usr/sbin/ldconfig";
        if !installed("static_program_runs_under_minimal", &[LDCONFIG]) {
            return;
        }
        let minimal = spec("minimal", Network::None, DenyAction::Errno);
        assert_runs(&minimal, &[LDCONFIG, "-p"], b"", 0, "libc.so.6");
    }

    // ---- install cost -------------------------------------------------------------------------

    /// Nanoseconds one `seccomp(SECCOMP_SET_MODE_FILTER)` of `filter` takes in a fresh child.
    fn install_nanos(filter: &[sock_filter]) -> u64 {
        let fprog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let now = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: fills `t`.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
            t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
        };
        let ended = in_child(None, || {
            // SAFETY: as in `in_child`, then writes eight bytes from the stack to the pipe.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let start = now();
                let fprog = &fprog as *const libc::sock_fprog;
                let ret = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, fprog);
                let took = (now() - start).to_le_bytes();
                libc::write(fds[1], took.as_ptr().cast(), 8);
                i32::from(ret != 0)
            }
        });
        assert_eq!(ended, DONE);
        let mut took = [0u8; 8];
        // SAFETY: reads eight bytes into `took`, then closes the pipe.
        unsafe {
            assert_eq!(libc::read(fds[0], took.as_mut_ptr().cast(), 8), 8);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        u64::from_le_bytes(took)
    }

    /// The default profile encoded by seccompiler, one rule per syscall, for comparison.
    fn linear_default() -> Vec<sock_filter> {
        use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
        let rules = profile("default")
            .unwrap()
            .iter()
            .map(|syscall| (syscall.nr, Vec::new()))
            .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .unwrap();
        filter.try_into().unwrap()
    }

    #[test]
    fn reports_install_cost() {
        for (what, filter) in [
            ("default", program(&default_spec())),
            (
                "minimal",
                program(&spec("minimal", Network::None, DenyAction::Errno)),
            ),
            ("default, seccompiler's linear encoding", linear_default()),
            (
                "floor: allow everything",
                vec![sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: bpf::ALLOW,
                }],
            ),
        ] {
            let mut samples: Vec<u64> = (0..200).map(|_| install_nanos(&filter)).collect();
            samples.sort_unstable();
            println!(
                "install {what} ({} instructions): median {:.1} µs, p90 {:.1} µs",
                filter.len(),
                samples[100] as f64 / 1000.0,
                samples[180] as f64 / 1000.0
            );
        }
    }
}
