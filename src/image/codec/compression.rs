//! The hardened layer's encoder, of either codec ([`LayerCompression`]): gzip through
//! `pgzip`, zstd through libzstd's workers.

use std::io::{self, Write};

use super::pgzip::{ParallelGz, Piece};
use crate::image::media::LayerCompression;

/// Level 7: at zstd's default (3) the hardened nginx layer came out 2.2% larger than
/// `gzip -6` of its tar; at 7 it is 2.6% smaller, and libzstd's workers still compress it as
/// fast as the parallel gzip (docs/benchmarks.md).
const ZSTD_LEVEL: i32 = 7;

// The encoder is the codec's side of `LayerCompression`; the type itself, with its media
// types, is in `media`.
impl LayerCompression {
    /// An encoder writing the compressed stream to `inner`.
    pub fn encoder<W: Write>(self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            LayerCompression::Gzip => Encoder::Gzip(ParallelGz::new(inner)?),
            LayerCompression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
                // libzstd's streaming multithreaded output is the same for any number of
                // workers from 1 up (not for 0, its single-threaded mode), so the digest does
                // not depend on the machine's cores.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                z.multithread(u32::try_from(workers).unwrap_or(1).max(1))?;
                Encoder::Zstd(z)
            }
        })
    }
}

/// A compressing writer of either codec; [`Encoder::finish`] ends the stream.
pub enum Encoder<W: Write> {
    Gzip(ParallelGz<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Whether [`Encoder::put_piece`] takes pieces: gzip's blocks can be made ahead of time.
    pub fn takes_pieces(&self) -> bool {
        matches!(self, Encoder::Gzip(_))
    }

    /// Starts a new gzip block with what is written next; zstd's frame has no such cut.
    pub fn cut(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.cut(),
            Encoder::Zstd(_) => Ok(()),
        }
    }

    /// Appends a gzip block compressed ahead of time, after a [`Encoder::cut`].
    pub fn put_piece(&mut self, piece: Piece) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.put_piece(piece),
            Encoder::Zstd(_) => Err(io::Error::other(
                "internal: a gzip piece was given to the zstd encoder",
            )),
        }
    }

    /// Writes what is buffered and the stream's end; returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text-like input with long-range repeats, so that more than one zstd job has work.
    fn input() -> Vec<u8> {
        let mut v = Vec::new();
        let mut x: u32 = 1;
        while v.len() < 24 << 20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let word = format!("w{} ", (x >> 16) % 5000);
            v.extend_from_slice(word.as_bytes());
        }
        v
    }

    fn zstd_with(workers: u32, data: &[u8]) -> Vec<u8> {
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        z.multithread(workers).unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_number_of_workers() {
        let data = input();
        let one = zstd_with(1, &data);
        assert_eq!(one, zstd_with(2, &data));
        assert_eq!(one, zstd_with(7, &data));
        let mut enc = LayerCompression::Zstd.encoder(Vec::new()).unwrap();
        enc.write_all(&data).unwrap();
        assert_eq!(one, enc.finish().unwrap());
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&one[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "zstd round trip");
        assert!(one.len() < data.len() / 2, "{} bytes", one.len());
    }
}
