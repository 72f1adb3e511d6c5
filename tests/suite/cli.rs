//! The `toolgate` command line: `call`, `tools`, `policy check`.

use std::process::{Command, Output, Stdio};

use super::*;

fn toolgate(daemon: &Daemon, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(TOOLGATE)
        .args(args)
        .env("TOOLGATE_SOCKET", &daemon.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run toolgate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("toolgate output")
}

#[test]
fn call_prints_output_and_exits_with_the_tools_code() {
    let daemon = Daemon::start(PROBE_TOOL);
    let out = toolgate(&daemon, &["call", "probe", "--", "echo-stdin"], b"piped in");
    assert_eq!(text(&out.stdout), "piped in");
    assert_eq!(out.status.code(), Some(0));

    let out = toolgate(&daemon, &["call", "probe", "--", "exit", "7"], b"");
    assert_eq!(out.status.code(), Some(7));

    let out = toolgate(
        &daemon,
        &["call", "--json", "probe", "--command", "probe exit 3"],
        b"",
    );
    assert_eq!(out.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["exit_code"], 3);
    assert_eq!(json["timed_out"], false);

    let out = toolgate(
        &daemon,
        &["call", "--timeout", "300ms", "probe", "--", "sleep", "5"],
        b"",
    );
    assert_eq!(out.status.code(), Some(124));
    assert!(
        text(&out.stderr).contains("time limit"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn call_refusal_prints_the_status_and_exits_125() {
    let daemon = Daemon::start(PROBE_TOOL);
    let out = toolgate(&daemon, &["call", "missing-tool"], b"");
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("NotFound") && stderr.contains("unknown tool `missing-tool`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn tools_lists_what_the_caller_may_call() {
    let daemon = Daemon::start(PROBE_TOOL);
    let out = toolgate(&daemon, &["tools", "--json"], b"");
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["name"], "probe");
}

#[test]
fn policy_check_reports_every_error_with_its_place() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[tool.x]\nprogram = \"/no/such\"\ntimeout = \"never\"\n",
    )
    .expect("write");
    let out = Command::new(TOOLGATE)
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml:2:11: tool `x`: program `/no/such` cannot be used"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:3:11: tool `x`: `never` is not a duration"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");

    // The shipped policy library is valid, with every example checked.
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(TOOLGATE)
        .args(["policy", "check", &format!("{root}/policies"), "--config"])
        .arg(format!("{root}/examples/toolgate.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn daemon_refuses_to_start_on_a_broken_policy_or_unwritable_audit_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("mkdir");
    std::fs::write(
        policies.join("p.toml"),
        "[tool.x]\nprogramm = \"/bin/echo\"\n",
    )
    .expect("write");
    let config = dir.path().join("toolgate.toml");
    let write_config = |audit: &str| {
        std::fs::write(
            &config,
            format!(
                "socket = {:?}\npolicy_dir = {policies:?}\naudit_log = {audit:?}\n",
                dir.path().join("s.sock")
            ),
        )
        .expect("config")
    };
    // The daemon must refuse to start, exit 125, and say why on stderr.
    let serve_fails = || {
        let out = Command::new(TOOLGATE)
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(125));
        text(&out.stderr)
    };
    write_config(dir.path().join("audit.jsonl").to_str().expect("path"));
    let stderr = serve_fails();
    assert!(
        stderr.contains("p.toml:2:1: unknown field `programm`"),
        "{stderr}"
    );

    std::fs::write(
        policies.join("p.toml"),
        "[tool.x]\nprogram = \"/bin/echo\"\n",
    )
    .expect("write");
    write_config("/proc/toolgate-audit.jsonl");
    let stderr = serve_fails();
    assert!(stderr.contains("cannot open audit log"), "{stderr}");
}
