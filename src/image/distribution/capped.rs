//! Manifests fetched with a size cap. oci-client reads a manifest's whole body into memory,
//! however long the registry makes it; a registry anyone may name (a tenant's own) could then
//! spend the operator's memory with one response. Here the request is oci-client's (its token,
//! or the docker config's basic credentials), but the body is refused when its
//! `Content-Length` is over the cap, before it is read, and the read stops at the cap when
//! there is no length.

use bytes::{Bytes, BytesMut};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use sha2::{Digest, Sha256};

use super::reference::{ImageRef, is_sha256_digest};
use crate::image::limits::{Exceeded, MANIFEST_FLAG};

type Fetched = std::result::Result<(Bytes, String), Exceeded>;

/// Where the manifest `r` names is, over `scheme`.
fn url(scheme: &str, r: &ImageRef) -> String {
    let oci = r.oci();
    let reference = oci
        .digest()
        .or(oci.tag())
        .map_or_else(|| "latest".to_string(), str::to_string);
    format!(
        "{scheme}://{}/v2/{}/manifests/{reference}",
        oci.resolve_registry(),
        oci.repository()
    )
}

/// The manifest `r` names, at most `cap` bytes, and its digest (checked against the one `r`
/// names, if any, and the registry's `Docker-Content-Digest`). The outer error is the
/// request's (retried when transient); the inner one a cap refused (never retried).
pub async fn manifest(
    client: &Client,
    http: &reqwest::Client,
    scheme: &str,
    auth: &RegistryAuth,
    r: &ImageRef,
    accept: &[&str],
    cap: u64,
) -> std::result::Result<Fetched, OciDistributionError> {
    let token = client.auth(r.oci(), auth, RegistryOperation::Pull).await?;
    let url = url(scheme, r);
    let mut request = http
        .get(&url)
        .header(reqwest::header::ACCEPT, accept.join(", "));
    request = match (token, auth) {
        (Some(token), _) => request.bearer_auth(token),
        (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
        (None, _) => request,
    };
    let mut response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        // The message is for the error text: its first few KiB are plenty.
        let mut message = Vec::new();
        while message.len() < 4096
            && let Some(chunk) = response.chunk().await?
        {
            message.extend_from_slice(&chunk);
        }
        message.truncate(4096);
        return Err(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::from_utf8_lossy(&message).into_owned(),
        });
    }
    let too_big = |what: String| Exceeded::bytes(what, cap, MANIFEST_FLAG);
    if let Some(len) = response.content_length()
        && len > cap
    {
        return Ok(Err(too_big(format!("the manifest {r} is {len} bytes"))));
    }
    let header = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Ok(Err(too_big(format!(
                "the manifest {r} runs past {} bytes",
                body.len() + chunk.len()
            ))));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let digest = format!("sha256:{:x}", Sha256::digest(&body));
    for expected in [r.digest().map(str::to_string), header]
        .into_iter()
        .flatten()
    {
        if expected.starts_with("sha256:") && expected != digest {
            return Err(DigestError::VerificationError {
                expected,
                actual: digest,
            }
            .into());
        }
    }
    Ok(Ok((body, digest)))
}

/// The digest the registry answers for `r` to a manifest HEAD (its `Docker-Content-Digest`),
/// without the body: what a check for a new digest costs. None when the registry sends no
/// digest (then only a GET tells).
pub async fn manifest_digest(
    client: &Client,
    http: &reqwest::Client,
    scheme: &str,
    auth: &RegistryAuth,
    r: &ImageRef,
    accept: &[&str],
) -> std::result::Result<Option<String>, OciDistributionError> {
    let token = client.auth(r.oci(), auth, RegistryOperation::Pull).await?;
    let url = url(scheme, r);
    let mut request = http
        .head(&url)
        .header(reqwest::header::ACCEPT, accept.join(", "));
    request = match (token, auth) {
        (Some(token), _) => request.bearer_auth(token),
        (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
        (None, _) => request,
    };
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::new(),
        });
    }
    Ok(response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .filter(|d| is_sha256_digest(d))
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_tag_or_the_digest() {
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(url("http", &r), "http://127.0.0.1:5000/v2/a/b/manifests/1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            url("https", &r.at_digest(&d)),
            format!("https://127.0.0.1:5000/v2/a/b/manifests/{d}")
        );
        let hub = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            url("https", &hub),
            "https://index.docker.io/v2/library/nginx/manifests/latest"
        );
    }
}
