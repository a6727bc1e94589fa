//! The profile a hardened image was made from, attached to it as an OCI referrer (as its SBOM
//! is), so that a new source can be hardened from it later with no cluster and no observation:
//! `whittle harden NEW --profile HARDENED`, and the operator's continuous re-harden.
//!
//! The profile is the sensor reports harden used, merged into one ([`merged`]), without what
//! harden never reads and a registry reader should not learn: the app's command line (which may
//! carry a password) and the pod that ran it ([`portable`]). It still tells whoever can read the
//! registry which files the app opened and ran.
//!
//! It comes back from a registry, so nothing about it is trusted: the listing and the artifact
//! manifest are read within the manifest cap, the blob is refused above the report codec's
//! limit before any of it is read and verified against its digest as it arrives, and it is
//! decoded by the one report codec (whose inflation is bounded too).

use bytes::Bytes;
use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use serde_json::Value;
use whittle_sensor::codec::{self, ReadReportError};
use whittle_sensor::report::{Identity, MAX_JSON_BYTES, Report};

use crate::image::ImageError;
use crate::image::distribution::reference::is_sha256_digest;
use crate::image::distribution::store::{Attached, Blob, Location, Store};
use crate::image::harden::Summary;
use crate::image::limits::size_text;
use crate::image::media::is_index;
use crate::reports::merge::merge;

/// The artifact's type, as `oras discover --artifact-type` and the referrers API filter it.
pub const ARTIFACT_TYPE: &str = "application/vnd.whittle.profile.v1+json";
/// Its one blob: the report JSON, gzip-compressed as the sensor sends reports.
pub const MEDIA_TYPE: &str = "application/vnd.whittle.profile.v1+json+gzip";
pub const TITLE: &str = "profile.json.gz";
/// The largest profile blob read: the report codec's limit on the JSON, which compressed
/// JSON stays well under.
pub const MAX_BLOB_BYTES: u64 = MAX_JSON_BYTES as u64;
/// The most referrers of one image looked at. Each is an entry of one listing (itself within
/// the manifest cap); an image carries a few (SBOM, profile, signatures' artifacts).
pub const MAX_REFERRERS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "{image} is in an oci: layout, which holds no referrers; profiles are attached to hardened images in a registry"
    )]
    NotInRegistry { image: String },
    #[error(
        "hardened image {image} has no whittle profile attached (was it hardened by an older whittle, or with --no-profile?); harden from the sensor reports instead, or re-harden with them to attach one"
    )]
    NotAttached { image: String },
    #[error(
        "hardened image {image} has {} whittle profiles attached ({}); whittle will not guess which one made it: name the one to use, e.g. {}",
        artifacts.len(), artifacts.join(", "), artifacts[0]
    )]
    Several {
        image: String,
        artifacts: Vec<String>,
    },
    #[error(
        "{image} has {count} referrers, more than the {MAX_REFERRERS} whittle looks at; name the profile artifact itself (registry/repo@sha256:...)"
    )]
    TooManyReferrers { image: String, count: usize },
    #[error(
        "{image} is an image index; a hardened image is one manifest: name it by its digest (registry/repo@sha256:...)"
    )]
    Index { image: String },
    #[error("{reference} is not a whittle profile: {detail}")]
    NotAProfile { reference: String, detail: String },
    #[error(
        "the profile {reference} is {size} bytes, as its manifest says; a profile is at most {} (the report limit), so it is refused without being read",
        size_text(MAX_BLOB_BYTES)
    )]
    TooLarge { reference: String, size: i64 },
    #[error("reading the profile {reference}: {detail}")]
    Blob { reference: String, detail: String },
    #[error("the profile {reference} cannot be read: {source}")]
    Decode {
        reference: String,
        #[source]
        source: ReadReportError,
    },
    #[error("the profile cannot be serialized: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("attaching the profile to {image}: {source}")]
    Attach {
        image: String,
        #[source]
        source: ImageError,
    },
    #[error("reading the profile of {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: ImageError,
    },
}

