//! The raw system calls of the sandbox: clone, the children's setup, execve, reaping.
//!
//! This is the only file of the crate allowed `unsafe`. Its central invariant: between `clone3`
//! and `execve` the children run in a copy of a multi-threaded process whose other threads are
//! gone, possibly while they held the allocator's or stdio's locks. So the children only read
//! memory the parent prepared ([`ChildSetup`]) and call `libc::syscall` (a thin wrapper that
//! takes no lock). No allocation, no formatting, no panics, no glibc wrapper that may lock or
//! signal other threads (glibc's `setresuid` does: raw syscalls are used for credentials).
//!
//! Two processes are made per invocation:
//! - **init** (C1), cloned by the daemon into new pid, mount, ipc and uts namespaces (and, when
//!   the daemon is not root, a new user and network namespace). It is pid 1 of the tool's pid
//!   namespace. It joins the leased network namespace, builds the tool's root (mount plan) and
//!   pivots into it, then clones the tool and becomes its init: it reaps every process, forwards
//!   signals to the tool, and when the tool exits kills whatever is left in the namespace and
//!   reports the tool's wait status to the daemon. Killing init kills the whole namespace.
//! - **tool** (C2), cloned by init into a new user namespace (when the daemon is root; init
//!   writes its id maps so it runs as the policy's `run_as` user). It drops every capability
//!   (bounding, ambient, permitted, effective, inheritable), locks the securebits, applies
//!   rlimits and `no_new_privs`, creates and applies its landlock ruleset, installs the seccomp
//!   filter and executes the program.
//!
//! Failures before exec are reported as (stage, errno) over a close-on-exec pipe.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_long};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use seccompiler::sock_filter;
use tokio::io::unix::AsyncFd;

use super::Error;

/// One mount-related step, with every path already under the staging directory.
pub struct MountOp {
    pub kind: MountKind,
    pub path: CString,
    /// Bind source, symlink target or tmpfs options.
    pub arg: CString,
    /// Flags for the read-only remount of a bind.
    pub flags: u64,
}

/// What a [`MountOp`] does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Dir,
    File,
    Symlink,
    BindReadOnly,
    BindWritable,
    BindDevice,
    Tmpfs,
    Proc,
    /// Keep a detached copy of the mount at `path` in tree slot `flags` (before `/tmp` is
    /// replaced, for binds under it).
    CloneTree,
    /// Attach the tree in slot `flags` at `path`.
    MoveTree,
}

/// Most binds under `/tmp` a template-based sandbox moves across (tree slots in init).
pub const MAX_TREES: usize = 16;

/// How the tool's user is set up.
pub enum Identity<'a> {
    /// The daemon is root: init clones the tool into a new user namespace and maps `uid`/`gid`
    /// (the `run_as` user) to themselves; the tool switches to them.
    Mapped {
        uid: u32,
        gid: u32,
        /// `"<uid> <uid> 1\n"` and `"<gid> <gid> 1\n"`.
        uid_map: &'a [u8],
        gid_map: &'a [u8],
    },
    /// The daemon is not root: init is already in a user namespace mapping the daemon's own ids;
    /// the tool keeps them and only drops capabilities.
    Inherited,
}

/// Everything the children apply, prepared by the parent.
pub struct ChildSetup<'a> {
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub cwd: &'a CStr,
    pub rlimits: &'a [(u32, u64)],
    pub staging: &'a CStr,
    pub mounts: &'a [MountOp],
    pub hostname: &'a CStr,
    pub ruleset: &'a super::ruleset::RulesetPlan,
    pub seccomp: &'a [sock_filter],
    pub identity: Identity<'a>,
    /// A network namespace to join (from the pool), or -1.
    pub netns: RawFd,
    /// The tool's template mount namespace to copy, or -1 to build the root from scratch
    /// (then `mounts` are staged paths, else paths inside the template).
    pub template: RawFd,
    /// The daemon is not root: clone init into a new user namespace too.
    pub rootless: bool,
    /// Give the sandbox a new network namespace of its own (when none is leased and the
    /// policy does not allow the network).
    pub new_network: bool,
    /// Init must wait for the parent (cgroup placement, id maps) before going on.
    pub wait_for_parent: bool,
    /// The highest capability number of this kernel.
    pub cap_last: u32,
}

/// Plain data the children read: raw pointers and numbers only.
struct Prepared<'a> {
    setup: &'a ChildSetup<'a>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    rlimits: Vec<(c_int, libc::rlimit)>,
    seccomp: libc::sock_fprog,
    ruleset_attr: [u64; 3],
    stdio: [RawFd; 3],
    report: RawFd,
    status: RawFd,
    go: RawFd,
    mapped_read: RawFd,
    mapped_write: RawFd,
    /// The descriptors init needs, ascending; it closes every other one at once.
    keep: Vec<u32>,
}

