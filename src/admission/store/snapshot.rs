//! Quota snapshots: the counters as of one journal sequence number, in the redb file
//! `admission.redb` under `state_dir`, and the background compactor that writes them.
//!
//! A snapshot is one redb write transaction with `Immediate` durability: it replaces every
//! counter and records `applied_seq`, the last journal record it includes. redb commits
//! atomically (copy-on-write pages, then a header flip), so a crash leaves either the old or the
//! new snapshot, never a mix; the journal segments it covers are deleted only after the commit
//! returned. The open database also holds redb's file lock, so two daemons cannot share one
//! `state_dir`. Files from before the journal existed read as a snapshot with `applied_seq` 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::Error;
use super::journal::{self, Counter};

/// Counter key → (invocations, cpu ms, wall ms, output bytes, keep until unix seconds).
const COUNTERS: TableDefinition<&str, (u64, u64, u64, u64, u64)> =
    TableDefinition::new("quota_counters");
/// `applied_seq` → the last journal record the counters include.
const META: TableDefinition<&str, u64> = TableDefinition::new("quota_meta");
const APPLIED_SEQ: &str = "applied_seq";

fn db_error(e: impl std::fmt::Display) -> Error {
    Error::Snapshot(e.to_string())
}

/// Reads the counters and the sequence number they include.
pub fn load(db: &Database) -> Result<(HashMap<String, Counter>, u64), Error> {
    let txn = db.begin_read().map_err(db_error)?;
    let mut counters = HashMap::new();
    match txn.open_table(COUNTERS) {
        Ok(table) => {
            for row in table.iter().map_err(db_error)? {
                let (key, value) = row.map_err(db_error)?;
                let v = value.value();
                counters.insert(
                    key.value().to_owned(),
                    Counter {
                        used: [v.0, v.1, v.2, v.3],
                        keep: v.4,
                    },
                );
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(db_error(e)),
    }
    let applied = match txn.open_table(META) {
        Ok(table) => table
            .get(APPLIED_SEQ)
            .map_err(db_error)?
            .map_or(0, |v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(db_error(e)),
    };
    Ok((counters, applied))
}

/// Replaces the snapshot by `counters` as of record `applied`, durably.
pub fn save<'a>(
    db: &Database,
    counters: impl Iterator<Item = (&'a str, &'a Counter)>,
    applied: u64,
) -> Result<(), Error> {
    let mut txn = db.begin_write().map_err(db_error)?;
    txn.set_durability(Durability::Immediate);
    {
        let mut table = txn.open_table(COUNTERS).map_err(db_error)?;
        table.retain(|_, _| false).map_err(db_error)?;
        for (key, c) in counters {
            let u = c.used;
            table
                .insert(key, (u[0], u[1], u[2], u[3], c.keep))
                .map_err(db_error)?;
        }
        let mut meta = txn.open_table(META).map_err(db_error)?;
        meta.insert(APPLIED_SEQ, applied).map_err(db_error)?;
    }
    txn.commit().map_err(db_error)
}

/// Deletes the journal segments up to `generation`, which a saved snapshot covers.
pub fn delete_segments(dir: &Path, generation: u64) {
    let Ok(segments) = journal::segments(dir) else {
        return;
    };
    for (_, path) in segments.iter().filter(|(g, _)| *g <= generation) {
        if let Err(error) = std::fs::remove_file(path) {
            // Harmless: replay skips what the snapshot covers. It is retried next compaction.
            tracing::warn!(%error, path = %path.display(), "cannot delete a compacted quota journal segment");
        }
    }
}

/// One compaction: the counters as of record `applied`, covering segments up to `upto`.
pub struct Compaction {
    /// The live counters (expired ones already dropped).
    pub counters: Vec<(String, Counter)>,
    /// The last record they include.
    pub applied: u64,
    /// The last segment they cover.
    pub upto: u64,
}

/// The background thread that writes snapshots, so the runtime never waits for a disk flush.
/// Dropping it finishes the queued compactions and closes the database.
pub struct Compactor {
    queue: Option<mpsc::Sender<Compaction>>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts the thread; it owns `db` from now on.
    pub fn start(db: Database, dir: PathBuf) -> Result<Self, Error> {
        let (queue, jobs) = mpsc::channel::<Compaction>();
        let thread = std::thread::Builder::new()
            .name("quota-compactor".into())
            .spawn(move || {
                for job in jobs {
                    let counters = job.counters.iter().map(|(k, c)| (k.as_str(), c));
                    match save(&db, counters, job.applied) {
                        Ok(()) => delete_segments(&dir, job.upto),
                        // The segments stay; the next compaction (or start) folds them in.
                        Err(error) => tracing::error!(%error, "quota snapshot failed"),
                    }
                }
            })
            .map_err(|e| Error::Snapshot(format!("cannot start the compactor thread: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues a compaction.
    pub fn submit(&self, job: Compaction) {
        if let Some(queue) = &self.queue {
            // Only fails if the thread died; the journal keeps everything meanwhile.
            let _ = queue.send(job);
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
