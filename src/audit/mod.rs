//! The audit log: a hash-chained, durable record of every request, allowed or refused.
//!
//! An allowed invocation has two records: `start`, written and made durable before the tool
//! runs, and `end`, with its outcome; a refused one has one `refusal` record. Policy reloads
//! (`policy_reload`), the first record of every file (`file_start`) and the end of an outage
//! (`audit_resumed`) are recorded too. The JSON shape is a contract with whoever ingests it
//! (snapshot-tested).
//!
//! Invariants: each line carries `seq` and `prev`, the hash of the line before it, across
//! rotated files ([`chain`]); one thread writes the file ([`writer`]), and a record is
//! acknowledged only once it is as durable as the `audit_durability` setting says, so after a
//! crash every acknowledged record is in the file and the chain verifies ([`verify`]). Secret
//! arguments are replaced before a record is serialized, so secrets never reach the file or the
//! hash ([`redact`]).
//!
//! Security assumptions: the daemon's user owns the log (mode 0600) and is the only writer.
//! When the log cannot be written, the gate refuses new invocations (fail closed) unless
//! `on_audit_failure = "allow"` says otherwise.

pub mod chain;
pub mod redact;
pub mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::telemetry::metrics::AuditMetrics;

use serde::Serialize;

use crate::auth::Caller;
use crate::sandbox::ExitStatus;
use crate::supervise::Outcome;

/// Whether the request was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every stage allowed it and the tool ran.
    Allowed,
    /// A stage refused it; `rule` says which.
    Refused,
}

/// Which moment of an invocation a record tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Allowed; written before the tool runs.
    Start,
    /// The run ended (or could not start); carries the outcome.
    End,
    /// Refused before anything ran.
    Refusal,
}

/// One audit record of an invocation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// When the record was made, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Start, end or refusal.
    pub event: Event,
    /// The request's id.
    pub request_id: String,
    /// Who asked.
    pub caller: Caller,
    /// The tool named in the request.
    pub tool: String,
    /// The full argument vector run (program first), when it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// The command line as the caller wrote it, when given as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Allowed or refused.
    pub decision: Decision,
    /// The rule behind the decision: `policy` for an allowed run, else what refused it.
    pub rule: String,
    /// The refusal's message (what the caller was told), if refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How the run ended, for allowed requests that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeRecord>,
}

/// The measured end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutcomeRecord {
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal, if a signal killed it.
    pub signal: Option<i32>,
    /// Killed at its deadline.
    pub timed_out: bool,
    /// Killed because the caller went away or the daemon stopped.
    pub cancelled: bool,
    /// Wall time in milliseconds.
    pub wall_ms: u64,
    /// User CPU in milliseconds.
    pub user_cpu_ms: u64,
    /// System CPU in milliseconds.
    pub system_cpu_ms: u64,
    /// Peak RSS in bytes.
    pub max_rss_bytes: u64,
    /// Bytes the tool wrote to stdout (kept or not).
    pub stdout_bytes: u64,
    /// Bytes the tool wrote to stderr (kept or not).
    pub stderr_bytes: u64,
    /// Whether stdout passed the cap.
    pub stdout_truncated: bool,
    /// Whether stderr passed the cap.
    pub stderr_truncated: bool,
}

impl From<&Outcome> for OutcomeRecord {
    fn from(outcome: &Outcome) -> Self {
        let (exit_code, signal) = match outcome.status {
            ExitStatus::Code(code) => (Some(code), None),
            ExitStatus::Signal(signal) => (None, Some(signal)),
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            exit_code,
            signal,
            timed_out: outcome.timed_out,
            cancelled: outcome.cancelled,
            wall_ms: ms(outcome.wall_time),
            user_cpu_ms: ms(outcome.usage.user_cpu),
            system_cpu_ms: ms(outcome.usage.system_cpu),
            max_rss_bytes: outcome.usage.max_rss_bytes,
            stdout_bytes: outcome.stdout.total,
            stderr_bytes: outcome.stderr.total,
            stdout_truncated: outcome.stdout.truncated,
            stderr_truncated: outcome.stderr.truncated,
        }
    }
}

/// The current time as the records write it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// What the log does when it cannot be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse new invocations with UNAVAILABLE until the log works again (fail closed).
    #[default]
    Refuse,
    /// Keep running tools and hold their records in memory (bounded) until the log works.
    Allow,
}

/// How durable a record is when the caller is told about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync after every record.
    Always,
    /// Group commit: one fsync for every record that arrived meanwhile.
    #[default]
    Batch,
    /// Written to the kernel, never fsynced: a power loss may lose acknowledged records.
    None,
}

