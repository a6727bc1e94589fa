//! Reads an OCI image layout directory (as umoci and skopeo write it) by hand, so the test bed
//! checks whittle's images with code that is not whittle's.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// The blob file for a `sha256:...` digest.
pub fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| Error::Invalid(format!("not a digest: {digest}")))?;
    Ok(layout.join("blobs").join(algo).join(hex))
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{} is not JSON: {e}", path.display())))
}

/// The manifest the layout's index names with `org.opencontainers.image.ref.name = tag`.
pub fn manifest(layout: &Path, tag: &str) -> Result<Value> {
    let index = read_json(&layout.join("index.json"))?;
    let desc = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .ok_or_else(|| Error::Invalid(format!("{} has no tag {tag}", layout.display())))?;
    let digest = desc["digest"]
        .as_str()
        .ok_or_else(|| Error::Invalid("index entry without digest".into()))?;
    read_json(&blob_path(layout, digest)?)
}

/// The image configuration (the `config` object holds Entrypoint, Cmd, Env, StopSignal, ...).
pub fn image_config(layout: &Path, tag: &str) -> Result<Value> {
    let manifest = manifest(layout, tag)?;
    let digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| Error::Invalid("manifest without config digest".into()))?;
    read_json(&blob_path(layout, digest)?)
}
