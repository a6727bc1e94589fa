//! The pipeline: one reconcile observes the workflow's world, takes at most one step of its
//! current phase, and records the result in status. Every step is idempotent and all progress
//! lives in the workflow's status and the Deployment's annotation, so a restarted operator
//! continues where the last one stopped.
//!
//! Pending → Instrumenting (push the instrumented image; apply the instrumented template; wait
//! for the rollout) → Observing (the exercise Job and/or `observe.duration`) → Collecting
//! (original template restored; reports awaited) → Hardening → Verifying (the hardened image
//! rolled out and exercised) → Succeeded. Any failure that retrying cannot fix restores the
//! Workload and ends in Failed.
//!
//! This file is the entry: the finalizer, the dispatch to the phase, the status write and the
//! phase-change Event. Each phase is a file of `reconcile/` that gathers what it needs, asks
//! the pure verdict of the same-named file of `phase/`, and acts on it at most once; `step.rs`
//! holds what every phase shares (the status helpers, failing, the registry store).

mod collecting;
mod continuous;
mod exercising;
mod hardening;
mod instrumenting;
mod observing;
mod pending;
mod rematch;
mod signing;
mod step;
mod verifying;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalize};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::Context;
use super::error::{Error, Result};
use super::phase::{self, AfterError};
use super::reason::Reason;
use super::template::{self, Original};
use super::{exercise, workload};
use crate::api::names::{FIELD_MANAGER, FINALIZER};
use crate::api::{ConditionType, HardeningWorkflow, HardeningWorkflowStatus, Phase, TargetKind};
use crate::controller::workload::Workload;
use crate::reports;
use step::Step;

pub type ReconcileError = finalizer::Error<Error>;

