//! The operator on a real cluster (control plane, kubelet + containerd node, registry): the
//! `whittle operator` binary runs in the cluster's network namespace, where pods reach its
//! report port on the node IP, and reconciles real workflows. The scenarios share one cluster
//! and one operator, each in a namespace of its own, and run concurrently:
//! - `examples/nginx` goes from apply to Succeeded; the hardened image, run by the node, serves
//!   `GET /` like the original;
//! - a workload under Pod Security `restricted` (non-root, no capability, RuntimeDefault
//!   seccomp) whose pod overrides its entrypoint is instrumented in ptrace mode, reports, and
//!   is hardened;
//! - a workflow deleted mid-observation leaves the Deployment's pod template exactly as it was,
//!   and its token Secret and report ConfigMaps are gone;
//! - a pod killed without grace never reports: Failed after collectTimeout, naming that pod,
//!   the Deployment restored.
//!
//! Schema validation and the report intake's refusals are tested in `api_schema.rs` and
//! `report_intake.rs`, against the same real API server.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use whittle::api::{HardeningWorkflow, Phase};
use whittle_testbed::cluster::{Cluster, NODE_IP};
use whittle_testbed::images::fixtures;
use whittle_testbed::sensor::sensor_binary;

const WAIT: Duration = Duration::from_secs(240);

/// `whittle operator` in the cluster's namespace; killed when dropped.
struct Operator {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(cluster: &Cluster) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("operator.log");
        let port = cluster
            .listen(0)
            .expect("probe a port")
            .local_addr()
            .expect("address")
            .port();
        let out = fs::File::create(&log).expect("log file");
        let child = cluster
            .net_command(env!("CARGO_BIN_EXE_whittle"))
            .args(["operator", "--listen"])
            .arg(format!("0.0.0.0:{port}"))
            .arg("--report-address")
            .arg(format!("{NODE_IP}:{port}"))
            .arg("--sensor")
            .arg(sensor_binary().expect("sensor"))
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "whittle=info,warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start whittle operator");
        Operator {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workflows_run_on_a_real_cluster() {
    let cluster = Cluster::start().await.expect("cluster");
    cluster
        .control_plane()
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("install the CRD");
    let registry = cluster.registry().host();
    fixtures::nginx()
        .expect("nginx fixture")
        .push(cluster.registry(), "whittle-examples/nginx:1")
        .expect("push nginx");
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(cluster.registry(), "shop/busybox:1")
        .expect("push busybox");
    let operator = Operator::start(&cluster);

    let c = &cluster;
    let outcome = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(
            timed("examples/nginx", nginx_example(c, &registry)),
            timed("restricted, ptrace", restricted_workload(c, &busybox)),
            timed(
                "deleted mid-observation",
                deleted_mid_observation(c, &busybox)
            ),
            timed("a pod that never reports", silent_pod(c, &busybox)),
        )
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the scenarios did not finish in 600s; operator log:\n{}",
        operator.log()
    );
}

async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let start = Instant::now();
    scenario.await;
    eprintln!("scenario '{name}' passed in {:.1?}", start.elapsed());
}

