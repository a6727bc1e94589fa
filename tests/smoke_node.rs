//! The test bed's node is real: each kubelet behaviour the operator relies on, proven on a real
//! kubelet + containerd node with real pods, in one cluster (the scenarios run concurrently, each
//! in a namespace of its own):
//! - an image pulled from an htpasswd registry with an imagePullSecret (and refused without it),
//!   a Deployment Available through its httpGet readinessProbe;
//! - env from a secretKeyRef and the downward API (env and volume) resolve;
//! - deleting a pod sends the image's StopSignal and waits for the app, up to
//!   terminationGracePeriodSeconds, then kills it;
//! - under Pod Security `restricted`, with the RuntimeDefault seccomp profile and no
//!   capability, the whittle sensor runs in ptrace mode and its report reaches an HTTP endpoint;
//! - a Job runs to completion;
//! - a pod reaches another pod through a Service (kube-proxy), so does the node, and a
//!   hostNetwork pod listens on the node IP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use whittle_sensor::report::{Mode, Report};
use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::cluster::{Cluster, NODE_IP};
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn the_node_runs_what_the_operator_needs() {
    let started = Instant::now();
    let mut cluster = Cluster::start().await.expect("cluster");
    eprintln!(
        "cluster (control plane + Ready node) started in {:.1?}",
        started.elapsed()
    );
    let private = cluster.start_registry(true).expect("htpasswd registry");
    let nginx = fixtures::nginx()
        .expect("nginx fixture")
        .push(&private, "smoke/nginx:1")
        .expect("push nginx");
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(cluster.registry(), "smoke/busybox:1")
        .expect("push busybox");
    let busybox_usr1 = fixtures::busybox(Some("SIGUSR1"))
        .expect("busybox fixture with StopSignal SIGUSR1")
        .push(cluster.registry(), "smoke/busybox-usr1:1")
        .expect("push busybox-usr1");
    let instrumented = instrument(&busybox);

    let scenarios = Instant::now();
    let c = &cluster;
    let outcome = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(
            timed(
                "pull secret, readiness, Service",
                pull_secret_readiness_and_service(c, &private, &nginx, &busybox)
            ),
            timed(
                "env from secretKeyRef and downward API",
                env_and_downward_api(c, &busybox)
            ),
            timed(
                "stop signal and grace period",
                stop_signal_and_grace(c, &busybox_usr1)
            ),
            timed(
                "restricted pod runs the ptrace sensor",
                restricted_sensor(c, &instrumented)
            ),
            timed("Job", job_completes(c, &busybox)),
            timed("hostNetwork pod", host_network(c, &busybox)),
        )
    })
    .await;
    if outcome.is_err() {
        panic!(
            "the scenarios did not finish in 600s\nkubelet:\n{}",
            cluster.node().log("kubelet")
        );
    }
    eprintln!("all scenarios took {:.1?}", scenarios.elapsed());
}

async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let start = Instant::now();
    scenario.await;
    eprintln!("scenario '{name}' passed in {:.1?}", start.elapsed());
}

/// The busybox image with the whittle sensor as its entrypoint, made by `whittle instrument`.
fn instrument(image: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["instrument", "--insecure", image])
        .env("WHITTLE_SENSOR_BIN", sensor_binary().expect("sensor"))
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run whittle instrument");
    assert!(
        out.status.success(),
        "whittle instrument: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn namespace(c: &Cluster, prefix: &str, labels: &[(&str, &str)]) -> (Client, String) {
    let name = c.namespace(prefix, labels).await.expect("namespace");
    (c.client(), name)
}

async fn create<K>(client: &Client, ns: &str, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create")
}

async fn wait<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn pod_phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.status?.phase)
}

