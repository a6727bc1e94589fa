//! gzip both ways, with a ceiling on what decompression may produce (a gzip bomb of a few KiB
//! would otherwise inflate to gigabytes).

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GunzipError {
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("not valid gzip: {0}")]
    Corrupt(String),
}

/// Compresses with the best ratio: reports are written once and stored in 1 MiB ConfigMaps.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Decompresses gzip (several members are read as one stream, as gzip(1) does), refusing to
/// produce more than `limit` bytes.
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    let ceiling = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    MultiGzDecoder::new(data)
        .take(ceiling)
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = b"{\"schemaVersion\":1}".repeat(100);
        assert_eq!(gunzip_limited(&gzip(&data), data.len()).unwrap(), data);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            gunzip_limited(&bomb, 1 << 20),
            Err(GunzipError::TooLarge { limit: 1 << 20 })
        );
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        assert!(matches!(
            gunzip_limited(b"{\"not\":\"gzip\"}", 100),
            Err(GunzipError::Corrupt(_))
        ));
        let z = gzip(b"hello world hello world");
        assert!(matches!(
            gunzip_limited(&z[..z.len() - 6], 100),
            Err(GunzipError::Corrupt(_))
        ));
    }

    #[test]
    fn concatenated_members_are_one_stream() {
        let mut two = gzip(b"ab");
        two.extend(gzip(b"cd"));
        assert_eq!(gunzip_limited(&two, 10).unwrap(), b"abcd");
    }
}
