//! Spawn cost: a raw spawn, toolgate's full sandbox through the daemon's own spawn path, and
//! bubblewrap with comparable isolation, measured in one run on the same commands.
//!
//! `cargo bench --bench spawn` (run as root for the full sandbox with cgroups and the network
//! namespace pool, as the daemon runs in production). Prints latency p50/p99 of sequential
//! invocations and throughput with 4 in flight, for `/bin/true` and `echo hello`, and each
//! median as a ratio to the raw spawn's. Results are recorded in docs/BENCHMARKS.md.
//!
//! Environment: `BENCH_ITERATIONS` (default 400), `BENCH_SECONDS` for each throughput run
//! (default 3), `BENCH_RUNNERS` (comma-separated subset of `raw,toolgate,bwrap`; default all).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;
use toolgate::sandbox::{self, Host, Limits, Network, Plan, Profile, Spec};
use toolgate::supervise::{self, Supervision};

const CONCURRENCY: usize = 4;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Times `iterations` sequential calls, then counts calls completed in `seconds` with
/// `CONCURRENCY` in flight.
fn measure<F>(iterations: u64, seconds: u64, call: F) -> Stats
where
    F: Fn() + Send + Sync + 'static,
{
    let call = Arc::new(call);
    for _ in 0..20 {
        call();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let call = Arc::clone(&call);
            std::thread::spawn(move || {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    call();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let start = Instant::now();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    Stats {
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
        per_second: total as f64 / start.elapsed().as_secs_f64(),
    }
}

fn raw(argv: &'static [&'static str]) -> impl Fn() + Send + Sync {
    move || {
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("raw spawn");
        assert!(status.status.success());
    }
}

/// bubblewrap with the isolation toolgate gives: every namespace, a read-only system view,
/// private /tmp, /proc and /dev, no capabilities, a new session, dying with its parent.
fn bubblewrap(argv: &'static [&'static str]) -> impl Fn() + Send + Sync {
    move || {
        let mut command = Command::new("bwrap");
        command.args([
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--ro-bind",
            "/etc/ld.so.cache",
            "/etc/ld.so.cache",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--",
        ]);
        let output = command
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("bwrap");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn profile(program: &Path, work: &Path) -> Profile {
    let spec = Spec {
        read: vec![],
        write: vec![work.to_owned()],
        system_paths: true,
        network: Network::None,
        limits: Limits {
            memory: Some(256 << 20),
            processes: Some(64),
            cpu_time: Some(Duration::from_secs(10)),
            cpus: Some(1.0),
            open_files: 1024,
            file_size: None,
            tmp_size: 64 << 20,
        },
        run_as: None,
        min_landlock_abi: None,
        seccomp: sandbox::SeccompSpec {
            profile: "default".to_owned(),
            allow: Vec::new(),
            deny_action: sandbox::DenyAction::Errno,
            network: Network::None,
        },
    };
    Profile::compile(&spec, program, work).expect("profile")
}

/// toolgate's spawn path: plan, spawn (namespaces, root, landlock, seccomp, cgroup), supervise
/// with capped capture, reap.
fn toolgate(
    runtime: Arc<tokio::runtime::Runtime>,
    host: Arc<Host>,
    profile: Arc<Profile>,
    work: PathBuf,
    argv: &'static [&'static str],
) -> impl Fn() + Send + Sync {
    move || {
        let host = Arc::clone(&host);
        let profile = Arc::clone(&profile);
        let work = work.clone();
        runtime.block_on(async move {
            let args: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let plan =
                Plan::new(Path::new(argv[0]), &args, &[], &work, &profile, &host).expect("plan");
            let child = sandbox::spawn(&plan, &host).await.expect("spawn");
            let outcome = supervise::supervise(
                child,
                Supervision {
                    stdin: Vec::new(),
                    deadline: TokioInstant::now() + Duration::from_secs(10),
                    cancel: CancellationToken::new(),
                    max_output: 1 << 20,
                    events: None,
                },
            )
            .await
            .expect("supervise");
            assert_eq!(outcome.status, sandbox::ExitStatus::Code(0));
        });
    }
}

fn main() {
    let iterations = env_number("BENCH_ITERATIONS", 400);
    let seconds = env_number("BENCH_SECONDS", 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical");
    let work = root.join("work");
    std::fs::create_dir(&work).expect("work dir");
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    );
    let host = {
        let _guard = runtime.enter();
        Arc::new(Host::prepare(&root.join("sandbox-root"), (65534, 65534)).expect("host"))
    };
    println!("host:");
    for (feature, state) in host.features() {
        println!("  {feature}: {state}");
    }
    let bwrap_available = Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());

    println!();
    println!(
        "| command | runner | p50 | p99 | p50 vs raw | invocations/s ({CONCURRENCY} in flight) |"
    );
    println!("|---|---|---|---|---|---|");
    let commands: [&'static [&'static str]; 2] = [&["/bin/true"], &["/bin/echo", "hello"]];
    for argv in commands {
        let name = argv.join(" ");
        let baseline = measure(iterations, seconds, raw(argv));
        let mut rows = vec![(
            "raw spawn (std::process)",
            baseline.p50,
            baseline.p99,
            baseline.per_second,
        )];
        let tool_profile = Arc::new(profile(Path::new(argv[0]), &work));
        let sandboxed = measure(
            iterations,
            seconds,
            toolgate(
                Arc::clone(&runtime),
                Arc::clone(&host),
                tool_profile,
                work.clone(),
                argv,
            ),
        );
        rows.push((
            "toolgate full sandbox",
            sandboxed.p50,
            sandboxed.p99,
            sandboxed.per_second,
        ));
        if bwrap_available {
            let b = measure(iterations, seconds, bubblewrap(argv));
            rows.push(("bubblewrap", b.p50, b.p99, b.per_second));
        }
        for (runner, p50, p99, per_second) in rows {
            println!(
                "| `{name}` | {runner} | {:.2} ms | {:.2} ms | {:.2}× | {per_second:.0} |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                p50.as_secs_f64() / baseline.p50.as_secs_f64(),
            );
        }
    }
    if !bwrap_available {
        println!("\n(bubblewrap not installed: `apt-get install bubblewrap` to compare)");
    }
}
