//! Pure: what each phase decides, from what the controller observed. No I/O here, so every
//! rule is unit-tested without a cluster; `reconcile/` gathers the inputs, asks the verdict of
//! the matching file here, and acts on it.
//!
//! - `pending`: may the workflow start (target found, container there, nobody else holds
//!   it, no GitOps tool in the way)?
//! - `rollout`: is a rollout (instrumented or hardened) ready, waiting, crash-looping, stuck?
//! - `observing`: has observation ended, should it wait, or did the exercise fail?
//! - `collecting`: harden now, wait for more reports, or fail?
//! - `verifying`: did the exercise against the hardened image pass?
//! - `retry`: does an error fail the workflow, or is it retried?
//! - `continuous`: once Succeeded, when to look for a new source digest, or run again now?

mod collecting;
mod continuous;
mod observing;
mod pending;
mod retry;
mod rollout;
mod verifying;

pub use collecting::{Collect, collect};
pub use continuous::{AfterFailure, Refresh, Schedule, after_failure, refresh, spread_seed};
pub use observing::{Observation, observation};
pub use pending::{Pending, pending};
pub use retry::{AfterError, after_error, gives_up};
pub use rollout::{
    Rollout, RolloutWatch, Trouble, next_to_delete, pods_running, rollout, to_delete_after_restore,
};
pub use verifying::{Exercised, command_missing, exercised};

use std::time::Duration;

/// How often a phase that waits looks again when no watch event wakes it first.
pub const POLL: Duration = Duration::from_secs(5);

/// How often to look whether a Service routes to the pods under test yet, before an exercise.
pub const ROUTING: Duration = Duration::from_secs(1);

/// An exercise run's Job, as a phase's verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exercise {
    /// Not started yet: this Service does not route to the pods under test alone.
    Starting {
        service: String,
    },
    Running,
    /// Succeeded this long ago.
    Passed {
        since: Duration,
    },
    /// Why, with the failing container's last log lines.
    Failed(String),
}

/// Time left of a `limit` that began `elapsed` ago; None once it has run out.
pub fn remaining(elapsed: Duration, limit: Duration) -> Option<Duration> {
    limit.checked_sub(elapsed).filter(|d| !d.is_zero())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    pub(crate) fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remaining_time_runs_out() {
        let m = Duration::from_secs(60);
        assert_eq!(
            remaining(Duration::from_secs(20), m),
            Some(Duration::from_secs(40))
        );
        assert_eq!(remaining(m, m), None);
        assert_eq!(remaining(Duration::from_secs(90), m), None);
    }
}
