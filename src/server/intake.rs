//! `POST /v1/reports/{namespace}/{workflow}`: a sensor's report, checked and stored.
//!
//! Cheap checks come first, so a stranger's request costs one hash and the API server nothing:
//! the declared size and encoding, then the workflow's report token (an HMAC under the
//! operator's key, [`crate::reports::key`]) — one uniform 401 for every failure, so the answer
//! says nothing about which workflows exist. Then a slot ([`super::limit`], 429 past it), the
//! body read up to [`MAX_BODY`], the workflow (its uid must be the token's, its phase one that
//! still takes reports, else 409), and the pod: its projected ServiceAccount token, reviewed by
//! the API server, names the pod, which must be one of the workflow's instrumented pods (403
//! otherwise, [`super::pod`]). Only then is the body inflated (up to [`MAX_REPORT_JSON`]) and
//! parsed, off the async runtime, and stored as that pod's report. The report's own claims
//! about which pod sent it are never trusted.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use whittle_sensor::report::Report;

use super::ServerState;
use super::limit::RETRY_AFTER;
use super::pod::{self, MAX_POD_TOKEN, Refusal};
use crate::api::names::POD_TOKEN_HEADER;
use crate::api::{HardeningWorkflow, Phase};
use crate::metrics::RejectReason;
use crate::reports::{
    self, GunzipError, MAX_REPORT_JSON, Outcome, ReadReportError, ReportStoreError, Reporter, Saved,
};

/// Largest request body, compressed or not. The sensor sends gzip; a maximal report
/// ([`MAX_REPORT_JSON`]) of paths compresses far below this.
pub const MAX_BODY: usize = whittle_sensor::report::MAX_GZIP_BYTES;
/// A body that takes longer than this to arrive is refused with 408 (the sensor retries).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The one answer to a request without a valid report token, whatever was wrong with it.
const UNAUTHORIZED: &str = "missing or invalid report token (Authorization: Bearer)";

/// A refused report: the status, the metric label, and a line for the sensor's log.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    reason: RejectReason,
    message: String,
}

impl Rejection {
    fn new(status: StatusCode, reason: RejectReason, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason,
            message: message.into(),
        }
    }
    fn unauthorized(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            RejectReason::Unauthorized,
            message,
        )
    }
    fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::FORBIDDEN, RejectReason::Forbidden, message)
    }
    fn malformed(message: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, RejectReason::Malformed, message)
    }
    fn too_large(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::TooLarge,
            message,
        )
    }
    fn too_many(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            RejectReason::RateLimited,
            message,
        )
    }
    fn conflict(message: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::CONFLICT, RejectReason::Conflict, message)
    }
    fn api(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::ApiUnavailable,
            message,
        )
    }
    fn internal(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectReason::Internal,
            message,
        )
    }
}

impl From<Refusal> for Rejection {
    fn from(r: Refusal) -> Rejection {
        match r {
            Refusal::Unauthenticated(m) => Rejection::unauthorized(m),
            Refusal::Forbidden(m) => Rejection::forbidden(m),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

pub(super) async fn receive(
    State(state): State<ServerState>,
    Path((namespace, workflow)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match intake(&state, &namespace, &workflow, &headers, body).await {
        Ok(saved) => {
            state.metrics.reports_accepted.inc();
            tracing::info!(
                namespace,
                workflow,
                pod = saved.pod,
                config_map = saved.config_map,
                outcome = ?saved.outcome,
                "report stored"
            );
            let (status, verb) = match saved.outcome {
                Outcome::Created => (StatusCode::CREATED, "stored"),
                Outcome::Merged => (StatusCode::OK, "merged"),
                Outcome::Unchanged => (StatusCode::OK, "already had"),
            };
            let text = format!(
                "{verb} the report of pod {} as ConfigMap {}\n",
                saved.pod, saved.config_map
            );
            (status, text).into_response()
        }
        Err(r) => {
            state.metrics.reject(r.reason);
            tracing::warn!(
                namespace,
                workflow,
                status = r.status.as_u16(),
                reason = r.reason.as_str(),
                "report refused: {}",
                r.message
            );
            let mut response = (r.status, format!("{}\n", r.message)).into_response();
            if matches!(
                r.status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER.as_secs()),
                );
            }
            response
        }
    }
}

async fn intake(
    state: &ServerState,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Saved, Rejection> {
    if let Some(declared) = content_length(headers)
        && declared > MAX_BODY as u64
    {
        return Err(Rejection::too_large(format!(
            "the body is {declared} bytes; the limit is {MAX_BODY}"
        )));
    }
    let encoding = encoding(headers)?;
    let token_uid = bearer_token(headers)
        .and_then(|t| state.key.verify(namespace, name, t))
        .ok_or_else(|| Rejection::unauthorized(UNAUTHORIZED))?;
    let _slot = state.limits.admit().ok_or_else(|| {
        Rejection::too_many("the operator is busy with other reports; try again shortly")
    })?;
    let bytes = read_body(body).await?;
    let workflow = find_workflow(state, namespace, name, &token_uid).await?;
    let (reporter, pod) = reporting_pod(state, &workflow, namespace, headers).await?;
    let _turn = state.limits.large_turn(bytes.len()).await;
    let report = tokio::task::spawn_blocking(move || decode(&bytes, encoding))
        .await
        .map_err(|e| Rejection::internal(format!("decoding the report failed: {e}")))??;
    check_identity(&report, namespace, &reporter)?;
    if let Some(container) = report.identity.container_name.as_deref() {
        pod::check_container(&pod, container, &workflow)?;
    }
    let saved = reports::save(&state.client, &workflow, &reporter, report)
        .await
        .map_err(|e| match e {
            ReportStoreError::TooLarge { .. } => Rejection::too_large(e.to_string()),
            ReportStoreError::TooMany { .. } => Rejection::too_many(e.to_string()),
            ReportStoreError::NotOurs(_) => Rejection::conflict(e.to_string()),
            ReportStoreError::Api { .. } | ReportStoreError::Busy(_) => {
                Rejection::api(e.to_string())
            }
            _ => Rejection::internal(e.to_string()),
        })?;
    state.health.record_ok();
    Ok(saved)
}

/// Phases in which a report still counts: after Collecting, harden has folded the reports it
/// signs as materials, and a later one would change nothing but the record.
fn takes_reports(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(Phase::Instrumenting | Phase::Observing | Phase::Collecting)
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, Rejection> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value
        .to_str()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectReason::UnsupportedEncoding,
            format!("Content-Encoding {other:?} is not supported; send gzip or plain JSON"),
        )),
    }
}

