//! The I/O of one policy reconcile: gather the selection and the workflows, let `plan` decide,
//! apply its decisions and the status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::Policy;
use super::plan::{self, Candidate, Existing, Inputs};
use super::window::{self, Opening};
use super::{report, stamp};
use crate::api::HardeningWorkflow;
use crate::api::names::label_value;
use crate::api::policy::{
    ClusterHardeningPolicy, HardeningPolicy, POLICY_LABEL, PolicyMode, PolicyStatus, ROW_LIMIT,
    SKIP_ANNOTATION, TEMPLATE_HASH_ANNOTATION,
};
use crate::controller::Context;
use crate::controller::reason::Reason;
use crate::controller::template;
use crate::controller::workload::{self, Workload, selector_string};

/// The field manager of the workflows a policy applies, apart from the controller's `whittle`
/// (which writes their status and the workloads).
pub const POLICY_MANAGER: &str = "whittle-policy";

/// The reasons a Pending workflow waits for something outside it, holding no slot.
const WAITING: [&str; 4] = [
    Reason::TargetNotFound.as_str(),
    Reason::ContainerNotFound.as_str(),
    Reason::TargetBusy.as_str(),
    Reason::GitOpsManaged.as_str(),
];

/// Namespaces a ClusterHardeningPolicy never selects: the control plane's.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Workloads {
        what: String,
        #[source]
        source: crate::controller::error::Error,
    },
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> PolicyError {
    let what = what.into();
    move |source| PolicyError::Api { what, source }
}

pub async fn reconcile(policy: &Policy, ctx: &Context) -> Result<Action, PolicyError> {
    let namespaces = namespaces(policy, ctx).await?;
    let candidates = candidates(policy, ctx, &namespaces).await?;
    let workflows = workflows(policy, ctx, &namespaces).await?;
    let now = chrono::Utc::now();
    let (window_open, next_window, window_error) = match &policy.spec.window {
        None => (true, None, None),
        Some(w) => match window::opening(w, now) {
            Ok(Opening::Open) => (true, None, None),
            Ok(Opening::Closed(next)) => (false, Some(next), None),
            Err(e) => (false, None, Some(e)),
        },
    };
    let inspected = match policy.spec.mode {
        PolicyMode::Report => report::inspect_all(policy, ctx, &candidates).await,
        PolicyMode::Harden => BTreeMap::new(),
    };
    let hash = stamp::template_hash(policy);
    let decided = plan::plan(&Inputs {
        mode: policy.spec.mode,
        max_concurrent: policy.spec.max_concurrent,
        window_open,
        template_hash: &hash,
        candidates: &candidates,
        workflows: &workflows,
        inspected: &inspected,
        row_limit: ROW_LIMIT,
    });
    act(policy, ctx, &decided, &hash).await?;
    let status = status(policy, &decided, window_open, next_window, window_error);
    write_status(policy, ctx, &status).await?;
    let busy = decided.counts.queued + decided.counts.pending + decided.counts.running > 0;
    Ok(Action::requeue(requeue(busy, next_window, now)))
}

/// Soon while anything is under way, at the window's opening while it is closed, and now and
/// then otherwise (new workloads also wake the policy through the watches).
fn requeue(
    busy: bool,
    next_window: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    let idle = Duration::from_secs(300);
    let until_window = next_window
        .and_then(|t| (t - now).to_std().ok())
        .map(|d| d + Duration::from_secs(1));
    match (busy, until_window) {
        (_, Some(d)) => d.min(idle),
        (true, None) => Duration::from_secs(20),
        (false, None) => idle,
    }
}

/// The namespaces a policy looks in: its own, or those a cluster policy's selector picks.
async fn namespaces(policy: &Policy, ctx: &Context) -> Result<Vec<String>, PolicyError> {
    if let Some(ns) = &policy.namespace {
        return Ok(vec![ns.clone()]);
    }
    let selector = policy
        .namespace_selector
        .as_ref()
        .map(selector_string)
        .unwrap_or_default();
    let own = std::env::var("POD_NAMESPACE").unwrap_or_default();
    let list = Api::<Namespace>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api("listing namespaces"))?;
    Ok(list
        .items
        .iter()
        .map(|n| n.name_any())
        .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()) && *n != own)
        .collect())
}