async fn namespace(c: &Cluster, prefix: &str, labels: &[(&str, &str)]) -> (Client, String) {
    let name = c.namespace(prefix, labels).await.expect("namespace");
    (c.client(), name)
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies an object (server-side, as `kubectl apply --server-side` would).
async fn apply(client: &Client, ns: &str, object: &Value) {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: object["apiVersion"].as_str().expect("apiVersion").into(),
        kind: object["kind"].as_str().expect("kind").into(),
    })
    .expect("gvk");
    let plural = format!("{}s", gvk.kind.to_lowercase());
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    );
    let name = object["metadata"]["name"].as_str().expect("name");
    api.patch(
        name,
        &PatchParams::apply("whittle-test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Reads an example's YAML, with the example registry replaced by the test's.
fn example(path: &str, registry: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = fs::read_to_string(&file).expect("read example");
    serde_saphyr::from_str(&text.replace("localhost:5000", registry)).expect("YAML")
}

async fn workflow(client: &Client, ns: &str, name: &str) -> Option<HardeningWorkflow> {
    Api::<HardeningWorkflow>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get workflow")
}

/// Waits until the workflow reaches `phase`; fails at once with its message if it fails.
async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> HardeningWorkflow {
    let start = Instant::now();
    loop {
        let w = workflow(client, ns, name).await.expect("workflow exists");
        let status = w.status.clone().unwrap_or_default();
        if status.phase() == phase {
            return w;
        }
        assert!(
            status.phase() != Phase::Failed,
            "workflow {ns}/{name} failed: {:?}",
            status.message
        );
        assert!(
            start.elapsed() < WAIT,
            "workflow {ns}/{name} not {phase} after {WAIT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn template(client: &Client, ns: &str, name: &str) -> PodTemplateSpec {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment")
        .spec
        .template
}

/// GET `path` from a pod's IP, from the node.
fn get_from_node(cluster: &Cluster, ip: &str, port: u16, path: &str) -> (u16, Vec<u8>) {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let stream = whittle_testbed::net::netns::in_netns(&cluster.netns_path(), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .expect("connect");
    let r = whittle_testbed::net::http::get(stream, &addr.to_string(), path).expect("GET");
    (r.status, r.body)
}

async fn ready_pod_ip(pods: &Api<Pod>, selector: &str) -> String {
    let start = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list pods");
        let ip = list.items.iter().find_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && p.metadata.deletion_timestamp.is_none() {
                status.pod_ip.clone()
            } else {
                None
            }
        });
        if let Some(ip) = ip {
            return ip;
        }
        assert!(start.elapsed() < WAIT, "no ready pod {selector}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn nginx_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "nginx", &[]).await;
    for file in ["deployment.yaml", "service.yaml"] {
        apply(
            &client,
            &ns,
            &example(&format!("examples/nginx/{file}"), registry),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let original_ip = ready_pod_ip(&pods, "app=nginx").await;
    let original = get_from_node(c, &original_ip, 80, "/");
    assert_eq!(original.0, 200);

    let started = Instant::now();
    apply(
        &client,
        &ns,
        &example("examples/nginx/workflow.yaml", registry),
    )
    .await;
    let w = wait_phase(&client, &ns, "nginx", Phase::Succeeded).await;
    eprintln!(
        "examples/nginx: apply to Succeeded in {:.1?}",
        started.elapsed()
    );
    let status = w.status.expect("status");
    let hardened = status.hardened_image.expect("status.hardenedImage");
    assert!(
        hardened.starts_with(&format!("{registry}/whittle-examples/nginx@sha256:")),
        "{hardened}"
    );
    let result = status.result.expect("status.result");
    eprintln!("examples/nginx: {hardened}, {result:?}");
    assert!(result.hardened_bytes < result.source_bytes, "{result:?}");
    assert!(result.removed_shells > 0, "{result:?}");
    assert_eq!(status.reports.expect("reports").received, 1);

    // The hardened image, run by the node, serves the same page.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hardened", "labels": {"run": "hardened"}},
        "spec": {"containers": [{"name": "nginx", "image": hardened,
            "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create hardened pod");
    let ip = ready_pod_ip(&pods, "run=hardened").await;
    assert_eq!(
        get_from_node(c, &ip, 80, "/"),
        original,
        "the hardened nginx serves GET / as the original"
    );
}

/// busybox httpd as nobody, in a namespace enforcing `restricted`; the pod sets its command, so
/// whittle wraps it with the sensor.
async fn restricted_workload(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(
        c,
        "restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "web", "image": busybox,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}}]}}}
    });
    apply(&client, &ns, &deployment).await;
    let workflow = json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
        "metadata": {"name": "web"},
        "spec": {"target": {"name": "web"}, "registry": {"insecure": true},
                 "observe": {"duration": "5s", "collectTimeout": "1m"}}
    });
    apply(&client, &ns, &workflow).await;
    let observing = wait_phase(&client, &ns, "web", Phase::Observing).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let instrumented = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.labels().contains_key("whittle.dev/workflow")
        })
        .expect("an instrumented pod");
    let container = &instrumented.spec.expect("spec").containers[0];
    assert_eq!(
        container.command.as_deref().map(|c| &c[..3]),
        Some(&["/.whittle/sensor".to_string(), "--".into(), "httpd".into()][..])
    );
    let caps = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone());
    assert!(
        caps.and_then(|c| c.add).is_none(),
        "ptrace mode adds no capability"
    );
    let status = observing.status.expect("status");
    let (source, instrumented) = (
        status.source_image.expect("sourceImage"),
        status.instrumented_image.expect("instrumentedImage"),
    );
    assert!(source.contains("/shop/busybox@sha256:"), "{source}");
    assert!(
        instrumented.contains("/shop/busybox@sha256:") && instrumented != source,
        "{instrumented}"
    );
    assert_eq!(container.image.as_deref(), Some(instrumented.as_str()));
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.reports.expect("reports").received,
        1,
        "the sensor reported under restricted"
    );
    assert!(status.hardened_image.is_some());
}

