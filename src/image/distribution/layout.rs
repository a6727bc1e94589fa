//! OCI image layout directories (`oci:DIR:TAG`), the registry-free place whittle reads and
//! writes images: `oci-layout`, `index.json` naming manifests by
//! `org.opencontainers.image.ref.name`, and content-addressed `blobs/sha256/`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use oci_client::manifest::OciDescriptor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::reference::is_sha256_digest;
use crate::image::error::{ImageError, Result};
use crate::image::limits::{Exceeded, MANIFEST_FLAG};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `index.json` names every image of the layout, so it may be larger than one manifest; a
/// layout is local, written by whittle or skopeo, so this is against accidents, not attacks.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The file at `path`, of which at most `cap` bytes are read (it may grow after a stat).
fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(path)?, cap.saturating_add(1)),
        &mut bytes,
    )?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {cap} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// `oci:DIR:TAG` or `oci:DIR@sha256:...`; a missing tag means `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    pub dir: PathBuf,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl LayoutRef {
    /// Parses what follows `oci:`.
    pub fn parse(input: &str, rest: &str) -> Result<LayoutRef> {
        let bad = |reason: &str| ImageError::Reference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(bad("the digest is not sha256:<64 hex digits>"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag.to_string())),
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(bad("expected oci:DIR:TAG"));
        }
        if let Some(tag) = &tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(bad("a tag is 1-128 letters, digits, '.', '_' or '-'"));
        }
        Ok(LayoutRef {
            dir: PathBuf::from(dir),
            tag: match (&tag, &digest) {
                (None, None) => Some("latest".into()),
                _ => tag,
            },
            digest,
        })
    }

    pub fn at_tag(&self, tag: &str) -> LayoutRef {
        LayoutRef {
            dir: self.dir.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    pub fn at_digest(&self, digest: &str) -> LayoutRef {
        LayoutRef {
            dir: self.dir.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        blob_path(&self.dir, digest)
    }

    /// The manifest this names: its descriptor from `index.json`.
    pub fn find(&self) -> Result<OciDescriptor> {
        let index = self.read_index()?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let found = entries.iter().find(|m| match (&self.tag, &self.digest) {
            (_, Some(d)) => m["digest"].as_str() == Some(d),
            (Some(t), None) => m["annotations"][REF_NAME].as_str() == Some(t),
            (None, None) => false,
        });
        let found = match (found, &self.digest) {
            (Some(f), _) => f.clone(),
            // A digest not named in index.json may still be a blob (a platform image of an index).
            (None, Some(d)) if self.blob_path(d)?.is_file() => {
                let size = std::fs::metadata(self.blob_path(d)?)
                    .map_err(ImageError::io(format!("{}", self.blob_path(d)?.display())))?
                    .len();
                json!({"mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE, "digest": d, "size": size})
            }
            _ => {
                let names: Vec<&str> = entries
                    .iter()
                    .filter_map(|m| m["annotations"][REF_NAME].as_str())
                    .collect();
                return Err(ImageError::Manifest {
                    reference: self.to_string(),
                    detail: format!(
                        "not in {}/index.json (it names: {})",
                        self.dir.display(),
                        if names.is_empty() {
                            "nothing".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                });
            }
        };
        serde_json::from_value(found).map_err(|e| ImageError::Manifest {
            reference: self.to_string(),
            detail: format!("index.json holds a bad descriptor: {e}"),
        })
    }

    fn read_index(&self) -> Result<Value> {
        let path = self.dir.join("index.json");
        let bytes = read_capped(&path, MAX_INDEX_BYTES).map_err(|e| ImageError::Manifest {
            reference: self.to_string(),
            detail: format!(
                "cannot read {}: {e} (is {} an OCI image layout?)",
                path.display(),
                self.dir.display()
            ),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Manifest {
            reference: self.to_string(),
            detail: format!("{} is not JSON: {e}", path.display()),
        })
    }

    /// A whole blob of at most `cap` bytes (a manifest or a config: over the cap, it is
    /// refused before it is read), verified against its digest.
    pub fn read_blob(&self, digest: &str, cap: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let size = std::fs::metadata(&path)
            .map_err(ImageError::io(format!(
                "reading blob {digest} of {}",
                self.dir.display()
            )))?
            .len();
        if size > cap {
            return Err(Exceeded::bytes(
                format!("blob {digest} of {} is {size} bytes", self.dir.display()),
                cap,
                MANIFEST_FLAG,
            )
            .into());
        }
        let bytes = read_capped(&path, cap).map_err(ImageError::io(format!(
            "reading blob {digest} of {}",
            self.dir.display()
        )))?;
        let actual = format!("sha256:{:x}", Sha256::digest(&bytes));
        if actual != digest {
            return Err(ImageError::layer(
                digest,
                format!("{} holds content with digest {actual}", path.display()),
            ));
        }
        Ok(bytes)
    }

    /// A blob as a stream of chunks.
    pub async fn blob_stream(
        &self,
        desc: &OciDescriptor,
    ) -> Result<impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<>> {
        let path = self.blob_path(&desc.digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(ImageError::io(format!("opening {}", path.display())))?;
        Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
    }

    /// Creates the directory, `oci-layout` and an empty `index.json` when absent.
    pub fn ensure_layout(&self) -> Result<()> {
        let blobs = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(ImageError::io(format!(
            "creating the image layout {}",
            self.dir.display()
        )))?;
        let marker = self.dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !self.dir.join("index.json").exists() {
            write_atomic(
                &self.dir.join("index.json"),
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            )?;
        }
        Ok(())
    }

    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Stores `data` as a blob; returns false when it was already there.
    pub fn put_blob(&self, data: &[u8]) -> Result<(String, bool)> {
        self.ensure_layout()?;
        let digest = format!("sha256:{:x}", Sha256::digest(data));
        let path = self.blob_path(&digest)?;
        if path.is_file() {
            return Ok((digest, false));
        }
        write_atomic(&path, data)?;
        Ok((digest, true))
    }

    /// Stores the content of `file` (from its start) as blob `digest`.
    pub fn put_blob_file(&self, file: &std::fs::File, digest: &str) -> Result<bool> {
        self.ensure_layout()?;
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(false);
        }
        let what = format!("writing blob {digest} into {}", self.dir.display());
        let mut src = file.try_clone().map_err(ImageError::io(&what))?;
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0))
            .map_err(ImageError::io(&what))?;
        let dir = path.parent().unwrap_or(&self.dir);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ImageError::io(&what))?;
        std::io::copy(&mut src, &mut tmp).map_err(ImageError::io(&what))?;
        tmp.persist(&path)
            .map_err(|e| ImageError::io(&what)(e.error))?;
        Ok(true)
    }

    /// Copies blob `desc` here from `stream`, verifying its digest; false when already present.
    pub async fn put_blob_stream<S>(&self, desc: &OciDescriptor, mut stream: S) -> Result<bool>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        self.ensure_layout()?;
        let path = self.blob_path(&desc.digest)?;
        if path.is_file() {
            return Ok(false);
        }
        let what = format!("writing blob {} into {}", desc.digest, self.dir.display());
        let dir = path.parent().unwrap_or(&self.dir);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ImageError::io(&what))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ImageError::io(&what))?;
            hasher.update(&chunk);
            tmp.write_all(&chunk).map_err(ImageError::io(&what))?;
        }
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != desc.digest {
            return Err(ImageError::layer(
                &desc.digest,
                format!("the source sent content with digest {actual}"),
            ));
        }
        tmp.persist(&path)
            .map_err(|e| ImageError::io(&what)(e.error))?;
        Ok(true)
    }

    /// Stores a manifest and names it with this reference's tag in `index.json`, replacing
    /// what the tag named before. Returns its digest.
    pub fn put_manifest(&self, body: &[u8], media_type: &str) -> Result<String> {
        let (digest, _) = self.put_blob(body)?;
        let mut index = self.read_index()?;
        let mut entry = json!({"mediaType": media_type, "digest": digest, "size": body.len()});
        if let Some(tag) = &self.tag {
            entry["annotations"] = json!({ REF_NAME: tag });
        }
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut kept: Vec<Value> = manifests
            .into_iter()
            .filter(|m| match &self.tag {
                Some(t) => m["annotations"][REF_NAME].as_str() != Some(t),
                None => m["digest"].as_str() != Some(&digest),
            })
            .collect();
        kept.push(entry);
        index["manifests"] = Value::Array(kept);
        let bytes = serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Manifest {
            reference: self.to_string(),
            detail: format!("index.json: {e}"),
        })?;
        write_atomic(&self.dir.join("index.json"), &bytes)?;
        Ok(digest)
    }
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    if !is_sha256_digest(digest) {
        return Err(ImageError::layer(digest, "not a sha256 digest"));
    }
    Ok(dir.join("blobs/sha256").join(&digest["sha256:".len()..]))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let what = format!("writing {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(ImageError::io(&what))?;
    tmp.write_all(data).map_err(ImageError::io(&what))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io(&what)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layout_references() {
        let r = LayoutRef::parse("oci:/tmp/x:1.0", "/tmp/x:1.0").unwrap();
        assert_eq!(
            (r.dir.to_str(), r.tag.as_deref()),
            (Some("/tmp/x"), Some("1.0"))
        );
        let r = LayoutRef::parse("oci:out", "out").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = format!("sha256:{}", "0".repeat(64));
        let r = LayoutRef::parse("", &format!("a/b@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("oci:a/b@{d}"));
        let both = LayoutRef::parse("", &format!("a/b:t@{d}")).unwrap();
        assert_eq!(
            (both.tag.as_deref(), both.digest.as_deref()),
            (Some("t"), Some(d.as_str()))
        );
        assert_eq!(both.to_string(), format!("oci:a/b:t@{d}"));
        assert!(LayoutRef::parse("oci::x", ":x").is_err());
        assert!(LayoutRef::parse("oci:d:bad tag", "d:bad tag").is_err());
    }

    #[test]
    fn manifests_are_named_by_tag_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let r = LayoutRef::parse("", &format!("{}:one", dir.path().display())).unwrap();
        let d1 = r
            .put_manifest(b"{\"a\":1}", "application/vnd.oci.image.manifest.v1+json")
            .unwrap();
        assert_eq!(r.find().unwrap().digest, d1);
        let d2 = r
            .put_manifest(b"{\"a\":2}", "application/vnd.oci.image.manifest.v1+json")
            .unwrap();
        assert_eq!(r.find().unwrap().digest, d2);
        assert_eq!(r.read_blob(&d1, 100).unwrap(), b"{\"a\":1}");
        let e = r.at_tag("two").find().unwrap_err().to_string();
        assert!(e.contains("it names: one"), "{e}");
    }
}
