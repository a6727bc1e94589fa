//! GitOps controllers that own a workload's pod template: Argo CD's self-heal and Flux's drift
//! correction would put the Git template back while whittle's instrumented one is observed, so
//! the run would lose its pods and fail. Their field managers in `managedFields` give them
//! away; `phase::pending` waits (changing nothing) until the user has told the tool to leave
//! whittle's fields alone and said so with `spec.target.gitOps: Proceed`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

use crate::controller::workload::Workload;

/// The GitOps tools whittle recognises, by the field managers they apply with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    ArgoCd,
    FluxKustomize,
    FluxHelm,
}

impl Tool {
    /// The tool applying as `manager`: Argo CD's server-side (`argocd-controller`) and
    /// client-side (`argocd-application-controller`) sync, Flux's kustomize-controller and
    /// helm-controller.
    fn of(manager: &str) -> Option<Tool> {
        match manager {
            "argocd-controller" | "argocd-application-controller" => Some(Tool::ArgoCd),
            "kustomize-controller" => Some(Tool::FluxKustomize),
            "helm-controller" => Some(Tool::FluxHelm),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::ArgoCd => "Argo CD",
            Tool::FluxKustomize => "Flux (kustomize-controller)",
            Tool::FluxHelm => "Flux (helm-controller)",
        }
    }

    /// The annotation on the live object with which Flux leaves it alone; Argo CD's setting
    /// lives in the Application, which whittle cannot see.
    fn opt_out(self) -> Option<(&'static str, &'static str)> {
        match self {
            Tool::ArgoCd => None,
            Tool::FluxKustomize => Some(("kustomize.toolkit.fluxcd.io/reconcile", "disabled")),
            Tool::FluxHelm => Some(("helm.toolkit.fluxcd.io/driftDetection", "disabled")),
        }
    }

    /// What the user does about it.
    fn advice(self) -> &'static str {
        match self {
            Tool::ArgoCd => {
                "give the Application ignoreDifferences with managedFieldsManagers: [whittle] and the sync option RespectIgnoreDifferences=true (docs/argocd.md)"
            }
            Tool::FluxKustomize => {
                "annotate the live object kustomize.toolkit.fluxcd.io/reconcile: disabled while it is hardened, or give the Kustomization driftIgnoreRules for whittle's paths (docs/flux.md)"
            }
            Tool::FluxHelm => {
                "annotate the live object helm.toolkit.fluxcd.io/driftDetection: disabled, or leave the HelmRelease's driftDetection off and do not upgrade it mid-run (docs/flux.md)"
            }
        }
    }
}

/// A GitOps tool owning part of the pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tool: Tool,
    pub manager: String,
}

/// The GitOps tools that own fields of `d`'s pod template and have not been told (by their
/// opt-out annotation) to leave the object alone.
pub fn owners(d: &Workload) -> Vec<Owner> {
    let annotations = d.metadata.annotations.as_ref();
    let opted_out = |tool: Tool| {
        tool.opt_out().is_some_and(|(key, value)| {
            annotations.and_then(|a| a.get(key)).map(String::as_str) == Some(value)
        })
    };
    let mut owners: Vec<Owner> = Vec::new();
    for entry in d.metadata.managed_fields.iter().flatten() {
        let Some(manager) = entry.manager.as_deref() else {
            continue;
        };
        let Some(tool) = Tool::of(manager) else {
            continue;
        };
        if opted_out(tool) || !owns_pod_template(entry) {
            continue;
        }
        if !owners.iter().any(|o| o.manager == manager) {
            owners.push(Owner {
                tool,
                manager: manager.to_string(),
            });
        }
    }
    owners
}

/// Whether the entry owns anything under `spec.template` of the main resource (not a
/// subresource such as status or scale).
fn owns_pod_template(entry: &ManagedFieldsEntry) -> bool {
    entry.subresource.as_deref().unwrap_or_default().is_empty()
        && entry
            .fields_v1
            .as_ref()
            .and_then(|f| f.0.get("f:spec"))
            .and_then(|spec| spec.get("f:template"))
            .is_some()
}

