//! The embedded store: rate buckets in memory, quota counters in memory backed by a journal
//! and snapshots under `state_dir`.
//!
//! Quota counters must survive a restart and `kill -9`. The counters in memory decide; every
//! reservation and settlement is appended to the [journal](super::journal) before it takes
//! effect in memory (a failed write refuses the call and changes nothing). By default the
//! append is one `write(2)` without fsync: the record is in the kernel's page cache when the
//! call is admitted, which survives any death of the daemon process, and costs a few
//! microseconds. `state_fsync = true` adds group commit: a syncer thread `fdatasync`s the
//! journal and callers await (without blocking a runtime thread) until their record is on disk;
//! calls that arrive together share one flush. That survives power loss too.
//!
//! Every [`COMPACT_EVERY`] records the journal rotates to a new segment, and the
//! [compactor](super::snapshot) thread writes the counters to the snapshot and deletes the
//! segments it covers. On open: load the snapshot, replay the segments (skipping records the
//! snapshot includes, stopping at a torn record), drop counters whose window has ended, write a
//! fresh snapshot and start a new segment.
//!
//! Windows are wall-clock (UTC) and part of the counter's key (see [`crate::admission::quota`]);
//! a counter is ignored once its `keep` time has passed and dropped at the next compaction.
//! Rate buckets are in memory on `tokio::time::Instant`: a restart refills them, which is the
//! lenient side only for at most one burst, and keeps the hot path free of disk writes.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::Database;
use tokio::sync::watch;
use tokio::time::Instant;

use super::group_commit::{self, Durable, Pending};
use super::journal::{self, Counter, Journal, Rotated};
use super::snapshot::{self, Compaction, Compactor};
use super::{Bucket, Charge, Error, QuotaRefusal, RateRefusal};
use crate::admission::quota::{self, Amounts};
use crate::admission::rate;

/// Above this many buckets, full ones are dropped (a full bucket is the same as no entry).
const PRUNE_BUCKETS_ABOVE: usize = 10_000;

/// Journal records per segment before a compaction (about 1 MB; replayed in milliseconds).
pub const COMPACT_EVERY: u64 = 10_000;

/// Rate buckets in memory; quota counters in memory, the journal and snapshots.
pub struct Embedded {
    epoch: Instant,
    buckets: Mutex<HashMap<String, u64>>,
    quota: Arc<Shared>,
    /// Set in fsync mode: what the syncer has flushed.
    durable: Option<watch::Receiver<Durable>>,
    syncer: Option<JoinHandle<()>>,
    compactor: Compactor,
    compact_every: u64,
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// Signalled when a record is written (fsync mode) or the store closes.
    written: Condvar,
}

/// The quota state behind one lock: what is counted and the journal that makes it durable.
struct Ledger {
    counters: HashMap<String, Counter>,
    journal: Journal,
    next_seq: u64,
    /// Rotated-out segments whose last records may not be flushed yet (fsync mode).
    unsynced: Vec<Arc<File>>,
    /// A segment was created since the last flush: its directory entry needs one too.
    dir_dirty: bool,
    fsync: bool,
    closing: bool,
    /// Compact when the current segment holds this many records.
    compact_at: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Embedded {
    /// Opens (or creates) the store in `dir`: snapshot `admission.redb` plus journal segments.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, Error> {
        Self::open_at(dir, fsync, COMPACT_EVERY, unix_now())
    }

