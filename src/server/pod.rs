//! Which pod sent a report, as the API server vouches for it. The sensor presents the pod's
//! projected ServiceAccount token (audience `whittle`, made by the kubelet for that pod alone);
//! a TokenReview turns it into the pod's name and uid, and the pod itself must be one of the
//! workflow's instrumented pods. The report's own `identity` is never trusted for this.
//!
//! **I/O**: [`review`] and [`get`]; **pure**: [`bound_pod`] and [`check`], table-tested.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::api::names::{REPORT_AUDIENCE, WORKFLOW_LABEL, label_value};
use crate::api::{HardeningWorkflow, pod};
use crate::reports::Reporter;

/// The extra fields the API server adds to a pod-bound token's user.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// Longest pod token read from a request (a projected token is about 1 KiB).
pub const MAX_POD_TOKEN: usize = 16 << 10;

/// Why a pod token or its pod does not vouch for a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The token itself is no good (401).
    Unauthenticated(String),
    /// A real pod, but not one of this workflow's instrumented pods (403).
    Forbidden(String),
}

/// Asks the API server whose `token` this is (audience `whittle` only).
pub async fn review(client: &Client, token: &str) -> Result<TokenReviewStatus, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![REPORT_AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.unwrap_or_default())
}

pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<Option<Pod>, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// The pod a reviewed token was made for, when it is a pod-bound ServiceAccount token of
/// `namespace` with the `whittle` audience.
pub fn bound_pod(status: &TokenReviewStatus, namespace: &str) -> Result<Reporter, Refusal> {
    let refuse = |why: &str| Refusal::Unauthenticated(format!("the pod token {why}"));
    if status.authenticated != Some(true) {
        let error = status.error.as_deref().unwrap_or("no reason given");
        return Err(refuse(&format!(
            "was not accepted by the API server ({error})"
        )));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == REPORT_AUDIENCE))
    {
        return Err(refuse("is not for the audience whittle"));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| refuse("names no user"))?;
    let username = user.username.as_deref().unwrap_or_default();
    let sa_namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns)
        .ok_or_else(|| refuse("is not a ServiceAccount's"))?;
    if sa_namespace != namespace {
        return Err(Refusal::Forbidden(format!(
            "the pod token belongs to namespace {sa_namespace}, not {namespace}"
        )));
    }
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    match (extra(POD_NAME_EXTRA), extra(POD_UID_EXTRA)) {
        (Some(name), Some(uid)) => Ok(Reporter { name, uid }),
        _ => Err(refuse("is not bound to a pod")),
    }
}

