//! Instrumenting: push the instrumented image, then apply the instrumented template, then wait
//! until its pods are ready (`phase::rollout`, lenient: the original app may restart while a
//! dependency comes up) and record them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Container;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::join;
use super::step::{SOON, Step};
use crate::api::{ConditionType, ContainerResult, Phase, ReportsStatus, Trigger};
use crate::controller::error::{Error, Result};
use crate::controller::phase::{self, POLL, Rollout, RolloutWatch};
use crate::controller::reason::Reason;
use crate::controller::template::{self, Images, Instrumentation, Original};
use crate::controller::workload::Workload;
use crate::controller::{engine, workload};

impl Step<'_> {
    pub(super) async fn instrumenting(&mut self) -> Result<Action> {
        let d = self.workload().await?;
        let containers: Vec<Container> = self.containers(&d)?.into_iter().cloned().collect();
        if self.status.instrumented_image.is_none() {
            return self.push_instrumented(&d, &containers).await;
        }
        let images = self.status_images(
            &d,
            |c| c.instrumented_image.as_ref(),
            self.status.instrumented_image.as_ref(),
        )?;
        if self.holds(&d)?.is_none() {
            return self.apply_instrumented(&d, &containers, &images).await;
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
            images: &images,
            out_of_time: self.since_phase_start() > limit,
            crash_loops_fail: false,
        };
        match phase::rollout(&d, &pods, watch) {
            Rollout::Ready(running) => self.observe(&d, &running),
            Rollout::Waiting | Rollout::CrashLooping(_) => {
                self.roll_on_delete(&d, &images).await?;
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

    /// The instrumented pods are ready: they (each hardened container of them) are the ones
    /// expected to report.
    fn observe(&mut self, d: &Workload, running: &BTreeSet<String>) -> Result<Action> {
        let message = format!(
            "{} pod(s) run the instrumented image: {}",
            running.len(),
            join(running)
        );
        let expected = self.slots(d, running)?;
        self.status.reports = Some(ReportsStatus::new(&expected, &BTreeSet::new()));
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
        Ok(Action::requeue(SOON))
    }

    /// Pushes the instrumented image of each distinct source the containers run (once per
    /// source: two containers of one image share it); instrument is deterministic, so a push
    /// repeated after a crash gives the same digests.
    async fn push_instrumented(
        &mut self,
        d: &Workload,
        containers: &[Container],
    ) -> Result<Action> {
        let store = self.store(d).await?;
        let mut results: Vec<ContainerResult> = Vec::new();
        let mut pushed = Vec::new();
        for (i, container) in containers.iter().enumerate() {
            // The first container's source as first named, not its image: a continuous run
            // observing again finds the Workload on the promoted hardened image.
            let reference = match i {
                0 => self.source_reference(d)?,
                _ => container.image.clone().unwrap_or_default(),
            };
            let shared = results
                .iter()
                .zip(containers)
                .find(|(_, c)| c.image == container.image)
                .map(|(r, _)| r.clone());
            let result = match shared {
                Some(done) => done,
                None => {
                    let dest = engine::destinations(self.workflow, &reference)?;
                    let inst = engine::instrument(&store, &dest, &self.ctx.sensor).await?;
                    pushed.push(inst.pushed.to_string());
                    if i == 0 && self.status.source_reference.is_none() {
                        self.status.source_reference = Some(dest.source.to_string());
                        self.status.trigger = Some(Trigger::Initial);
                        self.status.run_generation = self.workflow.metadata.generation;
                    }
                    ContainerResult {
                        source_image: Some(inst.source.to_string()),
                        instrumented_image: Some(inst.image.to_string()),
                        ..ContainerResult::default()
                    }
                }
            };
            results.push(ContainerResult {
                name: container.name.clone(),
                ..result
            });
        }
        let first = results.first().cloned().unwrap_or_default();
        self.status.source_image = first.source_image;
        self.status.instrumented_image = first.instrumented_image;
        if self.per_container() {
            self.status.containers = results;
        }
        let message = format!("pushed the instrumented image {}", pushed.join(", "));
        let condition = (ConditionType::Instrumented, false, Reason::ImagePushed);
        self.progress(condition, Reason::ImagePushed, message).await;
        Ok(Action::requeue(SOON))
    }

    async fn apply_instrumented(
        &mut self,
        d: &Workload,
        containers: &[Container],
        instrumented_images: &Images,
    ) -> Result<Action> {
        let (namespace, name) = (self.namespace(), self.workflow.name_any());
        let uid = self.workflow.metadata.uid.as_deref().unwrap_or_default();
        let report_token = self.ctx.report_key.token(&namespace, &name, uid);
        let report_url = self.ctx.report_url(&namespace, &name);
        let sensor_mode = self.workflow.spec.observe.sensor_mode;
        let chosen: Vec<&Container> = containers.iter().collect();
        let saved = Original::of(self.workflow, d, &chosen);
        let instrumentation = Instrumentation {
            instrumented_images,
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
