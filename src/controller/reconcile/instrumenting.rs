//! Instrumenting: push the instrumented image, then apply the instrumented template, then wait
//! until its pods are ready (`phase::rollout`, lenient: the original app may restart while a
//! dependency comes up) and record them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Container;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::join;
use super::step::{SOON, Step};
use crate::api::{ConditionType, Phase, ReportsStatus, Trigger};
use crate::controller::error::{Error, Result};
use crate::controller::phase::{self, POLL, Rollout, RolloutWatch};
use crate::controller::reason::Reason;
use crate::controller::template::{self, Instrumentation, Original};
use crate::controller::workload::Workload;
use crate::controller::{engine, workload};

impl Step<'_> {
    pub(super) async fn instrumenting(&mut self) -> Result<Action> {
        let d = self.workload().await?;
        let container = self.container(&d)?.clone();
        let Some(image) = self.status.instrumented_image.clone() else {
            return self.push_instrumented(&d).await;
        };
        if self.holds(&d)?.is_none() {
            return self.apply_instrumented(&d, &container, &image).await;
        }
        let pods = workload::instrumented_pods(
            &self.ctx.client,
            &self.namespace(),
            &self.workflow.name_any(),
        )
        .await?;
        let limit = self
            .workflow
            .spec
            .verify
            .timeout
            .get()
            .unwrap_or(std::time::Duration::MAX);
        let watch = RolloutWatch {
            container: &container.name,
            image: &image,
            out_of_time: self.since_phase_start() > limit,
            crash_loops_fail: false,
        };
        match phase::rollout(&d, &pods, watch) {
            Rollout::Ready(running) => Ok(self.observe(&running)),
            Rollout::Waiting | Rollout::CrashLooping(_) => {
                self.roll_on_delete(&d, &container.name, &image).await?;
                Ok(Action::requeue(POLL))
            }
            Rollout::NotReady { why, .. } | Rollout::Stuck { why } => Err(Error::Failed {
                reason: Reason::RolloutFailed,
                message: format!(
                    "the instrumented pods did not become ready within {}: {}",
                    self.workflow.spec.verify.timeout.as_str(),
                    why.as_deref().unwrap_or("no pod reported a reason")
                ),
            }),
        }
    }

    /// The instrumented pods are ready: they are the ones expected to report.
    fn observe(&mut self, running: &BTreeSet<String>) -> Action {
        let message = format!(
            "{} pod(s) run the instrumented image: {}",
            running.len(),
            join(running)
        );
        self.status.reports = Some(ReportsStatus::new(running, &BTreeSet::new()));
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
        Action::requeue(SOON)
    }

    async fn push_instrumented(&mut self, d: &Workload) -> Result<Action> {
        // The source as first named, not the container's image: a continuous run observing
        // again finds the Workload on the promoted hardened image.
        let reference = self.source_reference(d)?;
        let dest = engine::destinations(self.workflow, &reference)?;
        let store = self.store(d).await?;
        let inst = engine::instrument(&store, &dest, &self.ctx.sensor).await?;
        self.status.source_image = Some(inst.source.to_string());
        if self.status.source_reference.is_none() {
            self.status.source_reference = Some(dest.source.to_string());
            self.status.trigger = Some(Trigger::Initial);
            self.status.run_generation = self.workflow.metadata.generation;
        }
        self.status.instrumented_image = Some(inst.image.to_string());
        let message = format!("pushed the instrumented image {}", inst.pushed);
        let condition = (ConditionType::Instrumented, false, Reason::ImagePushed);
        self.progress(condition, Reason::ImagePushed, message).await;
        Ok(Action::requeue(SOON))
    }

    async fn apply_instrumented(
        &mut self,
        d: &Workload,
        container: &Container,
        instrumented_image: &str,
    ) -> Result<Action> {
        let (namespace, name) = (self.namespace(), self.workflow.name_any());
        let uid = self.workflow.metadata.uid.as_deref().unwrap_or_default();
        let report_token = self.ctx.report_key.token(&namespace, &name, uid);
        let report_url = self.ctx.report_url(&namespace, &name);
        let sensor_mode = self.workflow.spec.observe.sensor_mode;
        let saved = Original::of(self.workflow, d, container);
        let instrumentation = Instrumentation {
            instrumented_image,
            report_url: &report_url,
            report_token: &report_token,
            sensor_mode,
        };
        let config = template::instrumented(d.kind, &d.name_any(), &saved, &instrumentation);
        workload::apply(&self.ctx.client, &namespace, d.kind, &d.name_any(), &config).await?;
        let message = format!(
            "{} runs the instrumented image (sensor mode {}); waiting for its pods",
            self.what(),
            sensor_mode.as_str()
        );
        let condition = (ConditionType::Instrumented, false, Reason::RollingOut);
        self.progress(condition, Reason::Instrumented, message)
            .await;
        Ok(Action::requeue(POLL))
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
}