/// Which record it is, for what happens to it while the log fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Before a run: the run waits for it.
    Start,
    /// After a run: held through a failure, because the run happened.
    End,
    /// A refusal.
    Refusal,
    /// A policy reload: held through a failure.
    Reload,
}

/// The audit log's settings, from the daemon config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The current file; rotated files get `.1`, `.2`, ...
    pub path: PathBuf,
    /// When a record counts as written.
    pub durability: Durability,
    /// With `batch`, how long to wait for more records before an fsync.
    pub batch_delay: Duration,
    /// Rotate once the file reaches this size.
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: usize,
    /// Refuse or allow invocations while the log cannot be written.
    pub on_failure: OnFailure,
    /// Where to count writes and errors.
    pub metrics: AuditMetrics,
}

impl Settings {
    /// Defaults for a log at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            durability: Durability::Batch,
            batch_delay: Duration::ZERO,
            max_bytes: None,
            keep: 10,
            on_failure: OnFailure::Refuse,
            metrics: AuditMetrics::default(),
        }
    }
}

/// Why the audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening (or creating) the file failed.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing failed while opening the log.
    #[error("cannot write audit log {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The log cannot be written now; the record was not written (and, for a run that
    /// happened, is held until the log works again).
    #[error("the audit log cannot be written now")]
    Unavailable,
    /// A record could not be serialized.
    #[error("cannot serialize an audit record: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The log was closed (the daemon is stopping).
    #[error("the audit log is closed")]
    Closed,
}

/// A handle on the audit log; records go to its writer thread.
#[derive(Debug)]
pub struct AuditLog {
    sender: Mutex<Option<mpsc::Sender<writer::Submission>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<writer::Shared>,
    on_failure: OnFailure,
}

/// The acknowledgement of one record: resolves once it is durable, or failed.
pub struct Ack(Result<oneshot::Receiver<Result<(), Error>>, Option<Error>>);

