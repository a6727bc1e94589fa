//! Delivery of the report: to a file, and/or POSTed gzip-compressed to the operator. The HTTP
//! client is a few lines over a TcpStream on purpose: the operator gives an `http://IP:port`
//! address (no DNS, no TLS), and a general client would multiply the static binary's size.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::recorder::json_len;
use crate::report::{MAX_GZIP_BYTES, MAX_JSON_BYTES, Report};

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
    #[error("{url} refused the report with HTTP {code}: {reason}")]
    Refused {
        url: String,
        code: u16,
        reason: &'static str,
    },
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

/// A report ready to go: its JSON (for `--report-file`) and that JSON gzip-compressed (the
/// POST body), each within the intake's limits.
pub struct Encoded {
    pub json: Vec<u8>,
    pub gzip: Vec<u8>,
}

/// Serialises `report` within [`MAX_JSON_BYTES`] and [`MAX_GZIP_BYTES`]. The recorder keeps
/// the JSON within its limit, but gzip shrinks random names (a client requesting random URLs)
/// far less than real ones, so when the body is still too large paths are left out (and
/// counted in `loss`) until it fits: absent ones first, then the last seen.
pub fn encode(report: &mut Report) -> Result<Encoded, serde_json::Error> {
    for _ in 0..8 {
        let json = serde_json::to_vec(report)?;
        let gz = gzip(&json);
        if json.len() <= MAX_JSON_BYTES && gz.len() <= MAX_GZIP_BYTES {
            return Ok(Encoded { json, gzip: gz });
        }
        // Names compress alike, so aim by the ratio just seen, with a margin.
        let ratio = (MAX_GZIP_BYTES as f64 / gz.len() as f64)
            .min(MAX_JSON_BYTES as f64 / json.len() as f64);
        let target = (json.len() as f64 * ratio * 0.9) as usize;
        shed(report, json.len().saturating_sub(target));
    }
    // Cannot happen with sane numbers; if it does, an empty report still says what was lost.
    shed(report, usize::MAX);
    report.executables.clear();
    let json = serde_json::to_vec(report)?;
    let gz = gzip(&json);
    Ok(Encoded { json, gzip: gz })
}

/// Leaves out paths worth about `bytes` of JSON: absent ones, then found ones, the last seen
/// first in each kind.
fn shed(report: &mut Report, bytes: usize) {
    let mut order: Vec<(bool, u64, &String)> = report
        .paths
        .iter()
        .map(|(p, r)| (r.exists, u64::MAX - r.first_seen_ms, p))
        .collect();
    order.sort();
    let mut gone = BTreeSet::new();
    let mut freed = 0usize;
    for (_, _, path) in order {
        if freed >= bytes {
            break;
        }
        // The key, the record (about 70 bytes), its entry in createdFiles if any.
        freed += 2 * json_len(path) + 72;
        gone.insert(path.clone());
    }
    for path in &gone {
        if let Some(r) = report.paths.remove(path) {
            if r.exists {
                report.loss.dropped_paths += r.count;
            } else {
                report.loss.dropped_absent_paths += r.count;
            }
        }
    }
    report.created_files.retain(|p| !gone.contains(p));
}

/// What the sensor proves itself with: the workflow's report token (a Bearer token) and the
/// pod's projected ServiceAccount token, read from its file at each attempt since kubelet
/// rotates it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub bearer: Option<String>,
    pub pod_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("pod_token_file", &self.pod_token_file)
            .finish()
    }
}

