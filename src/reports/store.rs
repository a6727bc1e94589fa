//! Reports as ConfigMaps, read and written through the API server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use whittle_sensor::report::Report;

use super::{MAX_REPORT_JSON, MAX_STORED_BYTES, ReportStoreError, Result, gunzip_limited, gzip};
use crate::api::HardeningWorkflow;
use crate::api::names::{
    self, FIELD_MANAGER, POD_ANNOTATION, POD_LABEL, REPORT_KEY, report_config_map_name,
    workflow_labels, workflow_selector,
};

/// What [`save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The ConfigMap's name.
    pub config_map: String,
    /// The pod the report came from.
    pub pod: String,
    /// False when it replaced an earlier report of the same pod.
    pub created: bool,
}

/// Stores `report` for `workflow`, replacing an earlier report from the same pod (server-side
/// apply, so saving twice is harmless). The pod is the report's `identity.podName`.
pub async fn save(client: &Client, workflow: &HardeningWorkflow, report: &Report) -> Result<Saved> {
    let (namespace, name) = stored(workflow)?;
    let pod = report
        .identity
        .pod_name
        .clone()
        .ok_or(ReportStoreError::NoPodName)?;
    if !names::is_dns_subdomain(&pod) {
        return Err(ReportStoreError::BadPodName(pod));
    }
    let json = serde_json::to_vec(report)?;
    let compressed = gzip(&json);
    if compressed.len() > MAX_STORED_BYTES {
        return Err(ReportStoreError::TooLarge {
            bytes: compressed.len(),
        });
    }
    let config_map = report_config_map_name(&name, &pod);
    let mut labels = workflow_labels(&name);
    labels.insert(POD_LABEL.to_string(), names::label_value(&pod));
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(POD_ANNOTATION.to_string(), pod.clone())])),
            owner_references: workflow.owner_reference().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            REPORT_KEY.to_string(),
            ByteString(compressed),
        )])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let what = format!("ConfigMap {namespace}/{config_map}");
    // Only to tell "created" from "replaced" in the answer; the apply is correct either way.
    let existed = api
        .get_metadata_opt(&config_map)
        .await
        .map_err(ReportStoreError::api(format!("reading {what}")))?
        .is_some();
    api.patch(
        &config_map,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(ReportStoreError::api(format!(
        "storing the report in {what}"
    )))?;
    Ok(Saved {
        config_map,
        pod,
        created: !existed,
    })
}

/// Every report stored for `workflow`, decompressed and validated, in pod-name order.
pub async fn load_all(client: &Client, workflow: &HardeningWorkflow) -> Result<Vec<Report>> {
    let (namespace, name) = stored(workflow)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let list = api
        .list(&ListParams::default().labels(&workflow_selector(&name)))
        .await
        .map_err(ReportStoreError::api(format!(
            "listing the reports of {namespace}/{name}"
        )))?;
    let mut reports: Vec<(String, Report)> = Vec::new();
    for cm in list
        .items
        .iter()
        .filter(|cm| workflow.owns(cm.metadata.owner_references.as_deref()))
    {
        let config_map = format!("{namespace}/{}", cm.name_any());
        let corrupt = |detail: String| ReportStoreError::Corrupt {
            config_map: config_map.clone(),
            detail,
        };
        let compressed = cm
            .binary_data
            .as_ref()
            .and_then(|d| d.get(REPORT_KEY))
            .ok_or_else(|| corrupt(format!("no binaryData {REPORT_KEY}")))?;
        let json =
            gunzip_limited(&compressed.0, MAX_REPORT_JSON).map_err(|e| corrupt(e.to_string()))?;
        let report = Report::from_json_slice(&json).map_err(|e| corrupt(e.to_string()))?;
        reports.push((pod_of(&cm.metadata).unwrap_or_default(), report));
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// The pods that have reported for `workflow` (reads metadata only, not the reports).
pub async fn reported_pods(
    client: &Client,
    workflow: &HardeningWorkflow,
) -> Result<BTreeSet<String>> {
    Ok(owned_metadata(client, workflow)
        .await?
        .iter()
        .filter_map(|m| pod_of(&m.metadata))
        .collect())
}

/// Deletes every report stored for `workflow`; returns how many there were.
pub async fn delete_all(client: &Client, workflow: &HardeningWorkflow) -> Result<usize> {
    let (namespace, _) = stored(workflow)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let owned = owned_metadata(client, workflow).await?;
    for meta in &owned {
        let name = meta.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Already gone (another reconcile, or garbage collection): what we wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(ReportStoreError::Api {
                    action: format!("deleting report ConfigMap {namespace}/{name}"),
                    source: e,
                });
            }
        }
    }
    Ok(owned.len())
}

/// Report ConfigMaps (metadata) of this workflow: labelled for it and owned by its uid, so a
/// workflow recreated under the same name never sees its predecessor's reports.
async fn owned_metadata(
    client: &Client,
    workflow: &HardeningWorkflow,
) -> Result<Vec<PartialObjectMeta<ConfigMap>>> {
    let (namespace, name) = stored(workflow)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let list = api
        .list_metadata(&ListParams::default().labels(&workflow_selector(&name)))
        .await
        .map_err(ReportStoreError::api(format!(
            "listing the reports of {namespace}/{name}"
        )))?;
    Ok(list
        .items
        .into_iter()
        .filter(|m| workflow.owns(m.metadata.owner_references.as_deref()))
        .collect())
}

fn pod_of(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(POD_ANNOTATION).cloned()
}

/// The namespace and name of a workflow read from the API server (it has a uid to own
/// things with).
fn stored(workflow: &HardeningWorkflow) -> Result<(String, String)> {
    let name = workflow.name_any();
    match (workflow.namespace(), &workflow.metadata.uid) {
        (Some(namespace), Some(_)) => Ok((namespace, name)),
        _ => Err(ReportStoreError::NotStored(name)),
    }
}
