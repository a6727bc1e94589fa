//! Liveness and readiness. Live: the process answers HTTP. Ready: the API server answered a
//! request of ours in the last few seconds, or answers one now; without it no report can be
//! checked or stored, so a Service should not send sensors here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;

use super::ServerState;

/// An answer this recent makes the server ready without asking again.
const FRESH: Duration = Duration::from_secs(10);
/// How long `/readyz` waits for the API server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct ApiHealth {
    last_ok: Mutex<Option<Instant>>,
}

impl ApiHealth {
    /// Records that the API server just answered a request.
    pub fn record_ok(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// True when the API server answered within `window`.
    pub fn answered_within(&self, window: Duration) -> bool {
        self.last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= window)
    }
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<ServerState>) -> (StatusCode, String) {
    if state.health.answered_within(FRESH) {
        return (StatusCode::OK, "ok\n".into());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, state.client.apiserver_version()).await {
        Ok(Ok(_)) => {
            state.health.record_ok();
            (StatusCode::OK, "ok\n".into())
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the API server did not answer: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the API server did not answer within {}s\n",
                PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_after_an_answer() {
        let h = ApiHealth::default();
        assert!(!h.answered_within(FRESH));
        h.record_ok();
        assert!(h.answered_within(FRESH));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!h.answered_within(Duration::from_millis(10)));
    }
}