/// The steps of setup, as reported to the parent on failure.
const STAGES: &[&str] = &[
    "wait for the daemon",                      // 0
    "enter a new cgroup namespace",             // 1
    "join the network namespace",               // 2
    "make mounts private",                      // 3
    "mount the new root",                       // 4
    "create a directory in the new root",       // 5
    "create a file in the new root",            // 6
    "create a symlink in the new root",         // 7
    "bind-mount a path",                        // 8
    "make a bind mount read-only",              // 9
    "mount a tmpfs",                            // 10
    "mount /proc",                              // 11
    "pivot into the new root",                  // 12
    "make the new root read-only",              // 13
    "set the hostname",                         // 14
    "clone the tool",                           // 15
    "map the tool's user and group ids",        // 16
    "wait for the id maps",                     // 17
    "reset the signal state",                   // 18
    "start a new session",                      // 19
    "set up standard input and output",         // 20
    "mark inherited descriptors close-on-exec", // 21
    "drop capabilities",                        // 22
    "lock the securebits",                      // 23
    "drop supplementary groups",                // 24
    "switch to the run_as group",               // 25
    "switch to the run_as user",                // 26
    "change to the working directory",          // 27
    "set a resource limit",                     // 28
    "set no_new_privs",                         // 29
    "create the landlock ruleset",              // 30
    "add a landlock rule",                      // 31
    "apply the landlock ruleset",               // 32
    "install the seccomp filter",               // 33
    "execute the program",                      // 34
];

/// Pipe pair (read end, write end), both close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take and return plain ints.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A sandbox that has been cloned but may not have executed its program yet.
pub struct Spawned {
    child: Child,
    report: OwnedFd,
}

