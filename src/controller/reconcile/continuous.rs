//! Succeeded: a finished workflow runs no more tests; with `spec.continuous` it asks the
//! registry every `checkInterval` (one manifest HEAD) whether the source reference moved, and
//! starts a run from the stored profile when it did, or when the spec changed
//! (`phase::refresh` decides when); when it did not, the hardened image's packages are matched
//! again against the vulnerability database (`rematch.rs`). A check that fails is reported and tried again next
//! interval: it never fails a workflow that succeeded.

use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::release;
use super::step::{SOON, Step};
use crate::api::{ConditionType, Phase, Trigger};
use crate::controller::error::Result;
use crate::controller::exercise;
use crate::controller::phase::{self, Refresh, Schedule};
use crate::controller::reason::Reason;
use crate::image::distribution::store::Location;

/// What a check found.
enum Found {
    /// The source still names the hardened one's digest; the registry's digest for it.
    Same(Option<String>),
    /// A new digest: the pinned image and the registry's digest for the reference.
    New(String, Option<String>),
}

impl Step<'_> {
    pub(super) async fn succeeded(&mut self) -> Result<Action> {
        release(self.ctx, self.workflow).await?;
        let last = self
            .status
            .checked_at
            .as_ref()
            .or(self.status.completed_at.as_ref());
        let since_last = last
            .and_then(|t| Duration::try_from(self.now.0.duration_since(t.0)).ok())
            .unwrap_or_default();
        let uid = self.workflow.metadata.uid.as_deref().unwrap_or_default();
        let schedule = Schedule {
            continuous: self.workflow.spec.continuous.as_ref(),
            generation: self.workflow.metadata.generation,
            run_generation: self.status.run_generation,
            since_last,
            spread: phase::spread_seed(uid),
        };
        match phase::refresh(schedule) {
            Refresh::Off => Ok(Action::await_change()),
            Refresh::CheckIn(after) => Ok(Action::requeue(after)),
            Refresh::CheckNow => self.check(Trigger::NewDigest).await,
            Refresh::SpecChanged => self.check(Trigger::SpecChange).await,
        }
    }

    /// Asks the registry for the source's digest; starts a run when it moved (or, for a spec
    /// change, in any case).
    async fn check(&mut self, trigger: Trigger) -> Result<Action> {
        let Some(reference) = self.status.source_reference.clone() else {
            let message = "status.sourceReference is missing: this workflow succeeded before continuous hardening existed; recreate it to keep its result current";
            self.condition(
                ConditionType::UpToDate,
                false,
                Reason::SourceUnknown,
                message,
            );
            return Ok(Action::await_change());
        };
        self.status.checked_at = Some(self.now.clone());
        let found = match self.look(&reference).await {
            Ok(found) => found,
            Err(e) => {
                let note = format!("could not ask the registry for {reference}: {e}");
                self.condition(ConditionType::UpToDate, false, Reason::CheckFailed, &note);
                let kind = EventType::Warning;
                self.ctx
                    .event(self.workflow, kind, Reason::CheckFailed, &note)
                    .await;
                return Ok(Action::requeue(SOON));
            }
        };
        match (found, trigger) {
            (Found::Same(digest), Trigger::NewDigest) => {
                if digest.is_some() {
                    self.status.source_digest = digest;
                }
                if !self.rematch(&reference).await {
                    let current = format!("{reference} still names {}", self.source_text());
                    self.condition(ConditionType::UpToDate, true, Reason::Current, &current);
                }
                Ok(Action::requeue(SOON))
            }
            (Found::Same(digest), _) => {
                let pinned = self.status.source_image.clone().unwrap_or_default();
                self.start(trigger, pinned, digest, &reference).await
            }
            // A digest that already failed is not tried again at every check: a rebuild (a
            // new digest) or a spec change is what can fix it.
            (Found::New(pinned, _), Trigger::NewDigest) if self.failed_before(&pinned) => {
                Ok(Action::requeue(SOON))
            }
            (Found::New(pinned, digest), _) => {
                let trigger = match trigger {
                    Trigger::NewDigest if self.rebuild_needed() => Trigger::Vulnerabilities,
                    other => other,
                };
                self.start(trigger, pinned, digest, &reference).await
            }
        }
    }

    /// The hardened image keeps a fixable vulnerability that asked for a rebuild of the source.
    fn rebuild_needed(&self) -> bool {
        self.status
            .condition(ConditionType::UpToDate)
            .is_some_and(|c| c.status == "False" && c.reason == Reason::RebuildNeeded.as_str())
    }

    /// The source's digest now: one HEAD when the registry's digest is already known; a GET
    /// (which pins the platform's manifest) only when it differs or is unknown.
    async fn look(&self, reference: &str) -> Result<Found> {
        let d = self.workload().await?;
        let store = self.store(&d).await?;
        let location = Location::parse(reference)?;
        let head = store.head_digest(&location).await?;
        if head.is_some() && head == self.status.source_digest {
            return Ok(Found::Same(head));
        }
        let image = store.resolve(&location).await?;
        let pinned = image.pinned.to_string();
        if Some(&pinned) == self.status.source_image.as_ref() {
            return Ok(Found::Same(head));
        }
        Ok(Found::New(pinned, head))
    }

    /// A new run: hardened from the stored profile (no instrumentation, no observation), then
    /// verified, signed and promoted as the first run was.
    async fn start(
        &mut self,
        trigger: Trigger,
        pinned: String,
        digest: Option<String>,
        reference: &str,
    ) -> Result<Action> {
        exercise::delete_all(&self.ctx.client, self.workflow).await?;
        let generation = self.workflow.metadata.generation;
        self.status
            .start_run(trigger, pinned.clone(), digest, generation, &self.now);
        let (event, why) = match trigger {
            Trigger::SpecChange => (Reason::SpecChanged, "the spec changed".to_string()),
            Trigger::Vulnerabilities => (
                Reason::NewDigest,
                format!(
                    "{reference} names a new digest, which may fix what the hardened image keeps"
                ),
            ),
            _ => (Reason::NewDigest, format!("{reference} names a new digest")),
        };
        let message = format!("{why}: hardening {pinned} from the stored profile");
        (self.ctx)
            .event(self.workflow, EventType::Normal, event, &message)
            .await;
        self.enter(Phase::Hardening, message);
        Ok(Action::requeue(SOON))
    }

    fn failed_before(&self, pinned: &str) -> bool {
        self.status
            .history
            .iter()
            .any(|r| r.verdict == Phase::Failed && r.source_image.as_deref() == Some(pinned))
    }

    fn source_text(&self) -> String {
        self.status.source_image.clone().unwrap_or_default()
    }
}
