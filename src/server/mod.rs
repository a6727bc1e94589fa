//! The operator's HTTP server, on a port of its own: sensors POST their reports to
//! `/v1/reports/{namespace}/{workflow}` ([`intake`]); Prometheus scrapes `/metrics`; the kubelet
//! probes `/healthz` (the process serves) and `/readyz` (the API server answers, [`health`]);
//! people read `/report/...`, the HTML pages of workflows and policies ([`pages`]).
//!
//! The server keeps nothing in memory that matters: report tokens are derived from the
//! operator's key ([`crate::reports::key`]) and reports go straight to ConfigMaps, so a restart
//! loses nothing.

pub mod health;
pub mod intake;
pub mod limit;
pub mod pages;
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
    /// Report pages reviewed at once ([`pages::PAGES_IN_FLIGHT`]).
    pub page_slots: Arc<tokio::sync::Semaphore>,
    /// A report page is shown to a loopback peer (`kubectl port-forward`) without a token;
    /// false when the pod shares the node's network namespace.
    pub trust_loopback: bool,
}

impl ServerState {
    pub fn new(client: Client, metrics: Arc<Metrics>, key: ReportKey) -> ServerState {
        ServerState {
            client,
            metrics,
            health: Arc::new(ApiHealth::default()),
            key,
            limits: Arc::new(Limits::default()),
            page_slots: Arc::new(tokio::sync::Semaphore::new(pages::PAGES_IN_FLIGHT)),
            trust_loopback: true,
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
        .route("/report/workflows/{namespace}/{name}", get(pages::workflow))
        .route("/report/policies/{namespace}/{name}", get(pages::policy))
        .route("/report/clusterpolicies/{name}", get(pages::cluster_policy))
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
    // The peer's address: a report page trusts a loopback peer (`kubectl port-forward`).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
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
