//! The registry client, on oci-client: resolving a reference (tag, digest, image index) to one
//! image manifest and its config, streaming blobs (`blob`'s resumable, verified stream),
//! mounting, pushing, and errors that say which registry, which repository and what status.
//! Which image of an index is `platform`'s choice; when to try again, `retry`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{self as mt, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::blob::{self, BoxByteStream, open_at};
use super::capped;
use super::cleartext;
use super::credentials::Credentials;
use super::hints::Hints;
use super::location::{Image, Location};
use super::platform::{Platform, choose_platform};
use super::reference::{ImageRef, is_sha256_digest};
use super::retry::{chain, retry};
use crate::image::error::{ImageError, Result};
use crate::image::limits::{Exceeded, Limits, MANIFEST_FLAG};
use crate::image::media::{Flavor, MANIFEST_TYPES, is_index, layer_compression};

/// What happened to a source layer when it was made available in another repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Already there (same repository, or pushed before).
    Present,
    /// Cross-repository mount: no bytes moved.
    Mounted,
    /// Another registry: streamed from one to the other.
    Copied,
}

/// Options that apply to every registry whittle talks to in one command.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// The registries (`host[:port]` as requests address them: `index.docker.io` for Docker
    /// Hub) reached over plain HTTP; every other host over HTTPS only, and no credentials go
    /// in cleartext to any host not listed (`cleartext.rs`).
    pub insecure_registries: Vec<String>,
    pub platform: Platform,
    /// The budgets of every image read, from registries and layouts alike.
    pub limits: Limits,
    /// What error messages tell the user to change.
    pub hints: Hints,
}

pub struct Registry {
    client: Client,
    /// For manifests, read with a cap (`capped.rs`); configured as `client` is.
    http: reqwest::Client,
    credentials: Credentials,
    options: RegistryOptions,
    uploaded: AtomicU64,
    /// Registries whose authentication challenge names no cleartext realm (`auth`).
    challenges_checked: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Connecting may take this long, and so may the wait for any read.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(300);
const USER_AGENT: &str = concat!("whittle/", env!("CARGO_PKG_VERSION"));

impl Registry {
    pub fn new(credentials: Credentials, options: RegistryOptions) -> Registry {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            // Building fails only when no TLS backend can start, which oci-client's client
            // below would meet as well: a default client says so on first use.
            .unwrap_or_default();
        let client = Client::new(ClientConfig {
            protocol: if options.insecure_registries.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(options.insecure_registries.clone())
            },
            // whittle picks the platform itself, to name what an index offers when it fails.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            // A blob of known size goes up as one POST and one streamed PUT, as containerd
            // pushes: oci-client's default, 4 MiB PATCHes, took twice as long on loopback
            // (31 MB: 0.26 s against 0.13 s), the registry storing its hash state per chunk.
            use_monolithic_push: true,
            ..Default::default()
        });
        Registry {
            client,
            http,
            credentials,
            options,
            uploaded: AtomicU64::new(0),
            challenges_checked: Default::default(),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.options.limits = limits;
    }

    /// Bytes this registry client has uploaded so far (blobs and manifests).
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// True when `host` (as requests address it) was declared insecure.
    fn plain_http(&self, host: &str) -> bool {
        self.options.insecure_registries.iter().any(|h| h == host)
    }

    async fn authorize(&self, r: &ImageRef) -> Result<()> {
        let auth = self.auth(r).await?;
        self.client
            .store_auth_if_needed(r.oci().resolve_registry(), &auth)
            .await;
        Ok(())
    }

