//! Rate limits: token buckets written `"30/minute"`, computed with GCRA (the generic cell rate
//! algorithm), which keeps one number per bucket, the theoretical arrival time (TAT).
//!
//! A bucket of `count` per `period` with a `burst` lets one call through every
//! `interval = period / count`, and up to `burst` at once after a quiet spell. A call at time
//! `now` is allowed when `max(tat, now) + interval - burst * interval <= now`; the new TAT is
//! then `max(tat, now) + interval`. When refused, the difference is exactly how long the caller
//! must wait: that is the retry delay we return, so it is correct by construction.
//!
//! Times are integer microseconds from an epoch chosen by the store: the embedded store uses
//! `tokio::time::Instant` (so tests run on a paused clock), the Redis store uses the Redis
//! server's `TIME` (so every daemon sharing it agrees). The Lua script in `store/redis.rs` is this
//! same arithmetic; keep them in step.

use std::fmt;
use std::time::Duration;

/// A rate: `count` calls per `period`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
    /// Calls allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl Rate {
    /// Parses `"N/second"`, `"N/minute"` or `"N/hour"` (also `s`, `min`, `h`); the burst is `N`
    /// unless `burst` says otherwise.
    pub fn parse(text: &str, burst: Option<u32>) -> Result<Self, String> {
        let bad = || {
            format!("`{text}` is not a rate: write e.g. \"30/minute\" (per second, minute or hour)")
        };
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "second" | "s" | "sec" => Duration::from_secs(1),
            "minute" | "min" | "m" => Duration::from_secs(60),
            "hour" | "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!(
                "`{text}`: a rate must allow at least one call; remove the tool from the callers instead"
            ));
        }
        let burst = burst.unwrap_or(count);
        if burst == 0 {
            return Err("burst must be at least 1".to_owned());
        }
        Ok(Self {
            count,
            period,
            burst,
        })
    }

    /// Microseconds between two calls at the steady rate (at least 1).
    pub fn interval_us(&self) -> u64 {
        (micros(self.period) / u64::from(self.count)).max(1)
    }

    /// The whole bucket in microseconds: `burst` intervals.
    pub fn capacity_us(&self) -> u64 {
        self.interval_us().saturating_mul(u64::from(self.burst))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            _ => "hour",
        };
        write!(f, "{}/{unit} (burst {})", self.count, self.burst)
    }
}

/// The GCRA step for one bucket: the new TAT when the call is allowed, or how long to wait.
pub fn take(tat: u64, now: u64, interval: u64, burst: u64) -> Result<u64, Duration> {
    let new_tat = tat.max(now).saturating_add(interval);
    let allow_at = new_tat.saturating_sub(interval.saturating_mul(burst));
    if now < allow_at {
        Err(Duration::from_micros(allow_at - now))
    } else {
        Ok(new_tat)
    }
}

/// What is left of a bucket at `now`: calls available at once, and when it is full again.
pub fn remaining(tat: u64, now: u64, interval: u64, burst: u64) -> (u64, Duration) {
    let backlog = tat.saturating_sub(now);
    let capacity = interval.saturating_mul(burst);
    (
        capacity.saturating_sub(backlog) / interval.max(1),
        Duration::from_micros(backlog),
    )
}

/// A duration in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_refuses_nonsense() {
        let r = Rate::parse("30/minute", None).unwrap();
        assert_eq!(
            (r.count, r.period, r.burst),
            (30, Duration::from_secs(60), 30)
        );
        assert_eq!(r.interval_us(), 2_000_000);
        assert_eq!(Rate::parse("5/s", Some(1)).unwrap().burst, 1);
        assert!(Rate::parse("0/minute", None).is_err());
        assert!(Rate::parse("30 per minute", None).is_err());
        assert!(Rate::parse("30/fortnight", None).is_err());
        assert!(Rate::parse("3/hour", Some(0)).is_err());
    }

    #[test]
    fn burst_then_steady_rate_with_exact_retry_delay() {
        // 2/second, burst 2: two at once, then one every 500 ms.
        let (interval, burst) = (500_000, 2);
        let mut tat = 0;
        let now = 10_000_000;
        tat = take(tat, now, interval, burst).unwrap();
        tat = take(tat, now, interval, burst).unwrap();
        assert_eq!(
            take(tat, now, interval, burst),
            Err(Duration::from_millis(500))
        );
        assert_eq!(
            take(tat, now + 100_000, interval, burst),
            Err(Duration::from_millis(400))
        );
        // Waiting exactly the delay works.
        assert!(take(tat, now + 500_000, interval, burst).is_ok());
        assert_eq!(remaining(tat, now, interval, burst).0, 0);
        assert_eq!(
            remaining(tat, now + 1_000_000, interval, burst),
            (2, Duration::ZERO)
        );
    }
}
