//! Observing: the instrumented pods run until `observe.duration` has passed (counted from the
//! exercise Job's success when there is an exercise); then the original template comes back.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Exercise, POLL, ROUTING, remaining};
use crate::api::HardeningWorkflow;
use crate::controller::reason::Reason;

/// Observation looks again at least this often while it waits out `observe.duration`.
const OBSERVE_POLL: Duration = Duration::from_secs(30);

/// What the Observing phase does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Observation {
    /// Keep observing; look again after this long.
    Wait(Duration),
    /// Observation is over: restore the original and collect the reports.
    End,
    /// The exercise could not run, or failed against the original workload.
    Fail { reason: Reason, message: String },
}

/// The verdict `since_phase_start` into observation, with the exercise run's state (None when
/// the workflow has no exercise) and the instrumented pods `running`.
pub fn observation(
    workflow: &HardeningWorkflow,
    exercise: Option<&Exercise>,
    since_phase_start: Duration,
    running: &BTreeSet<String>,
) -> Observation {
    let observe = &workflow.spec.observe;
    let (elapsed, limit) = match exercise {
        None => (since_phase_start, observe.duration_after(false)),
        Some(Exercise::Starting { service }) => {
            let limit = workflow.spec.exercise.as_ref().map(|e| &e.timeout);
            let limit = limit.and_then(|t| t.get().ok()).unwrap_or_default();
            if since_phase_start <= limit {
                return Observation::Wait(ROUTING);
            }
            let pods = running.iter().cloned().collect::<Vec<_>>().join(", ");
            return Observation::Fail {
                reason: Reason::ServiceNotRouting,
                message: format!(
                    "Service {service} did not route to the instrumented pods alone ({pods}) within the exercise's timeout: does its selector pick other pods too?"
                ),
            };
        }
        Some(Exercise::Running) => return Observation::Wait(POLL * 6),
        Some(Exercise::Failed(why)) => {
            return Observation::Fail {
                reason: Reason::ExerciseFailed,
                message: format!(
                    "the exercise failed against the original workload, so the exercise is at fault, not the image: {why}"
                ),
            };
        }
        Some(Exercise::Passed { since }) => (*since, observe.duration_after(true)),
    };
    match remaining(elapsed, limit) {
        Some(left) => Observation::Wait(left.min(OBSERVE_POLL)),
        None => Observation::End,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::phase::tests::set;
    use serde_json::json;

    fn workflow(observe: Option<&str>, exercise: bool) -> HardeningWorkflow {
        let mut spec = json!({"target": {"name": "web"}});
        if let Some(d) = observe {
            spec["observe"] = json!({"duration": d});
        }
        if exercise {
            spec["exercise"] = json!({"template": {}, "timeout": "2m"});
        }
        HardeningWorkflow::new("harden-web", serde_json::from_value(spec).unwrap())
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn without_an_exercise_observation_lasts_observe_duration_or_ten_minutes() {
        let pods = set(&["a"]);
        let w = workflow(Some("90s"), false);
        assert_eq!(observation(&w, None, S(0), &pods), Observation::Wait(S(30)));
        assert_eq!(
            observation(&w, None, S(80), &pods),
            Observation::Wait(S(10))
        );
        assert_eq!(observation(&w, None, S(90), &pods), Observation::End);
        let default = workflow(None, false);
        assert_eq!(
            observation(&default, None, S(599), &pods),
            Observation::Wait(S(1))
        );
        assert_eq!(observation(&default, None, S(600), &pods), Observation::End);
    }

    #[test]
    fn with_an_exercise_observation_ends_observe_duration_after_it_passed() {
        let pods = set(&["a"]);
        let w = workflow(Some("20s"), true);
        let passed = |since| Exercise::Passed { since: S(since) };
        assert_eq!(
            observation(&w, Some(&Exercise::Running), S(900), &pods),
            Observation::Wait(POLL * 6)
        );
        assert_eq!(
            observation(&w, Some(&passed(5)), S(900), &pods),
            Observation::Wait(S(15))
        );
        assert_eq!(
            observation(&w, Some(&passed(20)), S(900), &pods),
            Observation::End
        );
        let at_once = workflow(None, true);
        assert_eq!(
            observation(&at_once, Some(&passed(0)), S(1), &pods),
            Observation::End
        );
    }

    #[test]
    fn an_exercise_that_cannot_start_or_fails_fails_observation_naming_why() {
        let pods = set(&["a", "b"]);
        let w = workflow(None, true);
        let starting = Exercise::Starting {
            service: "web".into(),
        };
        assert_eq!(
            observation(&w, Some(&starting), S(120), &pods),
            Observation::Wait(ROUTING)
        );
        assert_eq!(
            observation(&w, Some(&starting), S(121), &pods),
            Observation::Fail {
                reason: Reason::ServiceNotRouting,
                message: "Service web did not route to the instrumented pods alone (a, b) within the exercise's timeout: does its selector pick other pods too?".into()
            }
        );
        let failed = Exercise::Failed("Job x failed".into());
        assert!(matches!(
            observation(&w, Some(&failed), S(1), &pods),
            Observation::Fail { reason: Reason::ExerciseFailed, message } if message.ends_with("not the image: Job x failed")
        ));
    }
}
