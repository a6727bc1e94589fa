//! I/O: the target Deployment and its pods. Every change is a server-side apply with field
//! manager `whittle`, forced: whittle takes over exactly the fields it sets, and gives them back
//! by applying the original values (see `template`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::error::Result;
use crate::api::names::{FIELD_MANAGER, WORKFLOW_LABEL, label_value};

pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Applies `config` (an apply configuration from `template`) to the Deployment.
pub async fn apply(
    client: &Client,
    namespace: &str,
    name: &str,
    config: &Value,
) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(name, &params, &Patch::Apply(config)).await?)
}

/// The pods whittle instrumented for `workflow` (they carry its label).
pub async fn instrumented_pods(
    client: &Client,
    namespace: &str,
    workflow: &str,
) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{WORKFLOW_LABEL}={}", label_value(workflow));
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}
