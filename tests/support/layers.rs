//! A hardened image's one layer as a client sees it: copied out with skopeo, unpacked with
//! flate2 or the zstd tool, read with tar (not with whittle's code), and measured against GNU
//! `gzip -6` of its own tar: whittle's parallel compressor must do at least as well as the
//! serial one everyone has.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use whittle_testbed::images::oci_layout;

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub struct HardenedLayer {
    pub reference: String,
    pub media_type: String,
    pub blob: Vec<u8>,
}

/// The one layer of the image at `reference`: `HOST/REPO@sha256:…` in a plain-HTTP registry,
/// copied out with skopeo, or `oci:LAYOUT@sha256:…` as `whittle local` names what it wrote
/// to a layout, read from there.
pub fn hardened_layer(reference: &str) -> HardenedLayer {
    let dir = tempfile::tempdir().expect("temp dir");
    let (layout, manifest) = match reference.strip_prefix("oci:") {
        Some(rest) => {
            let (layout, digest) = rest.split_once('@').expect("oci:LAYOUT@DIGEST");
            let layout = std::path::PathBuf::from(layout);
            let blob = oci_layout::blob_path(&layout, digest).expect("manifest blob");
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(blob).expect("read manifest"))
                    .expect("manifest json");
            (layout, manifest)
        }
        None => {
            let layout = dir.path().join("image");
            let status = Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:t", layout.display()))
                .status()
                .expect("run skopeo");
            assert!(status.success(), "skopeo copy {reference}");
            let manifest = oci_layout::manifest(&layout, "t").expect("manifest");
            (layout, manifest)
        }
    };
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(
        layers.len(),
        1,
        "a hardened image has one layer: {manifest}"
    );
    let digest = layers[0]["digest"].as_str().expect("digest");
    let blob = oci_layout::blob_path(&layout, digest).expect("blob");
    HardenedLayer {
        reference: reference.to_string(),
        media_type: layers[0]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        blob: std::fs::read(blob).expect("read layer"),
    }
}

impl HardenedLayer {
    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut tar = Vec::new();
        match self.media_type.as_str() {
            // One gzip stream: a reader of the first member only sees it all, though whittle
            // compresses its blocks in parallel.
            GZIP | DOCKER_GZIP => {
                flate2::read::GzDecoder::new(&self.blob[..])
                    .read_to_end(&mut tar)
                    .expect("gunzip the layer");
            }
            ZSTD => tar = filter("zstd", &["-d", "-c"], &self.blob),
            other => panic!("{}: unexpected layer media type {other}", self.reference),
        }
        tar
    }

    /// The paths in the layer, no leading `/`, directories without their trailing one.
    pub fn files(&self) -> BTreeSet<String> {
        tar::Archive::new(&self.tar()[..])
            .entries()
            .expect("tar")
            .map(|e| {
                let e = e.expect("tar entry");
                let path = e.path().expect("path").display().to_string();
                path.trim_end_matches('/').to_string()
            })
            .collect()
    }

    /// The layer is no larger than `gzip -6 -n` makes the same tar (the bar for the
    /// compressor; zstd layers meet it too).
    pub fn assert_no_larger_than_gzip6(&self) {
        let gzip6 = filter("gzip", &["-6", "-n", "-c"], &self.tar()).len();
        let ours = self.blob.len();
        eprintln!(
            "{}: layer {ours} bytes ({}), gzip -6 of its tar {gzip6} bytes ({:+.3}%)",
            self.reference,
            self.media_type,
            (ours as f64 / gzip6 as f64 - 1.0) * 100.0
        );
        assert!(
            ours <= gzip6,
            "{}: the hardened layer is {ours} bytes, gzip -6 of its tar {gzip6}",
            self.reference
        );
    }
}

/// `program args` with `input` on stdin; its stdout.
fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    feeder.join().expect("feeder").expect("write stdin");
    assert!(out.status.success(), "{program} {args:?} failed");
    out.stdout
}

/// Replaces the layer blob at `path` with other content of the same size: a small gzip tar
/// holding an `/etc/passwd` of its own, then zeros up to the original size, after the tar's
/// end-of-archive. A reader that stops at end-of-archive never reaches the end of the blob,
/// where its digest is compared; the size the manifest states still matches. Returns the
/// bytes of padding.
pub fn swap_blob(path: &std::path::Path) -> usize {
    let size = std::fs::metadata(path).expect("blob to swap").len() as usize;
    let body = b"root:x:0:0:swapped:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_data(&mut header, "etc/passwd", &body[..])
        .expect("tar entry");
    let tar = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let mut blob = gz.finish().expect("gzip");
    let padding = size.saturating_sub(blob.len());
    assert!(
        padding >= 4 << 20,
        "{}: {size} bytes leave no megabytes of padding",
        path.display()
    );
    blob.resize(size, 0);
    std::fs::write(path, blob).expect("write the swapped blob");
    padding
}
