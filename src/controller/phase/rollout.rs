//! A rollout, instrumented or hardened, as the pods show it: ready, still coming, crash-looping,
//! or out of time with a pod that is not ready or with no pod at all. One verdict serves both
//! rollouts; each phase says what a verdict means for it.

use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;

use crate::api::{TargetKind, pod};
use crate::controller::template::Images;
use crate::controller::workload::Workload;

/// The names of the pods not being deleted in which every container of `images` runs its
/// image: the pods whose sensors will report (or whose hardened containers are all there).
pub fn pods_running(pods: &[Pod], images: &Images) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !images.is_empty()
                && images
                    .iter()
                    .all(|(container, image)| pod::runs(p, container, image))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Why the pods of a rollout are not ready, for a failure message: the first container (init
/// containers first) that waits or was terminated, with the reason kubelet gives
/// (CrashLoopBackOff, ErrImagePull, …).
fn pod_trouble(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        pod::statuses(p).find_map(|c| {
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

/// The first pod whose container of `images` runs its image and keeps crashing: kubelet backs
/// it off, or it has restarted [`CRASH_RESTARTS`] times.
fn crash_looping(pods: &[Pod], images: &Images) -> Option<Trouble> {
    running_images(pods, images).find_map(|(pod, status)| {
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

/// The first pod whose container of `images` runs its image and is not ready.
fn not_ready(pods: &[Pod], images: &Images) -> Option<Trouble> {
    running_images(pods, images)
        .find(|(_, status)| !status.ready)
        .map(|(pod, status)| Trouble {
            pod: pod.to_string(),
            container: status.name.clone(),
            detail: "not ready".into(),
        })
}

/// Each container of `images` running its image in a pod not being deleted, with its status.
fn running_images<'p>(
    pods: &'p [Pod],
    images: &'p Images,
) -> impl Iterator<Item = (&'p str, &'p k8s_openapi::api::core::v1::ContainerStatus)> {
    images
        .iter()
        .flat_map(move |(container, image)| running_image(pods, container, image))
}

/// Pods not being deleted whose `container` (app or init) runs `image`, with that container's status.
fn running_image<'p>(
    pods: &'p [Pod],
    container: &'p str,
    image: &'p str,
) -> impl Iterator<Item = (&'p str, &'p k8s_openapi::api::core::v1::ContainerStatus)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(move |p| pod::runs(p, container, image))
        .filter_map(move |p| Some((p.metadata.name.as_deref()?, pod::status(p, container)?)))
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
    /// Each watched container and the image it should run.
    pub images: &'a Images,
    /// The rollout's time (`verify.timeout`) has run out.
    pub out_of_time: bool,
    /// A crash loop fails at once (the hardened image); otherwise it is waited out like any
    /// pod that is not ready (the instrumented original, whose app may restart while a
    /// dependency comes up).
    pub crash_loops_fail: bool,
}

/// The verdict on a rollout of `watch.images` in the workload `w` with these pods: ready once
/// the workload is rolled out and some pod runs every watched container on its image.
pub fn rollout(w: &Workload, pods: &[Pod], watch: RolloutWatch) -> Rollout {
    if watch.crash_loops_fail
        && let Some(t) = crash_looping(pods, watch.images)
    {
        return Rollout::CrashLooping(t);
    }
    let running = pods_running(pods, watch.images);
    if w.rolled_out && !running.is_empty() {
        return Rollout::Ready(running);
    }
    if !watch.out_of_time {
        return Rollout::Waiting;
    }
    let why = pod_trouble(pods);
    match not_ready(pods, watch.images) {
        Some(trouble) => Rollout::NotReady { trouble, why },
        None => Rollout::Stuck { why },
    }
}

/// For a workload that replaces pods only when they are deleted (`OnDelete`): the next pod
/// whittle deletes so that it comes back on the current template — one at a time, only while
/// every other pod is up and ready, a StatefulSet's from the highest ordinal down as its own
/// rolling update would go. None while waiting, or when nothing is left to replace.
pub fn next_to_delete(w: &Workload, pods: &[Pod], images: &Images) -> Option<String> {
    if !w.on_delete {
        return None;
    }
    let settling = pods
        .iter()
        .any(|p| p.metadata.deletion_timestamp.is_some() || !all_ready(p));
    if settling {
        return None;
    }
    let current = pods_running(pods, images);
    let mut stale: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .filter(|n| !current.contains(*n))
        .collect();
    stale.sort_by_key(|n| std::cmp::Reverse(ordinal(n)));
    stale.first().map(|n| n.to_string())
}

/// After the original template is applied again, the pods whittle made that their controller
/// would not replace by itself: every one under `OnDelete`, and a StatefulSet's pods that are
/// not ready (its rolling update waits for a broken pod forever; Kubernetes calls deleting it a
/// forced rollback).
pub fn to_delete_after_restore(w: &Workload, labelled: &[Pod]) -> Vec<String> {
    labelled
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| w.on_delete || (w.kind == TargetKind::StatefulSet && !all_ready(p)))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn all_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// A StatefulSet pod's ordinal (`web-2` → 2); other pods sort as 0.
fn ordinal(pod: &str) -> u32 {
    pod.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::phase::tests::set;
    use serde_json::{Value, json};

    fn one(container: &str, image: &str) -> Images {
        Images::from([(container.to_string(), image.to_string())])
    }

    #[test]
    fn on_delete_workloads_get_their_pods_replaced_one_at_a_time_highest_ordinal_first() {
        let set_of = |strategy: &str| -> Workload {
            let s: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
                "metadata": {"name": "db"},
                "spec": {"selector": {}, "serviceName": "db", "template": {},
                         "updateStrategy": {"type": strategy}}
            }))
            .unwrap();
            s.into()
        };
        let pods = |specs: &[(&str, &str, bool)]| -> Vec<Pod> {
            specs
                .iter()
                .map(|(n, image, ready)| {
                    serde_json::from_value(pod(n, image, *ready, 0, None)).unwrap()
                })
                .collect()
        };
        let on_delete = set_of("OnDelete");
        let three = pods(&[
            ("db-0", "old", true),
            ("db-1", "old", true),
            ("db-2", "old", true),
        ]);
        assert_eq!(
            next_to_delete(&on_delete, &three, &one("web", "new")).as_deref(),
            Some("db-2")
        );
        let one_new = pods(&[
            ("db-0", "old", true),
            ("db-1", "old", true),
            ("db-2", "new", true),
        ]);
        assert_eq!(
            next_to_delete(&on_delete, &one_new, &one("web", "new")).as_deref(),
            Some("db-1")
        );
        let settling = pods(&[
            ("db-0", "old", true),
            ("db-1", "old", true),
            ("db-2", "new", false),
        ]);
        assert_eq!(
            next_to_delete(&on_delete, &settling, &one("web", "new")),
            None,
            "wait for db-2"
        );
        let done = pods(&[("db-0", "new", true)]);
        assert_eq!(next_to_delete(&on_delete, &done, &one("web", "new")), None);
        let rolling = set_of("RollingUpdate");
        assert_eq!(
            next_to_delete(&rolling, &three, &one("web", "new")),
            None,
            "the controller rolls"
        );

        // After a restore: a broken StatefulSet pod is deleted (forced rollback), a ready one
        // is left to the rolling update; under OnDelete every one goes.
        let held = pods(&[("db-0", "h", true), ("db-1", "h", false)]);
        assert_eq!(to_delete_after_restore(&rolling, &held), ["db-1"]);
        assert_eq!(to_delete_after_restore(&on_delete, &held), ["db-0", "db-1"]);
        let (deployment, _) = world(true, &[]);
        assert!(to_delete_after_restore(&deployment, &held).is_empty());
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
        assert_eq!(pods_running(&pods, &one("web", "i@1")), set(&["a"]));
    }

    /// A pod with an app and a sidecar is rolled out when both run their new image; a
    /// sidecar that crash-loops or is not ready is named.
    #[test]
    fn every_watched_container_must_run_its_image() {
        let pod = |name: &str, tail: &str, restarts: i32, ready: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"containers": [{"name": "web", "image": "h@1"},
                                        {"name": "tail", "image": tail}]},
                "status": {"containerStatuses": [
                    {"name": "web", "image": "h@1", "imageID": "", "ready": true,
                     "restartCount": 0, "state": {"running": {}}},
                    {"name": "tail", "image": tail, "imageID": "", "ready": ready,
                     "restartCount": restarts, "state": {"running": {}}}]}
            }))
            .unwrap()
        };
        let both = Images::from([
            ("web".to_string(), "h@1".to_string()),
            ("tail".to_string(), "t@1".to_string()),
        ]);
        let pods = [pod("a", "t@1", 0, true), pod("b", "old", 0, true)];
        assert_eq!(
            pods_running(&pods, &both),
            set(&["a"]),
            "b's sidecar is old"
        );
        assert_eq!(
            crash_looping(&[pod("a", "t@1", 2, false)], &both).map(|t| t.container),
            Some("tail".to_string())
        );
        assert_eq!(
            not_ready(&[pod("a", "t@1", 0, false)], &both).map(|t| t.container),
            Some("tail".to_string())
        );
        assert!(
            pods_running(&pods, &Images::new()).is_empty(),
            "nothing watched, nothing runs"
        );
    }

    #[test]
    fn a_watched_init_container_counts_by_its_own_status() {
        // A hardened init container that fails keeps the pod in `Init:CrashLoopBackOff`; the
        // app container never starts and has no status of its own to show it.
        let pod = |restarts: i32, waiting: Option<&str>, ready: bool| -> Pod {
            let state = match waiting {
                Some(r) => json!({"waiting": {"reason": r}}),
                None => json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            };
            serde_json::from_value(json!({
                "metadata": {"name": "a"},
                "spec": {"containers": [{"name": "web", "image": "w@1"}],
                         "initContainers": [{"name": "setup", "image": "s@1"}]},
                "status": {
                    "initContainerStatuses": [{"name": "setup", "image": "s@1", "imageID": "",
                        "ready": ready, "restartCount": restarts, "state": state,
                        "lastState": {"terminated": {"exitCode": 127, "reason": "Error"}}}],
                    "containerStatuses": [{"name": "web", "image": "w@1", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}
            }))
            .unwrap()
        };
        let init = one("setup", "s@1");
        let failing = [pod(1, Some("CrashLoopBackOff"), false)];
        assert_eq!(
            crash_looping(&failing, &init).map(|t| t.container),
            Some("setup".to_string())
        );
        assert_eq!(pods_running(&failing, &init), set(&["a"]));
        assert_eq!(
            pod_trouble(&failing).as_deref(),
            Some("pod a container setup: CrashLoopBackOff"),
            "the init container explains a pod stuck in Init"
        );
        let done = [pod(0, None, true)];
        assert_eq!(crash_looping(&done, &init), None);
        assert_eq!(not_ready(&done, &init), None, "completed counts as ready");
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
            crash_looping(&[pod("a", 1, None, false)], &one("web", "h@1")),
            None
        );
        assert_eq!(
            crash_looping(
                &[pod("a", 1, Some("CrashLoopBackOff"), false)],
                &one("web", "h@1")
            ),
            Some(Trouble {
                pod: "a".into(),
                container: "web".into(),
                detail: "restarted 1 times, last exit code 127 (Error)".into()
            })
        );
        assert!(crash_looping(&[pod("b", 2, None, false)], &one("web", "h@1")).is_some());
        assert!(
            crash_looping(&[pod("b", 5, None, false)], &one("web", "other@2")).is_none(),
            "only pods running the image under test count"
        );
        let pods = [pod("a", 0, None, true), pod("b", 0, None, false)];
        assert_eq!(
            not_ready(&pods, &one("web", "h@1")).map(|t| t.pod),
            Some("b".into())
        );
    }

    /// A Deployment of `replicas` replicas, rolled out or not, and its pods.
    fn world(rolled_out: bool, pods: &[Value]) -> (Workload, Vec<Pod>) {
        let available = if rolled_out { 2 } else { 1 };
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
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
        (d.into(), pods)
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
                images: &one("web", "h@1"),
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
            images: &one("web", "h@1"),
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
