//! The contents of the files a harden may keep, set aside while the layers stream past.
//!
//! A layer is a gzip stream that can be read only forward, and the hardened layer is written in
//! sorted order once the kept set is known, so the bytes of candidate files are copied here as
//! they go by. They live in one unlinked temporary file (the page cache, not the process, holds
//! them), so memory stays flat however large the kept set is.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

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
}

impl Spool {
    pub fn new() -> io::Result<Spool> {
        Ok(Spool {
            writer: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            end: 0,
            ranges: HashMap::new(),
        })
    }

    /// Copies the rest of `content` in as `path` of `layer`.
    pub fn put(&mut self, layer: usize, path: &str, content: &mut dyn Read) -> io::Result<Range> {
        let len = io::copy(content, &mut self.writer)?;
        let range = Range {
            offset: self.end,
            len,
        };
        self.end += len;
        self.ranges.insert((layer, path.to_string()), range);
        Ok(range)
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

    /// Makes everything put so far readable.
    pub fn flush(&mut self) -> io::Result<()> {
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
}
