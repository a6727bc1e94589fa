//! The exercise Job: the user's test, run once against the instrumented original (`observe`)
//! and once against the hardened image (`verify`). The Job is built here from the workflow
//! (pure), created under a fixed name (so a restarted operator finds it rather than making a
//! second), owned by the workflow, and read back as a [`JobState`] only while the workflow owns
//! it: a Job under that name that someone else made is never taken for the workflow's run.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};

use super::error::{Error, Result};
use super::reason::Reason;
use crate::api::names::{EXERCISE_LABEL, exercise_job_name, workflow_labels, workflow_selector};
use crate::api::{Exercise, HardeningWorkflow};

/// The env var that tells the exercise where the workload is: the Service's `ClusterIP:port`.
pub const TARGET_ENV: &str = "WHITTLE_TARGET";

/// Which run of the exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Against the instrumented original: a failure is the exercise's fault.
    Observe,
    /// Against the hardened image: a failure is the hardened image's fault.
    Verify,
}

impl Run {
    pub fn as_str(&self) -> &'static str {
        match self {
            Run::Observe => "observe",
            Run::Verify => "verify",
        }
    }
}

/// What a Job says about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Running,
    Succeeded { at: Option<Time> },
    Failed { reason: String, message: String },
}

/// The Service the exercise talks to: `named`, or else the one Service in the namespace whose
/// selector matches the target's pod labels. Its name and `ClusterIP:port` (first port).
pub fn target_address(
    services: &[Service],
    named: Option<&str>,
    pod_labels: &BTreeMap<String, String>,
) -> Result<(String, String), String> {
    let service = match named {
        Some(name) => services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("Service {name} (spec.exercise.service) does not exist"))?,
        None => {
            let selecting: Vec<&Service> = services
                .iter()
                .filter(|s| {
                    let selector = s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
                    selector.is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
                    })
                })
                .collect();
            match selecting.as_slice() {
                [one] => *one,
                [] => {
                    return Err(
                        "no Service selects the workload's pods: create one or set spec.exercise.service"
                            .into(),
                    );
                }
                many => {
                    let names: Vec<String> = many.iter().map(|s| s.name_any()).collect();
                    return Err(format!(
                        "Services {} all select the workload's pods: set spec.exercise.service",
                        names.join(", ")
                    ));
                }
            }
        }
    };
    let name = service.name_any();
    let spec = service.spec.clone().unwrap_or_default();
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| {
            format!("Service {name} has no ClusterIP (a headless Service cannot be exercised)")
        })?;
    let port = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.port)
        .ok_or_else(|| format!("Service {name} has no port"))?;
    Ok((name, format!("{ip}:{port}")))
}

/// How long after the last change to a Service's endpoints an exercise waits: kube-proxy
/// programs the change after the EndpointSlice says it, and a connection whose first SYN went
/// by the old rule keeps its conntrack entry to the old pod until it times out (seen as
/// "wget: can't connect to remote host: Connection timed out" on a busy node).
pub const ENDPOINTS_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// True when the Service's EndpointSlices send traffic to `pods` only (at least one of them is a
/// ready endpoint and no other pod is), and have not changed for [`ENDPOINTS_SETTLE`]. Until
/// then an exercise would reach a pod that is going away, or nothing at all.
pub fn routes_only_to(slices: &[EndpointSlice], pods: &BTreeSet<String>, now: &Time) -> bool {
    let settled = last_change(slices).is_none_or(|at| {
        std::time::Duration::try_from(now.0.duration_since(at.0))
            .is_ok_and(|since| since >= ENDPOINTS_SETTLE)
    });
    settled && lists_only(slices, pods)
}

/// When the slices last changed: the EndpointSlice controller's `last-change-trigger-time`
/// annotation, else the newest managedFields entry.
fn last_change(slices: &[EndpointSlice]) -> Option<Time> {
    const TRIGGER: &str = "endpoints.kubernetes.io/last-change-trigger-time";
    slices
        .iter()
        .filter_map(|s| {
            let annotated = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER))
                .and_then(|t| serde_json::from_value::<Time>(t.clone().into()).ok());
            annotated.or_else(|| {
                s.metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter_map(|f| f.time.clone())
                    .max_by_key(|t| t.0)
            })
        })
        .max_by_key(|t| t.0)
}

fn lists_only(slices: &[EndpointSlice], pods: &BTreeSet<String>) -> bool {
    let endpoints: Vec<(bool, Option<&str>)> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            (ready, e.target_ref.as_ref().and_then(|r| r.name.as_deref()))
        })
        .collect();
    let ours = |name: Option<&str>| name.is_some_and(|n| pods.contains(n));
    endpoints.iter().any(|(ready, name)| *ready && ours(*name))
        && endpoints.iter().all(|(_, name)| ours(*name))
}

