//! The report server against a real API server: sensors' reports arrive over real HTTP (the
//! valid one through the sensor's own delivery code), are checked, and land in ConfigMaps
//! owned by their workflow; every bad request gets its status and reason and stores nothing;
//! /metrics counts both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whittle::api::HardeningWorkflow;
use whittle::api::names::{self, POD_ANNOTATION, POD_LABEL, REPORT_KEY, WORKFLOW_LABEL};
use whittle::metrics::Metrics;
use whittle::reports;
use whittle::server::{self, ServerState};
use whittle_sensor::report::{
    Access, Executable, Identity, Loss, Mode, PathRecord, Report, SCHEMA_VERSION,
};
use whittle_testbed::cluster::control_plane::ControlPlane;

const TOKEN: &str = "4f1c0ffee-report-token";

/// A report as the sensor makes it, from the sensor's own types.
fn sensor_report(namespace: &str, pod: &str, paths: &[&str]) -> Report {
    let paths = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let record = PathRecord {
                access: vec![Access::Open, Access::Read],
                exists: true,
                first_seen_ms: i as u64,
                count: 1,
            };
            (p.to_string(), record)
        })
        .collect();
    Report {
        schema_version: SCHEMA_VERSION,
        sensor_version: whittle::VERSION.into(),
        mode: Mode::Ptrace,
        identity: Identity {
            pod_name: Some(pod.into()),
            pod_namespace: Some(namespace.into()),
            container_name: Some("nginx".into()),
            image: Some("127.0.0.1:5000/shop/web:1.2-whittle-instrumented".into()),
        },
        started_at_ms: 1_700_000_000_000,
        stopped_at_ms: 1_700_000_060_000,
        argv: vec!["/usr/sbin/nginx".into(), "-g".into(), "daemon off;".into()],
        exit_status: 0,
        paths,
        executables: BTreeMap::from([(
            "/usr/sbin/nginx".to_string(),
            Executable {
                argv0: "/usr/sbin/nginx".into(),
                count: 1,
            },
        )]),
        created_files: vec!["/run/nginx.pid".into()],
        loss: Loss::default(),
    }
}

struct Reply {
    status: u16,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection, read to the end. Headers are sent as given
/// (a Content-Length is added unless one is there), so a test can declare a size it never sends.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("a response within 30s")
        .expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Reply { status, body }
}

async fn post_report(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    gzip: bool,
    body: &[u8],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if gzip {
        headers.push(("Content-Encoding", "gzip"));
    }
    request(addr, "POST", path, &headers, body).await
}

fn assert_refused(reply: &Reply, status: u16, reason: &str, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert!(
        reply.body.contains(reason),
        "{case}: {reason:?} not in {:?}",
        reply.body
    );
}

async fn report_config_maps(client: &Client, ns: &str) -> Vec<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=whittle"))
        .await
        .expect("list ConfigMaps")
        .items
}

