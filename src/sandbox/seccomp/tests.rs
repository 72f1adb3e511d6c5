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
