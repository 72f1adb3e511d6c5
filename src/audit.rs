//! The audit log: one JSON line per request, allowed or refused, appended to a file.
//!
//! The record's shape is a contract with whoever ingests it (snapshot-tested). A line is
//! written with a single `write` on a file opened with `O_APPEND`, so concurrent records never
//! interleave. The log must be writable when the daemon starts; when a write fails later the
//! invocation's answer is an error (UNAVAILABLE), never a silent gap in the record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

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

/// One audit record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// When the record was written, RFC 3339 UTC with milliseconds.
    pub time: String,
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

/// An append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
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
    /// Appending a record failed.
    #[error("cannot write audit log {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl AuditLog {
    /// Opens `path` for appending, creating it (and its directory) readable by its owner only.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(open_error)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one record as one line.
    pub fn append(&self, record: &Record) -> Result<(), Error> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        // A poisoned lock only means another writer panicked; the file itself is fine.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Usage;
    use crate::supervise::Output;
    use std::time::Duration;

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
    #[test]
    fn record_shape_is_stable() {
        insta::assert_json_snapshot!(sample());
    }

    #[test]
    fn appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.append(&sample()).unwrap();
        log.append(&sample()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let parsed: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(parsed["caller"]["transport"], "unix");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unwritable_location_is_an_error_that_names_it() {
        let err = AuditLog::open(Path::new("/proc/toolgate-audit.jsonl")).unwrap_err();
        assert!(
            err.to_string().contains("/proc/toolgate-audit.jsonl"),
            "{err}"
        );
    }
}