/// The most read of the pod token file (a ServiceAccount token is one or two KiB).
pub const MAX_POD_TOKEN: u64 = 16 << 10;
/// The longest wait a `Retry-After` may impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A value that can go in a header as is: visible ASCII, no spaces (a JWT, a hex token).
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Reads the pod token from `path`, at most [`MAX_POD_TOKEN`] bytes.
pub fn read_pod_token(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut buf = Vec::new();
    file.take(MAX_POD_TOKEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{shown}: {e}"))?;
    if buf.len() as u64 > MAX_POD_TOKEN {
        return Err(format!("{shown} is larger than {MAX_POD_TOKEN} bytes"));
    }
    let token = std::str::from_utf8(&buf).unwrap_or("").trim();
    if !header_safe(token) {
        return Err(format!(
            "{shown} is empty or holds characters an HTTP header cannot carry"
        ));
    }
    Ok(token.to_string())
}

/// The request head for a POST of `len` gzip bytes.
pub fn request_head(
    url: &Url,
    bearer: Option<&str>,
    pod_token: Option<&str>,
    len: usize,
) -> String {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let pod = pod_token
        .map(|t| format!("Whittle-Pod-Token: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len}\r\n{auth}{pod}Connection: close\r\n\r\n",
        url.path, url.addr
    )
}

/// The parts of a response the sensor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    /// `Retry-After` in seconds (an HTTP date is not honoured: backoff applies).
    pub retry_after: Option<Duration>,
}

/// Parses a response head (status line and headers; the body is never read).
pub fn parse_response(head: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status
        .strip_prefix("HTTP/")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {status:?}"))?;
    let retry_after = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Response { code, retry_after })
}

fn post_once(url: &Url, head: &str, body: &[u8], timeout: Duration) -> Result<Response, String> {
    let mut s =
        TcpStream::connect_timeout(&url.addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    // The head only, and not all of a server's megabytes of headers.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(format!("no response: {e}")),
            Err(_) => break,
        }
    }
    parse_response(&buf)
}

/// Why the intake refused a report for good, or None when the status is worth retrying.
fn refusal(code: u16) -> Option<&'static str> {
    match code {
        401 => Some(
            "the intake did not accept the sensor's credentials (WHITTLE_REPORT_TOKEN and the \
             pod token in WHITTLE_POD_TOKEN_FILE)",
        ),
        403 => Some("the operator does not recognise this pod as the workflow's"),
        409 => Some("the workflow is no longer collecting reports"),
        413 => Some("the report is larger than the intake accepts"),
        408 | 429 => None,
        400..=499 => Some("the intake refused it for good"),
        _ => None,
    }
}

/// POSTs `json` gzip-compressed with `token` as the Bearer token and no pod token: [`send`]
/// for a caller that has only a report's JSON (tests, tools).
pub fn post(
    url: &Url,
    token: Option<&str>,
    json: &[u8],
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let creds = Credentials {
        bearer: token.map(str::to_string),
        pod_token_file: None,
    };
    send(url, &creds, &gzip(json), deadline)
}