/// Clones init, which sets up the sandbox and starts the program. `before_go` runs in the
/// parent with init's pid (host view) before init is let go (to place it in its cgroup).
pub fn spawn(
    setup: &ChildSetup<'_>,
    before_go: impl FnOnce(u32) -> io::Result<()>,
) -> io::Result<Spawned> {
    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    let (mapped_read, mapped_write) = pipe()?;

    let ptrs = |list: &[CString]| {
        list.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let mut keep: Vec<u32> = [
        stdin_read.as_raw_fd(),
        stdout_write.as_raw_fd(),
        stderr_write.as_raw_fd(),
        report_write.as_raw_fd(),
        status_write.as_raw_fd(),
        go_read.as_raw_fd(),
        mapped_read.as_raw_fd(),
        mapped_write.as_raw_fd(),
        setup.netns,
        setup.template,
    ]
    .into_iter()
    .filter_map(|fd| u32::try_from(fd).ok())
    .collect();
    keep.sort_unstable();
    keep.dedup();
    let prepared = Prepared {
        keep,
        setup,
        argv: ptrs(setup.argv),
        envp: ptrs(setup.env),
        rlimits: setup
            .rlimits
            .iter()
            .map(|&(resource, value)| {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    // The CPU limit's soft value sends SIGXCPU; one more second, then SIGKILL.
                    rlim_max: if resource == libc::RLIMIT_CPU {
                        value.saturating_add(1)
                    } else {
                        value
                    },
                };
                (resource as c_int, limit)
            })
            .collect(),
        seccomp: libc::sock_fprog {
            len: setup.seccomp.len() as u16,
            filter: setup.seccomp.as_ptr() as *mut libc::sock_filter,
        },
        ruleset_attr: [
            setup.ruleset.handled_fs,
            setup.ruleset.handled_net,
            setup.ruleset.scoped,
        ],
        stdio: [
            stdin_read.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
        report: report_write.as_raw_fd(),
        status: status_write.as_raw_fd(),
        go: go_read.as_raw_fd(),
        mapped_read: mapped_read.as_raw_fd(),
        mapped_write: mapped_write.as_raw_fd(),
    };

    let mut flags =
        libc::CLONE_PIDFD | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if setup.template < 0 {
        // With a template, init joins (and copies) that namespace instead of the host's.
        flags |= libc::CLONE_NEWNS;
    }
    if setup.rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    if setup.new_network {
        flags |= libc::CLONE_NEWNET;
    }
    let mut pidfd: c_int = -1;
    // SAFETY: clone_args is plain old data; all-zero is a valid starting value.
    let mut args: libc::clone_args = unsafe { mem::zeroed() };
    args.flags = flags as u64;
    args.pidfd = &mut pidfd as *mut c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;

    // SAFETY: without CLONE_VM the child gets a copy of this address space and continues here
    // like after fork(2); `args` is valid for the duration of the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly cloned init; `prepared` is our copy of the parent's data.
        unsafe { run_init(&prepared) }
    }
    drop((
        stdin_read,
        stdout_write,
        stderr_write,
        report_write,
        status_write,
    ));
    drop((go_read, mapped_read, mapped_write));
    // SAFETY: clone3 with CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for the
    // registration's whole life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut child = Child {
        pid: pid as libc::pid_t,
        pidfd,
        stdin: Some(stdin_write),
        stdout: Some(stdout_read),
        stderr: Some(stderr_read),
        status: Some(status_read),
        reaped: false,
        held: None,
    };
    if setup.wait_for_parent {
        let go = before_go(pid as u32).and_then(|()| {
            // SAFETY: writes one byte from a stack buffer to our pipe.
            let n = unsafe { libc::write(go_write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            if n == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
        if let Err(e) = go {
            child.kill_tree();
            child.reap_blocking();
            return Err(e);
        }
    }
    drop(go_write);
    for fd in [&child.stdin, &child.stdout, &child.stderr, &child.status]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd)?;
    }
    set_nonblocking(&report_read)?;
    Ok(Spawned {
        child,
        report: report_read,
    })
}

impl Spawned {
    /// Waits until the program is executing (the report pipe closes when the tool execs and
    /// init has closed its copy), or returns the step that failed after reaping the sandbox.
    pub async fn started(self) -> Result<Child, Error> {
        use tokio::io::AsyncReadExt;
        let Spawned { mut child, report } = self;
        let mut report = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(report)
            .map_err(Error::Clone)?;
        let mut buf = [0u8; 5];
        let mut read = 0;
        while read < buf.len() {
            match report.read(&mut buf[read..]).await.map_err(Error::Clone)? {
                0 => break,
                n => read += n,
            }
        }
        if read == 0 {
            return Ok(child);
        }
        child.kill_tree();
        child.reap_blocking();
        let stage = STAGES.get(usize::from(buf[0])).copied().unwrap_or("start");
        let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
        Err(Error::ChildSetup {
            stage,
            source: io::Error::from_raw_os_error(errno),
        })
    }
}

/// Runs a raw syscall step; on failure reports `stage` and exits.
macro_rules! step {
    ($p:expr, $stage:expr, $call:expr) => {
        // SAFETY (for every use): arguments are plain numbers or pointers into the prepared
        // data, which the parent keeps alive and unchanged until the children exec or exit.
        if unsafe { $call } < 0 {
            unsafe { fail($p.report, $stage) }
        }
    };
}

const NULL: *const c_char = std::ptr::null();

/// Init (C1): builds the sandbox, clones the tool, then reaps and reports. Never returns.
///
/// # Safety
/// Must only be called in the freshly cloned init, with `p` fully prepared by the parent.
unsafe fn run_init(p: &Prepared<'_>) -> ! {
    let s = p.setup;
    // Every signal stays pending until the reaping loop takes it with sigtimedwait; the tool
    // starts with an empty mask again.
    let full_mask: u64 = !0;
    step!(
        p,
        18,
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &full_mask as *const u64,
            std::ptr::null::<u64>(),
            8usize
        )
    );
    // If the daemon dies (even by SIGKILL), the sandbox dies with it: nothing would enforce its
    // deadline any more. The "parent" here is the daemon thread that cloned init, one of the
    // async runtime's worker threads, which live as long as the daemon.
    step!(
        p,
        0,
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL,
            0,
            0,
            0
        )
    );
    // Init never executes anything, so close-on-exec does not apply to it: it would keep every
    // descriptor the daemon had (its sockets, other invocations' pipes, this tool's stdin write
    // end) for the tool's whole life. Close all but what it needs.
    let mut next = 3u32;
    for &fd in &p.keep {
        if fd > next {
            // SAFETY: closes a range of descriptors of this process.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
        }
        next = next.max(fd + 1);
    }
    // SAFETY: as above, everything above the last kept descriptor.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
    if s.wait_for_parent {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a stack variable.
        let n = unsafe { libc::syscall(libc::SYS_read, p.go, &mut byte as *mut u8, 1usize) };
        if n != 1 {
            // The daemon went away before letting us go: nothing to run for.
            unsafe { fail(p.report, 0) }
        }
    }
    // The cgroup namespace is made after the daemon placed us in our cgroup, so the tool sees
    // that cgroup as its root.
    step!(
        p,
        1,
        libc::syscall(libc::SYS_unshare, libc::CLONE_NEWCGROUP)
    );
    if s.netns >= 0 {
        step!(
            p,
            2,
            libc::syscall(libc::SYS_setns, s.netns, libc::CLONE_NEWNET)
        );
    }
    if s.template >= 0 {
        // The template holds the tool's read-only root; a private copy of it is this
        // sandbox's. setns also moves root and working directory into it.
        step!(
            p,
            3,
            libc::syscall(libc::SYS_setns, s.template, libc::CLONE_NEWNS)
        );
        step!(p, 3, libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS));
        let mut trees = [-1 as c_int; MAX_TREES];
        for op in s.mounts {
            // SAFETY: raw syscalls on the prepared strings.
            if let Err(stage) = unsafe { mount_step(op, &mut trees) } {
                unsafe { fail(p.report, stage) }
            }
        }
        step!(p, 12, libc::syscall(libc::SYS_chdir, c"/".as_ptr()));
    } else {
        // SAFETY: raw syscalls on the prepared strings.
        if let Err(stage) = unsafe { build_root(s.staging, s.mounts) } {
            unsafe { fail(p.report, stage) }
        }
    }
    step!(
        p,
        14,
        libc::syscall(
            libc::SYS_sethostname,
            s.hostname.as_ptr(),
            s.hostname.to_bytes().len()
        )
    );

    let mapped = matches!(s.identity, Identity::Mapped { .. });
    let clone_flags = libc::SIGCHLD as c_long
        | if mapped {
            libc::CLONE_NEWUSER as c_long
        } else {
            0
        };
    // SAFETY: a fork-like clone (no CLONE_VM): the tool continues here with its own copy.
    let tool =
        unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    if tool < 0 {
        unsafe { fail(p.report, 15) }
    }
    if tool == 0 {
        // SAFETY: we are the freshly cloned tool process.
        unsafe { run_tool(p) }
    }
    if let Identity::Mapped {
        uid_map, gid_map, ..
    } = s.identity
    {
        // /proc here is the tool's pid namespace, where init can see it.
        let mut path = [0u8; 32];
        for (file, map) in [(&b"uid_map"[..], uid_map), (&b"gid_map"[..], gid_map)] {
            proc_path(&mut path, tool as u32, file);
            // SAFETY: `path` is NUL-terminated by proc_path; `map` is the parent's buffer.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                unsafe { fail(p.report, 16) }
            }
            let n = unsafe { libc::syscall(libc::SYS_write, fd, map.as_ptr(), map.len()) };
            unsafe { libc::syscall(libc::SYS_close, fd) };
            if n < 0 {
                unsafe { fail(p.report, 16) }
            }
        }
        // SAFETY: one byte from a stack buffer.
        unsafe { libc::syscall(libc::SYS_write, p.mapped_write, [1u8].as_ptr(), 1usize) };
    }
    // Only the tool's copies remain: the report pipe reads end of file once it executes, and
    // the output pipes once every process of the tool is gone.
    for fd in [
        p.report,
        p.stdio[0],
        p.stdio[1],
        p.stdio[2],
        p.mapped_read,
        p.mapped_write,
    ] {
        // SAFETY: closing our own copies of descriptors.
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }
    // SAFETY: init's loop uses raw syscalls only.
    unsafe { reap_until_tool_exits(p.status, tool as libc::pid_t) }
}

