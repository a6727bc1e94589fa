//! A tiny HTTP/1.0 client for readiness probes and for requests made from inside a container's
//! network namespace, where the socket must be created by hand (see [`crate::net::netns`]).
//! HTTP/1.0 keeps it honest and small: the server closes the connection and sends no chunks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};

/// A response: status code, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` over an open stream and reads the whole response.
pub fn get(mut stream: TcpStream, host: &str, path: &str) -> Result<Response> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .context(|| "setting a read timeout".into())?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: whittle-testbed\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .context(|| format!("sending GET {path} to {host}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context(|| format!("reading the response to GET {path} from {host}"))?;
    parse(&raw).ok_or_else(|| {
        Error::Invalid(format!(
            "GET {path} from {host}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r =
            parse(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<h1>x</h1>").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("text/html"));
        assert_eq!(r.body, b"<h1>x</h1>");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"hello").is_none());
    }
}