pub async fn reconcile(
    workflow: Arc<HardeningWorkflow>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let api: Api<HardeningWorkflow> = Api::namespaced(
        ctx.client.clone(),
        &workflow.namespace().unwrap_or_default(),
    );
    let result = finalizer::finalizer(&api, FINALIZER, workflow, |event| async {
        match event {
            Finalize::Apply(w) => step(&w, &ctx).await,
            Finalize::Cleanup(w) => cleanup(&w, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// One step of the workflow's current phase, then the status it leads to.
async fn step(workflow: &HardeningWorkflow, ctx: &Context) -> Result<Action> {
    let before = workflow.status.clone().unwrap_or_default();
    let mut status = before.clone();
    status.observed_generation = workflow.metadata.generation;
    let now = Time(Timestamp::now());
    let mut s = Step {
        workflow,
        ctx,
        status: &mut status,
        now: now.clone(),
    };
    let outcome = match before.phase() {
        Phase::Pending => s.pending().await,
        Phase::Instrumenting => s.instrumenting().await,
        Phase::Observing => s.observing().await,
        Phase::Collecting => s.collecting().await,
        Phase::Hardening => s.hardening().await,
        Phase::Verifying => s.verifying().await,
        // A finished workflow's errors (a check is already reported) are retried, never fatal.
        Phase::Succeeded => Ok(s.succeeded().await?),
        Phase::Failed => {
            release(ctx, workflow).await?;
            Ok(Action::await_change())
        }
    };
    let action = match outcome {
        Ok(action) => action,
        Err(e) => {
            let timeout = workflow.spec.harden.timeout.as_str();
            match phase::after_error(&e, before.phase(), s.out_of_time(), timeout) {
                AfterError::Fail { reason, message } => {
                    s.fail(reason, &message).await?;
                    Action::await_change()
                }
                AfterError::Retry => {
                    let note = e.to_string();
                    ctx.event(workflow, EventType::Warning, Reason::Retrying, &note)
                        .await;
                    return Err(e);
                }
            }
        }
    };
    // Also on a finished workflow: one from before these conditions existed gets them.
    let stalled_wait = waits_on_a_person(&status);
    status.set_kstatus_conditions(&now, workflow.metadata.generation, stalled_wait);
    let (namespace, name) = (
        workflow.namespace().unwrap_or_default(),
        workflow.name_any(),
    );
    ctx.metrics.set_workflow(&namespace, &name, &status);
    if status != before {
        write_status(ctx, workflow, &status).await?;
        if status.phase() != before.phase() {
            announce(ctx, workflow, &status).await;
        }
    }
    ctx.reset_backoff(workflow);
    Ok(action)
}

/// The workflow is being deleted: put the Workload back if whittle still has it, and remove
/// the reports now rather than when garbage collection gets to them.
async fn cleanup(workflow: &HardeningWorkflow, ctx: &Context) -> Result<Action> {
    let namespace = workflow.namespace().unwrap_or_default();
    let target = workflow.spec.target.name.clone();
    let kind = workflow.spec.target.kind;
    let found = workload::get(&ctx.client, &namespace, kind, &target).await?;
    let restored = match found {
        Some(d) => restore(ctx, workflow, &d).await?,
        None => false,
    };
    if restored {
        let note = format!(
            "the workflow was deleted: {} runs its original pod template again",
            workload::describe(kind, &namespace, &target)
        );
        ctx.event(workflow, EventType::Normal, Reason::Restored, &note)
            .await;
    }
    reports::delete_all(&ctx.client, workflow).await?;
    ctx.metrics.forget(&namespace, &workflow.name_any());
    Ok(Action::await_change())
}

/// A finished workflow runs no more tests: any exercise Job still running goes. Idempotent;
/// the reports stay with the workflow (the intake refuses new ones past Collecting).
async fn release(ctx: &Context, workflow: &HardeningWorkflow) -> Result<()> {
    exercise::stop_running(&ctx.client, workflow).await
}

/// Applies the saved original when the workload is held by this workflow; true if it did.
/// Changes others made to the workload meanwhile are kept (only whittle's fields go back),
/// and an Event says whose they were.
async fn restore(ctx: &Context, workflow: &HardeningWorkflow, d: &Workload) -> Result<bool> {
    match Original::on(d) {
        Some(Ok(saved)) if saved.belongs_to(workflow) => {
            let name = d.name_any();
            let namespace = workflow.namespace().unwrap_or_default();
            let config = template::restore(d.kind, &name, &saved);
            workload::apply(&ctx.client, &namespace, d.kind, &name, &config).await?;
            replace_held_pods(ctx, workflow, d).await?;
            info!(workflow = %workflow.name_any(), target = %d.describe(), "restored the original pod template");
            let editors = template::edited_by_others(d);
            if !editors.is_empty() {
                let note = format!(
                    "{} was changed by {} while whittle held it; whittle put back only the fields it had changed (image, command, probe and hook commands, its env entries, capabilities, grace period), so those changes are kept",
                    d.describe(),
                    editors.join(", ")
                );
                ctx.event(workflow, EventType::Normal, Reason::UserChangesKept, &note)
                    .await;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The pods whittle made that the workload's controller would not replace by itself after the
/// restore (`phase::to_delete_after_restore`): deleted, so they come back on the original.
async fn replace_held_pods(
    ctx: &Context,
    workflow: &HardeningWorkflow,
    d: &Workload,
) -> Result<()> {
    if d.kind == TargetKind::Deployment {
        return Ok(());
    }
    let namespace = workflow.namespace().unwrap_or_default();
    let held = workload::instrumented_pods(&ctx.client, &namespace, &workflow.name_any()).await?;
    for pod in phase::to_delete_after_restore(d, &held) {
        info!(workflow = %workflow.name_any(), %pod, "deleting a pod its controller would not replace");
        workload::delete_pod(&ctx.client, &namespace, &pod).await?;
    }
    Ok(())
}

async fn write_status(
    ctx: &Context,
    workflow: &HardeningWorkflow,
    status: &HardeningWorkflowStatus,
) -> Result<()> {
    let api: Api<HardeningWorkflow> = Api::namespaced(
        ctx.client.clone(),
        &workflow.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": HardeningWorkflow::api_version(&()),
        "kind": HardeningWorkflow::kind(&()),
        "status": status,
    });
    api.patch_status(
        &workflow.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Whether the workflow waits for something only a person can do (kstatus: Stalled).
fn waits_on_a_person(status: &HardeningWorkflowStatus) -> bool {
    status
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.reason == Reason::GitOpsManaged.as_str())
}

/// An Event for every phase change: Normal, or Warning for Failed.
async fn announce(ctx: &Context, workflow: &HardeningWorkflow, status: &HardeningWorkflowStatus) {
    let phase = status.phase();
    let kind = if phase == Phase::Failed {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let note = status.message.clone().unwrap_or_default();
    info!(workflow = %workflow.name_any(), namespace = %workflow.namespace().unwrap_or_default(), %phase, %note, "phase changed");
    ctx.publish(workflow, kind, phase.as_str(), &note).await;
}

/// Pod names for a message.
fn join(names: &std::collections::BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

impl Context {
    /// Publishes an Event on the workflow; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        workflow: &HardeningWorkflow,
        kind: EventType,
        reason: Reason,
        note: &str,
    ) {
        self.publish(workflow, kind, reason.as_str(), note).await;
    }

    /// An Event whose reason is a [`Reason`] or, for a phase change, the phase's name.
    async fn publish(
        &self,
        workflow: &HardeningWorkflow,
        kind: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_: kind,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &workflow.object_ref(&()))
            .await
        {
            warn!(workflow = %workflow.name_any(), error = %e, "could not publish an event");
        }
    }
}
