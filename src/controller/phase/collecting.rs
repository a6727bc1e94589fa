//! Collecting: the stopping pods' sensors report; harden when all have, or when
//! `collectTimeout` has passed with at least `minReports`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{POLL, remaining};

/// What the Collecting phase does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Collect {
    /// Harden with what arrived; `silent` names the pods that never reported.
    Harden { silent: Vec<String> },
    /// Wait for more reports, at most this long before looking again.
    Wait(Duration),
    /// Too few reports when the time ran out.
    Fail {
        silent: Vec<String>,
        received: usize,
    },
}

/// Every instrumented pod reported → harden now. Otherwise wait until `timeout` has passed
/// since collection began; then harden with at least `min_reports`, or fail naming the pods that
/// stayed silent.
pub fn collect(
    expected: &BTreeSet<String>,
    reported: &BTreeSet<String>,
    min_reports: usize,
    elapsed: Duration,
    timeout: Duration,
) -> Collect {
    let silent: Vec<String> = expected.difference(reported).cloned().collect();
    if silent.is_empty() && reported.len() >= min_reports {
        return Collect::Harden { silent };
    }
    match remaining(elapsed, timeout) {
        Some(left) => Collect::Wait(left.min(POLL)),
        None if reported.len() >= min_reports => Collect::Harden { silent },
        None => Collect::Fail {
            silent,
            received: reported.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::phase::tests::set;

    #[test]
    fn collection_hardens_when_every_pod_reported() {
        assert_eq!(
            collect(
                &set(&["a", "b"]),
                &set(&["a", "b"]),
                1,
                Duration::ZERO,
                Duration::from_secs(60)
            ),
            Collect::Harden { silent: vec![] }
        );
    }

    #[test]
    fn collection_waits_then_hardens_with_enough_or_fails_naming_the_silent() {
        let expected = set(&["a", "b"]);
        let timeout = Duration::from_secs(60);
        assert_eq!(
            collect(&expected, &set(&["a"]), 1, Duration::from_secs(58), timeout),
            Collect::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            collect(&expected, &set(&["a"]), 1, Duration::from_secs(10), timeout),
            Collect::Wait(POLL)
        );
        assert_eq!(
            collect(&expected, &set(&["a"]), 1, timeout, timeout),
            Collect::Harden {
                silent: vec!["b".into()]
            }
        );
        assert_eq!(
            collect(&expected, &set(&["a"]), 2, timeout, timeout),
            Collect::Fail {
                silent: vec!["b".into()],
                received: 1
            }
        );
        assert_eq!(
            collect(&expected, &set(&[]), 1, Duration::from_secs(61), timeout),
            Collect::Fail {
                silent: vec!["a".into(), "b".into()],
                received: 0
            }
        );
    }
}
