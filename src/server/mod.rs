//! The operator's HTTP server, on a port of its own: sensors POST their reports to
//! `/v1/reports/{namespace}/{workflow}` ([`intake`]); Prometheus scrapes `/metrics`; the kubelet
//! probes `/healthz` (the process serves) and `/readyz` (the API server answers, [`health`]).
//!
//! The server keeps nothing in memory that matters: report tokens are derived from the
//! operator's key ([`crate::reports::key`]) and reports go straight to ConfigMaps, so a restart
//! loses nothing.

pub mod health;
pub mod intake;
pub mod limit;
pub mod pod;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Client;

use crate::metrics::{self, Metrics};
use crate::reports::ReportKey;
use health::ApiHealth;
use limit::Limits;

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// When the API server last answered; the controller may record its own calls here too.
    pub health: Arc<ApiHealth>,
    /// Checks the report tokens the controller hands out.
    pub key: ReportKey,
    pub limits: Arc<Limits>,
}

impl ServerState {
    pub fn new(client: Client, metrics: Arc<Metrics>, key: ReportKey) -> ServerState {
        ServerState {
            client,
            metrics,
            health: Arc::new(ApiHealth::default()),
            key,
            limits: Arc::new(Limits::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the HTTP server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// Every route, for embedding in another server or testing.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/v1/reports/{namespace}/{workflow}", post(intake::receive))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_text(State(state): State<ServerState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
