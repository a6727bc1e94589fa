//! What can go wrong in the image engine. Every message names the registry, repository, layer or
//! file involved and, where there is one, what the user can do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{input:?} is not an image reference: {reason}")]
    Reference { input: String, reason: String },

    #[error("registry credentials from {origin}: {reason}")]
    Credentials { origin: String, reason: String },

    #[error("registry {registry} refused credentials for {repository}: {status}{hint}")]
    Unauthorized {
        registry: String,
        repository: String,
        status: u16,
        /// Where to give credentials (`Hints`): none were found, or those found are wrong.
        hint: &'static str,
    },

    #[error("registry {registry} has no {what} in {repository}")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },

    #[error("registry {registry} could not be reached ({detail}){hint}")]
    Unreachable {
        registry: String,
        detail: String,
        hint: &'static str,
    },

    #[error(
        "registry {registry} asks for its credentials at {realm}, in cleartext to {host}, which was not declared insecure: whittle does not send them there (plain HTTP is for the registries of the images named, and only when declared insecure)"
    )]
    Cleartext {
        registry: String,
        realm: String,
        host: String,
    },

    #[error("registry {registry} failed to {action} for {repository}: {detail}")]
    Registry {
        registry: String,
        repository: String,
        action: String,
        detail: String,
    },

    #[error("{reference} is an image index with no {wanted} image (it has: {available}){hint}")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
        hint: &'static str,
    },

    #[error("--platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/amd64")]
    Platform(String),

    #[error("{reference}: {what} has media type {media_type}, which whittle cannot read{hint}")]
    MediaType {
        reference: String,
        what: String,
        media_type: String,
        hint: &'static str,
    },

    #[error("{reference}: {detail}")]
    Manifest { reference: String, detail: String },

    #[error("layer {digest}: {detail}")]
    Layer { digest: String, detail: String },

    #[error("report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: whittle_sensor::codec::ReadReportError,
    },

    #[error("sensor binary {path}: {reason}")]
    Sensor { path: PathBuf, reason: String },

    #[error("pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },

    #[error(transparent)]
    Limit(#[from] crate::image::limits::Exceeded),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let what = what.into();
        move |source| ImageError::Io { what, source }
    }

    pub fn layer(digest: &str, detail: impl std::fmt::Display) -> ImageError {
        ImageError::Layer {
            digest: digest.to_string(),
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
