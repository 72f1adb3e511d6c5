//! `toolgate-probe`: a test-only "malicious" program, not part of the product.
//!
//! The escape tests run it once inside the toolgate sandbox (where every attempt should fail) and
//! once directly (the control, where it should succeed). Each subcommand makes exactly ONE attempt
//! (read a file, call a syscall, fork a grandchild...) and reports the result on stdout:
//!
//! - success: `ok` or `ok DETAIL` on one line, exit status 0;
//! - failure: `errno=N NAME` (e.g. `errno=13 EACCES`) on one line, exit status 10;
//! - bad usage: a message on stderr, exit status 2.
//!
//! A few subcommands (`env`, `spew`, `echo-stdin`, `fork-grandchild`, `daemonize`, `fork-bomb`,
//! `fill`, `exit`, `signal`) print differently; their lines in [`USAGE`] say how. The probe never
//! runs a shell or any other program (except `setuid-exec`, whose whole point is one execv).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::process;
use std::str::FromStr;
use std::time::Duration;

/// The usage message: every subcommand, and what it prints on success.
const USAGE: &str = "\
usage: toolgate-probe SUBCOMMAND [ARGS]
  read PATH               open and read the whole file; ok <bytes read>
  write PATH              create/truncate PATH and write \"probe\\n\"
  rename FROM TO          rename(2)
  unlink PATH             unlink(2)
  truncate PATH           truncate(2) to 0 bytes
  symlink TARGET LINK     symlink(2)
  hardlink TARGET LINK    link(2)
  mkdir PATH              mkdir(2)
  ls DIR                  list a directory; ok <entries>
  fds                     open fds from /proc/self/fd; ok 0,1,2
  env                     ok, then one NAME=VALUE line per environment variable
  ptrace-traceme          ptrace(PTRACE_TRACEME)
  ptrace-attach PID       ptrace(PTRACE_ATTACH), then detach
  process-vm-readv PID    read 1 byte of PID's first mapping; ok <bytes>
  kill PID SIG            kill(2) with a numeric signal (0 allowed)
  keyctl                  keyctl(KEYCTL_GET_KEYRING_ID, session, create); ok <serial>
  unshare-user            unshare(CLONE_NEWUSER)
  unshare-net             unshare(CLONE_NEWNET)
  unshare-mount           unshare(CLONE_NEWNS)
  setns PATH              open a namespace file (e.g. /proc/1/ns/net) and setns(2) into it
  mount-tmpfs DIR         mount a tmpfs on DIR, then unmount it
  chroot DIR              chroot(2)
  bpf                     bpf(BPF_PROG_LOAD) of a trivial socket filter
  perf-event-open         perf_event_open(2) of a software cpu-clock counter on self
  userfaultfd             userfaultfd(O_CLOEXEC)
  io-uring-setup          io_uring_setup(4, zeroed params)
  personality             personality(0xffffffff) query, a harmless control; ok <persona>
  tiocsti                 ioctl(0, TIOCSTI, 'x'): push a byte into the terminal's input
  x32-getpid              x32 getpid via a raw syscall instruction; ok <pid>
  int80-getpid            i386 getpid via int 0x80; ok <pid>
  tcp-connect HOST:PORT   TCP connect, 2 s timeout
  tcp-bind HOST:PORT      TCP bind and listen; ok <local address>
  udp-send HOST:PORT      send one UDP datagram; ok <bytes sent>
  socket-inet             socket(AF_INET, SOCK_STREAM, 0)
  setuid0                 setuid(0) via a raw syscall
  caps                    ok CapEff=... CapPrm=... CapBnd=... from /proc/self/status
  spew BYTES [stderr]     write BYTES 'x' to stdout (or stderr); no ok line
  echo-stdin              copy stdin to stdout until EOF; no ok line
  sleep SECS              sleep (fractions allowed), then ok
  fork-grandchild         print child=<pid> and grandchild=<pid>, both sleep 1000 s
  daemonize               double fork + setsid; the daemon prints daemon=<pid>, sleeps 1000 s
  fork-bomb N             fork N sleeping children, kill them; ok <N> or forked=<k> + errno
  alloc MIB               allocate MIB MiB and touch every page; ok <MIB>
  fill PATH MIB           write MIB MiB of zeros to PATH; on failure written=<k> + errno
  exit CODE               exit with CODE, no output
  overlap DIR SECS        mark itself running in DIR for SECS; ok <most marks seen at once>
  signal SIG              raise SIG on self; ok if the process survives
  setuid-exec PATH        execv(PATH, [PATH])
