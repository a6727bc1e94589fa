//! Signatures and attestations in cosign's classic registry layout, so that `cosign verify --key`
//! and `cosign verify-attestation --key` (and admission controllers built on cosign's library:
//! policy-controller, Kyverno, Connaisseur) accept what whittle pushes.
//!
//! The layout, as cosign v2 writes and reads it (`pkg/oci/static`, `pkg/oci/mutate`,
//! `pkg/cosign/verify.go`):
//! - a signature of manifest `sha256:H` lives in the same repository under tag `sha256-H.sig`:
//!   an OCI image manifest whose layer is the simple-signing payload
//!   (`application/vnd.dev.cosign.simplesigning.v1+json`) and whose layer annotation
//!   `dev.cosignproject.cosign/signature` holds the base64 ECDSA signature of that payload;
//! - an attestation lives under `sha256-H.att`: the layer is a DSSE envelope
//!   (`application/vnd.dsse.envelope.v1+json`) of an in-toto statement, its signature inside the
//!   envelope over the DSSE pre-authentication encoding, and the layer is annotated with the
//!   statement's `predicateType`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::SignError;
use super::keys::SigningKey;
use crate::image::distribution::reference::{ImageRef, is_sha256_digest};
use crate::image::distribution::store::{Location, Store};
use crate::image::media::Flavor;

/// The layer annotation that carries a signature (empty on attestations, as cosign leaves it).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The media type of an attestation layer.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The DSSE payload type of an in-toto statement; cosign rejects envelopes with another.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The `critical.type` cosign writes and checks.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

// cosign's artifacts are OCI images whatever the signed image's flavour.
const OCI_MANIFEST: &str = Flavor::Oci.manifest_type();
const OCI_CONFIG: &str = Flavor::Oci.config_type();

/// The simple-signing payload cosign signs, byte for byte as its Go code marshals it (field
/// order as declared, `optional` null when there are no annotations).
#[derive(Serialize)]
struct SimpleSigning<'a> {
    critical: Critical<'a>,
    optional: Option<BTreeMap<String, Value>>,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: SignedImage<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct SignedImage<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

/// The simple-signing payload for `docker_reference` (`registry/repository`) at `digest`.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity { docker_reference },
            image: SignedImage {
                docker_manifest_digest: digest,
            },
            kind: COSIGN_SIGNATURE_TYPE,
        },
        optional: None,
    };
    // Serializing plain strings into JSON cannot fail.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The repository as cosign names it in `docker-reference` (go-containerregistry's
/// `Repository.Name()`): Docker Hub is `index.docker.io`.
fn docker_reference(r: &ImageRef) -> String {
    let registry = match r.registry() {
        "docker.io" => "index.docker.io",
        other => other,
    };
    format!("{registry}/{}", r.repository())
}

/// DSSE's pre-authentication encoding, the bytes a DSSE signature covers.
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "payloadType")]
    payload_type: &'a str,
    payload: String,
    signatures: [EnvelopeSignature; 1],
}

#[derive(Serialize)]
struct EnvelopeSignature {
    /// Empty, as cosign writes it: a key id would restrict which verifier keys are tried.
    keyid: String,
    sig: String,
}

/// Signs `manifest_digest` of `image`'s repository and stores the signature where cosign looks
/// for it (`<repo>:sha256-<hex>.sig`). Returns the signature's reference,
/// `registry/repo:sha256-<hex>.sig@sha256:…`.
///
/// An existing `.sig` manifest (say, cosign's own signatures of the same image) is replaced,
/// not appended to.
pub async fn sign_image(
    store: &Store,
    image: &Location,
    manifest_digest: &str,
    key: &SigningKey,
) -> Result<String, SignError> {
    let repo = registry_ref(image, manifest_digest)?;
    let payload = simple_signing_payload(&docker_reference(repo), manifest_digest);
    let signature = BASE64.encode(key.sign(&payload));
    let annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature)]);
    push_artifact(
        store,
        repo,
        manifest_digest,
        Artifact {
            what: "signature",
            suffix: "sig",
            media_type: SIMPLE_SIGNING_MEDIA_TYPE,
            layer: payload,
            annotations,
        },
    )
    .await
}

/// Signs an in-toto `statement` about `manifest_digest` of `image` as a DSSE envelope and
/// stores it where cosign looks for attestations (`<repo>:sha256-<hex>.att`), annotated with
/// `predicate_type`. Returns the attestation's reference.
///
/// The statement must name the digest among its subjects (cosign checks that) and, when it
/// states a `predicateType`, the same one. An existing `.att` manifest is replaced.
pub async fn attest(
    store: &Store,
    image: &Location,
    manifest_digest: &str,
    statement: &Value,
    predicate_type: &str,
    key: &SigningKey,
) -> Result<String, SignError> {
    let repo = registry_ref(image, manifest_digest)?;
    check_subject(image, manifest_digest, statement, predicate_type)?;
    let payload = serde_json::to_vec(statement).map_err(|e| SignError::Encode {
        what: "statement",
        detail: e.to_string(),
    })?;
    let signature = key.sign(&dsse_pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE,
        payload: BASE64.encode(&payload),
        signatures: [EnvelopeSignature {
            keyid: String::new(),
            sig: BASE64.encode(signature),
        }],
    };
    let layer = serde_json::to_vec(&envelope).map_err(|e| SignError::Encode {
        what: "DSSE envelope",
        detail: e.to_string(),
    })?;
    let annotations = BTreeMap::from([
        // cosign sets the signature annotation on attestations too, empty.
        (SIGNATURE_ANNOTATION.to_string(), String::new()),
        ("predicateType".to_string(), predicate_type.to_string()),
    ]);
    push_artifact(
        store,
        repo,
        manifest_digest,
        Artifact {
            what: "attestation",
            suffix: "att",
            media_type: DSSE_MEDIA_TYPE,
            layer,
            annotations,
        },
    )
    .await
}