    fn open_at(dir: &Path, fsync: bool, compact_every: u64, now: u64) -> Result<Self, Error> {
        let open_error = |path: PathBuf, message: String| Error::Open { path, message };
        let db_path = dir.join("admission.redb");
        std::fs::create_dir_all(dir).map_err(|e| open_error(dir.to_owned(), e.to_string()))?;
        let db =
            Database::create(&db_path).map_err(|e| open_error(db_path.clone(), e.to_string()))?;
        let (mut counters, mut applied) = snapshot::load(&db)?;

        let segments =
            journal::segments(dir).map_err(|e| open_error(dir.to_owned(), e.to_string()))?;
        for (_, path) in &segments {
            let bytes = std::fs::read(path).map_err(|e| open_error(path.clone(), e.to_string()))?;
            let (records, valid) = journal::decode(&bytes);
            if valid < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    ignored_bytes = bytes.len() - valid,
                    "quota journal ends in a torn record (a crash mid-write, or an unflushed page lost): ignored"
                );
            }
            // Records the snapshot (or an earlier segment) already holds are skipped: replay
            // is idempotent.
            for record in records {
                if record.seq <= applied {
                    continue;
                }
                applied = record.seq;
                counters.extend(record.entries);
            }
        }
        counters.retain(|_, c| c.keep > now);
        // Fold everything into a fresh snapshot now, so the new segment starts clean.
        snapshot::save(&db, counters.iter().map(|(k, c)| (k.as_str(), c)), applied)?;
        let last = segments.last().map(|s| s.0);
        if let Some(last) = last {
            snapshot::delete_segments(dir, last);
        }
        let generation = last.map_or(0, |g| g + 1);
        let journal = Journal::create(dir, generation)
            .map_err(|e| open_error(journal::segment_path(dir, generation), e.to_string()))?;
        if fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| open_error(dir.to_owned(), e.to_string()))?;
        }

        // The compactor first: if a thread cannot start, none is left behind waiting.
        let compactor = Compactor::start(db, dir.to_owned())?;
        let quota = Arc::new(Shared {
            ledger: Mutex::new(Ledger {
                counters,
                journal,
                next_seq: applied + 1,
                unsynced: Vec::new(),
                dir_dirty: false,
                fsync,
                closing: false,
                compact_at: compact_every,
            }),
            written: Condvar::new(),
        });
        let (durable, syncer) = if fsync {
            let shared = Arc::clone(&quota);
            let (rx, thread) = group_commit::start(dir, applied, move |synced| {
                let ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
                let mut ledger = shared
                    .written
                    .wait_while(ledger, |l| l.written() <= synced && !l.closing)
                    .unwrap_or_else(|p| p.into_inner());
                if ledger.written() <= synced {
                    return None; // closing, nothing pending
                }
                let mut files = std::mem::take(&mut ledger.unsynced);
                files.push(Arc::clone(ledger.journal.file()));
                Some(Pending {
                    upto: ledger.written(),
                    files,
                    dir_dirty: std::mem::take(&mut ledger.dir_dirty),
                })
            })
            .map_err(|e| open_error(dir.to_owned(), e.to_string()))?;
            (Some(rx), Some(thread))
        } else {
            (None, None)
        };
        Ok(Self {
            epoch: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            quota,
            durable,
            syncer,
            compactor,
            compact_every,
        })
    }

    fn now_us(&self) -> u64 {
        rate::micros(Instant::now().duration_since(self.epoch))
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        // Plain integers: a panic elsewhere cannot leave them inconsistent.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A record is written before memory changes, and memory changes cannot panic half-way.
        self.quota.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one call from every bucket, or from none.
    pub async fn take_rate(&self, buckets: &[Bucket]) -> Result<Result<(), RateRefusal>, Error> {
        let now = self.now_us();
        let mut map = self.buckets();
        let mut news = Vec::with_capacity(buckets.len());
        for (i, b) in buckets.iter().enumerate() {
            let tat = map.get(&b.key).copied().unwrap_or(0);
            match rate::take(tat, now, b.interval_us, b.burst) {
                Ok(new) => news.push(new),
                Err(wait) => return Ok(Err((i, wait))),
            }
        }
        if map.len() > PRUNE_BUCKETS_ABOVE {
            map.retain(|_, tat| *tat > now);
        }
        for (b, tat) in buckets.iter().zip(news) {
            map.insert(b.key.clone(), tat);
        }
        Ok(Ok(()))
    }

    /// What is left of a bucket, and how long until it is full.
    pub async fn peek_rate(&self, bucket: &Bucket) -> Result<(u64, Duration), Error> {
        let tat = self.buckets().get(&bucket.key).copied().unwrap_or(0);
        Ok(rate::remaining(
            tat,
            self.now_us(),
            bucket.interval_us,
            bucket.burst,
        ))
    }

    /// Reserves against every counter, or none; returns once the reservation is journaled
    /// (and, with `state_fsync`, on disk).
    pub async fn reserve(
        &self,
        charges: &[Charge],
    ) -> Result<Result<Vec<Amounts>, QuotaRefusal>, Error> {
        match self.reserve_at(charges, unix_now())? {
            Ok((taken, seq)) => {
                self.wait_durable(seq).await?;
                Ok(Ok(taken))
            }
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn reserve_at(
        &self,
        charges: &[Charge],
        now: u64,
    ) -> Result<Result<(Vec<Amounts>, u64), QuotaRefusal>, Error> {
        let mut ledger = self.ledger();
        let mut taken = Vec::with_capacity(charges.len());
        let mut values = Vec::with_capacity(charges.len());
        for (i, charge) in charges.iter().enumerate() {
            // An expired counter is a window that ended: it counts as empty.
            let current = ledger.counters.get(&charge.key).filter(|c| c.keep > now);
            let used = current.map_or([0; 4], |c| c.used);
            match quota::reserve(&used, &charge.limits, &charge.want) {
                Ok(take) => {
                    let keep = (now + charge.keep.as_secs()).max(current.map_or(0, |c| c.keep));
                    let used = std::array::from_fn(|m| used[m].saturating_add(take[m]));
                    values.push((charge.key.as_str(), Counter { used, keep }));
                    taken.push(take);
                }
                // Nothing was written: every counter stays as it was.
                Err(exceeded) => return Ok(Err((i, exceeded))),
            }
        }
        let seq = self.commit(&mut ledger, &values, now)?;
        Ok(Ok((taken, seq)))
    }

    /// Adds signed deltas to counters, never below zero; counters already dropped (their
    /// window ended) are skipped.
    pub async fn settle(&self, deltas: &[(String, [i64; 4])]) -> Result<(), Error> {
        match self.settle_at(deltas, unix_now())? {
            Some(seq) => self.wait_durable(seq).await,
            None => Ok(()),
        }
    }

    fn settle_at(&self, deltas: &[(String, [i64; 4])], now: u64) -> Result<Option<u64>, Error> {
        let mut ledger = self.ledger();
        let values: Vec<(&str, Counter)> = deltas
            .iter()
            .filter_map(|(key, delta)| {
                let c = ledger.counters.get(key)?;
                let used = std::array::from_fn(|m| c.used[m].saturating_add_signed(delta[m]));
                Some((key.as_str(), Counter { used, keep: c.keep }))
            })
            .collect();
        if values.is_empty() {
            return Ok(None);
        }
        self.commit(&mut ledger, &values, now).map(Some)
    }

    /// A counter's amounts (zero when absent or expired).
    pub async fn read(&self, key: &str) -> Result<Amounts, Error> {
        Ok(self.read_at(key, unix_now()))
    }

    fn read_at(&self, key: &str, now: u64) -> Amounts {
        self.ledger()
            .counters
            .get(key)
            .filter(|c| c.keep > now)
            .map_or([0; 4], |c| c.used)
    }

    /// Journals `values`, then applies them; gives the record's sequence number.
    fn commit(
        &self,
        ledger: &mut Ledger,
        values: &[(&str, Counter)],
        now: u64,
    ) -> Result<u64, Error> {
        let seq = ledger.next_seq;
        match ledger.journal.append(seq, values.iter().copied()) {
            Ok(Some(rotated)) => ledger.retire(rotated),
            Ok(None) => {}
            Err(source) => {
                return Err(Error::JournalWrite {
                    dir: ledger.journal.dir().to_owned(),
                    source,
                });
            }
        }
        ledger.next_seq += 1;
        for &(key, value) in values {
            match ledger.counters.get_mut(key) {
                Some(c) => *c = value,
                None => {
                    ledger.counters.insert(key.to_owned(), value);
                }
            }
        }
        if ledger.journal.records() >= ledger.compact_at {
            self.compact(ledger, now);
        }
        if ledger.fsync {
            self.quota.written.notify_one();
        }
        Ok(seq)
    }

    /// Starts a new segment and hands the counters to the compactor. A failure only delays
    /// compaction: the journal keeps growing and holds everything meanwhile.
    fn compact(&self, ledger: &mut Ledger, now: u64) {
        match ledger.journal.rotate() {
            Ok(rotated) => {
                let upto = rotated.generation;
                ledger.retire(rotated);
                ledger.compact_at = self.compact_every;
                ledger.counters.retain(|_, c| c.keep > now);
                self.compactor.submit(Compaction {
                    counters: ledger
                        .counters
                        .iter()
                        .map(|(k, c)| (k.clone(), *c))
                        .collect(),
                    applied: ledger.next_seq - 1,
                    upto,
                });
            }
            Err(error) => {
                tracing::error!(%error, "cannot start a new quota journal segment; compaction postponed");
                ledger.compact_at = ledger.journal.records() + self.compact_every;
            }
        }
    }

    /// In fsync mode, waits until record `seq` is on disk.
    async fn wait_durable(&self, seq: u64) -> Result<(), Error> {
        match &self.durable {
            Some(durable) => group_commit::wait(durable, seq).await,
            None => Ok(()),
        }
    }
}

impl Ledger {
    /// Keeps a rotated-out segment for the syncer when its records must still be flushed.
    fn retire(&mut self, rotated: Rotated) {
        if self.fsync {
            self.unsynced.push(rotated.file);
            self.dir_dirty = true;
        }
    }

    fn written(&self) -> u64 {
        self.next_seq - 1
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // The syncer flushes what is pending and stops; then the compactor (a field, dropped
        // after this) finishes its queue and closes the database, so the directory can be
        // opened again at once.
        self.ledger().closing = true;
        self.quota.written.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::quota::Period;

    /// 2023-11-14 22:00:00 UTC, the start of an hour.
    const T0: u64 = 1_700_000_000 - 1_700_000_000 % 3600;
    const NEVER: u64 = u64::MAX;

    fn charge(key: &str, limit: u64) -> Charge {
        Charge {
            key: key.to_owned(),
            limits: [Some(limit), None, None, None],
            want: [1, 0, 0, 0],
            keep: Duration::from_secs(3600),
        }
    }

    fn open(dir: &Path, compact_every: u64) -> Embedded {
        Embedded::open_at(dir, false, compact_every, T0).unwrap()
    }

    fn admit(store: &Embedded, key: &str, limit: u64) -> bool {
        store.reserve_at(&[charge(key, limit)], T0).unwrap().is_ok()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        journal::segments(dir)
            .unwrap()
            .into_iter()
            .map(|s| s.1)
            .collect()
    }

    #[tokio::test]
    async fn reservations_are_all_or_nothing_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Embedded::open(dir.path(), false).unwrap();
            let both = [charge("a", 2), charge("b", 1)];
            assert!(store.reserve(&both).await.unwrap().is_ok());
            // `b` is full: nothing is taken from `a` either.
            let (which, exceeded) = store.reserve(&both).await.unwrap().unwrap_err();
            assert_eq!((which, exceeded.used), (1, 1));
            assert_eq!(store.read("a").await.unwrap(), [1, 0, 0, 0]);
            store
                .settle(&[("a".to_owned(), [0, 5, 0, 0])])
                .await
                .unwrap();
            // A counter that does not exist (window ended and dropped) is not recreated.
            store
                .settle(&[("gone".to_owned(), [0, 5, 0, 0])])
                .await
                .unwrap();
        }
        let store = Embedded::open(dir.path(), false).unwrap();
        assert_eq!(store.read("a").await.unwrap(), [1, 5, 0, 0]);
        assert_eq!(store.read("b").await.unwrap(), [1, 0, 0, 0]);
        assert_eq!(store.read("gone").await.unwrap(), [0; 4]);
    }

    #[test]
    fn replay_after_a_crash_ignores_a_torn_last_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Dropping the store writes nothing more: the files are what kill -9 leaves.
            let store = open(dir.path(), NEVER);
            for _ in 0..3 {
                assert!(admit(&store, "a", 10));
            }
        }
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("one segment expected")
        };
        // The daemon died inside the third write: only part of the record reached the file.
        let bytes = std::fs::read(segment).unwrap();
        std::fs::write(segment, &bytes[..bytes.len() - 5]).unwrap();
        {
            let store = open(dir.path(), NEVER);
            assert_eq!(store.read_at("a", T0), [2, 0, 0, 0]);
            assert!(admit(&store, "a", 10));
        }
        // Garbage after the last record (a lost page) is ignored the same way.
        let last = segment_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.extend_from_slice(&[0xff; 13]);
        std::fs::write(&last, bytes).unwrap();
        let store = open(dir.path(), NEVER);
        assert_eq!(store.read_at("a", T0), [3, 0, 0, 0]);
    }

    #[test]
    fn a_crash_between_snapshot_and_segment_deletion_neither_double_counts_nor_reverts() {
        let dir = tempfile::tempdir().unwrap();
        let (old, old_bytes) = {
            let store = open(dir.path(), NEVER);
            for _ in 0..3 {
                assert!(admit(&store, "a", 10));
            }
            let old = segment_files(dir.path()).pop().unwrap();
            let bytes = std::fs::read(&old).unwrap();
            store.compact(&mut store.ledger(), T0);
            // Two more records, compacted in turn; then two in the live segment.
            assert!(admit(&store, "a", 10));
            assert!(admit(&store, "b", 10));
            store.compact(&mut store.ledger(), T0);
            assert!(admit(&store, "b", 10));
            let settled = store.settle_at(&[("b".to_owned(), [0, 7, 0, 0])], T0);
            assert!(settled.unwrap().is_some());
            (old, bytes)
            // Dropping waits for the compactor: snapshots written, old segments deleted.
        };
        assert!(!old.exists(), "the compacted segment is deleted");
        assert_eq!(segment_files(dir.path()).len(), 1);
        // Put the first segment back: the state of a crash after a snapshot's commit and before
        // the segment's unlink reached the disk. Its records (a = 1, 2, 3) are older than the
        // snapshot's (a = 4): replaying them would set a back to 3.
        std::fs::write(&old, old_bytes).unwrap();
        let store = open(dir.path(), NEVER);
        assert_eq!(store.read_at("a", T0), [4, 0, 0, 0]);
        assert_eq!(store.read_at("b", T0), [2, 7, 0, 0]);
        assert!(!old.exists(), "start-up compaction deletes it again");
        drop(store);
        let store = open(dir.path(), NEVER);
        assert_eq!(store.read_at("a", T0), [4, 0, 0, 0]);
        assert_eq!(store.read_at("b", T0), [2, 7, 0, 0]);
    }

    #[test]
    fn a_failed_write_refuses_and_counts_nothing_then_a_new_segment_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), NEVER);
            assert!(admit(&store, "a", 10));
            store.ledger().journal.fail_next_write();
            let failed = store.reserve_at(&[charge("a", 10)], T0);
            assert!(matches!(failed, Err(Error::JournalWrite { .. })));
            assert_eq!(store.read_at("a", T0), [1, 0, 0, 0]);
            // The old segment may end in a torn record: the next write goes to a new one.
            assert!(admit(&store, "a", 10));
            assert_eq!(segment_files(dir.path()).len(), 2);
        }
        let store = open(dir.path(), NEVER);
        assert_eq!(store.read_at("a", T0), [2, 0, 0, 0]);
    }

    #[test]
    fn compaction_runs_every_n_records_and_keeps_the_journal_short() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), 4);
            for _ in 0..10 {
                assert!(admit(&store, "a", 100));
            }
        }
        // 10 records at 4 per segment: two compactions; only the current segment is left.
        assert_eq!(segment_files(dir.path()).len(), 1);
        let store = open(dir.path(), 4);
        assert_eq!(store.read_at("a", T0), [10, 0, 0, 0]);
    }

    #[test]
    fn periods_roll_over_on_the_utc_clock_and_ended_windows_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // As `Admission::charges` builds them: the window is part of the key.
        let charge_at = |now: u64| {
            let (window, left) = Period::Hour.window(UNIX_EPOCH + Duration::from_secs(now));
            Charge {
                keep: left + Duration::from_secs(3600),
                ..charge(&format!("quota:caller:uid:1:hour:{window}"), 2)
            }
        };
        let late = T0 + 3599;
        let first_key = charge_at(late).key;
        {
            let store = open(dir.path(), NEVER);
            assert!(store.reserve_at(&[charge_at(T0)], T0).unwrap().is_ok());
            assert!(store.reserve_at(&[charge_at(late)], late).unwrap().is_ok());
            let (_, exceeded) = store
                .reserve_at(&[charge_at(late)], late)
                .unwrap()
                .unwrap_err();
            assert_eq!((exceeded.used, exceeded.limit), (2, 2));
            // One second later the next hour has a counter of its own.
            let next = T0 + 3600;
            assert_ne!(charge_at(next).key, first_key);
            assert!(store.reserve_at(&[charge_at(next)], next).unwrap().is_ok());
            // The ended window is still readable during the slack, then ignored.
            assert_eq!(store.read_at(&first_key, next)[0], 2);
            assert_eq!(store.read_at(&first_key, T0 + 7200)[0], 0);
        }
        // Reopened after the slack: the ended window is gone, the current one kept.
        let store = Embedded::open_at(dir.path(), false, NEVER, T0 + 7200).unwrap();
        assert_eq!(store.read_at(&first_key, T0)[0], 0);
        assert_eq!(store.read_at(&charge_at(T0 + 3600).key, T0 + 3600)[0], 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_mode_group_commits_without_losing_or_double_counting() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(Embedded::open(dir.path(), true).unwrap());
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move { store.reserve(&[charge("f", 20)]).await })
                })
                .collect();
            let mut admitted = 0;
            for task in tasks {
                admitted += usize::from(task.await.unwrap().unwrap().is_ok());
            }
            assert_eq!(admitted, 20);
            store
                .settle(&[("f".to_owned(), [0, 3, 0, 0])])
                .await
                .unwrap();
        }
        let store = Embedded::open(dir.path(), true).unwrap();
        assert_eq!(store.read("f").await.unwrap(), [20, 3, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_run_on_the_paused_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path(), false).unwrap();
        let b = [Bucket {
            key: "k".into(),
            interval_us: 1_000_000,
            burst: 1,
        }];
        assert!(store.take_rate(&b).await.unwrap().is_ok());
        assert_eq!(
            store.take_rate(&b).await.unwrap(),
            Err((0, Duration::from_secs(1)))
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(store.peek_rate(&b[0]).await.unwrap().0, 1);
        assert!(store.take_rate(&b).await.unwrap().is_ok());
    }
}
