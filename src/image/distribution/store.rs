//! Where images live — a registry or an OCI layout directory — behind one set of operations,
//! so instrument and harden are written once for both.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::manifest::{self as mt, OciDescriptor};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::credentials::Credentials;
use super::layout::LayoutRef;
pub use super::location::{Image, Location};
use super::platform::choose_platform;
use super::registry::{Registry, RegistryOptions, Transfer};
use crate::image::error::{ImageError, Result};
use crate::image::limits::Limits;
use crate::image::media::{self, Flavor};

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The operations instrument, harden and inspect need, over registries and layouts alike.
pub struct Store {
    registry: Registry,
    /// Bytes written into layout directories (registries count their own).
    layout_written: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn new(credentials: Credentials, options: RegistryOptions) -> Store {
        Store {
            registry: Registry::new(credentials, options),
            layout_written: Default::default(),
        }
    }

    /// The same store with other budgets.
    pub fn with_limits(mut self, limits: Limits) -> Store {
        self.registry.set_limits(limits);
        self
    }

    /// The budgets of what this store reads.
    pub fn limits(&self) -> &Limits {
        &self.registry.options().limits
    }

    /// Bytes uploaded to registries or written into layouts by this store so far.
    pub fn bytes_written(&self) -> u64 {
        self.registry.uploaded_bytes()
            + self
                .layout_written
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.layout_written
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub async fn resolve(&self, location: &Location) -> Result<Image> {
        match location {
            Location::Registry(r) => self.registry.resolve(r).await,
            Location::Layout(l) => self.resolve_layout(l),
        }
    }

    /// The digest `location` names now, as cheaply as the store can tell: one manifest HEAD
    /// for a registry (None when it does not say), the index entry for a layout.
    pub async fn head_digest(&self, location: &Location) -> Result<Option<String>> {
        match location {
            Location::Registry(r) => self.registry.head_digest(r).await,
            Location::Layout(l) => Ok(Some(l.find()?.digest)),
        }
    }

    fn resolve_layout(&self, l: &LayoutRef) -> Result<Image> {
        let cap = self.limits().manifest_bytes;
        let desc = l.find()?;
        let mut manifest_digest = desc.digest.clone();
        let mut body = l.read_blob(&manifest_digest, cap)?;
        let mut value = json(&l.to_string(), "manifest", &body)?;
        let mut index_digest = None;
        if value.get("manifests").is_some() {
            let options = self.registry.options();
            let chosen = choose_platform(&l.to_string(), &value, &options.platform, options.hints)?;
            index_digest = Some(manifest_digest);
            body = l.read_blob(&chosen, cap)?;
            value = json(&l.to_string(), "manifest", &body)?;
            manifest_digest = chosen;
        }
        let pinned = l.at_digest(&manifest_digest);
        let flavor = match value["mediaType"].as_str() {
            Some(mt::IMAGE_MANIFEST_MEDIA_TYPE) => Flavor::Docker,
            _ => Flavor::Oci,
        };
        let manifest: mt::OciImageManifest =
            serde_json::from_value(value).map_err(|e| ImageError::Manifest {
                reference: pinned.to_string(),
                detail: format!("not an image manifest: {e}"),
            })?;
        for layer in &manifest.layers {
            if media::layer_compression(&layer.media_type).is_none() {
                return Err(ImageError::MediaType {
                    reference: pinned.to_string(),
                    what: format!("layer {}", layer.digest),
                    media_type: layer.media_type.clone(),
                    hint: " (whittle reads tar, tar+gzip and tar+zstd layers)",
                });
            }
        }
        let config_bytes = l.read_blob(&manifest.config.digest, cap)?;
        let config = json(&pinned.to_string(), "config", &config_bytes)?;
        Ok(Image {
            reference: Location::Layout(l.clone()),
            pinned: Location::Layout(pinned),
            manifest_digest,
            index_digest,
            flavor,
            config_descriptor: manifest.config,
            layers: manifest.layers,
            config,
            config_bytes: Bytes::from(config_bytes),
        })
    }

    /// The compressed bytes of one of `image`'s layers, verified against its digest.
    pub async fn layer_stream(&self, image: &Image, desc: &OciDescriptor) -> Result<ByteStream> {
        match &image.pinned {
            Location::Registry(r) => Ok(Box::pin(self.registry.blob_stream(r, desc).await?)),
            Location::Layout(l) => Ok(Box::pin(verified(l.blob_stream(desc).await?, desc))),
        }
    }

    /// Makes layer `desc` of `src` available at `dst` as cheaply as the two places allow:
    /// nothing when already there, a cross-repository mount within a registry, a hard link
    /// within a filesystem, a streamed copy otherwise.
    pub async fn transfer_layer(
        &self,
        src: &Image,
        dst: &Location,
        desc: &OciDescriptor,
    ) -> Result<Transfer> {
        if src.pinned.same_place(dst) {
            return Ok(Transfer::Present);
        }
        match (&src.pinned, dst) {
            (Location::Registry(s), Location::Registry(d)) => {
                self.registry.transfer_blob(s, d, desc).await
            }
            (Location::Layout(s), Location::Layout(d)) => {
                if d.has_blob(&desc.digest)? {
                    return Ok(Transfer::Present);
                }
                let from = s.blob_path(&desc.digest)?;
                let to = d.blob_path(&desc.digest)?;
                d.ensure_layout()?;
                if std::fs::hard_link(&from, &to).is_ok() {
                    return Ok(Transfer::Mounted);
                }
                let stream = self.layer_stream(src, desc).await?;
                d.put_blob_stream(desc, stream).await?;
                self.count(desc.size.max(0) as u64);
                Ok(Transfer::Copied)
            }
            (Location::Registry(_), Location::Layout(d)) => {
                let stream = self.layer_stream(src, desc).await?;
                let copied = d.put_blob_stream(desc, stream).await?;
                if copied {
                    self.count(desc.size.max(0) as u64);
                }
                Ok(if copied {
                    Transfer::Copied
                } else {
                    Transfer::Present
                })
            }
            (Location::Layout(s), Location::Registry(d)) => {
                let path = s.blob_path(&desc.digest)?;
                let file = std::fs::File::open(&path)
                    .map_err(ImageError::io(format!("opening {}", path.display())))?;
                self.registry
                    .push_blob_file(d, &file, &desc.digest, desc.size.max(0) as u64)
                    .await
            }
        }
    }

    /// The manifest (or index) `location` names as its registry serves it, within the
    /// manifest cap, and its digest. Registries only: what is attached lives there.
    pub async fn manifest(&self, location: &Location) -> Result<(Bytes, String)> {
        match location {
            Location::Registry(r) => self.registry.manifest(r).await,
            Location::Layout(_) => Err(layout_has_no_referrers(location)),
        }
    }

    /// The manifests that name `subject` (a registry location at a digest) as theirs
    /// (`Registry::referrers`).
    pub async fn referrers(&self, subject: &Location) -> Result<mt::OciImageIndex> {
        match subject {
            Location::Registry(r) => self.registry.referrers(r).await,
            Location::Layout(_) => Err(layout_has_no_referrers(subject)),
        }
    }

    /// Blob `desc` of the repository `at` names, as a stream verified against its digest and
    /// size: it fails as soon as more bytes come than `desc` says, and at the end when they
    /// do not hash to its digest. Callers bound `desc.size` before they call.
    pub async fn blob_stream(&self, at: &Location, desc: &OciDescriptor) -> Result<ByteStream> {
        match at {
            Location::Registry(r) => Ok(Box::pin(self.registry.blob_stream(r, desc).await?)),
            Location::Layout(l) => Ok(Box::pin(verified(l.blob_stream(desc).await?, desc))),
        }
    }

    /// Stores a small blob (a config, the sensor layer); returns its digest.
    pub async fn put_blob(&self, dst: &Location, data: Bytes) -> Result<String> {
        let digest = format!("sha256:{:x}", Sha256::digest(&data));
        match dst {
            Location::Registry(r) => {
                self.registry.push_blob(r, data, &digest).await?;
            }
            Location::Layout(l) => {
                if l.put_blob(&data)?.1 {
                    self.count(data.len() as u64);
                }
            }
        }
        Ok(digest)
    }

    /// Stores the blob in `file` under `digest` (`size` bytes).
    pub async fn put_blob_file(
        &self,
        dst: &Location,
        file: &std::fs::File,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        match dst {
            Location::Registry(r) => {
                self.registry.push_blob_file(r, file, digest, size).await?;
            }
            Location::Layout(l) => {
                if l.put_blob_file(file, digest)? {
                    self.count(size);
                }
            }
        }
        Ok(())
    }

    /// Stores `config` and a manifest naming it and `layers` (already stored) under `dst`'s
    /// tag; returns the manifest's digest.
    pub async fn put_image(
        &self,
        dst: &Location,
        flavor: Flavor,
        config: &Value,
        layers: &[OciDescriptor],
    ) -> Result<String> {
        Ok(self.put_image_sized(dst, flavor, config, layers).await?.0)
    }

    /// [`Store::put_image`], also returning the manifest's size (an artifact naming it as its
    /// subject needs it).
    pub async fn put_image_sized(
        &self,
        dst: &Location,
        flavor: Flavor,
        config: &Value,
        layers: &[OciDescriptor],
    ) -> Result<(String, u64)> {
        let config = self.put_config(dst, flavor, config).await?;
        self.put_image_manifest(dst, flavor, &config, layers).await
    }

    /// Stores an image config blob; returns its descriptor. Harden uploads it while the layer
    /// is still going up: the manifest needs both, neither needs the other.
    pub async fn put_config(
        &self,
        dst: &Location,
        flavor: Flavor,
        config: &Value,
    ) -> Result<OciDescriptor> {
        let bytes = serde_json::to_vec(config).map_err(|e| ImageError::Manifest {
            reference: dst.to_string(),
            detail: format!("config: {e}"),
        })?;
        let size = bytes.len() as u64;
        let digest = self.put_blob(dst, Bytes::from(bytes)).await?;
        Ok(media::descriptor(flavor.config_type(), &digest, size))
    }

    /// Stores the manifest naming `config` and `layers` (all already stored) under `dst`'s
    /// tag; returns its digest and size.
    pub async fn put_image_manifest(
        &self,
        dst: &Location,
        flavor: Flavor,
        config: &OciDescriptor,
        layers: &[OciDescriptor],
    ) -> Result<(String, u64)> {
        let manifest = media::manifest(flavor, config, layers);
        let manifest_size = manifest.len() as u64;
        let digest = self
            .put_manifest(dst, manifest, flavor.manifest_type())
            .await?;
        Ok((digest, manifest_size))
    }

    /// Stores a manifest under `dst`'s tag; returns its digest.
    pub async fn put_manifest(
        &self,
        dst: &Location,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<String> {
        let digest = match dst {
            Location::Registry(r) => self.registry.push_manifest(r, body, media_type).await?,
            Location::Layout(l) => {
                self.count(body.len() as u64);
                l.put_manifest(&body, media_type)?
            }
        };
        Ok(digest)
    }
}

/// How an artifact was attached to its subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// The artifact's manifest: `registry/repo@sha256:...`.
    pub reference: String,
    /// `referrers API`, or `referrers tag sha256-<hex>` on a registry without one.
    pub via: String,
}

/// The one blob of an attached artifact.
pub struct Blob<'a> {
    pub media_type: &'a str,
    /// Its `org.opencontainers.image.title`: the file name `oras pull` writes it to.
    pub title: &'a str,
    pub content: Bytes,
}

