//! The contents of the files a harden may keep, set aside while the layers stream past.
//!
//! A layer is a gzip stream that can be read only forward, and the hardened layer is written in
//! sorted order once the kept set is known, so the bytes of candidate files are copied here as
//! they go by. They live in one unlinked temporary file (the page cache, not the process, holds
//! them), so memory stays flat however large the kept set is. Large files a harden will
//! surely keep can also have their blocks compressed on the way in ([`Early`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::image::codec::early::{Early, Likely, Shelf};
use crate::image::codec::pgzip::{BLOCK, Piece};
use crate::image::limits::{Exceeded, SPOOL_FLAG};

/// A byte range of the spool file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub len: u64,
}

pub struct Spool {
    writer: BufWriter<File>,
    end: u64,
    /// (layer, path) → where that layer's version of the file is.
    ranges: HashMap<(usize, String), Range>,
    /// Compressing blocks of what [`Spool::put_early`] copies in, until the first flush.
    early: Option<Early>,
    /// What it compressed.
    shelf: Shelf,
    /// Most bytes it may hold ([`Spool::set_limit`]).
    limit: u64,
}

impl Spool {
    pub fn new() -> io::Result<Spool> {
        Ok(Spool {
            writer: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            end: 0,
            ranges: HashMap::new(),
            early: None,
            shelf: Shelf::default(),
            limit: u64::MAX,
        })
    }

    /// Refuses contents beyond `bytes` in all: the spool lives on a volume of limited size.
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// An error unless `size` more bytes, for `path`, fit within the limit.
    pub fn check_room(&self, path: &str, size: u64) -> io::Result<()> {
        if size <= self.limit.saturating_sub(self.end) {
            return Ok(());
        }
        Err(Exceeded::bytes(
            format!(
                "setting aside /{path} ({size} bytes) would bring the spool to {} bytes",
                self.end.saturating_add(size)
            ),
            self.limit,
            SPOOL_FLAG,
        )
        .into_io())
    }

    /// A spool whose [`Spool::put_early`] also compresses the gzip blocks of what it copies
    /// in, until the first [`Spool::flush`].
    pub fn with_early() -> io::Result<Spool> {
        let mut spool = Spool::new()?;
        spool.early = Some(Early::start(spool.writer.get_ref().try_clone()?)?);
        Ok(spool)
    }

    /// [`Spool::put`], offering the contents block by block to the early compressor, when
    /// there is one.
    pub fn put_early(
        &mut self,
        likely: Likely,
        layer: usize,
        path: &str,
        content: &mut dyn Read,
    ) -> io::Result<Range> {
        let Some(early) = &self.early else {
            return self.put(layer, path, content);
        };
        let mut len = 0;
        let mut block = Vec::with_capacity(BLOCK);
        loop {
            block.clear();
            let n = content.take(BLOCK as u64).read_to_end(&mut block)?;
            if n == 0 {
                break;
            }
            self.check_room(path, len + n as u64)?;
            // The worker reads the block back from the file.
            self.writer.write_all(&block)?;
            self.writer.flush()?;
            early.offer(likely, layer, path, self.end + len, n);
            len += n as u64;
            if n < BLOCK {
                break;
            }
        }
        Ok(self.record(layer, path, len))
    }

    fn record(&mut self, layer: usize, path: &str, len: u64) -> Range {
        let range = Range {
            offset: self.end,
            len,
        };
        self.end += len;
        self.ranges.insert((layer, path.to_string()), range);
        range
    }

    /// Blocks compressed on the way in so far.
    #[cfg(test)]
    pub fn early_stored(&self) -> usize {
        self.early
            .as_ref()
            .map_or(self.shelf.blocks(), Early::stored)
    }

    /// Block `index` of `layer`'s `path` as compressed on the way in, when it was and its
    /// input was `input` bytes.
    pub fn early_piece(
        &self,
        layer: usize,
        path: &str,
        index: usize,
        input: u64,
    ) -> io::Result<Option<Piece>> {
        self.shelf.piece(layer, path, index, input)
    }

    /// Copies the rest of `content` in as `path` of `layer`.
    pub fn put(&mut self, layer: usize, path: &str, content: &mut dyn Read) -> io::Result<Range> {
        let room = self.limit.saturating_sub(self.end);
        let len = io::copy(
            &mut Read::take(&mut *content, room.saturating_add(1)),
            &mut self.writer,
        )?;
        self.check_room(path, len)?;
        Ok(self.record(layer, path, len))
    }

    pub fn get(&self, layer: usize, path: &str) -> Option<Range> {
        self.ranges.get(&(layer, path.to_string())).copied()
    }

    pub fn contains(&self, layer: usize, path: &str) -> bool {
        self.ranges.contains_key(&(layer, path.to_string()))
    }

    /// Total bytes set aside.
    pub fn bytes(&self) -> u64 {
        self.end
    }

    /// Makes everything put so far readable, and ends early compression.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(early) = self.early.take() {
            self.shelf = early.settle();
            tracing::debug!(
                blocks = self.shelf.blocks(),
                "blocks compressed during the read"
            );
        }
        self.writer.flush()
    }

    /// A reader over `range`; call [`Spool::flush`] after the last `put` first.
    pub fn open(&self, range: Range) -> Window<'_> {
        Window {
            file: self.writer.get_ref(),
            start: range.offset,
            len: range.len,
            pos: 0,
        }
    }

    /// The whole of `range`, for small files (configuration text).
    pub fn read(&self, range: Range) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; range.len as usize];
        self.writer
            .get_ref()
            .read_exact_at(&mut buf, range.offset)?;
        Ok(buf)
    }
}

/// One file inside the spool, readable and seekable on its own.
pub struct Window<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_layers_version_apart() {
        let mut s = Spool::new().unwrap();
        s.put(0, "etc/a", &mut &b"old"[..]).unwrap();
        let r = s.put(1, "etc/a", &mut &b"newer"[..]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.read(s.get(0, "etc/a").unwrap()).unwrap(), b"old");
        assert_eq!(s.read(r).unwrap(), b"newer");
        let mut w = s.open(r);
        w.seek(SeekFrom::Start(2)).unwrap();
        let mut rest = String::new();
        w.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "wer");
        assert_eq!(s.bytes(), 8);
        assert!(!s.contains(2, "etc/a"));
    }

    #[test]
    fn refuses_contents_beyond_its_limit() {
        let mut s = Spool::new().unwrap();
        s.set_limit(10);
        s.put(0, "a", &mut &b"123456"[..]).unwrap();
        assert!(s.check_room("b", 4).is_ok());
        let e = s.put(0, "b", &mut &b"12345"[..]).unwrap_err();
        let exceeded = Exceeded::from_io(&e).expect("a budget error");
        assert_eq!(exceeded.flag, SPOOL_FLAG);
        assert!(exceeded.what.contains("/b (5 bytes)"), "{exceeded}");
        assert!(!s.contains(0, "b"));
        let mut early = Spool::with_early().unwrap();
        early.set_limit(BLOCK as u64);
        let big = vec![7u8; BLOCK + 1];
        let e = early
            .put_early(Likely::Named, 0, "big", &mut &big[..])
            .unwrap_err();
        assert!(Exceeded::from_io(&e).is_some(), "{e}");
    }
}
