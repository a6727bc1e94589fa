//! Verifying: the hardened image is trusted only once it has run. One step per reconcile, each
//! recognisable after a restart: roll the Deployment to the hardened image (held again, the
//! original saved), wait for the rollout within `verify.timeout` (readiness probes included,
//! a crash loop fails at once), run the exercise Job against it, record the verdict, then
//! promote or restore. Any failure restores the original (through `fail`).

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::exercising::Outcome;
use super::{POLL, ROUTING, SOON, Step, restore};
use crate::api::{ConditionType, Phase, Verification, VerificationResult};
use crate::controller::deployment;
use crate::controller::error::{Error, Result};
use crate::controller::exercise::Run;
use crate::controller::phase::{self, Trouble};
use crate::controller::reason::Reason;
use crate::controller::template::{self, Original};

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
        let d = self.deployment().await?;
        let container = self.container(&d)?.clone();
        if self
            .status
            .verification
            .as_ref()
            .is_some_and(|v| v.result == VerificationResult::Passed)
        {
            return self.finish_verified(&d, &hardened).await;
        }
        if self.holds(&d)?.is_none() {
            let saved = Original::of(self.workflow, &d, &container);
            let config = template::hardened(&d.name_any(), &saved, &hardened);
            deployment::apply(&self.ctx.client, &self.namespace(), &d.name_any(), &config).await?;
            let message = format!(
                "Deployment {}/{} runs the hardened image {hardened}; waiting for its pods to become ready",
                self.namespace(),
                self.target()
            );
            self.condition(ConditionType::Verified, false, Reason::RollingOut, &message);
            self.status.message = Some(message.clone());
            self.ctx
                .event(
                    self.workflow,
                    EventType::Normal,
                    Reason::RolledOutHardened,
                    &message,
                )
                .await;
            return Ok(Action::requeue(POLL));
        }

        let limit = &self.workflow.spec.verify.timeout;
        let out_of_time = self.since_phase_start() > limit.get().unwrap_or_default();
        let pods = deployment::instrumented_pods(
            &self.ctx.client,
            &self.namespace(),
            &self.workflow.name_any(),
        )
        .await?;
        if let Some(t) = phase::crash_looping(&pods, &container.name, &hardened) {
            let logs = self.logs(&t, true).await;
            let message = format!(
                "pod {} container {} keeps crashing on the hardened image ({}); last lines: {logs}",
                t.pod, t.container, t.detail
            );
            return Err(self.verification_failed(Reason::CrashLooping, message, Some(t)));
        }
        let running = phase::pods_running(&pods, &container.name, &hardened);
        let rolled_out = phase::rollout_complete(&d) && !running.is_empty();
        if !rolled_out {
            if !out_of_time {
                return Ok(Action::requeue(POLL));
            }
            return Err(match phase::not_ready(&pods, &container.name, &hardened) {
                Some(t) => {
                    let probe =
                        deployment::probe_failure(&self.ctx.client, &self.namespace(), &t.pod)
                            .await
                            .unwrap_or_else(|| "kubelet recorded no probe failure".into());
                    let logs = self.logs(&t, false).await;
                    let message = format!(
                        "pod {} container {} did not become ready on the hardened image within {}: {probe}; last lines: {logs}",
                        t.pod,
                        t.container,
                        limit.as_str()
                    );
                    self.verification_failed(Reason::ReadinessFailed, message, Some(t))
                }
                None => {
                    let why = phase::pod_trouble(&pods)
                        .unwrap_or_else(|| "no pod of the hardened image came up".into());
                    let message = format!(
                        "the hardened image did not roll out within {}: {why}",
                        limit.as_str()
                    );
                    self.verification_failed(Reason::RolloutFailed, message, None)
                }
            });
        }

        let passed = match &self.workflow.spec.exercise {
            None => "the hardened pods rolled out and passed their readiness probes".to_string(),
            Some(_) => match self.exercise(Run::Verify, &d, &running).await? {
                Outcome::Starting { .. } | Outcome::Running if out_of_time => {
                    let message = format!(
                        "the exercise did not finish against the hardened image within {}",
                        limit.as_str()
                    );
                    return Err(self.verification_failed(Reason::Timeout, message, None));
                }
                Outcome::Starting { .. } => return Ok(Action::requeue(ROUTING)),
                Outcome::Running => return Ok(Action::requeue(POLL * 6)),
                Outcome::Failed(why) => {
                    let message = format!("the exercise failed against the hardened image: {why}");
                    return Err(self.verification_failed(Reason::ExerciseFailed, message, None));
                }
                Outcome::Passed { .. } => {
                    "the hardened pods became ready and the exercise passed against them".into()
                }
            },
        };
        self.status.verification = Some(Verification {
            result: VerificationResult::Passed,
            reason: Reason::Passed.as_str().into(),
            message: passed.clone(),
            pod: None,
            container: None,
        });
        self.condition(ConditionType::Verified, true, Reason::Passed, &passed);
        self.ctx
            .metrics
            .verifications
            .with_label_values(&["passed"])
            .inc();
        self.ctx
            .event(self.workflow, EventType::Normal, Reason::Verified, &passed)
            .await;
        Ok(Action::requeue(SOON))
    }

    /// Verification passed (recorded in status): keep the hardened image (`promote`) or give
    /// the Deployment its original back, then Succeeded.
    async fn finish_verified(
        &mut self,
        d: &k8s_openapi::api::apps::v1::Deployment,
        hardened: &str,
    ) -> Result<Action> {
        let (namespace, name) = (self.namespace(), d.name_any());
        let message = if self.workflow.spec.promote {
            if let Some(saved) = self.holds(d)? {
                let config = template::promoted(&name, &saved, hardened);
                deployment::apply(&self.ctx.client, &namespace, &name, &config).await?;
            }
            format!(
                "verified and promoted: Deployment {namespace}/{name} runs the hardened image {hardened}"
            )
        } else {
            restore(self.ctx, self.workflow, d).await?;
            format!(
                "verified {hardened}; Deployment {namespace}/{name} runs its original image again (spec.promote keeps the hardened one)"
            )
        };
        let store = self.store(d).await?;
        self.sign(&store).await?;
        self.enter(Phase::Succeeded, message);
        Ok(Action::await_change())
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
        deployment::logs(
            &self.ctx.client,
            &self.namespace(),
            &t.pod,
            &t.container,
            previous,
        )
        .await
    }
}
