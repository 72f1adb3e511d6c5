//! The escape suite: attacks on the sandbox. Each attempt fails inside and, as the control,
//! succeeds outside (run directly by the test, as the test's user), so no assertion here can pass
//! because the attempt was impossible anyway.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// A tool with tight limits, for the bombs.
const BOMB_TOOL: &str = r#"
[tool.bomb]
description = "the probe under tight limits"
program = "${probe}"
cwd = "${work}"
timeout = "20s"
[tool.bomb.sandbox]
write = ["${work}"]
[tool.bomb.sandbox.limits]
memory = "128MiB"
processes = 32
file_size = "8MiB"
tmp_size = "4MiB"
"#;

fn daemon() -> Daemon {
    Daemon::start(&format!("{PROBE_TOOL}{BOMB_TOOL}"))
}

/// Runs a tool through the daemon; returns (exit code, or minus the signal, and stdout).
async fn run(daemon: &Daemon, tool: &str, args: &[&str], id: &str) -> (i32, String) {
    let mut client = daemon.client().await;
    let result = client
        .execute(args_request(tool, args, id))
        .await
        .unwrap_or_else(|s| panic!("{tool} {args:?} refused: {s}"))
        .into_inner();
    let code = match result.termination {
        Some(pb::execute_result::Termination::ExitCode(code)) => code,
        Some(pb::execute_result::Termination::Signal(signal)) => -signal,
        None => panic!("no termination"),
    };
    (code, text(&result.stdout))
}

async fn probe_inside(daemon: &Daemon, args: &[&str], id: &str) -> (i32, String) {
    run(daemon, "probe", args, id).await
}