async fn candidates(
    policy: &Policy,
    ctx: &Context,
    namespaces: &[String],
) -> Result<Vec<Candidate>, PolicyError> {
    let selector = policy
        .spec
        .selector
        .as_ref()
        .map(selector_string)
        .unwrap_or_default();
    let mut found = Vec::new();
    for ns in namespaces {
        for kind in &policy.spec.kinds {
            let listed = workload::list(&ctx.client, ns, *kind, &selector)
                .await
                .map_err(|source| PolicyError::Workloads {
                    what: format!("listing {}s in {ns}", kind.as_str()),
                    source,
                })?;
            found.extend(listed.iter().map(|w| candidate(policy, ns, w)));
        }
    }
    Ok(found)
}

fn candidate(policy: &Policy, ns: &str, w: &Workload) -> Candidate {
    let skip = w
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_ANNOTATION))
        .is_some_and(|v| v == "true");
    // The image the first container to harden runs now: the one named, else the first.
    let first = policy
        .spec
        .containers
        .as_ref()
        .and_then(|c| c.first())
        .filter(|c| c.as_str() != crate::api::ALL_CONTAINERS)
        .cloned();
    let image = template::pod_spec(w).and_then(|s| {
        let c = match &first {
            Some(name) => crate::api::pod::container(s, name),
            None => s.containers.first(),
        };
        c.and_then(|c| c.image.clone())
    });
    Candidate {
        namespace: ns.to_string(),
        kind: w.kind,
        name: w.name_any(),
        skip,
        container: first,
        image,
    }
}

async fn workflows(
    policy: &Policy,
    ctx: &Context,
    namespaces: &[String],
) -> Result<Vec<Existing>, PolicyError> {
    let selected: BTreeSet<&String> = namespaces.iter().collect();
    let listed: Vec<HardeningWorkflow> = match &policy.namespace {
        Some(ns) => {
            Api::<HardeningWorkflow>::namespaced(ctx.client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(api(format!("listing workflows in {ns}")))?
                .items
        }
        None => {
            Api::<HardeningWorkflow>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(api("listing workflows"))?
                .items
        }
    };
    let label = label_value(&policy.id());
    Ok(listed
        .into_iter()
        .map(|w| existing(w, &policy.uid, &label))
        // A cluster policy's own workflows in a namespace it no longer selects are still
        // its own: kept in the list so that they are deleted.
        .filter(|e| e.ours || selected.contains(&e.namespace))
        .collect())
}

fn existing(w: HardeningWorkflow, uid: &str, label: &str) -> Existing {
    let owned = w
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true));
    let ours = owned && w.labels().get(POLICY_LABEL).map(String::as_str) == Some(label);
    let status = w.status.as_ref();
    Existing {
        namespace: w.namespace().unwrap_or_default(),
        name: w.name_any(),
        target_kind: w.spec.target.kind,
        target_name: w.spec.target.name.clone(),
        ours,
        phase: status.and_then(|s| s.phase),
        template_hash: w.annotations().get(TEMPLATE_HASH_ANNOTATION).cloned(),
        continuous: w.spec.continuous.is_some(),
        deleting: w.metadata.deletion_timestamp.is_some(),
        waiting: status.is_some_and(|s| {
            s.phase() == crate::api::Phase::Pending
                && s.condition(crate::api::ConditionType::Ready)
                    .is_some_and(|c| WAITING.contains(&c.reason.as_str()))
        }),
        result: status.and_then(|s| s.result.clone()),
        vulnerabilities_removed: status
            .and_then(|s| s.vulnerabilities.as_ref())
            .map(|v| v.removed),
        image: status.and_then(|s| s.source_image.clone()),
    }
}

