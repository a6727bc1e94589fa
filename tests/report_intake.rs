//! The report server against a real API server: sensors' reports arrive over real HTTP, are
//! checked, and land in ConfigMaps owned by their workflow; every bad request gets its status
//! and reason and stores nothing; /metrics counts both. Pods are real API objects and their
//! tokens real pod-bound ServiceAccount tokens (TokenRequest, audience `whittle`), exactly
//! what the kubelet projects into an instrumented pod; no kubelet is needed to make them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whittle::api::HardeningWorkflow;
use whittle::api::names::{
    self, POD_ANNOTATION, POD_LABEL, POD_TOKEN_HEADER, REPORT_AUDIENCE, REPORT_KEY, WORKFLOW_LABEL,
};
use whittle::metrics::Metrics;
use whittle::reports::{self, ReportKey};
use whittle::server::{self, ServerState};
use whittle_sensor::report::{
    Access, Executable, Identity, Loss, Mode, PathRecord, Report, SCHEMA_VERSION,
};
use whittle_testbed::cluster::control_plane::ControlPlane;

const INSTRUMENTED: &str = "127.0.0.1:5000/shop/web@sha256:e7270000000000000000000000000000000000000000000000000000000000e7";

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
    pod_token: Option<&str>,
    gzip: bool,
    body: &[u8],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if let Some(pod_token) = pod_token {
        headers.push((POD_TOKEN_HEADER, pod_token));
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

fn spec() -> whittle::api::HardeningWorkflowSpec {
    serde_json::from_value(json!({"target": {"name": "web"}})).expect("spec")
}

/// A workflow as the controller leaves it while observing: its phase and instrumented image
/// in the status.
async fn workflow_in(client: &Client, ns: &str, name: &str, phase: &str) -> HardeningWorkflow {
    let workflows: Api<HardeningWorkflow> = Api::namespaced(client.clone(), ns);
    workflows
        .create(
            &PostParams::default(),
            &HardeningWorkflow::new(name, spec()),
        )
        .await
        .expect("create workflow");
    set_phase(client, ns, name, phase).await
}

async fn set_phase(client: &Client, ns: &str, name: &str, phase: &str) -> HardeningWorkflow {
    let status = json!({"status": {"phase": phase, "instrumentedImage": INSTRUMENTED}});
    Api::<HardeningWorkflow>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status")
}

/// A pod object labelled for `workflow` (or for none) running `image`, and the token the
/// kubelet would project into it for `audience`.
async fn pod_with_token(
    client: &Client,
    ns: &str,
    name: &str,
    workflow: Option<&str>,
    image: &str,
    audience: &str,
) -> (Pod, String) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "reporter"}})).expect("sa");
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create ServiceAccount: {e}"),
    }
    let labels = match workflow {
        Some(w) => json!({ WORKFLOW_LABEL: names::label_value(w) }),
        None => json!({}),
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceAccountName": "reporter",
            "containers": [{"name": "nginx", "image": image}],
        },
    }))
    .expect("pod");
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("reporter", &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("token status")
        .token
        .expect("a token");
    (pod, token)
}

fn gz_report(namespace: &str, pod: &str, paths: &[&str]) -> Vec<u8> {
    whittle_sensor::deliver::gzip(
        &serde_json::to_vec(&sensor_report(namespace, pod, paths)).expect("json"),
    )
}

struct Server {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
}

async fn serve(client: Client, metrics: Arc<Metrics>, key: ReportKey) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(
        listener,
        ServerState::new(client, metrics, key),
        async {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop, task }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("join server")
            .expect("the server stops cleanly");
    }
}

