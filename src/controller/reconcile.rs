//! The pipeline: one reconcile observes the workflow's world, takes at most one step of its
//! current phase, and records the result in status. Every step is idempotent and all progress
//! lives in the workflow's status and the Deployment's annotation, so a restarted operator
//! continues where the last one stopped.
//!
//! Pending → Instrumenting (push the instrumented image; apply the instrumented template; wait
//! for the rollout) → Observing (the exercise Job and/or `observe.duration`) → Collecting
//! (original template restored; reports awaited) → Hardening → Verifying (the hardened image
//! rolled out and exercised; `exercising.rs`, `verifying.rs`) → Succeeded. Any failure that
//! retrying cannot fix restores the Deployment and ends in Failed.

mod exercising;
mod verifying;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
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
use super::exercise::{self, Run};
use super::phase::{self, Collect, POLL};
use super::reason::Reason;
use super::template::{self, Instrumentation, Original};
use super::{deployment, evidence, images};
use crate::api::names::{FIELD_MANAGER, FINALIZER};
use crate::api::{
    ConditionStatus, ConditionType, HardenResult, HardeningWorkflow, HardeningWorkflowStatus,
    Phase, ReportMaterial, ReportsStatus, VulnerabilitiesStatus,
};
use crate::evidence::produce::{self, EvidenceOptions, HardenInputs};
use crate::reports;

pub type ReconcileError = finalizer::Error<Error>;

/// A step that changed status without waiting for anything: look again at once (the status
/// write also wakes the controller).
const SOON: Duration = Duration::from_millis(200);

/// How often to look whether a Service routes to the pods under test yet, before an exercise.
const ROUTING: Duration = Duration::from_secs(1);

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
    let mut s = Step {
        workflow,
        ctx,
        status: &mut status,
        now: Time(Timestamp::now()),
    };
    let outcome = match before.phase() {
        Phase::Pending => s.pending().await,
        Phase::Instrumenting => s.instrumenting().await,
        Phase::Observing => s.observing().await,
        Phase::Collecting => s.collecting().await,
        Phase::Hardening => s.hardening().await,
        Phase::Verifying => s.verifying().await,
        Phase::Succeeded | Phase::Failed => {
            release(ctx, workflow).await?;
            return Ok(Action::await_change());
        }
    };
    let action = match outcome {
        Ok(action) => action,
        Err(e) => match e.permanent_reason() {
            Some(reason) => {
                s.fail(reason, &e.to_string()).await?;
                Action::await_change()
            }
            None if s.out_of_time() => {
                let message = format!(
                    "{} gave up after {}: {e}",
                    before.phase(),
                    workflow.spec.harden.timeout.as_str()
                );
                s.fail(Reason::Timeout, &message).await?;
                Action::await_change()
            }
            None => {
                ctx.event(
                    workflow,
                    EventType::Warning,
                    Reason::Retrying,
                    &e.to_string(),
                )
                .await;
                return Err(e);
            }
        },
    };
    if status != before {
        write_status(ctx, workflow, &status).await?;
        if status.phase() != before.phase() {
            announce(ctx, workflow, &status).await;
        }
    }
    ctx.reset_backoff(workflow);
    Ok(action)
}

/// The workflow is being deleted: put the Deployment back if whittle still has it, and remove
/// the reports now rather than when garbage collection gets to them.
async fn cleanup(workflow: &HardeningWorkflow, ctx: &Context) -> Result<Action> {
    let namespace = workflow.namespace().unwrap_or_default();
    let target = workflow.spec.target.name.clone();
    let found = deployment::get(&ctx.client, &namespace, &target).await?;
    let restored = match found {
        Some(d) => restore(ctx, workflow, &d).await?,
        None => false,
    };
    if restored {
        let note = format!(
            "the workflow was deleted: Deployment {namespace}/{target} runs its original pod template again"
        );
        ctx.event(workflow, EventType::Normal, Reason::Restored, &note)
            .await;
    }
    reports::delete_all(&ctx.client, workflow).await?;
    Ok(Action::await_change())
}

