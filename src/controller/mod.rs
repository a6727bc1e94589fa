//! The operator's controller: a kube-runtime `Controller` on HardeningWorkflow that also wakes
//! when a target Deployment changes, when an instrumented pod changes, when a report arrives
//! (report ConfigMaps are owned by their workflow) and when an exercise Job changes. Never an ownerReference on the user's
//! Deployment: garbage collection would delete it with the workflow. With `--watch-namespace`,
//! one such controller per namespace, each watching only its own.
//!
//! - `reconcile`: the pipeline; `reconcile/<phase>.rs` gathers and acts for one phase
//! - `phase/<phase>.rs`: what that phase decides (pure, table-tested); `reason`: every reason a
//!   workflow can carry; `template`: the pod-template changes (pure)
//! - `deployment`, `exercise`: I/O against the API server (the target, its pods, exercise Jobs)
//! - `engine`: the image engine driven for a workflow (its credentials, its destinations)
//! - `vuln_dbs`, `signing_key`: the vulnerability databases and signing key workflows name

// Each phase reads as gather → verdict → act; a long function is a phase doing too much.
#![warn(clippy::too_many_lines)]

pub mod engine;
pub mod error;
pub mod exec_handlers;
pub mod exercise;
pub mod gitops;
pub mod phase;
pub mod policy;
pub mod reason;
pub mod reconcile;
pub mod signing_key;
pub mod template;
pub mod vuln_dbs;
pub mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::names::{MANAGED_BY, MANAGED_BY_LABEL, WORKFLOW_LABEL, label_value, report_path};
use crate::api::{HardeningWorkflow, Phase, TargetKind};
use crate::metrics::Metrics;
use crate::reports::ReportKey;
use reconcile::ReconcileError;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// `http://IP:PORT`: where sensors POST their reports (the operator Service's ClusterIP,
    /// no DNS needed).
    pub report_base: String,
    /// The static sensor binary put into instrumented images.
    pub sensor: PathBuf,
    /// Vulnerability databases workflows name, loaded once for all of them.
    pub vuln_dbs: vuln_dbs::VulnDbs,
    /// Derives each workflow's report token and seals what harden produced.
    pub report_key: ReportKey,
    /// The budgets of every image read (`whittle operator --spool-limit` and the like).
    pub limits: crate::image::limits::Limits,
    /// Consecutive transient failures per workflow, for the retry backoff. Only timing lives
    /// here: losing it on a restart costs nothing.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        report_base: String,
        sensor: PathBuf,
        report_key: ReportKey,
    ) -> Context {
        let reporter = Reporter {
            controller: "whittle".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            report_base,
            sensor,
            vuln_dbs: vuln_dbs::VulnDbs::default(),
            report_key,
            limits: Default::default(),
            failures: Mutex::default(),
        }
    }

    pub fn report_url(&self, namespace: &str, workflow: &str) -> String {
        format!("{}{}", self.report_base, report_path(namespace, workflow))
    }

    fn key(workflow: &HardeningWorkflow) -> String {
        format!(
            "{}/{}",
            workflow.namespace().unwrap_or_default(),
            workflow.name_any()
        )
    }

    fn reset_backoff(&self, workflow: &HardeningWorkflow) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&Self::key(workflow));
        }
    }

    /// 2 s, 4 s, 8 s … up to 5 minutes.
    fn next_backoff(&self, workflow: &HardeningWorkflow) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(Self::key(workflow)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(n)
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9))).min(Duration::from_secs(300))
}

