//! What the operator tests share: `whittle operator` run in a cluster's network namespace (and
//! killed, and started again), and small waits on workflows, Deployments and pods.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod chart;
pub mod cli;
pub mod cosign;
pub mod kstatus;
pub mod layers;
pub mod scanners;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, PodTemplateSpec};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::Value;
use whittle::api::{HardeningWorkflow, HardeningWorkflowStatus, Phase};
use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::cluster::{Cluster, NODE_IP};

pub const WAIT: Duration = Duration::from_secs(240);

/// `whittle operator` in the cluster's namespace, on a fixed port of the node IP (the report
/// address in instrumented pods stays valid across restarts); killed when dropped.
pub struct Operator {
    child: Option<Child>,
    port: u16,
    kubeconfig: PathBuf,
    netns_cmd: Box<dyn Fn() -> std::process::Command + Send + Sync>,
    extra: Vec<String>,
    pod_name: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub fn start(cluster: &Cluster) -> Operator {
        Self::start_with(cluster, &[], None)
    }

    /// With extra arguments (e.g. `--leader-elect`) and a fixed identity (`POD_NAME`).
    pub fn start_with(cluster: &Cluster, extra: &[&str], pod_name: Option<&str>) -> Operator {
        Self::start_as(cluster, cluster.kubeconfig(), extra, pod_name)
    }

    /// With the credentials of `kubeconfig` (e.g. the chart's ServiceAccount).
    pub fn start_as(
        cluster: &Cluster,
        kubeconfig: PathBuf,
        extra: &[&str],
        pod_name: Option<&str>,
    ) -> Operator {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random report key");
        // As text: the operator trims whitespace around a key file, which would shorten raw
        // random bytes that happen to start or end with one.
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        Self::start_keyed(cluster, kubeconfig, extra, pod_name, key.as_bytes())
    }

    /// Another replica of `self`'s installation: the same report key (as the chart's replicas
    /// share one Secret), so either replica accepts the tokens the other handed out.
    pub fn replica(&self, cluster: &Cluster, extra: &[&str], pod_name: Option<&str>) -> Operator {
        Self::start_keyed(
            cluster,
            self.kubeconfig.clone(),
            extra,
            pod_name,
            &self.report_key(),
        )
    }

    /// The key this operator derives report tokens from (the key file's bytes).
    pub fn report_key(&self) -> Vec<u8> {
        fs::read(self._dir.path().join("report.key")).expect("read report key")
    }

    fn start_keyed(
        cluster: &Cluster,
        kubeconfig: PathBuf,
        extra: &[&str],
        pod_name: Option<&str>,
        key: &[u8],
    ) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = cluster
            .listen(0)
            .expect("probe a port")
            .local_addr()
            .expect("address")
            .port();
        let netns = cluster.netns_path();
        // The key report tokens are derived from; a file, so the operator needs no Secret in a
        // namespace of its own, and a restart keeps the tokens its pods hold valid.
        fs::write(dir.path().join("report.key"), key).expect("write report key");
        let mut op = Operator {
            child: None,
            port,
            kubeconfig,
            netns_cmd: Box::new(move || {
                let mut cmd = std::process::Command::new("nsenter");
                cmd.arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_whittle"));
                cmd
            }),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            pod_name: pod_name.map(str::to_string),
            log: dir.path().join("operator.log"),
            _dir: dir,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = (self.netns_cmd)();
        cmd.args(["operator", "--listen"])
            .arg(format!("0.0.0.0:{}", self.port))
            .arg("--report-address")
            .arg(format!("{NODE_IP}:{}", self.port))
            .arg("--sensor")
            .arg(sensor_binary().expect("sensor"))
            .arg("--report-key-file")
            .arg(self._dir.path().join("report.key"))
            .args(&self.extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "whittle=info,warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        if let Some(name) = &self.pod_name {
            cmd.env("POD_NAME", name);
        }
        self.child = Some(cmd.spawn().expect("start whittle operator"));
    }

    /// SIGKILL: no chance to finish anything, as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the operator again, with the same port, arguments and log.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operator process's pid (nsenter execs whittle in its place), for benchmarks that
    /// read its /proc entries.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs the Helm chart (its CRD and RBAC; no operator pod: `replicaCount=0`) as release
/// `whittle` in namespace `whittle-system`, and returns a kubeconfig with the token of the
/// chart's ServiceAccount, so that an operator run with it has exactly the chart's permissions.
pub async fn install_chart_rbac(cluster: &Cluster, dir: &Path) -> PathBuf {
    install_chart_rbac_with(cluster, dir, &[]).await
}

/// [`install_chart_rbac`] with more values (`key=value`).
pub async fn install_chart_rbac_with(cluster: &Cluster, dir: &Path, sets: &[&str]) -> PathBuf {
    let helm =
        whittle_testbed::cluster::helm::Helm::with_kubeconfig(&cluster.kubeconfig()).expect("helm");
    let chart_dir = chart::dir();
    let mut args = vec!["install", "whittle", &chart_dir];
    args.extend(chart::WITHOUT_OPERATOR);
    for s in sets {
        args.extend(["--set", s]);
    }
    helm.run(&args).expect("helm install the chart");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(cluster.client(), "whittle-system");
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 7200}}))
            .expect("token request");
    let token = accounts
        .create_token_request("whittle", &Default::default(), &request)
        .await
        .expect("a token for the chart's ServiceAccount")
        .status
        .expect("token status")
        .token;
    let admin = fs::read_to_string(cluster.kubeconfig()).expect("admin kubeconfig");
    let mut config: Value = serde_saphyr::from_str(&admin).expect("kubeconfig YAML");
    config["users"][0]["user"] = serde_json::json!({"token": token});
    let path = dir.join("whittle-sa.kubeconfig");
    // JSON is YAML: kube reads it as a kubeconfig.
    fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write kubeconfig");
    path
}

