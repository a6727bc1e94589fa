//! Verifying: the hardened image is trusted only once it has run. One step per reconcile, each
//! recognisable after a restart: roll the Workload to the hardened image (held again, the
//! original saved), wait for the rollout within `verify.timeout` (`phase::rollout`, strict:
//! readiness probes included, a crash loop fails at once), run the exercise Job against it
//! (`phase::exercised`), record the verdict, then promote or restore. Any failure restores the
//! original (through `fail`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::restore;
use super::step::{SOON, Step};
use crate::api::{ConditionType, Verification, VerificationResult};
use crate::controller::error::{Error, Result};
use crate::controller::exec_handlers::ExecHandlers;
use crate::controller::exercise::Run;
use crate::controller::phase::{self, Exercised, POLL, Rollout, RolloutWatch, Trouble};
use crate::controller::reason::Reason;
use crate::controller::template::{self, Images, Original};
use crate::controller::workload;
use crate::controller::workload::Workload;

impl Step<'_> {
    pub(super) async fn verifying(&mut self) -> Result<Action> {
        let hardened = self
            .status
            .hardened_image
            .clone()
            .ok_or_else(|| Error::Failed {
                reason: Reason::StatusIncomplete,
                message: "status.hardenedImage is missing: was the status edited by hand?".into(),
            })?;
        let d = self.workload().await?;
        let containers: Vec<Container> = self.containers(&d)?.into_iter().cloned().collect();
        let images = self.status_images(&d, |c| c.hardened_image.as_ref(), Some(&hardened))?;
        let passed = self.status.verification.as_ref();
        if passed.is_some_and(|v| v.result == VerificationResult::Passed) {
            return self.finish_verified(&d, &images).await;
        }
        if self.holds(&d)?.is_none() {
            let chosen: Vec<&Container> = containers.iter().collect();
            let saved = Original::of(self.workflow, &d, &chosen);
            return self.roll_out_hardened(&d, &saved, &images).await;
        }
        let limit = self.workflow.spec.verify.timeout.get().unwrap_or_default();
        let out_of_time = self.since_phase_start() > limit;
        let pods = workload::instrumented_pods(
            &self.ctx.client,
            &self.namespace(),
            &self.workflow.name_any(),
        )
        .await?;
        let watch = RolloutWatch {
            images: &images,
            out_of_time,
            crash_loops_fail: true,
        };
        match phase::rollout(&d, &pods, watch) {
            Rollout::Ready(running) => self.exercise_hardened(&d, &running, out_of_time).await,
            Rollout::Waiting => {
                let missing = self.any_probe_command_missing(&containers, &images, &pods);
                if let Some(failure) = missing.await {
                    return Err(failure);
                }
                self.roll_on_delete(&d, &images).await?;
                Ok(Action::requeue(POLL))
            }
            Rollout::CrashLooping(t) => Err(self.crash_looping(t).await),
            Rollout::NotReady { trouble, .. } => Err(self.not_ready(trouble).await),
            Rollout::Stuck { why } => {
                let why = why.unwrap_or_else(|| "no pod of the hardened image came up".into());
                let message = format!(
                    "the hardened image did not roll out within {}: {why}",
                    self.workflow.spec.verify.timeout.as_str()
                );
                Err(self.verification_failed(Reason::RolloutFailed, message, None))
            }
        }
    }

    /// Holds the Workload again (the original saved) and rolls it to the hardened images.
    async fn roll_out_hardened(
        &mut self,
        d: &Workload,
        saved: &Original,
        images: &Images,
    ) -> Result<Action> {
        let config = template::hardened(d.kind, &d.name_any(), saved, images);
        let hardened = listed(images);
        workload::apply(
            &self.ctx.client,
            &self.namespace(),
            d.kind,
            &d.name_any(),
            &config,
        )
        .await?;
        let message = format!(
            "{} runs the hardened image {hardened}; waiting for its pods to become ready",
            self.what()
        );
        let condition = (ConditionType::Verified, false, Reason::RollingOut);
        self.progress(condition, Reason::RolledOutHardened, message)
            .await;
        Ok(Action::requeue(POLL))
    }

    /// The hardened pods are ready: the exercise (if any) runs against them; its verdict is
    /// the verification's.
    async fn exercise_hardened(
        &mut self,
        d: &Workload,
        running: &BTreeSet<String>,
        out_of_time: bool,
    ) -> Result<Action> {
        let exercise = match &self.workflow.spec.exercise {
            Some(_) => Some(self.exercise(Run::Verify, d, running).await?),
            None => None,
        };
        let limit = self.workflow.spec.verify.timeout.as_str();
        match phase::exercised(exercise.as_ref(), out_of_time, limit) {
            Exercised::Wait(after) => Ok(Action::requeue(after)),
            Exercised::Failed { reason, message } => {
                Err(self.verification_failed(reason, message, None))
            }
            Exercised::Passed(how) => {
                self.status.verification = Some(Verification {
                    result: VerificationResult::Passed,
                    reason: Reason::Passed.as_str().into(),
                    message: how.into(),
                    pod: None,
                    container: None,
                });
                let condition = (ConditionType::Verified, true, Reason::Passed);
                self.progress(condition, Reason::Verified, how.into()).await;
                let metrics = &self.ctx.metrics;
                metrics.verifications.with_label_values(&["passed"]).inc();
                Ok(Action::requeue(SOON))
            }
        }
    }

    /// Verification passed (recorded in status): keep the hardened image (`promote`) or give
    /// the Workload its original back, then Succeeded.
    async fn finish_verified(&mut self, d: &Workload, images: &Images) -> Result<Action> {
        let (namespace, name, what) = (self.namespace(), d.name_any(), d.describe());
        let hardened = listed(images);
        let message = if self.workflow.spec.promote {
            if let Some(saved) = self.holds(d)? {
                let config = template::promoted(d.kind, &name, &saved, images);
                workload::apply(&self.ctx.client, &namespace, d.kind, &name, &config).await?;
            }
            format!("verified and promoted: {what} runs the hardened image {hardened}")
        } else {
            restore(self.ctx, self.workflow, d).await?;
            format!(
                "verified {hardened}; {what} runs its original image again (spec.promote keeps the hardened one)"
            )
        };
        let store = self.store(d).await?;
        self.sign(&store).await?;
        self.succeed(message);
        Ok(Action::requeue(SOON))
    }

    /// [`Self::probe_command_missing`] for each hardened container.
    async fn any_probe_command_missing(
        &mut self,
        containers: &[Container],
        images: &Images,
        pods: &[Pod],
    ) -> Option<Error> {
        for container in containers {
            let image = images.get(&container.name)?;
            if let Some(failure) = self.probe_command_missing(container, image, pods).await {
                return Some(failure);
            }
        }
        None
    }

    /// When the container has exec probes: a hardened pod whose probe runs a command the
    /// hardened image lacks would fail until `verify.timeout`; the failure, with kubelet's
    /// words, as soon as kubelet records it.
    async fn probe_command_missing(
        &mut self,
        container: &Container,
        hardened: &str,
        pods: &[Pod],
    ) -> Option<Error> {
        let probes = ExecHandlers::of(container);
        let has_exec_probe = probes.liveness_probe.is_some()
            || probes.readiness_probe.is_some()
            || probes.startup_probe.is_some();
        if !has_exec_probe {
            return None;
        }
        let one = Images::from([(container.name.clone(), hardened.to_string())]);
        for pod in phase::pods_running(pods, &one) {
            let said = workload::probe_failure(&self.ctx.client, &self.namespace(), &pod).await;
            if let Some(message) = said.filter(|m| phase::command_missing(m)) {
                let message = format!(
                    "pod {pod} container {}: a probe runs a command the hardened image does not have: {message}",
                    container.name
                );
                let trouble = Trouble {
                    pod,
                    container: container.name.clone(),
                    detail: message.clone(),
                };
                let reason = Reason::ProbeCommandMissing;
                return Some(self.verification_failed(reason, message, Some(trouble)));
            }
        }
        None
    }

    async fn crash_looping(&mut self, t: Trouble) -> Error {
        let logs = self.logs(&t, true).await;
        let message = format!(
            "pod {} container {} keeps crashing on the hardened image ({}); last lines: {logs}",
            t.pod, t.container, t.detail
        );
        self.verification_failed(Reason::CrashLooping, message, Some(t))
    }

    async fn not_ready(&mut self, t: Trouble) -> Error {
        let probe = workload::probe_failure(&self.ctx.client, &self.namespace(), &t.pod)
            .await
            .unwrap_or_else(|| "kubelet recorded no probe failure".into());
        let logs = self.logs(&t, false).await;
        let message = format!(
            "pod {} container {} did not become ready on the hardened image within {}: {probe}; last lines: {logs}",
            t.pod,
            t.container,
            self.workflow.spec.verify.timeout.as_str()
        );
        self.verification_failed(Reason::ReadinessFailed, message, Some(t))
    }

    /// Records what failed in `status.verification` and returns the error that fails the
    /// workflow (and restores the original).
    fn verification_failed(
        &mut self,
        reason: Reason,
        message: String,
        trouble: Option<Trouble>,
    ) -> Error {
        let (pod, container) = trouble.map(|t| (t.pod, t.container)).unzip();
        self.status.verification = Some(Verification {
            result: VerificationResult::Failed,
            reason: reason.as_str().into(),
            message: message.clone(),
            pod,
            container,
        });
        Error::Failed { reason, message }
    }

    async fn logs(&self, t: &Trouble, previous: bool) -> String {
        workload::logs(
            &self.ctx.client,
            &self.namespace(),
            &t.pod,
            &t.container,
            previous,
        )
        .await
    }
}

/// The hardened images, for messages: one, or each after its container's name.
fn listed(images: &Images) -> String {
    match images.values().collect::<BTreeSet<_>>().len() {
        1 => images.values().next().cloned().unwrap_or_default(),
        _ => images
            .iter()
            .map(|(container, image)| format!("{container}: {image}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}
