//! The cost of admission per call: identify the caller (Unix peer credentials, names cached),
//! find the tool and check its arguments, then admit (authorization, breaker, concurrency, the
//! rate buckets, the quota reservation committed to the store) and settle the quota.
//!
//! `cargo bench --bench admission` prints p50/p99 for the embedded store, and for Redis when a
//! `redis-server` binary is installed (started here on a free loopback port, killed at the end).
//! Own harness (no criterion) to keep cold builds short; latencies are per call, sequential.
//! Then the throughput of admit + settle with 32 callers at once, where the group commit of
//! `state_fsync = true` shows (sequential calls cannot share a flush).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::server::Connected;
use toolgate::admission::config::{StoreConfig, open_store};
use toolgate::admission::{Admission, Selector, Settings};
use toolgate::auth::Authenticator;
use toolgate::command::Argv;
use toolgate::policy::{PolicySet, Vars};
use toolgate::sandbox::{ExitStatus, Usage};
use toolgate::supervise::{Outcome, Output};

const ITERATIONS: usize = 20_000;
/// Callers in flight at once in the throughput run (below the tool's `max_concurrent`).
const CONCURRENCY: usize = 32;

const POLICY: &str = r#"
[tool.echo]
program = "/bin/echo"
rate_limit = { per_caller = "1000000/second", per_tool = "1000000/second" }
max_concurrent = 64
quota = { period = "day", invocations = 1000000000, cpu_seconds = 1000000000, output_bytes = "1000GiB" }
breaker = { failures = 5, cooldown = "30s" }
[tool.echo.arguments]
max_count = 8
deny_patterns = ['^-e$']
"#;

fn outcome() -> Outcome {
    Outcome {
        status: ExitStatus::Code(0),
        timed_out: false,
        cancelled: false,
        stdout: Output {
            bytes: Vec::new(),
            total: 3,
            truncated: false,
        },
        stderr: Output::default(),
        wall_time: Duration::from_millis(1),
        usage: Usage::default(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, store: StoreConfig) {
    let policy = PolicySet::from_sources(&[("bench.toml".into(), POLICY.to_owned())], &Vars::new())
        .expect("policy");
    let settings = Settings {
        default_callers: vec![Selector::Any],
        max_concurrent: Some(1024),
        per_caller_rate: Some(
            toolgate::admission::rate::Rate::parse("1000000/second", None).expect("rate"),
        ),
        ..Settings::default()
    };
    let admission = Arc::new(Admission::new(
        settings,
        open_store(&store).expect("store"),
        &policy,
    ));
    let auth = Arc::new(Authenticator::new(&Default::default(), false));
    let (stream, _peer) = tokio::net::UnixStream::pair().expect("socket pair");
    let info = stream.connect_info();
    let result = Ok(outcome());

    let mut admit_times = Vec::with_capacity(ITERATIONS);
    let mut total_times = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS + 1000 {
        let start = Instant::now();
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(info.clone());
        let caller = auth.identify(&request).expect("identify");
        let tool = policy.tool("echo").expect("tool");
        let argv = Argv::from_args(vec!["hello".into(), "world".into()], 65536).expect("argv");
        tool.rules.check(&argv).expect("rules");
        let permit = admission
            .admit(&caller, tool, tool.timeout)
            .await
            .expect("admitted");
        let admitted = start.elapsed();
        permit.settle(&result).await;
        let total = start.elapsed();
        if i >= 1000 {
            admit_times.push(admitted);
            total_times.push(total);
        }
    }
    admit_times.sort();
    total_times.sort();
    println!(
        "{name:<9} admit (auth+rules+authz+rate+quota reserve): p50 {:>7.1} µs  p99 {:>7.1} µs | with settle: p50 {:>7.1} µs  p99 {:>7.1} µs  ({ITERATIONS} calls)",
        percentile(&admit_times, 0.5).as_secs_f64() * 1e6,
        percentile(&admit_times, 0.99).as_secs_f64() * 1e6,
        percentile(&total_times, 0.5).as_secs_f64() * 1e6,
        percentile(&total_times, 0.99).as_secs_f64() * 1e6,
    );

    // Throughput with many callers at once: what group commit is for under `state_fsync`.
    let policy = Arc::new(policy);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (admission, policy, caller) = (
                Arc::clone(&admission),
                Arc::clone(&policy),
                caller_of(&auth, &info),
            );
            tokio::spawn(async move {
                let tool = policy.tool("echo").expect("tool");
                for _ in 0..ITERATIONS / CONCURRENCY {
                    let permit = admission
                        .admit(&caller, tool, tool.timeout)
                        .await
                        .expect("admitted");
                    permit.settle(&Ok(outcome())).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let calls = (ITERATIONS / CONCURRENCY * CONCURRENCY) as f64;
    println!(
        "{name:<9} admit + settle, {CONCURRENCY} callers at once: {:>9.0} calls/s",
        calls / start.elapsed().as_secs_f64()
    );
}

fn caller_of(
    auth: &Authenticator,
    info: &<tokio::net::UnixStream as Connected>::ConnectInfo,
) -> toolgate::auth::Caller {
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(info.clone());
    auth.identify(&request).expect("identify")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        measure(
            "embedded",
            StoreConfig {
                state_dir: dir.path().join("eventual"),
                ..StoreConfig::default()
            },
        )
        .await;
        measure(
            "fsync",
            StoreConfig {
                state_dir: dir.path().join("fsync"),
                fsync: true,
                ..StoreConfig::default()
            },
        )
        .await;

        let Some(binary) = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            println!("redis     skipped: no redis-server installed");
            return;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        measure(
            "redis",
            StoreConfig {
                state_dir: dir.path().join("redis-local"),
                redis: Some(
                    toolgate::admission::store::redis::Target::from_url(&format!(
                        "redis://127.0.0.1:{port}/"
                    ))
                    .expect("url"),
                ),
                ..StoreConfig::default()
            },
        )
        .await;
        let _ = server.kill();
        let _ = server.wait();
    });
}
