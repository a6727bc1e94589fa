//! Sensor reports stored in the cluster: one ConfigMap per reporting pod and container, owned by its
//! workflow, the report gzip-compressed in `binaryData["report.json.gz"]`. The report server
//! writes them ([`save`]) with the workflow's token ([`key`]); the controller counts them
//! ([`reported_pods`]), folds them into one at harden time ([`fold`]) and clears them
//! ([`delete_all`]).

pub mod key;
pub mod merge;
pub mod store;

pub use key::ReportKey;
pub use store::{
    Folded, Outcome, Reporter, Saved, delete_all, fold, material, materials, reported,
    reported_pods, save,
};
pub use whittle_sensor::codec::{GunzipError, ReadReportError, gzip_json, read_gzip_report};

/// Largest report JSON accepted, decompressed. A sensor's report of a big application is a
/// few MiB (the sensor bounds what it records); the limit is what stops a small gzip body from
/// inflating without bound, and what one report may cost the operator's memory.
pub const MAX_REPORT_JSON: usize = whittle_sensor::report::MAX_JSON_BYTES;

/// Most pods whose reports one workflow stores. Every report comes from a real pod of the
/// workflow, so this bounds a Deployment whose pods are replaced over and over while observed.
pub const MAX_REPORTS_PER_WORKFLOW: usize = 128;

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
        "the report is {bytes} bytes gzip-compressed; a ConfigMap holds at most {MAX_STORED_BYTES}"
    )]
    TooLarge { bytes: usize },
    #[error("the workflow already stores the reports of {limit} pods; no more are taken")]
    TooMany { limit: usize },
    #[error("{0} exists and is not this workflow's report: delete or rename it")]
    NotOurs(String),
    #[error("{0} kept changing while the report was stored; the sensor will send it again")]
    Busy(String),
    #[error("storing the report stopped: {0}")]
    Internal(String),
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
