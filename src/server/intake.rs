//! `POST /v1/reports/{namespace}/{workflow}`: a sensor's report, checked and stored.
//!
//! Cheap checks come first, so an unauthenticated or oversized request costs neither an inflate
//! nor a parse: the declared size and encoding, then the workflow and its token (two reads from
//! the API server), then the body, read up to [`MAX_BODY`] and inflated up to
//! [`MAX_REPORT_JSON`], then the report's schema. Nothing is stored unless every check passed.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use subtle::ConstantTimeEq;
use whittle_sensor::report::Report;

use super::ServerState;
use crate::api::HardeningWorkflow;
use crate::api::names::{self, TOKEN_KEY, token_secret_name};
use crate::metrics::RejectReason;
use crate::reports::{self, GunzipError, MAX_REPORT_JSON, ReportStoreError, Saved};

/// Largest request body, compressed or not.
pub const MAX_BODY: usize = 16 << 20;
/// A body that takes longer than this to arrive is refused with 408 (the sensor retries).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

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
    fn api(message: impl Into<String>) -> Rejection {
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::ApiUnavailable,
            message,
        )
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
                "report stored"
            );
            let status = if saved.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let verb = if saved.created { "stored" } else { "replaced" };
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
            (r.status, format!("{}\n", r.message)).into_response()
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
    let workflow = find_workflow(state, namespace, name).await?;
    authenticate(state, &workflow, namespace, name, headers).await?;
    let bytes = read_body(body).await?;
    let report = tokio::task::spawn_blocking(move || decode(&bytes, encoding))
        .await
        .map_err(|e| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectReason::Internal,
                format!("decoding the report failed: {e}"),
            )
        })??;
    if let Some(from) = report.identity.pod_namespace.as_deref()
        && from != namespace
    {
        return Err(Rejection::malformed(format!(
            "the report comes from a pod in namespace {from}, not {namespace}"
        )));
    }
    let saved = reports::save(&state.client, &workflow, &report)
        .await
        .map_err(|e| match e {
            ReportStoreError::NoPodName | ReportStoreError::BadPodName(_) => {
                Rejection::malformed(e.to_string())
            }
            ReportStoreError::TooLarge { .. } => Rejection::too_large(e.to_string()),
            ReportStoreError::Api { .. } => Rejection::api(e.to_string()),
            _ => Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                RejectReason::Internal,
                e.to_string(),
            ),
        })?;
    state.health.record_ok();
    Ok(saved)
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
) -> Result<HardeningWorkflow, Rejection> {
    let unknown = || {
        Rejection::new(
            StatusCode::NOT_FOUND,
            RejectReason::UnknownWorkflow,
            format!("there is no HardeningWorkflow {name} in namespace {namespace}"),
        )
    };
    // Names that cannot exist are not worth a question to the API server.
    if !names::is_dns_subdomain(namespace) || !names::is_dns_subdomain(name) {
        return Err(unknown());
    }
    let api: Api<HardeningWorkflow> = Api::namespaced(state.client.clone(), namespace);
    let found = api.get_opt(name).await.map_err(|e| {
        Rejection::api(format!(
            "cannot read HardeningWorkflow {namespace}/{name}: {e}"
        ))
    })?;
    state.health.record_ok();
    let workflow = found.ok_or_else(unknown)?;
    // A workflow being deleted has cleaned up its reports (or is about to): one stored now
    // would only wait for garbage collection.
    if workflow.metadata.deletion_timestamp.is_some() {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            RejectReason::UnknownWorkflow,
            format!("HardeningWorkflow {namespace}/{name} is being deleted"),
        ));
    }
    Ok(workflow)
}

/// The request's bearer token must equal the one in the workflow's token Secret, and that
/// Secret must be the workflow's own (a Secret left over from a deleted namesake is not).
async fn authenticate(
    state: &ServerState,
    workflow: &HardeningWorkflow,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let presented = bearer_token(headers).ok_or_else(|| {
        Rejection::unauthorized("missing `Authorization: Bearer <token>` (WHITTLE_REPORT_TOKEN)")
    })?;
    let secret_name = token_secret_name(name);
    let api: Api<Secret> = Api::namespaced(state.client.clone(), namespace);
    let secret = api
        .get_opt(&secret_name)
        .await
        .map_err(|e| Rejection::api(format!("cannot read Secret {namespace}/{secret_name}: {e}")))?
        .filter(|s| workflow.owns(s.metadata.owner_references.as_deref()))
        .ok_or_else(|| {
            Rejection::unauthorized(format!(
                "workflow {namespace}/{name} has no report token yet (Secret {secret_name})"
            ))
        })?;
    let expected = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .filter(|t| !t.0.is_empty())
        .ok_or_else(|| {
            Rejection::unauthorized(format!(
                "Secret {namespace}/{secret_name} has no {TOKEN_KEY:?} key"
            ))
        })?;
    if bool::from(expected.0.ct_eq(presented.as_bytes())) {
        Ok(())
    } else {
        Err(Rejection::unauthorized(format!(
            "wrong report token for workflow {namespace}/{name}"
        )))
    }
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

/// Inflates (when gzip) and parses a report, checking it against the sensor's schema.
fn decode(bytes: &[u8], encoding: Encoding) -> Result<Report, Rejection> {
    let inflated;
    // A plain body is already bounded by MAX_BODY, below MAX_REPORT_JSON.
    let json = match encoding {
        Encoding::Identity => bytes,
        Encoding::Gzip => {
            inflated = reports::gunzip_limited(bytes, MAX_REPORT_JSON).map_err(|e| match e {
                GunzipError::TooLarge { .. } => Rejection::too_large(format!("the gzip body {e}")),
                GunzipError::Corrupt(_) => Rejection::malformed(format!("the gzip body is {e}")),
            })?;
            &inflated[..]
        }
    };
    let report = Report::from_json_slice(json).map_err(|e| Rejection::malformed(e.to_string()))?;
    if report.identity.pod_name.is_none() {
        return Err(Rejection::malformed(
            ReportStoreError::NoPodName.to_string(),
        ));
    }
    Ok(report)
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
        let zipped = decode(&reports::gzip(&json), Encoding::Gzip).unwrap();
        assert_eq!(plain, zipped);
        assert_eq!(plain.identity.pod_name.as_deref(), Some("web-1"));

        let e = decode(b"{\"schemaVersion\":", Encoding::Identity).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not a whittle report"), "{}", e.message);

        let e = decode(&json, Encoding::Gzip).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("gzip"), "{}", e.message);

        let e = decode(&report_json(None), Encoding::Identity).unwrap_err();
        assert!(e.message.contains("POD_NAME"), "{}", e.message);

        let bomb = reports::gzip(&vec![b' '; MAX_REPORT_JSON + 1]);
        let e = decode(&bomb, Encoding::Gzip).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.message);
    }

    #[tokio::test]
    async fn a_streamed_body_stops_at_the_limit() {
        let chunks = |n: usize| {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            Body::from_stream(futures::stream::iter(
                (0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            ))
        };
        assert_eq!(read_body(chunks(16)).await.unwrap().len(), MAX_BODY);
        let e = read_body(chunks(17)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.message);
    }
}