/// A request without a valid report token costs the API server nothing: with no API server at
/// all, strangers still get their uniform 401, and only a valid token gets as far as asking.
#[tokio::test(flavor = "multi_thread")]
async fn strangers_get_one_uniform_401_before_any_api_call() {
    whittle::init_tls();
    let dead = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    let client = Client::try_from(dead).expect("client");
    let key = ReportKey::generate().expect("key");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let server = serve(client, metrics, key.clone()).await;
    let path = names::report_path("shop", "web");
    let body = gz_report("shop", "web-1", &["/bin/sh"]);
    let other_key = ReportKey::generate().expect("key");
    let mut answers = Vec::new();
    for (case, token) in [
        ("no token", None),
        ("a guess", Some("guess".to_string())),
        (
            "another operator's token",
            Some(other_key.token("shop", "web", "u1")),
        ),
        (
            "another workflow's token",
            Some(key.token("shop", "api", "u1")),
        ),
    ] {
        let reply = post_report(server.addr, &path, token.as_deref(), None, true, &body).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.body);
        answers.push(reply.body);
    }
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "one answer for every stranger: {answers:?}"
    );
    let valid = key.token("shop", "web", "u1");
    let reply = post_report(server.addr, &path, Some(&valid), None, true, &body).await;
    assert_eq!(
        reply.status, 503,
        "a valid token gets to the API: {}",
        reply.body
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_bound_to_their_pods() {
    let plane = ControlPlane::start().await.expect("control plane");
    plane
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("install CRD");
    let client = plane.client();
    let ns = plane.namespace("intake").await.expect("namespace");
    let workflow = workflow_in(&client, &ns, "web", "Observing").await;
    let wuid = workflow.metadata.uid.clone().expect("uid");
    let key = ReportKey::generate().expect("key");
    let token = key.token(&ns, "web", &wuid);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let server = serve(client.clone(), metrics.clone(), key.clone()).await;
    let addr = server.addr;
    let path = names::report_path(&ns, "web");

    let pod = "web-5d8f7c9b6-x2x9z";
    let (real, pod_token) = pod_with_token(
        &client,
        &ns,
        pod,
        Some("web"),
        INSTRUMENTED,
        REPORT_AUDIENCE,
    )
    .await;
    let (_, stranger_pod) =
        pod_with_token(&client, &ns, "db-0", None, INSTRUMENTED, REPORT_AUDIENCE).await;
    let (_, original_pod) = pod_with_token(
        &client,
        &ns,
        "web-old",
        Some("web"),
        "127.0.0.1:5000/shop/web:1.2",
        REPORT_AUDIENCE,
    )
    .await;
    let (_, api_audience) = pod_with_token(
        &client,
        &ns,
        "web-api",
        Some("web"),
        INSTRUMENTED,
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let report = sensor_report(&ns, pod, &["/etc/nginx/nginx.conf", "/usr/sbin/nginx"]);
    let json = serde_json::to_vec(&report).expect("json");
    let gz = whittle_sensor::deliver::gzip(&json);
    let t = Some(token.as_str());
    let p = Some(pod_token.as_str());

    // Refused, each with its status and reason, and nothing stored.
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "no report token",
            post_report(addr, &path, None, p, true, &gz).await,
            401,
            "missing or invalid report token",
        ),
        (
            "a guessed workflow",
            post_report(addr, &names::report_path(&ns, "nope"), t, p, true, &gz).await,
            401,
            "missing or invalid report token",
        ),
        (
            "no pod token",
            post_report(addr, &path, t, None, true, &gz).await,
            401,
            "missing whittle-pod-token header",
        ),
        (
            "a pod token for the API server, not for whittle",
            post_report(addr, &path, t, Some(&api_audience), true, &gz).await,
            401,
            "was not accepted by the API server",
        ),
        (
            "a pod that is not the workflow's",
            post_report(
                addr,
                &path,
                t,
                Some(&stranger_pod),
                true,
                &gz_report(&ns, "db-0", &["/bin/sh"]),
            )
            .await,
            403,
            "is not an instrumented pod of workflow web",
        ),
        (
            "a pod of the workflow that runs the original image",
            post_report(
                addr,
                &path,
                t,
                Some(&original_pod),
                true,
                &gz_report(&ns, "web-old", &["/bin/sh"]),
            )
            .await,
            403,
            "does not run the instrumented image",
        ),
        (
            "a real pod's token, a report for a pod that does not exist",
            post_report(
                addr,
                &path,
                t,
                p,
                true,
                &gz_report(&ns, "web-forged", &["/bin/sh"]),
            )
            .await,
            403,
            "its pod token says web-5d8f7c9b6-x2x9z",
        ),
        (
            "declared too large",
            request(
                addr,
                "POST",
                &path,
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Encoding", "gzip"),
                    ("Content-Length", &(4 * 1024 * 1024 + 1).to_string()),
                ],
                b"",
            )
            .await,
            413,
            "the limit is 4194304",
        ),
        (
            "gzip bomb: 64 KiB that inflate to 65 MiB",
            post_report(
                addr,
                &path,
                t,
                p,
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
                t,
                p,
                true,
                &whittle_sensor::deliver::gzip(b"{\"schemaVersion\": 1, \"paths\": "),
            )
            .await,
            400,
            "not a whittle report (invalid JSON",
        ),
        (
            "not gzip",
            post_report(addr, &path, t, p, true, &json).await,
            400,
            "not valid gzip",
        ),
        (
            "another schema version",
            post_report(
                addr,
                &path,
                t,
                p,
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
                    ("Authorization", &format!("Bearer {token}")),
                    (POD_TOKEN_HEADER, &pod_token),
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

    // The pod's report, stored under a name of the workflow's and the pod's uids.
    let reply = post_report(addr, &path, t, p, true, &gz).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let stored = report_config_maps(&client, &ns).await;
    assert_eq!(stored.len(), 1, "one ConfigMap per reporting pod");
    let cm = &stored[0];
    let puid = real.metadata.uid.clone().expect("pod uid");
    assert_eq!(
        cm.name_any(),
        names::report_config_map_name("web", &wuid, &puid, Some("nginx"))
    );
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
        ("HardeningWorkflow", "web", Some(wuid.as_str()))
    );
    let data = &cm.binary_data.as_ref().expect("binaryData")[REPORT_KEY];
    let back = reports::read_gzip_report(&data.0, reports::MAX_REPORT_JSON)
        .expect("the stored report parses");
    assert_eq!(back, report);

    // The same run again (a re-send after a lost answer) changes nothing.
    let reply = post_report(addr, &path, t, p, true, &gz).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("already had"), "{}", reply.body);
    // The container restarted: its second run's report is merged with the first, not lost.
    let second_run = Report {
        started_at_ms: report.started_at_ms + 120_000,
        stopped_at_ms: report.stopped_at_ms + 120_000,
        ..sensor_report(&ns, pod, &["/etc/nginx/mime.types"])
    };
    let reply = post_report(
        addr,
        &path,
        t,
        p,
        false,
        &serde_json::to_vec(&second_run).expect("json"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("merged"), "{}", reply.body);
    let folded = reports::fold(&client, &workflow, None).await.expect("fold");
    let kept: BTreeSet<&str> = folded
        .profile
        .as_ref()
        .expect("a profile")
        .paths
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        kept,
        BTreeSet::from([
            "/etc/nginx/mime.types",
            "/etc/nginx/nginx.conf",
            "/usr/sbin/nginx"
        ]),
        "both runs' paths"
    );
    assert_eq!(folded.materials.len(), 1, "one pod, one material");

    // A second pod of the workflow.
    let other = "web-5d8f7c9b6-abcde";
    let (_, other_token) = pod_with_token(
        &client,
        &ns,
        other,
        Some("web"),
        INSTRUMENTED,
        REPORT_AUDIENCE,
    )
    .await;
    let reply = post_report(
        addr,
        &path,
        t,
        Some(&other_token),
        true,
        &gz_report(&ns, other, &["/usr/sbin/nginx"]),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reports::reported_pods(&client, &workflow)
            .await
            .expect("reported pods"),
        BTreeSet::from([pod.to_string(), other.to_string()])
    );

    // The cap: a workflow that stores MAX_REPORTS_PER_WORKFLOW pods' reports takes no more.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for i in 0..reports::MAX_REPORTS_PER_WORKFLOW - 2 {
        let mut labels = names::workflow_labels("web");
        labels.insert(POD_LABEL.to_string(), format!("filler-{i}"));
        let filler = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("filler-{i}")),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    POD_ANNOTATION.to_string(),
                    format!("filler-{i}"),
                )])),
                owner_references: Some(vec![workflow.owner_reference().expect("stored")]),
                ..ObjectMeta::default()
            },
            binary_data: Some(BTreeMap::from([(
                REPORT_KEY.to_string(),
                ByteString(gz.clone()),
            )])),
            ..ConfigMap::default()
        };
        configmaps
            .create(&PostParams::default(), &filler)
            .await
            .expect("filler");
    }
    let third = "web-5d8f7c9b6-third";
    let (_, third_token) = pod_with_token(
        &client,
        &ns,
        third,
        Some("web"),
        INSTRUMENTED,
        REPORT_AUDIENCE,
    )
    .await;
    let third_report = gz_report(&ns, third, &["/usr/sbin/nginx"]);
    let reply = post_report(addr, &path, t, Some(&third_token), true, &third_report).await;
    assert_refused(
        &reply,
        429,
        "already stores the reports of 128 pods",
        "the cap",
    );
    for i in 0..reports::MAX_REPORTS_PER_WORKFLOW - 2 {
        configmaps
            .delete(&format!("filler-{i}"), &DeleteParams::default())
            .await
            .expect("delete filler");
    }

    // Past Collecting, harden has folded what it signs: later reports are refused.
    set_phase(&client, &ns, "web", "Hardening").await;
    let reply = post_report(addr, &path, t, Some(&third_token), true, &third_report).await;
    assert_refused(&reply, 409, "takes reports only while", "after Collecting");

    // A workflow deleted and created again under the same name is another workflow: the
    // earlier one's token does not open it.
    workflow_in(&client, &ns, "again", "Observing").await;
    let old = Api::<HardeningWorkflow>::namespaced(client.clone(), &ns)
        .get("again")
        .await
        .expect("get");
    let old_token = key.token(&ns, "again", old.metadata.uid.as_deref().expect("uid"));
    Api::<HardeningWorkflow>::namespaced(client.clone(), &ns)
        .delete("again", &DeleteParams::default())
        .await
        .expect("delete");
    workflow_in(&client, &ns, "again", "Observing").await;
    let reply = post_report(
        addr,
        &names::report_path(&ns, "again"),
        Some(&old_token),
        p,
        true,
        &gz,
    )
    .await;
    assert_refused(
        &reply,
        404,
        "was deleted and created again",
        "a recreated namesake",
    );

    // /metrics counts what happened; the probes answer.
    let text = request(addr, "GET", "/metrics", &[], b"").await.body;
    for line in [
        "whittle_reports_accepted_total 4",
        "whittle_reports_rejected_total{reason=\"unauthorized\"} 4",
        "whittle_reports_rejected_total{reason=\"forbidden\"} 3",
        "whittle_reports_rejected_total{reason=\"unknown_workflow\"} 1",
        "whittle_reports_rejected_total{reason=\"too_large\"} 2",
        "whittle_reports_rejected_total{reason=\"malformed\"} 3",
        "whittle_reports_rejected_total{reason=\"unsupported_encoding\"} 1",
        "whittle_reports_rejected_total{reason=\"rate_limited\"} 1",
        "whittle_reports_rejected_total{reason=\"conflict\"} 1",
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
    set_phase(&client, &ns, "web", "Collecting").await;
    let reply = post_report(addr, &path, t, p, true, &gz).await;
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
    server.stop().await;
}