type Result<T, E = ProfileError> = std::result::Result<T, E>;

/// One report of several, as harden reads them: what any of them saw is kept.
pub fn merged(reports: impl IntoIterator<Item = Report>) -> Option<Report> {
    reports.into_iter().reduce(|mut into, other| {
        merge(&mut into, other);
        into
    })
}

/// `report` without what harden never reads and a registry reader should not learn: the
/// command line (it may carry a password) and which pod, namespace and container ran it.
/// The source image it was observed on stays: it says what the profile was made for.
pub fn portable(report: &Report) -> Report {
    Report {
        argv: Vec::new(),
        identity: Identity {
            image: report.identity.image.clone(),
            ..Identity::default()
        },
        ..report.clone()
    }
}

/// The blob: [`portable`] `profile` as gzip JSON. The same reports give the same bytes (maps
/// are ordered, gzip's header carries no time), so attaching again adds nothing.
pub fn encode(profile: &Report) -> Result<Vec<u8>> {
    Ok(codec::gzip_json(&portable(profile))?)
}

/// A profile blob, by the one report codec: gzip, at most [`MAX_JSON_BYTES`] inflated.
pub fn decode(reference: &str, blob: &[u8]) -> Result<Report> {
    let decode = |source| ProfileError::Decode {
        reference: reference.to_string(),
        source,
    };
    if !blob.starts_with(&[0x1f, 0x8b]) {
        return Err(ProfileError::NotAProfile {
            reference: reference.to_string(),
            detail: format!("its {MEDIA_TYPE} blob is not gzip"),
        });
    }
    codec::read_gzip_report(blob, MAX_JSON_BYTES).map_err(decode)
}

/// Attaches `profile` (the merged reports the harden used: [`merged`]) to the hardened image
/// `summary` describes, as an OCI referrer of type [`ARTIFACT_TYPE`]; `None` when the image
/// went to an oci: layout, which has no referrers. `whittle harden`, `whittle local` and the
/// operator call this after the harden (and its verification, where there is one).
pub async fn attach(
    store: &Store,
    summary: &Summary,
    profile: &Report,
) -> Result<Option<Attached>> {
    let image = summary.hardened_image.clone();
    let attach_error = |source| ProfileError::Attach {
        image: image.clone(),
        source,
    };
    let subject = Location::parse(&summary.hardened_image).map_err(attach_error)?;
    if matches!(subject, Location::Layout(_)) {
        return Ok(None);
    }
    let content = Bytes::from(encode(profile)?);
    let blob = Blob {
        media_type: MEDIA_TYPE,
        title: TITLE,
        content,
    };
    store
        .attach_blob(
            &subject,
            summary.hardened_manifest_size,
            ARTIFACT_TYPE,
            blob,
        )
        .await
        .map(Some)
        .map_err(attach_error)
}

/// A profile read back from a registry.
#[derive(Debug)]
pub struct Fetched {
    pub profile: Report,
    /// The profile artifact: `registry/repo@sha256:...`.
    pub artifact: String,
    /// The hardened image it is attached to: `registry/repo@sha256:...`.
    pub image: String,
    /// The sha256 of the blob, as provenance names a material.
    pub blob_digest: String,
}

