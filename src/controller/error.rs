//! What can stop a reconcile, and which failures retrying cannot fix.

use crate::evidence::produce::EvidenceError;
use crate::evidence::sign::SignError;
use crate::image::ImageError;
use crate::reports::ReportStoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something in the workflow or the objects it names that only the user can fix.
    #[error("{message}")]
    Spec {
        reason: &'static str,
        message: String,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Reports(#[from] ReportStoreError),
    #[error("{what} did not finish within {limit}")]
    Timeout { what: String, limit: String },
    /// A failure worth retrying outside the registry (a database download).
    #[error("{what}: {detail}")]
    Transient { what: String, detail: String },
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

/// Whether a registry failure is permanent, and why.
fn image_reason(e: &ImageError) -> Option<&'static str> {
    match e {
        ImageError::Unauthorized { .. } => Some("RegistryUnauthorized"),
        ImageError::NotFound { .. } => Some("ImageNotFound"),
        ImageError::Reference { .. }
        | ImageError::NoPlatform { .. }
        | ImageError::Platform(_)
        | ImageError::MediaType { .. }
        | ImageError::Manifest { .. }
        | ImageError::Credentials { .. } => Some("InvalidImage"),
        ImageError::Sensor { .. } => Some("SensorMissing"),
        ImageError::Pattern { .. } => Some("InvalidPattern"),
        ImageError::Report { .. } => Some("InvalidReport"),
        ImageError::Limit(_) => Some("LimitExceeded"),
        ImageError::Cleartext { .. } => Some("CleartextCredentials"),
        ImageError::Unreachable { .. }
        | ImageError::Registry { .. }
        | ImageError::Layer { .. }
        | ImageError::Io { .. } => None,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The reason to fail the workflow with, when retrying cannot help; None for a transient
    /// failure (network, a registry's 5xx, an API conflict), which is retried with backoff.
    pub fn permanent_reason(&self) -> Option<&'static str> {
        match self {
            Error::Spec { reason, .. } => Some(reason),
            Error::Timeout { .. } => Some("Timeout"),
            Error::Image(e) => image_reason(e),
            Error::Evidence(e) => match e {
                EvidenceError::Attach { source, .. } => image_reason(source),
                EvidenceError::Sign(SignError::Store { source, .. }) => image_reason(source),
                EvidenceError::Sign(_) => Some("SigningFailed"),
                EvidenceError::Write { .. } => None,
                EvidenceError::Unpinned(_) => Some("InvalidImage"),
            },
            Error::Transient { .. } => None,
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Some("Forbidden"),
            Error::Kube(_) | Error::Reports(_) => None,
        }
    }

    /// A short label for the reconcile-errors metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Spec { .. } => "spec",
            Error::Kube(_) => "kubernetes",
            Error::Image(_) => "registry",
            Error::Reports(_) => "reports",
            Error::Timeout { .. } => "timeout",
            Error::Transient { .. } => "download",
            Error::Evidence(_) => "evidence",
        }
    }
}