";

/// Exit status of a failed attempt.
const EXIT_FAILED: i32 = 10;
/// Exit status of bad usage.
const EXIT_USAGE: i32 = 2;

/// A failed attempt: the errno it failed with.
#[derive(Debug, Clone, Copy)]
struct Errno(i32);

impl Errno {
    /// The calling thread's current errno.
    fn last() -> Self {
        Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    fn name(self) -> &'static str {
        match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::ENOTTY => "ENOTTY",
            libc::ETXTBSY => "ETXTBSY",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::EROFS => "EROFS",
            libc::EMLINK => "EMLINK",
            libc::EPIPE => "EPIPE",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ELOOP => "ELOOP",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EAFNOSUPPORT => "EAFNOSUPPORT",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::ENETUNREACH => "ENETUNREACH",
            libc::ECONNRESET => "ECONNRESET",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::EHOSTUNREACH => "EHOSTUNREACH",
            libc::EDQUOT => "EDQUOT",
            _ => "E?",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno={} {}", self.0, self.name())
    }
}

impl From<io::Error> for Errno {
    /// The OS error behind `err`; std's own errors (timeouts, failed name lookups) get the
    /// closest errno, and their message goes to stderr.
    fn from(err: io::Error) -> Self {
        if let Some(n) = err.raw_os_error() {
            return Errno(n);
        }
        eprintln!("toolgate-probe: {err}");
        Errno(match err.kind() {
            io::ErrorKind::TimedOut => libc::ETIMEDOUT,
            io::ErrorKind::NotFound => libc::ENOENT,
            io::ErrorKind::PermissionDenied => libc::EACCES,
            io::ErrorKind::OutOfMemory => libc::ENOMEM,
            io::ErrorKind::InvalidInput => libc::EINVAL,
            _ => libc::EIO,
        })
    }
}

/// What a successful attempt reports.
enum Report {
    /// Print `ok`, or `ok DETAIL` when the detail is not empty.
    Ok(String),
    /// The attempt already wrote all its output.
    Done,
}

type Attempt = Result<Report, Errno>;

fn ok() -> Attempt {
    Ok(Report::Ok(String::new()))
}

fn ok_with(detail: impl fmt::Display) -> Attempt {
    Ok(Report::Ok(detail.to_string()))
}

/// `Ok(ret)` for a non-negative libc return value, the current errno otherwise.
fn cvt<T: Copy + PartialOrd + Default>(ret: T) -> Result<T, Errno> {
    if ret < T::default() {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Reports an attempt made with std.
fn io(result: io::Result<()>) -> Attempt {
    result?;
    ok()
}

/// `path` as a C string; an embedded NUL is EINVAL, as the kernel would say.
fn cpath(path: &OsStr) -> Result<CString, Errno> {
    CString::new(path.as_bytes()).map_err(|_| Errno(libc::EINVAL))
}

/// Closes an fd that an attempt obtained.
fn close(fd: libc::c_long) {
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: `fd` was just returned to us by the kernel and nothing else owns it.
        unsafe { libc::close(fd) };
    }
}

/// Writes one line on stdout and flushes it.
fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Writes `NAME=N\n` on stdout with a single write(2): no lock, no allocation, so safe in a
/// child right after fork.
fn say_raw(name: &str, n: i32) {
    let mut buf = [0u8; 64];
    let mut cursor = io::Cursor::new(&mut buf[..]);
    if writeln!(cursor, "{name}={n}").is_ok() {
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        // SAFETY: the first `len` bytes of `buf` are initialized and stay alive during the call.
        unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), len) };
    }
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and short writes.
fn write_all_fd(fd: libc::c_int, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live, initialized slice of the given length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match cvt(n) {
            Ok(n) => bytes = &bytes[n.unsigned_abs()..],
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the current (forked) process at once, without running any Rust or libc exit code.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) only terminates the calling process.
    unsafe { libc::_exit(code) }
}