async fn act(
    policy: &Policy,
    ctx: &Context,
    decided: &plan::Plan,
    hash: &str,
) -> Result<(), PolicyError> {
    for (ns, name) in &decided.delete {
        info!(policy = %policy.describe(), workflow = %format!("{ns}/{name}"), "deleting workflow");
        let workflows = Api::<HardeningWorkflow>::namespaced(ctx.client.clone(), ns);
        match workflows.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api(format!("deleting workflow {ns}/{name}"))(e)),
        }
    }
    let name_of = |c: &Candidate| plan::workflow_name(&policy.name, c.kind, &c.name);
    let creations = decided.create.iter().map(|c| (name_of(c), c));
    let updates = decided.update.iter().map(|(_, name, c)| (name.clone(), c));
    for (name, c) in creations.chain(updates) {
        let config = stamp::workflow(policy, c, &name, hash);
        let workflows = Api::<HardeningWorkflow>::namespaced(ctx.client.clone(), &c.namespace);
        info!(policy = %policy.describe(), workflow = %format!("{}/{name}", c.namespace), "applying workflow");
        workflows
            .patch(
                &name,
                &PatchParams::apply(POLICY_MANAGER).force(),
                &Patch::Apply(&config),
            )
            .await
            .map_err(api(format!("applying workflow {}/{name}", c.namespace)))?;
    }
    Ok(())
}

fn status(
    policy: &Policy,
    decided: &plan::Plan,
    window_open: bool,
    next_window: Option<chrono::DateTime<chrono::Utc>>,
    window_error: Option<String>,
) -> PolicyStatus {
    let (ready, reason, message) = match &window_error {
        Some(e) => (false, "WindowInvalid", e.clone()),
        None => plan::readiness(decided, policy.spec.mode, window_open),
    };
    let before = policy.status.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let condition = |type_: &str, status: bool| {
        let status = if status { "True" } else { "False" };
        let unchanged = before
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .filter(|c| c.status == status);
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.clone(),
            observed_generation: policy.generation,
            last_transition_time: unchanged
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone()),
        }
    };
    let stalled = !ready
        && matches!(
            reason,
            "WorkflowsFailed" | "WindowInvalid" | "InspectionFailed"
        );
    let mut conditions = vec![condition("Ready", ready)];
    if !ready && !stalled {
        conditions.push(condition("Reconciling", true));
    }
    if stalled {
        conditions.push(condition("Stalled", true));
    }
    PolicyStatus {
        observed_generation: policy.generation,
        conditions,
        selected: decided.selected,
        skipped: decided.skipped,
        counts: decided.counts.clone(),
        totals: decided.totals.clone(),
        workloads: decided.rows.clone(),
        truncated: decided.truncated,
        next_window: next_window
            .and_then(|t| jiff::Timestamp::from_second(t.timestamp()).ok())
            .map(Time),
    }
}

async fn write_status(
    policy: &Policy,
    ctx: &Context,
    status: &PolicyStatus,
) -> Result<(), PolicyError> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    // A merge patch leaves out what is absent: what this status no longer has is nulled.
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    for key in ["conditions", "workloads", "truncated", "nextWindow"] {
        if value.get(key).is_none() {
            value[key] = serde_json::Value::Null;
        }
    }
    let patch = Patch::Merge(json!({"status": value}));
    let params = PatchParams::default();
    let what = format!("writing the status of {}", policy.describe());
    match &policy.namespace {
        Some(ns) => {
            Api::<HardeningPolicy>::namespaced(ctx.client.clone(), ns)
                .patch_status(&policy.name, &params, &patch)
                .await
                .map_err(api(what))?;
        }
        None => {
            Api::<ClusterHardeningPolicy>::all(ctx.client.clone())
                .patch_status(&policy.name, &params, &patch)
                .await
                .map_err(api(what))?;
        }
    }
    Ok(())
}
