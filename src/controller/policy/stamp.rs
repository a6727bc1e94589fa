//! Pure: the HardeningWorkflow a policy makes for one workload, and the hash that tells a
//! template change.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Policy;
use super::plan::Candidate;
use crate::api::names::{MANAGED_BY, MANAGED_BY_LABEL, label_value};
use crate::api::policy::{POLICY_LABEL, TEMPLATE_HASH_ANNOTATION};

/// A hash of everything of the policy that goes into each workflow: the template, the
/// containers and the GitOps choice. The first 16 hex digits: a change, not a secret.
pub fn template_hash(policy: &Policy) -> String {
    let spec = &policy.spec;
    let text = json!([spec.template, spec.containers, spec.git_ops]).to_string();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The server-side apply configuration of the workflow for `c`: the template's spec with the
/// workload as target, the template's labels and annotations, the policy's label, the
/// template hash, and the policy as controlling owner (the garbage collector deletes the
/// workflows of a deleted policy; each workflow's finalizer restores its workload first).
pub fn workflow(policy: &Policy, c: &Candidate, name: &str, hash: &str) -> Value {
    let spec = &policy.spec;
    let mut target = json!({"kind": c.kind.as_str(), "name": c.name});
    if let Some(containers) = &spec.containers {
        target["containers"] = json!(containers);
    }
    if spec.git_ops != crate::api::GitOps::Wait {
        target["gitOps"] = json!(spec.git_ops);
    }
    let mut workflow_spec = serde_json::to_value(&spec.template.spec).unwrap_or(json!({}));
    workflow_spec["target"] = target;
    let mut labels = spec.template.metadata.labels.clone();
    labels.insert(POLICY_LABEL.into(), label_value(&policy.id()));
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = spec.template.metadata.annotations.clone();
    annotations.insert(TEMPLATE_HASH_ANNOTATION.into(), hash.into());
    json!({
        "apiVersion": "whittle.dev/v1alpha1",
        "kind": "HardeningWorkflow",
        "metadata": {
            "name": name,
            "namespace": c.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "whittle.dev/v1alpha1",
                "kind": policy.kind,
                "name": policy.name,
                "uid": policy.uid,
                "controller": true,
            }],
        },
        "spec": workflow_spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetKind;
    use crate::api::policy::HardeningPolicySpec;

    fn policy(spec: Value) -> Policy {
        Policy {
            kind: "HardeningPolicy",
            namespace: Some("shop".into()),
            name: "web-tier".into(),
            uid: "u-1".into(),
            generation: Some(1),
            spec: serde_json::from_value::<HardeningPolicySpec>(spec).unwrap(),
            namespace_selector: None,
            status: None,
        }
    }

    #[test]
    fn the_workflow_is_the_template_with_the_workload_as_target_owned_by_the_policy() {
        let p = policy(
            json!({"mode": "Harden", "containers": ["*"], "gitOps": "Proceed",
            "template": {"metadata": {"labels": {"team": "shop"}},
                         "spec": {"observe": {"duration": "10m"}, "promote": true}}}),
        );
        let c = Candidate {
            namespace: "shop".into(),
            kind: TargetKind::StatefulSet,
            name: "db".into(),
            skip: false,
            container: None,
            image: None,
        };
        let w = workflow(&p, &c, "web-tier-statefulset-db", "abc");
        assert_eq!(
            w["spec"]["target"],
            json!({"kind": "StatefulSet", "name": "db", "containers": ["*"], "gitOps": "Proceed"})
        );
        assert_eq!(w["spec"]["observe"]["duration"], "10m");
        assert_eq!(w["spec"]["promote"], true);
        assert_eq!(w["metadata"]["labels"]["team"], "shop");
        assert_eq!(w["metadata"]["labels"][POLICY_LABEL], "shop.web-tier");
        assert_eq!(
            w["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION],
            "abc"
        );
        assert_eq!(w["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(w["metadata"]["ownerReferences"][0]["controller"], true);
        // It is a valid workflow spec.
        let spec: crate::api::HardeningWorkflowSpec =
            serde_json::from_value(w["spec"].clone()).unwrap();
        assert_eq!(spec.target.name, "db");
    }

    #[test]
    fn the_hash_changes_with_the_template_and_nothing_else() {
        let a = policy(json!({"mode": "Harden", "template": {"spec": {"promote": true}}}));
        let same = policy(json!({"mode": "Harden", "maxConcurrent": 7,
            "template": {"spec": {"promote": true}}}));
        let other = policy(json!({"mode": "Harden", "template": {"spec": {"promote": false}}}));
        assert_eq!(
            template_hash(&a),
            template_hash(&same),
            "maxConcurrent is not the template"
        );
        assert_ne!(template_hash(&a), template_hash(&other));
        assert_eq!(template_hash(&a).len(), 16);
    }
}