/// The registry reference of `image`, when `manifest_digest` is a digest to sign.
fn registry_ref<'a>(image: &'a Location, manifest_digest: &str) -> Result<&'a ImageRef, SignError> {
    let Location::Registry(repo) = image else {
        return Err(SignError::NotARegistry {
            reference: image.to_string(),
        });
    };
    if !is_sha256_digest(manifest_digest) {
        return Err(SignError::Digest {
            reference: image.to_string(),
            digest: manifest_digest.to_string(),
        });
    }
    Ok(repo)
}

/// Refuses a statement cosign would reject, before anything is pushed.
fn check_subject(
    image: &Location,
    manifest_digest: &str,
    statement: &Value,
    predicate_type: &str,
) -> Result<(), SignError> {
    let fail = |detail: String| SignError::Subject {
        reference: image.to_string(),
        digest: manifest_digest.to_string(),
        detail,
    };
    let hex = manifest_digest.trim_start_matches("sha256:");
    let subjects = statement["subject"]
        .as_array()
        .ok_or_else(|| fail("it has no subject list".into()))?;
    if !subjects
        .iter()
        .any(|s| s["digest"]["sha256"].as_str() == Some(hex))
    {
        return Err(fail("no subject has that sha256 digest".into()));
    }
    match statement["predicateType"].as_str() {
        Some(t) if t != predicate_type => Err(fail(format!(
            "its predicateType is {t}, not {predicate_type}"
        ))),
        _ => Ok(()),
    }
}

/// One signature or attestation layer and where it goes.
struct Artifact {
    what: &'static str,
    suffix: &'static str,
    media_type: &'static str,
    layer: Vec<u8>,
    annotations: BTreeMap<String, String>,
}

/// The image config go-containerregistry computes for cosign's signature images: an empty
/// image with one (uncompressed) layer per signature, zero times.
#[derive(Serialize)]
struct SignatureConfig<'a> {
    architecture: &'a str,
    created: &'a str,
    history: [History<'a>; 1],
    os: &'a str,
    rootfs: RootFs<'a>,
    config: Empty,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a str; 1],
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: [Descriptor<'a>; 1],
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: usize,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

/// Stores `artifact` as a one-layer OCI image under `<repo>:sha256-<hex>.<suffix>`.
async fn push_artifact(
    store: &Store,
    repo: &ImageRef,
    manifest_digest: &str,
    artifact: Artifact,
) -> Result<String, SignError> {
    let hex = manifest_digest.trim_start_matches("sha256:");
    let dst = Location::Registry(repo.at_tag(&format!("sha256-{hex}.{}", artifact.suffix)));
    let store_err = |source| SignError::Store {
        what: artifact.what,
        reference: dst.to_string(),
        source: Box::new(source),
    };
    let layer_size = artifact.layer.len();
    let layer_digest = sha256(&artifact.layer);
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = SignatureConfig {
        architecture: "",
        created: ZERO_TIME,
        history: [History { created: ZERO_TIME }],
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [&layer_digest],
        },
        config: Empty {},
    };
    let config = serde_json::to_vec(&config).map_err(|e| SignError::Encode {
        what: "signature image config",
        detail: e.to_string(),
    })?;
    let config_size = config.len();
    let config_digest = sha256(&config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: Descriptor {
            media_type: OCI_CONFIG,
            size: config_size,
            digest: &config_digest,
            annotations: None,
        },
        layers: [Descriptor {
            media_type: artifact.media_type,
            size: layer_size,
            digest: &layer_digest,
            annotations: Some(&artifact.annotations),
        }],
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| SignError::Encode {
        what: "signature manifest",
        detail: e.to_string(),
    })?;
    let (stored_layer, stored_config) = futures::try_join!(
        store.put_blob(&dst, Bytes::from(artifact.layer)),
        store.put_blob(&dst, Bytes::from(config)),
    )
    .map_err(store_err)?;
    debug_assert_eq!((stored_layer, stored_config), (layer_digest, config_digest));
    let digest = store
        .put_manifest(&dst, manifest, OCI_MANIFEST)
        .await
        .map_err(store_err)?;
    Ok(dst.pushed(&digest))
}

fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{:x}", Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_what_cosign_marshals() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let payload = simple_signing_payload("127.0.0.1:5000/shop/web", &digest);
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/shop/web"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        let hub = ImageRef::parse("busybox:1").unwrap();
        assert_eq!(docker_reference(&hub), "index.docker.io/library/busybox");
    }

    #[test]
    fn pae_matches_the_dsse_spec() {
        // The example of the DSSE protocol document.
        assert_eq!(
            dsse_pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