/// Sleeps for `secs` seconds, then ends the current (forked) process.
fn sleep_then_exit(secs: u32) -> ! {
    // SAFETY: sleep(3) has no memory-safety preconditions.
    unsafe { libc::sleep(secs) };
    exit_now(0)
}

fn getpid() -> i32 {
    // SAFETY: getpid(2) has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// Which side of a fork we are on.
enum Forked {
    Child,
    Parent(libc::pid_t),
}

fn fork() -> Result<Forked, Errno> {
    // Nothing may sit in stdout's buffer, or both processes would print it.
    let _ = io::stdout().flush();
    // SAFETY: the probe is single-threaded, so the child starts with consistent state; children
    // only make raw syscalls and leave through _exit.
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Waits for `pid` to end and returns its wait status.
fn wait(pid: libc::pid_t) -> Result<libc::c_int, Errno> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for the kernel to write the status to.
        match cvt(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Ok(_) => return Ok(status),
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files

fn read(path: &OsStr) -> Attempt {
    ok_with(fs::read(path)?.len())
}

fn truncate(path: &OsStr) -> Attempt {
    let path = cpath(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::truncate(path.as_ptr(), 0) })?;
    ok()
}

fn ls(dir: &OsStr) -> Attempt {
    let mut count = 0usize;
    for entry in fs::read_dir(dir)? {
        entry?;
        count += 1;
    }
    ok_with(count)
}

fn fds() -> Attempt {
    // A raw directory stream, so that its own fd is known and can be left out.
    // SAFETY: the path is a NUL-terminated literal.
    let dir = unsafe { libc::opendir(c"/proc/self/fd".as_ptr()) };
    if dir.is_null() {
        return Err(Errno::last());
    }
    // SAFETY: `dir` is an open directory stream.
    let own = unsafe { libc::dirfd(dir) };
    let mut fds = Vec::new();
    loop {
        // SAFETY: `dir` is an open directory stream.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: `entry` is non-null and valid until the next readdir; d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok())
            && fd != own
        {
            fds.push(fd);
        }
    }
    // SAFETY: `dir` is open and not used after this.
    unsafe { libc::closedir(dir) };
    fds.sort_unstable();
    let list: Vec<String> = fds.iter().map(i32::to_string).collect();
    ok_with(list.join(","))
}

fn env() -> Attempt {
    let mut text = b"ok\n".to_vec();
    for (name, value) in std::env::vars_os() {
        text.extend_from_slice(name.as_bytes());
        text.push(b'=');
        text.extend_from_slice(value.as_bytes());
        text.push(b'\n');
    }
    let mut out = io::stdout().lock();
    out.write_all(&text)?;
    out.flush()?;
    Ok(Report::Done)
}

fn fill(path: &OsStr, mib: u64) -> Attempt {
    // Past RLIMIT_FSIZE, get EFBIG (and report how far we got) rather than die of SIGXFSZ.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let result = File::create(path).and_then(|mut file| {
        while written < mib {
            file.write_all(&chunk)?;
            written += 1;
        }
        Ok(())
    });
    if let Err(err) = result {
        let _ = say(&format!("written={written}"));
        return Err(err.into());
    }
    ok_with(mib)
}

// ---------------------------------------------------------------------------------------------
// Other processes

fn ptrace_traceme() -> Attempt {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_TRACEME ignores its other arguments.
    cvt(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) })?;
    ok()
}

fn ptrace_attach(pid: libc::pid_t) -> Attempt {
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_ATTACH takes no pointers.
    cvt(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, null, null) })?;
    // The tracee must be stopped before it can be detached.
    let mut status = 0;
    // SAFETY: `status` is a valid place for the kernel to write the status to.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    // SAFETY: PTRACE_DETACH with a null signal argument delivers no signal.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) };
    ok()
}

fn process_vm_readv(pid: libc::pid_t) -> Attempt {
    let mut maps = String::new();
    File::open(format!("/proc/{pid}/maps"))?.read_to_string(&mut maps)?;
    let start = maps
        .split('-')
        .next()
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or(Errno(libc::EINVAL))?;
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: start as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: `local` points to one writable byte that outlives the call; `remote` describes
    // memory of the other process, which the kernel checks.
    let n = cvt(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) })?;
    ok_with(n)
}

