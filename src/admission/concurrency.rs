//! Concurrency: how many invocations may be in flight, per tool and in all, with a bounded wait.
//!
//! Invariants: a slot is an owned semaphore permit, so it goes back when dropped, whatever ended
//! the run (success, refusal, panic, or the request future being dropped). The wait queue is
//! bounded: past `max_queued` waiters a call is shed at once; a waiter that does not get a slot
//! within `queue_timeout` is shed too. Nothing here can grow without bound.
//!
//! Slots are per daemon: a fleet sharing Redis shares rates and quotas, not in-flight slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One limit on invocations in flight.
#[derive(Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

/// Why a slot was not given: the queue is full or the wait timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed {
    /// A reasonable delay before trying again.
    pub retry_after: Duration,
}

/// Keeps a waiter counted while it waits, including when its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Limiter {
    /// `max` in flight, at most `max_queued` waiting up to `queue_timeout` each.
    pub fn new(max: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicUsize::new(0),
            max_queued,
            queue_timeout,
        }
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Invocations in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// A slot, at once or after a bounded wait.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        let shed = Shed {
            retry_after: self.queue_timeout.max(Duration::from_secs(1)),
        };
        // Reserve a place in the queue first so the bound holds under races.
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(shed);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout to stay closed-fail.
            Ok(Err(_)) | Err(_) => Err(shed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bounded_queue_with_timeout_and_slots_back_on_drop() {
        let limiter = Arc::new(Limiter::new(1, 1, Duration::from_secs(2)));
        let first = limiter.acquire().await.unwrap();
        assert_eq!(limiter.in_flight(), 1);
        // One may wait; a second waiter is shed at once.
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(limiter.acquire().await.is_err());
        // The waiter gets the slot when the first is dropped.
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(limiter.in_flight(), 0);

        // A waiter that is never served is shed after the timeout.
        let held = limiter.acquire().await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(limiter.acquire().await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(held);

        // A waiter whose future is dropped leaves the queue.
        let held = limiter.acquire().await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(10), limiter.acquire()).await;
        assert!(cancelled.is_err());
        assert_eq!(limiter.waiting.load(Ordering::SeqCst), 0);
        drop(held);
    }
}
