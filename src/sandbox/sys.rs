//! The raw system calls of the sandbox: clone, the child's setup, execve, signalling and reaping.
//!
//! This is the only file of the crate allowed `unsafe`. Its central invariant: between `clone3`
//! and `execve` the child runs in a copy of a multi-threaded process whose other threads are
//! gone, possibly mid-way through holding the allocator's or stdio's locks. So the child only
//! reads memory the parent prepared ([`ChildSetup`], [`Prepared`]) and calls `libc::syscall`
//! (a thin wrapper that takes no lock). No allocation, no formatting, no panics, no glibc
//! wrapper that may lock or signal threads. Failures are reported as a stage number and errno
//! over a close-on-exec pipe, then the child exits with `exit_group`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use seccompiler::sock_filter;
use tokio::io::unix::AsyncFd;

use super::Error;

/// What the child applies, prepared by the parent; borrowed from the `Plan` and `Profile`.
pub struct ChildSetup<'a> {
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub env: &'a [CString],
    pub cwd: &'a CStr,
    pub rlimits: &'a [(u32, u64)],
    pub landlock: &'a OwnedFd,
    pub seccomp: &'a [sock_filter],
}

/// The plain data the child reads: raw pointers and numbers only.
struct Prepared {
    program: *const c_char,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    cwd: *const c_char,
    rlimits: Vec<(c_int, libc::rlimit)>,
    landlock: RawFd,
    seccomp: libc::sock_fprog,
    stdio: [RawFd; 3],
    report: RawFd,
}

/// The steps of the child's setup, as reported to the parent on failure.
const STAGES: &[&str] = &[
    "start a new session",
    "reset its signal mask",
    "reset SIGPIPE",
    "set up stdin",
    "set up stdout",
    "set up stderr",
    "mark inherited descriptors close-on-exec",
    "change to the working directory",
    "set a resource limit",
    "set no_new_privs",
    "apply the landlock ruleset",
    "install the seccomp filter",
    "execute the program",
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

/// A child that has been cloned but may not have executed its program yet.
pub struct Spawned {
    child: Child,
    report: OwnedFd,
}

/// Clones a child that applies `setup` and executes the program.
pub fn spawn(setup: &ChildSetup<'_>) -> io::Result<Spawned> {
    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (report_read, report_write) = pipe()?;

    let ptrs = |list: &[CString]| {
        list.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    let prepared = Prepared {
        program: setup.program.as_ptr(),
        argv: ptrs(setup.argv),
        envp: ptrs(setup.env),
        cwd: setup.cwd.as_ptr(),
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
        landlock: setup.landlock.as_raw_fd(),
        seccomp: libc::sock_fprog {
            len: setup.seccomp.len() as u16,
            filter: setup.seccomp.as_ptr() as *mut libc::sock_filter,
        },
        stdio: [
            stdin_read.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
        report: report_write.as_raw_fd(),
    };

    let mut pidfd: c_int = -1;
    // SAFETY: clone_args is plain old data; all-zero is a valid starting value.
    let mut args: libc::clone_args = unsafe { mem::zeroed() };
    args.flags = libc::CLONE_PIDFD as u64;
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
        // SAFETY: we are the freshly cloned child; `prepared` is our copy of the parent's data.
        unsafe { run_child(&prepared) }
    }
    drop((stdin_read, stdout_write, stderr_write, report_write));
    // SAFETY: clone3 with CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for the
    // registration's whole life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    for fd in [&stdin_write, &stdout_read, &stderr_read, &report_read] {
        set_nonblocking(fd)?;
    }
    Ok(Spawned {
        child: Child {
            pid: pid as libc::pid_t,
            pidfd,
            stdin: Some(stdin_write),
            stdout: Some(stdout_read),
            stderr: Some(stderr_read),
            reaped: false,
        },
        report: report_read,
    })
}

impl Spawned {
    /// Waits until the child has executed its program (the report pipe closes on exec), or
    /// returns the step that failed after reaping the child.
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

/// The child side. Never returns: executes the program or exits with status 127.
///
/// # Safety
/// Must only be called in a freshly cloned child, with `p` fully prepared by the parent.
unsafe fn run_child(p: &Prepared) -> ! {
    // Each step: a raw syscall; on failure report (stage, errno) and exit.
    macro_rules! step {
        ($stage:expr, $call:expr) => {
            // SAFETY (for every use): arguments are plain numbers or pointers into `p`, which
            // the parent keeps alive and unchanged until this child has executed or exited.
            if unsafe { $call } < 0 {
                unsafe { fail(p.report, $stage) }
            }
        };
    }
    // Its own session and process group: the supervisor kills the group as one.
    step!(0, libc::syscall(libc::SYS_setsid));
    // Signal mask and ignored dispositions survive execve: start the tool with a clean state.
    // Rust's runtime ignores SIGPIPE, which would keep tools writing into closed pipes.
    let empty_mask: u64 = 0;
    step!(
        1,
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty_mask as *const u64,
            std::ptr::null::<u64>(),
            8usize
        )
    );
    let default_action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    step!(
        2,
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            &default_action as *const KernelSigaction,
            std::ptr::null::<KernelSigaction>(),
            8usize
        )
    );
    for (target, &fd) in p.stdio.iter().enumerate() {
        step!(
            3 + target as u8,
            libc::syscall(libc::SYS_dup2, fd, target as c_int)
        );
    }
    // Nothing but stdio crosses exec: every other descriptor (including the landlock ruleset
    // and the report pipe, still needed below) is closed by execve.
    step!(
        6,
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC
        )
    );
    step!(7, libc::syscall(libc::SYS_chdir, p.cwd));
    for (resource, limit) in &p.rlimits {
        step!(
            8,
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                *resource,
                limit as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>()
            )
        );
    }
    // Required by landlock and seccomp for an unprivileged caller; also makes setuid binaries
    // run without gaining privileges.
    step!(
        9,
        libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    );
    step!(
        10,
        libc::syscall(libc::SYS_landlock_restrict_self, p.landlock, 0u32)
    );
    step!(
        11,
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &p.seccomp as *const libc::sock_fprog
        )
    );
    step!(
        12,
        libc::syscall(
            libc::SYS_execve,
            p.program,
            p.argv.as_ptr(),
            p.envp.as_ptr()
        )
    );
    // SAFETY: execve only returns on failure, which the step above already reported.
    unsafe { fail(p.report, 12) }
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
/// Child side only: uses nothing but raw syscalls (`_exit` is exit_group, no atexit handlers).
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

