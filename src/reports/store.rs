//! Reports as ConfigMaps, read and written through the API server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use whittle_sensor::report::Report;

use sha2::{Digest, Sha256};

use super::merge::merge;
use super::{
    MAX_REPORT_JSON, MAX_REPORTS_PER_WORKFLOW, MAX_STORED_BYTES, ReportStoreError, Result,
    gzip_json, read_gzip_report,
};
use crate::api::HardeningWorkflow;
use crate::api::names::{
    self, CONTAINER_ANNOTATION, POD_ANNOTATION, POD_LABEL, POD_UID_ANNOTATION, REPORT_KEY,
    RUNS_ANNOTATION, report_config_map_name, report_slot, workflow_labels, workflow_selector,
};

/// The pod a report comes from, as the API server vouches for it (not as the report says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    pub name: String,
    pub uid: String,
}

/// What [`save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pod's first report.
    Created,
    /// A later run of the pod's container (it restarted): merged with what was stored.
    Merged,
    /// This very run was stored already (a re-send): nothing changed.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The ConfigMap's name.
    pub config_map: String,
    /// The pod the report came from.
    pub pod: String,
    /// The container whose sensor sent it, as the report names it.
    pub container: Option<String>,
    pub outcome: Outcome,
}

/// How often a save is tried again when another request changed the ConfigMap in between.
const SAVE_ATTEMPTS: usize = 4;

/// Stores `report` for `workflow` as the report of `pod`'s container the report names: one
/// ConfigMap per pod and container, named by the workflow's and the pod's uids and the
/// container's name (a pod's app and its sidecar report apart, and the workflow hardens each
/// image from its own containers' reports). A second run of the container is merged into what is
/// stored; the same run again changes nothing. A workflow holds at most
/// [`MAX_REPORTS_PER_WORKFLOW`] pods' reports. Updates carry the resourceVersion read, so two
/// reports of one pod arriving at once are both kept.
pub async fn save(
    client: &Client,
    workflow: &HardeningWorkflow,
    pod: &Reporter,
    report: Report,
) -> Result<Saved> {
    let (namespace, name) = stored(workflow)?;
    let workflow_uid = workflow.metadata.uid.clone().unwrap_or_default();
    let container = report.identity.container_name.clone();
    let config_map = report_config_map_name(&name, &workflow_uid, &pod.uid, container.as_deref());
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let what = format!("ConfigMap {namespace}/{config_map}");
    let run = report.started_at_ms.to_string();
    let mut report = Some(report);
    for _ in 0..SAVE_ATTEMPTS {
        let existing = api
            .get_opt(&config_map)
            .await
            .map_err(ReportStoreError::api(format!("reading {what}")))?;
        let Some(incoming) = report.take() else {
            break;
        };
        let result = match existing {
            None => {
                let stored_reports = owned_metadata(client, workflow).await?.len();
                if stored_reports >= MAX_REPORTS_PER_WORKFLOW {
                    return Err(ReportStoreError::TooMany {
                        limit: MAX_REPORTS_PER_WORKFLOW,
                    });
                }
                let (object, kept) = encode(
                    workflow,
                    &namespace,
                    &config_map,
                    pod,
                    std::slice::from_ref(&run),
                    incoming,
                )
                .await?;
                report = Some(kept);
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| Outcome::Created)
            }
            Some(cm) => {
                if !workflow.owns(cm.metadata.owner_references.as_deref()) {
                    return Err(ReportStoreError::NotOurs(what));
                }
                let mut runs = runs_of(&cm.metadata);
                if runs.contains(&run) {
                    return Ok(Saved {
                        config_map,
                        pod: pod.name.clone(),
                        container,
                        outcome: Outcome::Unchanged,
                    });
                }
                let mut merged = decode_stored(&cm, &namespace)?;
                let kept = incoming.clone();
                merged = tokio::task::spawn_blocking(move || {
                    merge(&mut merged, incoming);
                    merged
                })
                .await
                .map_err(|e| ReportStoreError::Internal(e.to_string()))?;
                report = Some(kept);
                runs.push(run.clone());
                let (mut object, _) =
                    encode(workflow, &namespace, &config_map, pod, &runs, merged).await?;
                object.metadata.resource_version = cm.metadata.resource_version.clone();
                api.replace(&config_map, &PostParams::default(), &object)
                    .await
                    .map(|_| Outcome::Merged)
            }
        };
        match result {
            Ok(outcome) => {
                return Ok(Saved {
                    config_map,
                    pod: pod.name.clone(),
                    container,
                    outcome,
                });
            }
            // Created or changed by another request since it was read: read it again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(ReportStoreError::Api {
                    action: format!("storing the report in {what}"),
                    source: e,
                });
            }
        }
    }
    Err(ReportStoreError::Busy(what))
}

