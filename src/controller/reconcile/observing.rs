//! Observing: the instrumented pods run (and the exercise Job against them) until
//! `phase::observation` says observation is over; pods that join meanwhile are expected to
//! report too. Then the original template comes back and collection begins.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::step::{SOON, Step};
use super::{join, restore};
use crate::api::{ConditionType, Phase, ReportsStatus};
use crate::controller::error::{Error, Result};
use crate::controller::exercise::Run;
use crate::controller::phase::{self, Observation};
use crate::controller::reason::Reason;
use crate::controller::workload;
use crate::controller::workload::Workload;

impl Step<'_> {
    pub(super) async fn observing(&mut self) -> Result<Action> {
        let d = self.workload().await?;
        let running = self.expect_running(&d).await?;
        let exercise = match &self.workflow.spec.exercise {
            Some(_) => Some(self.exercise(Run::Observe, &d, &running).await?),
            None => None,
        };
        let since = self.since_phase_start();
        match phase::observation(self.workflow, exercise.as_ref(), since, &running) {
            Observation::Wait(after) => Ok(Action::requeue(after)),
            Observation::Fail { reason, message } => Err(Error::Failed { reason, message }),
            Observation::End => {
                restore(self.ctx, self.workflow, &d).await?;
                let message = format!(
                    "restored the original pod template; waiting for the reports of {}",
                    join(&self.expected())
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
        }
    }

    /// The pods running the instrumented image now, added to those expected to report.
    async fn expect_running(&mut self, d: &Workload) -> Result<BTreeSet<String>> {
        let images = self.status_images(
            d,
            |c| c.instrumented_image.as_ref(),
            self.status.instrumented_image.as_ref(),
        )?;
        if images.is_empty() {
            return Ok(BTreeSet::new());
        }
        let pods = workload::instrumented_pods(
            &self.ctx.client,
            &self.namespace(),
            &self.workflow.name_any(),
        )
        .await?;
        let running = phase::pods_running(&pods, &images);
        let mut expected = self.expected();
        expected.extend(self.slots(d, &running)?);
        self.status.reports = Some(ReportsStatus::new(&expected, &BTreeSet::new()));
        Ok(running)
    }
}