/// A finished workflow runs no more tests: any exercise Job still running goes. Idempotent;
/// the reports stay with the workflow (the intake refuses new ones past Collecting).
async fn release(ctx: &Context, workflow: &HardeningWorkflow) -> Result<()> {
    exercise::stop_running(&ctx.client, workflow).await
}

/// Applies the saved original when the Deployment is held by this workflow; true if it did.
/// Changes others made to the Deployment meanwhile are kept (only whittle's fields go back),
/// and an Event says whose they were.
async fn restore(ctx: &Context, workflow: &HardeningWorkflow, d: &Deployment) -> Result<bool> {
    match Original::on(d) {
        Some(Ok(saved)) if saved.belongs_to(workflow) => {
            let name = d.name_any();
            let namespace = d.namespace().unwrap_or_default();
            deployment::apply(
                &ctx.client,
                &namespace,
                &name,
                &template::restore(&name, &saved),
            )
            .await?;
            info!(workflow = %workflow.name_any(), deployment = %name, "restored the original pod template");
            let editors = template::edited_by_others(d);
            if !editors.is_empty() {
                let note = format!(
                    "Deployment {namespace}/{name} was changed by {} while whittle held it; whittle put back only the fields it had changed (image, command, its env entries, capabilities, grace period), so those changes are kept",
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

/// The state one step works on.
struct Step<'a> {
    workflow: &'a HardeningWorkflow,
    ctx: &'a Context,
    status: &'a mut HardeningWorkflowStatus,
    now: Time,
}

impl Step<'_> {
    fn namespace(&self) -> String {
        self.workflow.namespace().unwrap_or_default()
    }

    fn target(&self) -> &str {
        &self.workflow.spec.target.name
    }

    fn since_phase_start(&self) -> Duration {
        let start = self
            .status
            .phase_started_at
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(self.now.0);
        Duration::try_from(self.now.0.duration_since(start)).unwrap_or_default()
    }

    /// Registry work (instrument, harden) has `harden.timeout` before a transient failure
    /// becomes final.
    fn out_of_time(&self) -> bool {
        let limited = matches!(self.status.phase(), Phase::Instrumenting | Phase::Hardening);
        limited && self.since_phase_start() > self.harden_limit()
    }

    fn harden_limit(&self) -> Duration {
        self.workflow
            .spec
            .harden
            .timeout
            .get()
            .unwrap_or(Duration::MAX)
    }

    fn condition(&mut self, type_: ConditionType, ok: bool, reason: Reason, message: &str) {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_condition(type_, status, reason.as_str(), message);
    }

    fn set_condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) {
        let generation = self.workflow.metadata.generation;
        self.status
            .set_condition(type_, status, reason, message, &self.now, generation);
    }

    /// A new phase, which is the `Ready` reason while it runs.
    fn enter(&mut self, phase: Phase, message: String) {
        self.status.set_phase(phase, &self.now);
        let ready = if phase == Phase::Succeeded {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_condition(ConditionType::Ready, ready, phase.as_str(), &message);
        self.status.message = Some(message);
    }

    /// Pending with a reason: nothing has been changed, the user may still edit the spec.
    fn wait(&mut self, reason: Reason, message: String) -> Action {
        // Shown in `kubectl get hw`'s Phase column, which would be blank otherwise.
        self.status.set_phase(Phase::Pending, &self.now);
        self.condition(ConditionType::Ready, false, reason, &message);
        self.status.message = Some(message);
        Action::requeue(POLL * 2)
    }

    async fn deployment(&self) -> Result<Deployment> {
        deployment::get(&self.ctx.client, &self.namespace(), self.target())
            .await?
            .ok_or_else(|| Error::Failed {
                reason: Reason::TargetDeleted,
                message: format!(
                    "Deployment {}/{} was deleted while the workflow ran",
                    self.namespace(),
                    self.target()
                ),
            })
    }

    fn container<'d>(
        &self,
        d: &'d Deployment,
    ) -> Result<&'d k8s_openapi::api::core::v1::Container> {
        template::target_container(d, self.workflow.spec.target.container.as_deref()).map_err(
            |message| Error::Failed {
                reason: Reason::ContainerNotFound,
                message,
            },
        )
    }

    /// The saved original when this workflow holds the Deployment, None when no workflow does;
    /// an error when another workflow took it or the annotation is unreadable.
    fn holds(&self, d: &Deployment) -> Result<Option<Original>> {
        match Original::on(d) {
            None => Ok(None),
            Some(Ok(saved)) if saved.belongs_to(self.workflow) => Ok(Some(saved)),
            Some(Ok(saved)) => Err(Error::Failed {
                reason: Reason::TargetBusy,
                message: format!(
                    "Deployment {}/{} was taken by workflow {} while this one ran",
                    self.namespace(),
                    self.target(),
                    saved.workflow
                ),
            }),
            Some(Err(e)) => Err(Error::Failed {
                reason: Reason::AnnotationCorrupt,
                message: format!(
                    "the {} annotation on Deployment {}/{} is not whittle's: {e}",
                    template::ORIGINAL_ANNOTATION,
                    self.namespace(),
                    self.target()
                ),
            }),
        }
    }

    /// Pending: the target must exist, have the container, and not be held by another
    /// workflow. Until then the workflow waits (and the spec stays editable).
    async fn pending(&mut self) -> Result<Action> {
        // Before anything is changed: a database the operator does not have would only fail
        // the workflow after observation.
        if let Some(db) = &self.workflow.spec.vulnerabilities.db {
            self.ctx.vuln_dbs.check(db)?;
        }
        let namespace = self.namespace();
        let Some(d) = deployment::get(&self.ctx.client, &namespace, self.target()).await? else {
            let message = format!(
                "Deployment {namespace}/{} does not exist (yet)",
                self.target()
            );
            return Ok(self.wait(Reason::TargetNotFound, message));
        };
        if let Err(message) =
            template::target_container(&d, self.workflow.spec.target.container.as_deref())
        {
            return Ok(self.wait(Reason::ContainerNotFound, message));
        }
        if let Some(holder) = other_holder(self.workflow, &d) {
            let message = format!(
                "Deployment {namespace}/{} is being hardened by workflow {holder}: waiting until it is restored",
                self.target()
            );
            return Ok(self.wait(Reason::TargetBusy, message));
        }
        self.condition(
            ConditionType::Instrumented,
            false,
            Reason::Instrumenting,
            "pushing the instrumented image",
        );
        self.enter(
            Phase::Instrumenting,
            format!(
                "instrumenting the image of Deployment {namespace}/{}",
                self.target()
            ),
        );
        Ok(Action::requeue(SOON))
    }

    /// Instrumenting: push the instrumented image, then apply the instrumented template, then
    /// wait until its pods are ready and record them.
    async fn instrumenting(&mut self) -> Result<Action> {
        let d = self.deployment().await?;
        let container = self.container(&d)?.clone();
        let Some(instrumented_image) = self.status.instrumented_image.clone() else {
            return self.push_instrumented(&d, &container).await;
        };
        if self.holds(&d)?.is_none() {
            return self
                .apply_instrumented(&d, &container, &instrumented_image)
                .await;
        }

        let pods = deployment::instrumented_pods(
            &self.ctx.client,
            &self.namespace(),
            &self.workflow.name_any(),
        )
        .await?;
        let running = phase::pods_running(&pods, &container.name, &instrumented_image);
        if phase::rollout_complete(&d) && !running.is_empty() {
            let message = format!(
                "{} pod(s) run the instrumented image: {}",
                running.len(),
                join(&running)
            );
            self.status.reports = Some(ReportsStatus::new(&running, &BTreeSet::new()));
            self.condition(
                ConditionType::Instrumented,
                true,
                Reason::RolledOut,
                &message,
            );
            let duration = self.observe_text();
            self.enter(
                Phase::Observing,
                format!("observing {} pod(s): {duration}", running.len()),
            );
            return Ok(Action::requeue(SOON));
        }
        let limit = self
            .workflow
            .spec
            .verify
            .timeout
            .get()
            .unwrap_or(Duration::MAX);
        if self.since_phase_start() > limit {
            let why =
                phase::pod_trouble(&pods).unwrap_or_else(|| "no pod reported a reason".into());
            return Err(Error::Failed {
                reason: Reason::RolloutFailed,
                message: format!(
                    "the instrumented pods did not become ready within {}: {why}",
                    self.workflow.spec.verify.timeout.as_str()
                ),
            });
        }
        Ok(Action::requeue(POLL))
    }

    async fn push_instrumented(
        &mut self,
        d: &Deployment,
        container: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Action> {
        let dest = images::destinations(
            self.workflow,
            container.image.as_deref().unwrap_or_default(),
        )?;
        let store = self.store(d).await?;
        let inst = images::instrument(&store, &dest, &self.ctx.sensor).await?;
        self.status.source_image = Some(inst.source.to_string());
        self.status.instrumented_image = Some(inst.image.to_string());
        let message = format!("pushed the instrumented image {}", inst.pushed);
        self.condition(
            ConditionType::Instrumented,
            false,
            Reason::ImagePushed,
            &message,
        );
        self.status.message = Some(message.clone());
        self.ctx
            .event(
                self.workflow,
                EventType::Normal,
                Reason::ImagePushed,
                &message,
            )
            .await;
        Ok(Action::requeue(SOON))
    }

    async fn apply_instrumented(
        &mut self,
        d: &Deployment,
        container: &k8s_openapi::api::core::v1::Container,
        instrumented_image: &str,
    ) -> Result<Action> {
        let report_token = self.ctx.report_key.token(
            &self.namespace(),
            &self.workflow.name_any(),
            self.workflow.metadata.uid.as_deref().unwrap_or_default(),
        );
        let saved = Original::of(self.workflow, d, container);
        let report_url = self
            .ctx
            .report_url(&self.namespace(), &self.workflow.name_any());
        let config = template::instrumented(
            &d.name_any(),
            &saved,
            &Instrumentation {
                instrumented_image,
                report_url: &report_url,
                report_token: &report_token,
                sensor_mode: self.workflow.spec.observe.sensor_mode,
            },
        );
        deployment::apply(&self.ctx.client, &self.namespace(), &d.name_any(), &config).await?;
        let message = format!(
            "Deployment {}/{} runs the instrumented image (sensor mode {}); waiting for its pods",
            self.namespace(),
            self.target(),
            self.workflow.spec.observe.sensor_mode.as_str()
        );
        self.condition(
            ConditionType::Instrumented,
            false,
            Reason::RollingOut,
            &message,
        );
        self.status.message = Some(message.clone());
        self.ctx
            .event(
                self.workflow,
                EventType::Normal,
                Reason::Instrumented,
                &message,
            )
            .await;
        Ok(Action::requeue(POLL))
    }

    /// Observing: the instrumented pods run until `observe.duration` has passed; pods that
    /// join meanwhile are expected to report too. Then the original template comes back.
    async fn observing(&mut self) -> Result<Action> {
        let d = self.deployment().await?;
        let mut running = BTreeSet::new();
        if let Some(image) = self.status.instrumented_image.clone() {
            let container = self.container(&d)?.name.clone();
            let pods = deployment::instrumented_pods(
                &self.ctx.client,
                &self.namespace(),
                &self.workflow.name_any(),
            )
            .await?;
            running = phase::pods_running(&pods, &container, &image);
            let mut expected = self.expected();
            expected.extend(running.iter().cloned());
            self.status.reports = Some(ReportsStatus::new(&expected, &BTreeSet::new()));
        }
        let observe = &self.workflow.spec.observe;
        let (elapsed, limit) = match &self.workflow.spec.exercise {
            None => (self.since_phase_start(), observe.duration_after(false)),
            Some(_) => match self.exercise(Run::Observe, &d, &running).await? {
                exercising::Outcome::Starting { service } => {
                    let limit = self.workflow.spec.exercise.as_ref().map(|e| &e.timeout);
                    let limit = limit.and_then(|t| t.get().ok()).unwrap_or_default();
                    if self.since_phase_start() > limit {
                        return Err(Error::Failed {
                            reason: Reason::ServiceNotRouting,
                            message: format!(
                                "Service {service} did not route to the instrumented pods alone ({}) within the exercise's timeout: does its selector pick other pods too?",
                                join(&running)
                            ),
                        });
                    }
                    return Ok(Action::requeue(ROUTING));
                }
                exercising::Outcome::Running => return Ok(Action::requeue(POLL * 6)),
                exercising::Outcome::Failed(why) => {
                    return Err(Error::Failed {
                        reason: Reason::ExerciseFailed,
                        message: format!(
                            "the exercise failed against the original workload, so the exercise is at fault, not the image: {why}"
                        ),
                    });
                }
                exercising::Outcome::Passed { since } => (since, observe.duration_after(true)),
            },
        };
        if let Some(left) = phase::remaining(elapsed, limit) {
            return Ok(Action::requeue(left.min(Duration::from_secs(30))));
        }
        restore(self.ctx, self.workflow, &d).await?;
        let expected = self.expected();
        let message = format!(
            "restored the original pod template; waiting for the reports of {}",
            join(&expected)
        );
        self.condition(
            ConditionType::Observed,
            true,
            Reason::ObservationEnded,
            &message,
        );
        self.enter(Phase::Collecting, message);
        Ok(Action::requeue(SOON))
    }

    /// How long observation lasts, for messages.
    fn observe_text(&self) -> String {
        let exercised = self.workflow.spec.exercise.is_some();
        let text = self.workflow.spec.observe.duration_text(exercised);
        match (exercised, &self.workflow.spec.observe.duration) {
            (true, Some(_)) => format!("until the exercise Job succeeds, then {text}"),
            _ => text,
        }
    }

    fn expected(&self) -> BTreeSet<String> {
        self.status
            .reports
            .as_ref()
            .map(|r| r.expected.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Collecting: the stopping pods' sensors report; harden when all have, or when
    /// `collectTimeout` has passed with at least `minReports`.
    async fn collecting(&mut self) -> Result<Action> {
        let reported = reports::reported_pods(&self.ctx.client, self.workflow).await?;
        let expected = self.expected();
        self.status.reports = Some(ReportsStatus::new(&expected, &reported));
        let observe = &self.workflow.spec.observe;
        let timeout = observe.collect_timeout.get().unwrap_or_default();
        let min = observe.min_reports as usize;
        match phase::collect(&expected, &reported, min, self.since_phase_start(), timeout) {
            Collect::Wait(after) => Ok(Action::requeue(after)),
            Collect::Harden { silent } => {
                if !silent.is_empty() {
                    let note = format!(
                        "hardening with {} report(s); no report from {}",
                        reported.len(),
                        silent.join(", ")
                    );
                    self.ctx
                        .event(
                            self.workflow,
                            EventType::Warning,
                            Reason::ReportsMissing,
                            &note,
                        )
                        .await;
                }
                self.enter(
                    Phase::Hardening,
                    format!("hardening with {} report(s)", reported.len()),
                );
                Ok(Action::requeue(SOON))
            }
            Collect::Fail { silent, received } => Err(Error::Failed {
                reason: Reason::ReportsMissing,
                message: format!(
                    "{received} report(s) arrived within {} and {min} are needed; no report from {}",
                    observe.collect_timeout.as_str(),
                    silent.join(", ")
                ),
            }),
        }
    }

    /// Hardening: build and push the hardened image from the stored reports, within what is
    /// left of `harden.timeout`.
    async fn hardening(&mut self) -> Result<Action> {
        let d = self.deployment().await?;
        let container = self.container(&d)?.clone();
        let source = self
            .status
            .source_image
            .clone()
            .ok_or_else(|| Error::Failed {
                reason: Reason::StatusIncomplete,
                message: "status.sourceImage is missing: was the status edited by hand?".into(),
            })?;
        let dest = images::destinations(
            self.workflow,
            container.image.as_deref().unwrap_or_default(),
        )?;
        let store = self.store(&d).await?;
        let folded = reports::fold(&self.ctx.client, self.workflow).await?;
        let materials: Vec<ReportMaterial> = folded
            .materials
            .iter()
            .map(|(name, sha256)| ReportMaterial {
                name: name.clone(),
                sha256: sha256.clone(),
            })
            .collect();
        let status = self.status.reports.get_or_insert_with(Default::default);
        status.modes = folded.modes.into_iter().collect();
        status.materials = materials;
        let profile: Vec<_> = folded.profile.into_iter().collect();
        let left =
            phase::remaining(self.since_phase_start(), self.harden_limit()).unwrap_or_default();
        let started = Instant::now();
        let summary = tokio::time::timeout(
            left,
            images::harden(&store, &source, &dest, profile, self.workflow),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: format!("hardening {source}"),
            limit: self.workflow.spec.harden.timeout.as_str().to_string(),
        })??;
        let metrics = &self.ctx.metrics;
        metrics
            .harden_duration
            .observe(started.elapsed().as_secs_f64());
        metrics
            .bytes_saved
            .inc_by(summary.source_bytes.saturating_sub(summary.hardened_bytes));
        let vuln_db = match &self.workflow.spec.vulnerabilities.db {
            Some(db) => Some(self.ctx.vuln_dbs.get(db).await?),
            None => None,
        };
        let options = EvidenceOptions {
            sbom_dir: None,
            attach_sbom: self.workflow.spec.harden.sbom,
            vuln_db,
            sign_key: None,
        };
        let evidence = produce::describe(&store, &summary, &options).await?;
        self.status.sbom = evidence.sbom.map(|a| a.reference);
        self.status.vulnerabilities = evidence
            .vulnerabilities
            .as_ref()
            .map(VulnerabilitiesStatus::from_summary);
        let result = HardenResult::from_summary(&summary);
        let message = format!(
            "hardened image {}: {} bytes instead of {} ({}% smaller), {} files kept, {} removed",
            summary.hardened_image,
            result.hardened_bytes,
            result.source_bytes,
            result.reduction_percent,
            result.files_kept,
            result.files_removed
        );
        self.status.hardened_image = Some(summary.hardened_image.clone());
        let seal = self
            .ctx
            .report_key
            .seal(&self.sealed(&source, &summary.hardened_image));
        self.status.seal = Some(seal);
        self.status.result = Some(result);
        self.condition(ConditionType::Hardened, true, Reason::Pushed, &message);
        if self.workflow.spec.verify.enabled {
            self.condition(
                ConditionType::Verified,
                false,
                Reason::Verifying,
                "rolling out the hardened image",
            );
            self.enter(
                Phase::Verifying,
                format!("{message}; verifying it: rolling it out"),
            );
            return Ok(Action::requeue(SOON));
        }
        self.sign(&store).await?;
        self.enter(Phase::Succeeded, message);
        Ok(Action::await_change())
    }

    /// Signs the hardened image and its provenance with `spec.sign.keySecret`, once it is
    /// trusted (verified, or verification is off). Signing again after a restart replaces the
    /// signature with an equivalent one.
    async fn sign(&mut self, store: &crate::image::distribution::store::Store) -> Result<()> {
        let Some(secret) = &self.workflow.spec.sign.key_secret else {
            return Ok(());
        };
        let (Some(hardened), Some(source)) = (
            self.status.hardened_image.clone(),
            self.status.source_image.clone(),
        ) else {
            return Ok(());
        };
        let seal = self.status.seal.as_deref().unwrap_or_default();
        if !self
            .ctx
            .report_key
            .opens(&self.sealed(&source, &hardened), seal)
        {
            return Err(Error::Failed {
                reason: Reason::StatusTampered,
                message: format!(
                    "status.hardenedImage {hardened} (or status.sourceImage or the report materials) is not what this workflow's harden produced: it was edited, so it is not signed"
                ),
            });
        }
        let key = evidence::signing_key(&self.ctx.client, &self.namespace(), secret).await?;
        let materials = self.materials();
        let spec = &self.workflow.spec.harden;
        let inputs = HardenInputs {
            materials: &materials,
            include: &spec.include,
            exclude: &spec.exclude,
            started_on: self.status.started_at.as_ref().map(|t| t.0),
        };
        let (signature, provenance) =
            produce::sign(store, &hardened, &source, &inputs, &key).await?;
        self.status.signature = Some(signature);
        self.status.provenance = Some(provenance);
        Ok(())
    }

    /// The report materials recorded when hardening started.
    fn materials(&self) -> Vec<(String, String)> {
        self.status
            .reports
            .as_ref()
            .map(|r| {
                r.materials
                    .iter()
                    .map(|m| (m.name.clone(), m.sha256.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the seal covers: this workflow, the images harden read and wrote, and the reports
    /// it used.
    fn sealed<'s>(&'s self, source: &'s str, hardened: &'s str) -> Vec<&'s str> {
        let mut parts = vec![
            self.workflow.metadata.uid.as_deref().unwrap_or_default(),
            source,
            hardened,
        ];
        if let Some(r) = &self.status.reports {
            for m in &r.materials {
                parts.push(&m.name);
                parts.push(&m.sha256);
            }
        }
        parts
    }

    async fn store(&self, d: &Deployment) -> Result<crate::image::distribution::store::Store> {
        let pull: Vec<String> = template::pod_spec(d)
            .and_then(|s| s.image_pull_secrets.as_ref())
            .map(|s| s.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        // Plain HTTP only to this workflow's own registries: the source's (as first resolved,
        // since a promoted Deployment runs the hardened image) and the destinations'.
        let insecure = if self.workflow.spec.registry.insecure {
            let image = match &self.status.source_image {
                Some(source) => source.clone(),
                None => self.container(d)?.image.clone().unwrap_or_default(),
            };
            images::destinations(self.workflow, &image)?.registries()
        } else {
            Vec::new()
        };
        let store = images::store(
            &self.ctx.client,
            &self.namespace(),
            &images::credential_secrets(self.workflow, &pull),
            insecure,
        )
        .await?;
        Ok(store.with_limits(self.ctx.limits))
    }

    /// Failed: the Deployment gets its original template back (if whittle still holds it),
    /// the reason goes into status and a Warning Event.
    async fn fail(&mut self, reason: Reason, message: &str) -> Result<()> {
        if let Some(d) = deployment::get(&self.ctx.client, &self.namespace(), self.target()).await?
            && restore(self.ctx, self.workflow, &d).await?
        {
            let metrics = &self.ctx.metrics;
            metrics
                .rollbacks
                .with_label_values(&[reason.as_str()])
                .inc();
        }
        if self.status.phase() == Phase::Verifying {
            let metrics = &self.ctx.metrics;
            metrics.verifications.with_label_values(&["failed"]).inc();
            self.condition(ConditionType::Verified, false, reason, message);
        }
        warn!(workflow = %self.workflow.name_any(), %reason, %message, "workflow failed");
        self.status.set_phase(Phase::Failed, &self.now);
        self.condition(ConditionType::Ready, false, reason, message);
        self.status.message = Some(message.to_string());
        Ok(())
    }
}

/// The workflow holding the Deployment, when it is not `workflow`.
fn other_holder(workflow: &HardeningWorkflow, d: &Deployment) -> Option<String> {
    match Original::on(d)? {
        Ok(saved) if !saved.belongs_to(workflow) => Some(saved.workflow),
        Ok(_) => None,
        Err(_) => Some("unknown (the annotation is unreadable)".into()),
    }
}

fn join(names: &BTreeSet<String>) -> String {
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