async fn wait_phase(pods: &Api<Pod>, name: &str, phase: &str) {
    let mut last = None;
    let start = Instant::now();
    loop {
        let current = pod_phase(pods, name).await;
        if current.as_deref() == Some(phase) {
            return;
        }
        if current.as_deref() == Some("Failed") {
            let status = pods
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|p| p.status);
            panic!(
                "pod {name} failed: {:?}\nlogs: {}",
                status.and_then(|s| s.container_statuses),
                logs(pods, name).await
            );
        }
        if start.elapsed() > WAIT {
            let pod = pods.get_opt(name).await.ok().flatten();
            panic!(
                "pod {name} not {phase} after {WAIT:?} (phase {last:?}): {:?}",
                pod.and_then(|p| p.status)
            );
        }
        last = current;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn logs(pods: &Api<Pod>, name: &str) -> String {
    pods.logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"))
}

fn busybox_pod(name: &str, image: &str, script: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "command": ["/bin/sh", "-c", script]}]
        }
    })
}

async fn pull_secret_readiness_and_service(
    c: &Cluster,
    private: &Registry,
    nginx: &str,
    busybox: &str,
) {
    let (client, ns) = namespace(c, "pull", &[]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Without the pull secret the htpasswd registry refuses the node.
    create::<Pod>(
        &client,
        &ns,
        json!({"metadata": {"name": "no-secret"},
               "spec": {"containers": [{"name": "web", "image": nginx}]}}),
    )
    .await;
    wait("no-secret to fail its pull", || async {
        let pod = pods.get_opt("no-secret").await.ok().flatten();
        let reason = pod.and_then(|p| {
            p.status?
                .container_statuses?
                .first()?
                .state
                .clone()?
                .waiting?
                .reason
        });
        matches!(reason.as_deref(), Some("ErrImagePull" | "ImagePullBackOff"))
    })
    .await;

    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
               "stringData": {".dockerconfigjson": private.docker_config_json()}}),
    )
    .await;
    create::<Deployment>(
        &client,
        &ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "imagePullSecrets": [{"name": "pull"}],
                        "containers": [{
                            "name": "web", "image": nginx,
                            "ports": [{"containerPort": 80}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}
                        }]
                    }
                }
            }
        }),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait("the nginx Deployment to be Available", || async {
        deployments
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.status?.conditions)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                })
            })
    })
    .await;

    let service: Service = create(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 80}]}}),
    )
    .await;
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");

    // From a pod, through kube-proxy's rules, to the nginx pod.
    create::<Pod>(
        &client,
        &ns,
        busybox_pod(
            "client",
            busybox,
            &format!(
                // busybox-static's wget crashes in static glibc's resolver; nc does not resolve.
                "for i in $(seq 60); do \
                   out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080); \
                   case \"$out\" in *'Welcome to nginx'*) echo \"$out\"; exit 0;; esac; sleep 1; \
                 done; exit 1"
            ),
        ),
    )
    .await;
    wait_phase(&pods, "client", "Succeeded").await;
    let page = logs(&pods, "client").await;
    assert!(
        page.contains("Welcome to nginx"),
        "a pod got through the Service: {page}"
    );

    // From the node itself.
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().expect("address");
    let netns = c.netns_path();
    let response = whittle_testbed::net::netns::in_netns(&netns, move || {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(stream)
    })
    .and_then(|s| whittle_testbed::net::http::get(s, &addr.to_string(), "/"))
    .expect("GET the Service from the node");
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).contains("Welcome to nginx"));
}