/// A cluster whose CRD and RBAC come from the chart, and an operator (started with `extra`)
/// holding exactly the chart's permissions; the directory keeps its kubeconfig.
pub async fn cluster_with_chart_operator(extra: &[&str]) -> (Cluster, tempfile::TempDir, Operator) {
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let operator = Operator::start_as(&cluster, kubeconfig, extra, None);
    (cluster, dir, operator)
}

/// A cluster with the HardeningWorkflow CRD installed.
pub async fn cluster_with_crd() -> Cluster {
    let cluster = Cluster::start().await.expect("cluster");
    cluster
        .control_plane()
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("install the CRD");
    cluster
}

/// Applies the workflow of example `file` and waits until workflow `name` has Succeeded,
/// printing how long that took.
pub async fn example_succeeds(
    client: &Client,
    ns: &str,
    file: &str,
    registry: &str,
    name: &str,
) -> HardeningWorkflow {
    let started = Instant::now();
    apply(client, ns, &example(file, registry)).await;
    let w = wait_phase(client, ns, name, Phase::Succeeded).await;
    eprintln!("{file}: apply to Succeeded in {:.1?}", started.elapsed());
    w
}

pub async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let start = Instant::now();
    scenario.await;
    eprintln!("scenario '{name}' passed in {:.1?}", start.elapsed());
}

pub async fn namespace(c: &Cluster, prefix: &str, labels: &[(&str, &str)]) -> (Client, String) {
    let name = c.namespace(prefix, labels).await.expect("namespace");
    (c.client(), name)
}

pub async fn wait_for<F, Fut>(what: &str, mut check: F)
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
pub async fn apply(client: &Client, ns: &str, object: &Value) {
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
pub fn example(path: &str, registry: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = fs::read_to_string(&file).expect("read example");
    serde_saphyr::from_str(&text.replace("localhost:5000", registry)).expect("YAML")
}

pub async fn workflow(client: &Client, ns: &str, name: &str) -> Option<HardeningWorkflow> {
    Api::<HardeningWorkflow>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get workflow")
}

pub async fn status(client: &Client, ns: &str, name: &str) -> HardeningWorkflowStatus {
    workflow(client, ns, name)
        .await
        .expect("workflow exists")
        .status
        .unwrap_or_default()
}

/// Waits until the workflow reaches `phase`; fails at once with its message if it fails.
pub async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> HardeningWorkflow {
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

/// Waits until the workflow is Failed (it must not succeed) and returns its status.
pub async fn wait_failed(client: &Client, ns: &str, name: &str) -> HardeningWorkflowStatus {
    let start = Instant::now();
    loop {
        let status = status(client, ns, name).await;
        if status.phase() == Phase::Failed {
            return status;
        }
        assert!(
            status.phase() != Phase::Succeeded,
            "workflow {ns}/{name} succeeded; it should have failed"
        );
        assert!(start.elapsed() < WAIT, "not Failed: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn template(client: &Client, ns: &str, name: &str) -> PodTemplateSpec {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("deployment")
        .spec
        .template
}

/// The Events about the workflow `name`: (reason, message).
pub async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let selector = format!("involvedObject.kind=HardeningWorkflow,involvedObject.name={name}");
    api.list(&ListParams::default().fields(&selector))
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// GET `path` from a pod's IP, from the node.
pub fn get_from_node(cluster: &Cluster, ip: &str, port: u16, path: &str) -> (u16, Vec<u8>) {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().expect("address");
    let stream = whittle_testbed::net::netns::in_netns(&cluster.netns_path(), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .expect("connect");
    let r = whittle_testbed::net::http::get(stream, &addr.to_string(), path).expect("GET");
    (r.status, r.body)
}

pub async fn ready_pod_ip(pods: &Api<Pod>, selector: &str) -> String {
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

/// A busybox httpd Deployment serving `/www` on 8080, ready once `/index.html` answers, and a
/// Service in front of it.
pub fn busybox_web(image: &str, replicas: i32) -> (Value, Value) {
    busybox_workload("Deployment", image, replicas)
}

/// [`busybox_web`] as a workload of `kind`: `Deployment`, `StatefulSet` (its `serviceName` the
/// Service, which is not headless so that an exercise can use it) or `DaemonSet` (no
/// `replicas`: one pod on the node).
pub fn busybox_workload(kind: &str, image: &str, replicas: i32) -> (Value, Value) {
    let (deployment, service) = busybox_deployment(image, replicas);
    let mut workload = deployment;
    workload["kind"] = serde_json::json!(kind);
    match kind {
        "StatefulSet" => workload["spec"]["serviceName"] = serde_json::json!("web"),
        "DaemonSet" => {
            if let Some(spec) = workload["spec"].as_object_mut() {
                spec.remove("replicas");
            }
        }
        _ => {}
    }
    (workload, service)
}

fn busybox_deployment(image: &str, replicas: i32) -> (Value, Value) {
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "web", "image": image,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080},
                                       "periodSeconds": 1, "failureThreshold": 1}}]}}}
    });
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    });
    (deployment, service)
}

