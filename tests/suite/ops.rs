//! What ops use: metrics, health, reflection, hot reload, structured logs, `policy explain`.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::*;

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// GET `path` over plain HTTP/1.1; the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name{labels}` (or `name`) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_scraped_over_http() {
    let port = free_port();
    let daemon = Daemon::start_with(
        PROBE_TOOL,
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    let mut client = daemon.client().await;
    client
        .execute(args_request("probe", &["exit", "0"], "m-1"))
        .await
        .expect("ok");
    client
        .execute(args_request("probe", &["exit", "3"], "m-2"))
        .await
        .expect("ok");
    client
        .execute(args_request("no-such-tool", &[], "m-3"))
        .await
        .expect_err("refused");

    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    let expect = [
        (
            r#"toolgate_invocations_total{tool="probe",decision="allowed",outcome="success"}"#,
            1.0,
        ),
        (
            r#"toolgate_invocations_total{tool="probe",decision="allowed",outcome="failure"}"#,
            1.0,
        ),
        (
            r#"toolgate_invocations_total{tool="",decision="refused",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"toolgate_refusals_total{rule="policy.unknown_tool"}"#,
            1.0,
        ),
        ("toolgate_in_flight", 0.0),
        ("toolgate_run_seconds_count", 2.0),
        ("toolgate_sandbox_start_seconds_count", 2.0),
        ("toolgate_admission_seconds_count", 3.0),
        ("toolgate_audit_failing", 0.0),
        ("toolgate_audit_write_errors_total", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&body, series), Some(value), "{series} in\n{body}");
    }
    // file_start + 2 × (start, end) + 1 refusal.
    assert!(
        sample(&body, "toolgate_audit_records_total").is_some_and(|n| n >= 6.0),
        "{body}"
    );
    assert!(sample(&body, "toolgate_audit_write_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(body.contains("toolgate_build_info{version=\""), "{body}");
    let (status, _) = http_get(port, "/other");
    assert!(status.contains("404"), "{status}");
}

