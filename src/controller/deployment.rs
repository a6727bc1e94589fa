//! I/O: the target Deployment and its pods. Every change is a server-side apply with field
//! manager `whittle`, forced: whittle takes over exactly the fields it sets, and gives them back
//! by applying the original values (see `template`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
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

/// The Services of `namespace`, to find the one an exercise talks to.
pub async fn services(client: &Client, namespace: &str) -> Result<Vec<Service>> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The last `lines` a container logged (its previous run's with `previous`), for a failure
/// message; what went wrong reading them otherwise.
pub async fn logs(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = LogParams {
        container: Some(container.to_string()),
        previous,
        tail_lines: Some(LOG_LINES),
        ..Default::default()
    };
    match api.logs(pod, &params).await {
        Ok(text) if text.trim().is_empty() => "(no output)".into(),
        Ok(text) => text.trim_end().to_string(),
        Err(e) => format!("(logs unavailable: {e})"),
    }
}

/// How many log lines of a failing container go into a message.
const LOG_LINES: i64 = 10;

/// What kubelet last said about a failing probe of `pod` (its `Unhealthy` Event), e.g.
/// "Readiness probe failed: HTTP probe failed with statuscode: 404".
pub async fn probe_failure(client: &Client, namespace: &str, pod: &str) -> Option<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.name={pod},reason=Unhealthy");
    let events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .ok()?;
    events
        .items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .clone()
                .or(e.event_time.clone().map(|t| Time(t.0)))
        })
        .and_then(|e| e.message)
}