/// The profile attached to the hardened image `image` names (a tag or a digest); or, when
/// `image` names a profile artifact itself, that one.
pub async fn fetch(store: &Store, image: &Location) -> Result<Fetched> {
    let named = image.to_string();
    if matches!(image, Location::Layout(_)) {
        return Err(ProfileError::NotInRegistry { image: named });
    }
    let registry_error = |source| ProfileError::Registry {
        image: named.clone(),
        source,
    };
    let (body, digest) = store.manifest(image).await.map_err(registry_error)?;
    let value = parse(&named, &body)?;
    let (artifact_at, artifact, subject) = if value["artifactType"].as_str() == Some(ARTIFACT_TYPE)
    {
        let subject = subject_of(&named, &value)?;
        (image.at_digest(&digest), value, subject)
    } else if is_index(&value) {
        return Err(ProfileError::Index { image: named });
    } else {
        let subject = image.at_digest(&digest);
        let at = attached(store, &subject).await?;
        let (body, _) = store.manifest(&at).await.map_err(registry_error)?;
        let value = parse(&at.to_string(), &body)?;
        if value["artifactType"].as_str() != Some(ARTIFACT_TYPE) {
            return Err(ProfileError::NotAProfile {
                reference: at.to_string(),
                detail: format!(
                    "its artifactType is {}, not {ARTIFACT_TYPE}",
                    value["artifactType"]
                ),
            });
        }
        // A referrers tag is an index anyone who can push may write: the artifact must
        // say itself that it belongs to this image.
        let named_subject = subject_of(&at.to_string(), &value)?;
        if named_subject != digest {
            return Err(ProfileError::NotAProfile {
                reference: at.to_string(),
                detail: format!("it is attached to {named_subject}, not to {digest}"),
            });
        }
        (at, value, digest.clone())
    };
    let reference = artifact_at.to_string();
    let desc = blob_of(&reference, &artifact)?;
    let blob = read_blob(store, &artifact_at, &desc).await?;
    let profile = decode(&reference, &blob)?;
    Ok(Fetched {
        profile,
        artifact: reference,
        image: image.at_digest(&subject).to_string(),
        blob_digest: desc.digest,
    })
}

/// The one profile artifact among `subject`'s referrers.
async fn attached(store: &Store, subject: &Location) -> Result<Location> {
    let image = subject.to_string();
    let index = store
        .referrers(subject)
        .await
        .map_err(|source| ProfileError::Registry {
            image: image.clone(),
            source,
        })?;
    if index.manifests.len() > MAX_REFERRERS {
        return Err(ProfileError::TooManyReferrers {
            image,
            count: index.manifests.len(),
        });
    }
    let mut profiles: Vec<&str> = index
        .manifests
        .iter()
        .filter(|m| m.artifact_type.as_deref() == Some(ARTIFACT_TYPE))
        .map(|m| m.digest.as_str())
        .collect();
    profiles.sort_unstable();
    profiles.dedup();
    for digest in &profiles {
        if !is_sha256_digest(digest) {
            return Err(ProfileError::NotAProfile {
                reference: image,
                detail: format!("its referrers name a profile by {digest:?}, not a sha256 digest"),
            });
        }
    }
    match profiles.as_slice() {
        [] => Err(ProfileError::NotAttached { image }),
        [one] => Ok(subject.at_digest(one)),
        several => Err(ProfileError::Several {
            image,
            artifacts: several
                .iter()
                .map(|d| subject.at_digest(d).to_string())
                .collect(),
        }),
    }
}

fn parse(reference: &str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| ProfileError::NotAProfile {
        reference: reference.to_string(),
        detail: format!("its manifest is not JSON: {e}"),
    })
}

fn subject_of(reference: &str, artifact: &Value) -> Result<String> {
    match artifact["subject"]["digest"].as_str() {
        Some(d) if is_sha256_digest(d) => Ok(d.to_string()),
        _ => Err(ProfileError::NotAProfile {
            reference: reference.to_string(),
            detail: "it names no subject image".into(),
        }),
    }
}

/// The artifact's one blob, refused when the manifest says it is over the budget.
fn blob_of(reference: &str, artifact: &Value) -> Result<OciDescriptor> {
    let not = |detail: String| ProfileError::NotAProfile {
        reference: reference.to_string(),
        detail,
    };
    let layers = artifact["layers"].as_array().map_or(&[][..], Vec::as_slice);
    let [layer] = layers else {
        return Err(not(format!("it has {} blobs, not one", layers.len())));
    };
    let desc: OciDescriptor = serde_json::from_value(layer.clone())
        .map_err(|e| not(format!("its blob is not a descriptor: {e}")))?;
    if desc.media_type != MEDIA_TYPE {
        return Err(not(format!(
            "its blob is {}, not {MEDIA_TYPE}",
            desc.media_type
        )));
    }
    if !is_sha256_digest(&desc.digest) {
        return Err(not(format!(
            "its blob's digest {} is not sha256",
            desc.digest
        )));
    }
    if desc.size < 0 || desc.size as u64 > MAX_BLOB_BYTES {
        return Err(ProfileError::TooLarge {
            reference: reference.to_string(),
            size: desc.size,
        });
    }
    Ok(desc)
}