    /// The credentials for `r`'s registry. A user and password go to whatever token service
    /// the registry's challenge names, so that challenge is checked first, once per registry:
    /// plain HTTP to a host not declared insecure is refused (`cleartext.rs`). A registry
    /// declared insecure is trusted with its network path: an attacker on it could change a
    /// later challenge.
    async fn auth(&self, r: &ImageRef) -> Result<RegistryAuth> {
        let auth = self.credentials.auth_for(r.registry());
        let host = r.oci().resolve_registry();
        if !matches!(auth, RegistryAuth::Basic(..))
            || self
                .challenges_checked
                .lock()
                .is_ok_and(|c| c.contains(host))
        {
            return Ok(auth);
        }
        let scheme = if self.plain_http(host) {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{host}/v2/");
        let response =
            retry(|| async { Ok::<_, OciDistributionError>(self.http.get(&url).send().await?) })
                .await
                .map_err(|e| self.error(r, "read the authentication challenge", "/v2/", e))?;
        for realm in cleartext::realms(response.headers()) {
            if let Some(realm_host) = cleartext::cleartext_host(&realm)
                && !self.plain_http(&realm_host)
            {
                return Err(ImageError::Cleartext {
                    registry: r.registry().to_string(),
                    realm,
                    host: realm_host,
                });
            }
        }
        if let Ok(mut checked) = self.challenges_checked.lock() {
            checked.insert(host.to_string());
        }
        Ok(auth)
    }

    /// Resolves `r` to one image manifest (choosing the platform from an index) and its config.
    pub async fn resolve(&self, r: &ImageRef) -> Result<Image> {
        self.authorize(r).await?;
        let (body, digest) = self.pull_manifest(r).await?;
        let mut value = parse_json(r, "manifest", &body)?;
        let mut index_digest = None;
        let mut manifest_digest = digest;
        if is_index(&value) {
            let chosen = choose_platform(
                &r.to_string(),
                &value,
                &self.options.platform,
                self.options.hints,
            )?;
            index_digest = Some(manifest_digest);
            let pinned = r.at_digest(&chosen);
            self.within_cap(&pinned, "manifest", entry_size(&value, &chosen))?;
            let (body, digest) = self.pull_manifest(&pinned).await?;
            value = parse_json(&pinned, "manifest", &body)?;
            if is_index(&value) {
                return Err(ImageError::Manifest {
                    reference: pinned.to_string(),
                    detail: "an image index names another index for the platform".into(),
                });
            }
            manifest_digest = digest;
        }
        let pinned = r.at_digest(&manifest_digest);
        let media_type = value["mediaType"]
            .as_str()
            .unwrap_or(mt::OCI_IMAGE_MEDIA_TYPE);
        let flavor = match media_type {
            mt::IMAGE_MANIFEST_MEDIA_TYPE => Flavor::Docker,
            mt::OCI_IMAGE_MEDIA_TYPE => Flavor::Oci,
            other => {
                return Err(ImageError::MediaType {
                    reference: r.to_string(),
                    what: "the manifest".into(),
                    media_type: other.to_string(),
                    hint: " (only Docker v2 schema 2 and OCI image manifests are images)",
                });
            }
        };
        let descriptor = |v: &Value, what: &str| -> Result<OciDescriptor> {
            serde_json::from_value(v.clone()).map_err(|e| ImageError::Manifest {
                reference: pinned.to_string(),
                detail: format!("{what} is not a descriptor: {e}"),
            })
        };
        let config_descriptor = descriptor(&value["config"], "config")?;
        let layers = value["layers"]
            .as_array()
            .ok_or_else(|| ImageError::Manifest {
                reference: pinned.to_string(),
                detail: "the manifest has no layers array".into(),
            })?
            .iter()
            .map(|l| descriptor(l, "a layer"))
            .collect::<Result<Vec<_>>>()?;
        for layer in &layers {
            if !is_sha256_digest(&layer.digest) {
                return Err(ImageError::Manifest {
                    reference: pinned.to_string(),
                    detail: format!("layer digest {} is not sha256", layer.digest),
                });
            }
            if layer_compression(&layer.media_type).is_none() {
                return Err(ImageError::MediaType {
                    reference: pinned.to_string(),
                    what: format!("layer {}", layer.digest),
                    media_type: layer.media_type.clone(),
                    hint: " (whittle reads tar, tar+gzip and tar+zstd layers)",
                });
            }
        }
        let config_bytes = self.pull_small_blob(&pinned, &config_descriptor).await?;
        let config = parse_json(&pinned, "config", &config_bytes)?;
        let config_bytes = Bytes::from(config_bytes);
        Ok(Image {
            reference: Location::Registry(r.clone()),
            pinned: Location::Registry(pinned),
            manifest_digest,
            index_digest,
            flavor,
            config_descriptor,
            layers,
            config,
            config_bytes,
        })
    }

    /// Refuses a manifest or config whose descriptor says it is over the cap, before it is
    /// fetched.
    fn within_cap(&self, r: &ImageRef, what: &str, size: Option<u64>) -> Result<()> {
        let cap = self.options.limits.manifest_bytes;
        match size {
            Some(size) if size > cap => Err(Exceeded::bytes(
                format!("the {what} {r} is {size} bytes, as its descriptor says"),
                cap,
                MANIFEST_FLAG,
            )
            .into()),
            _ => Ok(()),
        }
    }

    /// The manifest `r` names, refused above the cap (`capped.rs`), and its digest.
    async fn pull_manifest(&self, r: &ImageRef) -> Result<(Bytes, String)> {
        let auth = self.auth(r).await?;
        let scheme = if self.plain_http(r.oci().resolve_registry()) {
            "http"
        } else {
            "https"
        };
        let cap = self.options.limits.manifest_bytes;
        let fetched = retry(|| {
            capped::manifest(
                &self.client,
                &self.http,
                scheme,
                &auth,
                r,
                MANIFEST_TYPES,
                cap,
            )
        })
        .await
        .map_err(|e| self.error(r, "fetch the manifest", &what_manifest(r), e))?;
        Ok(fetched?)
    }

    /// The digest `r` names now, from one manifest HEAD; None when the registry does not say.
    pub async fn head_digest(&self, r: &ImageRef) -> Result<Option<String>> {
        let auth = self.auth(r).await?;
        let scheme = if self.plain_http(r.oci().resolve_registry()) {
            "http"
        } else {
            "https"
        };
        retry(|| {
            capped::manifest_digest(&self.client, &self.http, scheme, &auth, r, MANIFEST_TYPES)
        })
        .await
        .map_err(|e| self.error(r, "fetch the manifest", &what_manifest(r), e))
    }

    /// A blob small enough to hold in memory (a config), verified against its digest and
    /// size, which must be within the manifest cap: a longer body is refused as it arrives.
    pub async fn pull_small_blob(&self, r: &ImageRef, desc: &OciDescriptor) -> Result<Vec<u8>> {
        self.within_cap(
            &r.at_digest(&desc.digest),
            "config",
            Some(desc.size.max(0) as u64),
        )?;
        let mut stream = std::pin::pin!(self.blob_stream(r, desc).await?);
        let mut out = Vec::with_capacity(desc.size.max(0) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::Manifest {
                reference: r.at_digest(&desc.digest).to_string(),
                detail: format!("the config: {e}"),
            })?;
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A blob as a byte stream. A connection that drops mid-way is resumed with a Range request
    /// (up to [`super::retry::ATTEMPTS`] times); the whole blob is checked against its digest
    /// and size at the end, so a corrupt or truncated blob is an error, never silently used.
    pub async fn blob_stream(
        &self,
        r: &ImageRef,
        desc: &OciDescriptor,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<>> {
        self.authorize(r).await?;
        let first = self.open_blob(r, desc, 0).await?;
        Ok(blob::resumable(
            self.client.clone(),
            r.clone(),
            desc.clone(),
            first,
        ))
    }

    async fn open_blob(
        &self,
        r: &ImageRef,
        desc: &OciDescriptor,
        offset: u64,
    ) -> Result<BoxByteStream> {
        retry(|| open_at(&self.client, r.oci(), desc, offset))
            .await
            .map_err(|e| self.error(r, "fetch a layer", &format!("blob {}", desc.digest), e))
    }

    /// Uploads a blob held in memory, unless the repository already has it.
    pub async fn push_blob(&self, r: &ImageRef, data: Bytes, digest: &str) -> Result<Transfer> {
        self.authorize(r).await?;
        if self.blob_exists(r, digest).await? {
            return Ok(Transfer::Present);
        }
        let len = data.len() as u64;
        retry(|| self.client.push_blob(r.oci(), data.clone(), digest))
            .await
            .map_err(|e| self.error(r, "upload a blob", &format!("blob {digest}"), e))?;
        self.uploaded.fetch_add(len, Ordering::Relaxed);
        Ok(Transfer::Copied)
    }

    /// Uploads the blob in `file` (read from its start on every attempt), unless present.
    pub async fn push_blob_file(
        &self,
        r: &ImageRef,
        file: &std::fs::File,
        digest: &str,
        size: u64,
    ) -> Result<Transfer> {
        if self.blob_exists(r, digest).await? {
            return Ok(Transfer::Present);
        }
        let io_error = |e: std::io::Error| ImageError::Io {
            what: format!("reading the layer {digest} to upload"),
            source: e,
        };
        retry(|| async {
            let mut f = file.try_clone()?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 1 << 20)
                    .map(|c| c.map_err(OciDistributionError::IoError));
            self.client
                .push_blob_stream(r.oci(), stream, digest, Some(size))
                .await
        })
        .await
        .map_err(|e| match e {
            OciDistributionError::IoError(io) => io_error(io),
            e => self.error(r, "upload a layer", &format!("blob {digest}"), e),
        })?;
        self.uploaded.fetch_add(size, Ordering::Relaxed);
        Ok(Transfer::Copied)
    }

    pub async fn blob_exists(&self, r: &ImageRef, digest: &str) -> Result<bool> {
        self.authorize(r).await?;
        retry(|| self.client.blob_exists(r.oci(), digest))
            .await
            .map_err(|e| self.error(r, "check a blob", &format!("blob {digest}"), e))
    }

    /// Makes `desc` (a blob of `src`) available in `dst` without downloading it when the two
    /// share a registry: a cross-repository mount. Across registries the blob is streamed from
    /// one to the other, the only way to get it there.
    pub async fn transfer_blob(
        &self,
        src: &ImageRef,
        dst: &ImageRef,
        desc: &OciDescriptor,
    ) -> Result<Transfer> {
        if src.same_repository(dst) {
            return Ok(Transfer::Present);
        }
        self.authorize(dst).await?;
        if self.blob_exists(dst, &desc.digest).await? {
            return Ok(Transfer::Present);
        }
        if src.same_registry(dst) {
            match retry(|| self.client.mount_blob(dst.oci(), src.oci(), &desc.digest)).await {
                Ok(()) => return Ok(Transfer::Mounted),
                // A registry may decline a mount (202 instead of 201); then the blob is copied.
                Err(OciDistributionError::SpecViolationError(_)) => {}
                Err(e) => {
                    return Err(self.error(
                        dst,
                        "mount a blob",
                        &format!("blob {}", desc.digest),
                        e,
                    ));
                }
            }
        }
        let size = desc.size.max(0) as u64;
        let digest = desc.digest.clone();
        retry(|| async {
            let stream = self
                .blob_stream(src, desc)
                .await
                .map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))?;
            let stream = stream.map(|r| r.map_err(OciDistributionError::IoError));
            self.client
                .push_blob_stream(dst.oci(), stream, &digest, Some(size))
                .await
        })
        .await
        .map_err(|e| self.error(dst, "copy a blob", &format!("blob {}", desc.digest), e))?;
        self.uploaded.fetch_add(size, Ordering::Relaxed);
        Ok(Transfer::Copied)
    }