/// Writes `/proc/<pid>/<file>\0` into `buf`.
fn proc_path(buf: &mut [u8; 32], pid: u32, file: &[u8]) {
    let mut len = 0;
    for &b in b"/proc/" {
        buf[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 10];
    let mut n = pid;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in (0..count).rev() {
        buf[len] = digits[i];
        len += 1;
    }
    buf[len] = b'/';
    len += 1;
    for &b in file {
        buf[len] = b;
        len += 1;
    }
    buf[len] = 0;
}

/// Builds a root from scratch under `staging` from the staged `mounts`, pivots into it and
/// makes it read-only. Used by init without a template, and to make templates.
///
/// # Safety
/// Raw syscalls only: safe in init and on a thread that unshared its mount namespace.
unsafe fn build_root(staging: &CStr, mounts: &[MountOp]) -> Result<(), u8> {
    let check = |ret: c_long, stage: u8| if ret < 0 { Err(stage) } else { Ok(()) };
    // SAFETY (whole block): raw syscalls on NUL-terminated strings the caller keeps alive.
    unsafe {
        // Nothing mounted here may propagate back to the host.
        check(
            libc::syscall(
                libc::SYS_mount,
                NULL,
                c"/".as_ptr(),
                NULL,
                libc::MS_REC | libc::MS_PRIVATE,
                NULL,
            ),
            3,
        )?;
        check(
            libc::syscall(
                libc::SYS_mount,
                c"tmpfs".as_ptr(),
                staging.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=1m,mode=755".as_ptr(),
            ),
            4,
        )?;
        let mut trees = [-1 as c_int; MAX_TREES];
        for op in mounts {
            mount_step(op, &mut trees)?;
        }
        check(libc::syscall(libc::SYS_chdir, staging.as_ptr()), 12)?;
        check(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()),
            12,
        )?;
        check(
            libc::syscall(libc::SYS_umount2, c".".as_ptr(), libc::MNT_DETACH),
            12,
        )?;
        check(libc::syscall(libc::SYS_chdir, c"/".as_ptr()), 12)?;
        check(
            libc::syscall(
                libc::SYS_mount,
                NULL,
                c"/".as_ptr(),
                NULL,
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                NULL,
            ),
            13,
        )
    }
}

