//! One invocation end to end: allowed, refused, parsed without a shell, capped, timed out.

use std::time::Duration;

use tonic::Code;
use toolgate::api::pb;

use super::*;

const ECHO: &str = r#"
[tool.echo]
description = "print arguments"
program = "/bin/echo"
cwd = "${work}"
[tool.echo.sandbox]
write = ["${work}"]

[tool.cat]
description = "print workspace files"
program = "/bin/cat"
cwd = "${work}"
[tool.cat.arguments]
positional = ['[^/].*']
deny_patterns = ['(.*/)?\.\.(/.*)?']
positional_help = "relative paths inside the workspace"
[tool.cat.sandbox]
read = ["${work}"]
"#;

fn echo_daemon() -> Daemon {
    Daemon::start(&format!("{ECHO}{PROBE_TOOL}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_run_returns_output_usage_and_one_audit_record() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let result = client
        .execute(args_request("echo", &["hello", "world"], "allowed-1"))
        .await
        .expect("echo runs")
        .into_inner();
    assert_eq!(text(&result.stdout), "hello world\n");
    assert_eq!(exit_code(&result), 0);
    assert!(!result.timed_out && !result.stdout_truncated);
    assert_eq!(result.request_id, "allowed-1");
    assert!(result.wall_time.is_some() && result.max_rss_bytes > 0);

    let record = daemon.record("allowed-1");
    assert_eq!(record["decision"], "allowed");
    assert_eq!(record["tool"], "echo");
    assert_eq!(
        record["argv"],
        serde_json::json!(["/bin/echo", "hello", "world"])
    );
    assert_eq!(record["caller"]["transport"], "unix");
    assert_eq!(record["caller"]["uid"], unsafe { libc::geteuid() });
    assert_eq!(record["caller"]["pid"], std::process::id());
    assert_eq!(record["outcome"]["exit_code"], 0);
    assert_eq!(record["outcome"]["stdout_bytes"], 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn command_line_is_split_without_a_shell() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let result = client
        .execute(command_request("echo", "echo 'a  b' \"c\\\"d\" e", "cmd-1"))
        .await
        .expect("runs")
        .into_inner();
    assert_eq!(text(&result.stdout), "a  b c\"d e\n");
    // The program's file name works as the first word too; anything else is refused.
    let status = client
        .execute(command_request("echo", "cat x", "cmd-2"))
        .await
        .expect_err("wrong program");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("start the command with `echo`"),
        "{}",
        status.message()
    );
    assert_eq!(daemon.record("cmd-2")["rule"], "command.program");
}

#[tokio::test(flavor = "multi_thread")]
async fn injection_strings_are_literal_arguments_and_nothing_is_created() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let marker = daemon.work.join("X");
    let injections = [
        "hi; touch X",
        "$(touch X)",
        "`touch X`",
        "| tee X",
        "&& touch X",
        "> X",
        "a\ntouch X",
    ];
    for (i, injection) in injections.iter().enumerate() {
        let id = format!("inject-args-{i}");
        let result = client
            .execute(args_request("echo", &[injection], &id))
            .await
            .expect("echo runs")
            .into_inner();
        assert_eq!(text(&result.stdout), format!("{injection}\n"));
        assert_eq!(daemon.record(&id)["argv"][1], *injection);

        // The same text inside a command line, quoted, is one literal argument too.
        let line = format!("echo {}", shlex::try_quote(injection).expect("quotable"));
        let result = client
            .execute(command_request("echo", &line, &format!("inject-cmd-{i}")))
            .await
            .expect("echo runs")
            .into_inner();
        assert_eq!(text(&result.stdout), format!("{injection}\n"));
    }
    // Unquoted metacharacters in a command line are just more words for echo.
    let result = client
        .execute(command_request(
            "echo",
            "echo hi; touch X | tee X && id > X",
            "inject-raw",
        ))
        .await
        .expect("echo runs")
        .into_inner();
    assert_eq!(text(&result.stdout), "hi; touch X | tee X && id > X\n");
    assert!(!marker.exists(), "{} was created", show(&marker));

    // Control: the tool can create files in the workspace, so the absence above means no
    // shell ran, not that creating X was impossible.
    let result = client
        .execute(args_request("probe", &["write", "X"], "inject-control"))
        .await
        .expect("probe runs")
        .into_inner();
    assert_eq!(exit_code(&result), 0, "{}", text(&result.stdout));
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_rule_and_are_audited() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;

    let status = client
        .execute(args_request("cat", &["/etc/shadow"], "deny-argv"))
        .await
        .expect_err("absolute path refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("argument 1 `/etc/shadow`")
            && status
                .message()
                .contains("relative paths inside the workspace")
            && status.message().contains("rule arguments.positional"),
        "{}",
        status.message()
    );
    let record = daemon.record("deny-argv");
    assert_eq!(record["decision"], "refused");
    assert_eq!(record["rule"], "arguments.positional");

    let status = client
        .execute(args_request("nope", &[], "deny-unknown"))
        .await
        .expect_err("unknown tool");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("unknown tool `nope`"));
    assert_eq!(daemon.record("deny-unknown")["rule"], "policy.unknown_tool");

    let status = client
        .execute(command_request("echo", "echo 'unbalanced", "deny-quote"))
        .await
        .expect_err("unbalanced quote");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("unbalanced ' quote opened at line 1, column 6"),
        "{}",
        status.message()
    );
    let record = daemon.record("deny-quote");
    assert_eq!(record["rule"], "command.parse");
    assert_eq!(record["command"], "echo 'unbalanced");

    let status = client
        .execute(command_request("echo", "echo hi # comment", "deny-comment"))
        .await
        .expect_err("comment refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("quote it"),
        "{}",
        status.message()
    );

    let mut request = args_request("probe", &["env"], "deny-env");
    request.env.insert("LD_PRELOAD".into(), "/tmp/x.so".into());
    let status = client.execute(request).await.expect_err("env refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("allowed: PROBE_ALLOWED"),
        "{}",
        status.message()
    );
    assert_eq!(daemon.record("deny-env")["rule"], "env.allow");

    let status = client
        .execute(args_request("echo", &["a\0b"], "deny-nul"))
        .await
        .expect_err("NUL refused");
    assert_eq!(status.code(), Code::InvalidArgument);

    // The daemon keeps serving after every refusal.
    let result = client
        .execute(args_request("echo", &["still here"], "after-refusals"))
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(text(&result.stdout), "still here\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_only_what_the_policy_allows() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let mut request = args_request("probe", &["env"], "env-1");
    request.env.insert("PROBE_ALLOWED".into(), "yes".into());
    let result = client.execute(request).await.expect("runs").into_inner();
    let mut lines: Vec<String> = text(&result.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.remove(0), "ok");
    lines.sort();
    assert_eq!(lines, ["FIXED=1", "PROBE_ALLOWED=yes"]);
    // Control: the daemon itself has a variable the tool did not get.
    let daemon_env = std::fs::read(format!("/proc/{}/environ", daemon.pid())).expect("environ");
    assert!(text(&daemon_env).contains("TOOLGATE_TEST_SECRET=daemon-only"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_is_fed_and_only_stdio_is_inherited() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let mut request = args_request("probe", &["echo-stdin"], "stdin-1");
    request.stdin = b"line one\nline two\n".to_vec();
    let result = client.execute(request).await.expect("runs").into_inner();
    assert_eq!(text(&result.stdout), "line one\nline two\n");

    let result = client
        .execute(args_request("probe", &["fds"], "fds-1"))
        .await
        .expect("runs")
        .into_inner();
    assert_eq!(text(&result.stdout).trim(), "ok 0,1,2");
    // Control: the daemon holds more descriptors than stdio (socket, audit log, rulesets).
    let daemon_fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("daemon fds")
        .count();
    assert!(daemon_fds > 5, "daemon has {daemon_fds} fds");
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_cap_is_discarded_without_blocking_the_tool() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    // 4 MiB is far past both the 64 KiB cap and a pipe's buffer: a tool blocked on a full
    // pipe would hit the 20 s time limit instead of exiting 0.
    let result = client
        .execute(args_request("probe", &["spew", "4194304"], "cap-1"))
        .await
        .expect("runs")
        .into_inner();
    assert_eq!(exit_code(&result), 0);
    assert!(!result.timed_out);
    assert_eq!(result.stdout.len(), 64 * 1024);
    assert!(result.stdout_truncated && !result.stderr_truncated);
    let record = daemon.record("cap-1");
    assert_eq!(record["outcome"]["stdout_bytes"], 4_194_304);
    assert_eq!(record["outcome"]["stdout_truncated"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_tool_and_its_grandchild() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let tag = unique_tag("timeout");
    let mut request = args_request("probe", &["fork-grandchild", &tag], "timeout-1");
    request.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let result = client
        .execute(request)
        .await
        .expect("a timeout is a result")
        .into_inner();
    assert!(result.timed_out);
    assert_eq!(
        result.termination,
        Some(pb::execute_result::Termination::Signal(libc::SIGKILL))
    );
    // Both processes printed their (namespace) pids before the deadline: they did run.
    let pids = fields(&text(&result.stdout));
    assert!(
        pids.contains_key("child") && pids.contains_key("grandchild"),
        "{pids:?}"
    );
    let survivors = wait_untagged(&tag, Duration::from_secs(5));
    assert!(
        survivors.is_empty(),
        "processes {survivors:?} survived the timeout"
    );
    let record = daemon.record("timeout-1");
    assert_eq!(record["outcome"]["timed_out"], true);
    assert_eq!(record["outcome"]["signal"], libc::SIGKILL);

    // Control: killing only the probe outside the sandbox leaves its grandchild running, so
    // the check above can fail.
    let mut outside = std::process::Command::new(PROBE)
        .args(["fork-grandchild", &tag])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("probe outside");
    let mut stdout = outside.stdout.take().expect("stdout");
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !(seen.contains("grandchild=") && seen.contains("child=")) {
        let n = stdout.read(&mut buf).expect("read probe");
        assert!(n > 0, "probe closed stdout early: {seen}");
        seen.push_str(&text(&buf[..n]));
    }
    let grandchild: i32 = fields(&seen)["grandchild"].parse().expect("pid");
    outside.kill().expect("kill probe");
    outside.wait().expect("reap probe");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(grandchild),
        "control: the grandchild should outlive its parent"
    );
    kill(grandchild);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_tools_describes_rules_in_words() {
    let daemon = echo_daemon();
    let mut client = daemon.client().await;
    let tools = client
        .list_tools(pb::ListToolsRequest {})
        .await
        .expect("list")
        .into_inner()
        .tools;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["cat", "echo", "probe"]);
    let cat = &tools[0];
    assert_eq!(cat.program, "cat");
    assert!(
        cat.argument_rules
            .iter()
            .any(|r| r.contains("relative paths inside the workspace")),
        "{:?}",
        cat.argument_rules
    );
    assert_eq!(tools[2].env_allowed, ["PROBE_ALLOWED"]);
}