impl std::future::IntoFuture for Ack {
    type Output = Result<(), Error>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.0 {
                Ok(rx) => rx.await.unwrap_or(Err(Error::Closed)),
                Err(e) => Err(e.unwrap_or(Error::Closed)),
            }
        })
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log and starts its writer thread.
    pub fn open(settings: Settings) -> Result<Self, Error> {
        let (healthy, _) = watch::channel(true);
        let shared = Arc::new(writer::Shared {
            failing: AtomicBool::new(false),
            healthy,
        });
        let on_failure = settings.on_failure;
        let path = settings.path.clone();
        let writer = writer::Writer::open(settings, Arc::clone(&shared))?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|source| Error::Open { path, source })?;
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            shared,
            on_failure,
        })
    }

    /// Hands `record` to the writer now; await the returned [`Ack`] for its durability.
    /// The record is written even if the `Ack` is dropped.
    pub fn submit<T: serde::Serialize>(&self, record: &T, kind: Kind) -> Ack {
        let body = match serde_json::to_vec(record) {
            Ok(body) => body,
            Err(e) => return Ack(Err(Some(e.into()))),
        };
        let (ack, rx) = oneshot::channel();
        // A poisoned lock only means another submitter panicked; the sender is fine.
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref() {
            Some(sender) if sender.send(writer::Submission { body, kind, ack }).is_ok() => {
                Ack(Ok(rx))
            }
            _ => Ack(Err(Some(Error::Closed))),
        }
    }

    /// Writes `record` and waits until it is durable.
    pub async fn append<T: serde::Serialize>(&self, record: &T, kind: Kind) -> Result<(), Error> {
        self.submit(record, kind).await
    }

    /// Whether the log cannot be written now and invocations must be refused.
    pub fn refuses(&self) -> bool {
        self.on_failure == OnFailure::Refuse && self.shared.failing.load(Ordering::SeqCst)
    }

    /// Whether the log cannot be written now.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::SeqCst)
    }

    /// Follows the log's health: `true` while it can be written.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.shared.healthy.subscribe()
    }

    /// Writes what was submitted, closes the file and stops the writer; later records fail.
    pub fn close(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;
    use crate::sandbox::{ExitStatus, Usage};
    use crate::supervise::{Outcome, Output};
    use std::path::Path;

    fn sample() -> Record {
        let outcome = Outcome {
            status: ExitStatus::Code(0),
            timed_out: false,
            cancelled: false,
            stdout: Output {
                bytes: b"hi\n".to_vec(),
                total: 3,
                truncated: false,
            },
            stderr: Output::default(),
            wall_time: Duration::from_millis(12),
            usage: Usage {
                user_cpu: Duration::from_millis(1),
                system_cpu: Duration::from_millis(2),
                max_rss_bytes: 4096,
            },
        };
        Record {
            time: "2026-11-21T13:00:00.000Z".into(),
            event: Event::End,
            request_id: "req-1".into(),
            caller: Caller::Unix {
                uid: 1000,
                gid: 1000,
                pid: Some(42),
                user: Some("alice".into()),
                groups: vec!["alice".into(), "agents".into()],
            },
            tool: "echo".into(),
            argv: Some(vec!["/bin/echo".into(), "hi".into()]),
            command: None,
            decision: Decision::Allowed,
            rule: "policy".into(),
            message: None,
            outcome: Some(OutcomeRecord::from(&outcome)),
        }
    }

    /// The JSON shape is a contract with log ingestion: a change here must be deliberate.
    /// This is the line as written: the chain fields first, then the record.
    #[test]
    fn record_shape_is_stable() {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            seq: u64,
            prev: String,
            #[serde(flatten)]
            record: &'a Record,
        }
        let record = sample();
        let line = Line {
            seq: 41,
            prev: "ab".repeat(32),
            record: &record,
        };
        // The snapshot shows exactly the bytes the writer produces, field order included.
        let body = serde_json::to_vec(&record).unwrap();
        let written = chain::compose(41, &line.prev, &body);
        assert_eq!(written, serde_json::to_vec(&line).unwrap());
        insta::assert_json_snapshot!(line);
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn records_are_chained_from_a_file_header_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(Settings::new(path.clone())).unwrap();
        log.append(&sample(), Kind::End).await.unwrap();
        log.append(&sample(), Kind::End).await.unwrap();
        log.close();
        let records = lines(&path);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0]["event"], "file_start");
        assert_eq!(records[0]["prev"], chain::GENESIS);
        assert_eq!(records[2]["seq"], 2);
        assert_eq!(records[1]["caller"]["transport"], "unix");
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(records[1]["prev"], chain::hash(first.as_bytes()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        verify::verify(&[path]).unwrap();
    }

    #[tokio::test]
    async fn reopening_continues_the_chain_and_rotation_links_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let settings = Settings {
            max_bytes: Some(1500),
            keep: 2,
            ..Settings::new(path.clone())
        };
        for _ in 0..3 {
            let log = AuditLog::open(settings.clone()).unwrap();
            for _ in 0..4 {
                log.append(&sample(), Kind::End).await.unwrap();
            }
        }
        let files = [
            PathBuf::from(format!("{}.2", path.display())),
            PathBuf::from(format!("{}.1", path.display())),
            path.clone(),
        ];
        for file in &files {
            assert!(file.exists(), "{}", file.display());
            assert_eq!(lines(file)[0]["event"], "file_start");
        }
        assert!(!PathBuf::from(format!("{}.3", path.display())).exists());
        let summary = verify::verify(&files).unwrap();
        assert_eq!(
            summary.last_seq,
            lines(&path).last().unwrap()["seq"].as_u64().unwrap()
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Settings::new(path.clone())).unwrap();
        log.append(&sample(), Kind::End).await.unwrap();
        log.close();
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"seq\":2,\"prev\":\"trunc").unwrap();
        let log = AuditLog::open(Settings::new(path.clone())).unwrap();
        log.append(&sample(), Kind::End).await.unwrap();
        log.close();
        assert_eq!(lines(&path).len(), 3);
        verify::verify(&[path]).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_durability_acknowledges_chained_records_from_many_writers() {
        for durability in [Durability::Always, Durability::Batch, Durability::None] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.jsonl");
            let log = Arc::new(
                AuditLog::open(Settings {
                    durability,
                    batch_delay: Duration::from_millis(1),
                    ..Settings::new(path.clone())
                })
                .unwrap(),
            );
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        for _ in 0..25 {
                            log.append(&sample(), Kind::End).await.unwrap();
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.unwrap();
            }
            log.close();
            let summary = verify::verify(&[path]).unwrap();
            assert_eq!(summary.records, 201, "{durability:?}");
        }
    }

    #[test]
    fn unwritable_location_is_an_error_that_names_it() {
        let err = AuditLog::open(Settings::new("/proc/toolgate-audit.jsonl".into())).unwrap_err();
        assert!(
            err.to_string().contains("/proc/toolgate-audit.jsonl"),
            "{err}"
        );
    }
}