/// Applies [`busybox_web`] in `ns`.
pub async fn deploy_busybox_web(client: &Client, ns: &str, image: &str, replicas: i32) {
    let (deployment, service) = busybox_web(image, replicas);
    apply(client, ns, &deployment).await;
    apply(client, ns, &service).await;
}

/// Applies the HardeningWorkflow `web` with `spec`.
pub async fn apply_workflow(client: &Client, ns: &str, spec: Value) {
    let workflow = serde_json::json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
        "metadata": {"name": "web"},
        "spec": spec,
    });
    apply(client, ns, &workflow).await;
}

/// An exercise that fetches the home page through the Service and checks it.
pub fn busybox_exercise(image: &str) -> Value {
    serde_json::json!({"template": {"spec": {"containers": [{"name": "check", "image": image,
        "command": ["sh", "-c", "wget -q -O - http://$WHITTLE_TARGET/index.html | grep -q hello"]}]}}})
}

/// The owner-labelled Jobs of workflow `name`.
pub async fn jobs(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(&format!("whittle.dev/workflow={name}")))
        .await
        .expect("list jobs")
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    names.sort();
    names
}

/// The paths (no leading `/`) in the one layer of a hardened image in a plain-HTTP registry,
/// read with skopeo and tar, not with whittle's code; the layer is checked to be no larger
/// than `gzip -6` of its tar.
pub fn hardened_files(reference: &str) -> std::collections::BTreeSet<String> {
    let layer = layers::hardened_layer(reference);
    layer.assert_no_larger_than_gzip6();
    layer.files()
}

/// Applies examples/nginx's workflow, waits until it has Succeeded, and returns its status
/// with the hardened image, checked to be pushed by digest beside the source.
pub async fn nginx_example_hardened(
    client: &Client,
    ns: &str,
    registry: &str,
) -> (String, HardeningWorkflowStatus) {
    let w = example_succeeds(
        client,
        ns,
        "examples/nginx/workflow.yaml",
        registry,
        "nginx",
    )
    .await;
    let status = w.status.expect("status");
    let hardened = status.hardened_image.clone().expect("status.hardenedImage");
    assert!(
        hardened.starts_with(&format!("{registry}/whittle-examples/nginx@sha256:")),
        "{hardened}"
    );
    (hardened, status)
}

/// Applies examples/nginx's Deployment and Service in `ns` and waits until its pod is ready.
pub async fn deploy_nginx_example(client: &Client, ns: &str, registry: &str) {
    for file in ["deployment.yaml", "service.yaml"] {
        apply(
            client,
            ns,
            &example(&format!("examples/nginx/{file}"), registry),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    ready_pod_ip(&pods, "app=nginx").await;
}

/// `fixture` with `files` (relative path → content; a `.wh.NAME` entry deletes NAME) as one more
/// layer, pushed under `repo_tag`: a source rebuilt under the same tag, a new digest.
pub fn push_rebuilt(
    c: &Cluster,
    fixture: &whittle_testbed::images::fixtures::Fixture,
    files: &[(&str, &str)],
    repo_tag: &str,
) -> String {
    let copy = tempfile::tempdir().expect("temp dir");
    let layout = copy.path().join("layout");
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&fixture.layout)
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(status.success(), "copy the fixture layout");
    let layer = tempfile::tempdir().expect("layer dir");
    // The layer's directories land on the image's own (its root included): they keep the
    // modes a Debian image has, not a temp dir's 0700.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(layer.path(), 0o755);
    for (path, content) in files {
        let path = layer.path().join(path);
        let parent = path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).expect("mkdir");
        for dir in parent
            .ancestors()
            .take_while(|d| d.starts_with(layer.path()))
        {
            mode(dir, 0o755);
        }
        fs::write(&path, content).expect("write a layer file");
        mode(&path, 0o644);
    }
    whittle_testbed::images::oci_layout::append_layer(
        &layout,
        &fixture.tag,
        layer.path(),
        "a rebuild",
    )
    .expect("layer");
    let rebuilt = whittle_testbed::images::fixtures::Fixture {
        name: format!("{}-rebuilt", fixture.name),
        layout,
        tag: fixture.tag.clone(),
    };
    rebuilt
        .push(c.registry(), repo_tag)
        .expect("push the rebuilt source")
}
