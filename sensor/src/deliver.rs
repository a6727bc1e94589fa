//! Delivery of the report: to a file, and/or POSTed gzip-compressed to the operator. The HTTP
//! client is a few lines over a TcpStream on purpose: the operator gives an `http://IP:port`
//! address (no DNS, no TLS), and a general client would multiply the static binary's size.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("report URL {0:?} is not http://IP:PORT/PATH (the sensor resolves no names)")]
    BadUrl(String),
    #[error("writing the report to {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {detail}")]
    Post { url: String, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, DeliveryError> {
    let bad = || DeliveryError::BadUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host.parse::<SocketAddr>().map_err(|_| bad())?;
    Ok(Url {
        addr,
        path: path.to_string(),
    })
}

/// Writes the report atomically (temp file + rename), so a reader never sees half of it.
pub fn write_file(path: &Path, json: &[u8]) -> Result<(), DeliveryError> {
    let err = |source| DeliveryError::File {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

pub fn gzip(json: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(json);
    enc.finish().unwrap_or_default()
}

/// The request head for a POST of `len` gzip bytes.
pub fn request_head(url: &Url, token: Option<&str>, len: usize) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len}\r\n{auth}Connection: close\r\n\r\n",
        url.path, url.addr
    )
}

fn post_once(url: &Url, head: &str, body: &[u8], timeout: Duration) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&url.addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).map_err(|e| format!("no response: {e}"))?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))
}

/// POSTs the report, retrying with backoff until it is accepted (2xx), refused for good (4xx
/// other than 408/429), or `deadline` passes. Each failure is a line on stderr.
pub fn post(
    url: &Url,
    token: Option<&str>,
    json: &[u8],
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let body = gzip(json);
    let head = request_head(url, token, body.len());
    let shown = format!("http://{}{}", url.addr, url.path);
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DeliveryError::Post {
                url: shown,
                detail: format!(
                    "gave up after {} attempt(s): the grace period is over",
                    attempt - 1
                ),
            });
        }
        let detail = match post_once(url, &head, &body, left.min(Duration::from_secs(5))) {
            Ok(code) if (200..300).contains(&code) => return Ok(()),
            Ok(code) if (400..500).contains(&code) && code != 408 && code != 429 => {
                return Err(DeliveryError::Post {
                    url: shown,
                    detail: format!(
                        "refused the report with HTTP {code} (check WHITTLE_REPORT_TOKEN)"
                    ),
                });
            }
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        eprintln!(
            "whittle-sensor: report delivery to {shown} failed (attempt {attempt}): {detail}; retrying"
        );
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_ip_urls_only() {
        let u = parse_url("http://127.0.0.1:8080/v1/reports").unwrap();
        assert_eq!(u.addr.port(), 8080);
        assert_eq!(u.path, "/v1/reports");
        assert_eq!(parse_url("http://[::1]:9").unwrap().path, "/");
        assert!(parse_url("https://127.0.0.1:1/").is_err());
        assert!(parse_url("http://whittle.svc:80/").is_err());
    }

    #[test]
    fn frames_a_gzip_post_with_the_token() {
        let u = parse_url("http://127.0.0.1:1/r").unwrap();
        let h = request_head(&u, Some("tok"), 12);
        assert!(h.starts_with("POST /r HTTP/1.1\r\n"));
        assert!(
            h.contains("Content-Length: 12\r\n") && h.contains("Authorization: Bearer tok\r\n")
        );
        assert!(h.ends_with("\r\n\r\n"));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(b"{\"a\":1}")[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}");
    }

    #[test]
    fn a_dead_endpoint_gives_up_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = parse_url(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        drop(l);
        let start = Instant::now();
        let e = post(&url, None, b"{}", start + Duration::from_millis(700)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains("grace period"), "{e}");
    }
}