/// The Job for one run: the user's pod template with `WHITTLE_TARGET` in every container, no
/// retries (a flaky exercise should fail loudly), a deadline of `exercise.timeout`, owned and
/// labelled by the workflow.
pub fn job(workflow: &HardeningWorkflow, exercise: &Exercise, run: Run, target: &str) -> Job {
    let mut template = exercise.template.clone();
    if let Some(spec) = template.spec.as_mut() {
        for c in spec.containers.iter_mut() {
            let env = c.env.get_or_insert_with(Vec::new);
            env.retain(|e| e.name != TARGET_ENV);
            env.push(EnvVar {
                name: TARGET_ENV.into(),
                value: Some(target.into()),
                value_from: None,
            });
        }
        if spec.restart_policy.is_none() {
            spec.restart_policy = Some("Never".into());
        }
    }
    let mut labels = workflow_labels(&workflow.name_any());
    labels.insert(EXERCISE_LABEL.into(), run.as_str().into());
    let deadline = exercise
        .timeout
        .get()
        .map(|d| d.as_secs().max(1) as i64)
        .unwrap_or(600);
    Job {
        metadata: ObjectMeta {
            name: Some(exercise_job_name(&workflow.name_any(), run.as_str())),
            namespace: workflow.namespace(),
            labels: Some(labels),
            owner_references: workflow.owner_reference().map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::batch::v1::JobSpec {
            template,
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ..Default::default()
        }),
        status: None,
    }
}

/// Succeeded, Failed (with the Job controller's reason) or still running.
pub fn state(job: &Job) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded {
            at: status.completion_time,
        };
    }
    if let Some(c) = holds("Failed").or_else(|| holds("FailureTarget")) {
        return JobState::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    JobState::Running
}

/// Whether a Job under the run's name is this workflow's: controlled by its uid and labelled
/// with the run. The name alone proves nothing: anyone who may create Jobs in the namespace, or
/// an earlier workflow of the same name, can have left a Job there that already succeeded.
pub fn adoptable(job: &Job, workflow: &HardeningWorkflow, run: Run) -> bool {
    workflow.owns(job.metadata.owner_references.as_deref())
        && job.labels().get(EXERCISE_LABEL).map(String::as_str) == Some(run.as_str())
}

/// `job` if it is this workflow's (see [`adoptable`]); else the error that fails the workflow.
fn adopt(job: Job, workflow: &HardeningWorkflow, run: Run) -> Result<Job> {
    if adoptable(&job, workflow, run) {
        return Ok(job);
    }
    Err(Error::Failed {
        reason: Reason::ExerciseJobConflict,
        message: format!(
            "Job {}/{} exists and is not this workflow's {} exercise (it has no owner reference to HardeningWorkflow {} with uid {}): delete it, or give the workflow another name",
            job.namespace().unwrap_or_default(),
            job.name_any(),
            run.as_str(),
            workflow.name_any(),
            workflow.metadata.uid.as_deref().unwrap_or_default()
        ),
    })
}

