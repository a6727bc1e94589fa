//! Gzip on every core: the stream is cut into fixed-size blocks, each compressed on its own
//! thread as a gzip member, and the members written in order. A multi-member gzip file is one
//! valid gzip stream to every reader (Go's `compress/gzip`, which containerd uses, zlib,
//! `gzip -d`); the cut points depend only on the input, so the output is as deterministic as
//! single-threaded gzip. Compressing the hardened layer is most of what harden adds to reading
//! the source, so this is where the cores pay.

use std::io::{self, Write};

use flate2::{Compression, GzBuilder};

/// Input bytes per gzip member: large enough that restarting the dictionary costs little.
const BLOCK: usize = 1 << 20;

pub struct ParallelGz<W: Write> {
    inner: W,
    level: Compression,
    threads: usize,
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
}

impl<W: Write> ParallelGz<W> {
    pub fn new(inner: W, level: Compression) -> ParallelGz<W> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        ParallelGz {
            inner,
            level,
            threads,
            pending: Vec::new(),
            current: Vec::with_capacity(BLOCK),
        }
    }

    /// Compresses the blocks held so far, in parallel, and writes them in order.
    fn drain(&mut self) -> io::Result<()> {
        let level = self.level;
        let blocks = std::mem::take(&mut self.pending);
        let members: Vec<io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = blocks
                .iter()
                .map(|block| scope.spawn(move || compress(block, level)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a compression thread panicked")))
                })
                .collect()
        });
        for member in members {
            self.inner.write_all(&member?)?;
        }
        Ok(())
    }

    fn seal_block(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.current, Vec::with_capacity(BLOCK));
        self.pending.push(full);
        if self.pending.len() >= self.threads {
            self.drain()?;
        }
        Ok(())
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.current.is_empty() || self.pending.is_empty() {
            let last = std::mem::take(&mut self.current);
            self.pending.push(last);
        }
        self.drain()?;
        Ok(self.inner)
    }
}

fn compress(block: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(block.len() / 2), level);
    gz.write_all(block)?;
    gz.finish()
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.current.len();
        let n = room.min(buf.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BLOCK {
            self.seal_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;

    #[test]
    fn round_trips_and_is_deterministic() {
        let data: Vec<u8> = (0..(3 * BLOCK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let pack = || {
            let mut gz = ParallelGz::new(Vec::new(), Compression::new(6));
            gz.write_all(&data).unwrap();
            gz.finish().unwrap()
        };
        let packed = pack();
        assert_eq!(packed, pack(), "same input, same bytes");
        let mut out = Vec::new();
        MultiGzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let empty = ParallelGz::new(Vec::new(), Compression::new(6))
            .finish()
            .unwrap();
        let mut out = Vec::new();
        MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