fn kill(pid: libc::pid_t, sig: libc::c_int) -> Attempt {
    // SAFETY: kill(2) has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, sig) })?;
    ok()
}

// ---------------------------------------------------------------------------------------------
// Kernel attack surface

fn keyctl() -> Attempt {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: KEYCTL_GET_KEYRING_ID takes only integers.
    let serial = cvt(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            1 as libc::c_long,
        )
    })?;
    ok_with(serial)
}

fn unshare(flags: libc::c_int) -> Attempt {
    // SAFETY: unshare(2) takes only flags; the probe is single-threaded.
    cvt(unsafe { libc::unshare(flags) })?;
    ok()
}

fn setns(path: &OsStr) -> Attempt {
    let ns = File::open(path)?;
    // SAFETY: `ns` is an open fd for the duration of the call.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), 0) })?;
    ok()
}

fn mount_tmpfs(dir: &OsStr) -> Attempt {
    let dir = cpath(dir)?;
    // SAFETY: all strings are NUL-terminated and outlive the call; tmpfs accepts null data.
    cvt(unsafe {
        libc::mount(
            c"none".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    })?;
    // SAFETY: `dir` is NUL-terminated and outlives the call.
    unsafe { libc::umount(dir.as_ptr()) };
    ok()
}

fn chroot(dir: &OsStr) -> Attempt {
    let dir = cpath(dir)?;
    // SAFETY: `dir` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chroot(dir.as_ptr()) })?;
    ok()
}

/// The first fields of `union bpf_attr`, as used by BPF_PROG_LOAD.
#[repr(C)]
#[allow(dead_code)] // read by the kernel, not by Rust
struct BpfProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

fn bpf() -> Attempt {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K) and `exit` (BPF_JMP | BPF_EXIT), as struct bpf_insn.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let attr = BpfProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: `attr` and the instructions and license it points to outlive the call.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            size_of::<BpfProgLoad>() as libc::c_long,
        )
    })?;
    close(fd);
    ok()
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER0 (64 bytes).
#[repr(C)]
#[allow(dead_code)] // read by the kernel, not by Rust
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

fn perf_event_open() -> Attempt {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
    const DISABLED: u64 = 1 << 0;
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: DISABLED | EXCLUDE_KERNEL | EXCLUDE_HV,
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: `attr` outlives the call; pid 0 / cpu -1 / no group / no flags.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            0 as libc::c_long,
            -1 as libc::c_long,
            -1 as libc::c_long,
            0 as libc::c_long,
        )
    })?;
    close(fd);
    ok()
}

fn userfaultfd() -> Attempt {
    // SAFETY: userfaultfd(2) takes only flags.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC as libc::c_long) })?;
    close(fd);
    ok()
}

fn io_uring_setup() -> Attempt {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u32; 30];
    // SAFETY: `params` is writable, 120 bytes long, and outlives the call.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4 as libc::c_long,
            params.as_mut_ptr(),
        )
    })?;
    close(fd);
    ok()
}

fn personality() -> Attempt {
    // SAFETY: 0xffffffff only queries the current persona.
    let persona = cvt(unsafe { libc::personality(0xffff_ffff) })?;
    ok_with(format!("{persona:#x}"))
}

fn tiocsti() -> Attempt {
    let byte = b'x';
    // SAFETY: TIOCSTI reads one byte from the pointer, which outlives the call.
    cvt(unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCSTI, &raw const byte) })?;
    ok()
}

/// Turns a raw syscall return value into a pid or an errno.
#[cfg(target_arch = "x86_64")]
fn raw_result(ret: i64) -> Attempt {
    if (-4095..0).contains(&ret) {
        Err(Errno(i32::try_from(-ret).unwrap_or(libc::EIO)))
    } else {
        ok_with(ret)
    }
}

#[cfg(target_arch = "x86_64")]
fn x32_getpid() -> Attempt {
    const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    const NR_GETPID: i64 = 39;
    let ret: i64;
    // SAFETY: getpid takes no arguments and touches no memory; `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") NR_GETPID | X32_SYSCALL_BIT => ret,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    raw_result(ret)
}