fn error_policy(
    workflow: Arc<HardeningWorkflow>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let reason = match error {
        ReconcileError::ApplyFailed(e) | ReconcileError::CleanupFailed(e) => e.metric_reason(),
        _ => "finalizer",
    };
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[reason])
        .inc();
    let delay = ctx.next_backoff(&workflow);
    warn!(workflow = %Context::key(&workflow), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The workflows in `namespace` whose target is the `kind` named `name`.
fn targeting(
    store: &Store<HardeningWorkflow>,
    kind: TargetKind,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<HardeningWorkflow>> {
    store
        .state()
        .iter()
        .filter(|w| {
            w.namespace() == namespace && w.spec.target.kind == kind && w.spec.target.name == name
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown` completes, over every namespace or, when `namespaces`
/// lists some, over those only: one controller per namespace, since a kube-runtime Controller
/// watches through one Api and a namespaced install may list nothing cluster-wide. Each has at
/// most `concurrency` reconciles at once.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let scopes: Vec<Option<&str>> = match namespaces {
        [] => vec![None],
        some => some.iter().map(|ns| Some(ns.as_str())).collect(),
    };
    info!(namespaces = ?namespaces, "watching workflows (none listed: every namespace)");
    let shutdown = shutdown.shared();
    let controllers: Vec<Controller<HardeningWorkflow>> = scopes
        .iter()
        .map(|ns| controller(&ctx.client, concurrency, *ns))
        .collect();
    let stores: Arc<Vec<Store<HardeningWorkflow>>> =
        Arc::new(controllers.iter().map(|c| c.store()).collect());
    let runs = controllers.into_iter().map(|controller| {
        let (metrics, stores) = (ctx.metrics.clone(), stores.clone());
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile::reconcile, error_policy, ctx.clone())
            .for_each(move |result| {
                metrics.set_workflows(phase_counts(&stores));
                if let Err(e) = result {
                    warn!(error = %e, "controller");
                }
                futures::future::ready(())
            })
    });
    futures::future::join_all(runs).await;
    info!("controller stopped");
}

/// The controller of the workflows in `namespace` (`None`: in every namespace), woken by what
/// they own and by their targets (Deployments, StatefulSets, DaemonSets) and pods there.
fn controller(
    client: &Client,
    concurrency: u16,
    namespace: Option<&str>,
) -> Controller<HardeningWorkflow> {
    let controller = Controller::new(
        scoped::<HardeningWorkflow>(client, namespace),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(concurrency));
    let by_pod = controller.store();
    let targets = [
        TargetKind::Deployment,
        TargetKind::StatefulSet,
        TargetKind::DaemonSet,
    ];
    let controller = targets.into_iter().fold(controller, |c, kind| match kind {
        TargetKind::Deployment => watch_targets::<Deployment>(c, client, namespace, kind),
        TargetKind::StatefulSet => watch_targets::<StatefulSet>(c, client, namespace, kind),
        TargetKind::DaemonSet => watch_targets::<DaemonSet>(c, client, namespace, kind),
    });
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    controller
        // Reports are up to a MiB each: the controller only needs to know one changed.
        .owns_stream(
            watcher(
                scoped::<PartialObjectMeta<ConfigMap>>(client, namespace),
                watcher::Config::default().labels(&managed),
            )
            .touched_objects(),
        )
        .owns(
            scoped::<Job>(client, namespace),
            watcher::Config::default().labels(&managed),
        )
        .watches(
            scoped::<Pod>(client, namespace),
            watcher::Config::default().labels(WORKFLOW_LABEL),
            move |p: Pod| {
                let label = p.labels().get(WORKFLOW_LABEL).cloned().unwrap_or_default();
                by_pod
                    .state()
                    .iter()
                    .filter(|w| {
                        w.namespace() == p.namespace() && label_value(&w.name_any()) == label
                    })
                    .map(|w| ObjectRef::from_obj(w.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
}

/// Wakes the workflows whose target is the changed object of `kind`.
fn watch_targets<K>(
    controller: Controller<HardeningWorkflow>,
    client: &Client,
    namespace: Option<&str>,
    kind: TargetKind,
) -> Controller<HardeningWorkflow>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let store = controller.store();
    controller.watches(
        scoped::<K>(client, namespace),
        watcher::Config::default(),
        move |o: K| targeting(&store, kind, o.namespace(), &o.name_any()),
    )
}

/// An Api over one namespace, or over all of them.
pub(crate) fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn phase_counts(stores: &[Store<HardeningWorkflow>]) -> Vec<(Phase, i64)> {
    let mut counts: HashMap<Phase, i64> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
    for w in stores.iter().flat_map(Store::state) {
        let phase = w.status.as_ref().map(|s| s.phase()).unwrap_or_default();
        *counts.entry(phase).or_default() += 1;
    }
    counts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let seconds: Vec<u64> = [1, 2, 3, 8, 9, 50]
            .iter()
            .map(|n| backoff(*n).as_secs())
            .collect();
        assert_eq!(seconds, [2, 4, 8, 256, 300, 300]);
    }
}
