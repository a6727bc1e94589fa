//! What the bytes of an image are, in the registries' vocabulary (as containerd's
//! `core/images/mediatypes.go`): Docker's and OCI's media types ([`Flavor`]), how a layer is
//! compressed ([`Compression`] read, [`LayerCompression`] written), and the descriptors and
//! manifests whittle writes. A leaf: it imports nothing else of the image engine, so
//! distribution, reading, writing and the codecs all depend on it and it on none of them.

use oci_client::manifest::{self as mt, OciDescriptor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a manifest request accepts: image manifests and indexes, OCI's and Docker's.
pub(in crate::image) const MANIFEST_TYPES: &[&str] = &[
    mt::OCI_IMAGE_MEDIA_TYPE,
    mt::IMAGE_MANIFEST_MEDIA_TYPE,
    mt::OCI_IMAGE_INDEX_MEDIA_TYPE,
    mt::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// True for an image index (OCI) or manifest list (Docker), by media type or, without one,
/// by shape.
pub fn is_index(v: &Value) -> bool {
    match v["mediaType"].as_str() {
        Some(mt::OCI_IMAGE_INDEX_MEDIA_TYPE) | Some(mt::IMAGE_MANIFEST_LIST_MEDIA_TYPE) => true,
        Some(_) => false,
        None => v.get("manifests").is_some() && v.get("layers").is_none(),
    }
}

/// OCI's media type of a zstd-compressed tar layer (image-spec 1.1). Docker's manifest format
/// has none, so a zstd image is always written with OCI media types.
pub(in crate::image) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How layer bytes are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Whether an image uses Docker's or OCI's media types; whittle writes what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Docker,
    Oci,
}

impl Flavor {
    pub const fn manifest_type(self) -> &'static str {
        match self {
            Flavor::Docker => mt::IMAGE_MANIFEST_MEDIA_TYPE,
            Flavor::Oci => mt::OCI_IMAGE_MEDIA_TYPE,
        }
    }
    pub const fn config_type(self) -> &'static str {
        match self {
            Flavor::Docker => mt::IMAGE_DOCKER_CONFIG_MEDIA_TYPE,
            Flavor::Oci => mt::IMAGE_CONFIG_MEDIA_TYPE,
        }
    }
    pub fn gzip_layer_type(self) -> &'static str {
        match self {
            Flavor::Docker => mt::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
            Flavor::Oci => mt::IMAGE_LAYER_GZIP_MEDIA_TYPE,
        }
    }
}

/// How a layer of this media type is compressed, if whittle can read it.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        mt::IMAGE_LAYER_GZIP_MEDIA_TYPE
        | mt::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE
        | mt::IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Compression::Zstd)
        }
        mt::IMAGE_LAYER_MEDIA_TYPE
        | mt::IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE
        | mt::IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE => Some(Compression::None),
        _ => None,
    }
}

/// The codec of the hardened layer. (Its variants carry no doc comments: schemars would turn
/// them into a `oneOf` that a CRD's structural schema does not want.)
#[derive(
    Serialize, Deserialize, JsonSchema, clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum LayerCompression {
    // gzip, one stream compressed in parallel (ParallelGz).
    #[default]
    Gzip,
    // zstd level 7, one frame compressed in parallel by libzstd's workers.
    Zstd,
}

impl LayerCompression {
    /// The flavour and layer media type of an image whose source had `source`'s: gzip keeps
    /// the source's flavour; zstd exists only in OCI's.
    pub fn media(self, source: Flavor) -> (Flavor, &'static str) {
        match self {
            LayerCompression::Gzip => (source, source.gzip_layer_type()),
            LayerCompression::Zstd => (Flavor::Oci, OCI_LAYER_ZSTD),
        }
    }
}

/// A manifest of `flavor` naming `config` and `layers`.
pub fn manifest(flavor: Flavor, config: &OciDescriptor, layers: &[OciDescriptor]) -> Vec<u8> {
    let descriptor =
        |d: &OciDescriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let value = json!({
        "schemaVersion": 2,
        "mediaType": flavor.manifest_type(),
        "config": descriptor(config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    // Serialising a Value built here cannot fail.
    serde_json::to_vec(&value).unwrap_or_default()
}

pub fn descriptor(media_type: &str, digest: &str, size: u64) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_compression(mt::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(mt::IMAGE_LAYER_MEDIA_TYPE),
            Some(Compression::None)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+lz4"),
            None
        );
    }
}
