//! The harness: start a daemon with a policy written by the test, call it, read its audit log.

mod admission;
mod audit;
mod cli;
mod escape;
mod invocation;
mod lifecycle;
mod ops;
mod python;
mod systemd;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tonic::transport::Channel;
use toolgate::api::pb::{self, tool_gate_client::ToolGateClient};

/// The test-only attack program (see tests/probe/main.rs).
pub const PROBE: &str = env!("CARGO_BIN_EXE_toolgate-probe");
/// The daemon binary.
pub const TOOLGATE: &str = env!("CARGO_BIN_EXE_toolgate");

/// A daemon running on a temporary directory: socket, config, policies, audit log, and a
/// workspace (`${work}`), a directory granted read-only (`${ro}`) and one the policies never
/// grant (`${outside}`).
pub struct Daemon {
    process: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub work: PathBuf,
    pub ro: PathBuf,
    pub outside: PathBuf,
}

/// Policy placeholders every test policy may use: `${probe}`, `${work}`, `${ro}`, `${outside}`.
pub const PROBE_TOOL: &str = r#"
[tool.probe]
description = "the escape probe"
program = "${probe}"
cwd = "${work}"
timeout = "20s"
max_output = "64KiB"
[tool.probe.env]
allow = ["PROBE_ALLOWED"]
set = { FIXED = "1" }
[tool.probe.sandbox]
read = ["${work}", "${ro}"]
write = ["${work}"]
[tool.probe.sandbox.limits]
memory = "512MiB"
cpu_time = "10s"
"#;

impl Daemon {
    /// Starts a daemon with `policy` as its only policy file and waits until it accepts calls.
    pub fn start(policy: &str) -> Self {
        Self::start_with(policy, "")
    }

    /// Like [`Daemon::start`], with extra top-level config lines.
    pub fn start_with(policy: &str, config_extra: &str) -> Self {
        Self::start_custom(policy, config_extra, |_| {})
    }