async fn env_and_downward_api(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "env", &[]).await;
    create::<Secret>(
        &client,
        &ns,
        json!({"metadata": {"name": "token"}, "stringData": {"token": "s3cr3t-value"}}),
    )
    .await;
    let mut pod = busybox_pod(
        "env",
        busybox,
        "echo TOKEN=$TOKEN; echo POD_NAME=$POD_NAME; echo POD_NAMESPACE=$POD_NAMESPACE; \
         echo NODE_NAME=$NODE_NAME; echo POD_IP=$POD_IP; echo MEM=$MEM; \
         echo LABELS=$(cat /etc/podinfo/labels | tr '\\n' ' ')",
    );
    pod["metadata"]["labels"] = json!({"tier": "smoke"});
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
    ]);
    pod["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "64Mi"}});
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "podinfo", "mountPath": "/etc/podinfo"}]);
    pod["spec"]["volumes"] = json!([{"name": "podinfo", "downwardAPI": {
        "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]);
    create::<Pod>(&client, &ns, pod).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    wait_phase(&pods, "env", "Succeeded").await;
    let out = logs(&pods, "env").await;
    for expected in [
        "TOKEN=s3cr3t-value".to_string(),
        "POD_NAME=env".into(),
        format!("POD_NAMESPACE={ns}"),
        "NODE_NAME=whittle-node".into(),
        "POD_IP=10.78.0.".into(),
        "MEM=64".into(),
        "tier=\"smoke\"".into(),
    ] {
        assert!(out.contains(&expected), "{expected} missing from:\n{out}");
    }
}

/// The image's StopSignal is SIGUSR1: a handler that takes 3 s runs to its end within a 20 s
/// grace period; a pod that ignores the signal is killed when its 3 s grace period ends.
async fn stop_signal_and_grace(c: &Cluster, busybox_usr1: &str) {
    let (client, ns) = namespace(c, "stop", &[]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let shared = tempfile::tempdir().expect("temp dir");
    let marker = |name: &str| shared.path().join(name);

    let pod = |name: &str, grace: u32, script: &str| {
        let mut p = busybox_pod(name, busybox_usr1, script);
        p["spec"]["terminationGracePeriodSeconds"] = json!(grace);
        p["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "shared", "mountPath": "/shared"}]);
        p["spec"]["volumes"] = json!([{"name": "shared",
            "hostPath": {"path": shared.path(), "type": "Directory"}}]);
        p
    };
    let graceful = "trap 'echo \"got USR1\" >> /shared/graceful; sleep 3; echo done >> /shared/graceful; exit 0' USR1; \
         trap 'echo \"got TERM\" >> /shared/graceful' TERM; echo started > /shared/graceful; \
         while :; do sleep 1 & wait $!; done";
    let stubborn = "trap '' USR1 TERM; echo started > /shared/stubborn; \
                    while :; do sleep 1 & wait $!; done";
    create::<Pod>(&client, &ns, pod("graceful", 20, graceful)).await;
    create::<Pod>(&client, &ns, pod("stubborn", 3, stubborn)).await;
    for name in ["graceful", "stubborn"] {
        wait_phase(&pods, name, "Running").await;
        wait("the script to start", || async { marker(name).exists() }).await;
    }

    let graceful_took = delete_and_wait(&pods, "graceful").await;
    let text = std::fs::read_to_string(marker("graceful")).expect("graceful marker");
    assert_eq!(
        text, "started\ngot USR1\ndone\n",
        "the image's StopSignal, and the handler ran to its end"
    );
    assert!(
        graceful_took >= Duration::from_secs(3) && graceful_took < Duration::from_secs(18),
        "deletion waited for the 3 s handler and not for the whole grace period: {graceful_took:?}"
    );

    let stubborn_took = delete_and_wait(&pods, "stubborn").await;
    assert!(
        stubborn_took >= Duration::from_secs(3) && stubborn_took < Duration::from_secs(15),
        "a pod ignoring its stop signal is killed when the 3 s grace period ends: {stubborn_took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(marker("stubborn")).expect("stubborn marker"),
        "started\n"
    );
}

async fn delete_and_wait(pods: &Api<Pod>, name: &str) -> Duration {
    let start = Instant::now();
    pods.delete(name, &DeleteParams::default())
        .await
        .expect("delete pod");
    wait("the pod to be gone", || async {
        pods.get_opt(name).await.is_ok_and(|p| p.is_none())
    })
    .await;
    start.elapsed()
}

/// A namespace enforcing the `restricted` Pod Security level: a root pod is refused; a pod
/// that complies (non-root, no capability, no privilege escalation, RuntimeDefault seccomp)
/// runs the whittle sensor, which picks its seccomp user-notification monitor (installed on top
/// of containerd's RuntimeDefault filter) and POSTs its report to the node.
async fn restricted_sensor(c: &Cluster, instrumented: &str) {
    let (client, ns) = namespace(
        c,
        "restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let refused = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(busybox_pod("root", instrumented, "true")).expect("pod"),
        )
        .await
        .expect_err("a root pod with default security is refused");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    let listener = c.listen(0).expect("report listener");
    let port = listener.local_addr().expect("address").port();
    let receiver = std::thread::spawn(move || receive_one_post(listener));

    let mut pod = busybox_pod(
        "sensor",
        instrumented,
        "cat /etc/passwd > /dev/null; ls /www; grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status",
    );
    // The instrumented entrypoint is `sensor --` (busybox has none of its own): the command
    // goes in args, which replace the image's Cmd as they would for the original.
    let container = &mut pod["spec"]["containers"][0];
    container["args"] = container["command"].take();
    container
        .as_object_mut()
        .expect("container")
        .remove("command");
    pod["spec"]["securityContext"] = json!({
        "runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"}
    });
    pod["spec"]["containers"][0]["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]}
    });
    pod["spec"]["containers"][0]["env"] = json!([
        {"name": "WHITTLE_REPORT_URL", "value": format!("http://{NODE_IP}:{port}/report")}
    ]);
    create::<Pod>(&client, &ns, pod).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    wait_phase(&pods, "sensor", "Succeeded").await;
    let out = logs(&pods, "sensor").await;
    assert!(
        out.contains("Seccomp:\t2"),
        "RuntimeDefault seccomp filter on:\n{out}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "no capability:\n{out}"
    );
    assert!(out.contains("index.html"), "{out}");

    let (path, body) = tokio::task::spawn_blocking(move || receiver.join())
        .await
        .expect("join")
        .expect("receiver thread");
    assert_eq!(path, "/report");
    let report = Report::from_json_slice(&body).expect("a valid report");
    assert_eq!(report.mode, Mode::Seccomp);
    assert_eq!(report.loss.ptrace_unresolved, 0, "every path read");
    assert!(
        report.existing_paths().any(|p| p == "/etc/passwd"),
        "the report names /etc/passwd"
    );
}

/// Accepts one HTTP POST (the sensor's report), answers 200 and returns the path and the
/// body (gunzipped when the sensor compressed it).
fn receive_one_post(listener: TcpListener) -> (String, Vec<u8>) {
    listener.set_nonblocking(false).expect("blocking");
    let (stream, _) = listener.accept().expect("accept");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("request line");
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (mut length, mut gzip) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().expect("length"),
            "content-encoding" => gzip = value.trim() == "gzip",
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("respond");
    if gzip {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("gunzip");
        body = plain;
    }
    (path, body)
}

async fn job_completes(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "job", &[]).await;
    create::<Job>(
        &client,
        &ns,
        json!({"metadata": {"name": "once"}, "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": busybox, "command": ["echo", "job done"]}]}}}}),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    wait("the Job to complete", || async {
        jobs.get_opt("once")
            .await
            .ok()
            .flatten()
            .and_then(|j| j.status?.succeeded)
            == Some(1)
    })
    .await;
}

async fn host_network(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "hostnet", &[]).await;
    let mut pod = busybox_pod("hostnet", busybox, "httpd -f -p 18080 -h /www");
    pod["spec"]["hostNetwork"] = json!(true);
    pod["spec"]["containers"][0]["readinessProbe"] =
        json!({"tcpSocket": {"port": 18080}, "periodSeconds": 1});
    create::<Pod>(&client, &ns, pod).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    wait("the hostNetwork pod to be Ready", || async {
        pods.get_opt("hostnet")
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status?.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    let pod = pods.get("hostnet").await.expect("pod");
    assert_eq!(
        pod.status.and_then(|s| s.pod_ip).as_deref(),
        Some(NODE_IP.to_string().as_str()),
        "a hostNetwork pod has the node's address"
    );
    let netns = c.netns_path();
    let stream = whittle_testbed::net::netns::in_netns(&netns, || {
        std::net::TcpStream::connect((NODE_IP, 18080))
    })
    .expect("connect to the hostNetwork pod");
    let response = whittle_testbed::net::http::get(stream, "node", "/index.html").expect("GET");
    assert_eq!(response.status, 200);
}
