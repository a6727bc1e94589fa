//! What can stop a reconcile, and which failures retrying cannot fix.

use crate::evidence::produce::EvidenceError;
use crate::evidence::profile::ProfileError;
use crate::evidence::sign::SignError;
use crate::image::ImageError;
use crate::reports::ReportStoreError;

use super::reason::Reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure retrying cannot fix, with the reason the workflow fails with: something in
    /// the workflow or the objects it names that only the user can fix, or the workload
    /// failing under whittle (a rollout, a crash loop, an exercise).
    #[error("{message}")]
    Failed { reason: Reason, message: String },
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
    #[error(transparent)]
    Profile(#[from] Box<ProfileError>),
}

/// Whether a registry failure is permanent, and why.
fn image_reason(e: &ImageError) -> Option<Reason> {
    match e {
        ImageError::Unauthorized { .. } => Some(Reason::RegistryUnauthorized),
        ImageError::NotFound { .. } => Some(Reason::ImageNotFound),
        ImageError::Reference { .. }
        | ImageError::NoPlatform { .. }
        | ImageError::Platform(_)
        | ImageError::MediaType { .. }
        | ImageError::Manifest { .. }
        | ImageError::Credentials { .. } => Some(Reason::InvalidImage),
        ImageError::Sensor { .. } => Some(Reason::SensorMissing),
        ImageError::Pattern { .. } => Some(Reason::InvalidPattern),
        ImageError::Report { .. } => Some(Reason::InvalidReport),
        ImageError::Limit(_) => Some(Reason::LimitExceeded),
        ImageError::Cleartext { .. } => Some(Reason::CleartextCredentials),
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
    pub fn permanent_reason(&self) -> Option<Reason> {
        match self {
            Error::Failed { reason, .. } => Some(*reason),
            Error::Timeout { .. } => Some(Reason::Timeout),
            Error::Image(e) => image_reason(e),
            Error::Evidence(e) => match e {
                EvidenceError::Attach { source, .. } => image_reason(source),
                EvidenceError::Sign(SignError::Store { source, .. }) => image_reason(source),
                EvidenceError::Sign(_) => Some(Reason::SigningFailed),
                EvidenceError::Write { .. } => None,
                EvidenceError::Unpinned(_) => Some(Reason::InvalidImage),
                EvidenceError::Gate(_) => Some(Reason::VulnerabilityGate),
            },
            Error::Profile(e) => match e.as_ref() {
                ProfileError::Attach { source, .. } => image_reason(source),
                _ => None,
            },
            Error::Transient { .. } => None,
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Some(Reason::Forbidden),
            Error::Kube(_) | Error::Reports(_) => None,
        }
    }

    /// A short label for the reconcile-errors metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            // "spec" from before the variant was renamed: a metric label is API too.
            Error::Failed { .. } => "spec",
            Error::Kube(_) => "kubernetes",
            Error::Image(_) => "registry",
            Error::Reports(_) => "reports",
            Error::Timeout { .. } => "timeout",
            Error::Transient { .. } => "download",
            Error::Evidence(_) | Error::Profile(_) => "evidence",
        }
    }
}