/// Applies one mount step; on failure, the stage (errno is left set).
///
/// # Safety
/// Raw syscalls only, on the prepared strings.
unsafe fn mount_step(op: &MountOp, trees: &mut [c_int; MAX_TREES]) -> Result<(), u8> {
    let check = |ret: c_long, stage: u8| if ret < 0 { Err(stage) } else { Ok(()) };
    let path = op.path.as_ptr();
    let arg = op.arg.as_ptr();
    let slot = (op.flags as usize).min(MAX_TREES - 1);
    // SAFETY (whole block): raw syscalls on NUL-terminated strings the caller keeps alive.
    unsafe {
        match op.kind {
            MountKind::Dir => check(
                libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path, 0o755),
                5,
            ),
            MountKind::File => {
                let fd = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path,
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check(fd, 6)?;
                libc::syscall(libc::SYS_close, fd);
                Ok(())
            }
            MountKind::Symlink => check(
                libc::syscall(libc::SYS_symlinkat, arg, libc::AT_FDCWD, path),
                7,
            ),
            MountKind::BindReadOnly | MountKind::BindWritable | MountKind::BindDevice => {
                check(
                    libc::syscall(libc::SYS_mount, arg, path, NULL, libc::MS_BIND, NULL),
                    8,
                )?;
                let mut flags = libc::MS_BIND | libc::MS_REMOUNT | op.flags as libc::c_ulong;
                if op.kind != MountKind::BindDevice {
                    flags |= libc::MS_NOSUID | libc::MS_NODEV;
                }
                if op.kind == MountKind::BindReadOnly {
                    flags |= libc::MS_RDONLY;
                }
                check(
                    libc::syscall(libc::SYS_mount, NULL, path, NULL, flags, NULL),
                    9,
                )
            }
            MountKind::Tmpfs => check(
                libc::syscall(
                    libc::SYS_mount,
                    c"tmpfs".as_ptr(),
                    path,
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    arg,
                ),
                10,
            ),
            MountKind::Proc => check(
                libc::syscall(
                    libc::SYS_mount,
                    c"proc".as_ptr(),
                    path,
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    // Processes of other users (init, which keeps capabilities) stay invisible.
                    c"hidepid=invisible".as_ptr(),
                ),
                11,
            ),
            MountKind::CloneTree => {
                const OPEN_TREE_CLONE: u32 = 1;
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    path,
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
                );
                check(fd, 8)?;
                trees[slot] = fd as c_int;
                Ok(())
            }
            MountKind::MoveTree => {
                const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
                let moved = libc::syscall(
                    libc::SYS_move_mount,
                    trees[slot],
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path,
                    MOVE_MOUNT_F_EMPTY_PATH,
                );
                libc::syscall(libc::SYS_close, trees[slot]);
                check(moved, 8)
            }
        }
    }
}

/// Makes a template mount namespace: the tool's root built once (all `mounts`, staged), to
/// be copied per invocation. Built on a short-lived thread, since unsharing the mount
/// namespace affects only the calling thread.
pub fn mount_template(staging: &CStr, mounts: &[MountOp]) -> io::Result<OwnedFd> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<OwnedFd> {
                // SAFETY: unshare affects only this thread (CLONE_FS comes with CLONE_NEWNS).
                if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let ns = std::fs::File::open("/proc/thread-self/ns/mnt")?;
                // SAFETY: raw syscalls on strings borrowed for the duration of the call.
                if let Err(stage) = unsafe { build_root(staging, mounts) } {
                    let error = io::Error::last_os_error();
                    let what = STAGES.get(usize::from(stage)).copied().unwrap_or("build");
                    return Err(io::Error::new(error.kind(), format!("{what}: {error}")));
                }
                Ok(OwnedFd::from(ns))
            })
            .join()
            .map_err(|_| io::Error::other("template thread panicked"))?
    })
}

