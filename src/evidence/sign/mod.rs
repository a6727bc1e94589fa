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
//!
//! Keys are ECDSA P-256 (what `cosign generate-key-pair` makes): PKCS#8 or SEC1 PEM, or cosign's
//! own encrypted PEM (scrypt + nacl secretbox), opened with `COSIGN_PASSWORD` as cosign does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::der::pem;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding, ObjectIdentifier};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::ImageError;
use crate::image::distribution::reference::{ImageRef, is_sha256_digest};
use crate::image::distribution::store::{Location, Store};

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
/// Where the password of an encrypted cosign key comes from, as for cosign itself.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

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

/// An ECDSA P-256 private key, as cosign uses them.
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    /// Where the key came from, for error messages.
    origin: String,
}

impl fmt::Debug for SigningKey {
    // Never the secret: only where it came from and its public half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("origin", &self.origin)
            .field("public_key", &self.public_key_pem())
            .finish()
    }
}

impl SigningKey {
    /// Loads a PEM key file; an encrypted cosign key is opened with `COSIGN_PASSWORD` (an empty
    /// value is a valid, empty password, as for cosign).
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let password = std::env::var_os(PASSWORD_ENV).map(|p| p.into_encoded_bytes());
        SigningKey::load_with_password(path, password.as_deref())
    }

    /// Loads a PEM key file with the password given here (for callers that keep it elsewhere
    /// than the environment, e.g. in a Kubernetes Secret).
    pub fn load_with_password(
        path: &Path,
        password: Option<&[u8]>,
    ) -> Result<SigningKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = Zeroizing::new(text);
        SigningKey::from_pem(&text, &path.display().to_string(), password)
    }

    /// Reads the first private key of a PEM text. `origin` names it in errors.
    pub fn from_pem(
        text: &str,
        origin: &str,
        password: Option<&[u8]>,
    ) -> Result<SigningKey, SignError> {
        let origin = origin.to_string();
        let blocks = pem_blocks(text);
        // The first private key: `openssl ecparam -genkey` writes an EC PARAMETERS block before
        // it, and bundles put certificates next to it.
        let Some((label, block)) = blocks
            .iter()
            .find(|(l, _)| l.ends_with("PRIVATE KEY"))
            .or(blocks.first())
            .copied()
        else {
            return Err(SignError::NoPem { origin });
        };
        let malformed = |detail: String| SignError::Malformed {
            origin: origin.clone(),
            detail,
        };
        let (_, der) = pem::decode_vec(block.as_bytes())
            .map_err(|e| malformed(format!("the {label} PEM block does not decode: {e}")))?;
        let der = Zeroizing::new(der);
        let secret = match label {
            "PRIVATE KEY" => pkcs8_key(&der, &origin)?,
            "EC PRIVATE KEY" => sec1_key(&der, &origin)?,
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let Some(password) = password else {
                    return Err(SignError::NeedsPassword { origin });
                };
                let plain = open_cosign_key(&der, password, &origin)?;
                pkcs8_key(&plain, &origin)?
            }
            "RSA PRIVATE KEY" => {
                return Err(SignError::WrongKind {
                    origin,
                    found: "RSA".into(),
                });
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(SignError::WrongKind {
                    origin,
                    found: "an OpenSSH key".into(),
                });
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(malformed(
                    "a password-protected PKCS#8 key (ENCRYPTED PRIVATE KEY); decrypt it with `openssl pkey` or use a cosign key with COSIGN_PASSWORD".into(),
                ));
            }
            other => {
                return Err(SignError::Label {
                    origin,
                    label: other.to_string(),
                });
            }
        };
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(secret),
            origin,
        })
    }

    /// A fresh key from the system's random number generator.
    pub fn generate() -> Result<SigningKey, SignError> {
        let secret =
            p256::SecretKey::try_generate().map_err(|e| SignError::Random(e.to_string()))?;
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(secret),
            origin: "generated".into(),
        })
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), what [`SigningKey::load`]
    /// and `cosign import-key-pair` read.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SignError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SignError::Encode {
                what: "private key",
                detail: e.to_string(),
            })
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`): what `cosign verify --key`
    /// takes.
    pub fn public_key_pem(&self) -> String {
        // Encoding a valid P-256 point into SPKI cannot fail; an empty string would make any
        // verifier reject it loudly rather than accept something wrong.
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Where the key came from (its file, or `generated`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// ECDSA-P256-SHA256 signature of `message`, ASN.1 DER encoded (what cosign's verifier,
    /// Go's `ecdsa.VerifyASN1`, reads).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

/// The `-----BEGIN X-----` … `-----END X-----` blocks of a text, in order, with their labels.
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        blocks.push((label, &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// A P-256 key from PKCS#8 DER, or an error naming the kind of key it holds.
fn pkcs8_key(der: &[u8], origin: &str) -> Result<p256::SecretKey, SignError> {
    use p256::pkcs8::DecodePrivateKey;
    let info = p256::pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|e| SignError::Malformed {
        origin: origin.to_string(),
        detail: format!("not a PKCS#8 private key: {e}"),
    })?;
    let algorithm = info.algorithm.oid;
    if algorithm != OID_EC_PUBLIC_KEY {
        return Err(SignError::WrongKind {
            origin: origin.to_string(),
            found: algorithm_name(algorithm),
        });
    }
    let curve = info.algorithm.parameters_oid().ok();
    if curve != Some(OID_P256) {
        return Err(SignError::WrongKind {
            origin: origin.to_string(),
            found: curve.map_or_else(|| "EC, curve not named".into(), curve_name),
        });
    }
    p256::SecretKey::from_pkcs8_der(der).map_err(|e| SignError::Malformed {
        origin: origin.to_string(),
        detail: format!("the P-256 key does not decode: {e}"),
    })
}

/// A P-256 key from SEC1 `ECPrivateKey` DER.
fn sec1_key(der: &[u8], origin: &str) -> Result<p256::SecretKey, SignError> {
    p256::SecretKey::from_sec1_der(der).map_err(|e| {
        // The curve's OID is in the key's parameters; naming it is only for the message, so
        // finding its encoding in the bytes is enough.
        let other_curve = [
            ("EC P-384", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22][..]),
            ("EC P-521", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23][..]),
            (
                "EC secp256k1",
                &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a][..],
            ),
        ]
        .into_iter()
        .find(|(_, oid)| der.windows(oid.len()).any(|w| w == *oid));
        match other_curve {
            Some((name, _)) => SignError::WrongKind {
                origin: origin.to_string(),
                found: name.to_string(),
            },
            None => SignError::Malformed {
                origin: origin.to_string(),
                detail: format!("not a SEC1 P-256 private key: {e}"),
            },
        }
    })
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => format!("algorithm {other}"),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.34" => "EC P-384".into(),
        "1.3.132.0.35" => "EC P-521".into(),
        "1.3.132.0.10" => "EC secp256k1".into(),
        other => format!("EC curve {other}"),
    }
}

/// The JSON inside cosign's encrypted PEM (go-securesystemslib's `encrypted` package).
#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    /// base64, as Go marshals `[]byte`.
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Decrypts cosign's encrypted key format to the PKCS#8 DER inside.
fn open_cosign_key(
    json: &[u8],
    password: &[u8],
    origin: &str,
) -> Result<Zeroizing<Vec<u8>>, SignError> {
    let malformed = |detail: String| SignError::Malformed {
        origin: origin.to_string(),
        detail,
    };
    let data: EncryptedKey = serde_json::from_slice(json)
        .map_err(|e| malformed(format!("the encrypted cosign key is not its JSON: {e}")))?;
    if data.kdf.name != "scrypt" {
        return Err(malformed(format!(
            "encrypted with key derivation {:?}; cosign keys use scrypt",
            data.kdf.name
        )));
    }
    if data.cipher.name != "nacl/secretbox" {
        return Err(malformed(format!(
            "encrypted with cipher {:?}; cosign keys use nacl/secretbox",
            data.cipher.name
        )));
    }
    // The parameter sets go-securesystemslib writes (legacy, standard, OWASP); anything else
    // is refused as it does, which also bounds the memory a hostile file can make scrypt take.
    let KdfParams { n, r, p } = data.kdf.params;
    let log_n = match (n, r, p) {
        (32768, 8, 1) => 15,
        (65536, 8, 1) => 16,
        (131072, 8, 1) => 17,
        _ => {
            return Err(malformed(format!(
                "unsupported scrypt parameters N={n} r={r} p={p} (cosign writes N=32768, 65536 or 131072 with r=8, p=1)"
            )));
        }
    };
    let decode = |what: &str, s: &str| {
        BASE64
            .decode(s)
            .map_err(|e| malformed(format!("the {what} is not base64: {e}")))
    };
    let salt = decode("salt", &data.kdf.salt)?;
    let nonce = decode("nonce", &data.cipher.nonce)?;
    let ciphertext = decode("ciphertext", &data.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| malformed("the secretbox nonce is not 24 bytes".into()))?;
    let params = scrypt::Params::new(log_n, r, p)
        .map_err(|e| malformed(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, key.as_mut())
        .map_err(|e| malformed(format!("scrypt: {e}")))?;
    let cipher = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(key.as_ref()));
    let plain = cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            ciphertext.as_slice(),
        )
        .map_err(|_| SignError::Decrypt {
            origin: origin.to_string(),
        })?;
    Ok(Zeroizing::new(plain))
}

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

    #[test]
    fn signatures_verify_with_the_public_key() {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let key = SigningKey::generate().unwrap();
        let pem = key.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let public = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap();
        let der = key.sign(b"payload");
        let signature = p256::ecdsa::Signature::from_der(&der).unwrap();
        public.verify(b"payload", &signature).unwrap();
        assert!(public.verify(b"other", &signature).is_err());
    }

    #[test]
    fn pkcs8_and_sec1_keys_load() {
        let key = SigningKey::generate().unwrap();
        let pkcs8 = key.to_pkcs8_pem().unwrap();
        let loaded = SigningKey::from_pem(&pkcs8, "k.pem", None).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());

        let sec1 = p256::SecretKey::from(key.key.as_nonzero_scalar())
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        // As `openssl ecparam -genkey` writes it: parameters first.
        let text = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        let loaded = SigningKey::from_pem(&text, "k.pem", None).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());
    }

    // Throwaway keys made for these tests: `openssl genpkey` (RSA 512, P-384), `openssl ecparam
    // -genkey` (P-384 SEC1), and `cosign generate-key-pair` v2.6.5 with COSIGN_PASSWORD
    // `whittle-unit-test`.
    const RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEArCkT+fs+BxPdV50p\nN9Fxlt/WeyuOsxKkepG2RuLZbZoEbUtqcyPJieWDxjfzcat67IcymZ0ntH/Ps5pv\n7Jy03QIDAQABAkA4uG/0dGpDOrA6JXVnBoI+CxFHE1q4dPPrzgYX5LVt/j3nbTm3\nk39LZ7O9kflQV/7MTTcmfUahZTYMOCw7zT0BAiEA3G6jpY3RSFoHDQPe9Svb8fzO\nNs8RmUb7R0qZ2yJqQ8UCIQDH8HxQdT4gEttYD2SUA2Zzi1LiU9XbpsLzYkn9XLkG\nOQIhAMrOvJ/QKDJCKmSOIC9ASB+Pcgc5Yr68cOp5t67HLi/lAiBFnBub44XSot4N\nBabtxVVJCwu7UpbVV3TuSZ0bAcpFOQIgREUxmvvpnnqc/UinVP0HXUEb4FigktQ4\nxmmaBSMW6co=\n-----END PRIVATE KEY-----\n";
    const P384_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAs56iH0vDMJHHCU0Vk\nYURAdp20UIn/2j+0R3jSQKz6aw8Nz/5dz9CpO18t7CU4OnahZANiAASKP1ut2ddt\nh+piAkf4fL/FiuMiMIzPO12hyP3v1Mm9Pg1iVYPXw9AJCdjfmLu23dHHeg/e3GSt\nF1quK2E/NllAQxXfA1uUvaPaZYPQEqirRyZTlEHwnHQK9BYZBApearw=\n-----END PRIVATE KEY-----\n";
    const P384_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMIGkAgEBBDATT/n7xSRNs4aQJh69VFWPCSh1gue5j2bfOrMg3ISr7fv8cx5DTIAt\ncu25TUovlHmgBwYFK4EEACKhZANiAASW8dWg+mlQtfIewBxSElvjWCbhtYHyimMV\n+Ff81QQTGr8OPgE3Nj16SD8mn3ILlOf4FAlU+EqgcE7z1evu4oLQqYsXHH0OZ3R1\nMx7b63F61brpA7dWp+VV5ZVT/xLlKRs=\n-----END EC PRIVATE KEY-----\n";
    const ED25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const COSIGN_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6\nOCwicCI6MX0sInNhbHQiOiJkanFIaGhvOHBRR0lldW16WWd6OWJZN3dpSCs1cnQ0\nc3YzbzhZeHNMNVpvPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94\nIiwibm9uY2UiOiIraFRyRHQyZmxtQnJab0RLU3pTWncvL0VmcEN3cVB1ZyJ9LCJj\naXBoZXJ0ZXh0IjoiNlB4eHM4VUVIUXFMZ2VlSUVDUzBoNnFlejlub0Jvc2tZRDha\nMVg4SFF5S1hTRWhrZlBKRVEzQXlxa0o5WWc5ZDAxUlJ3RTgvVU4vcFRySkdCeFhU\neFo5bk5HUER5QkZSTHFla0JYd1k2WjMyTzBVaWRTNktrVytGdlQvd1VqMENvZ1Nt\naHBjRFFraEliOEt2Sml1RE1RT1N4RmVwdTdJaEo4SVJaOHhEMHJjRURPZWlZSGxC\nUVFYYnNRa2FVdmxnZmtWbWFWUTdkU0paYUE9PSJ9\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMqc89dUxxaxs3OE/ovGd50UuD7GN\nUv4IaxgdcjxOsUsYZZB8c9OBWCm6c3VS3CcJ91AAQG2gaZdN4f9zDNTL4A==\n-----END PUBLIC KEY-----\n";

    fn refusal(text: &str) -> String {
        let err = SigningKey::from_pem(text, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::WrongKind { .. }), "{err}");
        err.to_string().split(';').next().unwrap().to_string()
    }

    #[test]
    fn other_keys_are_refused_with_what_they_are() {
        let not = "signing key /k.pem: not an EC P-256 key";
        assert_eq!(refusal(RSA_PKCS8), format!("{not} (found RSA)"));
        assert_eq!(refusal(P384_PKCS8), format!("{not} (found EC P-384)"));
        assert_eq!(refusal(P384_SEC1), format!("{not} (found EC P-384)"));
        assert_eq!(refusal(ED25519_PKCS8), format!("{not} (found Ed25519)"));
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(refusal(pkcs1), format!("{not} (found RSA)"));
        let err = SigningKey::from_pem("hello", "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::NoPem { .. }), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let err = SigningKey::from_pem(cert, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::Label { .. }), "{err}");
        let err = SigningKey::from_pem(COSIGN_PUB, "/k.pub", None).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("give the private key (cosign.key)"),
            "{err}"
        );
        // A certificate before the key, as in a bundle.
        let bundle = format!("{cert}{P384_SEC1}");
        assert_eq!(refusal(&bundle), format!("{not} (found EC P-384)"));
    }

    #[test]
    fn encrypted_cosign_keys_open_with_the_password() {
        let err = SigningKey::from_pem(COSIGN_KEY, "/k.pem", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signing key /k.pem: encrypted cosign key needs COSIGN_PASSWORD"
        );
        // cosign's older label holds the same format.
        let old = COSIGN_KEY.replace("SIGSTORE", "COSIGN");
        let err = SigningKey::from_pem(&old, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::NeedsPassword { .. }), "{err}");
        // One scrypt derivation only: unoptimised (test profile) it takes seconds. The wrong
        // password is tried in tests/signing.rs.
        let key = SigningKey::from_pem(COSIGN_KEY, "/k.pem", Some(b"whittle-unit-test")).unwrap();
        assert_eq!(key.public_key_pem(), COSIGN_PUB);
    }
}