/// The OCI 1.1 empty config (`{}`) that artifacts without a config of their own name.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

impl Store {
    /// Attaches `content` (one blob of `artifact_type`, named `title`) to the image manifest
    /// `subject` (a registry location at its digest) as an OCI 1.1 referrer. Registries without
    /// the referrers API get the referrers tag the specification falls back to.
    pub async fn attach(
        &self,
        subject: &Location,
        subject_size: u64,
        artifact_type: &str,
        title: &str,
        content: Bytes,
    ) -> Result<Attached> {
        let blob = Blob {
            media_type: artifact_type,
            title,
            content,
        };
        self.attach_blob(subject, subject_size, artifact_type, blob)
            .await
    }

    /// [`Store::attach`] for a blob whose media type is not the artifact's (a compressed one).
    pub async fn attach_blob(
        &self,
        subject: &Location,
        subject_size: u64,
        artifact_type: &str,
        Blob {
            media_type,
            title,
            content,
        }: Blob<'_>,
    ) -> Result<Attached> {
        let Location::Registry(r) = subject else {
            return Err(layout_has_no_referrers(subject));
        };
        let Some(subject_digest) = r.digest().map(str::to_string) else {
            return Err(ImageError::Manifest {
                reference: subject.to_string(),
                detail: "internal: an artifact's subject must be pinned to a digest".into(),
            });
        };
        let size = content.len() as u64;
        let config = self
            .put_blob(subject, Bytes::from_static(EMPTY_CONFIG))
            .await?;
        let blob = self.put_blob(subject, content).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_IMAGE_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": config, "size": EMPTY_CONFIG.len()},
            "layers": [{
                "mediaType": media_type,
                "digest": blob,
                "size": size,
                "annotations": {"org.opencontainers.image.title": title},
            }],
            "subject": {"mediaType": mt::OCI_IMAGE_MEDIA_TYPE, "digest": subject_digest, "size": subject_size},
        });
        let body = serde_json::to_vec(&manifest).map_err(|e| ImageError::Manifest {
            reference: subject.to_string(),
            detail: format!("artifact manifest: {e}"),
        })?;
        let body_size = body.len() as u64;
        let digest = format!("sha256:{:x}", Sha256::digest(&body));
        let at = r.at_digest(&digest);
        self.registry
            .push_manifest(&at, body, mt::OCI_IMAGE_MEDIA_TYPE)
            .await?;
        let mut index = self.registry.referrers(r).await?;
        if index.manifests.iter().any(|m| m.digest == digest) {
            return Ok(Attached {
                reference: at.to_string(),
                via: "referrers API".into(),
            });
        }
        // The listing came from the referrers tag (or nothing): add this artifact to it.
        index.manifests.push(mt::ImageIndexEntry {
            media_type: mt::OCI_IMAGE_MEDIA_TYPE.to_string(),
            digest: digest.clone(),
            size: body_size as i64,
            platform: None,
            annotations: None,
            artifact_type: Some(artifact_type.to_string()),
        });
        index.media_type = Some(mt::OCI_IMAGE_INDEX_MEDIA_TYPE.to_string());
        index.schema_version = 2;
        let tag = subject_digest.replacen(':', "-", 1);
        let body = serde_json::to_vec(&index).map_err(|e| ImageError::Manifest {
            reference: subject.to_string(),
            detail: format!("referrers index: {e}"),
        })?;
        self.registry
            .push_manifest(&r.at_tag(&tag), body, mt::OCI_IMAGE_INDEX_MEDIA_TYPE)
            .await?;
        Ok(Attached {
            reference: at.to_string(),
            via: format!("referrers tag {tag}"),
        })
    }
}