/// An operator upgraded while a workflow observes gets the reports of the sensor its previous
/// version injected, and a newer sensor's: fields this whittle does not know are ignored, an
/// unknown monitor is taken by its name; the report is stored and counts like any other.
/// An unknown mode is still a short name: one that is not is refused.
#[tokio::test(flavor = "multi_thread")]
async fn another_sensor_versions_report_is_accepted() {
    let plane = ControlPlane::start().await.expect("control plane");
    plane
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("install CRD");
    let client = plane.client();
    let ns = plane.namespace("versions").await.expect("namespace");
    let workflow = workflow_in(&client, &ns, "web", "Observing").await;
    let key = ReportKey::generate().expect("key");
    let token = key.token(&ns, "web", workflow.metadata.uid.as_deref().expect("uid"));
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let server = serve(client.clone(), metrics, key).await;
    let path = names::report_path(&ns, "web");
    let pod = "web-5d8f7c9b6-newer";
    let (_, pod_token) = pod_with_token(
        &client,
        &ns,
        pod,
        Some("web"),
        INSTRUMENTED,
        REPORT_AUDIENCE,
    )
    .await;

    let newer = |mode: &str| {
        let mut v =
            serde_json::to_value(sensor_report(&ns, pod, &["/usr/sbin/nginx"])).expect("json");
        v["mode"] = mode.into();
        v["kernelVersion"] = "7.1.0".into();
        v["paths"]["/usr/sbin/nginx"]["inode"] = 42.into();
        whittle_sensor::deliver::gzip(&serde_json::to_vec(&v).expect("json"))
    };
    let reply = post_report(
        server.addr,
        &path,
        Some(&token),
        Some(&pod_token),
        true,
        &newer("ebpf"),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(report_config_maps(&client, &ns).await.len(), 1);
    let folded = reports::fold(&client, &workflow, None).await.expect("fold");
    assert_eq!(folded.modes, BTreeSet::from(["ebpf".to_string()]));
    let profile = folded.profile.expect("a profile");
    assert!(profile.paths.contains_key("/usr/sbin/nginx"), "{profile:?}");

    let long = "e".repeat(100);
    let reply = post_report(
        server.addr,
        &path,
        Some(&token),
        Some(&pod_token),
        true,
        &newer(&long),
    )
    .await;
    assert_refused(&reply, 400, "mode", "a mode that is no short name");
    assert_eq!(
        report_config_maps(&client, &ns).await.len(),
        1,
        "the refused report stored nothing"
    );
    server.stop().await;
}