/// The run's Job: the existing one, or a new one made now; a Job of that name that is not the
/// workflow's is an error.
pub async fn ensure(
    client: &Client,
    workflow: &HardeningWorkflow,
    run: Run,
    wanted: Job,
) -> Result<Job> {
    let namespace = wanted.namespace().unwrap_or_default();
    let name = wanted.name_any();
    let api: Api<Job> = Api::namespaced(client.clone(), &namespace);
    if let Some(job) = api.get_opt(&name).await? {
        return adopt(job, workflow, run);
    }
    match api.create(&PostParams::default(), &wanted).await {
        Ok(job) => Ok(job),
        Err(kube::Error::Api(e)) if e.code == 409 => adopt(api.get(&name).await?, workflow, run),
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => Err(Error::Failed {
            reason: Reason::InvalidExercise,
            message: format!(
                "the API server refused the exercise Job {namespace}/{name}: {}",
                e.message
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The EndpointSlices of Service `service`.
pub async fn endpoint_slices(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<Vec<EndpointSlice>> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The run's Job if it exists; an error if a Job of its name exists that is not the
/// workflow's.
pub async fn get(client: &Client, workflow: &HardeningWorkflow, run: Run) -> Result<Option<Job>> {
    let api: Api<Job> = Api::namespaced(client.clone(), &workflow.namespace().unwrap_or_default());
    api.get_opt(&exercise_job_name(&workflow.name_any(), run.as_str()))
        .await?
        .map(|job| adopt(job, workflow, run))
        .transpose()
}

/// The last lines the Job's pod logged, from its container that failed (or its first), for a
/// failure message: "pod P container C: <lines>".
pub async fn failure_logs(client: &Client, namespace: &str, job: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
        return String::new();
    };
    let Some(pod) = list
        .items
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
    else {
        return "its pod is gone".into();
    };
    let container = failed_container(pod).unwrap_or_default();
    let logs = super::workload::logs(client, namespace, &pod.name_any(), &container, false).await;
    format!(
        "pod {} container {container}, last lines: {logs}",
        pod.name_any()
    )
}

/// The first container that exited non-zero, else the first container.
pub fn failed_container(pod: &Pod) -> Option<String> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    statuses
        .iter()
        .find(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
        })
        .map(|c| c.name.clone())
        .or_else(|| {
            pod.spec
                .as_ref()?
                .containers
                .first()
                .map(|c| c.name.clone())
        })
}

/// Deletes the workflow's exercise Jobs that are still running (a failed workflow leaves no
/// test hammering a workload it gave back), with their pods. Only Jobs it owns: a label is
/// anyone's to set.
pub async fn stop_running(client: &Client, workflow: &HardeningWorkflow) -> Result<()> {
    delete(client, workflow, |j| state(j) == JobState::Running).await
}

/// Every exercise Job of the workflow goes, finished or not: a new run (continuous hardening)
/// exercises a new image, so the last run's verdicts must not be read as its own.
pub async fn delete_all(client: &Client, workflow: &HardeningWorkflow) -> Result<()> {
    delete(client, workflow, |_| true).await
}

async fn delete(
    client: &Client,
    workflow: &HardeningWorkflow,
    which: impl Fn(&Job) -> bool,
) -> Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), &workflow.namespace().unwrap_or_default());
    let jobs = api
        .list(&ListParams::default().labels(&workflow_selector(&workflow.name_any())))
        .await?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let ours = |j: &&Job| workflow.owns(j.metadata.owner_references.as_deref());
    for job in jobs.items.iter().filter(ours).filter(|j| which(j)) {
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, selector: serde_json::Value, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": selector, "clusterIP": ip, "ports": [{"port": 8080}, {"port": 9090}]}
        }))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_service_selecting_the_pods_is_the_target() {
        let services = [
            service("other", json!({"app": "db"}), "10.96.0.9"),
            service("web", json!({"app": "web"}), "10.96.0.7"),
        ];
        let pods = labels(&[("app", "web"), ("tier", "front")]);
        assert_eq!(
            target_address(&services, None, &pods).unwrap(),
            ("web".to_string(), "10.96.0.7:8080".to_string())
        );
        assert_eq!(
            target_address(&services, Some("other"), &pods).unwrap().1,
            "10.96.0.9:8080"
        );
        let err = target_address(&services, Some("gone"), &pods).unwrap_err();
        assert!(err.contains("gone"), "{err}");
        let err = target_address(&services, None, &labels(&[("app", "cache")])).unwrap_err();
        assert!(err.contains("no Service selects"), "{err}");
        let twice = [
            service("a", json!({"app": "web"}), "10.96.0.1"),
            service("b", json!({"tier": "front"}), "10.96.0.2"),
        ];
        let err = target_address(&twice, None, &pods).unwrap_err();
        assert!(
            err.contains("a, b") && err.contains("spec.exercise.service"),
            "{err}"
        );
        let headless = [service("h", json!({"app": "web"}), "None")];
        assert!(target_address(&headless, None, &pods).is_err());
    }

    #[test]
    fn the_job_carries_the_target_and_never_retries() {
        let mut w = HardeningWorkflow::new(
            "web",
            serde_json::from_value(json!({"target": {"name": "web"}, "exercise": {
                "template": {"spec": {"containers": [{"name": "t", "image": "busybox",
                    "env": [{"name": "WHITTLE_TARGET", "value": "stale"}, {"name": "KEEP", "value": "1"}]}]}}}}))
            .unwrap(),
        );
        w.metadata.namespace = Some("shop".into());
        w.metadata.uid = Some("u".into());
        let exercise = w.spec.exercise.clone().unwrap();
        let job = job(&w, &exercise, Run::Verify, "10.96.0.7:80");
        assert_eq!(job.metadata.name.as_deref(), Some("web-verify"));
        assert_eq!(
            job.labels().get(EXERCISE_LABEL).map(String::as_str),
            Some("verify")
        );
        assert!(w.owns(job.metadata.owner_references.as_deref()));
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(600))
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env: Vec<(String, Option<String>)> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            env,
            [
                ("KEEP".to_string(), Some("1".to_string())),
                (TARGET_ENV.to_string(), Some("10.96.0.7:80".to_string()))
            ]
        );
    }

    #[test]
    fn only_a_job_this_workflow_owns_for_the_run_is_adopted() {
        let workflow = |uid: &str| {
            let mut w = HardeningWorkflow::new(
                "web",
                serde_json::from_value(json!({"target": {"name": "web"}, "exercise": {
                    "template": {"spec": {"containers": [{"name": "t", "image": "busybox"}]}}}}))
                .unwrap(),
            );
            w.metadata.namespace = Some("shop".into());
            w.metadata.uid = Some(uid.into());
            w
        };
        let ours = workflow("u-1");
        let exercise = ours.spec.exercise.clone().unwrap();
        for run in [Run::Observe, Run::Verify] {
            let made = job(&ours, &exercise, run, "10.96.0.7:80");
            assert!(adoptable(&made, &ours, run), "{run:?}: the Job it made");
            assert!(
                !adoptable(&made, &workflow("u-2"), run),
                "{run:?}: made by an earlier workflow of the same name"
            );
            let other = if run == Run::Observe {
                Run::Verify
            } else {
                Run::Observe
            };
            assert!(
                !adoptable(&made, &ours, other),
                "{run:?}: the other run's Job"
            );
            let mut foreign = made.clone();
            foreign.metadata.owner_references = None;
            assert!(!adoptable(&foreign, &ours, run), "{run:?}: no owner");
            let mut not_controller = made.clone();
            if let Some(o) = not_controller.metadata.owner_references.as_mut() {
                o[0].controller = Some(false);
            }
            assert!(
                !adoptable(&not_controller, &ours, run),
                "{run:?}: an owner that is not the controller"
            );
            let err = adopt(foreign, &ours, run).unwrap_err();
            assert_eq!(
                err.permanent_reason().map(Reason::as_str),
                Some("ExerciseJobConflict")
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("Job shop/web-{} exists", run.as_str()))
                    && text.contains("delete it"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_jobs_state_comes_from_its_conditions() {
        let job = |conditions: serde_json::Value| -> Job {
            serde_json::from_value(json!({"status": {"conditions": conditions,
                "completionTime": "2026-01-01T00:00:10Z"}}))
            .unwrap()
        };
        assert_eq!(state(&job(json!([]))), JobState::Running);
        assert!(matches!(
            state(&job(json!([{"type": "Complete", "status": "True"}]))),
            JobState::Succeeded { at: Some(_) }
        ));
        assert_eq!(
            state(&job(json!([{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]))),
            JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
        assert_eq!(
            state(&job(json!([{"type": "Complete", "status": "False"}]))),
            JobState::Running
        );
    }

    #[test]
    fn an_exercise_waits_until_the_service_routes_only_to_the_pods_under_test() {
        let slice = |endpoints: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(json!({"addressType": "IPv4", "endpoints": endpoints})).unwrap()
        };
        let ep = |pod: &str, ready: bool| {
            json!({"addresses": ["10.78.0.9"], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": pod}})
        };
        let new: BTreeSet<String> = ["new-1".to_string()].into();
        let now: Time = serde_json::from_value(json!("2026-01-01T00:01:00Z")).unwrap();
        let routes_only_to =
            |slices: &[EndpointSlice], pods: &BTreeSet<String>| routes_only_to(slices, pods, &now);
        assert!(routes_only_to(&[slice(json!([ep("new-1", true)]))], &new));
        assert!(
            !routes_only_to(
                &[slice(json!([ep("new-1", true), ep("old-1", false)]))],
                &new
            ),
            "an old pod is still listed"
        );
        assert!(
            !routes_only_to(&[slice(json!([ep("new-1", false)]))], &new),
            "not ready yet"
        );
        assert!(!routes_only_to(&[slice(json!([]))], &new));
        assert!(!routes_only_to(&[], &new));

        let changed_at = |at: &str| -> EndpointSlice {
            serde_json::from_value(json!({"addressType": "IPv4", "endpoints": [ep("new-1", true)],
                "metadata": {"annotations": {"endpoints.kubernetes.io/last-change-trigger-time": at}}}))
            .unwrap()
        };
        assert!(
            !routes_only_to(&[changed_at("2026-01-01T00:00:58Z")], &new),
            "changed 2 s ago: kube-proxy may not have programmed it yet"
        );
        assert!(routes_only_to(&[changed_at("2026-01-01T00:00:50Z")], &new));
    }
}