    /// Uploads a blob of unknown length from a stream with a chunked upload, computing its
    /// digest on the way; returns `(digest, size)`. A stream cannot be replayed, so this is not
    /// retried here: callers that can regenerate the stream retry the whole step.
    pub async fn push_blob_stream<S>(&self, r: &ImageRef, stream: S) -> Result<(String, u64)>
    where
        S: Stream<Item = std::result::Result<Bytes, OciDistributionError>> + Send + 'static,
    {
        self.authorize(r).await?;
        let resp = self
            .client
            .push_blob_stream_chunked(r.oci(), stream)
            .await
            .map_err(|e| self.error(r, "upload a layer", "upload session", e))?;
        self.uploaded.fetch_add(resp.size, Ordering::Relaxed);
        Ok((resp.blob_digest, resp.size))
    }

    /// Pushes a manifest under `r`'s tag; returns its digest.
    pub async fn push_manifest(
        &self,
        r: &ImageRef,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<String> {
        self.authorize(r).await?;
        let digest = format!("sha256:{:x}", Sha256::digest(&body));
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|e| {
            ImageError::Manifest {
                reference: r.to_string(),
                detail: format!("media type {media_type}: {e}"),
            }
        })?;
        let len = body.len() as u64;
        let body = Bytes::from(body);
        retry(|| {
            self.client
                .push_manifest_raw(r.oci(), body.clone(), content_type.clone())
        })
        .await
        .map_err(|e| self.error(r, "push the manifest", &what_manifest(r), e))?;
        self.uploaded.fetch_add(len, Ordering::Relaxed);
        Ok(digest)
    }