async fn deleted_mid_observation(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "deleted", &[]).await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "web", "image": busybox,
                    "command": ["/bin/sh", "-c", "httpd -f -p 8080 -h /www"],
                    "env": [{"name": "GREETING", "value": "hello"}]}]}}}
    });
    apply(&client, &ns, &deployment).await;
    let before = template(&client, &ns, "web").await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
            "metadata": {"name": "web"},
            "spec": {"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "10m"}}
        }),
    )
    .await;
    wait_phase(&client, &ns, "web", Phase::Observing).await;
    let during = template(&client, &ns, "web").await;
    assert_ne!(during, before, "instrumented");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(
        secrets
            .get_opt("web-report-token")
            .await
            .expect("get")
            .is_some()
    );

    Api::<HardeningWorkflow>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete workflow");
    wait_for("the workflow to be gone", || async {
        workflow(&client, &ns, "web").await.is_none()
    })
    .await;
    assert_eq!(
        template(&client, &ns, "web").await,
        before,
        "the whole pod template is restored"
    );
    let annotations = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .expect("deployment")
        .annotations()
        .clone();
    assert!(
        !annotations.contains_key("whittle.dev/original"),
        "{annotations:?}"
    );
    wait_for(
        "the token Secret and report ConfigMaps to be gone",
        || async {
            let secret = secrets.get_opt("web-report-token").await.ok().flatten();
            let reports = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels("whittle.dev/workflow"))
                .await
                .map(|l| l.items.len())
                .unwrap_or(1);
            secret.is_none() && reports == 0
        },
    )
    .await;
}

/// SIGSTOPs the sensor (PID 1 of the container) of pod `pod`, found by the POD_NAME whittle put
/// in its environment.
fn freeze_sensor_of(pod: &str) {
    let needle = format!("POD_NAME={pod}");
    let frozen: Vec<i32> = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline.starts_with(b"/.whittle/sensor\0")
                && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        })
        .inspect(|pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .expect("SIGSTOP the sensor");
        })
        .collect();
    assert_eq!(frozen.len(), 1, "one sensor runs in pod {pod}");
}

/// One replica, two reports needed: the pod is killed without a chance to report during
/// observation, its replacement reports when the original comes back, the killed one never does.
async fn silent_pod(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "silent", &[]).await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "web", "image": busybox,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]}]}}}
    });
    apply(&client, &ns, &deployment).await;
    let before = template(&client, &ns, "web").await;
    apply(
        &client,
        &ns,
        &json!({
            "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
            "metadata": {"name": "web"},
            "spec": {"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "20s", "minReports": 2, "collectTimeout": "15s"}}
        }),
    )
    .await;
    let w = wait_phase(&client, &ns, "web", Phase::Observing).await;
    let victim = w.status.and_then(|s| s.reports).expect("reports").expected[0].clone();
    // kubelet gives even a force-deleted pod 2 s, in which a sensor reports: freeze the
    // victim's sensor first, so that SIGKILL is all it gets.
    freeze_sensor_of(&victim);
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(
            &victim,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("kill the pod");

    let start = Instant::now();
    let failed = loop {
        let w = workflow(&client, &ns, "web").await.expect("workflow");
        let status = w.status.clone().unwrap_or_default();
        if status.phase() == Phase::Failed {
            break status;
        }
        assert!(
            status.phase() != Phase::Succeeded,
            "hardened with too few reports"
        );
        assert!(start.elapsed() < WAIT, "not Failed: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains(&victim),
        "the reason names the silent pod: {message}"
    );
    assert!(message.contains("2 are needed"), "{message}");
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ReportsMissing")
    );
    assert_eq!(
        template(&client, &ns, "web").await,
        before,
        "the Deployment is restored"
    );
}
