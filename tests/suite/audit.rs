//! The audit log over the real daemon: start and end records, the chain and `audit verify`,
//! redaction, `kill -9` under load, and an unwritable log.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;

use super::*;

const ECHO_TOOL: &str = r#"
[tool.echo]
program = "/bin/echo"
timeout = "5s"
[tool.echo.arguments]
deny_flags = ["--deny"]
[tool.echo.audit]
redact = ['--password=(.*)']
"#;

#[tokio::test(flavor = "multi_thread")]
async fn allowed_calls_have_start_then_end_refusals_one_record_and_the_chain_verifies() {
    let daemon = Daemon::start(PROBE_TOOL);
    let mut client = daemon.client().await;
    client
        .execute(args_request("probe", &["exit", "0"], "chain-1"))
        .await
        .expect("allowed");
    client
        .execute(args_request("nope", &[], "chain-2"))
        .await
        .expect_err("refused");

    let allowed = daemon.records_of("chain-1");
    let events: Vec<_> = allowed.iter().map(|r| r["event"].clone()).collect();
    assert_eq!(events, ["start", "end"], "{allowed:#?}");
    assert!(allowed[0]["outcome"].is_null() && allowed[1]["outcome"].is_object());
    assert_eq!(allowed[0]["argv"], allowed[1]["argv"]);
    let refused = daemon.records_of("chain-2");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["event"], "refusal");

    let all = daemon.audit_records();
    assert_eq!(all[0]["event"], "file_start");
    for (i, record) in all.iter().enumerate() {
        assert_eq!(record["seq"], i as u64, "{record}");
    }
    let out = daemon.verify_audit();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );

    // Any edit breaks the chain, and the report says where.
    let original = std::fs::read_to_string(&daemon.audit).expect("read");
    let edited = original.replacen("\"exit\",\"0\"", "\"exit\",\"1\"", 1);
    assert_ne!(original, edited);
    std::fs::write(&daemon.audit, edited).expect("write");
    let out = daemon.verify_audit();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit.jsonl:2: modified:"),
        "the start record (line 2) was edited: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_redacted_before_the_record_is_written() {
    let daemon = Daemon::start_with(ECHO_TOOL, "audit_redact = ['sk-[a-z0-9]+']");
    let mut client = daemon.client().await;
    let result = client
        .execute(args_request(
            "echo",
            &["--password=hunter2", "sk-abc123", "plain"],
            "secret-1",
        ))
        .await
        .expect("allowed")
        .into_inner();
    // The tool gets the real values; only the record hides them.
    assert_eq!(text(&result.stdout), "--password=hunter2 sk-abc123 plain\n");
    let end = daemon.record("secret-1");
    assert_eq!(
        end["argv"],
        serde_json::json!(["/bin/echo", "--password=[redacted]", "[redacted]", "plain"])
    );

    let status = client
        .execute(command_request(
            "echo",
            "echo --deny --password=hunter2 sk-abc123",
            "secret-2",
        ))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    let refusal = daemon.record("secret-2");
    assert_eq!(
        refusal["command"],
        "echo --deny --password=[redacted] [redacted]"
    );

    let file = std::fs::read_to_string(&daemon.audit).expect("read");
    assert!(
        !file.contains("hunter2") && !file.contains("sk-abc123"),
        "{file}"
    );
    assert!(!daemon.log().contains("hunter2"), "{}", daemon.log());
    assert!(daemon.verify_audit().status.success());
}

