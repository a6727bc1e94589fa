//! Images from scratch: one layer of given files and a config, written by the same store that
//! instrument and harden write with. `whittle operator-image` builds the operator's own image
//! this way, so no Docker engine or Dockerfile is needed.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::image::distribution::store::{Location, Store};
use crate::image::error::{ImageError, Result};
use crate::image::media::{self, Flavor};

/// One file or directory of the image, owned by root and dated 0 so the same inputs always
/// give the same layer digest.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mode: u32,
    /// `None` for a directory.
    pub contents: Option<Vec<u8>>,
}

impl Entry {
    pub fn file(mode: u32, contents: Vec<u8>) -> Entry {
        Entry {
            mode,
            contents: Some(contents),
        }
    }

    pub fn dir(mode: u32) -> Entry {
        Entry {
            mode,
            contents: None,
        }
    }
}

/// What to assemble: paths (relative to `/`, no leading slash) and the OCI config's `config`
/// object (User, Entrypoint, Cmd, Env, Labels, ...).
#[derive(Debug, Clone, Default)]
pub struct Recipe {
    pub entries: BTreeMap<String, Entry>,
    pub config: Value,
    /// The history line shown by `crane config` and registries' UIs.
    pub created_by: String,
}

/// What assemble stored.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The manifest digest.
    pub digest: String,
    /// The manifest's size: an artifact naming the image as its subject (an SBOM) needs it.
    pub manifest_size: u64,
    /// The compressed layer's size in bytes (the image's pull size, config aside).
    pub layer_bytes: u64,
}

/// Stores `recipe` as a one-layer OCI image under `dst`'s tag.
pub async fn assemble(store: &Store, dst: &Location, recipe: &Recipe) -> Result<Assembled> {
    let (layer, diff_id) =
        layer(&recipe.entries).map_err(ImageError::io("building the image layer"))?;
    let layer_bytes = layer.len() as u64;
    let layer_digest = store.put_blob(dst, Bytes::from(layer)).await?;
    let flavor = Flavor::Oci;
    let image_config = json!({
        // Dated like the layer's files: the same inputs give the same digest.
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": recipe.config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": recipe.created_by}],
    });
    let layers = [media::descriptor(
        flavor.gzip_layer_type(),
        &layer_digest,
        layer_bytes,
    )];
    let (digest, manifest_size) = store
        .put_image_sized(dst, flavor, &image_config, &layers)
        .await?;
    Ok(Assembled {
        digest,
        manifest_size,
        layer_bytes,
    })
}

/// The layer as gzip bytes, and its diff id (the digest of the tar). Parent directories that
/// the recipe does not name are added with mode 0755, as container runtimes expect every
/// directory to have an entry before what it holds. Instrument's sensor layer is one too.
pub(in crate::image) fn layer(
    entries: &BTreeMap<String, Entry>,
) -> std::io::Result<(Vec<u8>, String)> {
    let mut all = entries.clone();
    for path in entries.keys() {
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            all.entry(dir.to_string())
                .or_insert_with(|| Entry::dir(0o755));
            parent = dir;
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    // BTreeMap order puts each directory before what it holds ("a" < "a/b").
    for (path, entry) in &all {
        // new_gnu's zeroed uid and gid fields mean root.
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_mtime(0);
        match &entry.contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path, data.as_slice())?;
            }
        }
    }
    let tar = tar.into_inner()?;
    let diff_id = format!("sha256:{:x}", Sha256::digest(&tar));
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(&tar)?;
    Ok((gz.finish()?, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> BTreeMap<String, Entry> {
        BTreeMap::from([
            (
                "usr/local/bin/tool".to_string(),
                Entry::file(0o755, b"#!x".to_vec()),
            ),
            ("tmp".to_string(), Entry::dir(0o1777)),
        ])
    }

    fn names(gz: &[u8]) -> Vec<(String, u32)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        archive
            .entries()
            .expect("tar")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().mode().expect("mode"),
                )
            })
            .collect()
    }

    #[test]
    fn parents_come_before_their_files() {
        let (gz, _) = layer(&recipe()).expect("layer");
        assert_eq!(
            names(&gz),
            vec![
                ("tmp/".to_string(), 0o1777),
                ("usr/".to_string(), 0o755),
                ("usr/local/".to_string(), 0o755),
                ("usr/local/bin/".to_string(), 0o755),
                ("usr/local/bin/tool".to_string(), 0o755),
            ]
        );
    }

    #[test]
    fn same_inputs_same_digest() {
        let (a, id_a) = layer(&recipe()).expect("layer");
        let (b, id_b) = layer(&recipe()).expect("layer");
        assert_eq!(id_a, id_b);
        assert_eq!(Sha256::digest(&a), Sha256::digest(&b));
    }
}