#[cfg(target_arch = "x86_64")]
fn int80_getpid() -> Attempt {
    const NR_I386_GETPID: i32 = 20;
    let ret: i32;
    // SAFETY: getpid takes no arguments and touches no memory; older kernels zero r8-r11 on the
    // way back from `int 0x80`, so they are declared clobbered.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("eax") NR_I386_GETPID => ret,
            lateout("r8") _,
            lateout("r9") _,
            lateout("r10") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    raw_result(ret.into())
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_getpid() -> Attempt {
    eprintln!("toolgate-probe: x32-getpid exists only on x86_64");
    Err(Errno(libc::ENOSYS))
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_getpid() -> Attempt {
    eprintln!("toolgate-probe: int80-getpid exists only on x86_64");
    Err(Errno(libc::ENOSYS))
}

// ---------------------------------------------------------------------------------------------
// Network

/// A literal address, or else the first result of a name lookup.
fn resolve(host_port: &str) -> Result<SocketAddr, Errno> {
    if let Ok(addr) = host_port.parse() {
        return Ok(addr);
    }
    host_port
        .to_socket_addrs()?
        .next()
        .ok_or(Errno(libc::EADDRNOTAVAIL))
}

fn tcp_connect(host_port: &str) -> Attempt {
    let addr = resolve(host_port)?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    ok()
}

fn tcp_bind(host_port: &str) -> Attempt {
    let listener = TcpListener::bind(resolve(host_port)?)?;
    ok_with(listener.local_addr()?)
}

fn udp_send(host_port: &str) -> Attempt {
    let addr = resolve(host_port)?;
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local)?;
    ok_with(socket.send_to(b"probe\n", addr)?)
}

fn socket_inet() -> Attempt {
    // SAFETY: socket(2) takes only integers.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })?;
    close(fd.into());
    ok()
}

// ---------------------------------------------------------------------------------------------
// Privileges

fn setuid0() -> Attempt {
    // SAFETY: setuid(2) takes only an integer; raw, so glibc does not broadcast it to threads.
    cvt(unsafe { libc::syscall(libc::SYS_setuid, 0 as libc::c_long) })?;
    ok()
}

fn caps() -> Attempt {
    let status = fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map_or("?", str::trim)
    };
    ok_with(format!(
        "CapEff={} CapPrm={} CapBnd={}",
        field("CapEff"),
        field("CapPrm"),
        field("CapBnd")
    ))
}

fn setuid_exec(path: &OsStr) -> Attempt {
    let path = cpath(path)?;
    let argv = [path.as_ptr(), std::ptr::null()];
    let _ = io::stdout().flush();
    // SAFETY: `path` and the null-terminated `argv` outlive the call; it returns only on error.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    Err(Errno::last())
}

// ---------------------------------------------------------------------------------------------
// Resources and process lifetime

fn spew(bytes: u64, fd: libc::c_int) -> Attempt {
    const CHUNK: usize = 64 << 10;
    let chunk = vec![b'x'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        write_all_fd(fd, &chunk[..n])?;
        left -= n as u64;
    }
    Ok(Report::Done)
}

fn echo_stdin() -> Attempt {
    let mut out = io::stdout().lock();
    io::copy(&mut io::stdin().lock(), &mut out)?;
    out.flush()?;
    Ok(Report::Done)
}

fn sleep(duration: Duration) -> Attempt {
    std::thread::sleep(duration);
    ok()
}

/// Measures concurrency from the inside: creates DIR/<pid> while it runs and counts the marks
/// present at its start and its end. Marks are only ever present while their runs are alive,
/// so the count never overstates how many ran at once.
fn overlap(dir: &OsStr, duration: Duration) -> Attempt {
    let dir = std::path::Path::new(dir);
    // Pids repeat across sandboxes (each has its own pid namespace): add the time.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mark = dir.join(format!("{}-{nanos}", getpid()));
    io(fs::write(&mark, ""))?;
    let count = || fs::read_dir(dir).map(|entries| entries.count());
    let first = count();
    std::thread::sleep(duration);
    let last = count();
    let _ = fs::remove_file(&mark);
    match (first, last) {
        (Ok(a), Ok(b)) => Ok(Report::Ok(a.max(b).to_string())),
        (Err(e), _) | (_, Err(e)) => io(Err(e)),
    }
}