/// Whether `pod` (read by the name the token gave) is the token's pod and one of `workflow`'s
/// instrumented pods: same uid, the workflow's label, and a container on the instrumented image.
pub fn check(
    pod: Option<&Pod>,
    bound: &Reporter,
    workflow: &HardeningWorkflow,
) -> Result<(), Refusal> {
    let forbid = |why: String| Refusal::Forbidden(format!("pod {}: {why}", bound.name));
    let pod = pod.ok_or_else(|| forbid("no longer exists".into()))?;
    if pod.metadata.uid.as_deref() != Some(bound.uid.as_str()) {
        return Err(forbid(
            "is a newer pod of the same name than the token's".into(),
        ));
    }
    let name = workflow.name_any();
    if pod.labels().get(WORKFLOW_LABEL) != Some(&label_value(&name)) {
        return Err(forbid(format!(
            "is not an instrumented pod of workflow {name} (no label {WORKFLOW_LABEL}={name})"
        )));
    }
    let instrumented = workflow
        .status
        .as_ref()
        .map(|s| s.instrumented_images())
        .unwrap_or_default();
    let runs_it = pod.spec.as_ref().is_some_and(|s| {
        pod::containers(s).any(|c| c.image.as_deref().is_some_and(|i| instrumented.contains(i)))
    });
    if !runs_it {
        return Err(forbid(format!(
            "does not run the instrumented image {}",
            instrumented.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Whether the container a report names is one of `pod`'s on an instrumented image of
/// `workflow`: a pod's containers report apart, so a report may not pass for another of the
/// pod's containers that whittle did not instrument. (The pod token is the pod's, shared by
/// its instrumented containers: one of them could still claim to be another of them.)
pub fn check_container(
    pod: &Pod,
    container: &str,
    workflow: &HardeningWorkflow,
) -> Result<(), Refusal> {
    let instrumented = workflow
        .status
        .as_ref()
        .map(|s| s.instrumented_images())
        .unwrap_or_default();
    let runs_it = pod
        .spec
        .as_ref()
        .and_then(|s| pod::container(s, container))
        .and_then(|c| c.image.as_deref())
        .is_some_and(|i| instrumented.contains(i));
    if runs_it {
        return Ok(());
    }
    Err(Refusal::Forbidden(format!(
        "pod {}: its container {container:?} does not run an instrumented image",
        pod.name_any()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn reviewed(username: &str, pod: Option<(&str, &str)>, audience: &str) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        if let Some((name, uid)) = pod {
            extra.insert(POD_NAME_EXTRA.to_string(), vec![name.to_string()]);
            extra.insert(POD_UID_EXTRA.to_string(), vec![uid.to_string()]);
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![audience.to_string()]),
            user: Some(UserInfo {
                username: Some(username.to_string()),
                extra: Some(extra),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    #[test]
    fn a_pod_bound_token_of_the_namespace_names_its_pod() {
        let status = reviewed(
            "system:serviceaccount:shop:default",
            Some(("web-1", "u1")),
            "whittle",
        );
        assert_eq!(
            bound_pod(&status, "shop"),
            Ok(Reporter {
                name: "web-1".into(),
                uid: "u1".into()
            })
        );
    }

    #[test]
    fn other_tokens_are_refused() {
        let cases = [
            (
                reviewed(
                    "system:serviceaccount:bank:default",
                    Some(("web-1", "u1")),
                    "whittle",
                ),
                "namespace bank",
            ),
            (
                reviewed("system:serviceaccount:shop:default", None, "whittle"),
                "not bound to a pod",
            ),
            (
                reviewed("alice", Some(("web-1", "u1")), "whittle"),
                "not a ServiceAccount",
            ),
            (
                reviewed(
                    "system:serviceaccount:shop:default",
                    Some(("web-1", "u1")),
                    "https://kubernetes.default.svc",
                ),
                "audience",
            ),
            (
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("expired".into()),
                    ..TokenReviewStatus::default()
                },
                "expired",
            ),
        ];
        for (status, why) in cases {
            let e = bound_pod(&status, "shop").unwrap_err();
            let text = match &e {
                Refusal::Unauthenticated(t) | Refusal::Forbidden(t) => t,
            };
            assert!(text.contains(why), "{why}: {e:?}");
        }
    }

    fn workflow() -> HardeningWorkflow {
        let mut w: HardeningWorkflow = serde_json::from_value(json!({
            "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
            "metadata": {"name": "web", "namespace": "shop", "uid": "w1"},
            "spec": {"target": {"name": "web"}},
            "status": {"instrumentedImage": "r/web@sha256:aa"},
        }))
        .unwrap();
        w.metadata.uid = Some("w1".into());
        w
    }

    fn pod(uid: &str, label: Option<&str>, image: &str) -> Pod {
        let mut labels = json!({});
        if let Some(l) = label {
            labels[WORKFLOW_LABEL] = json!(l);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "uid": uid, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": image}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_the_workflows_instrumented_pods_may_report() {
        let bound = Reporter {
            name: "web-1".into(),
            uid: "u1".into(),
        };
        let w = workflow();
        assert_eq!(
            check(Some(&pod("u1", Some("web"), "r/web@sha256:aa")), &bound, &w),
            Ok(())
        );
        for (p, why) in [
            (None, "no longer exists"),
            (Some(pod("u2", Some("web"), "r/web@sha256:aa")), "newer pod"),
            (
                Some(pod("u1", None, "r/web@sha256:aa")),
                "not an instrumented pod",
            ),
            (
                Some(pod("u1", Some("api"), "r/web@sha256:aa")),
                "not an instrumented pod",
            ),
            (
                Some(pod("u1", Some("web"), "r/web:1")),
                "does not run the instrumented image",
            ),
        ] {
            let Err(Refusal::Forbidden(text)) = check(p.as_ref(), &bound, &w) else {
                panic!("{why}: accepted");
            };
            assert!(text.contains(why), "{why}: {text}");
        }
    }

    #[test]
    fn a_report_may_name_only_an_instrumented_container_of_its_pod() {
        let mut w = workflow();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "uid": "u1", "labels": {WORKFLOW_LABEL: "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "r/web@sha256:aa"},
                {"name": "tailer", "image": "r/tail@sha256:cc"},
            ], "initContainers": [{"name": "setup", "image": "r/setup@sha256:dd"}]},
        }))
        .unwrap();
        assert_eq!(check_container(&p, "app", &w), Ok(()));
        for other in ["tailer", "setup", "nosuch"] {
            let Err(Refusal::Forbidden(text)) = check_container(&p, other, &w) else {
                panic!("{other}: accepted");
            };
            assert!(text.contains(other), "{text}");
        }
        // Once the sidecar's image is instrumented too, it reports for itself.
        let status = w.status.as_mut().unwrap();
        status.containers = vec![
            crate::api::ContainerResult {
                name: "tailer".into(),
                instrumented_image: Some("r/tail@sha256:cc".into()),
                ..Default::default()
            },
            crate::api::ContainerResult {
                name: "setup".into(),
                instrumented_image: Some("r/setup@sha256:dd".into()),
                ..Default::default()
            },
        ];
        assert_eq!(check_container(&p, "tailer", &w), Ok(()));
        assert_eq!(
            check_container(&p, "setup", &w),
            Ok(()),
            "an init container reports for itself too"
        );
    }
}