/// The ConfigMap holding `report` (serialized and compressed off the async runtime), and the
/// report back for another attempt.
async fn encode(
    workflow: &HardeningWorkflow,
    namespace: &str,
    config_map: &str,
    pod: &Reporter,
    runs: &[String],
    report: Report,
) -> Result<(ConfigMap, Report)> {
    let (compressed, report) = tokio::task::spawn_blocking(move || {
        let compressed = gzip_json(&report)?;
        Ok::<_, ReportStoreError>((compressed, report))
    })
    .await
    .map_err(|e| ReportStoreError::Internal(e.to_string()))??;
    if compressed.len() > MAX_STORED_BYTES {
        return Err(ReportStoreError::TooLarge {
            bytes: compressed.len(),
        });
    }
    let mut labels = workflow_labels(&workflow.name_any());
    labels.insert(POD_LABEL.to_string(), names::label_value(&pod.name));
    let mut annotations = BTreeMap::from([
        (POD_ANNOTATION.to_string(), pod.name.clone()),
        (POD_UID_ANNOTATION.to_string(), pod.uid.clone()),
        (RUNS_ANNOTATION.to_string(), runs.join(",")),
    ]);
    if let Some(container) = &report.identity.container_name {
        annotations.insert(CONTAINER_ANNOTATION.to_string(), container.clone());
    }
    let object = ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: workflow.owner_reference().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(
            REPORT_KEY.to_string(),
            ByteString(compressed),
        )])),
        ..ConfigMap::default()
    };
    Ok((object, report))
}

fn runs_of(meta: &ObjectMeta) -> Vec<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(RUNS_ANNOTATION))
        .map(|r| {
            r.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn decode_stored(cm: &ConfigMap, namespace: &str) -> Result<Report> {
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
    read_gzip_report(&compressed.0, MAX_REPORT_JSON).map_err(|e| corrupt(e.to_string()))
}

/// What harden takes from the stored reports: their union, and what provenance names.
#[derive(Debug, Default)]
pub struct Folded {
    /// Every stored report merged into one; `None` when none is stored.
    pub profile: Option<Report>,
    /// Each stored report's name and the sha256 of its JSON, in pod-name order.
    pub materials: Vec<(String, String)>,
    /// The monitors the reports were recorded with.
    pub modes: BTreeSet<String>,
}

/// Folds the stored reports of `workflow` into one, reading one ConfigMap at a time, so that
/// memory holds the union and one report, never all of them. With `containers`, only the
/// reports of those containers (the ones running one image) are folded.
pub async fn fold(
    client: &Client,
    workflow: &HardeningWorkflow,
    containers: Option<&BTreeSet<String>>,
) -> Result<Folded> {
    let (namespace, _) = stored(workflow)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut owned = owned_metadata(client, workflow).await?;
    if let Some(containers) = containers {
        owned.retain(|m| container_of(&m.metadata).is_some_and(|c| containers.contains(&c)));
    }
    owned.sort_by_key(|m| pod_of(&m.metadata).unwrap_or_default());
    let mut folded = Folded::default();
    for meta in owned {
        let name = meta.name_any();
        let Some(cm) = api
            .get_opt(&name)
            .await
            .map_err(ReportStoreError::api(format!(
                "reading ConfigMap {namespace}/{name}"
            )))?
        else {
            continue;
        };
        let ns = namespace.clone();
        let (report, material) = tokio::task::spawn_blocking(move || {
            let report = decode_stored(&cm, &ns)?;
            let material = material(&report);
            Ok::<_, ReportStoreError>((report, material))
        })
        .await
        .map_err(|e| ReportStoreError::Internal(e.to_string()))??;
        folded.modes.insert(report.mode.as_str().to_string());
        folded.materials.push(material);
        folded.profile = Some(match folded.profile.take() {
            None => report,
            Some(mut profile) => {
                merge(&mut profile, report);
                profile
            }
        });
    }
    Ok(folded)
}

/// A report as provenance names it: `report:<namespace>/<pod>/<container>` (or what of that the
/// report knows) and the sha256 of its JSON.
pub fn material(report: &Report) -> (String, String) {
    let id = &report.identity;
    let name = match (&id.pod_namespace, &id.pod_name, &id.container_name) {
        (Some(ns), Some(pod), Some(c)) => format!("report:{ns}/{pod}/{c}"),
        (_, Some(pod), _) => format!("report:{pod}"),
        _ => "report".to_string(),
    };
    // Hashed as it serializes: the JSON of a large report is never held.
    let mut hasher = Sha256::new();
    let _ = serde_json::to_writer(&mut hasher, report);
    (name, format!("{:x}", hasher.finalize()))
}

/// [`material`] of each report, numbered where a report names no pod, so that no two
/// materials share a name.
pub fn materials(reports: &[Report]) -> Vec<(String, String)> {
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| match material(r) {
            (name, digest) if name == "report" => (format!("report:{i}"), digest),
            named => named,
        })
        .collect()
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

/// What has reported for `workflow`, as [`report_slot`] names it: pods, or (`per_container`)
/// `<pod>/<container>` (reads metadata only, not the reports).
pub async fn reported(
    client: &Client,
    workflow: &HardeningWorkflow,
    per_container: bool,
) -> Result<BTreeSet<String>> {
    Ok(owned_metadata(client, workflow)
        .await?
        .iter()
        .filter_map(|m| {
            let pod = pod_of(&m.metadata)?;
            let container = container_of(&m.metadata);
            Some(report_slot(&pod, container.as_deref(), per_container))
        })
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

fn container_of(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()?
        .get(CONTAINER_ANNOTATION)
        .cloned()
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
