//! Admission control end to end: callers, rate limits, concurrency, quotas (embedded and a real
//! Redis shared by two daemons), circuit breakers, mutual TLS and bearer tokens.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;
use toolgate::api::pb::{self, tool_gate_client::ToolGateClient};

use super::*;

fn echo_tool(extra: &str) -> String {
    format!(
        "[tool.echo]\ndescription = \"print\"\nprogram = \"/bin/echo\"\ncwd = \"${{work}}\"\n{extra}\n"
    )
}

fn rule_of(daemon: &Daemon, request_id: &str) -> String {
    daemon.record(request_id)["rule"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_default_deny_and_list_tools_shows_only_what_may_be_called() {
    let uid = current_uid();
    let policy = format!(
        "{}{}",
        echo_tool("callers = [\"uid:4242\", \"group:no-such-group\"]"),
        "[tool.mine]\nprogram = \"/bin/echo\"\n"
    );
    // No default_callers: tools without `callers` are callable by nobody.
    let daemon = Daemon::start_with(&policy, "default_callers = []");
    let mut client = daemon.client().await;
    let status = client
        .execute(args_request("echo", &["hi"], "deny-1"))
        .await
        .expect_err("not a listed caller");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(&format!("uid:{uid}")),
        "{status:?}"
    );
    assert_eq!(rule_of(&daemon, "deny-1"), "admission.callers");
    let status = client
        .execute(args_request("mine", &["hi"], "deny-2"))
        .await
        .expect_err("default deny");
    assert_eq!(status.code(), Code::PermissionDenied);
    let tools = client
        .list_tools(pb::ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools;
    assert!(tools.is_empty(), "{tools:?}");

    // Control: the same tools, with the caller listed by uid and by user name.
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .unwrap()
        .name;
    let policy = format!(
        "{}{}",
        echo_tool(&format!("callers = [\"user:{user}\"]")),
        "[tool.mine]\nprogram = \"/bin/echo\"\n[tool.other]\nprogram = \"/bin/echo\"\ncallers = [\"uid:4242\"]\n"
    );
    let daemon = Daemon::start(&policy);
    let mut client = daemon.client().await;
    for tool in ["echo", "mine"] {
        client
            .execute(args_request(tool, &["hi"], &format!("ok-{tool}")))
            .await
            .expect("allowed");
    }
    let names: Vec<String> = client
        .list_tools(pb::ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["echo", "mine"]);
    let record = daemon.record("ok-echo");
    assert_eq!(record["caller"]["user"], user.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_refusal_carries_a_correct_retry_delay() {
    let daemon = Daemon::start(&echo_tool(
        "rate_limit = { per_caller = \"2/minute\", burst = 2 }",
    ));
    let mut client = daemon.client().await;
    for i in 0..2 {
        client
            .execute(args_request("echo", &["hi"], &format!("rate-{i}")))
            .await
            .expect("within the burst");
    }
    let before = Instant::now();
    let status = client
        .execute(args_request("echo", &["hi"], "rate-2"))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Two calls took the whole burst; the next slot opens one interval (30 s) after the first.
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo detail");
    let elapsed = before.elapsed() + Duration::from_secs(2);
    assert!(
        retry <= Duration::from_secs(30) && retry + elapsed >= Duration::from_secs(30),
        "{retry:?}"
    );
    let header: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        header,
        retry.as_secs() + u64::from(retry.subsec_nanos() > 0)
    );
    assert_eq!(rule_of(&daemon, "rate-2"), "admission.rate.caller_tool");

    let usage = client
        .get_usage(pb::GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.caller, format!("uid:{}", current_uid()));
    let rate = &usage.limits[0];
    assert_eq!(
        (rate.rule.as_str(), rate.remaining, rate.limit_value),
        ("admission.rate.caller_tool", 0, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_200_never_runs_more_than_4_at_once_and_sheds_the_rest() {
    let policy = r#"
[tool.probe]
program = "${probe}"
cwd = "${work}"
max_concurrent = 4
[tool.probe.sandbox]
read = ["${work}"]
write = ["${work}"]
"#;
    let daemon = Daemon::start_with(
        policy,
        "[admission]\nmax_queued = 8\nqueue_timeout = \"10s\"\n",
    );
    let marks = daemon.work.join("marks");
    std::fs::create_dir(&marks).unwrap();
    // Tools run as an unprivileged user when the daemon is root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marks = marks.to_string_lossy().into_owned();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(daemon.client().await);
    }
    let calls = (0..200).map(|i| {
        let mut client = clients[i % 4].clone();
        let marks = marks.clone();
        tokio::spawn(async move {
            client
                .execute(args_request(
                    "probe",
                    &["overlap", &marks, "0.3"],
                    &format!("flood-{i}"),
                ))
                .await
        })
    });
    let results = futures_join(calls.collect()).await;
    let (mut ran, mut shed, mut most) = (0, 0, 0);
    for result in &results {
        match result {
            Ok(response) => {
                let out = text(&response.get_ref().stdout);
                let seen: usize = out.trim().strip_prefix("ok ").unwrap().parse().unwrap();
                most = most.max(seen);
                ran += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.metadata().get("retry-after").is_some());
                shed += 1;
            }
        }
    }
    assert_eq!(ran + shed, 200);
    assert!(most <= 4, "{most} ran at once");
    assert!(ran >= 12, "4 running and 8 queued must all run; ran {ran}");
    assert!(shed > 0);
    let rules: Vec<_> = daemon
        .audit_records()
        .into_iter()
        .filter(|r| r["decision"] == "refused")
        .map(|r| r["rule"].clone())
        .collect();
    assert_eq!(rules.len(), shed);
    assert!(rules.iter().all(|r| r == "admission.concurrency.tool"));
    eprintln!("flood: {ran} ran, {shed} shed, at most {most} at once");
}

/// Awaits every task (the dev-dependencies have no futures crate; order is kept).
async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_quota_survives_restart_and_kill_9() {
    let state = tempfile::tempdir().unwrap();
    let policy = echo_tool("quota = { period = \"day\", invocations = 3 }");
    let config = format!("state_dir = {:?}", state.path());
    let daemon = Daemon::start_with(&policy, &config);
    let mut client = daemon.client().await;
    client
        .execute(args_request("echo", &["1"], "q-1"))
        .await
        .expect("1 of 3");
    drop(client);
    drop(daemon); // SIGKILL: Child::kill
    let mut daemon = Daemon::start_with(&policy, &config);
    let mut client = daemon.client().await;
    client
        .execute(args_request("echo", &["2"], "q-2"))
        .await
        .expect("2 of 3");
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    let daemon = Daemon::start_with(&policy, &config);
    let mut client = daemon.client().await;
    client
        .execute(args_request("echo", &["3"], "q-3"))
        .await
        .expect("3 of 3");
    let status = client
        .execute(args_request("echo", &["4"], "q-4"))
        .await
        .expect_err("quota used up");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(rule_of(&daemon, "q-4"), "admission.quota.invocations");
    let usage = client
        .get_usage(pb::GetUsageRequest {
            tool: "echo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let q = usage
        .limits
        .iter()
        .find(|l| l.rule == "admission.quota.invocations")
        .unwrap();
    assert_eq!((q.used, q.remaining, q.limit_value), (3, 0, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_opens_after_timeouts_and_recovers_after_a_probe() {
    let policy = r#"
[tool.sleep]
program = "/bin/sleep"
timeout = "200ms"
breaker = { failures = 2, cooldown = "1s" }
"#;
    let daemon = Daemon::start(policy);
    let mut client = daemon.client().await;
    for i in 0..2 {
        let r = client
            .execute(args_request("sleep", &["5"], &format!("b-{i}")))
            .await
            .expect("a timeout is a result")
            .into_inner();
        assert!(r.timed_out);
    }
    let status = client
        .execute(args_request("sleep", &["0"], "b-open"))
        .await
        .expect_err("open");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(rule_of(&daemon, "b-open"), "admission.breaker");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = client
        .execute(args_request("sleep", &["0"], "b-probe"))
        .await
        .expect("half-open probe runs")
        .into_inner();
    assert_eq!(exit_code(&r), 0);
    client
        .execute(args_request("sleep", &["0"], "b-closed"))
        .await
        .expect("closed again");
}

/// A Redis binary from Debian's `redis-server` / `redis-tools` packages, or None (skip) outside
/// CI when it is missing; under `CI=true` a missing binary fails the test.
fn redis_binary(test: &str, name: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/local/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {name} is not installed (.ci/run installs it)"
        );
        eprintln!(
            "SKIP {test}: {name} is not installed (apt-get install redis-server redis-tools)"
        );
    }
    found
}

/// A Redis process of our own (server, Sentinel or Cluster node) on a loopback port, with its
/// own working directory and log; killed on drop, so a panicking test leaves nothing behind.
struct RedisServer {
    process: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a standalone server, or None (skip) outside CI when redis-server is not installed.
    fn start(test: &str) -> Option<Self> {
        let binary = redis_binary(test, "redis-server")?;
        Some(Self::spawn(&binary, free_port(), |_| Vec::new()))
    }

    /// Runs `binary` listening on `port`; `args` gives the arguments that go before the common
    /// ones (a config file, `--cluster-enabled yes`...) and may write files in the directory
    /// it is handed. Returns once the port accepts connections.
    fn spawn(binary: &Path, port: u16, args: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("log file");
        let mut command = Command::new(binary);
        command
            .args(args(dir.path()))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let process = command.spawn().expect("start redis");
        // In the guard before waiting: a failed start is still killed.
        let mut server = Self { process, port, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.process.try_wait() {
                panic!(
                    "redis on port {port} exited with {status}:\n{}",
                    server.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not listen on {port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// A plain (non-cluster) connection, for the test's own checks.
    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to redis")
    }

    /// The invocations counted by each quota counter under the hash tag `{prefix}` stored on
    /// this server.
    fn counted_invocations(&self, prefix: &str) -> Vec<u64> {
        let mut con = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}}}:quota:*"))
            .query(&mut con)
            .expect("KEYS");
        keys.iter()
            .map(|key| {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("m0")
                    .query::<Option<u64>>(&mut con)
                    .expect("HGET")
                    .unwrap_or(0)
            })
            .collect()
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `condition` every 50 ms until it holds, up to 10 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The quota the daemons of the Redis tests share: 7 invocations per caller and hour.
const SHARED_QUOTA: usize = 7;

fn shared_quota_policy() -> String {
    echo_tool(&format!(
        "quota = {{ period = \"hour\", invocations = {SHARED_QUOTA} }}"
    ))
}

/// Sends 20 concurrent calls, alternating between two daemons' clients: exactly
/// [`SHARED_QUOTA`] pass in all, every other call is refused with RESOURCE_EXHAUSTED.
async fn assert_one_quota_across(a: &ToolGateClient<Channel>, b: &ToolGateClient<Channel>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            client
                .execute(args_request("echo", &["x"], &format!("shared-{i}")))
                .await
        }));
    }
    let results = futures_join(tasks).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, SHARED_QUOTA, "one quota across two daemons");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_one_quota_in_redis_and_a_stopped_redis_behaves_as_configured() {
    let Some(mut redis) = RedisServer::start("two_daemons_share_one_quota_in_redis") else {
        return;
    };
    let policy = shared_quota_policy();
    let refuse = Daemon::start_with(
        &policy,
        &format!("[admission]\nredis = {:?}\n", redis.url()),
    );
    let local = Daemon::start_with(
        &policy,
        &format!(
            "[admission]\nredis = {:?}\non_store_failure = \"local\"\nredis_timeout = \"300ms\"\n",
            redis.url()
        ),
    );
    let mut a = refuse.client().await;
    let mut b = local.client().await;
    assert_one_quota_across(&a, &b).await;

    redis.stop();
    // refuse (the default): UNAVAILABLE, audited as admission.store.
    let status = a
        .execute(args_request("echo", &["x"], "down-refuse"))
        .await
        .expect_err("store down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(rule_of(&refuse, "down-refuse"), "admission.store");
    // local: falls back to this daemon's own (fresh) limits, and says so.
    b.execute(args_request("echo", &["x"], "down-local"))
        .await
        .expect("local fallback");
    let usage = b
        .get_usage(pb::GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(usage.store_fallbacks >= 1);
    assert!(local.log().contains("redis failed: using local limits"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_one_rate_limit_in_redis() {
    let Some(redis) = RedisServer::start("two_daemons_share_one_rate_limit_in_redis") else {
        return;
    };
    // Three calls a minute for the tool, whoever calls it through whichever daemon.
    let policy = echo_tool("rate_limit = { per_tool = \"3/minute\", burst = 3 }");
    let config = format!("[admission]\nredis = {:?}\n", redis.url());
    let (first, second) = (
        Daemon::start_with(&policy, &config),
        Daemon::start_with(&policy, &config),
    );
    let (a, b) = (first.client().await, second.client().await);
    let mut passed = 0;
    let mut refusals = Vec::new();
    for i in 0..8 {
        let mut client = if i % 2 == 0 { a.clone() } else { b.clone() };
        match client
            .execute(args_request("echo", &["x"], &format!("rate-{i}")))
            .await
        {
            Ok(_) => passed += 1,
            Err(status) => refusals.push(status),
        }
    }
    assert_eq!(passed, 3, "one bucket across two daemons");
    for status in &refusals {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry: u64 = status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("retry-after seconds");
        // A token comes back every 20 s: the wait is at most that.
        assert!((1..=20).contains(&retry), "retry-after {retry}");
    }
    // Control: each daemon alone would have let 3 through (6 in all) with local buckets.
    let local_a = Daemon::start_with(&policy, "");
    let local_b = Daemon::start_with(&policy, "");
    let (la, lb) = (local_a.client().await, local_b.client().await);
    let mut local_passed = 0;
    for i in 0..8 {
        let mut client = if i % 2 == 0 { la.clone() } else { lb.clone() };
        if client
            .execute(args_request("echo", &["x"], &format!("local-rate-{i}")))
            .await
            .is_ok()
        {
            local_passed += 1;
        }
    }
    assert_eq!(
        local_passed, 6,
        "control: separate daemons keep separate buckets"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_one_quota_through_redis_sentinel() {
    const TEST: &str = "two_daemons_share_one_quota_through_redis_sentinel";
    const MASTER: &str = "toolgate-test";
    const PREFIX: &str = "toolgate-sentinel";
    let Some(binary) = redis_binary(TEST, "redis-server") else {
        return;
    };
    let master = RedisServer::spawn(&binary, free_port(), |_| Vec::new());
    // Sentinel rewrites its config file, so it lives in the sentinel's own directory; the
    // common arguments (port, bind, dir) follow the file and apply too.
    let sentinel = RedisServer::spawn(&binary, free_port(), |dir| {
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "sentinel resolve-hostnames no\nsentinel monitor {MASTER} 127.0.0.1 {} 1\n",
                master.port
            ),
        )
        .expect("write sentinel.conf");
        vec![config.to_string_lossy().into_owned(), "--sentinel".into()]
    });
    // Until Sentinel has reached the master its flags say `disconnected`.
    let mut con = sentinel.connection();
    wait_until("sentinel sees its master", || {
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER)
            .query::<HashMap<String, String>>(&mut con)
            .is_ok_and(|m| m.get("flags").map(String::as_str) == Some("master"))
    });

    // The daemons know only the Sentinel: the master's address comes from it.
    let config = format!(
        "[admission]\nredis = \"redis+sentinel://127.0.0.1:{}/{MASTER}\"\nredis_prefix = {PREFIX:?}\n",
        sentinel.port
    );
    let policy = shared_quota_policy();
    let first = Daemon::start_with(&policy, &config);
    let second = Daemon::start_with(&policy, &config);
    assert_one_quota_across(&first.client().await, &second.client().await).await;
    assert_eq!(
        master.counted_invocations(PREFIX),
        [SHARED_QUOTA as u64],
        "the quota counter lives on the master"
    );
}

/// A loopback port `p` for a Cluster node: free, and with its bus port `p + 10000` free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// The port of the Cluster node serving `slot`, from `CLUSTER NODES` lines like
/// `ID 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460`.
fn owner_of_slot(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serves = fields.iter().skip(8).any(|range| {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
        });
        if !serves {
            return None;
        }
        let address = fields.get(1)?.split('@').next()?;
        address.rsplit_once(':')?.1.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_one_quota_on_a_redis_cluster() {
    const TEST: &str = "two_daemons_share_one_quota_on_a_redis_cluster";
    let Some(server) = redis_binary(TEST, "redis-server") else {
        return;
    };
    let Some(cli) = redis_binary(TEST, "redis-cli") else {
        return;
    };
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            let port = free_cluster_port();
            RedisServer::spawn(&server, port, |_| {
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                ]
            })
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let create = Command::new(&cli)
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        create.status.success() && text(&create.stdout).contains("All 16384 slots covered"),
        "redis-cli --cluster create failed:\n{}{}",
        text(&create.stdout),
        text(&create.stderr)
    );
    let mut cons: Vec<redis::Connection> = nodes.iter().map(RedisServer::connection).collect();
    for (node, con) in nodes.iter().zip(&mut cons) {
        wait_until(&format!("cluster_state:ok on {}", node.port), || {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(con)
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        });
    }

    // A prefix whose hash tag is not served by the first node the daemons are given, so the
    // counters are reached only by following the Cluster's slot map.
    let cluster_nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut cons[0])
        .expect("CLUSTER NODES");
    let (prefix, owner) = (0..100)
        .find_map(|i| {
            let prefix = format!("toolgate-cluster-{i}");
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{{prefix}}}"))
                .query(&mut cons[0])
                .expect("CLUSTER KEYSLOT");
            let owner = owner_of_slot(&cluster_nodes, slot)?;
            (owner != nodes[0].port).then_some((prefix, owner))
        })
        .expect("a prefix served by another node");

    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let policy = shared_quota_policy();
    let config = |urls: &[String]| {
        format!("[admission]\nredis_cluster = {urls:?}\nredis_prefix = {prefix:?}\n")
    };
    let first = Daemon::start_with(&policy, &config(&urls));
    let reversed: Vec<String> = urls.iter().rev().cloned().collect();
    let second = Daemon::start_with(&policy, &config(&reversed));
    assert_one_quota_across(&first.client().await, &second.client().await).await;
    for node in &nodes {
        let counted = node.counted_invocations(&prefix);
        if node.port == owner {
            assert_eq!(counted, [SHARED_QUOTA as u64], "the counter on its shard");
        } else {
            assert!(counted.is_empty(), "{}: {counted:?}", node.port);
        }
    }
}

/// A test CA, and certificates it signs.
struct Pki {
    dir: tempfile::TempDir,
    cas: std::cell::RefCell<HashMap<String, (rcgen::CertificateParams, rcgen::KeyPair)>>,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cas: Default::default(),
        }
    }

    /// Writes NAME.pem and NAME.key: a CA when `issuer` is None, else a leaf it signs.
    fn make(&self, name: &str, cn: &str, sans: &[&str], issuer: Option<&str>) -> (String, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = match issuer {
            None => {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.self_signed(&key).unwrap()
            }
            Some(ca) => {
                let cas = self.cas.borrow();
                let (ca_params, ca_key) = &cas[ca];
                params
                    .signed_by(&key, &Issuer::from_params(ca_params, ca_key))
                    .unwrap()
            }
        };
        let (pem, key) = (cert.pem(), key.serialize_pem());
        std::fs::write(self.path(&format!("{name}.pem")), &pem).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), &key).unwrap();
        if issuer.is_none() {
            let keypair = KeyPair::from_pem(&key).unwrap();
            self.cas
                .borrow_mut()
                .insert(name.to_owned(), (params, keypair));
        }
        (pem, key)
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }
}

async fn tls_client(
    port: u16,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<ToolGateClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ToolGateClient::new(channel))
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_a_good_certificate_only() {
    let pki = Pki::new();
    let (ca, _) = pki.make("ca", "test ca", &[], None);
    pki.make("server", "localhost", &["localhost"], Some("ca"));
    let (good, good_key) = pki.make("agent", "agent-1", &["agent-1.example"], Some("ca"));
    pki.make("rogue-ca", "rogue ca", &[], None);
    let (rogue, rogue_key) = pki.make("rogue", "agent-1", &["agent-1.example"], Some("rogue-ca"));
    let port = free_port();
    let daemon = Daemon::start_with(
        &echo_tool("callers = [\"cert:agent-1.example\"]"),
        &format!(
            "listen = \"127.0.0.1:{port}\"\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem")
        ),
    );
    let mut client = tls_client(port, &ca, Some((&good, &good_key)))
        .await
        .expect("connect");
    let r = client
        .execute(args_request("echo", &["over", "tls"], "tls-good"))
        .await
        .expect("good certificate")
        .into_inner();
    assert_eq!(text(&r.stdout), "over tls\n");
    let record = daemon.record("tls-good");
    assert_eq!(record["caller"]["transport"], "tcp");
    assert_eq!(record["caller"]["cert"]["cn"], "agent-1");

    // A certificate from another CA, and none at all: the handshake or the first call fails.
    for (name, identity) in [
        ("wrong-ca", Some((rogue.as_str(), rogue_key.as_str()))),
        ("none", None),
    ] {
        let outcome = match tls_client(port, &ca, identity).await {
            Err(_) => None,
            Ok(mut client) => Some(client.execute(args_request("echo", &["x"], name)).await),
        };
        assert!(
            matches!(outcome, None | Some(Err(_))),
            "{name}: a call got through"
        );
    }
    assert!(
        daemon
            .audit_records()
            .iter()
            .filter(|r| r.get("request_id").is_some())
            .all(|r| r["request_id"] == "tls-good"),
        "no other call reached the gate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_good_and_bad_and_plain_tcp_needs_explicit_insecure() {
    let port = free_port();
    let digest = toolgate::auth::token_digest("s3cret-token");
    let daemon = Daemon::start_with(
        &echo_tool("callers = [\"token:ci-bot\"]"),
        &format!("listen = \"127.0.0.1:{port}\"\n[tokens]\nci-bot = \"{digest}\"\n"),
    );
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let call = |token: Option<&'static str>, id: &'static str| {
        let mut client = ToolGateClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(args_request("echo", &["hi"], id));
            if let Some(token) = token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            client.execute(request).await
        }
    };
    call(Some("s3cret-token"), "tok-good")
        .await
        .expect("good token");
    assert_eq!(daemon.record("tok-good")["caller"]["token"], "ci-bot");
    let status = call(Some("guessed"), "tok-bad")
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(rule_of(&daemon, "tok-bad"), "auth.token");
    let status = call(None, "tok-none").await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(rule_of(&daemon, "tok-none"), "auth.anonymous");

    // Plain TCP with neither TLS nor tokens does not start without insecure_tcp = true.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("toolgate.toml");
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(
        &config,
        format!(
            "socket = \"s.sock\"\npolicy_dir = \"p\"\naudit_log = \"a.jsonl\"\nstate_dir = \"st\"\nlisten = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(TOOLGATE)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("insecure_tcp = true"),
        "{}",
        text(&out.stderr)
    );
}
