//! The one thread that writes the audit log: chaining, group commit, rotation, failure and
//! recovery.
//!
//! Callers hand over serialized records through a channel and wait for an acknowledgement,
//! which comes only once the record is as durable as configured: written and fsynced
//! (`always`, `batch`) or written (`none`). With `batch`, every record that arrived while the
//! previous fsync ran (and, with a `batch_delay`, up to that long after the first one) is
//! written with one `write` and made durable with one fsync, so a busy daemon pays one fsync
//! per batch rather than per record, and no record waits longer than one fsync plus the delay.
//!
//! Invariants: only this thread touches the file, so `seq`/`prev` are assigned in file order.
//! The file's length is known: after a failed write or fsync the file is cut back to its last
//! durable length before anything else is written, so a record that was not acknowledged never
//! stays in the chain. While writing fails the log is *failing*: depending on
//! `on_audit_failure`, the gate refuses new invocations (their start and refusal records are
//! dropped and counted) or lets them run with their records held in memory; end records of runs
//! that happened are always held and written first when the log works again, preceded by an
//! `audit_resumed` record that says how long it failed and how much was dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::chain::{self, GENESIS, Head};
use super::{Durability, Error, Kind, OnFailure, Settings};

/// How often a failing log is tried again when nothing else happens.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Most records in one write.
const MAX_BATCH: usize = 1024;
/// Most records held in memory while the log fails (`on_audit_failure = "allow"`).
const MAX_BACKLOG: usize = 100_000;

/// One record on its way to the file.
pub(super) struct Submission {
    pub body: Vec<u8>,
    pub kind: Kind,
    pub ack: oneshot::Sender<Result<(), Error>>,
}

/// State shared with the handles.
#[derive(Debug)]
pub(super) struct Shared {
    pub failing: AtomicBool,
    pub healthy: watch::Sender<bool>,
}

/// Why the log is failing, since when, and what was lost meanwhile.
struct Failure {
    since: String,
    error: String,
    dropped: u64,
    last_attempt: Instant,
}

pub(super) struct Writer {
    settings: Settings,
    file: Option<File>,
    /// Bytes of the current file known to be written (and durable, unless `none`).
    len: u64,
    head: Option<Head>,
    failure: Option<Failure>,
    /// Records kept through a failure, written first on recovery.
    backlog: VecDeque<Vec<u8>>,
    shared: Arc<Shared>,
}

#[derive(Serialize)]
struct FileStart<'a> {
    time: String,
    event: &'static str,
    file: &'a str,
    previous_file: Option<String>,
    daemon_version: &'static str,
}

#[derive(Serialize)]
struct Resumed<'a> {
    time: String,
    event: &'static str,
    failed_since: &'a str,
    error: &'a str,
    records_dropped: u64,
    records_held: usize,
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

fn head_of(line: &[u8]) -> Head {
    // A last line that is not a chained record (a log from before the chain) still gets
    // linked to by hash; its successor starts again at seq 0.
    let seq = chain::Link::parse(line).map_or(0, |l| l.seq);
    Head {
        seq,
        hash: chain::hash(line),
    }
}

impl Writer {
    /// Opens the log, finds the head of its chain (cutting off a line a crash left
    /// incomplete), and starts the file with a header when it is new.
    pub fn open(settings: Settings, shared: Arc<Shared>) -> Result<Self, Error> {
        let path = settings.path.clone();
        let open_error = |source| Error::Open {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_error)?;
        }
        let mut file = open_append(&path).map_err(open_error)?;
        let (last, complete) = chain::last_line(&mut file).map_err(open_error)?;
        let on_disk = file.metadata().map_err(open_error)?.len();
        if complete < on_disk {
            tracing::warn!(
                path = %path.display(),
                bytes = on_disk - complete,
                "the audit log ends with an incomplete record (a crash during a write); it was never acknowledged and is cut off"
            );
            file.set_len(complete).map_err(open_error)?;
        }
        let head = match last {
            Some(line) => Some(head_of(&line)),
            None => match File::open(rotated(&path, 1)) {
                Ok(mut previous) => chain::last_line(&mut previous)
                    .map_err(open_error)?
                    .0
                    .map(|line| head_of(&line)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(open_error(e)),
            },
        };
        let mut writer = Self {
            settings,
            file: Some(file),
            len: complete,
            head,
            failure: None,
            backlog: VecDeque::new(),
            shared,
        };
        if complete == 0 {
            writer
                .start_file()
                .map_err(|source| Error::Write { path, source })?;
        }
        Ok(writer)
    }