/// Init's loop: reap everything; forward other signals to the tool; when the tool exits, kill
/// what is left, reap it, report the tool's wait status and exit.
///
/// # Safety
/// Init only: raw syscalls.
unsafe fn reap_until_tool_exits(status_fd: RawFd, tool: libc::pid_t) -> ! {
    let all: u64 = !0;
    let mut tool_status: c_int = 0;
    // The tool's own peak memory: init's would be the daemon's, which init is a copy of.
    let mut tool_rss: i64 = 0;
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: waits for any (blocked) signal; `info` is writable.
        let signal = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &all as *const u64,
                info.as_mut_ptr(),
                std::ptr::null::<libc::timespec>(),
                8usize,
            )
        } as c_int;
        if signal > 0 && signal != libc::SIGCHLD {
            // SAFETY: forwards the signal to the tool's pid in this namespace.
            unsafe { libc::syscall(libc::SYS_kill, tool, signal) };
            continue;
        }
        let mut tool_done = false;
        loop {
            let mut status: c_int = 0;
            let mut usage = MaybeUninit::<libc::rusage>::zeroed();
            // SAFETY: reaps any child without blocking; `status` and `usage` are writable.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_wait4,
                    -1,
                    &mut status as *mut c_int,
                    libc::WNOHANG | libc::__WALL,
                    usage.as_mut_ptr(),
                )
            } as libc::pid_t;
            if pid <= 0 {
                break;
            }
            if pid == tool {
                tool_status = status;
                // SAFETY: zero-initialised and filled by a successful wait4.
                tool_rss = unsafe { usage.assume_init() }.ru_maxrss;
                tool_done = true;
            }
        }
        if tool_done {
            break;
        }
    }
    // Whatever the tool left behind (background jobs, daemons) ends with it.
    // SAFETY: kill(-1) from pid 1 signals every other process of this namespace.
    unsafe {
        libc::syscall(libc::SYS_kill, -1 as libc::pid_t, libc::SIGKILL);
        let mut status: c_int = 0;
        while libc::syscall(
            libc::SYS_wait4,
            -1,
            &mut status as *mut c_int,
            libc::__WALL,
            std::ptr::null::<libc::rusage>(),
        ) > 0
        {}
        let mut report = [0u8; 12];
        report[..4].copy_from_slice(&tool_status.to_le_bytes());
        report[4..].copy_from_slice(&tool_rss.to_le_bytes());
        libc::syscall(libc::SYS_write, status_fd, report.as_ptr(), report.len());
        libc::_exit(0)
    }
}

