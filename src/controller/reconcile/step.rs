//! What every phase's step shares: the workflow, its status being written, the clock, and the
//! helpers that record progress (conditions, phase changes, Events), find the target, open the
//! registries with the workflow's credentials, and fail the workflow (restoring the target).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::restore;
use crate::api::ContainerResult;
use crate::api::names::report_slot;
use crate::api::{
    ConditionStatus, ConditionType, HardeningWorkflow, HardeningWorkflowStatus, Phase, TargetKind,
    Trigger,
};
use crate::controller::error::{Error, Result};
use crate::controller::phase::{self, AfterFailure, POLL};
use crate::controller::reason::Reason;
use crate::controller::template::{self, Images, Original};
use crate::controller::workload::Workload;
use crate::controller::{Context, engine, exercise, workload};
use crate::image::distribution::store::Store;

/// A step that changed status without waiting for anything: look again at once (the status
/// write also wakes the controller).
pub(super) const SOON: Duration = Duration::from_millis(200);

/// The state one step works on.
pub(super) struct Step<'a> {
    pub(super) workflow: &'a HardeningWorkflow,
    pub(super) ctx: &'a Context,
    pub(super) status: &'a mut HardeningWorkflowStatus,
    pub(super) now: Time,
}

impl Step<'_> {
    pub(super) fn namespace(&self) -> String {
        self.workflow.namespace().unwrap_or_default()
    }

    pub(super) fn target(&self) -> &str {
        &self.workflow.spec.target.name
    }

    pub(super) fn kind(&self) -> TargetKind {
        self.workflow.spec.target.kind
    }

    /// `Kind namespace/name` of the target, for messages.
    pub(super) fn what(&self) -> String {
        workload::describe(self.kind(), &self.namespace(), self.target())
    }

    pub(super) fn since_phase_start(&self) -> Duration {
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
    pub(super) fn out_of_time(&self) -> bool {
        phase::gives_up(
            self.status.phase(),
            self.since_phase_start(),
            self.harden_limit(),
        )
    }

    pub(super) fn harden_limit(&self) -> Duration {
        self.workflow
            .spec
            .harden
            .timeout
            .get()
            .unwrap_or(Duration::MAX)
    }

    pub(super) fn condition(
        &mut self,
        type_: ConditionType,
        ok: bool,
        reason: Reason,
        message: &str,
    ) {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_condition(type_, status, reason.as_str(), message);
    }

    pub(super) fn set_condition(
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

    /// A step forward inside a phase: the condition says it, `status.message` repeats it, and
    /// an Event announces it.
    pub(super) async fn progress(
        &mut self,
        condition: (ConditionType, bool, Reason),
        event: Reason,
        message: String,
    ) {
        let (type_, ok, reason) = condition;
        self.condition(type_, ok, reason, &message);
        self.ctx
            .event(self.workflow, EventType::Normal, event, &message)
            .await;
        self.status.message = Some(message);
    }

    /// A new phase, which is the `Ready` reason while it runs.
    pub(super) fn enter(&mut self, phase: Phase, message: String) {
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
    pub(super) fn wait(&mut self, reason: Reason, message: String) -> Action {
        // Shown in `kubectl get hw`'s Phase column, which would be blank otherwise.
        self.status.set_phase(Phase::Pending, &self.now);
        self.condition(ConditionType::Ready, false, reason, &message);
        self.status.message = Some(message);
        Action::requeue(POLL * 2)
    }

    pub(super) async fn workload(&self) -> Result<Workload> {
        workload::get(
            &self.ctx.client,
            &self.namespace(),
            self.kind(),
            self.target(),
        )
        .await?
        .ok_or_else(|| Error::Failed {
            reason: Reason::TargetDeleted,
            message: format!("{} was deleted while the workflow ran", self.what()),
        })
    }

    /// For a workload whose pods are replaced only when deleted (`OnDelete`): deletes the next
    /// pod not yet on `image` (`phase::next_to_delete`), so the rollout whittle waits for
    /// happens.
    pub(super) async fn roll_on_delete(&self, d: &Workload, images: &Images) -> Result<()> {
        if !d.on_delete {
            return Ok(());
        }
        let pods = workload::pods(&self.ctx.client, &self.namespace(), d).await?;
        if let Some(pod) = phase::next_to_delete(d, &pods, images) {
            info!(workflow = %self.workflow.name_any(), %pod, "deleting a pod of an OnDelete workload");
            workload::delete_pod(&self.ctx.client, &self.namespace(), &pod).await?;
        }
        Ok(())
    }

    /// The first container the workflow hardens: the one `status.sourceImage` names.
    pub(super) fn container<'d>(&self, d: &'d Workload) -> Result<&'d Container> {
        let first = self.containers(d)?.into_iter().next();
        first.ok_or_else(|| Error::Failed {
            reason: Reason::ContainerNotFound,
            message: format!("{} has no container", self.what()),
        })
    }

    /// Every container the workflow hardens, in the order named.
    pub(super) fn containers<'d>(&self, d: &'d Workload) -> Result<Vec<&'d Container>> {
        template::target_containers(d, &self.workflow.spec.target).map_err(|message| {
            Error::Failed {
                reason: Reason::ContainerNotFound,
                message,
            }
        })
    }

    /// Whether the workflow names its containers (`spec.target.containers`): then each
    /// container's result is in `status.containers` and reports are counted per container.
    pub(super) fn per_container(&self) -> bool {
        self.workflow.spec.target.containers.is_some()
    }

    /// The image status records for each container: `of` a `status.containers` entry, or
    /// (one container) `first`, the top-level field.
    pub(super) fn status_images(
        &self,
        d: &Workload,
        of: fn(&ContainerResult) -> Option<&String>,
        first: Option<&String>,
    ) -> Result<Images> {
        if self.per_container() {
            return Ok(self
                .status
                .containers
                .iter()
                .filter_map(|c| Some((c.name.clone(), of(c)?.clone())))
                .collect());
        }
        let name = self.container(d)?.name.clone();
        Ok(first.map(|i| (name, i.clone())).into_iter().collect())
    }

    /// What each of `pods` is expected to report as: the pod, or each hardened container of
    /// it.
    pub(super) fn slots(&self, d: &Workload, pods: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let per_container = self.per_container();
        let names: Vec<String> = self.containers(d)?.iter().map(|c| c.name.clone()).collect();
        Ok(pods
            .iter()
            .flat_map(|pod| {
                names
                    .iter()
                    .map(move |c| report_slot(pod, Some(c), per_container))
            })
            .collect())
    }

    /// The saved original when this workflow holds the Workload, None when no workflow does;
    /// an error when another workflow took it or the annotation is unreadable.
    pub(super) fn holds(&self, d: &Workload) -> Result<Option<Original>> {
        match Original::on(d) {
            None => Ok(None),
            Some(Ok(saved)) if saved.belongs_to(self.workflow) => Ok(Some(saved)),
            Some(Ok(saved)) => Err(Error::Failed {
                reason: Reason::TargetBusy,
                message: format!(
                    "{} was taken by workflow {} while this one ran",
                    self.what(),
                    saved.workflow
                ),
            }),
            Some(Err(e)) => Err(Error::Failed {
                reason: Reason::AnnotationCorrupt,
                message: format!(
                    "the {} annotation on {} is not whittle's: {e}",
                    template::ORIGINAL_ANNOTATION,
                    self.what()
                ),
            }),
        }
    }

    pub(super) fn expected(&self) -> BTreeSet<String> {
        self.status
            .reports
            .as_ref()
            .map(|r| r.expected.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) async fn store(&self, d: &Workload) -> Result<Store> {
        let pull: Vec<String> = template::pod_spec(d)
            .and_then(|s| s.image_pull_secrets.as_ref())
            .map(|s| s.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        // Plain HTTP only to this workflow's own registries: the source's (as first resolved,
        // since a promoted Workload runs the hardened image) and the destinations'.
        let insecure = if self.workflow.spec.registry.insecure {
            let image = match &self.status.source_image {
                Some(source) => source.clone(),
                None => self.container(d)?.image.clone().unwrap_or_default(),
            };
            let mut registries = engine::destinations(self.workflow, &image)?.registries();
            // The other containers' own sources (`target.containers`), as the Workload names
            // them: pushed to their own repositories.
            if self.per_container() {
                for c in self.containers(d)? {
                    let image = c.image.clone().unwrap_or_default();
                    registries.extend(engine::destinations(self.workflow, &image)?.registries());
                }
                registries.sort();
                registries.dedup();
            }
            registries
        } else {
            Vec::new()
        };
        let store = engine::store(
            &self.ctx.client,
            &self.namespace(),
            &engine::credential_secrets(self.workflow, &pull),
            insecure,
        )
        .await?;
        Ok(store.with_limits(self.ctx.limits))
    }

    /// Failed: the Workload gets its original template back (if whittle still holds it),
    /// the reason goes into status and a Warning Event.
    pub(super) async fn fail(&mut self, reason: Reason, message: &str) -> Result<()> {
        if let Some(d) = workload::get(
            &self.ctx.client,
            &self.namespace(),
            self.kind(),
            self.target(),
        )
        .await?
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
        let (continuous, again) = (self.status.previous.is_some(), self.status.observing_again);
        let verdict = phase::after_failure(self.status.phase(), continuous, again);
        if verdict == AfterFailure::ObserveAgain {
            exercise::delete_all(&self.ctx.client, self.workflow).await?;
            self.observe_again(reason, message).await;
            return Ok(());
        }
        self.status
            .record_run(Phase::Failed, Some(reason.as_str()), &self.now);
        self.count_run("Failed");
        if verdict == AfterFailure::RollBack && self.status.restore_previous() {
            self.refresh_failed(reason, message).await;
            return Ok(());
        }
        warn!(workflow = %self.workflow.name_any(), %reason, %message, "workflow failed");
        self.status.set_phase(Phase::Failed, &self.now);
        self.condition(ConditionType::Ready, false, reason, message);
        self.status.message = Some(message.to_string());
        Ok(())
    }

    /// A continuous run's image, hardened from the stored profile alone, failed verification:
    /// the new source is instrumented and observed (its reports join the stored ones), then
    /// hardened and verified once more. The Workload is back on the good image meanwhile.
    async fn observe_again(&mut self, reason: Reason, message: &str) {
        let source = self.status.source_image.clone().unwrap_or_default();
        let note = format!(
            "{source} hardened from the stored profile failed verification ({reason}: {message}); observing it again"
        );
        warn!(workflow = %self.workflow.name_any(), %reason, %message, "observing again");
        self.status.observing_again = true;
        self.status.instrumented_image = None;
        self.status.hardened_image = None;
        self.status.verification = None;
        self.status.seal = None;
        let kind = EventType::Warning;
        (self.ctx)
            .event(self.workflow, kind, Reason::ObservingAgain, &note)
            .await;
        self.condition(
            ConditionType::UpToDate,
            false,
            Reason::ObservingAgain,
            &note,
        );
        self.condition(
            ConditionType::Instrumented,
            false,
            Reason::Instrumenting,
            "pushing the instrumented image",
        );
        self.enter(Phase::Instrumenting, note);
    }

    /// A continuous run failed: the good result it was to replace is back in status (and on
    /// the Workload, through the restore), the workflow Succeeded still, not up to date.
    async fn refresh_failed(&mut self, reason: Reason, message: &str) {
        let kept = self.status.hardened_image.clone().unwrap_or_default();
        let note = format!("{reason}: {message}; {kept} stays in place");
        warn!(workflow = %self.workflow.name_any(), %reason, %message, "a refresh failed");
        self.status.set_phase(Phase::Succeeded, &self.now);
        let ready = format!("{kept} is verified; the last refresh failed ({reason})");
        let succeeded = Phase::Succeeded.as_str();
        self.set_condition(
            ConditionType::Ready,
            ConditionStatus::True,
            succeeded,
            &ready,
        );
        self.condition(ConditionType::UpToDate, false, Reason::RefreshFailed, &note);
        self.status.message = Some(ready);
        let kind = EventType::Warning;
        (self.ctx)
            .event(self.workflow, kind, Reason::RefreshFailed, &note)
            .await;
    }

    /// The run succeeded: Succeeded with `message`, the run in the history, and (continuous)
    /// the result current.
    pub(super) fn succeed(&mut self, message: String) {
        self.status.previous = None;
        self.enter(Phase::Succeeded, message);
        self.status.record_run(Phase::Succeeded, None, &self.now);
        self.count_run("Succeeded");
        if self.workflow.spec.continuous.is_some() {
            let current = format!(
                "{} is built from {}",
                self.status.hardened_image.as_deref().unwrap_or_default(),
                self.status.source_image.as_deref().unwrap_or_default()
            );
            self.condition(ConditionType::UpToDate, true, Reason::Current, &current);
        }
    }

    fn count_run(&self, result: &str) {
        let trigger = self.status.trigger.unwrap_or(Trigger::Initial);
        let runs = &self.ctx.metrics.runs;
        runs.with_label_values(&[trigger.as_str(), result]).inc();
    }

    /// The source as the workload named it before whittle changed anything: what destinations
    /// derive from and what continuous hardening resolves again. A promoted Workload runs
    /// the hardened image, so the container is asked only before the first push recorded it.
    pub(super) fn source_reference(&self, d: &Workload) -> Result<String> {
        match &self.status.source_reference {
            Some(reference) => Ok(reference.clone()),
            None => Ok(self.container(d)?.image.clone().unwrap_or_default()),
        }
    }
}