/// Resources the child and the descendants it waited for used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time in user mode.
    pub user_cpu: Duration,
    /// CPU time in the kernel.
    pub system_cpu: Duration,
    /// Peak resident set size in bytes.
    pub max_rss_bytes: u64,
}

/// A running sandboxed child: its pid, a pidfd and the parent's ends of its stdio pipes.
///
/// The child leads its own process group; [`Child::kill_tree`] signals the whole group. Dropping
/// a child that was not reaped kills its group and reaps it, so no process is left behind.
pub struct Child {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    /// Write end of the child's stdin, until taken.
    pub stdin: Option<OwnedFd>,
    /// Read end of the child's stdout, until taken.
    pub stdout: Option<OwnedFd>,
    /// Read end of the child's stderr, until taken.
    pub stderr: Option<OwnedFd>,
    reaped: bool,
}

impl Child {
    /// Resolves once the child has exited (it stays a zombie until reaped).
    pub async fn exited(&self) -> io::Result<()> {
        self.pidfd.readable().await.map(drop)
    }

    /// Sends SIGKILL to every process of the child's process group, the child included.
    ///
    /// Safe to call after the child exited but before it is reaped: the zombie keeps the group
    /// id from being reused.
    pub fn kill_tree(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: plain signal syscalls on ids we own; errors (ESRCH: nothing left) are fine.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }

    /// Reaps the child if it has exited, returning how it ended and what it used.
    pub fn try_reap(&mut self) -> io::Result<Option<(ExitStatus, Usage)>> {
        self.wait4(libc::WNOHANG)
    }

    fn reap_blocking(&mut self) {
        let _ = self.wait4(0);
    }

    fn wait4(&mut self, flags: c_int) -> io::Result<Option<(ExitStatus, Usage)>> {
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
        let exit = if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(Some((
            exit,
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
pub fn landlock_abi() -> Option<libc::c_long> {
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
    (version > 0).then_some(version)
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
