//! Attacks on the sandbox: each attempt fails inside and, as the control, succeeds outside.

use super::*;

/// Runs the probe through the daemon and returns (exit code or -signal, stdout).
async fn probe_inside(daemon: &Daemon, args: &[&str], id: &str) -> (i32, String) {
    let mut client = daemon.client().await;
    let result = client
        .execute(args_request("probe", args, id))
        .await
        .unwrap_or_else(|s| panic!("probe {args:?} refused: {s}"))
        .into_inner();
    let code = match result.termination {
        Some(pb::execute_result::Termination::ExitCode(code)) => code,
        Some(pb::execute_result::Termination::Signal(signal)) => -signal,
        None => panic!("no termination"),
    };
    (code, text(&result.stdout))
}

/// Asserts the attempt is denied inside with one of `errnos` and succeeds outside.
async fn denied_inside_allowed_outside(daemon: &Daemon, args: &[&str], errnos: &[&str]) {
    let id = format!("escape-{}", args.join("-").replace(['/', '.', ':'], "_"));
    let (code, stdout) = probe_inside(daemon, args, &id).await;
    assert_eq!(
        code, 10,
        "{args:?} inside: expected a failed attempt, got {code}: {stdout}"
    );
    assert!(
        errnos.iter().any(|e| stdout.contains(e)),
        "{args:?} inside: expected {errnos:?}, got {stdout}"
    );
    let outside = probe_outside(args);
    assert_eq!(
        outside.status.code(),
        Some(0),
        "control {args:?} outside should succeed: {}{}",
        text(&outside.stdout),
        text(&outside.stderr)
    );
    assert_eq!(daemon.record(&id)["decision"], "allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn landlock_confines_reads_and_writes_to_the_policy_paths() {
    let daemon = Daemon::start(PROBE_TOOL);
    let secret = daemon.outside.join("secret.txt");
    std::fs::write(&secret, "outside the policy\n").expect("write secret");
    let secret = secret.to_str().expect("utf-8 path");
    // Outside the policy's paths a file does not even exist in the tool's view.
    denied_inside_allowed_outside(&daemon, &["read", secret], &["ENOENT", "EACCES"]).await;

    let target = daemon.outside.join("written.txt");
    let target = target.to_str().expect("utf-8 path");
    denied_inside_allowed_outside(&daemon, &["write", target], &["ENOENT", "EACCES", "EROFS"])
        .await;

    // A symlink inside the workspace pointing outside does not widen access.
    let link = daemon.work.join("link");
    std::os::unix::fs::symlink(secret, &link).expect("symlink");
    let (code, stdout) = probe_inside(&daemon, &["read", "link"], "escape-symlink").await;
    assert_eq!(code, 10, "{stdout}");
    assert!(
        stdout.contains("ENOENT") || stdout.contains("EACCES"),
        "{stdout}"
    );

    // Inside the workspace both work: the policy's paths are granted, not just everything denied.
    let (code, _) = probe_inside(&daemon, &["write", "inside.txt"], "landlock-work-write").await;
    assert_eq!(code, 0);
    let (code, stdout) = probe_inside(&daemon, &["read", "inside.txt"], "landlock-work-read").await;
    assert_eq!((code, stdout.trim()), (0, "ok 6"));
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_denies_dangerous_syscalls_with_eperm() {
    let daemon = Daemon::start(PROBE_TOOL);
    for attempt in [
        "ptrace-traceme",
        "keyctl",
        "unshare-user",
        "userfaultfd",
        "io-uring-setup",
    ] {
        denied_inside_allowed_outside(&daemon, &[attempt], &["errno=1 EPERM"]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_syscall_abi_kills_the_tool() {
    let daemon = Daemon::start(PROBE_TOOL);
    let (code, _) = probe_inside(&daemon, &["int80-getpid"], "escape-int80").await;
    assert_eq!(
        code,
        -libc::SIGSYS,
        "i386 int 0x80 must be killed by the architecture check"
    );
    let outside = probe_outside(&["int80-getpid"]);
    assert_eq!(
        outside.status.code(),
        Some(0),
        "control: int 0x80 works outside"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_blocks_tcp_and_udp_to_loopback() {
    let daemon = Daemon::start(PROBE_TOOL);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            drop(stream);
        }
    });
    denied_inside_allowed_outside(&daemon, &["tcp-connect", &addr], &["EACCES", "EPERM"]).await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let udp_addr = udp.local_addr().expect("addr").to_string();
    denied_inside_allowed_outside(&daemon, &["udp-send", &udp_addr], &["EPERM"]).await;
}
