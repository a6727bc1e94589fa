//! Writing the hardened layer: the kept paths in sorted order, each with the metadata its
//! source entry had, as one gzip tar in a temporary file. The same tree, spool contents and kept
//! set always give the same bytes: no timestamps but the sources', no host names or ids. The
//! gzip is one stream whose 1 MiB blocks are compressed in parallel ([`ParallelGz`]); zstd is
//! one frame from libzstd's workers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::compression::LayerCompression;
use crate::image::reading::spool::Spool;
use crate::image::reading::tree::{Kind, Node, Tree};

/// A finished layer, ready to upload.
#[derive(Debug)]
pub struct LayerFile {
    /// Positioned at the start.
    pub file: File,
    /// `sha256:` of the compressed bytes (the blob digest).
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Compressed size.
    pub size: u64,
    /// Entries written (directories included).
    pub entries: u64,
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W: Write>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        count: 0,
    }
}

/// Writes `keep` (paths of `tree`, parents included) with contents from `spool`, which must
/// hold every kept regular file (see `select::Selection::missing`), except those `rewritten`
/// gives new contents for (the pruned package database); they keep their metadata.
pub fn write_layer(
    tree: &Tree,
    spool: &Spool,
    keep: &BTreeSet<String>,
    rewritten: &BTreeMap<String, Vec<u8>>,
    compression: LayerCompression,
) -> io::Result<LayerFile> {
    let compressed = hashing(BufWriter::with_capacity(1 << 20, tempfile::tempfile()?));
    let mut tar = tar::Builder::new(hashing(compression.encoder(compressed)?));
    let heads = hardlink_heads(tree, keep);
    let mut entries = 0;
    for path in keep {
        let implicit = Node::implicit_dir();
        let node = tree.get(path).unwrap_or(&implicit);
        if !node.pax.is_empty() {
            tar.append_pax_extensions(node.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let mut header = Header::new_gnu();
        header.set_mode(node.mode);
        header.set_uid(node.uid);
        header.set_gid(node.gid);
        header.set_mtime(node.mtime);
        // Names longer than the header holds are dropped rather than failing the image: the
        // numeric ids are what the kernel uses.
        if let Some(u) = &node.uname {
            let _ = header.set_username(u);
        }
        if let Some(g) = &node.gname {
            let _ = header.set_groupname(g);
        }
        header.set_size(0);
        entries += 1;
        match &node.kind {
            Kind::Dir => {
                header.set_entry_type(EntryType::Directory);
                tar.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            Kind::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                tar.append_link(&mut header, path, target)?;
            }
            Kind::File | Kind::HardLink(_) if rewritten.contains_key(path) => {
                let bytes = &rewritten[path];
                header.set_entry_type(EntryType::Regular);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())?;
            }
            Kind::File | Kind::HardLink(_) => {
                // Bytes of a hard link are its target's as of the link's own layer.
                let source = match &node.kind {
                    Kind::HardLink(t) => t.as_str(),
                    _ => path.as_str(),
                };
                if let Some(head) = heads.get(source).filter(|h| h.as_str() != path) {
                    header.set_entry_type(EntryType::Link);
                    tar.append_link(&mut header, path, head)?;
                    continue;
                }
                let range = spool.get(node.layer, source).ok_or_else(|| {
                    io::Error::other(format!(
                        "internal: no content for {path} (layer {})",
                        node.layer
                    ))
                })?;
                header.set_entry_type(EntryType::Regular);
                header.set_size(range.len);
                tar.append_data(&mut header, path, spool.open(range))?;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                header.set_entry_type(if matches!(node.kind, Kind::Char(..)) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                header.set_device_major(*major)?;
                header.set_device_minor(*minor)?;
                tar.append_data(&mut header, path, io::empty())?;
            }
            Kind::Fifo => {
                header.set_entry_type(EntryType::Fifo);
                tar.append_data(&mut header, path, io::empty())?;
            }
        }
    }
    let uncompressed = tar.into_inner()?;
    let diff_id = format!("sha256:{:x}", uncompressed.hasher.finalize());
    let mut compressed = uncompressed.inner.finish()?;
    compressed.flush()?;
    let digest = format!("sha256:{:x}", compressed.hasher.finalize());
    let size = compressed.count;
    let mut file = compressed.inner.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    Ok(LayerFile {
        file,
        digest,
        diff_id,
        size,
        entries,
    })
}

/// For each file that kept hard links share, the kept path written first (in sorted order)
/// carries the bytes; the others link to it. Keyed by the link target's path.
fn hardlink_heads(tree: &Tree, keep: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut groups: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for path in keep {
        if let Some(Node {
            kind: Kind::HardLink(target),
            layer,
            ..
        }) = tree.get(path)
        {
            // Only while the target path still holds that same file; otherwise the link is
            // written as a file of its own with the old bytes.
            let same = tree.get(target).is_some_and(|t| {
                t.layer == *layer && t.kind == Kind::File && keep.contains(target)
            });
            if same {
                groups.entry(target.clone()).or_default().push(path);
            }
        }
    }
    groups
        .into_iter()
        .map(|(target, mut members)| {
            members.push(&target);
            members.sort();
            let head = members[0].clone();
            (target, head)
        })
        .collect()
}
