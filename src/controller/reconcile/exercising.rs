//! The exercise runs of a workflow, as steps see them: the Job is made once, against the
//! target's Service, and read back as running, passed or failed (with its last log lines).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::step::Step;
use crate::api::Exercise as ExerciseSpec;
use crate::controller::error::{Error, Result};
use crate::controller::exercise::{self, JobState, Run};
use crate::controller::phase::Exercise;
use crate::controller::reason::Reason;
use crate::controller::workload;
use crate::controller::workload::Workload;

impl Step<'_> {
    /// The `run` of the exercise against `pods`: its Job is created once the Service that
    /// selects the target's pods routes to them alone (WHITTLE_TARGET set to its address),
    /// and read back every time after.
    pub(super) async fn exercise(
        &self,
        run: Run,
        d: &Workload,
        pods: &BTreeSet<String>,
    ) -> Result<Exercise> {
        let Some(spec) = &self.workflow.spec.exercise else {
            return Err(Error::Failed {
                reason: Reason::NoExercise,
                message: "spec.exercise is not set".into(),
            });
        };
        let job = match exercise::get(&self.ctx.client, self.workflow, run).await? {
            // The last run's Job, deleted when this run started, is not gone yet.
            Some(job) if job.metadata.deletion_timestamp.is_some() => return Ok(Exercise::Running),
            Some(job) => job,
            None => match self.start_exercise(spec, run, d, pods).await? {
                Ok(job) => job,
                Err(service) => return Ok(Exercise::Starting { service }),
            },
        };
        Ok(match exercise::state(&job) {
            JobState::Running => Exercise::Running,
            JobState::Succeeded { at } => {
                let since = at
                    .and_then(|t| Duration::try_from(self.now.0.duration_since(t.0)).ok())
                    .unwrap_or_default();
                Exercise::Passed { since }
            }
            JobState::Failed { reason, message } => {
                let (namespace, name) = (self.namespace(), job.name_any());
                let logs = exercise::failure_logs(&self.ctx.client, &namespace, &name).await;
                Exercise::Failed(format!("Job {name} failed ({reason}: {message}); {logs}"))
            }
        })
    }

    /// Creates the run's Job once the Service routes to `pods` alone; otherwise the Service's
    /// name, to wait for.
    async fn start_exercise(
        &self,
        spec: &ExerciseSpec,
        run: Run,
        d: &Workload,
        pods: &BTreeSet<String>,
    ) -> Result<std::result::Result<Job, String>> {
        let client = &self.ctx.client;
        let services = workload::services(client, &self.namespace()).await?;
        let labels = d
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let (service, target) =
            exercise::target_address(&services, spec.service.as_deref(), &labels).map_err(
                |message| Error::Failed {
                    reason: Reason::ServiceNotFound,
                    message,
                },
            )?;
        let slices = exercise::endpoint_slices(client, &self.namespace(), &service).await?;
        if !exercise::routes_only_to(&slices, pods, &self.now) {
            return Ok(Err(service));
        }
        let wanted = exercise::job(self.workflow, spec, run, &target);
        let job = exercise::ensure(client, self.workflow, run, wanted).await?;
        let against = match run {
            Run::Observe => "the instrumented original",
            Run::Verify => "the hardened image",
        };
        let note = format!(
            "started exercise Job {} against {target} ({against})",
            job.name_any()
        );
        let (kind, reason) = (EventType::Normal, Reason::ExerciseStarted);
        self.ctx.event(self.workflow, kind, reason, &note).await;
        Ok(Ok(job))
    }
}
