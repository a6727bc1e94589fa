//! Pending: start once the target is there and free (`phase::pending` decides); until then
//! wait, changing nothing.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::step::{SOON, Step};
use crate::api::{ConditionType, Phase};
use crate::controller::error::Result;
use crate::controller::phase::{self, Pending};
use crate::controller::reason::Reason;
use crate::controller::workload;

impl Step<'_> {
    pub(super) async fn pending(&mut self) -> Result<Action> {
        // Before anything is changed: a database the operator does not have would only fail
        // the workflow after observation.
        if let Some(db) = &self.workflow.spec.vulnerabilities.db {
            self.ctx.vuln_dbs.check(db)?;
        }
        let d = workload::get(
            &self.ctx.client,
            &self.namespace(),
            self.kind(),
            self.target(),
        )
        .await?;
        match phase::pending(self.workflow, d.as_ref()) {
            Pending::Wait { reason, message } => {
                // Only this wait needs a person: say it once, where `kubectl describe` and
                // event alerting look.
                let was = self
                    .status
                    .condition(ConditionType::Ready)
                    .map(|c| &c.reason);
                if reason == Reason::GitOpsManaged && was.is_none_or(|r| r != reason.as_str()) {
                    self.ctx
                        .event(self.workflow, EventType::Warning, reason, &message)
                        .await;
                }
                Ok(self.wait(reason, message))
            }
            Pending::Start => {
                self.condition(
                    ConditionType::Instrumented,
                    false,
                    Reason::Instrumenting,
                    "pushing the instrumented image",
                );
                let message = format!("instrumenting the image of {}", self.what());
                self.enter(Phase::Instrumenting, message);
                Ok(Action::requeue(SOON))
            }
        }
    }
}
