//! Circuit breakers: a tool that keeps failing for infrastructure reasons is refused fast.
//!
//! After `failures` consecutive infrastructure failures (the sandbox could not start, the
//! supervision failed, or the tool ran into its time limit) the breaker opens: calls are refused
//! with UNAVAILABLE for `cooldown`. Then one call is let through as a probe (half-open); its
//! success closes the breaker, its failure opens it for another cool-down. A probe that ends
//! without a verdict (cancelled) frees the probe slot for the next call.
//!
//! The tool's own exit code is not an infrastructure failure: `grep` finding nothing is fine.
//! Time is `tokio::time::Instant`, so the tests run on a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When to open and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One tool's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: Settings,
    state: Mutex<State>,
}

/// What a finished call tells the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The tool ran and ended by itself.
    Success,
    /// The infrastructure failed (spawn, supervision, timeout).
    Failure,
    /// Nothing to learn (cancelled, or the permit was dropped without a result).
    None,
}

/// A ticket for a call the breaker let through; `probe` when it is the half-open probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Whether this call is the half-open probe.
    pub probe: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { consecutive: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a call through, or says how long until it may be tried.
    pub fn admit(&self) -> Result<Ticket, Duration> {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Ok(Ticket { probe: false }),
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    Err(until - now)
                } else {
                    *state = State::HalfOpen { probing: true };
                    Ok(Ticket { probe: true })
                }
            }
            State::HalfOpen { probing: true } => Err(Duration::from_secs(1)),
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Ticket { probe: true })
            }
        }
    }

    /// Records how a call let through by `admit` ended.
    pub fn record(&self, ticket: Ticket, verdict: Verdict) {
        let mut state = self.state();
        let open = State::Open {
            until: Instant::now() + self.settings.cooldown,
        };
        *state = match (*state, verdict) {
            (_, Verdict::Success) => State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, Verdict::Failure) => {
                if consecutive + 1 >= self.settings.failures {
                    tracing::warn!(cooldown = ?self.settings.cooldown, "circuit breaker opened");
                    open
                } else {
                    State::Closed {
                        consecutive: consecutive + 1,
                    }
                }
            }
            (State::HalfOpen { .. }, Verdict::Failure) if ticket.probe => open,
            (State::HalfOpen { .. }, Verdict::None) if ticket.probe => {
                State::HalfOpen { probing: false }
            }
            (other, _) => other,
        };
    }

    /// `"closed"`, `"open"` or `"half-open"`, and how long until an open breaker probes.
    pub fn describe(&self) -> (&'static str, Duration) {
        match *self.state() {
            State::Closed { .. } => ("closed", Duration::ZERO),
            State::Open { until } => ("open", until.saturating_duration_since(Instant::now())),
            State::HalfOpen { .. } => ("half-open", Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_and_closes() {
        let breaker = Breaker::new(Settings {
            failures: 2,
            cooldown: Duration::from_secs(10),
        });
        let t = breaker.admit().unwrap();
        breaker.record(t, Verdict::Failure);
        let t = breaker.admit().unwrap();
        breaker.record(t, Verdict::Success); // a success resets the count
        for _ in 0..2 {
            let t = breaker.admit().unwrap();
            breaker.record(t, Verdict::Failure);
        }
        assert_eq!(breaker.admit(), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(breaker.admit(), Err(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(6)).await;

        // Half-open: one probe at a time; a failed probe reopens.
        let probe = breaker.admit().unwrap();
        assert!(probe.probe);
        assert!(breaker.admit().is_err());
        breaker.record(probe, Verdict::Failure);
        assert_eq!(breaker.admit(), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;

        // A cancelled probe frees the slot; a successful one closes the breaker.
        let probe = breaker.admit().unwrap();
        breaker.record(probe, Verdict::None);
        let probe = breaker.admit().unwrap();
        breaker.record(probe, Verdict::Success);
        assert_eq!(breaker.describe().0, "closed");
        assert!(!breaker.admit().unwrap().probe);
    }
}
