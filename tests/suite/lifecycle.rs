//! The daemon over time: draining on SIGTERM, cancellation by the caller, deadlines.

use std::time::Duration;

use tonic::Code;

use super::*;

/// Waits for the `Started` event of a streamed call and returns the rest of the stream.
async fn start_streaming(
    daemon: &Daemon,
    args: &[&str],
    id: &str,
) -> tonic::Streaming<pb::ExecuteEvent> {
    let mut client = daemon.client().await;
    let mut stream = client
        .execute_stream(args_request("probe", args, id))
        .await
        .expect("stream starts")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first event")
        .expect("an event");
    assert!(
        matches!(first.event, Some(pb::execute_event::Event::Started(ref s)) if s.request_id == id),
        "first event: {first:?}"
    );
    stream
}

/// Reads the stream until the probe's child and grandchild have both printed their pids.
async fn wait_for_both_pids(stream: &mut tonic::Streaming<pb::ExecuteEvent>) {
    let mut seen = String::new();
    while !(seen.contains("grandchild=") && seen.contains("child=")) {
        match stream
            .message()
            .await
            .expect("event")
            .expect("not ended")
            .event
        {
            Some(pb::execute_event::Event::Stdout(bytes)) => seen.push_str(&text(&bytes)),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_call_in_flight_then_exits_zero() {
    let mut daemon = Daemon::start(PROBE_TOOL);
    let mut stream = start_streaming(&daemon, &["sleep", "1"], "drain-1").await;
    daemon.signal(libc::SIGTERM);
    let mut exited = None;
    while let Some(event) = stream
        .message()
        .await
        .expect("stream continues during drain")
    {
        if let Some(pb::execute_event::Event::Exited(result)) = event.event {
            exited = Some(result);
        }
    }
    let result = exited.expect("the call in flight finished");
    assert_eq!(exit_code(&result), 0);
    assert!(!result.timed_out);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit: {status}\n{}", daemon.log());
    assert_eq!(daemon.record("drain-1")["outcome"]["cancelled"], false);
    assert!(!daemon.socket.exists(), "socket file removed at exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_timeout_kills_what_is_left_and_records_it() {
    let mut daemon = Daemon::start_with(PROBE_TOOL, "drain_timeout = \"500ms\"");
    let mut stream = start_streaming(&daemon, &["sleep", "30"], "drain-kill").await;
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit: {status}\n{}", daemon.log());
    // The stream ends one way or the other; what matters is the record.
    while let Ok(Some(_)) = stream.message().await {}
    let record = daemon.record("drain-kill");
    assert_eq!(record["outcome"]["cancelled"], true);
    assert_eq!(record["outcome"]["signal"], libc::SIGKILL);
}

#[tokio::test(flavor = "multi_thread")]
async fn caller_going_away_kills_the_process_tree() {
    let daemon = Daemon::start(PROBE_TOOL);
    let tag = unique_tag("cancel");
    let mut stream = start_streaming(&daemon, &["fork-grandchild", &tag], "cancel-1").await;
    wait_for_both_pids(&mut stream).await;
    assert_eq!(
        tagged(&tag).len(),
        2,
        "child and grandchild run, visible from the host"
    );
    drop(stream);
    let survivors = wait_untagged(&tag, Duration::from_secs(5));
    assert!(
        survivors.is_empty(),
        "processes {survivors:?} survived cancellation"
    );
    let record = daemon.record("cancel-1");
    assert_eq!(record["outcome"]["cancelled"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_grpc_deadline_kills_the_tool() {
    let daemon = Daemon::start(PROBE_TOOL);
    let mut client = daemon.client().await;
    let tag = unique_tag("deadline");
    let mut request = tonic::Request::new(args_request(
        "probe",
        &["fork-grandchild", &tag],
        "deadline-1",
    ));
    request.set_timeout(Duration::from_millis(700));
    let status = client.execute(request).await.expect_err("deadline passes");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let record = daemon.record("deadline-1");
    assert_eq!(record["outcome"]["cancelled"], true);
    let output = record["outcome"]["stdout_bytes"].as_u64().expect("bytes");
    assert!(output > 0, "the probe printed its pids before the deadline");
    let survivors = wait_untagged(&tag, Duration::from_secs(5));
    assert!(
        survivors.is_empty(),
        "processes {survivors:?} survived the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_output_arrives_in_order_between_started_and_exited() {
    let daemon = Daemon::start(PROBE_TOOL);
    let mut stream = start_streaming(&daemon, &["spew", "200000"], "stream-1").await;
    let mut bytes = 0;
    let mut exited = None;
    while let Some(event) = stream.message().await.expect("event") {
        match event.event {
            Some(pb::execute_event::Event::Stdout(chunk)) => {
                assert!(exited.is_none(), "output after exit");
                bytes += chunk.len();
            }
            Some(pb::execute_event::Event::Exited(result)) => exited = Some(result),
            other => panic!("unexpected {other:?}"),
        }
    }
    let result = exited.expect("exited event");
    // The probe tool's cap is 64 KiB; streaming honours it too.
    assert_eq!(bytes, 64 * 1024);
    assert!(result.stdout_truncated && result.stdout.is_empty());
    assert_eq!(exit_code(&result), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_kills_what_the_drain_leaves_and_every_start_has_its_end() {
    let mut daemon = Daemon::start_with(PROBE_TOOL, "drain_timeout = \"700ms\"");
    let mut streams = Vec::new();
    for n in 0..4 {
        // Two finish within the drain, two are killed at its end.
        let secs = if n % 2 == 0 { "0.2" } else { "30" };
        streams.push(start_streaming(&daemon, &["sleep", secs], &format!("stop-{n}")).await);
    }
    let began = std::time::Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "daemon exit: {status}\n{}", daemon.log());
    assert!(
        began.elapsed() < Duration::from_secs(7),
        "the drain is bounded by drain_timeout plus the kill grace"
    );
    drop(streams);
    for n in 0..4 {
        let id = format!("stop-{n}");
        let records = daemon.records_of(&id);
        let events: Vec<_> = records.iter().map(|r| r["event"].clone()).collect();
        assert_eq!(events, ["start", "end"], "{id}: {records:#?}");
        let cancelled = records[1]["outcome"]["cancelled"] == true;
        assert_eq!(cancelled, n % 2 == 1, "{id}: {:#?}", records[1]);
    }
    let out = daemon.verify_audit();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_takes_its_sandboxes_with_it() {
    let mut daemon = Daemon::start(PROBE_TOOL);
    let tag = unique_tag("orphan");
    let mut stream = start_streaming(&daemon, &["fork-grandchild", &tag], "orphan-1").await;
    wait_for_both_pids(&mut stream).await;
    assert_eq!(tagged(&tag).len(), 2, "the sandbox runs");
    // No drain, no cleanup: nothing in the daemon gets to kill the sandbox.
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    let survivors = wait_untagged(&tag, Duration::from_secs(5));
    assert!(
        survivors.is_empty(),
        "processes {survivors:?} outlived the daemon"
    );
}