fn id_for(args: &[&str]) -> String {
    let mut id: String = format!("escape-{}", args.join("-"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    id.truncate(120);
    id
}

/// The attempt fails inside with one of `errnos`.
async fn denied_inside(daemon: &Daemon, args: &[&str], errnos: &[&str]) {
    let id = id_for(args);
    let (code, stdout) = probe_inside(daemon, args, &id).await;
    assert_eq!(
        code, 10,
        "{args:?} inside: expected a failed attempt, got {code}: {stdout}"
    );
    assert!(
        errnos.iter().any(|e| stdout.contains(e)),
        "{args:?} inside: expected {errnos:?}, got {stdout}"
    );
    assert_eq!(daemon.record(&id)["decision"], "allowed");
}

/// The same attempt succeeds outside the sandbox.
fn allowed_outside(args: &[&str]) {
    let outside = probe_outside(args);
    assert_eq!(
        outside.status.code(),
        Some(0),
        "control {args:?} outside should succeed: {}{}",
        text(&outside.stdout),
        text(&outside.stderr)
    );
}

async fn denied_inside_allowed_outside(daemon: &Daemon, args: &[&str], errnos: &[&str]) {
    denied_inside(daemon, args, errnos).await;
    allowed_outside(args);
}

fn as_words(attempt: &[String]) -> Vec<&str> {
    attempt.iter().map(String::as_str).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A process the test owns, outside any sandbox, killed when dropped.
struct Bystander(std::process::Child);

impl Bystander {
    fn start() -> Self {
        Self(
            Command::new("/bin/sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep"),
        )
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_outside_the_policy_cannot_be_read_or_changed() {
    let daemon = daemon();
    // /etc/shadow is not in the tool's view at all.
    denied_inside_allowed_outside(&daemon, &["read", "/etc/shadow"], &["ENOENT", "EACCES"]).await;

    let secret = daemon.outside.join("secret.txt");
    std::fs::write(&secret, "outside the policy\n").expect("write secret");
    denied_inside_allowed_outside(&daemon, &["read", path(&secret)], &["ENOENT", "EACCES"]).await;
    let written = daemon.outside.join("written.txt");
    denied_inside_allowed_outside(
        &daemon,
        &["write", path(&written)],
        &["ENOENT", "EACCES", "EROFS"],
    )
    .await;

    // Granted read-only: readable, but no write, rename, truncate or delete.
    for name in ["a", "b", "c", "d"] {
        std::fs::write(daemon.ro.join(name), "read-only\n").expect("write");
    }
    let (code, stdout) =
        probe_inside(&daemon, &["read", path(&daemon.ro.join("a"))], "ro-read").await;
    assert_eq!(
        (code, stdout.trim()),
        (0, "ok 10"),
        "read-only paths are readable"
    );
    let ro = |name: &str| daemon.ro.join(name);
    for attempt in [
        vec!["write", path(&ro("a"))],
        vec!["truncate", path(&ro("b"))],
        vec!["unlink", path(&ro("c"))],
        vec!["rename", path(&ro("d")), path(&ro("e"))],
        vec!["mkdir", path(&ro("f"))],
    ] {
        denied_inside(&daemon, &attempt, &["EROFS", "EACCES", "EPERM"]).await;
    }
    assert_eq!(std::fs::read_to_string(ro("a")).expect("a"), "read-only\n");
    assert_eq!(std::fs::read_to_string(ro("b")).expect("b"), "read-only\n");
    assert!(ro("c").exists() && ro("d").exists() && !ro("e").exists() && !ro("f").exists());
    // Controls: the same changes work outside (the test is root or owns the files).
    allowed_outside(&["write", path(&ro("a"))]);
    allowed_outside(&["truncate", path(&ro("b"))]);
    allowed_outside(&["unlink", path(&ro("c"))]);
    allowed_outside(&["rename", path(&ro("d")), path(&ro("e"))]);
    allowed_outside(&["mkdir", path(&ro("f"))]);

    // The workspace itself is writable: the policy's grants work, not just its denials.
    let (code, _) = probe_inside(&daemon, &["write", "inside.txt"], "work-write").await;
    assert_eq!(code, 0);
    let (code, stdout) = probe_inside(&daemon, &["read", "inside.txt"], "work-read").await;
    assert_eq!((code, stdout.trim()), (0, "ok 6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn links_do_not_lead_out_of_the_view() {
    let daemon = daemon();
    let secret = daemon.outside.join("secret.txt");
    std::fs::write(&secret, "outside the policy\n").expect("write secret");
    let link = daemon.work.join("link");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    denied_inside(&daemon, &["read", "link"], &["ENOENT", "EACCES"]).await;
    allowed_outside(&["read", path(&link)]);

    // A hard link from the workspace to a read-only file would make it writable: refused
    // across the mounts of the view.
    std::fs::write(daemon.ro.join("file"), "read-only\n").expect("write");
    let target = daemon.ro.join("file");
    denied_inside(
        &daemon,
        &["hardlink", path(&target), "hl"],
        &["EXDEV", "EACCES", "EPERM"],
    )
    .await;
    allowed_outside(&[
        "hardlink",
        path(&target),
        path(&daemon.work.join("hl-outside")),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_processes_cannot_be_seen_traced_or_signalled() {
    let daemon = daemon();
    let bystander = Bystander::start();
    let pid = bystander.pid();
    // The daemon's environment (where its secrets would be) is out of reach: the tool's pid 1
    // is its init, a copy of the daemon, hidden from the tool's user.
    denied_inside(
        &daemon,
        &["read", "/proc/1/environ"],
        &["ENOENT", "EACCES", "EPERM"],
    )
    .await;
    allowed_outside(&["read", &format!("/proc/{}/environ", daemon.pid())]);

    denied_inside(&daemon, &["ptrace-attach", "1"], &["EPERM", "ESRCH"]).await;
    denied_inside(
        &daemon,
        &["process-vm-readv", "1"],
        &["EPERM", "ESRCH", "ENOENT"],
    )
    .await;
    denied_inside(&daemon, &["kill", &pid, "0"], &["ESRCH", "EPERM"]).await;
    allowed_outside(&["ptrace-attach", &pid]);
    allowed_outside(&["process-vm-readv", &pid]);
    allowed_outside(&["kill", &pid, "0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_interfaces_that_widen_or_escape_are_denied() {
    let daemon = daemon();
    let dir = tempfile::tempdir().expect("tmp");
    let dir = path(dir.path()).to_owned();
    // Each attempt, with the directory it works on: the sandbox's /tmp inside, a fresh
    // temporary directory of the host outside.
    let attempts = |dir: &str| -> Vec<Vec<String>> {
        [
            &["mount-tmpfs", dir][..],
            &["chroot", dir],
            &["unshare-user"],
            &["unshare-net"],
            &["unshare-mount"],
            &["setns", "/proc/self/ns/net"],
            &["bpf"],
            &["keyctl"],
            &["perf-event-open"],
            &["userfaultfd"],
            &["io-uring-setup"],
            &["ptrace-traceme"],
        ]
        .iter()
        .map(|a| a.iter().map(|s| s.to_string()).collect())
        .collect()
    };
    for attempt in attempts("/tmp") {
        denied_inside(&daemon, &as_words(&attempt), &["EPERM"]).await;
    }
    // Controls, outside, as the test's (root) user.
    for attempt in attempts(&dir) {
        allowed_outside(&as_words(&attempt));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_into_the_terminal_is_denied() {
    let daemon = daemon();
    denied_inside(&daemon, &["tiocsti"], &["EPERM"]).await;
    // Control: outside, on a terminal of its own, TIOCSTI works.
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors; the name and settings pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    let (master, slave) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    use std::os::fd::FromRawFd;
    let output = Command::new(PROBE)
        .arg("tiocsti")
        .stdin(Stdio::from(slave))
        .output()
        .expect("probe on a pty");
    assert_eq!(
        output.status.code(),
        Some(0),
        "control: {}",
        text(&output.stdout)
    );
    drop(master);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_syscall_abis_are_closed() {
    let daemon = daemon();
    let (code, _) = probe_inside(&daemon, &["int80-getpid"], "escape-int80").await;
    assert_eq!(
        code,
        -libc::SIGSYS,
        "i386 int 0x80 must be killed by the architecture check"
    );
    allowed_outside(&["int80-getpid"]);
    // x32: the filter answers EPERM. Outside, this kernel has no x32 ABI and answers ENOSYS:
    // the different errno is the control, proving the filter (not the kernel) refused.
    denied_inside(&daemon, &["x32-getpid"], &["errno=1 EPERM"]).await;
    let outside = probe_outside(&["x32-getpid"]);
    let outside = text(&outside.stdout);
    assert!(
        outside.starts_with("ok") || outside.contains("ENOSYS"),
        "{outside}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_blocks_tcp_and_udp_even_to_loopback() {
    let daemon = daemon();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            drop(stream);
        }
    });
    denied_inside_allowed_outside(
        &daemon,
        &["tcp-connect", &addr],
        &["EACCES", "EPERM", "ECONNREFUSED"],
    )
    .await;
    denied_inside_allowed_outside(&daemon, &["tcp-bind", "127.0.0.1:0"], &["EACCES", "EPERM"])
        .await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_addr = udp.local_addr().expect("addr").to_string();
    denied_inside_allowed_outside(&daemon, &["udp-send", &udp_addr], &["EPERM"]).await;
    denied_inside_allowed_outside(&daemon, &["socket-inet"], &["EPERM"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn privileges_cannot_be_regained_as_root() {
    if !running_as_root("privileges_cannot_be_regained_as_root") {
        return;
    }
    let daemon = daemon();
    let (code, caps) = probe_inside(&daemon, &["caps"], "escape-caps").await;
    assert_eq!(code, 0);
    assert_eq!(
        caps.trim(),
        "ok CapEff=0000000000000000 CapPrm=0000000000000000 CapBnd=0000000000000000"
    );
    let outside = text(&probe_outside(&["caps"]).stdout);
    assert!(
        !outside.contains("CapEff=0000000000000000"),
        "control: {outside}"
    );
    denied_inside_allowed_outside(&daemon, &["setuid0"], &["EPERM"]).await;

    // A setuid-root binary runs without gaining root inside; outside, run by an unprivileged
    // user, the same binary does gain it.
    let suid = daemon.ro.join("suid-id");
    std::fs::copy("/usr/bin/id", &suid).expect("copy id");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    let (code, id) = probe_inside(&daemon, &["setuid-exec", path(&suid)], "escape-suid").await;
    assert_eq!(code, 0, "{id}");
    assert!(
        id.contains("uid=65534") && !id.contains("euid=0"),
        "inside: {id}"
    );
    let mut outside = Command::new(&suid);
    // SAFETY: setuid in the forked child before exec, only a raw syscall.
    unsafe {
        use std::os::unix::process::CommandExt;
        outside.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let outside = text(&outside.output().expect("setuid id outside").stdout);
    assert!(outside.contains("euid=0"), "control: {outside}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bombs_are_stopped_without_harming_the_daemon_as_root() {
    if !running_as_root("bombs_are_stopped_without_harming_the_daemon_as_root") {
        return;
    }
    let daemon = daemon();
    // Fork bomb: the cgroup's pids limit (32) stops it.
    let (code, out) = run(&daemon, "bomb", &["fork-bomb", "1000"], "bomb-fork").await;
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("EAGAIN"), "{out}");
    allowed_outside(&["fork-bomb", "200"]);

    // Memory bomb: 1 GiB against a 128 MiB limit.
    let (code, out) = run(&daemon, "bomb", &["alloc", "1024"], "bomb-memory").await;
    assert!(code == 10 || code == -libc::SIGKILL, "{code}: {out}");
    allowed_outside(&["alloc", "1024"]);

    // Disk bombs: the private /tmp is 4 MiB; files in the workspace at most 8 MiB.
    let (code, out) = run(&daemon, "bomb", &["fill", "/tmp/fill", "64"], "bomb-tmp").await;
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("ENOSPC"), "{out}");
    let (code, out) = run(&daemon, "bomb", &["fill", "fill", "64"], "bomb-disk").await;
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("EFBIG"), "{out}");
    let host_file = daemon.outside.join("fill");
    allowed_outside(&["fill", path(&host_file), "64"]);
    std::fs::remove_file(host_file).expect("clean up");

    // The daemon and other invocations are unharmed.
    let (code, out) = probe_inside(&daemon, &["exit", "0"], "after-bombs").await;
    assert_eq!((code, out.as_str()), (0, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_double_forked_setsid_daemon_is_not_left_behind() {
    let daemon = daemon();
    let tag = unique_tag("daemonize");
    let (code, out) = probe_inside(&daemon, &["daemonize", &tag], "escape-daemonize").await;
    assert_eq!(code, 0, "{out}");
    let survivors = wait_untagged(&tag, Duration::from_secs(5));
    assert!(
        survivors.is_empty(),
        "daemon {survivors:?} outlived its invocation"
    );
    // Control: outside, the daemonized process survives its parent's exit. (Its stdout goes
    // nowhere: it would hold a pipe open for as long as it lives.)
    let status = Command::new(PROBE)
        .args(["daemonize", &tag])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("probe outside");
    assert_eq!(status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    let left = tagged(&tag);
    assert_eq!(left.len(), 1, "control: the daemon survives outside");
    kill(left[0]);
}

/// Starts the daemon as `nobody` (the test is root): everything it owns moves to that user.
fn unprivileged_daemon() -> Daemon {
    Daemon::start_custom(PROBE_TOOL, "", |command| {
        let config = command
            .get_args()
            .nth(2)
            .map(PathBuf::from)
            .expect("--config PATH");
        let root = config.parent().expect("config dir").to_owned();
        chown_tree(&root, 65534, 65534);
        use std::os::unix::process::CommandExt;
        // SAFETY: only raw id-changing syscalls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_sandboxes_with_user_namespaces_as_root() {
    if !running_as_root("an_unprivileged_daemon_sandboxes_with_user_namespaces_as_root") {
        return;
    }
    let daemon = unprivileged_daemon();
    let daemon_uid = std::fs::metadata(format!("/proc/{}", daemon.pid()))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("daemon's /proc entry");
    assert_eq!(daemon_uid, 65534, "the daemon itself is unprivileged");
    let (code, caps) = probe_inside(&daemon, &["caps"], "rootless-caps").await;
    assert_eq!(code, 0);
    assert!(
        caps.contains("CapEff=0000000000000000 CapPrm=0000000000000000"),
        "{caps}"
    );
    // Each attempt fails inside and, as the control, works outside (the test is root).
    denied_inside_allowed_outside(&daemon, &["read", "/etc/shadow"], &["ENOENT"]).await;
    denied_inside_allowed_outside(&daemon, &["tcp-bind", "127.0.0.1:0"], &["EACCES", "EPERM"])
        .await;
    denied_inside_allowed_outside(&daemon, &["unshare-user"], &["EPERM"]).await;
    let (code, out) = probe_inside(&daemon, &["write", "made-by-rootless"], "rootless-write").await;
    assert_eq!(code, 0, "{out}");
    let owner = std::fs::metadata(daemon.work.join("made-by-rootless")).expect("file");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&owner), 65534);
    let tag = unique_tag("rootless");
    let (code, _) = probe_inside(&daemon, &["daemonize", &tag], "rootless-daemonize").await;
    assert_eq!(code, 0);
    assert!(wait_untagged(&tag, Duration::from_secs(5)).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn network_allow_reaches_the_host_network_on_the_listed_ports_only() {
    let listen = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2) {
                drop(stream);
            }
        });
        addr
    };
    let (allowed, other) = (listen(), listen());
    let policy = format!(
        r#"
[tool.net]
program = "${{probe}}"
cwd = "${{work}}"
[tool.net.sandbox]
network = "allow"
tcp_connect = [{}]
"#,
        allowed.port()
    );
    let daemon = Daemon::start(&policy);
    let (code, out) = run(
        &daemon,
        "net",
        &["tcp-connect", &allowed.to_string()],
        "net-allowed",
    )
    .await;
    assert_eq!(
        code, 0,
        "the listed port on the host's loopback is reachable: {out}"
    );
    let (code, out) = run(
        &daemon,
        "net",
        &["tcp-connect", &other.to_string()],
        "net-other",
    )
    .await;
    assert_eq!(code, 10, "{out}");
    assert!(
        out.contains("EACCES"),
        "an unlisted port is refused by landlock: {out}"
    );
    allowed_outside(&["tcp-connect", &other.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_the_kernel_cannot_give_is_refused_not_weakened() {
    let kernel_abi = toolgate::sandbox::landlock_abi().expect("landlock on the test machines");
    let policy = format!(
        r#"
[tool.future]
program = "${{probe}}"
cwd = "${{work}}"
[tool.future.sandbox]
min_landlock_abi = {}
"#,
        kernel_abi + 1
    );
    let daemon = Daemon::start(&format!("{policy}{PROBE_TOOL}"));
    let mut client = daemon.client().await;
    let status = client
        .execute(args_request(
            "future",
            &["exit", "0"],
            "needs-newer-landlock",
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("requires landlock ABI {}", kernel_abi + 1)),
        "{}",
        status.message()
    );
    assert_eq!(
        daemon.record("needs-newer-landlock")["rule"],
        "sandbox.unsupported"
    );
    // Control: the same tool without the requirement runs on this kernel.
    let (code, _) = probe_inside(&daemon, &["exit", "0"], "runs-on-this-landlock").await;
    assert_eq!(code, 0);
}