fn status_of(response: tonic_health::pb::HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(response.status).expect("known status")
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_serving_until_the_drain_begins() {
    let mut daemon = Daemon::start_with(PROBE_TOOL, "drain_timeout = \"10s\"");
    let mut health = HealthClient::new(daemon.channel().await);
    for service in ["", "toolgate.v1.ToolGate"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check");
        assert_eq!(
            status_of(response.into_inner()),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);

    // Keep a call running so the drain lasts; the open connection sees NOT_SERVING.
    let mut client = daemon.client().await;
    let mut stream = client
        .execute_stream(args_request("probe", &["sleep", "2"], "health-drain"))
        .await
        .expect("stream")
        .into_inner();
    stream.message().await.expect("started").expect("event");
    daemon.signal(libc::SIGTERM);
    let start = std::time::Instant::now();
    loop {
        let response = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        match response {
            Ok(r) if status_of(*r.get_ref()) == ServingStatus::NotServing => break,
            Ok(_) => {}
            // The server may already refuse new streams on this connection: also not serving.
            Err(_) => break,
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still serving while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Ok(Some(_)) = stream.message().await {}
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_and_describes_them() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let daemon = Daemon::start(PROBE_TOOL);
    let mut reflection = ServerReflectionClient::new(daemon.channel().await);
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "toolgate.v1.ToolGate".to_owned(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection")
        .into_inner();
    let listed = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "toolgate.v1.ToolGate",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let described = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("unexpected {described:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let file = &files.file_descriptor_proto[0];
    let text = String::from_utf8_lossy(file);
    assert!(text.contains("toolgate/v1/toolgate.proto"), "{text}");
}

const ECHO2: &str = r#"
[tool.echo2]
description = "added while running"
program = "/bin/echo"
"#;

async fn tool_names(daemon: &Daemon) -> Vec<String> {
    let mut client = daemon.client().await;
    client
        .list_tools(pb::ListToolsRequest {})
        .await
        .expect("list")
        .into_inner()
        .tools
        .into_iter()
        .map(|t| t.name)
        .collect()
}

async fn wait_tools(daemon: &Daemon, expected: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let names = tool_names(daemon).await;
        if names == expected {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tools {names:?}, expected {expected:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reloads(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "policy_reload")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_the_policy_directory_reloads_and_a_broken_edit_keeps_the_old_set() {
    let port = free_port();
    let daemon = Daemon::start_with(
        PROBE_TOOL,
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    assert_eq!(tool_names(&daemon).await, ["probe"]);

    std::fs::write(daemon.policies().join("extra.toml"), ECHO2).expect("write");
    wait_tools(&daemon, &["echo2", "probe"]).await;
    let mut client = daemon.client().await;
    let out = client
        .execute(args_request("echo2", &["hi"], "reload-1"))
        .await
        .expect("the new tool runs")
        .into_inner();
    assert_eq!(text(&out.stdout), "hi\n");

    // A broken file: rejected with its place, the set in force stays.
    std::fs::write(
        daemon.policies().join("broken.toml"),
        "[tool.broken]\nprogram = \"/bin/echo\"\ntimeuot = \"1s\"\n",
    )
    .expect("write");
    daemon.wait_for(Duration::from_secs(10), "rejected reload audited", || {
        reloads(&daemon).iter().any(|r| r["decision"] == "rejected")
    });
    let rejected = reloads(&daemon)
        .into_iter()
        .find(|r| r["decision"] == "rejected")
        .expect("rejected");
    assert_eq!(rejected["rule"], "policy.reload");
    assert_eq!(rejected["trigger"], "watch");
    let message = rejected["message"].as_str().expect("message");
    assert!(
        message.contains("broken.toml:3:1: unknown field `timeuot`"),
        "{message}"
    );
    assert!(daemon.log().contains("broken.toml:3:1"), "{}", daemon.log());
    assert_eq!(tool_names(&daemon).await, ["echo2", "probe"]);
    client
        .execute(args_request("echo2", &["still"], "reload-2"))
        .await
        .expect("the old set still serves");
    let (_, body) = http_get(port, "/metrics");
    assert_eq!(
        sample(&body, r#"toolgate_policy_reloads_total{result="failed"}"#),
        Some(1.0),
        "{body}"
    );
    assert!(
        sample(&body, r#"toolgate_policy_reloads_total{result="ok"}"#).is_some_and(|n| n >= 1.0)
    );

    // Fixing it applies the whole set again.
    std::fs::remove_file(daemon.policies().join("broken.toml")).expect("rm");
    std::fs::remove_file(daemon.policies().join("extra.toml")).expect("rm");
    wait_tools(&daemon, &["probe"]).await;
    assert!(daemon.verify_audit().status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_when_the_directory_is_not_watched() {
    let daemon = Daemon::start_with(PROBE_TOOL, "watch_policy_dir = false");
    std::fs::write(daemon.policies().join("extra.toml"), ECHO2).expect("write");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        tool_names(&daemon).await,
        ["probe"],
        "not watched: no reload yet"
    );
    daemon.signal(libc::SIGHUP);
    wait_tools(&daemon, &["echo2", "probe"]).await;
    let applied = reloads(&daemon);
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(applied[0]["trigger"], "signal");
    assert_eq!(applied[0]["decision"], "applied");
    assert_eq!(applied[0]["tools"], serde_json::json!(["echo2", "probe"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_in_flight_finishes_under_the_policy_it_started_with() {
    let daemon = Daemon::start(PROBE_TOOL);
    let mut client = daemon.client().await;
    let mut stream = client
        .execute_stream(args_request("probe", &["sleep", "1"], "inflight-1"))
        .await
        .expect("stream")
        .into_inner();
    stream.message().await.expect("started").expect("event");
    // Replace the probe tool with another one while it runs.
    std::fs::write(daemon.policies().join("test.toml"), ECHO2).expect("write");
    wait_tools(&daemon, &["echo2"]).await;
    let mut exited = None;
    while let Some(event) = stream.message().await.expect("stream continues") {
        if let Some(pb::execute_event::Event::Exited(result)) = event.event {
            exited = Some(result);
        }
    }
    assert_eq!(exit_code(&exited.expect("exited")), 0);
    let status = client
        .execute(args_request("probe", &["exit", "0"], "inflight-2"))
        .await
        .expect_err("the tool is gone for new calls");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_request_id_on_every_line_of_an_invocation() {
    let daemon = Daemon::start_custom(PROBE_TOOL, "", |command| {
        command.arg("--log-json");
    });
    let mut client = daemon.client().await;
    client
        .execute(args_request("probe", &["exit", "0"], "log-1"))
        .await
        .expect("ok");
    let mut refused = args_request("probe", &["exit", "0"], "log-2");
    refused.env.insert("NOT_ALLOWED".to_owned(), "1".to_owned());
    client.execute(refused).await.expect_err("refused");
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |id: &str| {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .map(|l| {
                l["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert!(
        of("log-1").contains(&"invocation finished".to_owned()),
        "{log}"
    );
    assert!(
        of("log-2").contains(&"invocation refused".to_owned()),
        "{log}"
    );
    // Every line inside an invocation span names its request.
    for line in &lines {
        let in_invocation = line["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "invocation"));
        if in_invocation {
            assert!(line["span"]["request_id"].is_string(), "{line}");
        }
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("invocation ") {
            assert!(in_invocation, "an invocation line outside its span: {line}");
        }
    }
}

fn explain(args: &[&str]) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(TOOLGATE)
        .args(["policy", "explain", "--config"])
        .arg(format!("{root}/examples/toolgate.toml"))
        .args(args)
        .output()
        .expect("run explain")
}

#[test]
fn policy_explain_tells_the_decision_and_the_rule_without_running_anything() {
    let out = explain(&["ls", "--", "-la", "notes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("decision: allowed"), "{stdout}");
    assert!(stdout.contains("rule:     policy"), "{stdout}");
    assert!(stdout.contains("would run: /bin/ls -la notes"), "{stdout}");
    assert!(stdout.contains("policies/files.toml"), "{stdout}");

    let out = explain(&["cat", "--", "/etc/shadow"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("decision: refused"), "{stdout}");
    assert!(
        stdout.contains("rule:     arguments.positional"),
        "{stdout}"
    );

    let out = explain(&[
        "--json",
        "--caller",
        "unix:1234",
        "--command",
        "echo 'a; b'",
        "echo",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["decision"], "allowed");
    assert_eq!(json["argv"], serde_json::json!(["/bin/echo", "a; b"]));
    assert_eq!(json["caller"]["uid"], 1234);

    let out = explain(&["nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("rule:     policy.unknown_tool"));
}

#[test]
fn journal_is_chosen_only_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    if Path::new("/run/systemd/journal/socket").exists() {
        // A real journal would take the lines this test reads from the log file.
        eprintln!("SKIPPED journal test: this host runs journald");
        return;
    }
    // JOURNAL_STREAM naming another stream: plain stderr, as if inherited by a child process.
    let daemon = Daemon::start_custom(PROBE_TOOL, "", |command| {
        command.env("JOURNAL_STREAM", "1:1");
    });
    assert!(!daemon.log().contains("journal"), "{}", daemon.log());
    drop(daemon);
    // JOURNAL_STREAM naming the daemon's stderr: the journal is chosen; here none listens, so
    // the daemon says so and logs to stderr instead, still starting.
    let daemon = Daemon::start_custom(PROBE_TOOL, "", |command| {
        let config = command
            .get_args()
            .nth(2)
            .map(PathBuf::from)
            .expect("config path");
        let log = config.with_file_name("daemon.log");
        let meta = std::fs::metadata(&log).expect("log exists");
        command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    });
    daemon.wait_for(Duration::from_secs(5), "journal fallback", || {
        daemon.log().contains("cannot log to the journal") && daemon.log().contains("ready")
    });
}