/// The `GitOpsManaged` message: who owns the template and what to do, for `kind/namespace/name`.
pub fn message(what: &str, owners: &[Owner]) -> String {
    let tools: Vec<String> = owners
        .iter()
        .map(|o| format!("{} (field manager {})", o.tool.name(), o.manager))
        .collect();
    let mut advice: Vec<&str> = owners.iter().map(|o| o.tool.advice()).collect();
    advice.dedup();
    format!(
        "{what}'s pod template is managed by {}, which would revert the instrumented template mid-run: {}; then set spec.target.gitOps: Proceed",
        tools.join(" and "),
        advice.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn deployment(fields: Value, annotations: Value) -> Workload {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations,
                         "managedFields": fields},
            "spec": {"selector": {}, "template": {"spec": {"containers": []}}}
        }))
        .unwrap();
        d.into()
    }

    fn entry(manager: &str, fields: Value, subresource: Option<&str>) -> Value {
        let mut e = json!({"manager": manager, "operation": "Apply", "apiVersion": "apps/v1",
                           "fieldsType": "FieldsV1", "fieldsV1": fields});
        if let Some(s) = subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    fn template() -> Value {
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}})
    }

    fn managers(d: &Workload) -> Vec<String> {
        owners(d).into_iter().map(|o| o.manager).collect()
    }

    #[test]
    fn the_gitops_tools_owning_the_pod_template_are_found() {
        let cases: [(Value, Value, &[&str]); 9] = [
            (
                json!([entry("argocd-controller", template(), None)]),
                json!({}),
                &["argocd-controller"],
            ),
            (
                json!([entry("argocd-application-controller", template(), None)]),
                json!({}),
                &["argocd-application-controller"],
            ),
            (
                json!([entry("kustomize-controller", template(), None)]),
                json!({}),
                &["kustomize-controller"],
            ),
            (
                json!([entry("helm-controller", template(), None)]),
                json!({}),
                &["helm-controller"],
            ),
            // Someone else's manager, or only metadata, replicas or status: no fight.
            (
                json!([entry("kubectl-client-side-apply", template(), None)]),
                json!({}),
                &[],
            ),
            (
                json!([entry(
                    "argocd-controller",
                    json!({"f:metadata": {"f:labels": {}}, "f:spec": {"f:replicas": {}}}),
                    None
                )]),
                json!({}),
                &[],
            ),
            (
                json!([entry("kustomize-controller", template(), Some("status"))]),
                json!({}),
                &[],
            ),
            // Flux told to leave the live object alone.
            (
                json!([entry("kustomize-controller", template(), None)]),
                json!({"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}),
                &[],
            ),
            (
                json!([entry("helm-controller", template(), None)]),
                json!({"helm.toolkit.fluxcd.io/driftDetection": "disabled"}),
                &[],
            ),
        ];
        for (fields, annotations, want) in cases {
            let d = deployment(fields.clone(), annotations);
            assert_eq!(managers(&d), want, "{fields}");
        }
    }

    #[test]
    fn the_message_names_the_tool_and_what_to_do() {
        let d = deployment(
            json!([
                entry("argocd-controller", template(), None),
                entry("argocd-controller", template(), None)
            ]),
            json!({}),
        );
        let owners = owners(&d);
        assert_eq!(owners.len(), 1, "one row per manager");
        assert_eq!(
            message("Deployment shop/web", &owners),
            "Deployment shop/web's pod template is managed by Argo CD (field manager argocd-controller), which would revert the instrumented template mid-run: give the Application ignoreDifferences with managedFieldsManagers: [whittle] and the sync option RespectIgnoreDifferences=true (docs/argocd.md); then set spec.target.gitOps: Proceed"
        );
    }
}
