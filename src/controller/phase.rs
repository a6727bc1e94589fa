//! Pure: the decisions of each phase, from what the controller observed. No I/O here, so every
//! rule is unit-tested.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// How often a phase that waits looks again when no watch event wakes it first.
pub const POLL: Duration = Duration::from_secs(5);

/// Time left of a `limit` that began `elapsed` ago; None once it has run out.
pub fn remaining(elapsed: Duration, limit: Duration) -> Option<Duration> {
    limit.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// True when the Deployment has rolled out its current template: the controller saw the
/// latest generation, every replica is updated and available, and no old pod is left.
pub fn rollout_complete(deployment: &Deployment) -> bool {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
}

/// The names of the pods running `image` in `container` and not being deleted: the pods
/// whose sensors will report.
pub fn pods_running(pods: &[Pod], container: &str, image: &str) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == container && c.image.as_deref() == Some(image))
            })
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Why the pods of a rollout are not ready, for a failure message: the first container that
/// waits or was terminated, with the reason kubelet gives (CrashLoopBackOff, ErrImagePull, …).
pub fn pod_trouble(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let state = c.state.as_ref()?;
            if let Some(w) = &state.waiting {
                let reason = w.reason.as_deref().unwrap_or("Waiting");
                if reason != "ContainerCreating" {
                    return Some(format!(
                        "pod {name} container {}: {reason}{}",
                        c.name,
                        w.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ));
                }
            }
            let t = c.last_state.as_ref()?.terminated.as_ref()?;
            Some(format!(
                "pod {name} container {} exited with {}{}",
                c.name,
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ))
        })
    })
}

/// A pod's container that keeps a rollout from succeeding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    pub pod: String,
    pub container: String,
    pub detail: String,
}

/// Restarts after which a container counts as crash-looping: once may be a slow dependency,
/// twice is the image.
const CRASH_RESTARTS: i32 = 2;

/// The first pod running `image` in `container` whose container keeps crashing: kubelet backs
/// it off, or it has restarted [`CRASH_RESTARTS`] times.
pub fn crash_looping(pods: &[Pod], container: &str, image: &str) -> Option<Trouble> {
    running_image(pods, container, image).find_map(|(pod, status)| {
        let waiting = status.state.as_ref()?.waiting.as_ref();
        let backing_off = waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff");
        if !backing_off && status.restart_count < CRASH_RESTARTS {
            return None;
        }
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                format!(
                    ", last exit code {}{}",
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        Some(Trouble {
            pod: pod.to_string(),
            container: status.name.clone(),
            detail: format!("restarted {} times{last}", status.restart_count),
        })
    })
}

/// The first pod running `image` whose `container` is not ready.
pub fn not_ready(pods: &[Pod], container: &str, image: &str) -> Option<Trouble> {
    running_image(pods, container, image)
        .find(|(_, status)| !status.ready)
        .map(|(pod, status)| Trouble {
            pod: pod.to_string(),
            container: status.name.clone(),
            detail: "not ready".into(),
        })
}

/// Pods not being deleted whose `container` runs `image`, with that container's status.
fn running_image<'p>(
    pods: &'p [Pod],
    container: &'p str,
    image: &'p str,
) -> impl Iterator<Item = (&'p str, &'p k8s_openapi::api::core::v1::ContainerStatus)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(move |p| {
            p.spec.as_ref().is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == container && c.image.as_deref() == Some(image))
            })
        })
        .filter_map(move |p| {
            let name = p.metadata.name.as_deref()?;
            let status = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == container)?;
            Some((name, status))
        })
}

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
    use serde_json::json;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

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

    #[test]
    fn a_rollout_is_complete_when_every_replica_is_new_and_available() {
        let d = |generation: i64,
                 observed: i64,
                 replicas: i32,
                 updated: i32,
                 available: i32|
         -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"generation": generation},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "replicas": replicas,
                           "updatedReplicas": updated, "availableReplicas": available}
            }))
            .unwrap()
        };
        assert!(rollout_complete(&d(3, 3, 2, 2, 2)));
        assert!(
            !rollout_complete(&d(3, 2, 2, 2, 2)),
            "not yet seen by the controller"
        );
        assert!(
            !rollout_complete(&d(3, 3, 3, 2, 2)),
            "an old pod is still there"
        );
        assert!(
            !rollout_complete(&d(3, 3, 2, 2, 1)),
            "a new pod is not available"
        );
    }

    #[test]
    fn the_pods_running_an_image_exclude_those_being_deleted() {
        let pod = |name: &str, image: &str, deleting: bool| -> Pod {
            let mut p = json!({"metadata": {"name": name},
                               "spec": {"containers": [{"name": "web", "image": image}]}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(p).unwrap()
        };
        let pods = [
            pod("a", "i@1", false),
            pod("b", "i@1", true),
            pod("c", "old", false),
        ];
        assert_eq!(pods_running(&pods, "web", "i@1"), set(&["a"]));
    }

    #[test]
    fn pod_trouble_names_the_pod_container_and_reason() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1"},
            "status": {"containerStatuses": [{"name": "web", "image": "x", "imageID": "", "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
        }))
        .unwrap();
        assert_eq!(
            pod_trouble(&[p]).as_deref(),
            Some("pod web-1 container web: CrashLoopBackOff: back-off 40s")
        );
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

    #[test]
    fn a_container_that_keeps_restarting_is_crash_looping_one_that_is_not_ready_is_named() {
        let pod = |name: &str, restarts: i32, waiting: Option<&str>, ready: bool| -> Pod {
            let state = match waiting {
                Some(r) => json!({"waiting": {"reason": r}}),
                None => json!({"running": {}}),
            };
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "web", "image": "h@1"}]},
                "status": {"containerStatuses": [{"name": "web", "image": "h@1", "imageID": "",
                    "ready": ready, "restartCount": restarts, "state": state,
                    "lastState": {"terminated": {"exitCode": 127, "reason": "Error"}}}]}
            }))
            .unwrap()
        };
        assert_eq!(
            crash_looping(&[pod("a", 1, None, false)], "web", "h@1"),
            None
        );
        assert_eq!(
            crash_looping(
                &[pod("a", 1, Some("CrashLoopBackOff"), false)],
                "web",
                "h@1"
            ),
            Some(Trouble {
                pod: "a".into(),
                container: "web".into(),
                detail: "restarted 1 times, last exit code 127 (Error)".into()
            })
        );
        assert!(crash_looping(&[pod("b", 2, None, false)], "web", "h@1").is_some());
        assert!(
            crash_looping(&[pod("b", 5, None, false)], "web", "other@2").is_none(),
            "only pods running the image under test count"
        );
        let pods = [pod("a", 0, None, true), pod("b", 0, None, false)];
        assert_eq!(
            not_ready(&pods, "web", "h@1").map(|t| t.pod),
            Some("b".into())
        );
    }
}
