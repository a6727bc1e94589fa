//! The one way reports are read (by the operator's intake and store, `whittle harden` and
//! `whittle local`) and written compressed: gzip streamed both ways, with a ceiling on what
//! decompression may produce (a gzip bomb of a few KiB would otherwise inflate to gigabytes),
//! and one limit, [`MAX_JSON_BYTES`]. Reports are parsed straight from the inflating stream and
//! serialized straight into the compressor, so the operator never holds a report's JSON next to
//! its parsed form: with several reports in flight that is what decides its peak memory
//! (`make bench-intake`).

use std::io::{self, Read};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;

use crate::report::{MAX_JSON_BYTES, Report, ReportError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GunzipError {
    /// Also for plain JSON past the limit.
    #[error("decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("not valid gzip: {0}")]
    Corrupt(String),
}

/// Why a gzip-compressed report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadReportError {
    #[error(transparent)]
    Gzip(#[from] GunzipError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// A report as a file or a body holds it: gzip-compressed (as the sensor posts it) or plain
/// JSON, either way at most [`MAX_JSON_BYTES`] of JSON.
pub fn read_report(data: &[u8]) -> Result<Report, ReadReportError> {
    if data.starts_with(&[0x1f, 0x8b]) {
        return read_gzip_report(data, MAX_JSON_BYTES);
    }
    if data.len() > MAX_JSON_BYTES {
        return Err(GunzipError::TooLarge {
            limit: MAX_JSON_BYTES,
        }
        .into());
    }
    Ok(Report::from_json_slice(data)?)
}

/// `value` as gzip-compressed JSON, serialized into the compressor as it goes, with the best
/// ratio: reports are written once and stored in 1 MiB ConfigMaps.
pub fn gzip_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    serde_json::to_writer(&mut encoder, value)?;
    encoder.finish().map_err(serde_json::Error::io)
}

/// A gzip stream (several members read as one, as gzip(1) does) that fails once it would
/// produce more than `limit` bytes, and remembers why it failed.
pub struct Gunzip<R: Read> {
    inner: MultiGzDecoder<R>,
    left: usize,
    limit: usize,
    failure: Option<GunzipError>,
}

impl<R: Read> Gunzip<R> {
    pub fn new(compressed: R, limit: usize) -> Gunzip<R> {
        Gunzip {
            inner: MultiGzDecoder::new(compressed),
            left: limit,
            limit,
            failure: None,
        }
    }

    fn fail(&mut self, e: GunzipError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }
}

impl<R: Read> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // At the limit, one more byte decides between the end and too much.
        let room = if self.left == 0 { 1 } else { self.left };
        let want = buf.len().min(room);
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => return Err(self.fail(GunzipError::Corrupt(e.to_string()))),
        };
        if n > self.left {
            let limit = self.limit;
            return Err(self.fail(GunzipError::TooLarge { limit }));
        }
        self.left -= n;
        Ok(n)
    }
}

/// Parses a gzip-compressed report as it inflates, up to `limit` bytes of JSON. A failure of
/// the gzip stream (too large, corrupt) is told as such, not as the JSON error it causes.
pub fn read_gzip_report(data: &[u8], limit: usize) -> Result<Report, ReadReportError> {
    let mut gunzip = Gunzip::new(data, limit);
    let parsed = Report::from_json_reader(&mut gunzip);
    if let Some(e) = gunzip.failure.take() {
        return Err(e.into());
    }
    Ok(parsed?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::gzip;

    /// Decompresses all of `data`, refusing to produce more than `limit` bytes.
    fn gunzip_limited(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
        let mut gunzip = Gunzip::new(data, limit);
        let mut out = Vec::new();
        match gunzip.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(gunzip
                .failure
                .take()
                .unwrap_or(GunzipError::Corrupt(e.to_string()))),
        }
    }

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
        assert_eq!(
            gunzip_limited(&two, 4).unwrap(),
            b"abcd",
            "exactly the limit"
        );
    }

    fn report_json() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 1, "sensorVersion": "t", "mode": "ptrace",
            "startedAtMs": 1, "stoppedAtMs": 2, "argv": ["/bin/app"], "exitStatus": 0,
            "paths": {"/bin/app": {"access": ["exec"], "exists": true, "firstSeenMs": 1, "count": 1}},
        }))
        .unwrap()
    }

    #[test]
    fn a_report_is_parsed_as_it_inflates_and_written_as_it_compresses() {
        let json = report_json();
        let report = read_gzip_report(&gzip(&json), json.len()).unwrap();
        let again = read_gzip_report(&gzip_json(&report).unwrap(), 1 << 20).unwrap();
        assert_eq!(report, again);
    }

    #[test]
    fn a_report_stream_says_gzip_when_gzip_is_what_failed() {
        let json = report_json();
        assert!(matches!(
            read_gzip_report(&gzip(&json), json.len() - 1),
            Err(ReadReportError::Gzip(GunzipError::TooLarge { .. }))
        ));
        let z = gzip(&json);
        assert!(matches!(
            read_gzip_report(&z[..z.len() - 6], 1 << 20),
            Err(ReadReportError::Gzip(GunzipError::Corrupt(_)))
        ));
        assert!(matches!(
            read_gzip_report(&gzip(b"{\"schemaVersion\": 1"), 1 << 20),
            Err(ReadReportError::Report(_))
        ));
        // Trailing bytes after the report are not ignored.
        let mut trailing = json.clone();
        trailing.extend(b" x");
        assert!(read_gzip_report(&gzip(&trailing), 1 << 20).is_err());
    }

    #[test]
    fn a_file_is_read_as_gzip_or_json_within_one_limit() {
        let json = report_json();
        let plain = read_report(&json).unwrap();
        assert_eq!(read_report(&gzip(&json)).unwrap(), plain);
        let mut padded = json.clone();
        padded.resize(MAX_JSON_BYTES + 1, b' ');
        assert!(matches!(
            read_report(&padded),
            Err(ReadReportError::Gzip(GunzipError::TooLarge { .. }))
        ));
        assert!(matches!(
            read_report(&gzip(&padded)),
            Err(ReadReportError::Gzip(GunzipError::TooLarge { .. }))
        ));
    }

    /// A newer sensor's report is read with what this whittle does not know ignored, and
    /// within the same limit: an unknown field is JSON like any other.
    #[test]
    fn another_sensor_versions_report_is_read_within_the_same_limit() {
        let mut v: serde_json::Value = serde_json::from_slice(&report_json()).unwrap();
        v["mode"] = "ebpf".into();
        v["future"] = "x".repeat(1000).into();
        let report = read_report(&gzip(&serde_json::to_vec(&v).unwrap())).unwrap();
        assert_eq!(report.mode, crate::report::Mode::Other("ebpf".into()));
        v["future"] = "x".repeat(MAX_JSON_BYTES).into();
        assert!(matches!(
            read_report(&gzip(&serde_json::to_vec(&v).unwrap())),
            Err(ReadReportError::Gzip(GunzipError::TooLarge { .. }))
        ));
    }
}
