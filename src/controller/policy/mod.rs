//! The policy controllers: `HardeningPolicy` (its namespace) and `ClusterHardeningPolicy`
//! (namespaces by label). Each reconcile reads as gather → plan → act:
//!
//! - gather (`reconcile`): the selected workloads, the workflows in their namespaces, the
//!   window, and in Report mode each image's prediction (`report`);
//! - plan (`plan`, pure): which workflows to create, update or delete, and the status;
//! - act (`reconcile`): server-side apply of the workflows (`stamp`, pure), deletions, status.
//!
//! A policy never widens anyone's rights: what it may select is checked at admission (the
//! chart's ValidatingAdmissionPolicy asks the authorizer for the policy's creator), and the
//! workflows it stamps pass the workflow admission policy as the operator.

pub mod plan;
pub mod reconcile;
pub mod report;
pub mod stamp;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::{Context, scoped};
use crate::api::HardeningWorkflow;
use crate::api::policy::{
    ClusterHardeningPolicy, HardeningPolicy, HardeningPolicySpec, POLICY_LABEL, PolicyStatus,
};

/// A policy of either scope, as the reconcile reads it.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `HardeningPolicy` or `ClusterHardeningPolicy`.
    pub kind: &'static str,
    /// The namespace of a HardeningPolicy; None for a cluster one.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub spec: HardeningPolicySpec,
    pub namespace_selector: Option<LabelSelector>,
    pub status: Option<PolicyStatus>,
}

impl Policy {
    /// What the policy label of its workflows says: `<namespace>.<name>`, or a cluster
    /// policy's name. Namespaces have no dots, so the two never read alike; the owner
    /// reference's uid decides anyway.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `HardeningPolicy shop/web-tier`, for messages and logs.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

impl From<&HardeningPolicy> for Policy {
    fn from(p: &HardeningPolicy) -> Policy {
        Policy {
            kind: "HardeningPolicy",
            namespace: p.namespace(),
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            generation: p.metadata.generation,
            spec: p.spec.clone(),
            namespace_selector: None,
            status: p.status.clone(),
        }
    }
}

impl From<&ClusterHardeningPolicy> for Policy {
    fn from(p: &ClusterHardeningPolicy) -> Policy {
        Policy {
            kind: "ClusterHardeningPolicy",
            namespace: None,
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            generation: p.metadata.generation,
            spec: p.spec.policy.clone(),
            namespace_selector: p.spec.namespace_selector.clone(),
            status: p.status.clone(),
        }
    }
}

async fn reconcile_namespaced(
    p: Arc<HardeningPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, reconcile::PolicyError> {
    reconcile::reconcile(&Policy::from(p.as_ref()), &ctx).await
}

async fn reconcile_cluster(
    p: Arc<ClusterHardeningPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, reconcile::PolicyError> {
    reconcile::reconcile(&Policy::from(p.as_ref()), &ctx).await
}

fn error_policy<K>(_: Arc<K>, error: &reconcile::PolicyError, _: Arc<Context>) -> Action {
    warn!(%error, "policy reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

/// Runs the policy controllers until `shutdown`: HardeningPolicies in each watched namespace
/// (every namespace when none is listed), and ClusterHardeningPolicies when the operator
/// watches every namespace (a namespaced install cannot list across the cluster).
pub async fn run(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let scopes: Vec<Option<&str>> = match namespaces {
        [] => vec![None],
        some => some.iter().map(|ns| Some(ns.as_str())).collect(),
    };
    let config = ControllerConfig::default()
        .concurrency(2)
        .debounce(Duration::from_secs(1));
    let mut runs = Vec::new();
    for ns in scopes {
        let c = Controller::new(
            scoped::<HardeningPolicy>(&ctx.client, ns),
            watcher::Config::default(),
        )
        .with_config(config.clone())
        .owns(
            scoped::<HardeningWorkflow>(&ctx.client, ns),
            watcher::Config::default().labels(POLICY_LABEL),
        );
        let c = watch_workloads(c, &ctx.client, ns, |store, namespace| {
            store
                .state()
                .iter()
                .filter(|p| p.namespace() == namespace)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect()
        });
        let run = c
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile_namespaced, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()))
            .boxed();
        runs.push(run);
    }
    if namespaces.is_empty() {
        let c = Controller::new(
            Api::<ClusterHardeningPolicy>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .with_config(config);
        let store = c.store();
        let c = c.watches(
            Api::<HardeningWorkflow>::all(ctx.client.clone()),
            watcher::Config::default().labels(POLICY_LABEL),
            move |_| all(&store),
        );
        let c = watch_workloads(c, &ctx.client, None, |store, _| all(store));
        let run = c
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile_cluster, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()))
            .boxed();
        runs.push(run);
    }
    info!("policy controllers running");
    futures::future::join_all(runs).await;
}

fn all<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Wakes the policies `map` names when a Deployment, StatefulSet or DaemonSet changes (a new
/// workload, a label, the skip annotation). Only metadata is watched.
fn watch_workloads<K>(
    c: Controller<K>,
    client: &Client,
    ns: Option<&str>,
    map: fn(&Store<K>, Option<String>) -> Vec<ObjectRef<K>>,
) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (s1, s2, s3) = (c.store(), c.store(), c.store());
    c.watches(
        scoped::<kube::core::PartialObjectMeta<Deployment>>(client, ns),
        watcher::Config::default(),
        move |o| map(&s1, o.namespace()),
    )
    .watches(
        scoped::<kube::core::PartialObjectMeta<StatefulSet>>(client, ns),
        watcher::Config::default(),
        move |o| map(&s2, o.namespace()),
    )
    .watches(
        scoped::<kube::core::PartialObjectMeta<DaemonSet>>(client, ns),
        watcher::Config::default(),
        move |o| map(&s3, o.namespace()),
    )
}
