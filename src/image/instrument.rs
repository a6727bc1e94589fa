//! `whittle instrument`: the source image's layers, reused by digest, plus one small layer with
//! the sensor, which becomes the entrypoint and starts the original command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::analysis::elf;
use super::config::{self, SENSOR_PATH};
use super::distribution::registry::Transfer;
use super::distribution::store::{Location, Store};
use super::error::{ImageError, Result};
use super::limits::{Exceeded, INSTRUMENT_FLAG, duration_text};
use super::media;
use super::writing::assemble::{self, Entry};

/// What instrument made.
#[derive(Debug, Clone)]
pub struct Instrumented {
    /// The source, pinned to its digest.
    pub source: Location,
    /// The instrumented image, pinned to its digest.
    pub image: Location,
    /// Its name as pushed, with the digest: `registry/repo:tag@sha256:...`.
    pub pushed: String,
    /// Source layers by how they reached the destination.
    pub layers_present: usize,
    pub layers_mounted: usize,
    pub layers_copied: usize,
    /// Bytes uploaded or written for this image.
    pub bytes_written: u64,
}

/// The sensor binary to put in images: `explicit`, else `$WHITTLE_SENSOR_BIN`, else
/// `whittle-sensor` next to the running `whittle`.
pub fn find_sensor(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("WHITTLE_SENSOR_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("whittle-sensor")));
    match beside {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(ImageError::Sensor {
            path: PathBuf::from("whittle-sensor"),
            reason:
                "not found: pass --sensor PATH or set WHITTLE_SENSOR_BIN (`make sensor` builds it)"
                    .into(),
        }),
    }
}

/// Reads the sensor and checks it can run in any image: a static x86_64 ELF program.
fn read_sensor(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: String| ImageError::Sensor {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    elf::static_program(&bytes).map_err(|reason| {
        bad(format!(
            "{reason}, so it cannot run in images without that libc; build it with `make sensor`"
        ))
    })?;
    Ok(bytes)
}

/// The sensor layer: `/.whittle/` and the binary, root-owned, dated 0, so the same sensor
/// always makes the same layer. Returns (gzip bytes, diff id).
fn sensor_layer(sensor: Vec<u8>) -> Result<(Vec<u8>, String)> {
    let path = SENSOR_PATH.trim_start_matches('/').to_string();
    assemble::layer(&BTreeMap::from([(path, Entry::file(0o755, sensor))]))
        .map_err(ImageError::io("building the sensor layer"))
}

/// Instruments `src` into `dst` (default `<repo>:<tag>-whittle-instrumented`), within the
/// store's instrument deadline: a registry that answers slowly enough never trips a read
/// timeout, and the operator would wait on it forever.
pub async fn instrument(
    store: &Store,
    src: &Location,
    dst: Option<&Location>,
    sensor: &Path,
) -> Result<Instrumented> {
    let limit = store.limits().instrument_timeout;
    tokio::time::timeout(limit, instrument_now(store, src, dst, sensor))
        .await
        .unwrap_or_else(|_| {
            Err(Exceeded {
                what: format!("instrumenting {src} did not finish in time"),
                limit: duration_text(limit),
                flag: INSTRUMENT_FLAG,
            }
            .into())
        })
}

async fn instrument_now(
    store: &Store,
    src: &Location,
    dst: Option<&Location>,
    sensor: &Path,
) -> Result<Instrumented> {
    let sensor = read_sensor(sensor)?;
    let image = store.resolve(src).await?;
    let dst = match dst {
        Some(d) => d.clone(),
        None => src.derived("whittle-instrumented"),
    };
    let before = store.bytes_written();
    let (layer, diff_id) = sensor_layer(sensor)?;
    let config = config::instrumented(&image, &diff_id)?;

    // Source layers are made available by digest, a few at a time.
    // Built before streaming: a closure inside the stream would make this future `Send` only
    // for one lifetime, which the operator's controller cannot use.
    let pending: Vec<_> = image
        .layers
        .iter()
        .map(|desc| store.transfer_layer(&image, &dst, desc))
        .collect();
    let transfers: Vec<Transfer> = futures::stream::iter(pending)
        .buffered(4)
        .try_collect()
        .await?;
    let layer_size = layer.len() as u64;
    let layer_digest = store.put_blob(&dst, Bytes::from(layer)).await?;
    let mut layers = image.layers.clone();
    layers.push(media::descriptor(
        image.flavor.gzip_layer_type(),
        &layer_digest,
        layer_size,
    ));
    let digest = store
        .put_image(&dst, image.flavor, &config, &layers)
        .await?;
    let count = |t: Transfer| transfers.iter().filter(|x| **x == t).count();
    Ok(Instrumented {
        source: image.pinned.clone(),
        image: dst.at_digest(&digest),
        pushed: dst.pushed(&digest),
        layers_present: count(Transfer::Present),
        layers_mounted: count(Transfer::Mounted),
        layers_copied: count(Transfer::Copied),
        bytes_written: store.bytes_written() - before,
    })
}