async fn find_workflow(
    state: &ServerState,
    namespace: &str,
    name: &str,
    token_uid: &str,
) -> Result<HardeningWorkflow, Rejection> {
    let gone = |why: &str| {
        Rejection::new(
            StatusCode::NOT_FOUND,
            RejectReason::UnknownWorkflow,
            format!("HardeningWorkflow {namespace}/{name} {why}"),
        )
    };
    let api: Api<HardeningWorkflow> = Api::namespaced(state.client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| {
        Rejection::api(format!(
            "cannot read HardeningWorkflow {namespace}/{name}: {e}"
        ))
    })?;
    state.health.record_ok();
    let workflow = found.ok_or_else(|| gone("no longer exists"))?;
    // The token names the workflow's uid: a namesake created after the pod's workflow was
    // deleted is another workflow, and its reports are not this pod's to give.
    if workflow.metadata.uid.as_deref() != Some(token_uid) {
        return Err(gone(
            "was deleted and created again; this pod reported to the earlier one",
        ));
    }
    // A workflow being deleted has cleaned up its reports (or is about to): one stored now
    // would only wait for garbage collection.
    if workflow.metadata.deletion_timestamp.is_some() {
        return Err(gone("is being deleted"));
    }
    let phase = workflow.status.as_ref().and_then(|s| s.phase);
    if !takes_reports(phase) {
        let phase = phase.unwrap_or_default();
        return Err(Rejection::conflict(format!(
            "HardeningWorkflow {namespace}/{name} is {}: it takes reports only while instrumenting, observing or collecting",
            phase.as_str()
        )));
    }
    Ok(workflow)
}

/// The pod that sent the request, as its projected ServiceAccount token and the API server
/// say, when it is one of `workflow`'s instrumented pods.
async fn reporting_pod(
    state: &ServerState,
    workflow: &HardeningWorkflow,
    namespace: &str,
    headers: &HeaderMap,
) -> Result<(Reporter, Pod), Rejection> {
    let token = headers
        .get(POD_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_POD_TOKEN)
        .ok_or_else(|| {
            Rejection::unauthorized(format!(
                "missing {POD_TOKEN_HEADER} header: the sensor sends its pod's projected ServiceAccount token"
            ))
        })?;
    let reviewed = pod::review(&state.client, token)
        .await
        .map_err(|e| Rejection::api(format!("cannot review the pod token: {e}")))?;
    let bound = pod::bound_pod(&reviewed, namespace)?;
    let found = pod::get(&state.client, namespace, &bound.name)
        .await
        .map_err(|e| Rejection::api(format!("cannot read pod {namespace}/{}: {e}", bound.name)))?;
    pod::check(found.as_ref(), &bound, workflow)?;
    let found = found.ok_or_else(|| Rejection::internal("the checked pod is gone"))?;
    Ok((bound, found))
}

