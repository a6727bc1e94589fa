//! The exercise runs of a workflow, as steps see them: the Job is made once, against the
//! target's Service, and read back as running, passed or failed (with its last log lines).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::Step;
use crate::controller::deployment;
use crate::controller::error::{Error, Result};
use crate::controller::exercise::{self, JobState, Run};
use crate::controller::reason::Reason;

/// What the run's Job says.
pub(super) enum Outcome {
    /// Not started yet: this Service does not route to the pods under test alone.
    Starting {
        service: String,
    },
    Running,
    /// Succeeded this long ago.
    Passed {
        since: Duration,
    },
    /// Why, with the failing container's last log lines.
    Failed(String),
}

impl Step<'_> {
    /// The `run` of the exercise against `pods`: its Job is created once the Service that
    /// selects the target's pods routes to them alone (WHITTLE_TARGET set to its address),
    /// and read back every time after.
    pub(super) async fn exercise(
        &self,
        run: Run,
        d: &Deployment,
        pods: &BTreeSet<String>,
    ) -> Result<Outcome> {
        let Some(spec) = &self.workflow.spec.exercise else {
            return Err(Error::Failed {
                reason: Reason::NoExercise,
                message: "spec.exercise is not set".into(),
            });
        };
        let client = &self.ctx.client;
        let job = match exercise::get(client, self.workflow, run).await? {
            Some(job) => job,
            None => {
                let services = deployment::services(client, &self.namespace()).await?;
                let labels = d
                    .spec
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
                    return Ok(Outcome::Starting { service });
                }
                let wanted = exercise::job(self.workflow, spec, run, &target);
                let job = exercise::ensure(client, self.workflow, run, wanted).await?;
                let note = format!(
                    "started exercise Job {} against {target} ({})",
                    job.name_any(),
                    match run {
                        Run::Observe => "the instrumented original",
                        Run::Verify => "the hardened image",
                    }
                );
                self.ctx
                    .event(
                        self.workflow,
                        EventType::Normal,
                        Reason::ExerciseStarted,
                        &note,
                    )
                    .await;
                job
            }
        };
        Ok(match exercise::state(&job) {
            JobState::Running => Outcome::Running,
            JobState::Succeeded { at } => {
                let since = at
                    .and_then(|t| Duration::try_from(self.now.0.duration_since(t.0)).ok())
                    .unwrap_or_default();
                Outcome::Passed { since }
            }
            JobState::Failed { reason, message } => {
                let logs = exercise::failure_logs(client, &self.namespace(), &job.name_any()).await;
                Outcome::Failed(format!(
                    "Job {} failed ({reason}: {message}); {logs}",
                    job.name_any()
                ))
            }
        })
    }
}