fn fork_grandchild() -> Attempt {
    match fork()? {
        Forked::Child => {
            say_raw("grandchild", getpid());
            sleep_then_exit(1000)
        }
        Forked::Parent(_) => {
            say_raw("child", getpid());
            // SAFETY: sleep(3) has no memory-safety preconditions.
            unsafe { libc::sleep(1000) };
            Ok(Report::Done)
        }
    }
}

fn daemonize() -> Attempt {
    match fork()? {
        // The intermediate child: new session, fork the daemon, leave. Its exit status is 0 or
        // the errno that stopped it.
        Forked::Child => {
            // SAFETY: setsid(2) has no memory-safety preconditions.
            if let Err(Errno(e)) = cvt(unsafe { libc::setsid() }) {
                exit_now(e);
            }
            match fork() {
                Ok(Forked::Child) => {
                    say_raw("daemon", getpid());
                    sleep_then_exit(1000)
                }
                Ok(Forked::Parent(_)) => exit_now(0),
                Err(Errno(e)) => exit_now(e),
            }
        }
        Forked::Parent(pid) => {
            let status = wait(pid)?;
            if !libc::WIFEXITED(status) {
                eprintln!("toolgate-probe: intermediate child died, wait status {status:#x}");
                return Err(Errno(libc::ECHILD));
            }
            match libc::WEXITSTATUS(status) {
                0 => ok(),
                e => Err(Errno(e)),
            }
        }
    }
}

