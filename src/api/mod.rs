//! The `HardeningWorkflow` resource (`whittle.dev/v1alpha1`): its spec, status, the CRD derived
//! from them and its Markdown reference, and the names the controller and the report server
//! share.

pub mod crd;
pub mod duration;
pub mod names;
pub mod pod;
pub mod policy;
pub mod reference;
pub mod spec;
pub mod status;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

pub use crd::{crd, crd_yaml};
pub use duration::DurationString;
pub use spec::{
    ALL_CONTAINERS, Compression, Continuous, Exercise, FailOn, GateSeverity, GitOps, Harden,
    HardeningWorkflow, HardeningWorkflowSpec, Observe, Pack, Registry, SensorMode, Sign, Target,
    TargetKind, Verify, Vulnerabilities,
};
pub use status::{
    ConditionStatus, ConditionType, ContainerResult, GoodResult, HISTORY_LIMIT, HardenResult,
    HardeningWorkflowStatus, KeptVulnerability, PackResult, Phase, ReportMaterial, ReportsStatus,
    Run, SeverityCounts, Trigger, Verification, VerificationResult, VulnerabilitiesStatus,
    VulnerabilitySeverity,
};

impl HardeningWorkflow {
    /// The owner reference for what whittle makes for this workflow (token Secret, report
    /// ConfigMaps): garbage-collected with it. `blockOwnerDeletion` is false so that deleting a
    /// workflow never waits on its reports, and so that the creator needs no permission on the
    /// workflow's finalizers. None for an object that has not been stored (no uid yet).
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        let mut owner = self.controller_owner_ref(&())?;
        owner.block_owner_deletion = Some(false);
        Some(owner)
    }

    /// True when `owner` is this workflow's controller reference (same uid).
    pub fn owns(&self, owners: Option<&[OwnerReference]>) -> bool {
        let uid = self.metadata.uid.as_deref();
        uid.is_some()
            && owners.is_some_and(|owners| {
                owners
                    .iter()
                    .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reference_needs_a_stored_object() {
        let mut w = HardeningWorkflow::new(
            "web",
            serde_json::from_value(serde_json::json!({"target": {"name": "web"}})).unwrap(),
        );
        assert!(w.owner_reference().is_none());
        w.metadata.uid = Some("u-1".into());
        let owner = w.owner_reference().unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("HardeningWorkflow", "web", "u-1")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(false))
        );
        assert!(w.owns(Some(std::slice::from_ref(&owner))));
        let mut other = owner;
        other.uid = "u-2".into();
        assert!(!w.owns(Some(&[other])));
        assert!(!w.owns(None));
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: HardeningWorkflowSpec =
            serde_json::from_value(serde_json::json!({"target": {"name": "web"}})).unwrap();
        assert_eq!(spec.target.kind, TargetKind::Deployment);
        assert_eq!(spec.observe.duration, None);
        assert_eq!(spec.observe.duration_after(false).as_secs(), 600);
        assert_eq!(spec.observe.duration_after(true).as_secs(), 0);
        assert_eq!(spec.observe.min_reports, 1);
        assert_eq!(spec.observe.collect_timeout.as_str(), "5m");
        assert_eq!(spec.observe.sensor_mode, SensorMode::Auto);
        assert_eq!(spec.harden.timeout.as_str(), "15m");
        assert!(spec.verify.enabled && !spec.promote);
        assert_eq!(spec.verify.timeout.get().unwrap().as_secs(), 300);
        assert!(spec.exercise.is_none() && spec.image.is_none());
    }
}