/// The workflow and its token Secret, as the controller makes them.
async fn workflow_with_token(client: &Client, ns: &str, name: &str) -> HardeningWorkflow {
    let workflows: Api<HardeningWorkflow> = Api::namespaced(client.clone(), ns);
    let spec = serde_json::from_value(json!({"target": {"name": "web"}})).expect("spec");
    let workflow = workflows
        .create(&PostParams::default(), &HardeningWorkflow::new(name, spec))
        .await
        .expect("create workflow");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names::token_secret_name(name)),
            labels: Some(names::workflow_labels(name)),
            owner_references: Some(vec![workflow.owner_reference().expect("stored")]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            names::TOKEN_KEY.to_string(),
            ByteString(TOKEN.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create token Secret");
    workflow
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_checked_and_stored() {
    let plane = ControlPlane::start().await.expect("control plane");
    plane
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("install CRD");
    let client = plane.client();
    let ns = plane.namespace("intake").await.expect("namespace");
    let workflow = workflow_with_token(&client, &ns, "web").await;
    // A workflow whose Secret is somebody else's: its token must not count.
    let orphan = Api::<HardeningWorkflow>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &HardeningWorkflow::new(
                "orphan",
                serde_json::from_value(json!({"target": {"name": "web"}})).expect("spec"),
            ),
        )
        .await
        .expect("create workflow");
    let mut stray = Secret {
        metadata: ObjectMeta {
            name: Some(names::token_secret_name(&orphan.name_any())),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    stray.data = Some(BTreeMap::from([(
        names::TOKEN_KEY.to_string(),
        ByteString(TOKEN.as_bytes().to_vec()),
    )]));
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &stray)
        .await
        .expect("create stray Secret");

    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        ServerState::new(client.clone(), metrics.clone()),
        async {
            let _ = stopped.await;
        },
    ));

    let pod = "web-5d8f7c9b6-x2x9z";
    let path = names::report_path(&ns, "web");
    let report = sensor_report(&ns, pod, &["/etc/nginx/nginx.conf", "/usr/sbin/nginx"]);
    let json = serde_json::to_vec(&report).expect("json");
    let gz = whittle_sensor::deliver::gzip(&json);

    // Refused, each with its status and reason, and nothing stored.
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "no token",
            post_report(addr, &path, None, true, &gz).await,
            401,
            "missing `Authorization: Bearer",
        ),
        (
            "wrong token",
            post_report(addr, &path, Some("guess"), true, &gz).await,
            401,
            "wrong report token",
        ),
        (
            "a Secret the workflow does not own",
            post_report(
                addr,
                &names::report_path(&ns, "orphan"),
                Some(TOKEN),
                true,
                &gz,
            )
            .await,
            401,
            "has no report token",
        ),
        (
            "unknown workflow",
            post_report(
                addr,
                &names::report_path(&ns, "nope"),
                Some(TOKEN),
                true,
                &gz,
            )
            .await,
            404,
            "no HardeningWorkflow nope",
        ),
        (
            "unknown namespace",
            post_report(
                addr,
                &names::report_path("no-such-ns", "web"),
                Some(TOKEN),
                true,
                &gz,
            )
            .await,
            404,
            "no HardeningWorkflow web in namespace no-such-ns",
        ),
        (
            "declared too large",
            request(
                addr,
                "POST",
                &path,
                &[
                    ("Authorization", &format!("Bearer {TOKEN}")),
                    ("Content-Encoding", "gzip"),
                    ("Content-Length", &(16 * 1024 * 1024 + 1).to_string()),
                ],
                b"",
            )
            .await,
            413,
            "the limit is 16777216",
        ),
        (
            "gzip bomb",
            post_report(
                addr,
                &path,
                Some(TOKEN),
                true,
                &whittle_sensor::deliver::gzip(&vec![b' '; 65 << 20]),
            )
            .await,
            413,
            "decompresses to more than",
        ),
        (
            "malformed JSON",
            post_report(
                addr,
                &path,
                Some(TOKEN),
                true,
                &whittle_sensor::deliver::gzip(b"{\"schemaVersion\": 1, \"paths\": "),
            )
            .await,
            400,
            "not a whittle report (invalid JSON",
        ),
        (
            "not gzip",
            post_report(addr, &path, Some(TOKEN), true, &json).await,
            400,
            "not valid gzip",
        ),
        (
            "another schema version",
            post_report(
                addr,
                &path,
                Some(TOKEN),
                false,
                &serde_json::to_vec(&Report {
                    schema_version: 99,
                    ..report.clone()
                })
                .expect("json"),
            )
            .await,
            400,
            "report schema version 99 is not supported",
        ),
        (
            "unsupported encoding",
            request(
                addr,
                "POST",
                &path,
                &[
                    ("Authorization", &format!("Bearer {TOKEN}")),
                    ("Content-Encoding", "br"),
                ],
                &json,
            )
            .await,
            415,
            "not supported",
        ),
    ];
    for (case, reply, status, reason) in &cases {
        assert_refused(reply, *status, reason, case);
    }
    assert!(
        report_config_maps(&client, &ns).await.is_empty(),
        "a refused report left a ConfigMap"
    );

    // The sensor's own delivery code sends the valid report.
    let url = whittle_sensor::deliver::parse_url(&format!("http://{addr}{path}")).expect("url");
    let sent = json.clone();
    tokio::task::spawn_blocking(move || {
        whittle_sensor::deliver::post(
            &url,
            Some(TOKEN),
            &sent,
            Instant::now() + Duration::from_secs(30),
        )
    })
    .await
    .expect("join")
    .expect("the sensor's report is accepted");

    let stored = report_config_maps(&client, &ns).await;
    assert_eq!(stored.len(), 1, "one ConfigMap per reporting pod");
    let cm = &stored[0];
    assert_eq!(cm.name_any(), format!("web-report-{pod}"));
    let labels = cm.labels();
    assert_eq!(labels.get(WORKFLOW_LABEL).map(String::as_str), Some("web"));
    assert_eq!(labels.get(POD_LABEL).map(String::as_str), Some(pod));
    assert_eq!(
        cm.annotations().get(POD_ANNOTATION).map(String::as_str),
        Some(pod)
    );
    let owner = &cm.owner_references()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str())
        ),
        ("HardeningWorkflow", "web", workflow.metadata.uid.as_deref())
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(false))
    );
    let data = &cm.binary_data.as_ref().expect("binaryData")[REPORT_KEY];
    let back = Report::from_json_slice(
        &reports::gunzip_limited(&data.0, reports::MAX_REPORT_JSON).expect("gunzip"),
    )
    .expect("the stored report parses");
    assert_eq!(back, report);

    // The same pod again (plain JSON this time): the report is replaced, not added.
    let second = sensor_report(
        &ns,
        pod,
        &["/etc/nginx/nginx.conf", "/etc/nginx/mime.types"],
    );
    let reply = post_report(
        addr,
        &path,
        Some(TOKEN),
        false,
        &serde_json::to_vec(&second).expect("json"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("replaced"), "{}", reply.body);
    // A bad report from the same pod does not touch the stored one.
    let reply = post_report(
        addr,
        &path,
        Some(TOKEN),
        false,
        &serde_json::to_vec(&json!({"schemaVersion": 1})).expect("json"),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let other = sensor_report(&ns, "web-5d8f7c9b6-abcde", &["/usr/sbin/nginx"]);
    let reply = post_report(
        addr,
        &path,
        Some(TOKEN),
        true,
        &whittle_sensor::deliver::gzip(&serde_json::to_vec(&other).expect("json")),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    assert_eq!(
        reports::reported_pods(&client, &workflow)
            .await
            .expect("reported pods"),
        BTreeSet::from([pod.to_string(), "web-5d8f7c9b6-abcde".to_string()])
    );
    let loaded = reports::load_all(&client, &workflow)
        .await
        .expect("load reports");
    assert_eq!(
        loaded,
        vec![other, second],
        "in pod-name order (abcde, x2x9z)"
    );

    // /metrics counts what happened; the probes answer.
    let text = request(addr, "GET", "/metrics", &[], b"").await.body;
    for line in [
        "whittle_reports_accepted_total 3",
        "whittle_reports_rejected_total{reason=\"unauthorized\"} 3",
        "whittle_reports_rejected_total{reason=\"unknown_workflow\"} 2",
        "whittle_reports_rejected_total{reason=\"too_large\"} 2",
        "whittle_reports_rejected_total{reason=\"malformed\"} 4",
        "whittle_reports_rejected_total{reason=\"unsupported_encoding\"} 1",
        "whittle_reports_rejected_total{reason=\"api_unavailable\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").await.status, 200);
    let ready = request(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(request(addr, "GET", "/nope", &[], b"").await.status, 404);

    // delete_all clears them; and the garbage collector removes reports with their workflow.
    assert_eq!(
        reports::delete_all(&client, &workflow)
            .await
            .expect("delete"),
        2
    );
    assert!(report_config_maps(&client, &ns).await.is_empty());
    let reply = post_report(addr, &path, Some(TOKEN), true, &gz).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    Api::<HardeningWorkflow>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete workflow");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !report_config_maps(&client, &ns).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reports outlived their workflow by 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let _ = stop.send(());
    server
        .await
        .expect("join server")
        .expect("the server stops cleanly");
}