fn fork_bomb(n: u32) -> Attempt {
    let mut children = Vec::new();
    let mut failure = None;
    while children.len() < n as usize {
        match fork() {
            Ok(Forked::Child) => {
                // SAFETY: PR_SET_PDEATHSIG takes only integers; it ends this child if the probe
                // is killed before it can kill the child itself.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                sleep_then_exit(30)
            }
            Ok(Forked::Parent(pid)) => children.push(pid),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for &pid in &children {
        // SAFETY: `pid` is our own unreaped child, so it names no other process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        let _ = wait(pid);
    }
    match failure {
        None => ok_with(children.len()),
        Some(e) => {
            let _ = say(&format!("forked={}", children.len()));
            Err(e)
        }
    }
}

fn alloc(mib: usize) -> Attempt {
    const PAGE: usize = 4096;
    let size = mib.checked_mul(1 << 20).ok_or(Errno(libc::ENOMEM))?;
    if size == 0 {
        return ok_with(0);
    }
    let layout =
        std::alloc::Layout::from_size_align(size, PAGE).map_err(|_| Errno(libc::ENOMEM))?;
    // SAFETY: the layout has a non-zero size.
    let memory = unsafe { std::alloc::alloc(layout) };
    if memory.is_null() {
        return Err(Errno(libc::ENOMEM));
    }
    for offset in (0..size).step_by(PAGE) {
        // SAFETY: `offset < size`, so the byte is inside the allocation.
        unsafe { memory.add(offset).write_volatile(1) };
    }
    // SAFETY: `memory` was allocated above with this layout and is not used afterwards.
    unsafe { std::alloc::dealloc(memory, layout) };
    ok_with(mib)
}

fn exit(code: i32) -> Attempt {
    let _ = io::stdout().flush();
    process::exit(code)
}

fn signal(sig: libc::c_int) -> Attempt {
    // SAFETY: raise(3) has no memory-safety preconditions.
    cvt(unsafe { libc::raise(sig) })?;
    ok()
}

// ---------------------------------------------------------------------------------------------
// Command line

fn usage(problem: &str) -> ! {
    eprint!("toolgate-probe: {problem}\n{USAGE}");
    process::exit(EXIT_USAGE)
}

/// Whether `cmd` is a subcommand listed in [`USAGE`].
fn known(cmd: &str) -> bool {
    USAGE
        .lines()
        .any(|line| line.split_whitespace().next() == Some(cmd))
}

/// A UTF-8 argument, or a usage error.
fn text(arg: &OsStr) -> &str {
    arg.to_str()
        .unwrap_or_else(|| usage(&format!("not UTF-8: {}", arg.display())))
}

/// A numeric argument, or a usage error.
fn num<T: FromStr>(arg: &OsStr) -> T {
    text(arg)
        .parse()
        .unwrap_or_else(|_| usage(&format!("not a valid number here: {}", arg.display())))
}

/// A duration in (possibly fractional) seconds, or a usage error.
fn seconds(arg: &OsStr) -> Duration {
    Duration::try_from_secs_f64(num(arg))
        .unwrap_or_else(|_| usage(&format!("not a duration: {}", arg.display())))
}

fn run(cmd: &str, args: &[OsString]) -> Attempt {
    let (stdout, stderr) = (libc::STDOUT_FILENO, libc::STDERR_FILENO);
    match (cmd, args) {
        ("read", [path]) => read(path),
        ("write", [path]) => io(fs::write(path, "probe\n")),
        ("rename", [from, to]) => io(fs::rename(from, to)),
        ("unlink", [path]) => io(fs::remove_file(path)),
        ("truncate", [path]) => truncate(path),
        ("symlink", [target, link]) => io(std::os::unix::fs::symlink(target, link)),
        ("hardlink", [target, link]) => io(fs::hard_link(target, link)),
        ("mkdir", [path]) => io(fs::create_dir(path)),
        ("ls", [dir]) => ls(dir),
        ("fds", []) => fds(),
        ("env", []) => env(),
        ("ptrace-traceme", []) => ptrace_traceme(),
        ("ptrace-attach", [pid]) => ptrace_attach(num(pid)),
        ("process-vm-readv", [pid]) => process_vm_readv(num(pid)),
        ("kill", [pid, sig]) => kill(num(pid), num(sig)),
        ("keyctl", []) => keyctl(),
        ("unshare-user", []) => unshare(libc::CLONE_NEWUSER),
        ("unshare-net", []) => unshare(libc::CLONE_NEWNET),
        ("unshare-mount", []) => unshare(libc::CLONE_NEWNS),
        ("setns", [path]) => setns(path),
        ("mount-tmpfs", [dir]) => mount_tmpfs(dir),
        ("chroot", [dir]) => chroot(dir),
        ("bpf", []) => bpf(),
        ("perf-event-open", []) => perf_event_open(),
        ("userfaultfd", []) => userfaultfd(),
        ("io-uring-setup", []) => io_uring_setup(),
        ("personality", []) => personality(),
        ("tiocsti", []) => tiocsti(),
        ("x32-getpid", []) => x32_getpid(),
        ("int80-getpid", []) => int80_getpid(),
        ("tcp-connect", [addr]) => tcp_connect(text(addr)),
        ("tcp-bind", [addr]) => tcp_bind(text(addr)),
        ("udp-send", [addr]) => udp_send(text(addr)),
        ("socket-inet", []) => socket_inet(),
        ("setuid0", []) => setuid0(),
        ("caps", []) => caps(),
        ("spew", [bytes]) => spew(num(bytes), stdout),
        ("spew", [bytes, to]) if to == "stderr" => spew(num(bytes), stderr),
        ("echo-stdin", []) => echo_stdin(),
        ("sleep", [secs]) => sleep(seconds(secs)),
        // An optional extra word only marks the command line, so a test can find the
        // processes from the host by it.
        ("fork-grandchild", [] | [_]) => fork_grandchild(),
        ("daemonize", [] | [_]) => daemonize(),
        ("fork-bomb", [n]) => fork_bomb(num(n)),
        ("alloc", [mib]) => alloc(num(mib)),
        ("fill", [path, mib]) => fill(path, num(mib)),
        ("exit", [code]) => exit(num(code)),
        ("overlap", [dir, secs]) => overlap(dir, seconds(secs)),
        ("signal", [sig]) => signal(num(sig)),
        ("setuid-exec", [path]) => setuid_exec(path),
        _ if known(cmd) => usage(&format!("wrong arguments for {cmd}")),
        _ => usage(&format!("unknown subcommand: {cmd}")),
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(cmd) = args.get(1) else {
        usage("missing subcommand")
    };
    match run(text(cmd), &args[2..]) {
        Ok(Report::Ok(detail)) => {
            let line = if detail.is_empty() {
                "ok".to_owned()
            } else {
                format!("ok {detail}")
            };
            let _ = say(&line);
            process::exit(0)
        }
        Ok(Report::Done) => process::exit(0),
        Err(errno) => {
            // If stdout itself is what broke (e.g. EPIPE in `spew`), tell stderr instead.
            if say(&errno.to_string()).is_err() {
                eprintln!("{errno}");
            }
            process::exit(EXIT_FAILED)
        }
    }
}
