//! Collecting: the stopping pods' sensors report; `phase::collect` says when to harden (all
//! reported, or `collectTimeout` passed with at least `minReports`) and when to give up.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::step::{SOON, Step};
use crate::api::{Phase, ReportsStatus};
use crate::controller::error::{Error, Result};
use crate::controller::phase::{self, Collect};
use crate::controller::reason::Reason;
use crate::reports;

impl Step<'_> {
    pub(super) async fn collecting(&mut self) -> Result<Action> {
        let per_container = self.per_container();
        let reported = reports::reported(&self.ctx.client, self.workflow, per_container).await?;
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
                    let kind = EventType::Warning;
                    let reason = Reason::ReportsMissing;
                    self.ctx.event(self.workflow, kind, reason, &note).await;
                }
                let message = format!("hardening with {} report(s)", reported.len());
                self.enter(Phase::Hardening, message);
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
}