fn layout_has_no_referrers(at: &Location) -> ImageError {
    ImageError::Manifest {
        reference: at.to_string(),
        detail: "an oci: layout has no referrers; artifacts are attached in a registry".into(),
    }
}

/// Passes `stream` through, failing at the end when its bytes do not hash to `desc.digest`,
/// and as soon as there are more of them than `desc.size`.
fn verified(
    stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    desc: &OciDescriptor,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let want = desc.digest.clone();
    let size = desc.size.max(0) as u64;
    let mismatch = move |hasher: &Sha256, read: u64| {
        let got = format!("sha256:{:x}", hasher.clone().finalize());
        (got != want || read != size).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the blob holds {read} bytes with digest {got}; the manifest says {size} bytes with digest {want}"
                ),
            )
        })
    };
    // `None` marks the end, where the digest is checked.
    let items = stream
        .map(Some)
        .chain(futures::stream::once(async { None }));
    items
        .scan(
            (Sha256::new(), 0u64, false),
            move |(hasher, read, failed), item| {
                if *failed {
                    return futures::future::ready(None);
                }
                let out = match item {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        *read += chunk.len() as u64;
                        match (*read > size).then(|| mismatch(hasher, *read)).flatten() {
                            Some(e) => Some(Err(e)),
                            None => Some(Ok(chunk)),
                        }
                    }
                    Some(Err(e)) => Some(Err(e)),
                    None => mismatch(hasher, *read).map(Err),
                };
                *failed = matches!(out, Some(Err(_)));
                futures::future::ready(Some(out))
            },
        )
        .filter_map(futures::future::ready)
}

