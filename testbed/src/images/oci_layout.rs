//! Reads an OCI image layout directory (as umoci and skopeo write it) by hand, so the test bed
//! checks whittle's images with code that is not whittle's; and adds layers made by GNU tar
//! (umoci 0.4.7's `insert` ends its tar streams without padding or end-of-archive blocks).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

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

fn write_json(path: &Path, value: &Value) -> Result<(String, u64)> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Invalid(format!("serialising {}: {e}", path.display())))?;
    write_blob(path, &bytes)
}

/// Stores `bytes` as a blob of the layout that holds `any_blob_dir` (`<layout>/blobs/sha256`).
fn write_blob(blob_dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let hex = format!("{:x}", Sha256::digest(bytes));
    let path = blob_dir.join(&hex);
    fs::write(&path, bytes).context(|| format!("writing {}", path.display()))?;
    Ok((format!("sha256:{hex}"), bytes.len() as u64))
}

/// Rewrites the image config of the image tagged `tag` with `edit` (a field umoci cannot set,
/// such as Docker's `Healthcheck`), and the manifest and index that name it.
pub fn edit_config(layout: &Path, tag: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
    let blobs = layout.join("blobs/sha256");
    let mut config = image_config(layout, tag)?;
    edit(&mut config);
    let (config_digest, config_size) = write_json(&blobs, &config)?;
    let mut manifest = manifest(layout, tag)?;
    manifest["config"]["digest"] = Value::from(config_digest);
    manifest["config"]["size"] = Value::from(config_size);
    retag(layout, tag, &manifest)
}

/// Stores `manifest` and points `tag` at it.
fn retag(layout: &Path, tag: &str, manifest: &Value) -> Result<()> {
    let (manifest_digest, manifest_size) = write_json(&layout.join("blobs/sha256"), manifest)?;
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path)?;
    for entry in index["manifests"].as_array_mut().into_iter().flatten() {
        if entry["annotations"]["org.opencontainers.image.ref.name"] == tag {
            entry["digest"] = Value::from(manifest_digest.clone());
            entry["size"] = Value::from(manifest_size);
        }
    }
    let bytes = serde_json::to_vec(&index)
        .map_err(|e| Error::Invalid(format!("serialising index.json: {e}")))?;
    fs::write(&index_path, bytes).context(|| format!("writing {}", index_path.display()))?;
    Ok(())
}

/// Adds the contents of `dir` as a new gzip layer on top of the image tagged `tag`, the way an
/// image builder does: a tar made by GNU tar (numeric owners, xattrs, sorted names), the
/// manifest's layers, the config's diff_ids and history extended. Whiteouts are written as
/// they travel in layers: files named `.wh.NAME` and `.wh..wh..opq` in `dir`.
pub fn append_layer(layout: &Path, tag: &str, dir: &Path, created_by: &str) -> Result<()> {
    let work = tempfile::tempdir().context(|| "creating a layer work dir".into())?;
    let tar_path = work.path().join("layer.tar");
    crate::tools::run(
        std::process::Command::new("tar")
            .args([
                "--create",
                "--numeric-owner",
                "--xattrs",
                "--sort=name",
                "--file",
            ])
            .arg(&tar_path)
            .arg("-C")
            .arg(dir)
            .arg("."),
    )?;
    let tar = fs::read(&tar_path).context(|| format!("reading {}", tar_path.display()))?;
    let diff_id = format!("sha256:{:x}", Sha256::digest(&tar));
    drop(tar);
    crate::tools::run(
        std::process::Command::new("gzip")
            .args(["-n", "-6"])
            .arg(&tar_path),
    )?;
    let gz_path = work.path().join("layer.tar.gz");
    let gz = fs::read(&gz_path).context(|| format!("reading {}", gz_path.display()))?;
    let blobs = layout.join("blobs/sha256");
    let (layer_digest, layer_size) = write_blob(&blobs, &gz)?;

    let mut manifest = manifest(layout, tag)?;
    let mut config = image_config(layout, tag)?;
    let push = |v: &mut Value, item: Value| match v.as_array_mut() {
        Some(a) => a.push(item),
        None => *v = Value::Array(vec![item]),
    };
    push(&mut config["rootfs"]["diff_ids"], Value::from(diff_id));
    push(
        &mut config["history"],
        serde_json::json!({"created_by": created_by}),
    );
    let (config_digest, config_size) = write_json(&blobs, &config)?;
    manifest["config"]["digest"] = Value::from(config_digest);
    manifest["config"]["size"] = Value::from(config_size);
    push(
        &mut manifest["layers"],
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }),
    );
    retag(layout, tag, &manifest)
}
