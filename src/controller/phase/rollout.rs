//! A rollout, instrumented or hardened, as the pods show it: ready, still coming, crash-looping,
//! or out of time with a pod that is not ready or with no pod at all. One verdict serves both
//! rollouts; each phase says what a verdict means for it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;

/// True when the Deployment has rolled out its current template: the controller saw the
/// latest generation, every replica is updated and available, and no old pod is left.
fn rollout_complete(deployment: &Deployment) -> bool {
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
fn pod_trouble(pods: &[Pod]) -> Option<String> {
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
fn crash_looping(pods: &[Pod], container: &str, image: &str) -> Option<Trouble> {
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
fn not_ready(pods: &[Pod], container: &str, image: &str) -> Option<Trouble> {
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
/// What a rollout looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the image and is available: these pods.
    Ready(BTreeSet<String>),
    /// Still rolling out, and there is time left.
    Waiting,
    /// A pod's container keeps crashing (only when the watch says crash loops fail).
    CrashLooping(Trouble),
    /// Out of time, and this pod runs the image but is not ready; `why` is the first trouble
    /// any pod shows.
    NotReady {
        trouble: Trouble,
        why: Option<String>,
    },
    /// Out of time, and no pod of the image is running but not ready: none came up.
    Stuck { why: Option<String> },
}

/// Which rollout is watched, and how strictly.
#[derive(Debug, Clone, Copy)]
pub struct RolloutWatch<'a> {
    pub container: &'a str,
    pub image: &'a str,
    /// The rollout's time (`verify.timeout`) has run out.
    pub out_of_time: bool,
    /// A crash loop fails at once (the hardened image); otherwise it is waited out like any
    /// pod that is not ready (the instrumented original, whose app may restart while a
    /// dependency comes up).
    pub crash_loops_fail: bool,
}

/// The verdict on a rollout of `watch.image` in the Deployment `d` with these pods.
pub fn rollout(d: &Deployment, pods: &[Pod], watch: RolloutWatch) -> Rollout {
    if watch.crash_loops_fail
        && let Some(t) = crash_looping(pods, watch.container, watch.image)
    {
        return Rollout::CrashLooping(t);
    }
    let running = pods_running(pods, watch.container, watch.image);
    if rollout_complete(d) && !running.is_empty() {
        return Rollout::Ready(running);
    }
    if !watch.out_of_time {
        return Rollout::Waiting;
    }
    let why = pod_trouble(pods);
    match not_ready(pods, watch.container, watch.image) {
        Some(trouble) => Rollout::NotReady { trouble, why },
        None => Rollout::Stuck { why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::phase::tests::set;
    use serde_json::{Value, json};

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

    /// A Deployment of `replicas` replicas, rolled out or not, and its pods.
    fn world(rolled_out: bool, pods: &[Value]) -> (Deployment, Vec<Pod>) {
        let available = if rolled_out { 2 } else { 1 };
        let d = serde_json::from_value(json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                       "availableReplicas": available}
        }))
        .unwrap();
        let pods = pods
            .iter()
            .map(|p| serde_json::from_value(p.clone()).unwrap())
            .collect();
        (d, pods)
    }

    fn pod(name: &str, image: &str, ready: bool, restarts: i32, waiting: Option<&str>) -> Value {
        let state = match waiting {
            Some(r) => json!({"waiting": {"reason": r}}),
            None => json!({"running": {}}),
        };
        json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "web", "image": image}]},
            "status": {"containerStatuses": [{"name": "web", "image": image, "imageID": "",
                "ready": ready, "restartCount": restarts, "state": state}]}
        })
    }

    fn kind(r: &Rollout) -> &'static str {
        match r {
            Rollout::Ready(_) => "ready",
            Rollout::Waiting => "waiting",
            Rollout::CrashLooping(_) => "crash-looping",
            Rollout::NotReady { .. } => "not ready",
            Rollout::Stuck { .. } => "stuck",
        }
    }

    #[test]
    fn one_rollout_verdict_for_the_instrumented_and_the_hardened_rollout() {
        let fixture = |name: &str| match name {
            "ok" => pod("a", "h@1", true, 0, None),
            "restarted" => pod("a", "h@1", true, 3, None),
            "backing-off" => pod("b", "h@1", false, 1, Some("CrashLoopBackOff")),
            "unready" => pod("b", "h@1", false, 0, None),
            "pulling" => pod("c", "h@1", false, 0, Some("ImagePullBackOff")),
            _ => pod("d", "old@0", true, 0, None),
        };
        // (rolled out, pods, out of time, crash loops fail) → verdict
        let cases: [(bool, &[&str], bool, bool, &str); 12] = [
            (true, &["ok"], false, true, "ready"),
            (true, &["old"], false, true, "waiting"),
            (false, &["ok", "unready"], false, true, "waiting"),
            (false, &["ok", "backing-off"], false, true, "crash-looping"),
            (false, &["ok", "backing-off"], false, false, "waiting"),
            (true, &["restarted"], false, true, "crash-looping"),
            (true, &["restarted"], false, false, "ready"),
            (false, &["ok", "unready"], true, true, "not ready"),
            (false, &["ok", "backing-off"], true, false, "not ready"),
            (false, &["old"], true, true, "stuck"),
            (false, &[], true, false, "stuck"),
            (false, &["pulling"], true, true, "not ready"),
        ];
        for (i, (rolled_out, names, out_of_time, crash_loops_fail, want)) in
            cases.into_iter().enumerate()
        {
            let pods: Vec<Value> = names.iter().map(|n| fixture(n)).collect();
            let (d, pods) = world(rolled_out, &pods);
            let watch = RolloutWatch {
                container: "web",
                image: "h@1",
                out_of_time,
                crash_loops_fail,
            };
            assert_eq!(kind(&rollout(&d, &pods, watch)), want, "case {i}");
        }
    }

    #[test]
    fn a_stuck_or_unready_rollout_says_which_pod_and_why() {
        let (d, pods) = world(
            false,
            &[pod("c", "h@1", false, 0, Some("ImagePullBackOff"))],
        );
        let watch = RolloutWatch {
            container: "web",
            image: "h@1",
            out_of_time: true,
            crash_loops_fail: true,
        };
        assert_eq!(
            rollout(&d, &pods, watch),
            Rollout::NotReady {
                trouble: Trouble {
                    pod: "c".into(),
                    container: "web".into(),
                    detail: "not ready".into()
                },
                why: Some("pod c container web: ImagePullBackOff".into())
            }
        );
        let (d, pods) = world(false, &[]);
        assert_eq!(rollout(&d, &pods, watch), Rollout::Stuck { why: None });
    }
}
