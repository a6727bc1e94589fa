//! Signatures and attestations a verifier (cosign, an admission controller built on it) accepts:
//! `keys.rs` loads, generates and uses the signing key; `cosign.rs` signs an image or a
//! statement and stores the result in cosign's registry layout.

pub mod cosign;
pub mod keys;

pub use cosign::{IN_TOTO_PAYLOAD_TYPE, attest, sign_image};
pub use keys::SigningKey;

use crate::image::ImageError;
use keys::PASSWORD_ENV;

/// What can go wrong loading a key or storing a signature. Each message names the key file or
/// the image, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "signing key {origin}: no PEM private key found (expected -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or ENCRYPTED SIGSTORE PRIVATE KEY)"
    )]
    NoPem { origin: String },

    #[error(
        "signing key {origin}: a PEM {label:?} block is not a private key whittle can use (expected PRIVATE KEY, EC PRIVATE KEY, ENCRYPTED SIGSTORE PRIVATE KEY or ENCRYPTED COSIGN PRIVATE KEY){hint}",
        hint = if label == "PUBLIC KEY" { "; this is the public half (cosign.pub): give the private key (cosign.key)" } else { "" }
    )]
    Label { origin: String, label: String },

    #[error("signing key {origin}: encrypted cosign key needs {PASSWORD_ENV}")]
    NeedsPassword { origin: String },

    #[error(
        "signing key {origin}: {PASSWORD_ENV} does not open this encrypted cosign key (wrong password, or the file is damaged)"
    )]
    Decrypt { origin: String },

    #[error(
        "signing key {origin}: not an EC P-256 key (found {found}); generate one with `cosign generate-key-pair` or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
    )]
    WrongKind { origin: String, found: String },

    #[error("signing key {origin}: {detail}")]
    Malformed { origin: String, detail: String },

    #[error("generating a signing key: the system random number generator failed: {0}")]
    Random(String),

    #[error(
        "{reference}: signatures and attestations are stored next to the image in a registry; an OCI layout directory cannot hold them"
    )]
    NotARegistry { reference: String },

    #[error("{reference}: {digest:?} is not a manifest digest (sha256:<64 hex digits>)")]
    Digest { reference: String, digest: String },

    #[error("provenance: {what} digest {digest:?} is not sha256 (64 lowercase hex digits)")]
    Provenance { what: String, digest: String },

    #[error("{reference}: the statement is not about {digest} ({detail})")]
    Subject {
        reference: String,
        digest: String,
        detail: String,
    },

    #[error("storing the {what} of {reference}: {source}")]
    Store {
        what: &'static str,
        reference: String,
        // Boxed: the registry's error is large, and this one travels up through async code.
        #[source]
        source: Box<ImageError>,
    },

    #[error("encoding the {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}