    /// Serves submissions until every handle is gone, then makes everything durable.
    pub fn run(mut self, rx: Receiver<Submission>) {
        loop {
            let first = if self.failure.is_some() {
                match rx.recv_timeout(RETRY_INTERVAL) {
                    Ok(s) => Some(s),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(s) => Some(s),
                    Err(_) => break,
                }
            };
            let mut batch = Vec::new();
            if let Some(first) = first {
                batch.push(first);
                self.gather(&rx, &mut batch);
            }
            if self.failure.is_some() && !self.try_recover() {
                for submission in batch {
                    self.triage(submission);
                }
                continue;
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
        }
        if self.failure.is_some() && !self.backlog.is_empty() {
            // Last chance for records of runs that happened.
            if let Some(f) = self.failure.as_mut() {
                f.last_attempt = Instant::now() - RETRY_INTERVAL;
            }
            if !self.try_recover() {
                tracing::error!(
                    records = self.backlog.len(),
                    "the audit log is still unwritable at exit: held records are lost"
                );
            }
        }
        if let Some(file) = &self.file {
            let _ = file.sync_data();
        }
        match &self.head {
            Some(head) => tracing::info!(seq = head.seq, hash = head.hash, "audit log closed"),
            None => tracing::info!("audit log closed"),
        }
    }

    /// Adds what else is waiting (and, with a batch delay, what comes within it).
    fn gather(&self, rx: &Receiver<Submission>, batch: &mut Vec<Submission>) {
        if self.settings.durability == Durability::Always {
            return;
        }
        let deadline = Instant::now() + self.settings.batch_delay;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    match rx.recv_timeout(left) {
                        Ok(s) => batch.push(s),
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// Writes a batch and acknowledges it, or enters the failing state.
    fn commit(&mut self, batch: Vec<Submission>) {
        let started = Instant::now();
        let result = self
            .rotate_if_full()
            .and_then(|()| self.append(batch.iter().map(|s| s.body.as_slice())));
        self.settings
            .metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                for submission in batch {
                    let _ = submission.ack.send(Ok(()));
                }
            }
            Err(e) => {
                self.fail(&e);
                for submission in batch {
                    self.triage(submission);
                }
            }
        }
    }

    /// Decides the fate of a record that cannot be written now.
    fn triage(&mut self, submission: Submission) {
        let keep = match (self.settings.on_failure, submission.kind) {
            // A run that happened must keep its record whatever the mode.
            (_, Kind::End | Kind::Reload) => true,
            (OnFailure::Allow, Kind::Start | Kind::Refusal) => true,
            // The invocation is refused and nothing ran: no record is owed, only a count.
            (OnFailure::Refuse, Kind::Start | Kind::Refusal) => false,
        };
        if keep && self.backlog.len() < MAX_BACKLOG {
            self.backlog.push_back(submission.body);
        } else if let Some(failure) = self.failure.as_mut() {
            failure.dropped += 1;
        }
        let answer = match self.settings.on_failure {
            OnFailure::Allow => Ok(()),
            OnFailure::Refuse => Err(Error::Unavailable),
        };
        let _ = submission.ack.send(answer);
    }

    fn fail(&mut self, error: &io::Error) {
        self.settings.metrics.write_errors.inc();
        tracing::error!(path = %self.settings.path.display(), %error, "cannot write the audit log");
        // The next attempt reopens the file: the old descriptor may point at a file that was
        // moved away, and its page cache state after a failed fsync is unknown.
        if let Some(file) = self.file.take() {
            let _ = file.set_len(self.len);
        }
        match self.failure.as_mut() {
            Some(failure) => {
                failure.error = error.to_string();
                failure.last_attempt = Instant::now();
            }
            None => {
                self.failure = Some(Failure {
                    since: super::now(),
                    error: error.to_string(),
                    dropped: 0,
                    last_attempt: Instant::now(),
                });
                self.shared.failing.store(true, Ordering::SeqCst);
                self.shared.healthy.send_replace(false);
                self.settings.metrics.failing.set(1);
            }
        }
    }

    /// Tries the log again (at most once per retry interval); on success writes the
    /// `audit_resumed` record and the held records and leaves the failing state.
    fn try_recover(&mut self) -> bool {
        let Some(failure) = self.failure.as_ref() else {
            return true;
        };
        if failure.last_attempt.elapsed() < RETRY_INTERVAL {
            return false;
        }
        let resumed = Resumed {
            time: super::now(),
            event: "audit_resumed",
            failed_since: &failure.since,
            error: &failure.error,
            records_dropped: failure.dropped,
            records_held: self.backlog.len(),
        };
        let resumed = match serde_json::to_vec(&resumed) {
            Ok(body) => body,
            Err(e) => {
                self.fail(&io::Error::other(e));
                return false;
            }
        };
        let backlog: Vec<Vec<u8>> = self.backlog.iter().cloned().collect();
        let bodies = std::iter::once(resumed.as_slice()).chain(backlog.iter().map(Vec::as_slice));
        match self.append(bodies) {
            Ok(()) => {
                tracing::info!(
                    path = %self.settings.path.display(),
                    held = self.backlog.len(),
                    "the audit log is writable again"
                );
                self.backlog.clear();
                self.failure = None;
                self.shared.failing.store(false, Ordering::SeqCst);
                self.shared.healthy.send_replace(true);
                self.settings.metrics.failing.set(0);
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// Opens the file if it is not open, cutting off anything past the known length, and
    /// starts it with a header when it is empty.
    fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let file = open_append(&self.settings.path)?;
        let on_disk = file.metadata()?.len();
        if on_disk > self.len {
            file.set_len(self.len)?;
        } else if on_disk < self.len {
            tracing::warn!(
                path = %self.settings.path.display(),
                "the audit log is shorter than what was written: it was truncated or replaced behind the daemon's back"
            );
            self.len = on_disk;
        }
        self.file = Some(file);
        if self.len == 0 {
            self.start_file()?;
        }
        Ok(())
    }

    /// Writes the `file_start` record that begins every file.
    fn start_file(&mut self) -> io::Result<()> {
        let previous_file = self
            .head
            .as_ref()
            .map(|_| file_name(&rotated(&self.settings.path, 1)));
        let header = FileStart {
            time: super::now(),
            event: "file_start",
            file: &file_name(&self.settings.path),
            previous_file,
            daemon_version: env!("CARGO_PKG_VERSION"),
        };
        let body = serde_json::to_vec(&header).map_err(io::Error::other)?;
        self.append(std::iter::once(body.as_slice()))?;
        sync_dir(&self.settings.path)
    }

    /// Moves the full file aside (`.1`, `.2`, ... up to `keep`) and starts a new one.
    fn rotate_if_full(&mut self) -> io::Result<()> {
        self.ensure_open()?;
        let Some(max) = self.settings.max_bytes else {
            return Ok(());
        };
        if self.len < max {
            return Ok(());
        }
        let path = self.settings.path.clone();
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        for n in (1..self.settings.keep).rev() {
            match std::fs::rename(rotated(&path, n), rotated(&path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&path, rotated(&path, 1))?;
        sync_dir(&path)?;
        tracing::info!(path = %path.display(), "audit log rotated");
        self.len = 0;
        self.ensure_open()
    }

    /// Chains, writes and (unless `none`) fsyncs records; on failure nothing of them stays.
    fn append<'a>(&mut self, bodies: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        self.ensure_open()?;
        let mut head = self.head.clone();
        let mut buffer = Vec::new();
        let mut count = 0u64;
        for body in bodies {
            let (seq, prev) = match &head {
                Some(h) => (h.seq + 1, h.hash.as_str()),
                None => (0, GENESIS),
            };
            let line = chain::compose(seq, prev, body);
            head = Some(Head {
                seq,
                hash: chain::hash(&line),
            });
            buffer.extend_from_slice(&line);
            buffer.push(b'\n');
            count += 1;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("audit log not open"));
        };
        let written = file.write_all(&buffer).and_then(|()| {
            if self.settings.durability == Durability::None {
                Ok(())
            } else {
                file.sync_data()
            }
        });
        if let Err(e) = written {
            // Cut back what may have reached the file: it was never acknowledged.
            let _ = file.set_len(self.len);
            return Err(e);
        }
        self.len += buffer.len() as u64;
        self.head = head;
        self.settings.metrics.records.inc_by(count);
        if let Some(h) = &self.head {
            self.settings
                .metrics
                .head_seq
                .set(i64::try_from(h.seq).unwrap_or(i64::MAX));
        }
        Ok(())
    }
}