/// What the report says of where it comes from must agree with what the API server said.
fn check_identity(report: &Report, namespace: &str, pod: &Reporter) -> Result<(), Rejection> {
    let id = &report.identity;
    if let Some(from) = id.pod_namespace.as_deref()
        && from != namespace
    {
        return Err(Rejection::forbidden(format!(
            "the report says it comes from namespace {from}, its pod token says {namespace}"
        )));
    }
    if let Some(from) = id.pod_name.as_deref()
        && from != pod.name
    {
        return Err(Rejection::forbidden(format!(
            "the report says it comes from pod {from}, its pod token says {}",
            pod.name
        )));
    }
    Ok(())
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads the body, refusing it as soon as it passes [`MAX_BODY`] (whatever Content-Length said).
async fn read_body(body: Body) -> Result<Vec<u8>, Rejection> {
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Rejection::malformed(format!("reading the body: {e}")))?;
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(Rejection::too_large(format!(
                    "the body is larger than the limit of {MAX_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                RejectReason::Timeout,
                format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
            )
        })?
}

/// Parses a report (inflating it as it goes, when gzip), checking it against the sensor's
/// schema.
fn decode(bytes: &[u8], encoding: Encoding) -> Result<Report, Rejection> {
    match encoding {
        // A plain body is already bounded by MAX_BODY, below MAX_REPORT_JSON.
        Encoding::Identity => {
            Report::from_json_slice(bytes).map_err(|e| Rejection::malformed(e.to_string()))
        }
        Encoding::Gzip => reports::read_gzip_report(bytes, MAX_REPORT_JSON).map_err(|e| match e {
            ReadReportError::Gzip(e @ GunzipError::TooLarge { .. }) => {
                Rejection::too_large(format!("the gzip body {e}"))
            }
            ReadReportError::Gzip(e) => Rejection::malformed(format!("the gzip body is {e}")),
            ReadReportError::Report(e) => Rejection::malformed(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let h = |v: &str| headers(&[(header::AUTHORIZATION, v)]);
        assert_eq!(bearer_token(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&h("Basic abc")), None);
        assert_eq!(bearer_token(&h("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn encodings() {
        let h = |v: &str| headers(&[(header::CONTENT_ENCODING, v)]);
        assert_eq!(encoding(&HeaderMap::new()).unwrap(), Encoding::Identity);
        assert_eq!(encoding(&h("GZIP")).unwrap(), Encoding::Gzip);
        let e = encoding(&h("br")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            content_length(&headers(&[(header::CONTENT_LENGTH, "12")])),
            Some(12)
        );
    }

    fn report_json(pod: Option<&str>) -> Vec<u8> {
        let mut value = serde_json::json!({
            "schemaVersion": whittle_sensor::report::SCHEMA_VERSION,
            "sensorVersion": "0.1.0",
            "mode": "ptrace",
            "startedAtMs": 1,
            "stoppedAtMs": 2,
            "argv": ["/bin/app"],
            "exitStatus": 0,
            "paths": {},
        });
        if let Some(pod) = pod {
            value["identity"] = serde_json::json!({"podName": pod});
        }
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn decodes_plain_and_gzip_and_says_what_is_wrong() {
        let json = report_json(Some("web-1"));
        let plain = decode(&json, Encoding::Identity).unwrap();
        let zipped = decode(&whittle_sensor::deliver::gzip(&json), Encoding::Gzip).unwrap();
        assert_eq!(plain, zipped);
        assert_eq!(plain.identity.pod_name.as_deref(), Some("web-1"));

        let e = decode(b"{\"schemaVersion\":", Encoding::Identity).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not a whittle report"), "{}", e.message);

        let e = decode(&json, Encoding::Gzip).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("gzip"), "{}", e.message);

        // Which pod sent a report is the pod token's to say, not the report's.
        assert!(decode(&report_json(None), Encoding::Identity).is_ok());

        let bomb = whittle_sensor::deliver::gzip(&vec![b' '; MAX_REPORT_JSON + 1]);
        let e = decode(&bomb, Encoding::Gzip).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.message);
    }

    #[test]
    fn only_observing_phases_take_reports() {
        for phase in Phase::ALL {
            let takes = matches!(
                phase,
                Phase::Instrumenting | Phase::Observing | Phase::Collecting
            );
            assert_eq!(takes_reports(Some(phase)), takes, "{phase:?}");
        }
        assert!(!takes_reports(None), "a workflow not yet started");
    }

    #[test]
    fn a_report_cannot_claim_another_pod() {
        let pod = Reporter {
            name: "web-1".into(),
            uid: "u1".into(),
        };
        let report = |json: &[u8]| decode(json, Encoding::Identity).unwrap();
        assert!(check_identity(&report(&report_json(Some("web-1"))), "shop", &pod).is_ok());
        assert!(check_identity(&report(&report_json(None)), "shop", &pod).is_ok());
        let e = check_identity(&report(&report_json(Some("web-2"))), "shop", &pod).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);
        assert!(e.message.contains("web-2"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_streamed_body_stops_at_the_limit() {
        let chunks = |n: usize| {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            Body::from_stream(futures::stream::iter(
                (0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            ))
        };
        assert_eq!(read_body(chunks(4)).await.unwrap().len(), MAX_BODY);
        let e = read_body(chunks(5)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.message);
    }
}
