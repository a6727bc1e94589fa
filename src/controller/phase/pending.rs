//! Pending: the target must exist, have the container, not be held by another workflow, and
//! not be kept in line by a GitOps tool (unless the user says it was told to leave whittle's
//! fields alone). Until then the workflow waits, nothing is changed, and the spec stays
//! editable.

use kube::ResourceExt;

use crate::api::{GitOps, HardeningWorkflow};
use crate::controller::gitops;
use crate::controller::reason::Reason;
use crate::controller::template::{Original, target_containers};
use crate::controller::workload::{Workload, describe};

/// What the Pending phase does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pending {
    /// Not yet: why, for the `Ready` condition.
    Wait { reason: Reason, message: String },
    /// Instrument the target.
    Start,
}

/// The verdict on the target `d` (None: not found) of `workflow`.
pub fn pending(workflow: &HardeningWorkflow, d: Option<&Workload>) -> Pending {
    let namespace = workflow.namespace().unwrap_or_default();
    let target = &workflow.spec.target.name;
    let what = describe(workflow.spec.target.kind, &namespace, target);
    let wait = |reason, message| Pending::Wait { reason, message };
    let Some(d) = d else {
        let message = format!("{what} does not exist (yet)");
        return wait(Reason::TargetNotFound, message);
    };
    if let Err(message) = target_containers(d, &workflow.spec.target) {
        return wait(Reason::ContainerNotFound, message);
    }
    if let Some(holder) = other_holder(workflow, d) {
        let message =
            format!("{what} is being hardened by workflow {holder}: waiting until it is restored");
        return wait(Reason::TargetBusy, message);
    }
    if workflow.spec.target.git_ops == GitOps::Wait {
        let owners = gitops::owners(d);
        if !owners.is_empty() {
            return wait(Reason::GitOpsManaged, gitops::message(&what, &owners));
        }
    }
    Pending::Start
}

/// The workflow holding the Deployment, when it is not `workflow`.
pub fn other_holder(workflow: &HardeningWorkflow, d: &Workload) -> Option<String> {
    match Original::on(d)? {
        Ok(saved) if !saved.belongs_to(workflow) => Some(saved.workflow),
        Ok(_) => None,
        Err(_) => Some("unknown (the annotation is unreadable)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::template::ORIGINAL_ANNOTATION;
    use serde_json::json;

    fn workflow(container: Option<&str>) -> HardeningWorkflow {
        let mut target = json!({"name": "web"});
        if let Some(c) = container {
            target["container"] = json!(c);
        }
        let mut w = HardeningWorkflow::new(
            "harden-web",
            serde_json::from_value(json!({"target": target})).unwrap(),
        );
        w.metadata.namespace = Some("shop".into());
        w.metadata.uid = Some("uid-1".into());
        w
    }

    fn deployment(containers: &[&str], held_by: Option<&str>) -> Workload {
        let containers: Vec<_> = containers
            .iter()
            .map(|n| json!({"name": n, "image": "r/web:1"}))
            .collect();
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {}, "template": {"spec": {"containers": containers}}}
        }))
        .unwrap();
        let mut d = Workload::from(d);
        if let Some(text) = held_by {
            d.metadata.annotations =
                Some([(ORIGINAL_ANNOTATION.to_string(), text.to_string())].into());
        }
        d
    }

    fn held_by(workflow: &str, uid: &str) -> String {
        json!({"workflow": workflow, "workflowUid": uid, "container": "web", "image": "r/web:1"})
            .to_string()
    }

    fn reason(p: &Pending) -> Option<Reason> {
        match p {
            Pending::Wait { reason, .. } => Some(*reason),
            Pending::Start => None,
        }
    }

    #[test]
    fn a_workflow_starts_only_on_a_present_free_target_with_its_container() {
        let mine = held_by("harden-web", "uid-1");
        let theirs = held_by("other", "uid-2");
        let cases: [(Option<&str>, Option<Workload>, Option<Reason>); 7] = [
            (None, None, Some(Reason::TargetNotFound)),
            (None, Some(deployment(&["web"], None)), None),
            (
                None,
                Some(deployment(&["web", "proxy"], None)),
                Some(Reason::ContainerNotFound),
            ),
            (
                Some("proxy"),
                Some(deployment(&["web", "proxy"], None)),
                None,
            ),
            (
                Some("db"),
                Some(deployment(&["web"], None)),
                Some(Reason::ContainerNotFound),
            ),
            (
                None,
                Some(deployment(&["web"], Some(&theirs))),
                Some(Reason::TargetBusy),
            ),
            (None, Some(deployment(&["web"], Some(&mine))), None),
        ];
        for (container, d, want) in cases {
            let verdict = pending(&workflow(container), d.as_ref());
            assert_eq!(reason(&verdict), want, "{container:?} {verdict:?}");
        }
    }

    #[test]
    fn a_target_argo_cd_keeps_in_line_waits_until_the_user_says_proceed() {
        let mut d = deployment(&["web"], None);
        d.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({
                "manager": "argocd-controller", "operation": "Apply",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}
            }))
            .unwrap(),
        ]);
        let mut w = workflow(None);
        assert_eq!(reason(&pending(&w, Some(&d))), Some(Reason::GitOpsManaged));
        w.spec.target.git_ops = GitOps::Proceed;
        assert_eq!(pending(&w, Some(&d)), Pending::Start);
    }

    #[test]
    fn waiting_messages_name_the_deployment_and_the_holder() {
        let w = workflow(None);
        assert_eq!(
            pending(&w, None),
            Pending::Wait {
                reason: Reason::TargetNotFound,
                message: "Deployment shop/web does not exist (yet)".into()
            }
        );
        let theirs = held_by("other", "uid-2");
        assert_eq!(
            pending(&w, Some(&deployment(&["web"], Some(&theirs)))),
            Pending::Wait {
                reason: Reason::TargetBusy,
                message: "Deployment shop/web is being hardened by workflow other: waiting until it is restored".into()
            }
        );
        let corrupt = deployment(&["web"], Some("{not json"));
        assert_eq!(
            other_holder(&w, &corrupt).as_deref(),
            Some("unknown (the annotation is unreadable)")
        );
    }
}
