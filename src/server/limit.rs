//! How much report work the operator takes on at once: a few reports in flight (each may hold
//! a body and the parsed report), of which fewer large ones, and a steady rate of new ones.
//! Past the first or the last, the sensor hears 429 with a Retry-After and tries again within
//! its grace period; a large report waits its turn. Hand-written
//! rather than a tower layer: the limit applies after the token check (strangers cost one hash,
//! not a slot) and before the body is read, which a layer around the route cannot tell apart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reports handled at once, body to stored ConfigMap.
pub const IN_FLIGHT: usize = 4;
/// Large reports parsed and stored at once. A maximal report (16 MiB of JSON) costs about
/// 45 MiB parsed; two at a time keep 8 senders of maximal reports under 200 MiB of operator
/// memory (`make bench-intake`, docs/benchmarks.md).
pub const LARGE_IN_FLIGHT: usize = 2;
/// A body this large or larger is a large report: typical reports (a few thousand paths)
/// compress to tens of KiB, and 64 KiB of gzip may hold a few MiB of JSON.
pub const LARGE_BODY: usize = 64 << 10;
/// New reports admitted per second, on average, with a burst of [`BURST`].
pub const PER_SECOND: f64 = 20.0;
pub const BURST: f64 = 40.0;
/// What a refused sensor is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Limits {
    slots: std::sync::Arc<Semaphore>,
    large: std::sync::Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(IN_FLIGHT, BURST)
    }
}

impl Limits {
    pub fn new(in_flight: usize, burst: f64) -> Limits {
        Limits {
            slots: std::sync::Arc::new(Semaphore::new(in_flight)),
            large: std::sync::Arc::new(Semaphore::new(LARGE_IN_FLIGHT.min(in_flight))),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// A slot for one report, or `None` when too many are in flight or arriving too fast.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if !self.take_token(Instant::now()) {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// For a body of `len` bytes, waits for a turn among the large reports; small ones need
    /// none. Held until the report is stored, since its parsed form lives that long.
    pub async fn large_turn(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        if len < LARGE_BODY {
            return None;
        }
        // The semaphore is never closed, so acquiring only fails if it were.
        self.large.clone().acquire_owned().await.ok()
    }

    fn take_token(&self, now: Instant) -> bool {
        let Ok(mut b) = self.bucket.lock() else {
            return false;
        };
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * PER_SECOND;
        b.tokens = (b.tokens + refill).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let limits = Limits::new(2, BURST);
        let a = limits.admit().expect("first");
        let _b = limits.admit().expect("second");
        assert!(limits.admit().is_none(), "a third while two are in flight");
        drop(a);
        assert!(limits.admit().is_some(), "a slot freed");
    }

    #[tokio::test]
    async fn large_reports_take_turns_and_small_ones_do_not_wait() {
        let limits = Limits::new(4, BURST);
        let a = limits.large_turn(LARGE_BODY).await.expect("a turn");
        let _b = limits.large_turn(LARGE_BODY + 1).await.expect("a turn");
        let third = limits.large_turn(LARGE_BODY);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut third)
                .await
                .is_err(),
            "a third large report waits while two are parsed"
        );
        assert!(
            limits.large_turn(LARGE_BODY - 1).await.is_none(),
            "small: no wait"
        );
        drop(a);
        assert!(third.await.is_some(), "its turn comes when one is done");
    }

    #[test]
    fn the_rate_refills_with_time() {
        let limits = Limits::new(1000, 3.0);
        let start = Instant::now();
        assert!((0..3).all(|_| limits.take_token(start)));
        assert!(!limits.take_token(start), "the burst is spent");
        assert!(
            limits.take_token(start + Duration::from_millis(100)),
            "two tokens later"
        );
    }
}
