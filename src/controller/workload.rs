//! The target workload — a Deployment, StatefulSet or DaemonSet — as whittle sees it (its
//! metadata, pod template, selector and how far its rollout is), and the I/O on it and its
//! pods. Every change is a server-side apply with field manager `whittle`, forced: whittle takes
//! over exactly the fields it sets, and gives them back by applying the original values (see
//! `template`).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::error::Result;
use crate::api::TargetKind;
use crate::api::names::{FIELD_MANAGER, WORKFLOW_LABEL, label_value};

/// A workload of any kind whittle hardens, reduced to what whittle reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: TargetKind,
    pub metadata: ObjectMeta,
    pub template: PodTemplateSpec,
    pub selector: LabelSelector,
    /// Pods are replaced only when deleted (`updateStrategy.type: OnDelete`): whittle deletes
    /// them itself.
    pub on_delete: bool,
    /// The controller has rolled out the current template as far as the workload's strategy
    /// goes (a StatefulSet's `partition` keeps the pods below it on the old one).
    pub rolled_out: bool,
}

impl Workload {
    pub fn name_any(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    /// `Deployment shop/web`, for messages.
    pub fn describe(&self) -> String {
        describe(
            self.kind,
            self.metadata.namespace.as_deref().unwrap_or_default(),
            &self.name_any(),
        )
    }

    /// The label selector of its pods, as `ListParams` takes it.
    pub fn pod_selector(&self) -> String {
        selector_string(&self.selector)
    }
}

/// A label selector as `ListParams` takes it (`""` selects everything).
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    terms.join(",")
}

/// `Kind namespace/name`, for messages.
pub fn describe(kind: TargetKind, namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", kind.as_str())
}

/// Whether the generation was seen and every wanted replica is updated and available, with no
/// old replica left.
fn deployment_rolled_out(d: &Deployment) -> bool {
    let wanted = d.spec.replicas.unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
}

/// As `kubectl rollout status` judges a StatefulSet: every replica ready and, with a partition,
/// the replicas from it up updated; without, every replica on the update revision.
fn stateful_set_rolled_out(s: &StatefulSet) -> bool {
    let wanted = s.spec.replicas.unwrap_or(1);
    let Some(status) = s.status.as_ref() else {
        return false;
    };
    if status.observed_generation < s.metadata.generation
        || status.ready_replicas.unwrap_or(0) < wanted
    {
        return false;
    }
    let strategy = s.spec.update_strategy.as_ref();
    // The controller moves currentRevision only in a rolling update: under OnDelete, every
    // replica on the update revision is the end.
    if strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
        return status.updated_replicas.unwrap_or(0) >= wanted;
    }
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition > 0 {
        return status.updated_replicas.unwrap_or(0) >= wanted - partition;
    }
    status.updated_replicas.unwrap_or(0) >= wanted
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// As `kubectl rollout status` judges a DaemonSet: every scheduled node runs an updated,
/// available pod.
fn daemon_set_rolled_out(d: &DaemonSet) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_number_scheduled.unwrap_or(0) >= status.desired_number_scheduled
        && status.number_available.unwrap_or(0) >= status.desired_number_scheduled
}

impl From<Deployment> for Workload {
    fn from(d: Deployment) -> Workload {
        let rolled_out = deployment_rolled_out(&d);
        Workload {
            kind: TargetKind::Deployment,
            rolled_out,
            on_delete: false,
            template: d.spec.template,
            selector: d.spec.selector,
            metadata: d.metadata,
        }
    }
}

impl From<StatefulSet> for Workload {
    fn from(s: StatefulSet) -> Workload {
        let rolled_out = stateful_set_rolled_out(&s);
        let strategy = s
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref());
        Workload {
            kind: TargetKind::StatefulSet,
            rolled_out,
            on_delete: strategy == Some("OnDelete"),
            template: s.spec.template,
            selector: s.spec.selector,
            metadata: s.metadata,
        }
    }
}

impl From<DaemonSet> for Workload {
    fn from(d: DaemonSet) -> Workload {
        let rolled_out = daemon_set_rolled_out(&d);
        let strategy = d
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref());
        Workload {
            kind: TargetKind::DaemonSet,
            rolled_out,
            on_delete: strategy == Some("OnDelete"),
            template: d.spec.template,
            selector: d.spec.selector,
            metadata: d.metadata,
        }
    }
}

pub async fn get(
    client: &Client,
    namespace: &str,
    kind: TargetKind,
    name: &str,
) -> Result<Option<Workload>> {
    let c = client.clone();
    Ok(match kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(Workload::from),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(Workload::from),
        TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(Workload::from),
    })
}

/// The workloads of `kind` in `namespace` whose labels match `selector` (`""`: all).
pub async fn list(
    client: &Client,
    namespace: &str,
    kind: TargetKind,
    selector: &str,
) -> Result<Vec<Workload>> {
    let params = ListParams::default().labels(selector);
    match kind {
        TargetKind::Deployment => list_of::<Deployment>(client, namespace, &params).await,
        TargetKind::StatefulSet => list_of::<StatefulSet>(client, namespace, &params).await,
        TargetKind::DaemonSet => list_of::<DaemonSet>(client, namespace, &params).await,
    }
}

async fn list_of<K>(client: &Client, namespace: &str, params: &ListParams) -> Result<Vec<Workload>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    Workload: From<K>,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(params)
        .await?
        .items
        .into_iter()
        .map(Workload::from)
        .collect())
}