    /// The manifests that name `r` (at a digest) as their subject: the registry's referrers
    /// API, or where it has none, the referrers tag (`sha256-<hex>`) the OCI 1.1 specification
    /// falls back to.
    /// Either listing is read within the manifest cap: anyone who can push to the repository
    /// can make it long.
    pub async fn referrers(&self, r: &ImageRef) -> Result<mt::OciImageIndex> {
        let auth = self.auth(r).await?;
        let Some(digest) = r.digest() else {
            return Err(ImageError::Manifest {
                reference: r.to_string(),
                detail: "internal: referrers are listed for a manifest digest".into(),
            });
        };
        let scheme = if self.plain_http(r.oci().resolve_registry()) {
            "http"
        } else {
            "https"
        };
        let cap = self.options.limits.manifest_bytes;
        let api =
            retry(|| capped::referrers(&self.client, &self.http, scheme, &auth, r, cap)).await;
        let body = match api {
            Ok(fetched) => fetched?.0,
            // No referrers API: the referrers tag, which is absent until something is attached.
            Err(OciDistributionError::ServerError { code: 404, .. }) => {
                match self
                    .pull_manifest(&r.at_tag(&digest.replacen(':', "-", 1)))
                    .await
                {
                    Ok((body, _)) => body,
                    Err(ImageError::NotFound { .. }) => {
                        return Ok(mt::OciImageIndex {
                            schema_version: 2,
                            media_type: Some(mt::OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
                            manifests: Vec::new(),
                            annotations: None,
                            artifact_type: None,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(self.error(r, "list the referrers", &what_manifest(r), e)),
        };
        serde_json::from_slice(&body).map_err(|e| ImageError::Manifest {
            reference: r.to_string(),
            detail: format!("the referrers listing is not an image index: {e}"),
        })
    }

    /// The manifest (or index) `r` names as the registry serves it, within the manifest cap,
    /// and its digest (checked against the one `r` names).
    pub async fn manifest(&self, r: &ImageRef) -> Result<(Bytes, String)> {
        self.authorize(r).await?;
        self.pull_manifest(r).await
    }

    /// Turns an oci-client error into one that names the registry, repository and status.
    fn error(&self, r: &ImageRef, action: &str, what: &str, e: OciDistributionError) -> ImageError {
        let registry = r.registry().to_string();
        let repository = r.repository().to_string();
        let hints = self.options.hints;
        let hint = if self.credentials.get(r.registry()).is_none() {
            hints.no_credentials()
        } else {
            hints.wrong_credentials()
        };
        let unauthorized = |status| ImageError::Unauthorized {
            registry: registry.clone(),
            repository: repository.clone(),
            status,
            hint,
        };
        let not_found = || ImageError::NotFound {
            registry: registry.clone(),
            repository: repository.clone(),
            what: what.to_string(),
        };
        let other = |detail: String| ImageError::Registry {
            registry: registry.clone(),
            repository: repository.clone(),
            action: action.to_string(),
            detail,
        };
        match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(401),
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 | 403 => unauthorized(*code),
                404 => not_found(),
                _ => other(format!("{code} {}", message.trim())),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    unauthorized(401)
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    unauthorized(403)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else {
                    other(envelope.to_string())
                }
            }
            OciDistributionError::RequestError(re) => match re.status().map(|s| s.as_u16()) {
                Some(401) => unauthorized(401),
                Some(403) => unauthorized(403),
                Some(404) => not_found(),
                _ if re.is_connect() || re.is_timeout() => ImageError::Unreachable {
                    registry,
                    detail: chain(&e),
                    hint: if self.plain_http(r.oci().resolve_registry()) {
                        ""
                    } else {
                        hints.plain_http()
                    },
                },
                _ => other(chain(&e)),
            },
            _ => other(chain(&e)),
        }
    }
}

fn what_manifest(r: &ImageRef) -> String {
    match (r.tag(), r.digest()) {
        (_, Some(d)) => format!("manifest {d}"),
        (Some(t), None) => format!("tag {t}"),
        (None, None) => "tag latest".into(),
    }
}

fn parse_json(r: &ImageRef, what: &str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| ImageError::Manifest {
        reference: r.to_string(),
        detail: format!("the {what} is not JSON: {e}"),
    })
}

/// The size an image index states for its entry `digest`.
fn entry_size(index: &Value, digest: &str) -> Option<u64> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["digest"].as_str() == Some(digest))?["size"]
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that records the first bytes of each connection and answers with `reply`
    /// (given the request); returns its address and what it saw.
    fn listen(
        reply: impl Fn(&[u8]) -> String + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                // A TLS client waits for the server's hello: its first bytes are all there is.
                while let Ok(n @ 1..) = conn.read(&mut chunk) {
                    request.extend_from_slice(&chunk[..n]);
                    if request.first() == Some(&0x16)
                        || request.windows(4).any(|w| w == b"\r\n\r\n")
                    {
                        break;
                    }
                }
                // Logged before the reply: once the client has its answer, a test may look.
                log.lock().unwrap().push(request.clone());
                if request.starts_with(b"GET ") || request.starts_with(b"HEAD ") {
                    let _ = conn.write_all(reply(&request).as_bytes());
                }
            }
        });
        (host, seen)
    }

    fn realm_requests(log: &std::sync::Mutex<Vec<Vec<u8>>>) -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).to_lowercase())
            .collect()
    }

    /// A client that talks plain HTTP to `host` only, with a user and password for it.
    fn plain_http_with_credentials(host: &str) -> Registry {
        Registry::new(
            basic_for(host),
            RegistryOptions {
                insecure_registries: vec![host.to_string()],
                ..Default::default()
            },
        )
    }

    fn basic_for(host: &str) -> Credentials {
        let auth =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user:secret");
        let config = serde_json::json!({"auths": {host: {"auth": auth}}});
        Credentials::from_docker_config_json(config.to_string().as_bytes(), "test").unwrap()
    }

    #[tokio::test]
    async fn a_registry_not_declared_insecure_is_contacted_over_https_only() {
        let (other, seen) =
            listen(|_| "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into());
        let registry = Registry::new(
            basic_for(&other),
            RegistryOptions {
                insecure_registries: vec!["127.0.0.1:1".into()],
                ..Default::default()
            },
        );
        let r = ImageRef::parse(&format!("{other}/shop/web:1")).unwrap();
        registry.resolve(&r).await.expect_err("no TLS there");
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty(), "the registry was not contacted");
        for first in seen.iter() {
            // 0x16: a TLS handshake record.
            assert_eq!(
                first.first(),
                Some(&0x16),
                "plain HTTP to {other}, not declared insecure: {}",
                String::from_utf8_lossy(first)
            );
        }
    }

    #[tokio::test]
    async fn credentials_never_go_in_cleartext_to_a_realm_not_declared_insecure() {
        // Where the registry's challenge sends the credentials: plain HTTP, not declared.
        let (realm, realm_log) = listen(|_| {
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        });
        let challenge = format!("http://{realm}/token");
        let (registry_host, _) = listen(move |_| {
            format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{challenge}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        });
        let registry = plain_http_with_credentials(&registry_host);
        let r = ImageRef::parse(&format!("{registry_host}/shop/web:1")).unwrap();
        let e = registry.resolve(&r).await.expect_err("refused").to_string();
        for text in realm_requests(&realm_log) {
            assert!(
                !text.contains("authorization"),
                "credentials in cleartext to {realm}: {text}"
            );
        }
        assert!(
            e.contains(&format!("http://{realm}/token")) && e.contains("plain HTTP"),
            "{e}"
        );
        // Declared insecure, the same realm gets them: that is what the declaration says.
        let registry = Registry::new(
            basic_for(&registry_host),
            RegistryOptions {
                insecure_registries: vec![registry_host.clone(), realm.clone()],
                ..Default::default()
            },
        );
        let before = realm_requests(&realm_log).len();
        let _ = registry.resolve(&r).await;
        assert!(
            realm_requests(&realm_log)[before..]
                .iter()
                .any(|t| t.contains("authorization: basic")),
            "a realm declared insecure is asked for a token"
        );
    }

    #[tokio::test]
    async fn a_redirect_to_another_host_carries_no_credentials() {
        let (elsewhere, elsewhere_log) = listen(|_| {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        });
        let target = format!("http://{elsewhere}/blob");
        let (registry_host, registry_log) = listen(move |request| {
            if request.starts_with(b"GET /v2/ ") {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            } else {
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            }
        });
        let registry = plain_http_with_credentials(&registry_host);
        let r = ImageRef::parse(&format!("{registry_host}/shop/web:1")).unwrap();
        let _ = registry.resolve(&r).await;
        assert!(
            realm_requests(&registry_log)
                .iter()
                .any(|t| t.starts_with("get /v2/shop/web/manifests/1 ")
                    && t.contains("authorization: basic")),
            "the registry itself gets the credentials"
        );
        let seen = realm_requests(&elsewhere_log);
        assert!(!seen.is_empty(), "the redirect was not followed");
        for text in seen {
            assert!(
                !text.contains("authorization"),
                "credentials followed a redirect to {elsewhere}: {text}"
            );
        }
    }
}
