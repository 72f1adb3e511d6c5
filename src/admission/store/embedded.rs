//! The embedded store: rate buckets in memory, quota counters in a redb file under `state_dir`.
//!
//! Quota counters must survive a restart and `kill -9`: every reservation is committed before
//! the tool runs. By default the commit is written to the file without `fsync` (redb's
//! `Eventual` durability): that survives any death of the daemon process, since the data is in
//! the kernel's page cache, and costs microseconds. `state_fsync = true` makes every commit an
//! `fsync` (survives power loss too, at the cost of a disk flush per call).
//!
//! Rate buckets are in memory on `tokio::time::Instant`: a restart refills them, which is the
//! lenient side only for at most one burst, and keeps the hot path free of disk writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::time::Instant;

use super::{Bucket, Charge, Error, QuotaRefusal, RateRefusal};
use crate::admission::quota::{self, Amounts};
use crate::admission::rate;

/// Counter key → (invocations, cpu ms, wall ms, output bytes, keep until unix seconds).
const COUNTERS: TableDefinition<&str, (u64, u64, u64, u64, u64)> =
    TableDefinition::new("quota_counters");

/// Above this many buckets, full ones are dropped (a full bucket is the same as no entry).
const PRUNE_BUCKETS_ABOVE: usize = 10_000;

/// Rate buckets in memory and quota counters in a redb file.
pub struct Embedded {
    epoch: Instant,
    buckets: Mutex<HashMap<String, u64>>,
    db: Database,
    durability: Durability,
}

fn db_error(e: impl std::fmt::Display) -> Error {
    Error::Embedded(e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Embedded {
    /// Opens (or creates) `dir/admission.redb`, dropping counters of windows that have ended.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, Error> {
        let path = dir.join("admission.redb");
        let open_error = |message: String| Error::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_error(e.to_string()))?;
        let store = Self {
            epoch: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            db,
            durability: if fsync {
                Durability::Immediate
            } else {
                Durability::Eventual
            },
        };
        store.prune().map_err(|e| open_error(e.to_string()))?;
        Ok(store)
    }

    fn prune(&self) -> Result<(), Error> {
        let now = unix_now();
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(COUNTERS).map_err(db_error)?;
            table.retain(|_, v| v.4 > now).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    fn now_us(&self) -> u64 {
        rate::micros(Instant::now().duration_since(self.epoch))
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Plain integers: a panic elsewhere cannot leave them inconsistent.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one call from every bucket, or from none.
    pub fn take_rate(&self, buckets: &[Bucket]) -> Result<Result<(), RateRefusal>, Error> {
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
    pub fn peek_rate(&self, bucket: &Bucket) -> Result<(u64, Duration), Error> {
        let tat = self.buckets().get(&bucket.key).copied().unwrap_or(0);
        Ok(rate::remaining(
            tat,
            self.now_us(),
            bucket.interval_us,
            bucket.burst,
        ))
    }

    /// Reserves against every counter, or none, in one durable transaction.
    pub fn reserve(&self, charges: &[Charge]) -> Result<Result<Vec<Amounts>, QuotaRefusal>, Error> {
        let now = unix_now();
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(self.durability);
        let mut taken = Vec::with_capacity(charges.len());
        {
            let mut table = txn.open_table(COUNTERS).map_err(db_error)?;
            let mut rows = Vec::with_capacity(charges.len());
            for (i, charge) in charges.iter().enumerate() {
                let row = table
                    .get(charge.key.as_str())
                    .map_err(db_error)?
                    .map(|v| v.value())
                    .filter(|v| v.4 > now)
                    .unwrap_or((0, 0, 0, 0, 0));
                let used = [row.0, row.1, row.2, row.3];
                match quota::reserve(&used, &charge.limits, &charge.want) {
                    Ok(take) => {
                        taken.push(take);
                        let keep = now + charge.keep.as_secs();
                        rows.push((used, keep.max(row.4)));
                    }
                    // Dropping the transaction without commit leaves every counter as it was.
                    Err(exceeded) => return Ok(Err((i, exceeded))),
                }
            }
            for ((charge, (used, keep)), take) in charges.iter().zip(rows).zip(&taken) {
                let sum = |m: usize| used[m].saturating_add(take[m]);
                table
                    .insert(charge.key.as_str(), (sum(0), sum(1), sum(2), sum(3), keep))
                    .map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(Ok(taken))
    }

    /// Adds signed deltas to counters, never below zero.
    pub fn settle(&self, deltas: &[(String, [i64; 4])]) -> Result<(), Error> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(self.durability);
        {
            let mut table = txn.open_table(COUNTERS).map_err(db_error)?;
            for (key, delta) in deltas {
                let Some(row) = table
                    .get(key.as_str())
                    .map_err(db_error)?
                    .map(|v| v.value())
                else {
                    continue; // its window ended and was pruned
                };
                let add = |v: u64, d: i64| v.saturating_add_signed(d);
                let row = (
                    add(row.0, delta[0]),
                    add(row.1, delta[1]),
                    add(row.2, delta[2]),
                    add(row.3, delta[3]),
                    row.4,
                );
                table.insert(key.as_str(), row).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    /// A counter's amounts (zero when absent or expired).
    pub fn read(&self, key: &str) -> Result<Amounts, Error> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = match txn.open_table(COUNTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok([0; 4]),
            Err(e) => return Err(db_error(e)),
        };
        let now = unix_now();
        Ok(table
            .get(key)
            .map_err(db_error)?
            .map(|v| v.value())
            .filter(|v| v.4 > now)
            .map_or([0; 4], |v| [v.0, v.1, v.2, v.3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, limit: u64) -> Charge {
        Charge {
            key: key.to_owned(),
            limits: [Some(limit), None, None, None],
            want: [1, 0, 0, 0],
            keep: Duration::from_secs(3600),
        }
    }

    #[test]
    fn reservations_are_all_or_nothing_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Embedded::open(dir.path(), false).unwrap();
            let both = [charge("a", 2), charge("b", 1)];
            assert!(store.reserve(&both).unwrap().is_ok());
            // `b` is full: nothing is taken from `a` either.
            let (which, exceeded) = store.reserve(&both).unwrap().unwrap_err();
            assert_eq!((which, exceeded.used), (1, 1));
            assert_eq!(store.read("a").unwrap(), [1, 0, 0, 0]);
            store.settle(&[("a".to_owned(), [0, 5, 0, 0])]).unwrap();
        }
        let store = Embedded::open(dir.path(), false).unwrap();
        assert_eq!(store.read("a").unwrap(), [1, 5, 0, 0]);
        assert_eq!(store.read("b").unwrap(), [1, 0, 0, 0]);
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
        assert!(store.take_rate(&b).unwrap().is_ok());
        assert_eq!(
            store.take_rate(&b).unwrap(),
            Err((0, Duration::from_secs(1)))
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(store.peek_rate(&b[0]).unwrap().0, 1);
        assert!(store.take_rate(&b).unwrap().is_ok());
    }
}
