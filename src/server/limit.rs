//! How much report work the operator takes on at once: a few reports in flight (each may hold
//! a body, its inflated JSON and the parsed report), and a steady rate of new ones. Past either,
//! the sensor hears 429 with a Retry-After and tries again within its grace period. Hand-written
//! rather than a tower layer: the limit applies after the token check (strangers cost one hash,
//! not a slot) and before the body is read, which a layer around the route cannot tell apart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reports handled at once, body to stored ConfigMap.
pub const IN_FLIGHT: usize = 4;
/// New reports admitted per second, on average, with a burst of [`BURST`].
pub const PER_SECOND: f64 = 20.0;
pub const BURST: f64 = 40.0;
/// What a refused sensor is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Limits {
    slots: std::sync::Arc<Semaphore>,
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