/// The tool (C2): drops privileges, confines itself and executes the program. Never returns.
///
/// # Safety
/// Must only be called in the freshly cloned tool process.
unsafe fn run_tool(p: &Prepared<'_>) -> ! {
    let s = p.setup;
    if let Identity::Mapped { .. } = s.identity {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a stack variable.
        let n =
            unsafe { libc::syscall(libc::SYS_read, p.mapped_read, &mut byte as *mut u8, 1usize) };
        if n != 1 {
            unsafe { fail(p.report, 17) }
        }
    }
    let empty_mask: u64 = 0;
    step!(
        p,
        18,
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty_mask as *const u64,
            std::ptr::null::<u64>(),
            8usize
        )
    );
    // Rust's runtime ignores SIGPIPE, and ignored dispositions survive execve.
    let default_action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    step!(
        p,
        18,
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            &default_action as *const KernelSigaction,
            std::ptr::null::<KernelSigaction>(),
            8usize
        )
    );
    step!(p, 19, libc::syscall(libc::SYS_setsid));
    for (target, &fd) in p.stdio.iter().enumerate() {
        step!(p, 20, libc::syscall(libc::SYS_dup2, fd, target as c_int));
    }
    // Nothing but stdio crosses exec.
    step!(
        p,
        21,
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC
        )
    );

    // Capabilities: the bounding set first (needs CAP_SETPCAP, which the rest removes).
    for cap in 0..=s.cap_last {
        step!(
            p,
            22,
            libc::syscall(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0)
        );
    }
    // Locked: uid 0 gains nothing on exec, no keeping capabilities across setuid, no ambient.
    let securebits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    step!(
        p,
        23,
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_SECUREBITS,
            securebits,
            0,
            0,
            0
        )
    );
    step!(
        p,
        22,
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0
        )
    );
    if let Identity::Mapped { uid, gid, .. } = s.identity {
        step!(
            p,
            24,
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
        );
        step!(p, 25, libc::syscall(libc::SYS_setresgid, gid, gid, gid));
        step!(p, 26, libc::syscall(libc::SYS_setresuid, uid, uid, uid));
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    step!(
        p,
        22,
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr())
    );

    step!(p, 27, libc::syscall(libc::SYS_chdir, s.cwd.as_ptr()));
    for (resource, limit) in &p.rlimits {
        step!(
            p,
            28,
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                *resource,
                limit as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>()
            )
        );
    }
    step!(
        p,
        29,
        libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    );

    // SAFETY: as for `step!`.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            p.ruleset_attr.as_ptr(),
            s.ruleset.attr_size,
            0u32,
        )
    };
    if ruleset < 0 {
        unsafe { fail(p.report, 30) }
    }
    for (path, access) in &s.ruleset.paths {
        // SAFETY: as for `step!`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            // A device this host lacks is simply not in the view: nothing to grant.
            // SAFETY: reads this thread's errno.
            if unsafe { *libc::__errno_location() } == libc::ENOENT {
                continue;
            }
            unsafe { fail(p.report, 31) }
        }
        let rule = PathBeneathAttr {
            allowed_access: *access,
            parent_fd: fd as i32,
        };
        step!(
            p,
            31,
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32
            )
        );
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }
    for &(access, port) in &s.ruleset.ports {
        let rule = NetPortAttr {
            allowed_access: access,
            port,
        };
        step!(
            p,
            31,
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                LANDLOCK_RULE_NET_PORT,
                &rule as *const NetPortAttr,
                0u32
            )
        );
    }
    step!(
        p,
        32,
        libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32)
    );
    step!(
        p,
        33,
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &p.seccomp as *const libc::sock_fprog
        )
    );
    step!(
        p,
        34,
        libc::syscall(
            libc::SYS_execve,
            s.program.as_ptr(),
            p.argv.as_ptr(),
            p.envp.as_ptr()
        )
    );
    // SAFETY: execve only returns on failure, which the step above already reported.
    unsafe { fail(p.report, 34) }
}

const SECBIT_NOROOT: u64 = 1 << 0;
const SECBIT_NOROOT_LOCKED: u64 = 1 << 1;
const SECBIT_NO_SETUID_FIXUP_LOCKED: u64 = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: u64 = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: u64 = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: u64 = 1 << 7;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;
const LANDLOCK_RULE_NET_PORT: u32 = 2;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// The kernel's `struct sigaction` for rt_sigaction on x86_64 (not glibc's layout).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Reports `stage` and the current errno to the parent, then exits 127.
///
/// # Safety
/// Children only: raw syscalls (`_exit` is exit_group, no atexit handlers).
unsafe fn fail(report: RawFd, stage: u8) -> ! {
    // SAFETY: reads this thread's errno; no allocation or lock.
    let errno = unsafe { *libc::__errno_location() }.to_le_bytes();
    let message = [stage, errno[0], errno[1], errno[2], errno[3]];
    // SAFETY: writes a stack buffer to a descriptor the parent made for this.
    unsafe {
        libc::syscall(libc::SYS_write, report, message.as_ptr(), message.len());
        libc::_exit(127)
    }
}

/// How the program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    fn from_wait(status: c_int) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// Resources the sandbox's processes used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time in user mode.
    pub user_cpu: Duration,
    /// CPU time in the kernel.
    pub system_cpu: Duration,
    /// Peak resident set size of the largest process, in bytes.
    pub max_rss_bytes: u64,
}

/// A running sandbox: its init's pid and pidfd, and the parent's ends of the tool's pipes.
///
/// Killing init kills every process of the sandbox (it is pid 1 of their namespace). Dropping a
/// child that was not reaped kills and reaps it, so no process is ever left behind.
pub struct Child {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    /// Write end of the tool's stdin, until taken.
    pub stdin: Option<OwnedFd>,
    /// Read end of the tool's stdout, until taken.
    pub stdout: Option<OwnedFd>,
    /// Read end of the tool's stderr, until taken.
    pub stderr: Option<OwnedFd>,
    status: Option<OwnedFd>,
    reaped: bool,
    /// Pool leases (network namespace, cgroup slot) returned when this child is dropped, which
    /// is after it was reaped: by then no process of the sandbox uses them.
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Child {
    /// Keeps `leases` until the child is dropped.
    pub fn hold(&mut self, leases: Box<dyn std::any::Any + Send + Sync>) {
        self.held = Some(leases);
    }

    /// Init's pid as the host sees it.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Resolves once init has exited (it stays a zombie until reaped).
    pub async fn exited(&self) -> io::Result<()> {
        self.pidfd.readable().await.map(drop)
    }

    /// Kills every process of the sandbox.
    pub fn kill_tree(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: a signal syscall on our own pidfd; an error (already gone) is fine.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
        }
    }

