//! Writing the hardened layer: the kept paths in sorted order, each with the metadata its
//! source entry had, as one gzip tar in a temporary file. The same tree, spool contents and kept
//! set always give the same bytes: no timestamps but the sources', no host names or ids. The
//! gzip is one stream whose 1 MiB blocks are compressed in parallel ([`ParallelGz`]); the
//! contents of a large file start a block of their own, so the blocks [`crate::image::codec::early`]
//! compressed during the read fit in unchanged. zstd is one frame from libzstd's workers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::image::codec::compression::Encoder;
use crate::image::codec::early::EARLY_MIN;
use crate::image::codec::pgzip::BLOCK;
use crate::image::media::LayerCompression;
use crate::image::reading::spool::{Range, Spool};
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
                if range.len < EARLY_MIN {
                    tar.append_data(&mut header, path, spool.open(range))?;
                    continue;
                }
                // The header (and a long-name entry) only: tar's builder writes what the
                // reader gives and pads that, so an empty reader leaves the contents to us.
                tar.append_data(&mut header, path, io::empty())?;
                write_in_own_blocks(tar.get_mut(), spool, node.layer, source, range)?;
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

/// Writes `range` of the spool, `layer`'s `path`, and the tar padding after it,
/// with a gzip block starting at the contents and every [`BLOCK`] bytes in: a block compressed
/// during the read goes in as it is, any other is compressed now, to the same bytes.
fn write_in_own_blocks<W: Write>(
    out: &mut Hashing<Encoder<W>>,
    spool: &Spool,
    layer: usize,
    path: &str,
    range: Range,
) -> io::Result<()> {
    let len = range.len;
    let mut contents = spool.open(range);
    out.inner.cut()?;
    let mut block = vec![0; BLOCK];
    let mut left = len;
    for index in 0.. {
        if left == 0 {
            break;
        }
        let n = left.min(BLOCK as u64);
        let block = &mut block[..n as usize];
        contents.read_exact(block)?;
        left -= n;
        // The tar's digest covers the contents whichever way they are compressed.
        out.hasher.update(&*block);
        out.count += n;
        let early = if out.inner.takes_pieces() {
            spool.early_piece(layer, path, index, n)?
        } else {
            None
        };
        match early {
            Some(piece) => out.inner.put_piece(piece)?,
            None => out.inner.write_all(block)?,
        }
    }
    out.inner.cut()?;
    let padding = (512 - len % 512) % 512;
    out.write_all(&[0; 512][..padding as usize])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::codec::early::Likely;
    use crate::image::reading::scan::{Pass, Retain, scan_layer};
    use flate2::read::GzDecoder;
    use std::time::{Duration, Instant};

    /// Retains everything, and offers every large file to the early compressor.
    struct Everything;
    impl Retain for Everything {
        fn retain(&self, _: usize, _: &str, _: u64) -> bool {
            true
        }
        fn early(&self, _: usize, path: &str, _: u64) -> Option<Likely> {
            Some(if path.contains("lib") {
                Likely::Maybe
            } else {
                Likely::Named
            })
        }
    }

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                b"abcdefgh \n"[(x >> 60) as usize % 10]
            })
            .collect()
    }

    /// A layer with small files, a file just under the cut-off, and two large files (one with
    /// a name too long for a plain header).
    fn source_tar() -> Vec<u8> {
        let long = format!("usr/lib/{}/libbig.so.1", "x".repeat(120));
        let files: Vec<(String, Vec<u8>)> = vec![
            ("etc/small".into(), text(3_000, 1)),
            ("usr/bin/app".into(), text(3 * BLOCK + 17, 2)),
            ("usr/lib/edge".into(), text(EARLY_MIN as usize - 1, 3)),
            (long, text(BLOCK, 4)),
            ("usr/share/tiny".into(), text(10, 5)),
        ];
        let mut tar = tar::Builder::new(Vec::new());
        for (path, bytes) in &files {
            let mut header = Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, path, bytes.as_slice())
                .unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn read(spool: &mut Spool) -> Tree {
        let mut tree = Tree::new();
        scan_layer(
            0,
            &source_tar()[..],
            Pass::Build(&mut tree),
            spool,
            &Everything,
        )
        .unwrap();
        tree
    }

    fn unpacked(layer: &mut LayerFile) -> Vec<(String, Vec<u8>)> {
        let mut gz = Vec::new();
        layer.file.read_to_end(&mut gz).unwrap();
        let mut plain = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(
            layer.diff_id,
            format!("sha256:{:x}", Sha256::digest(&plain)),
            "the diff id is the tar's digest"
        );
        let mut archive = tar::Archive::new(&plain[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).unwrap();
                (e.path().unwrap().display().to_string(), bytes)
            })
            .collect()
    }

    #[test]
    fn blocks_compressed_during_the_read_give_the_same_layer() {
        let mut plain = Spool::new().unwrap();
        let tree = read(&mut plain);
        plain.flush().unwrap();
        let mut early = Spool::with_early().unwrap();
        assert_eq!(read(&mut early).len(), tree.len());
        // The worker runs at low priority when it can; wait for a few of its blocks.
        let deadline = Instant::now() + Duration::from_secs(30);
        while early.early_stored() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        early.flush().unwrap();
        assert!(early.early_stored() >= 2, "blocks were compressed early");

        let keep: BTreeSet<String> = tree.iter().map(|(p, _)| p.clone()).collect();
        let none = BTreeMap::new();
        let mut a = write_layer(&tree, &plain, &keep, &none, LayerCompression::Gzip).unwrap();
        let mut b = write_layer(&tree, &early, &keep, &none, LayerCompression::Gzip).unwrap();
        assert_eq!(a.digest, b.digest, "the same layer either way");
        assert_eq!(a.diff_id, b.diff_id);
        let files = unpacked(&mut a);
        assert_eq!(files, unpacked(&mut b));
        let mut source = tar::Archive::new(std::io::Cursor::new(source_tar()));
        for entry in source.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            assert!(
                files.iter().any(|(p, b)| *p == path && *b == bytes),
                "{path} is in the layer with its contents"
            );
        }
        // zstd takes no pieces and still writes every file whole.
        let mut z = write_layer(&tree, &early, &keep, &none, LayerCompression::Zstd).unwrap();
        let mut zbytes = Vec::new();
        z.file.read_to_end(&mut zbytes).unwrap();
        let plain_tar = zstd::decode_all(&zbytes[..]).unwrap();
        assert_eq!(
            z.diff_id,
            format!("sha256:{:x}", Sha256::digest(&plain_tar))
        );
        assert_eq!(z.diff_id, a.diff_id, "the same tar under either codec");
    }
}