    /// Like [`Daemon::start_with`]; `customize` adds arguments, environment or a pre-exec
    /// hook to the daemon's command before it is spawned.
    pub fn start_custom(
        policy: &str,
        config_extra: &str,
        customize: impl FnOnce(&mut Command),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let work = root.join("work");
        let outside = root.join("outside");
        let ro = root.join("ro");
        let policies = root.join("policies");
        for d in [&work, &ro, &outside, &policies] {
            std::fs::create_dir(d).expect("mkdir");
        }
        // Tools run as an unprivileged user (nobody) when the daemon is root: let it write the
        // workspace, as an ops team would by ownership.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::write(policies.join("test.toml"), policy).expect("write policy");
        let socket = root.join("toolgate.sock");
        let config = root.join("toolgate.toml");
        // A test may put the audit log elsewhere (e.g. on a small file system).
        let extra: toml::Table = toml::from_str(config_extra).expect("config_extra is TOML");
        let (audit, audit_line) = match extra.get("audit_log").and_then(|v| v.as_str()) {
            Some(path) => (PathBuf::from(path), String::new()),
            None => {
                let audit = root.join("audit.jsonl");
                let line = format!("audit_log = {audit:?}\n");
                (audit, line)
            }
        };
        // Admission: the test's own uid may call every tool unless the test says otherwise;
        // quota state in the temporary directory unless the test names its own.
        let mut admission = String::new();
        if !config_extra.contains("default_callers") {
            admission += &format!("default_callers = [\"uid:{}\"]\n", current_uid());
        }
        if !config_extra.contains("state_dir") {
            admission += &format!("state_dir = {:?}\n", root.join("state"));
        }
        std::fs::write(
            &config,
            format!(
                "socket = {socket:?}\npolicy_dir = {policies:?}\n{audit_line}{admission}{config_extra}\n\
                 [policy_vars]\nprobe = {PROBE:?}\nwork = {work:?}\nro = {ro:?}\noutside = {outside:?}\n"
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(root.join("daemon.log")).expect("log file");
        let mut command = Command::new(TOOLGATE);
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("TOOLGATE_TEST_SECRET", "daemon-only")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        customize(&mut command);
        let process = command.spawn().expect("start toolgate serve");
        let mut daemon = Self {
            process,
            dir,
            socket,
            audit,
            work,
            ro,
            outside,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!("daemon exited with {status} during start:\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not listen within 20 s:\n{}", self.log());
    }

    /// The directory of policy files.
    pub fn policies(&self) -> PathBuf {
        self.work.parent().expect("root").join("policies")
    }

    /// Every audit record of `request_id` so far, in file order.
    pub fn records_of(&self, request_id: &str) -> Vec<serde_json::Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["request_id"] == request_id)
            .collect()
    }

    /// A channel for the health and reflection services.
    pub async fn channel(&self) -> Channel {
        toolgate::client::channel_unix(&self.socket)
            .await
            .expect("connect to daemon")
    }

    /// Runs `toolgate audit verify` on the daemon's audit files.
    pub fn verify_audit(&self) -> std::process::Output {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl"))
            })
            .collect();
        files.sort();
        Command::new(TOOLGATE)
            .args(["audit", "verify"])
            .args(&files)
            .output()
            .expect("run toolgate audit verify")
    }

    /// Waits until `condition` holds, up to `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A gRPC client on the daemon's socket.
    pub async fn client(&self) -> ToolGateClient<Channel> {
        toolgate::client::connect_unix(&self.socket)
            .await
            .expect("connect to daemon")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the daemon to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.process.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "daemon still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every audit record so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// The final audit record of `request_id`: its `end` or `refusal` (waits briefly: records
    /// of cancelled runs are written after the caller has gone).
    pub fn record(&self, request_id: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let matching: Vec<_> = self
                .audit_records()
                .into_iter()
                .filter(|r| r["request_id"] == request_id && r["event"] != "start")
                .collect();
            match matching.len() {
                1 => return matching.into_iter().next().expect("one record"),
                0 if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                n => panic!("{n} audit records for {request_id}:\n{matching:#?}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A graceful stop lets the daemon remove its cgroup subtree and socket; SIGKILL only
        // if it does not stop in time.
        if let Ok(None) = self.process.try_wait() {
            self.signal(libc::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.process.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The effective uid of the tests (and so of their clients).
pub fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A request with `args`.
pub fn args_request(tool: &str, args: &[&str], request_id: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        tool: tool.to_owned(),
        invocation: Some(pb::execute_request::Invocation::Args(pb::ArgumentList {
            values: args.iter().map(|a| a.to_string()).collect(),
        })),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

/// A request with one `command` line.
pub fn command_request(tool: &str, line: &str, request_id: &str) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        tool: tool.to_owned(),
        invocation: Some(pb::execute_request::Invocation::Command(line.to_owned())),
        request_id: request_id.to_owned(),
        ..Default::default()
    }
}

/// Runs the probe directly, outside any sandbox: the control of every denial test.
pub fn probe_outside(args: &[&str]) -> std::process::Output {
    Command::new(PROBE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run probe outside the sandbox")
}

/// The exit code of a result (panics on a signal).
pub fn exit_code(result: &pb::ExecuteResult) -> i32 {
    match result.termination {
        Some(pb::execute_result::Termination::ExitCode(code)) => code,
        other => panic!(
            "expected an exit code, got {other:?}: {}",
            text(&result.stderr)
        ),
    }
}

/// Bytes as text, for assertions and messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses `key=value` lines printed by the probe.
pub fn fields(output: &str) -> HashMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as gone: it runs nothing).
pub fn alive(pid: i32) -> bool {
    let mut stat = String::new();
    match std::fs::File::open(format!("/proc/{pid}/stat")) {
        Ok(mut f) => {
            let _ = f.read_to_string(&mut stat);
        }
        Err(_) => return false,
    }
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some(Some('Z')) | Some(Some('X')) | None)
}

/// Live processes whose command line contains `tag` (a word the probe ignores), as the host
/// sees them: how a test finds a sandbox's processes, whose own pids are namespace-local.
pub fn tagged(tag: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == tag.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Polls until no live process carries `tag`, up to `limit`; returns the survivors.
pub fn wait_untagged(tag: &str, limit: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let left = tagged(tag);
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this test, which needs root, can run: true as root. Otherwise it prints why it
/// skips, or fails under `CI=true`, where a skip would hide a missing feature.
pub fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root and CI=true: refusing to skip"
    );
    eprintln!("SKIP {test}: needs root (cgroups, run_as); run the tests as root to include it");
    false
}

/// A tag unique to this test process and call site.
pub fn unique_tag(name: &str) -> String {
    format!("tag-{name}-{}", std::process::id())
}

/// Kills a process the test made outside the sandbox.
pub fn kill(pid: i32) {
    // SAFETY: kill(2) with a pid this test created.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Where the test is in `Path` form, for messages.
pub fn show(path: &Path) -> String {
    path.display().to_string()
}