    /// Reaps init if it has exited: how the tool ended and what the sandbox used. A tool whose
    /// init was killed before reporting (timeout, cancellation) ended by SIGKILL.
    pub fn try_reap(&mut self) -> io::Result<Option<(ExitStatus, Usage)>> {
        let Some((_init, mut usage)) = self.wait4(libc::WNOHANG)? else {
            return Ok(None);
        };
        let mut report = [0u8; 12];
        let status = self.status.take();
        let read = match &status {
            // SAFETY: reads into a stack buffer from our nonblocking pipe.
            Some(fd) => unsafe { libc::read(fd.as_raw_fd(), report.as_mut_ptr().cast(), 12) },
            None => -1,
        };
        let exit = if read == 12 {
            let mut status = [0u8; 4];
            let mut rss = [0u8; 8];
            status.copy_from_slice(&report[..4]);
            rss.copy_from_slice(&report[4..]);
            // CPU time stays init's total (init reaped every process of the sandbox); the
            // peak memory is the tool's.
            usage.max_rss_bytes = (i64::from_le_bytes(rss).max(0) as u64).saturating_mul(1024);
            ExitStatus::from_wait(c_int::from_le_bytes(status))
        } else {
            ExitStatus::Signal(libc::SIGKILL)
        };
        Ok(Some((exit, usage)))
    }

    fn reap_blocking(&mut self) {
        let _ = self.wait4(0);
    }

    fn wait4(&mut self, flags: c_int) -> io::Result<Option<(c_int, Usage)>> {
        if self.reaped {
            return Ok(None);
        }
        let mut status: c_int = 0;
        let mut usage = MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: wait4 fills `status` and `usage`, both valid for writing.
        let pid = unsafe { libc::wait4(self.pid, &mut status, flags, usage.as_mut_ptr()) };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            return Ok(None);
        }
        self.reaped = true;
        // SAFETY: zero-initialised and filled by a successful wait4.
        let usage = unsafe { usage.assume_init() };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(Some((
            status,
            Usage {
                user_cpu: time(usage.ru_utime),
                system_cpu: time(usage.ru_stime),
                max_rss_bytes: (usage.ru_maxrss as u64).saturating_mul(1024),
            },
        )))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_tree();
            self.reap_blocking();
        }
    }
}

/// The landlock ABI version this kernel offers, or None without landlock.
pub fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes no attribute pointer and creates nothing.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version as i32)
}

/// Whether this kernel has seccomp filtering.
pub fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP only queries this thread's mode.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// The `statvfs` flags of the filesystem holding `path`.
pub fn statvfs_flags(path: &CStr) -> io::Result<u64> {
    let mut stat = MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` writable.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: filled by a successful statvfs.
    Ok(unsafe { stat.assume_init() }.f_flag)
}

/// Creates an empty network namespace with its loopback up, held by the returned descriptor.
///
/// Runs on a short-lived thread: `unshare(CLONE_NEWNET)` moves only the calling thread.
pub fn new_network_namespace() -> io::Result<OwnedFd> {
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        bring_loopback_up()?;
        let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
        Ok(OwnedFd::from(ns))
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only used for the interface ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the socket was just created and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        request.ifr_name[i] = *b as c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `request`, valid for both.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restores the default SIGPIPE disposition, which Rust's runtime sets to ignore: for the
/// command-line clients, so `toolgate tools | head` ends quietly instead of panicking on a
/// closed stdout. The daemon keeps SIGPIPE ignored (a client closing its socket is an error to
/// handle, not a reason to die).
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition, no handler code; called before threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The daemon's effective uid and gid.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: getters without arguments.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if not), so pipes created later
/// never land on them and get mixed up with a child's stdio.
pub fn ensure_standard_fds() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        if null.as_raw_fd() != fd {
            // SAFETY: dup2 onto a descriptor number that is not open.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        } else {
            // It landed on the missing number: keep it open for the life of the process.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
        }
    }
    Ok(())
}
