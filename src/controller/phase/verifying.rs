//! Verifying, once the hardened pods are ready: the exercise Job's verdict against them.
//! (The rollout itself is judged by `rollout`, strictly: a crash loop fails at once.)

use std::time::Duration;

use super::{Exercise, POLL, ROUTING};
use crate::controller::reason::Reason;

/// What verification does once the hardened rollout is ready.
#[derive(Debug, PartialEq, Eq)]
pub enum Exercised {
    /// The exercise is still starting or running; look again after this long.
    Wait(Duration),
    /// The hardened image passed: how, for the `Verified` condition.
    Passed(&'static str),
    /// The hardened image failed verification.
    Failed { reason: Reason, message: String },
}

/// The verdict on the exercise run against the hardened pods (None: the workflow has no
/// exercise, so readiness is the test), `out_of_time` past `verify.timeout` (`limit`, as the
/// user wrote it).
pub fn exercised(exercise: Option<&Exercise>, out_of_time: bool, limit: &str) -> Exercised {
    match exercise {
        None => Exercised::Passed("the hardened pods rolled out and passed their readiness probes"),
        Some(Exercise::Starting { .. } | Exercise::Running) if out_of_time => Exercised::Failed {
            reason: Reason::Timeout,
            message: format!(
                "the exercise did not finish against the hardened image within {limit}"
            ),
        },
        Some(Exercise::Starting { .. }) => Exercised::Wait(ROUTING),
        Some(Exercise::Running) => Exercised::Wait(POLL * 6),
        Some(Exercise::Failed(why)) => Exercised::Failed {
            reason: Reason::ExerciseFailed,
            message: format!("the exercise failed against the hardened image: {why}"),
        },
        Some(Exercise::Passed { .. }) => {
            Exercised::Passed("the hardened pods became ready and the exercise passed against them")
        }
    }
}

/// Whether kubelet's word on a failed probe (an `Unhealthy` Event) says the probe's command
/// is not in the image: the runtime found no executable (`executable file not found in $PATH`,
/// `stat /usr/bin/x: no such file or directory`), or a shell found no command
/// (`sh: 1: pg_isready: not found`). Such a probe fails the same way until the timeout, so
/// verification need not wait for it.
pub fn command_missing(message: &str) -> bool {
    message.contains("executable file not found")
        || (message.contains("exec") && message.contains("no such file or directory"))
        || message
            .lines()
            .any(|l| l.trim_end().ends_with(": not found") && l.contains("sh: "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_whose_command_the_image_lacks_is_told_from_one_that_just_fails() {
        let missing = [
            r#"Readiness probe errored: rpc error: code = Unknown desc = failed to exec in container: failed to start exec "4f1c": OCI runtime exec failed: exec failed: unable to start container process: exec: "pg_isready": executable file not found in $PATH: unknown"#,
            r#"Liveness probe errored: rpc error: code = Unknown desc = failed to exec in container: failed to start exec "9a": OCI runtime exec failed: exec failed: unable to start container process: exec: "/usr/bin/check": stat /usr/bin/check: no such file or directory: unknown"#,
            "Readiness probe failed: sh: 1: pg_isready: not found\n",
            "Readiness probe failed: /bin/sh: redis-cli: not found",
        ];
        for m in missing {
            assert!(command_missing(m), "{m}");
        }
        let failing = [
            "Readiness probe failed: HTTP probe failed with statuscode: 404",
            "Readiness probe failed: dial tcp 10.0.0.5:8080: connect: connection refused",
            "Readiness probe failed: pg_isready: no response",
            "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory",
            "Readiness probe failed: error: key not found",
        ];
        for m in failing {
            assert!(!command_missing(m), "{m}");
        }
    }

    #[test]
    fn the_hardened_image_passes_when_the_exercise_passes_or_there_is_none() {
        let passed = Exercise::Passed {
            since: Duration::ZERO,
        };
        assert!(
            matches!(exercised(None, false, "5m"), Exercised::Passed(m) if m.contains("readiness probes"))
        );
        assert!(
            matches!(exercised(Some(&passed), true, "5m"), Exercised::Passed(m) if m.contains("exercise passed"))
        );
    }

    #[test]
    fn an_exercise_still_running_waits_until_verify_timeout_then_fails() {
        let starting = Exercise::Starting {
            service: "web".into(),
        };
        assert_eq!(
            exercised(Some(&starting), false, "5m"),
            Exercised::Wait(ROUTING)
        );
        assert_eq!(
            exercised(Some(&Exercise::Running), false, "5m"),
            Exercised::Wait(POLL * 6)
        );
        for e in [starting, Exercise::Running] {
            assert_eq!(
                exercised(Some(&e), true, "5m"),
                Exercised::Failed {
                    reason: Reason::Timeout,
                    message: "the exercise did not finish against the hardened image within 5m"
                        .into()
                }
            );
        }
    }

    #[test]
    fn a_failed_exercise_fails_verification_with_its_logs() {
        assert_eq!(
            exercised(
                Some(&Exercise::Failed("Job v failed; curl: (7)".into())),
                false,
                "5m"
            ),
            Exercised::Failed {
                reason: Reason::ExerciseFailed,
                message: "the exercise failed against the hardened image: Job v failed; curl: (7)"
                    .into()
            }
        );
    }
}
