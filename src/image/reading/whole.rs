//! A layer blob read to its very end, whatever its tar says.
//!
//! The blob's digest is compared when its last byte has gone by (the registry's stream and the
//! layout's file check it there), but a tar reader stops at the end-of-archive marker and a
//! decompressor at the end of its stream. Bytes after those were never read, so a blob swapped
//! for a short archive plus padding was used without its digest ever being compared. Here the
//! decompressor reads through a [`Shared`] handle, and once the tar is done [`Rest::finish`]
//! reads what is left, which is when the digest is compared.

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use flate2::read::MultiGzDecoder;

use crate::image::media::Compression;

/// The compressed bytes, and the first error reading them met. The error is kept because the
/// decompressor runs on a read-ahead thread whose last error nobody may receive once the tar
/// has ended: a digest mismatch found there must still reach [`Rest::finish`].
struct Source<R> {
    reader: R,
    failed: Option<(io::ErrorKind, String)>,
}

impl<R: Read> Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        match self.reader.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
            other => other,
        }
    }
}

fn lock<R>(source: &Mutex<Source<R>>) -> MutexGuard<'_, Source<R>> {
    // A reader that panicked left the stream where it was; reading on is still sound.
    source
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the decompressor reads from.
pub struct Shared<R>(Arc<Mutex<Source<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        lock(&self.0).read(buf)
    }
}

/// What is left of the blob once the tar is done.
pub struct Rest<R>(Arc<Mutex<Source<R>>>);

impl<R: Read> Rest<R> {
    /// Reads the blob to its end (or returns the error an earlier read met); the number of
    /// bytes there were after what the decompressor read.
    pub fn finish(self) -> io::Result<u64> {
        let mut source = lock(&self.0);
        let mut buf = vec![0; 64 << 10];
        let mut total = 0;
        loop {
            match source.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Splits `blob` into a reader for the decompressor and the handle that finishes it.
pub fn whole<R: Read>(blob: R) -> (Shared<R>, Rest<R>) {
    let source = Arc::new(Mutex::new(Source {
        reader: blob,
        failed: None,
    }));
    (Shared(source.clone()), Rest(source))
}

/// The tar inside `blob`, decompressed as `compression` says, and the handle that reads the
/// blob to its end afterwards.
pub fn decompressed<R: Read + Send + 'static>(
    compression: Compression,
    blob: R,
) -> io::Result<(Box<dyn Read + Send>, Rest<R>)> {
    let (shared, rest) = whole(blob);
    let buffered = BufReader::with_capacity(1 << 20, shared);
    let tar: Box<dyn Read + Send> = match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    Ok((tar, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails at its end, as a blob whose digest does not match does.
    struct Checked {
        data: io::Cursor<Vec<u8>>,
        reads: usize,
    }

    impl Read for Checked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            match self.data.read(buf)? {
                0 => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "digest mismatch",
                )),
                n => Ok(n),
            }
        }
    }

    fn tar_then_padding(padding: usize) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header, "a", &b"abc"[..]).unwrap();
        let mut tar = b.into_inner().unwrap();
        tar.resize(tar.len() + padding, 0);
        tar
    }

    #[test]
    fn the_end_of_the_blob_is_reached_after_the_end_of_the_archive() {
        let blob = Checked {
            data: io::Cursor::new(tar_then_padding(8 << 20)),
            reads: 0,
        };
        let (tar, rest) = decompressed(Compression::None, blob).unwrap();
        let entries = tar::Archive::new(tar).entries().unwrap().count();
        assert_eq!(entries, 1);
        let e = rest.finish().unwrap_err();
        assert_eq!(e.to_string(), "digest mismatch");
    }

    #[test]
    fn an_error_the_decompressor_met_is_kept_for_finish() {
        let (mut shared, rest) = whole(Checked {
            data: io::Cursor::new(vec![1; 10]),
            reads: 0,
        });
        let mut sink = Vec::new();
        assert!(shared.read_to_end(&mut sink).is_err());
        drop(shared);
        assert_eq!(rest.finish().unwrap_err().to_string(), "digest mismatch");
    }

    #[test]
    fn a_blob_that_ends_cleanly_finishes_with_what_was_left() {
        let (mut shared, rest) = whole(&b"0123456789"[..]);
        let mut four = [0; 4];
        shared.read_exact(&mut four).unwrap();
        assert_eq!(rest.finish().unwrap(), 6);
    }
}
