//! Where rate buckets and quota counters live: embedded (one host) or Redis (a fleet).
//!
//! Both stores do the same two atomic operations: take one call from several rate buckets (all
//! or none), and reserve against several quota counters (all or none); plus the settlement and
//! read-only views for `GetUsage`. The Redis store falls back to the embedded one only when the
//! config says `on_store_failure = "local"`; by default a Redis failure refuses the call
//! (fail closed).

pub mod embedded;
mod group_commit;
mod journal;
pub mod redis;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::quota::{Amounts, Exceeded};

pub use embedded::Embedded;
pub use redis::Redis;

/// One rate bucket to take a call from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Its key, e.g. `rate:caller_tool:uid:1000:echo`.
    pub key: String,
    /// Microseconds between calls at the steady rate.
    pub interval_us: u64,
    /// Calls allowed at once.
    pub burst: u64,
}

/// One quota counter to reserve against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Its key, including the period's window.
    pub key: String,
    /// Limits per metric.
    pub limits: [Option<u64>; 4],
    /// The estimate for this call.
    pub want: Amounts,
    /// How long the counter must be kept (the rest of its window, plus slack).
    pub keep: Duration,
}

/// A bucket refused the call: which one, and the wait before it would allow one.
pub type RateRefusal = (usize, Duration);
/// A counter refused the reservation: which one, and what would be exceeded.
pub type QuotaRefusal = (usize, Exceeded);

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded database failed to open.
    #[error("cannot open the admission state database {path}: {message}")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// Writing the quota snapshot (or reading it at start) failed.
    #[error("quota snapshot database: {0}")]
    Snapshot(String),
    /// Appending a record to the quota journal failed; nothing was counted or changed.
    #[error("cannot append to the quota journal in {dir}: {source}")]
    JournalWrite {
        /// The state directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Flushing the quota journal to disk failed (`state_fsync = true`).
    #[error("cannot flush the quota journal: {0}")]
    JournalSync(String),
    /// Redis could not be reached or answered an error.
    #[error("redis: {0}")]
    Redis(String),
    /// The Redis configuration is unusable.
    #[error("redis configuration: {0}")]
    RedisConfig(String),
}

/// What to do when Redis fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Refuse the call with UNAVAILABLE (fail closed).
    #[default]
    Refuse,
    /// Use this daemon's embedded limits instead.
    Local,
}

/// The store in use.
pub enum Store {
    /// One host.
    Embedded(Embedded),
    /// Shared by a fleet, with the embedded store as the fallback.
    Redis {
        /// The shared store (boxed: it is much larger than the embedded variant).
        redis: Box<Redis>,
        /// This daemon's own store, for `OnFailure::Local`.
        local: Embedded,
        /// The configured behaviour on failure.
        on_failure: OnFailure,
        /// How many calls fell back to local limits (logged each time, shown in GetUsage).
        fallbacks: AtomicU64,
    },
}

macro_rules! dispatch {
    ($self:ident, $op:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Embedded(e) => e.$op($($arg),*).await,
            Store::Redis { redis, local, on_failure, fallbacks } => {
                match redis.$op($($arg),*).await {
                    Ok(v) => Ok(v),
                    Err(error) if *on_failure == OnFailure::Local => {
                        let n = fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(%error, fallbacks = n, op = stringify!($op), "redis failed: using local limits");
                        local.$op($($arg),*).await
                    }
                    Err(error) => {
                        tracing::error!(%error, op = stringify!($op), "redis failed: refusing (on_store_failure = \"refuse\")");
                        Err(error)
                    }
                }
            }
        }
    };
}

impl Store {
    /// Takes one call from every bucket, or from none.
    pub async fn take_rate(&self, buckets: &[Bucket]) -> Result<Result<(), RateRefusal>, Error> {
        if buckets.is_empty() {
            return Ok(Ok(()));
        }
        dispatch!(self, take_rate(buckets))
    }

    /// What is left of a bucket, and how long until it is full.
    pub async fn peek_rate(&self, bucket: &Bucket) -> Result<(u64, Duration), Error> {
        dispatch!(self, peek_rate(bucket))
    }

    /// Reserves against every counter, or none; gives what each reserved.
    pub async fn reserve(
        &self,
        charges: &[Charge],
    ) -> Result<Result<Vec<Amounts>, QuotaRefusal>, Error> {
        if charges.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        dispatch!(self, reserve(charges))
    }

    /// Adds signed deltas to counters (replacing reservations by measured usage).
    pub async fn settle(&self, deltas: &[(String, [i64; 4])]) -> Result<(), Error> {
        if deltas.is_empty() {
            return Ok(());
        }
        dispatch!(self, settle(deltas))
    }

    /// A counter's current amounts.
    pub async fn read(&self, key: &str) -> Result<Amounts, Error> {
        dispatch!(self, read(key))
    }

    /// Calls that fell back to local limits since start.
    pub fn fallbacks(&self) -> u64 {
        match self {
            Self::Embedded(_) => 0,
            Self::Redis { fallbacks, .. } => fallbacks.load(Ordering::Relaxed),
        }
    }
}
