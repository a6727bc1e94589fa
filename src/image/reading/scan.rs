//! Reading one layer's tar stream into the [`Tree`], and setting aside the contents of the
//! files a caller may need into the [`Spool`]. Each entry is looked at once, in stream order.

use std::io::{self, Read};

use tar::EntryType;

use super::spool::Spool;
use super::tree::{Applied, Kind, Node, Tree, normalize};
use crate::image::codec::early::Likely;
use crate::image::limits::{Exceeded, TREE_FLAG};

/// Which file contents to set aside while a layer streams past.
pub trait Retain {
    /// `size` is the file's length, for retainers that keep a budget.
    fn retain(&self, layer: usize, path: &str, size: u64) -> bool;
    /// Whether a retained file's blocks are worth compressing as it streams past
    /// ([`Spool::put_early`]), and how likely it is to be kept.
    fn early(&self, _layer: usize, _path: &str, _size: u64) -> Option<Likely> {
        None
    }
    /// Called for every symlink as it streams past, before any entry after it.
    fn symlink(&self, _path: &str, _target: &str) {}
}

impl<F: Fn(usize, &str) -> bool> Retain for F {
    fn retain(&self, layer: usize, path: &str, _size: u64) -> bool {
        self(layer, path)
    }
}

/// What one layer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    /// Uncompressed bytes of regular files.
    pub file_bytes: u64,
    /// Bytes set aside into the spool.
    pub retained_bytes: u64,
}

/// What a scan does with the entries' metadata.
pub enum Pass<'a> {
    /// The first pass: apply every entry to the tree.
    Build(&'a mut Tree),
    /// A later, targeted pass: the tree is complete and only names the paths.
    Refill(&'a Tree),
}

/// Reads the tar stream `tar` as layer `layer`, copying retained file contents into `spool`.
pub fn scan_layer(
    layer: usize,
    tar: impl Read,
    mut pass: Pass<'_>,
    spool: &mut Spool,
    retain: &dyn Retain,
) -> io::Result<LayerStats> {
    let mut archive = tar::Archive::new(tar);
    let mut stats = LayerStats::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        stats.entries += 1;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header();
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(link_name(&entry)?),
            EntryType::Link => Kind::HardLink(normalize(&link_name(&entry)?)),
            EntryType::Char => {
                Kind::Char(device(header.device_major()), device(header.device_minor()))
            }
            EntryType::Block => {
                Kind::Block(device(header.device_major()), device(header.device_minor()))
            }
            EntryType::Fifo => Kind::Fifo,
            EntryType::GNUSparse => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{raw_path}: sparse files in layers are not supported"),
                ));
            }
            // PAX and GNU long-name headers are folded into the next entry by `tar`.
            _ => continue,
        };
        let size = entry.size();
        let mut node = Node {
            layer,
            kind,
            mode: header.mode().unwrap_or(0o644),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            size,
            uname: text(header.username_bytes()),
            gname: text(header.groupname_bytes()),
            pax: Vec::new(),
        };
        if let Some(records) = entry.pax_extensions()? {
            for record in records {
                let record = record?;
                let Ok(key) = record.key() else { continue };
                if key.starts_with("SCHILY.xattr.") || key.starts_with("LIBARCHIVE.xattr.") {
                    node.pax
                        .push((key.to_string(), record.value_bytes().to_vec()));
                }
            }
        }
        if let Kind::Symlink(target) = &node.kind {
            retain.symlink(&raw_path, target);
        }
        let is_file = node.kind == Kind::File;
        if is_file {
            stats.file_bytes += size;
        }
        let path = match &mut pass {
            Pass::Build(tree) => match tree.apply(&raw_path, node) {
                Applied::Added(_) if let Some(limit) = tree.over_limit() => {
                    return Err(Exceeded {
                        what: format!("the image's file tree holds more than {limit} paths"),
                        limit: format!("{limit} paths"),
                        flag: TREE_FLAG,
                    }
                    .into_io());
                }
                Applied::Added(path) => path,
                Applied::Whiteout => {
                    stats.whiteouts += 1;
                    continue;
                }
                Applied::Ignored => continue,
            },
            Pass::Refill(tree) => tree.real_path(&raw_path),
        };
        if is_file && !spool.contains(layer, &path) && retain.retain(layer, &path, size) {
            // Refused on the header's word, before any of it is read.
            spool.check_room(&path, size)?;
            let range = match retain.early(layer, &path, size) {
                Some(likely) => spool.put_early(likely, layer, &path, &mut entry)?,
                None => spool.put(layer, &path, &mut entry)?,
            };
            stats.retained_bytes += range.len;
        }
    }
    Ok(stats)
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<String> {
    match entry.link_name_bytes() {
        Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: a link entry without a target",
                String::from_utf8_lossy(&entry.path_bytes())
            ),
        )),
    }
}

fn device(n: io::Result<Option<u32>>) -> u32 {
    n.ok().flatten().unwrap_or(0)
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes
        .filter(|b| !b.is_empty())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Reads `source` on a thread of its own, a few chunks ahead of the consumer: gunzipping a
/// layer and parsing its tar then run on two cores instead of one.
pub fn read_ahead(mut source: impl Read + Send + 'static) -> impl Read {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    std::thread::spawn(move || {
        loop {
            let mut chunk = vec![0; 256 << 10];
            let sent = match source.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    tx.send(Ok(chunk))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            };
            // The consumer stopped (an error, or it has all it needs).
            if sent.is_err() {
                break;
            }
        }
    });
    ReadAhead {
        rx,
        current: Vec::new(),
        pos: 0,
    }
}

struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                // The reading thread is done: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_passes_bytes_and_errors_through() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        read_ahead(io::Cursor::new(data.clone()))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let failing = io::Cursor::new(vec![1u8; 10]).chain(FailingReader);
        let mut out = Vec::new();
        let e = read_ahead(failing).read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "boom");
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("boom"))
        }
    }
}
