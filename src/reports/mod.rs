//! Sensor reports stored in the cluster: one ConfigMap per reporting pod, owned by its
//! workflow, the report gzip-compressed in `binaryData["report.json.gz"]`. The report server
//! writes them ([`save`]); the controller counts them ([`reported_pods`]), merges them at
//! harden time ([`load_all`]) and clears them ([`delete_all`]).

pub mod compression;
pub mod store;

pub use compression::{GunzipError, gunzip_limited, gzip};
pub use store::{Saved, delete_all, load_all, reported_pods, save};

/// Largest report JSON accepted, decompressed. A sensor's report of a big application is a
/// few MiB; the limit is what stops a small gzip body from inflating without bound.
pub const MAX_REPORT_JSON: usize = 64 << 20;

/// Largest compressed report a ConfigMap can hold: the API server refuses ConfigMaps over
/// 1 MiB, and the metadata needs a little room too.
pub const MAX_STORED_BYTES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportStoreError {
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "HardeningWorkflow {0} has no namespace or uid: use the object as read from the API server"
    )]
    NotStored(String),
    #[error(
        "the report names no pod (identity.podName): the sensor's container needs POD_NAME from the downward API (fieldRef metadata.name)"
    )]
    NoPodName,
    #[error("the report's pod name {0:?} is not a valid Kubernetes name")]
    BadPodName(String),
    #[error(
        "the report is {bytes} bytes gzip-compressed; a ConfigMap holds at most {MAX_STORED_BYTES}"
    )]
    TooLarge { bytes: usize },
    #[error("the report cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(
        "stored report {config_map} cannot be read ({detail}); delete it and let the pod report again"
    )]
    Corrupt { config_map: String, detail: String },
}

impl ReportStoreError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReportStoreError {
        let action = action.into();
        move |source| ReportStoreError::Api { action, source }
    }
}

pub type Result<T, E = ReportStoreError> = std::result::Result<T, E>;
