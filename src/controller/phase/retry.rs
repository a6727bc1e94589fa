//! What an error means for the workflow: a permanent failure fails it (and restores the
//! target); a transient one is retried with backoff until the phase's time runs out.

use std::time::Duration;

use crate::api::Phase;
use crate::controller::error::Error;
use crate::controller::reason::Reason;

/// What the step does with an error.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterError {
    /// Fail the workflow with this reason and message.
    Fail { reason: Reason, message: String },
    /// Try again later (a Warning Event says why).
    Retry,
}

/// Whether a phase that talks to registries (instrument, harden) has used up `harden.timeout`
/// (`limit`), so a transient failure becomes final.
pub fn gives_up(phase: Phase, since_phase_start: Duration, limit: Duration) -> bool {
    matches!(phase, Phase::Instrumenting | Phase::Hardening) && since_phase_start > limit
}

/// The verdict on `error` in `phase`; `out_of_time` from [`gives_up`], `timeout` the
/// `harden.timeout` as the user wrote it.
pub fn after_error(error: &Error, phase: Phase, out_of_time: bool, timeout: &str) -> AfterError {
    match error.permanent_reason() {
        Some(reason) => AfterError::Fail {
            reason,
            message: error.to_string(),
        },
        None if out_of_time => AfterError::Fail {
            reason: Reason::Timeout,
            message: format!("{phase} gave up after {timeout}: {error}"),
        },
        None => AfterError::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Error {
        Error::Transient {
            what: "downloading the database".into(),
            detail: "connection reset".into(),
        }
    }

    #[test]
    fn only_registry_phases_give_up_and_only_after_harden_timeout() {
        let limit = Duration::from_secs(600);
        let late = Duration::from_secs(601);
        assert!(gives_up(Phase::Instrumenting, late, limit));
        assert!(gives_up(Phase::Hardening, late, limit));
        assert!(!gives_up(Phase::Hardening, limit, limit));
        for phase in [
            Phase::Pending,
            Phase::Observing,
            Phase::Collecting,
            Phase::Verifying,
        ] {
            assert!(!gives_up(phase, late, limit), "{phase}");
        }
    }

    #[test]
    fn a_permanent_error_fails_at_once_a_transient_one_only_when_out_of_time() {
        let failed = Error::Failed {
            reason: Reason::TargetDeleted,
            message: "Deployment shop/web was deleted while the workflow ran".into(),
        };
        assert_eq!(
            after_error(&failed, Phase::Observing, false, "30m"),
            AfterError::Fail {
                reason: Reason::TargetDeleted,
                message: "Deployment shop/web was deleted while the workflow ran".into()
            }
        );
        assert_eq!(
            after_error(&transient(), Phase::Hardening, false, "30m"),
            AfterError::Retry
        );
        assert_eq!(
            after_error(&transient(), Phase::Hardening, true, "30m"),
            AfterError::Fail {
                reason: Reason::Timeout,
                message: "Hardening gave up after 30m: downloading the database: connection reset"
                    .into()
            }
        );
    }
}