fn json(reference: &str, what: &str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| ImageError::Manifest {
        reference: reference.to_string(),
        detail: format!("the {what} is not JSON: {e}"),
    })
}

// The manifest cap (`capped.rs`) as every command meets it: through the store, from a
// registry that sends too much or too slowly.
#[cfg(test)]
mod fake_registry {
    use super::*;
    use crate::image::limits::{Exceeded, MANIFEST_FLAG};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry that answers `/v2/` and then the manifest request with `manifest`'s bytes
    /// (headers and a body start), keeping the connection open afterwards.
    async fn serve(manifest: fn(&mut Vec<u8>)) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    loop {
                        let mut request = Vec::new();
                        let mut byte = [0u8; 1];
                        while !request.ends_with(b"\r\n\r\n") {
                            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            request.push(byte[0]);
                        }
                        let mut out = Vec::new();
                        if request.starts_with(b"GET /v2/ ") {
                            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                            if conn.write_all(&out).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        manifest(&mut out);
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                        // An endless body, for the response that has no length.
                        if out.ends_with(b"chunked\r\n\r\n") {
                            let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "x".repeat(1 << 16));
                            while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                            return;
                        }
                        // Otherwise the body never comes.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                });
            }
        });
        host
    }

    /// Resolves an image at `host` as every command does, with a manifest cap of 1 MiB;
    /// the error, and how long it took to come.
    async fn fetch(host: &str) -> (ImageError, Duration) {
        let options = RegistryOptions {
            insecure_registries: vec![host.to_string()],
            limits: Limits {
                manifest_bytes: 1 << 20,
                ..Limits::default()
            },
            ..Default::default()
        };
        let store = Store::new(Credentials::anonymous(), options);
        let at = Location::parse(&format!("{host}/big/manifest:1")).unwrap();
        let started = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), store.resolve(&at))
            .await
            .expect("still reading the manifest after 30 s");
        (got.expect_err("refused"), started.elapsed())
    }

    fn exceeded(e: ImageError) -> Exceeded {
        match e {
            ImageError::Limit(e) => e,
            other => panic!("not a budget refused: {other}"),
        }
    }

    #[tokio::test]
    async fn a_content_length_over_the_cap_is_refused_before_the_body_is_read() {
        let host = serve(|out| {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n{");
        })
        .await;
        let (e, took) = fetch(&host).await;
        let e = exceeded(e);
        assert!(e.what.contains("10000000000 bytes"), "{e}");
        assert_eq!(e.flag, MANIFEST_FLAG);
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[tokio::test]
    async fn a_body_without_a_length_stops_at_the_cap() {
        let host = serve(|out| {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        })
        .await;
        let (e, _) = fetch(&host).await;
        let e = exceeded(e);
        assert!(e.what.contains("runs past"), "{e}");
        assert!(e.to_string().contains("1 MiB, 1048576 bytes"), "{e}");
    }
}
