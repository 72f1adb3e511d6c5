//! Quotas: how much a caller may use per period (hour or day): invocations, CPU-seconds,
//! wall-seconds and output bytes.
//!
//! Reserve, then settle. Before a run, each quota that applies is charged a reservation: one
//! invocation, and for the measured metrics an estimate (the tool's limits) capped at what is
//! left. A call is refused when an invocation would pass the limit, or when nothing is left of a
//! measured metric. After the run, the reservation is replaced by the measured usage. If the
//! daemon dies in between, the reservation stays counted: we may over-count a crashed run, never
//! under-count one.
//!
//! Periods are fixed windows on the wall clock (UTC hours and days), not on a monotonic clock:
//! they must mean the same thing after a restart and on every daemon sharing a Redis store.
//! Amounts are integers: milliseconds for the time metrics, bytes for output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metrics a quota can limit, in storage order.
pub const METRICS: [Metric; 4] = [
    Metric::Invocations,
    Metric::CpuSeconds,
    Metric::WallSeconds,
    Metric::OutputBytes,
];

/// One metric a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Calls admitted.
    Invocations,
    /// User plus system CPU time, stored in milliseconds.
    CpuSeconds,
    /// Wall-clock time, stored in milliseconds.
    WallSeconds,
    /// Bytes of stdout and stderr delivered to the caller.
    OutputBytes,
}

impl Metric {
    /// The policy key, also the last part of the refusal's rule.
    pub fn key(self) -> &'static str {
        match self {
            Self::Invocations => "invocations",
            Self::CpuSeconds => "cpu_seconds",
            Self::WallSeconds => "wall_seconds",
            Self::OutputBytes => "output_bytes",
        }
    }

    /// Index in an [`Amounts`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stored amount in the metric's unit, for people.
    pub fn show(self, stored: u64) -> String {
        match self {
            Self::CpuSeconds | Self::WallSeconds => format!("{:.1} s", stored as f64 / 1000.0),
            Self::OutputBytes => format!("{stored} bytes"),
            Self::Invocations => format!("{stored} invocations"),
        }
    }
}

/// One integer per metric, in [`METRICS`] order.
pub type Amounts = [u64; 4];

/// A quota period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// A UTC hour.
    Hour,
    /// A UTC day.
    Day,
}

impl Period {
    /// Parses `"hour"` or `"day"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "hour" => Ok(Self::Hour),
            "day" => Ok(Self::Day),
            other => Err(format!(
                "quota period must be \"hour\" or \"day\", not \"{other}\""
            )),
        }
    }

    /// Its length.
    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
        })
    }

    /// The window `now` falls in: its number and how long until it ends.
    pub fn window(self, now: SystemTime) -> (u64, Duration) {
        let len = self.length().as_secs();
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let id = since.as_secs() / len;
        let ends = Duration::from_secs((id + 1) * len);
        (id, ends.saturating_sub(since))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hour => "hour",
            Self::Day => "day",
        })
    }
}

/// Limits of one quota: `None` means the metric is not limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The period the limits apply to.
    pub period: Period,
    /// Limit per metric, in stored units.
    pub limits: [Option<u64>; 4],
}

/// A metric would pass its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// Which.
    pub metric: Metric,
    /// Already used (reservations included).
    pub used: u64,
    /// The limit.
    pub limit: u64,
}

/// What to reserve against `used` for a call that may use up to `want`; refuses when the
/// call cannot fit. The same rule runs inside the Redis script.
pub fn reserve(
    used: &Amounts,
    limits: &[Option<u64>; 4],
    want: &Amounts,
) -> Result<Amounts, Exceeded> {
    let mut take = *want;
    for metric in METRICS {
        let i = metric.index();
        let Some(limit) = limits[i] else { continue };
        let exceeded = Exceeded {
            metric,
            used: used[i],
            limit,
        };
        if metric == Metric::Invocations {
            if used[i].saturating_add(want[i]) > limit {
                return Err(exceeded);
            }
        } else {
            // The estimate is an upper bound: take what is left so the last of the quota is
            // usable, and let concurrent calls share only what remains.
            if used[i] >= limit {
                return Err(exceeded);
            }
            take[i] = want[i].min(limit - used[i]);
        }
    }
    Ok(take)
}

/// The signed change that replaces `reserved` by `actual`.
pub fn settlement(reserved: &Amounts, actual: &Amounts) -> [i64; 4] {
    let mut delta = [0i64; 4];
    for i in 0..4 {
        let a = i64::try_from(actual[i]).unwrap_or(i64::MAX);
        let r = i64::try_from(reserved[i]).unwrap_or(i64::MAX);
        delta[i] = a.saturating_sub(r);
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_are_exact_and_measured_metrics_take_what_is_left() {
        let limits = [Some(3), Some(10_000), None, None];
        let want = [1, 30_000, 30_000, 2048];
        assert_eq!(
            reserve(&[0, 0, 0, 0], &limits, &want),
            Ok([1, 10_000, 30_000, 2048])
        );
        assert_eq!(
            reserve(&[2, 9_000, 0, 0], &limits, &want),
            Ok([1, 1_000, 30_000, 2048])
        );
        let e = reserve(&[3, 0, 0, 0], &limits, &want).unwrap_err();
        assert_eq!((e.metric, e.used, e.limit), (Metric::Invocations, 3, 3));
        let e = reserve(&[1, 10_000, 0, 0], &limits, &want).unwrap_err();
        assert_eq!(e.metric, Metric::CpuSeconds);
        assert_eq!(
            settlement(&[1, 1000, 0, 0], &[1, 250, 0, 5]),
            [0, -750, 0, 5]
        );
    }

    #[test]
    fn windows_are_aligned_to_the_utc_clock() {
        let t = UNIX_EPOCH + Duration::from_secs(3600 * 5 + 600);
        assert_eq!(Period::Hour.window(t), (5, Duration::from_secs(3000)));
        assert_eq!(Period::Day.window(t).0, 0);
        assert!(Period::parse("week").is_err());
    }
}
