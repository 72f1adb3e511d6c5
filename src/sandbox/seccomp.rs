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
mod tests;