/// The blob, verified against `desc` as it streams (its size was bounded by [`blob_of`]; the
/// stream fails as soon as the registry sends more than that).
async fn read_blob(store: &Store, at: &Location, desc: &OciDescriptor) -> Result<Vec<u8>> {
    let reference = at.to_string();
    let failed = |detail: String| ProfileError::Blob {
        reference: reference.clone(),
        detail,
    };
    let stream = store
        .blob_stream(at, desc)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::with_capacity(desc.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| failed(e.to_string()))?;
        if (out.len() + chunk.len()) as u64 > MAX_BLOB_BYTES {
            return Err(ProfileError::TooLarge {
                reference: reference.clone(),
                size: desc.size,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::distribution::credentials::Credentials;
    use crate::image::distribution::registry::RegistryOptions;
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use whittle_sensor::report::{Access, Mode, PathRecord};

    fn report(pod: &str, paths: &[&str]) -> Report {
        Report {
            schema_version: whittle_sensor::report::SCHEMA_VERSION,
            sensor_version: "0.1.0".into(),
            mode: Mode::Seccomp,
            identity: Identity {
                pod_name: Some(pod.into()),
                pod_namespace: Some("shop".into()),
                container_name: Some("web".into()),
                image: Some("registry.example/shop/web:1".into()),
            },
            started_at_ms: 1000,
            stopped_at_ms: 2000,
            argv: vec!["/app".into(), "--db-password=hunter2".into()],
            exit_status: 0,
            paths: paths
                .iter()
                .map(|p| {
                    let record = PathRecord {
                        access: vec![Access::Open],
                        exists: true,
                        first_seen_ms: 5,
                        count: 1,
                    };
                    (p.to_string(), record)
                })
                .collect(),
            executables: BTreeMap::new(),
            created_files: vec![],
            loss: Default::default(),
        }
    }

    #[test]
    fn the_profile_round_trips_without_the_command_line_or_the_pod() {
        let merged = merged([report("web-1", &["/etc/a"]), report("web-2", &["/etc/b"])])
            .expect("two reports");
        let blob = encode(&merged).expect("encode");
        assert_eq!(blob, encode(&merged).expect("again"), "deterministic bytes");
        let back = decode("test", &blob).expect("decode");
        assert_eq!(back.paths, merged.paths);
        assert!(back.argv.is_empty(), "{:?}", back.argv);
        assert_eq!(back.identity.pod_name, None);
        assert_eq!(back.identity.pod_namespace, None);
        assert_eq!(back.identity.image, merged.identity.image);
        assert_eq!(back, portable(&merged));
        let text = String::from_utf8_lossy(&codec_json(&blob)).into_owned();
        assert!(
            !text.contains("hunter2") && !text.contains("web-1"),
            "{text}"
        );
    }

    fn codec_json(blob: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    }

    #[test]
    fn a_blob_that_is_not_gzip_is_not_a_profile() {
        let e = decode("r", b"{\"schemaVersion\":1}").expect_err("plain JSON");
        assert!(e.to_string().contains("not gzip"), "{e}");
    }

    /// A registry serving one artifact manifest under any tag, and `blob` under any digest;
    /// counts blob requests.
    async fn serve(manifest: Vec<u8>, blob: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let blob_requests = Arc::new(AtomicUsize::new(0));
        let counter = blob_requests.clone();
        let (manifest, blob) = (Arc::new(manifest), Arc::new(blob));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (manifest, blob, counter) = (manifest.clone(), blob.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while !request.ends_with(b"\r\n\r\n") {
                        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        request.push(byte[0]);
                    }
                    let line = String::from_utf8_lossy(&request).into_owned();
                    let (kind, body): (&str, &[u8]) = if line.starts_with("GET /v2/ ") {
                        ("application/json", b"{}")
                    } else if line.contains("/referrers/") {
                        // A listing that says it is 10 GB long, and never comes.
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n{";
                        let _ = conn.write_all(head.as_bytes()).await;
                        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                        return;
                    } else if line.contains("/manifests/") {
                        (ARTIFACT_MANIFEST_TYPE, &manifest)
                    } else if line.contains("/blobs/") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        ("application/octet-stream", &blob)
                    } else {
                        ("application/json", b"")
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body).await;
                });
            }
        });
        (host, blob_requests)
    }

    const ARTIFACT_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

    fn artifact(blob_digest: &str, blob_size: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": ARTIFACT_MANIFEST_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": format!("sha256:{:x}", Sha256::digest(b"{}")), "size": 2},
            "layers": [{"mediaType": MEDIA_TYPE, "digest": blob_digest, "size": blob_size}],
            "subject": {"mediaType": ARTIFACT_MANIFEST_TYPE,
                        "digest": format!("sha256:{}", "a".repeat(64)), "size": 500},
        }))
        .unwrap()
    }

    async fn fetch_from(host: &str) -> Result<Fetched> {
        let options = RegistryOptions {
            insecure_registries: vec![host.to_string()],
            ..Default::default()
        };
        let store = Store::new(Credentials::anonymous(), options);
        let at = Location::parse(&format!("{host}/shop/web:profile")).unwrap();
        fetch(&store, &at).await
    }

    #[tokio::test]
    async fn a_profile_served_as_named_is_read() {
        let blob = encode(&report("web-1", &["/etc/a"])).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(&blob));
        let (host, _) = serve(artifact(&digest, blob.len() as u64), blob).await;
        let fetched = fetch_from(&host).await.expect("fetched");
        assert_eq!(fetched.profile.paths.len(), 1);
        assert_eq!(fetched.blob_digest, digest);
        assert!(
            fetched.image.ends_with(&"a".repeat(64)),
            "{}",
            fetched.image
        );
    }

    #[tokio::test]
    async fn a_blob_that_does_not_hash_to_its_digest_is_refused() {
        let good = encode(&report("web-1", &["/etc/a"])).unwrap();
        // Another valid profile, same length: only the digest tells them apart.
        let evil = encode(&report("web-1", &["/etc/b"])).unwrap();
        assert_eq!(good.len(), evil.len());
        let digest = format!("sha256:{:x}", Sha256::digest(&good));
        let (host, _) = serve(artifact(&digest, good.len() as u64), evil).await;
        let e = fetch_from(&host).await.expect_err("refused");
        assert!(
            matches!(e, ProfileError::Blob { .. }) && e.to_string().contains(&digest),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_blob_over_the_budget_is_refused_before_it_is_requested() {
        let blob = vec![0u8; 64];
        let digest = format!("sha256:{:x}", Sha256::digest(&blob));
        let (host, requests) = serve(artifact(&digest, MAX_BLOB_BYTES + 1), blob).await;
        let e = fetch_from(&host).await.expect_err("refused");
        assert!(matches!(e, ProfileError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("16 MiB"), "{e}");
        assert_eq!(requests.load(Ordering::SeqCst), 0, "the blob was requested");
    }

    #[tokio::test]
    async fn a_referrers_listing_over_the_manifest_cap_is_refused_before_it_is_read() {
        // An image manifest (not a profile): its referrers are listed.
        let image = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": ARTIFACT_MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "b".repeat(64)), "size": 2},
            "layers": [],
        }))
        .unwrap();
        let (host, _) = serve(image, Vec::new()).await;
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), fetch_from(&host))
            .await
            .expect("still reading the listing after 30 s")
            .expect_err("refused");
        assert!(e.to_string().contains("10000000000 bytes"), "{e}");
        assert!(e.to_string().contains("--max-manifest-size"), "{e}");
    }
}