/// POSTs the gzip `body`, retrying with backoff until it is accepted (2xx), refused for good
/// (401, 403, 409, 413 and the other 4xx but 408 and 429), or `deadline` passes. 429 and 503
/// wait as long as `Retry-After` says (at most [`MAX_RETRY_AFTER`]). The pod token is read
/// again for each attempt. Each failure is a line on stderr.
pub fn send(
    url: &Url,
    creds: &Credentials,
    body: &[u8],
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let shown = format!("http://{}{}", url.addr, url.path);
    let bearer = creds.bearer.as_deref().filter(|t| {
        let ok = header_safe(t);
        if !ok {
            eprintln!(
                "whittle-sensor: WHITTLE_REPORT_TOKEN holds characters an HTTP header cannot \
                 carry; sending the report without it (the intake will refuse it)"
            );
        }
        ok
    });
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
        let pod_token = creds.pod_token_file.as_deref().and_then(|f| {
            read_pod_token(f)
                .map_err(|e| {
                    eprintln!(
                        "whittle-sensor: cannot read the pod token: {e}; sending the report \
                         without it (the intake will refuse it)"
                    )
                })
                .ok()
        });
        let head = request_head(url, bearer, pod_token.as_deref(), body.len());
        let mut wait = backoff;
        let detail = match post_once(url, &head, body, left.min(Duration::from_secs(5))) {
            Ok(r) if (200..300).contains(&r.code) => return Ok(()),
            Ok(r) => {
                if let Some(reason) = refusal(r.code) {
                    return Err(DeliveryError::Refused {
                        url: shown,
                        code: r.code,
                        reason,
                    });
                }
                if let (429 | 503, Some(after)) = (r.code, r.retry_after) {
                    wait = after.min(MAX_RETRY_AFTER);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if wait > left {
                        return Err(DeliveryError::Post {
                            url: shown,
                            detail: format!(
                                "HTTP {} with Retry-After {} s, after the grace period ends; \
                                 giving up",
                                r.code,
                                wait.as_secs()
                            ),
                        });
                    }
                }
                format!("HTTP {}", r.code)
            }
            Err(e) => e,
        };
        eprintln!(
            "whittle-sensor: report delivery to {shown} failed (attempt {attempt}): {detail}; retrying"
        );
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(wait.min(left));
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use crate::recorder::Recorder;
    use crate::report::{Access, Mode};

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
    fn frames_a_gzip_post_with_both_tokens() {
        let u = parse_url("http://127.0.0.1:1/r").unwrap();
        let h = request_head(&u, Some("tok"), Some("jwt.x.y"), 12);
        assert!(h.starts_with("POST /r HTTP/1.1\r\n"));
        assert!(
            h.contains("Content-Length: 12\r\n") && h.contains("Authorization: Bearer tok\r\n")
        );
        assert!(h.contains("Whittle-Pod-Token: jwt.x.y\r\n"), "{h}");
        assert!(h.ends_with("\r\n\r\n"));
        assert!(!request_head(&u, None, None, 1).contains("Token"));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(b"{\"a\":1}")[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}");
    }

    #[test]
    fn parses_status_and_retry_after() {
        let r = parse_response(b"HTTP/1.1 429 Too Many\r\nretry-after:  7\r\n\r\n").unwrap();
        assert_eq!(r.code, 429);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let r =
            parse_response(b"HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n")
                .unwrap();
        assert_eq!((r.code, r.retry_after), (503, None));
        assert!(parse_response(b"SSH-2.0-x\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn a_dead_endpoint_gives_up_at_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = parse_url(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        drop(l);
        let start = Instant::now();
        let e = send(
            &url,
            &Credentials::default(),
            b"{}",
            start + Duration::from_millis(700),
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains("grace period"), "{e}");
    }

    /// An intake that answers each connection with the next of `replies` and returns the
    /// request heads it saw; `between` runs after each reply.
    fn intake(
        replies: Vec<&'static str>,
        between: impl Fn(usize) + Send + 'static,
    ) -> (Url, JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = parse_url(&format!("http://{}/r", l.local_addr().unwrap())).unwrap();
        let t = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for (i, reply) in replies.into_iter().enumerate() {
                let Ok((mut s, _)) = l.accept() else { break };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                heads.push(head);
                let _ = s.write_all(reply.as_bytes());
                drop(s);
                between(i);
            }
            heads
        });
        (url, t)
    }

    fn creds(token_file: &Path) -> Credentials {
        Credentials {
            bearer: Some("report-token".into()),
            pod_token_file: Some(token_file.to_path_buf()),
        }
    }

    #[test]
    fn the_pod_token_is_read_again_for_each_attempt_and_retry_after_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "pod-token-1\n").unwrap();
        let rotated = file.clone();
        let (url, server) = intake(
            vec![
                "HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            ],
            // kubelet rotates the token while the sensor waits.
            move |_| std::fs::write(&rotated, "pod-token-2").unwrap(),
        );
        let start = Instant::now();
        send(&url, &creds(&file), b"x", start + Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1), "Retry-After: 1");
        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 2);
        for h in &heads {
            assert!(h.contains("Authorization: Bearer report-token\r\n"), "{h}");
        }
        assert!(
            heads[0].contains("Whittle-Pod-Token: pod-token-1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[1].contains("Whittle-Pod-Token: pod-token-2\r\n"),
            "{}",
            heads[1]
        );
    }

    #[test]
    fn a_429_waits_for_retry_after_unless_it_ends_after_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        let (url, server) = intake(
            vec![
                "HTTP/1.1 429 Slow down\r\nRetry-After: 1\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\n",
            ],
            |_| {},
        );
        let start = Instant::now();
        send(&url, &creds(&file), b"x", start + Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(server.join().unwrap().len(), 2);

        let (url, _server) = intake(
            vec!["HTTP/1.1 429 Slow down\r\nRetry-After: 3600\r\n\r\n"],
            |_| {},
        );
        let start = Instant::now();
        let e = send(&url, &creds(&file), b"x", start + Duration::from_secs(5)).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(e.to_string().contains("Retry-After 30 s"), "{e}");
    }

    #[test]
    fn refusals_are_final_and_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        for (status, why) in [
            ("401 Unauthorized", "credentials"),
            (
                "403 Forbidden",
                "the operator does not recognise this pod as the workflow's",
            ),
            (
                "409 Conflict",
                "the workflow is no longer collecting reports",
            ),
            ("413 Payload Too Large", "larger than the intake accepts"),
            ("400 Bad Request", "for good"),
        ] {
            let first: &'static str = Box::leak(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").into_boxed_str(),
            );
            // Were the refusal retried, the second attempt would be accepted.
            let (url, server) = intake(vec![first, "HTTP/1.1 202 Accepted\r\n\r\n"], |_| {});
            let e = send(
                &url,
                &creds(&file),
                b"x",
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap_err();
            assert!(e.to_string().contains(why), "{status}: {e}");
            assert!(e.to_string().contains(&status[..3]), "{e}");
            // Let the server go.
            let _ = TcpStream::connect(url.addr);
            let heads = server.join().unwrap();
            assert!(heads[0].starts_with("POST"), "{status}");
            assert_eq!(heads[1], "", "{status}: tried once");
        }
    }

    #[test]
    fn an_unusable_pod_token_is_left_out_and_the_report_still_sent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let injected = dir.path().join("injected");
        std::fs::write(&injected, "a\r\nX-Evil: 1").unwrap();
        let huge = dir.path().join("huge");
        std::fs::write(&huge, "a".repeat(MAX_POD_TOKEN as usize + 1)).unwrap();
        let fits = dir.path().join("fits");
        std::fs::write(&fits, "b".repeat(MAX_POD_TOKEN as usize)).unwrap();
        assert!(read_pod_token(&missing).is_err());
        assert!(read_pod_token(&injected).is_err());
        assert!(read_pod_token(&huge).unwrap_err().contains("larger"));
        assert_eq!(read_pod_token(&fits).unwrap().len(), MAX_POD_TOKEN as usize);
        for file in [missing, injected, huge] {
            let (url, server) = intake(vec!["HTTP/1.1 202 Accepted\r\n\r\n"], |_| {});
            send(
                &url,
                &creds(&file),
                b"x",
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap();
            let heads = server.join().unwrap();
            assert!(!heads[0].contains("Whittle-Pod-Token"), "{}", heads[0]);
            assert!(!heads[0].contains("X-Evil"), "{}", heads[0]);
            assert!(heads[0].contains("Authorization: Bearer report-token"));
        }
    }

    /// A name gzip cannot shrink much.
    fn noise(i: u64, len: usize) -> String {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                        [(x % 64) as usize],
                )
            })
            .collect()
    }

    #[test]
    fn encoding_fits_the_gzip_limit_leaving_out_absent_paths_first() {
        let r = Recorder::new();
        for i in 0..2_000 {
            r.access(
                &format!("/app/lib/{i}-{}", noise(i, 60)),
                Access::Open,
                true,
            );
        }
        for i in 0..200_000 {
            r.access(&format!("/static/{}", noise(i, 200)), Access::Stat, false);
        }
        let mut report = r.report(Mode::Seccomp, &["app".into()], 0);
        let raw = serde_json::to_vec(&report).unwrap();
        assert!(
            gzip(&raw).len() > MAX_GZIP_BYTES,
            "the test must need shedding"
        );
        let absent_before = report.paths.values().filter(|p| !p.exists).count() as u64;
        let encoded = encode(&mut report).unwrap();
        assert!(
            encoded.gzip.len() <= MAX_GZIP_BYTES,
            "{}",
            encoded.gzip.len()
        );
        assert!(encoded.json.len() <= MAX_JSON_BYTES);
        assert_eq!(
            serde_json::from_slice::<Report>(&encoded.json).unwrap(),
            report
        );
        assert_eq!(
            report.existing_paths().count(),
            2_000,
            "every found path kept"
        );
        let absent_after = report.paths.values().filter(|p| !p.exists).count() as u64;
        assert!(absent_after < absent_before);
        assert_eq!(report.loss.dropped_paths, 0);
        assert_eq!(
            report.loss.dropped_absent_paths + absent_after,
            200_000,
            "each absent path is kept or counted"
        );
    }
}
