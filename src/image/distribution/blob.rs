//! A registry blob as a byte stream that survives a dropped connection: resumed with a Range
//! request from where it stopped (up to [`ATTEMPTS`] times), the whole compared with the
//! manifest's digest and size at the end, so a corrupt or truncated blob is an error, never
//! silently used.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_client::client::BlobResponse;
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::reference::ImageRef;
use super::retry::{ATTEMPTS, BACKOFF, chain, is_transient_io, retry};

pub(super) type BoxByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Opens the blob at `offset`; when the registry ignores the Range and sends it whole, the
/// bytes before `offset` are skipped.
pub(super) async fn open_at(
    client: &Client,
    r: &Reference,
    desc: &OciDescriptor,
    offset: u64,
) -> std::result::Result<BoxByteStream, OciDistributionError> {
    // A body longer than the manifest says is refused before it is read.
    let size = desc.size.max(0) as u64;
    let longer = |announced: Option<u64>, left: u64| match announced {
        Some(len) if len > left => Err(OciDistributionError::SpecViolationError(format!(
            "the registry announced {len} bytes of blob {} from offset {offset}; the manifest says it has {size}",
            desc.digest
        ))),
        _ => Ok(()),
    };
    if offset == 0 {
        let s = client.pull_blob_stream(r, desc).await?;
        longer(s.content_length, size)?;
        return Ok(Box::pin(s.stream));
    }
    match client
        .pull_blob_stream_partial(r, desc, offset, None)
        .await?
    {
        BlobResponse::Partial(s) => {
            longer(s.content_length, size.saturating_sub(offset))?;
            Ok(Box::pin(s.stream))
        }
        BlobResponse::Full(s) => {
            longer(s.content_length, size)?;
            let mut skip = offset;
            Ok(Box::pin(s.stream.filter_map(move |chunk| {
                let out = match chunk {
                    Ok(mut b) if skip > 0 => {
                        let n = skip.min(b.len() as u64) as usize;
                        skip -= n as u64;
                        let rest = b.split_off(n);
                        (!rest.is_empty()).then_some(Ok(rest))
                    }
                    other => Some(other),
                };
                futures::future::ready(out)
            })))
        }
    }
}

struct BlobState {
    client: Client,
    reference: ImageRef,
    desc: OciDescriptor,
    offset: u64,
    hasher: Sha256,
    inner: Option<BoxByteStream>,
    resumes: u32,
    done: bool,
}

impl BlobState {
    /// The error for a blob whose bytes so far are all there is, when they are not what the
    /// manifest says.
    fn mismatch(&self) -> Option<std::io::Error> {
        let digest = format!("sha256:{:x}", self.hasher.clone().finalize());
        let size = self.desc.size.max(0) as u64;
        (digest != self.desc.digest || self.offset != size).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the registry sent {} bytes with digest {digest}; the manifest says {size} bytes with digest {}",
                    self.offset, self.desc.digest
                ),
            )
        })
    }

    async fn next(mut self) -> Option<(std::io::Result<Bytes>, BlobState)> {
        if self.done {
            return None;
        }
        loop {
            let Some(inner) = self.inner.as_mut() else {
                self.done = true;
                return Some((Err(std::io::Error::other("blob stream closed")), self));
            };
            match inner.next().await {
                Some(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    self.offset += chunk.len() as u64;
                    // More than the manifest's size is a different blob: no need to read on.
                    if self.offset > self.desc.size.max(0) as u64 {
                        self.done = true;
                        let e = self.mismatch();
                        return e.map(|e| (Err(e), self));
                    }
                    return Some((Ok(chunk), self));
                }
                // oci-client compares the digest at the end too; say it the same way as below.
                Some(Err(e))
                    if e.get_ref()
                        .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some()) =>
                {
                    self.done = true;
                    let e = self.mismatch().unwrap_or(e);
                    return Some((Err(e), self));
                }
                Some(Err(e)) if self.resumes + 1 < ATTEMPTS && is_transient_io(&e) => {
                    self.resumes += 1;
                    tracing::warn!(digest = %self.desc.digest, offset = self.offset, error = %e,
                        "layer download interrupted; resuming");
                    tokio::time::sleep(BACKOFF * 2u32.pow(self.resumes)).await;
                    self.inner = None;
                    match retry(|| {
                        open_at(&self.client, self.reference.oci(), &self.desc, self.offset)
                    })
                    .await
                    {
                        Ok(s) => self.inner = Some(s),
                        Err(e) => {
                            self.done = true;
                            return Some((Err(std::io::Error::other(chain(&e))), self));
                        }
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
                None => {
                    self.done = true;
                    let e = self.mismatch();
                    return e.map(|e| (Err(e), self));
                }
            }
        }
    }
}

/// The blob `desc` of `reference`, read from `first` (opened at offset 0) and reopened where it
/// broke off.
pub(super) fn resumable(
    client: Client,
    reference: ImageRef,
    desc: OciDescriptor,
    first: BoxByteStream,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<> {
    let state = BlobState {
        client,
        reference,
        desc,
        offset: 0,
        hasher: Sha256::new(),
        inner: Some(first),
        resumes: 0,
        done: false,
    };
    futures::stream::unfold(state, BlobState::next)
}