/// Many concurrent calls; `kill -9` in the middle; every call the client saw succeed has
/// both records, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_record() {
    let mut daemon = Daemon::start(PROBE_TOOL);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..12 {
        let mut client = daemon.client().await;
        let acknowledged = Arc::clone(&acknowledged);
        workers.push(tokio::spawn(async move {
            for n in 0.. {
                if started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                let id = format!("load-{worker}-{n}");
                let request = args_request("probe", &["exit", "0"], &id);
                match client.execute(request).await {
                    Ok(_) => acknowledged.lock().expect("lock").push(id),
                    Err(_) => break, // the daemon is gone
                }
            }
        }));
    }
    // Let the load build up, then kill without warning.
    while acknowledged.lock().expect("lock").len() < 100 {
        assert!(started.elapsed() < Duration::from_secs(8), "calls too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.signal(libc::SIGKILL);
    for worker in workers {
        worker.await.expect("worker");
    }
    daemon.wait_exit(Duration::from_secs(5));
    let acknowledged = acknowledged.lock().expect("lock").clone();

    let out = daemon.verify_audit();
    assert!(
        out.status.success(),
        "chain after kill -9: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let file = std::fs::read_to_string(&daemon.audit).expect("read");
    let mut ended = HashSet::new();
    let mut begun = HashSet::new();
    // A torn last line (cut mid-write) is allowed: it was never acknowledged.
    for line in file.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let id = record["request_id"].as_str().unwrap_or_default().to_owned();
        match record["event"].as_str() {
            Some("start") => begun.insert(id),
            Some("end") => ended.insert(id),
            _ => false,
        };
    }
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !(begun.contains(*id) && ended.contains(*id)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged calls lack records: {missing:?}",
        missing.len(),
        acknowledged.len()
    );

    // A restarted daemon continues the same chain.
    let dir = daemon.dir.path().to_owned();
    let config = dir.join("toolgate.toml");
    let mut restarted = Command::new(TOOLGATE)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(dir.join("restart.log")).expect("log"))
        .spawn()
        .expect("restart");
    let socket = daemon.socket.clone();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "restart did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = toolgate::client::connect_unix(&socket)
        .await
        .expect("connect");
    client
        .execute(args_request("probe", &["exit", "0"], "after-restart"))
        .await
        .expect("allowed");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(restarted.id() as i32, libc::SIGTERM) };
    restarted.wait().expect("wait");
    let out = daemon.verify_audit();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A small tmpfs that is unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).expect("path");
        let options = std::ffi::CString::new(format!("size={size},mode=0700")).expect("opts");
        // SAFETY: mount(2) with valid C strings, on a directory this test made.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) of the mount this value made.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether this process may mount (root with CAP_SYS_ADMIN); otherwise why not.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "{test} needs root, and CI=true: a skip would hide it");
    eprintln!("SKIPPED {test}: needs root (run as root, or in CI)");
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn root_full_disk_refuses_with_unavailable_then_recovers_by_itself() {
    if !root_or_skip("root_full_disk_refuses_with_unavailable_then_recovers_by_itself") {
        return;
    }
    full_disk(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_full_disk_with_allow_keeps_running_and_writes_the_held_records_later() {
    if !root_or_skip("root_full_disk_with_allow_keeps_running_and_writes_the_held_records_later") {
        return;
    }
    full_disk(true).await;
}

/// Fills the file system under the audit log, then frees it; `allow` selects
/// `on_audit_failure = "allow"`.
async fn full_disk(allow: bool) {
    let logs = tempfile::tempdir().expect("tmp");
    let _tmpfs = Tmpfs::mount(logs.path(), "64k");
    let audit = logs.path().join("audit.jsonl");
    let mode = if allow { "allow" } else { "refuse" };
    let daemon = Daemon::start_with(
        PROBE_TOOL,
        &format!("audit_log = {audit:?}\non_audit_failure = \"{mode}\""),
    );
    let mut client = daemon.client().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(daemon.channel().await);
    let serving = |status: i32| {
        status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    };
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    assert!(serving(
        health
            .check(check.clone())
            .await
            .expect("health")
            .into_inner()
            .status
    ));
    client
        .execute(args_request("probe", &["exit", "0"], "disk-ok"))
        .await
        .expect("works before the disk fills");

    // Fill the file system.
    let filler = logs.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    // The audit file's last page may still hold a few records; then the log fails.
    let metrics_failing = || {
        daemon
            .audit_records()
            .iter()
            .all(|r| r["event"] != "audit_resumed")
    };
    let mut during = Vec::new();
    for n in 0..50 {
        let id = format!("disk-full-{n}");
        let result = client
            .execute(args_request("probe", &["exit", "0"], &id))
            .await;
        during.push(id);
        match result {
            Ok(_) if !allow => continue,
            Ok(_) => {
                let status = health
                    .check(check.clone())
                    .await
                    .expect("health")
                    .into_inner();
                if !serving(status.status) {
                    break; // the log is failing, and calls still run
                }
            }
            Err(status) => {
                assert!(
                    !allow,
                    "with allow, calls run through the outage: {status:?}"
                );
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                break;
            }
        }
    }
    assert!(
        !serving(
            health
                .check(check.clone())
                .await
                .expect("health")
                .into_inner()
                .status
        ),
        "the disk is full: health must say NOT_SERVING"
    );
    let outage = client
        .execute(args_request("probe", &["exit", "0"], "disk-full-during"))
        .await;
    if allow {
        outage.expect("allowed through the outage");
        during.push("disk-full-during".to_owned());
    } else {
        let status = outage.expect_err("refused while the log cannot be written");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("audit log"),
            "{}",
            status.message()
        );
    }
    assert!(metrics_failing());

    // Free the space: the daemon notices by itself.
    std::fs::remove_file(&filler).expect("free space");
    let start = Instant::now();
    loop {
        match client
            .execute(args_request("probe", &["exit", "0"], "disk-back"))
            .await
        {
            Ok(_) if !metrics_failing() => break,
            Ok(_) => {}
            Err(status) => assert_eq!(status.code(), Code::Unavailable),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving(
        health
            .check(check)
            .await
            .expect("health")
            .into_inner()
            .status
    ));
    let records = daemon.audit_records();
    let resumed: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "audit_resumed")
        .collect();
    assert_eq!(resumed.len(), 1, "{records:#?}");
    assert!(
        resumed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space")
    );
    // Every run that started has its end, held through the outage if need be.
    for start in records.iter().filter(|r| r["event"] == "start") {
        let id = &start["request_id"];
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "end" && r["request_id"] == *id),
            "no end record for {id}"
        );
    }
    if allow {
        // Nothing was lost: every call made during the outage has both records.
        for id in &during {
            let events: Vec<_> = records
                .iter()
                .filter(|r| r["request_id"] == id.as_str())
                .map(|r| r["event"].clone())
                .collect();
            assert_eq!(events, ["start", "end"], "{id}");
        }
        assert_eq!(resumed[0]["records_dropped"], 0);
    } else {
        assert!(
            records
                .iter()
                .all(|r| r["request_id"] != "disk-full-during")
        );
    }
    let out = Command::new(TOOLGATE)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("verify");
    assert!(out.status.success(), "{}", text(&out.stderr));
}