/// Applies `config` (an apply configuration from `template`, of the workload's kind).
pub async fn apply(
    client: &Client,
    namespace: &str,
    kind: TargetKind,
    name: &str,
    config: &Value,
) -> Result<Workload> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(config);
    let c = client.clone();
    Ok(match kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(c, namespace)
            .patch(name, &params, &patch)
            .await?
            .into(),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(c, namespace)
            .patch(name, &params, &patch)
            .await?
            .into(),
        TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(c, namespace)
            .patch(name, &params, &patch)
            .await?
            .into(),
    })
}

/// The workload's pods, whoever made them (its selector).
pub async fn pods(client: &Client, namespace: &str, w: &Workload) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&w.pod_selector());
    Ok(api.list(&params).await?.items)
}

/// Deletes a pod so that its controller replaces it with the current template (what an
/// `OnDelete` workload waits for). Gone already is fine.
pub async fn delete_pod(client: &Client, namespace: &str, pod: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.delete(pod, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The pods whittle instrumented for `workflow` (they carry its label).
pub async fn instrumented_pods(
    client: &Client,
    namespace: &str,
    workflow: &str,
) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{WORKFLOW_LABEL}={}", label_value(workflow));
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The Services of `namespace`, to find the one an exercise talks to.
pub async fn services(client: &Client, namespace: &str) -> Result<Vec<Service>> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The last `lines` a container logged (its previous run's with `previous`), for a failure
/// message; what went wrong reading them otherwise.
pub async fn logs(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = LogParams {
        container: Some(container.to_string()),
        previous,
        tail_lines: Some(LOG_LINES),
        ..Default::default()
    };
    match api.logs(pod, &params).await {
        Ok(text) if text.trim().is_empty() => "(no output)".into(),
        Ok(text) => text.trim_end().to_string(),
        Err(e) => format!("(logs unavailable: {e})"),
    }
}

/// How many log lines of a failing container go into a message.
const LOG_LINES: i64 = 10;

/// What kubelet last said about a failing probe of `pod` (its `Unhealthy` Event), e.g.
/// "Readiness probe failed: HTTP probe failed with statuscode: 404".
pub async fn probe_failure(client: &Client, namespace: &str, pod: &str) -> Option<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.name={pod},reason=Unhealthy");
    let events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .ok()?;
    events
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .clone()
                .or(e.event_time.clone().map(|t| Time(t.0)))
        })
        .and_then(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        available: i32,
    ) -> Workload {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "availableReplicas": available}
        }))
        .unwrap();
        d.into()
    }

    #[test]
    fn a_deployment_is_rolled_out_when_every_replica_is_new_and_available() {
        assert!(deployment(3, 3, 2, 2, 2).rolled_out);
        assert!(
            !deployment(3, 2, 2, 2, 2).rolled_out,
            "not yet seen by the controller"
        );
        assert!(
            !deployment(3, 3, 3, 2, 2).rolled_out,
            "an old pod is still there"
        );
        assert!(
            !deployment(3, 3, 2, 2, 1).rolled_out,
            "a new pod is not available"
        );
    }

    fn stateful_set(strategy: serde_json::Value, status: serde_json::Value) -> Workload {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                     "template": {}, "updateStrategy": strategy},
            "status": status
        }))
        .unwrap();
        s.into()
    }

    #[test]
    fn a_stateful_set_is_rolled_out_as_kubectl_rollout_status_says() {
        let rolling = json!({"type": "RollingUpdate"});
        let status = |ready: i32, updated: i32, current: &str| {
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": ready,
                   "updatedReplicas": updated, "currentRevision": current, "updateRevision": "db-2"})
        };
        assert!(stateful_set(rolling.clone(), status(3, 3, "db-2")).rolled_out);
        assert!(
            !stateful_set(rolling.clone(), status(3, 3, "db-1")).rolled_out,
            "still rolling"
        );
        assert!(
            !stateful_set(rolling, status(2, 3, "db-2")).rolled_out,
            "a pod is not ready"
        );
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        let s = stateful_set(partitioned, status(3, 1, "db-1"));
        assert!(s.rolled_out, "only db-2 is past the partition");
        assert!(!s.on_delete);
        let on_delete = stateful_set(json!({"type": "OnDelete"}), status(3, 3, "db-1"));
        assert!(on_delete.rolled_out, "OnDelete never moves currentRevision");
        assert!(on_delete.on_delete);
        assert!(!stateful_set(json!({"type": "OnDelete"}), status(3, 2, "db-1")).rolled_out);
        assert_eq!(on_delete.pod_selector(), "app=db");
        assert_eq!(on_delete.kind, TargetKind::StatefulSet);
    }

    #[test]
    fn a_daemon_set_is_rolled_out_when_every_scheduled_node_runs_an_updated_available_pod() {
        let ds = |updated: i32, available: i32, strategy: &str| -> Workload {
            let d: DaemonSet = serde_json::from_value(json!({
                "metadata": {"name": "agent", "generation": 4},
                "spec": {"selector": {"matchLabels": {"app": "agent"},
                                      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
                         "template": {}, "updateStrategy": {"type": strategy}},
                "status": {"observedGeneration": 4, "desiredNumberScheduled": 2,
                           "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 2,
                           "updatedNumberScheduled": updated, "numberAvailable": available}
            }))
            .unwrap();
            d.into()
        };
        assert!(ds(2, 2, "RollingUpdate").rolled_out);
        assert!(!ds(1, 2, "RollingUpdate").rolled_out);
        assert!(!ds(2, 1, "RollingUpdate").rolled_out);
        assert!(ds(2, 2, "OnDelete").on_delete);
        assert_eq!(
            ds(2, 2, "OnDelete").pod_selector(),
            "app=agent,tier in (a,b)"
        );
    }
}
