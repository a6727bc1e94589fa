//! Retrying registry requests: which failures are transient, and how many tries with what
//! backoff, for the registry client and the blob stream alike.

use std::future::Future;
use std::time::Duration;

use oci_client::errors::OciDistributionError;

/// Attempts for one registry request before a transient failure is reported.
pub(super) const ATTEMPTS: u32 = 5;
/// First backoff; it doubles on each retry (0.25 s, 0.5 s, 1 s, 2 s).
pub(super) const BACKOFF: Duration = Duration::from_millis(250);

/// The error and its causes on one line (reqwest hides the useful part in `source()`).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// True for failures worth another try: 5xx, 429, dropped or refused connections, timeouts.
pub fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RequestError(re) => match re.status() {
            Some(s) => s.is_server_error() || s.as_u16() == 429,
            None => re.is_connect() || re.is_timeout() || re.is_request() || re.is_body(),
        },
        OciDistributionError::IoError(io) => is_transient_io(io),
        _ => false,
    }
}

pub(super) fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | UnexpectedEof | Interrupted
    ) {
        return true;
    }
    // reqwest body errors arrive wrapped in io::Error::other.
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
        .is_some_and(|re| re.is_body() || re.is_request() || re.is_timeout() || re.is_decode())
}

/// Runs `op` until it succeeds, fails for good, or [`ATTEMPTS`] transient failures happened.
pub async fn retry<T, F, Fut>(mut op: F) -> std::result::Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, OciDistributionError>>,
{
    let mut delay = BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                tracing::warn!(attempt, error = %chain(&e), "transient registry error; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
