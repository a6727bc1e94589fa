//! The operator on a real cluster (control plane, kubelet + containerd node, registry): the
//! `whittle operator` binary runs in the cluster's network namespace, where pods reach its
//! report port on the node IP, and reconciles real workflows. The scenarios share one cluster
//! and one operator, each in a namespace of its own, and run concurrently:
//! - `examples/nginx` goes from apply to Succeeded; the hardened image, run by the node, serves
//!   `GET /` like the original;
//! - a workload under Pod Security `restricted` (non-root, no capability, RuntimeDefault
//!   seccomp) whose pod overrides its entrypoint is instrumented with the default sensorMode
//!   (auto, which picks the seccomp monitor there), reports, and is hardened;
//! - a workflow deleted mid-observation leaves the Deployment's pod template exactly as it was,
//!   and its token Secret and report ConfigMaps are gone;
//! - a pod killed without grace never reports: Failed after collectTimeout, naming that pod,
//!   the Deployment restored;
//! - `examples/include-ptrace` keeps all of /etc/nginx but the excluded charset maps (read
//!   back from the registry with skopeo); `examples/promote` leaves the Deployment on the hardened
//!   image, a zstd one (OCI tar+zstd) that the node's containerd runs;
//! - `examples/supply-chain`: the hardened image's SBOM attached as a referrer, vulnerabilities
//!   counted against the OSV fixture (a database the operator is configured with by name), the
//!   image and its provenance signed with the Secret's key (checked by the real cosign);
//! - a workflow naming a vulnerability database the operator was not configured with fails at
//!   once with `VulnerabilityDatabaseUnknown`, listing the configured names;
//! - `examples/exercise`: an exercise Job runs against the instrumented original and again
//!   against the hardened rollout, which passes verification (and the restricted workload is
//!   promoted: its Deployment keeps the hardened image);
//! - a hardened image that fails its readiness probe is rolled back: Failed, the probe's failure
//!   in status.verification and an Event, the pod template restored;
//! - the registry stopped mid-workflow: retried with Events, then Failed naming the registry
//!   after harden.timeout, the Deployment restored, nothing under the hardened tag;
//! - the registry gone before instrumenting: Failed naming it after harden.timeout, the
//!   Deployment never touched;
//! - a user's scale and env edit made while instrumented survive the restore, with an Event;
//! - a user's own `capabilities.add` is kept beside fanotify's SYS_ADMIN while instrumented,
//!   and is back as it was after the restore;
//! - a succeeded Job named `<workflow>-verify` that the workflow did not make does not pass
//!   verification: Failed, ExerciseJobConflict, the Job left alone;
//! - a Deployment Argo CD applied (its field manager owns the pod template) is left alone:
//!   Pending and Stalled with `GitOpsManaged` and a Warning Event, until `gitOps: Proceed`,
//!   then hardened.
//! - nginx with an exec readiness probe running a binary nginx never uses (md5sum) and a
//!   `preStop` exec hook running a shell script (`which`, through its alternatives link): both
//!   are observed through the sensor's `exec` wrapper, kept, and the hardened image verifies;
//!   the Deployment gets its own probe and hook commands back;
//! - the same with the probe's binary excluded from the hardened image (what happens without
//!   the wrapping): verification fails at once with `ProbeCommandMissing` and kubelet's
//!   words, long before `verify.timeout`.
//!
//! The CRD and the RBAC come from `helm install` of the chart, and the operator runs with the
//! chart's ServiceAccount token, so each scenario also checks that those permissions suffice.
//!
//! Killing the operator in every phase and leader election are in `operator_resilience.rs`.
//! Schema validation and the report intake's refusals are tested in `api_schema.rs` and
//! `report_intake.rs`, against the same real API server.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ExecAction, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use whittle::api::{HardeningWorkflow, Phase, VerificationResult};
use whittle_testbed::cluster::{Cluster, NODE_IP};
use whittle_testbed::images::fixtures;

use support::layers::hardened_layer;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn workflows_run_on_a_real_cluster() {
    // The CRD and the operator's permissions come from the Helm chart: every scenario below
    // also proves that the chart's least-privilege RBAC is enough.
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let registry = cluster.registry().host();
    fixtures::nginx()
        .expect("nginx fixture")
        .push(cluster.registry(), "whittle-examples/nginx:1")
        .expect("push nginx");
    let busybox_fixture = fixtures::busybox(None).expect("busybox fixture");
    let busybox = busybox_fixture
        .push(cluster.registry(), "shop/busybox:1")
        .expect("push busybox");
    busybox_fixture
        .push(cluster.registry(), "whittle-examples/busybox:1")
        .expect("push busybox for the examples");
    let mut outage = cluster.start_registry(false).expect("a registry to stop");
    let outage_image = busybox_fixture
        .push(&outage, "outage/busybox:1")
        .expect("push busybox to the registry that stops");
    let mut gone = cluster
        .start_registry(false)
        .expect("a registry that is gone");
    let gone_image = busybox_fixture
        .push(&gone, "gone/busybox:1")
        .expect("push busybox to the registry that goes");
    // The OSV fixture is the one database the admin configured, under a name.
    let osv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv");
    let vuln_db = format!("osv-fixture={}", osv.display());
    let operator = Operator::start_as(&cluster, kubeconfig, &["--vuln-db", &vuln_db], None);

    let c = &cluster;
    // Each scenario on the heap: joined inline, their states overflow a test thread's stack
    // in a debug build.
    let outcome = tokio::time::timeout(Duration::from_secs(900), async {
        tokio::join!(
            timed("examples/nginx", Box::pin(nginx_example(c, &registry))),
            timed(
                "examples/exercise",
                Box::pin(exercise_example(c, &registry))
            ),
            timed(
                "examples/include-ptrace",
                Box::pin(include_example(c, &registry))
            ),
            timed("examples/promote", Box::pin(promote_example(c, &registry))),
            timed(
                "examples/supply-chain",
                Box::pin(supply_chain_example(c, &registry))
            ),
            timed(
                "an unknown vulnerability database",
                Box::pin(unknown_vulnerability_database(c))
            ),
            timed(
                "restricted, auto (seccomp), promoted",
                Box::pin(restricted_workload(c, &busybox))
            ),
            timed(
                "deleted mid-observation",
                Box::pin(deleted_mid_observation(c, &busybox))
            ),
            timed(
                "a pod that never reports",
                Box::pin(silent_pod(c, &busybox))
            ),
            timed(
                "hardened image not ready",
                Box::pin(readiness_rollback(c, &busybox))
            ),
            timed(
                "registry outage",
                Box::pin(registry_outage(c, &mut outage, &outage_image))
            ),
            timed("user edits kept", Box::pin(user_edits_kept(c, &busybox))),
            timed(
                "a foreign verify Job",
                Box::pin(foreign_verify_job(c, &busybox))
            ),
            timed(
                "a Deployment Argo CD keeps in line",
                Box::pin(gitops_managed(c, &busybox))
            ),
            timed(
                "exec probe and preStop hook kept",
                Box::pin(exec_probe_and_hook(c, false))
            ),
            timed(
                "a probe command the hardened image lacks",
                Box::pin(exec_probe_and_hook(c, true))
            ),
            timed(
                "registry gone before instrumenting",
                Box::pin(registry_gone(c, &mut gone, &gone_image))
            ),
        )
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the scenarios did not finish in 900s; operator log:\n{}",
        operator.log()
    );

    // /metrics counts the verdicts and the rollbacks of the scenarios above.
    let (code, body) = get_from_node(c, &NODE_IP.to_string(), operator.port(), "/metrics");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 200);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("whittle_verifications_total{result=\"passed\"}") >= 4.0,
        "{text}"
    );
    assert!(
        value("whittle_verifications_total{result=\"failed\"}") >= 1.0,
        "{text}"
    );
    assert!(
        value("whittle_rollbacks_total{reason=\"ReadinessFailed\"}") >= 1.0,
        "{text}"
    );
}

/// `examples/include-ptrace`: all of /etc/nginx kept beside what the ptrace sensor saw, but
/// the excluded charset maps.
async fn include_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "include", &[]).await;
    deploy_nginx_example(&client, &ns, registry).await;
    let w = example_succeeds(
        &client,
        &ns,
        "examples/include-ptrace/workflow.yaml",
        registry,
        "nginx-include",
    )
    .await;
    let hardened = w
        .status
        .and_then(|s| s.hardened_image)
        .expect("status.hardenedImage");
    let files = hardened_files(&hardened);
    for kept in [
        "etc/nginx/fastcgi_params",
        "etc/nginx/win-utf",
        "etc/nginx/nginx.conf",
    ] {
        assert!(files.contains(kept), "{kept} is included: {files:?}");
    }
    assert!(!files.contains("etc/nginx/koi-utf"), "excluded: {files:?}");

    // The tools admins wait with see success at once.
    let started = Instant::now();
    let (ok, out) = kstatus::kubectl(
        c,
        &ns,
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=10s",
            "hardeningworkflow/nginx-include",
        ],
    );
    assert!(ok, "kubectl wait --for=condition=Ready: {out}");
    eprintln!(
        "kubectl wait --for=condition=Ready returned in {:.1?}",
        started.elapsed()
    );
    assert_eq!(kstatus::kstatus(c, &ns, "nginx-include").0, "Current");
}

/// `examples/supply-chain`: SBOM referrer, vulnerability counts and a cosign signature in the
/// status, with the OSV fixture (configured on the operator as `osv-fixture`, a path) instead of
/// osv.dev's database.
async fn supply_chain_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "evidence", &[]).await;
    deploy_nginx_example(&client, &ns, registry).await;
    let key = whittle::evidence::sign::SigningKey::generate().expect("key");
    let pem = key.to_pkcs8_pem().expect("pem").to_string();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cosign-key"},
        "stringData": {"cosign.key": pem},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the key Secret");
    let mut w = example("examples/supply-chain/workflow.yaml", registry);
    w["spec"]["vulnerabilities"]["db"] = json!("osv-fixture");
    apply(&client, &ns, &w).await;
    let status = wait_phase(&client, &ns, "nginx-evidence", Phase::Succeeded)
        .await
        .status
        .expect("status");
    let hardened = status.hardened_image.clone().expect("status.hardenedImage");
    assert_eq!(
        status.reports.as_ref().map(|r| r.modes.clone()),
        Some(vec!["seccomp".to_string()]),
        "sensorMode: seccomp"
    );
    // tests/data/osv/SOURCES.md: dpkg's and tar's findings go, glibc's stay.
    let v = status
        .vulnerabilities
        .clone()
        .expect("status.vulnerabilities");
    assert_eq!(
        (v.before.total, v.after.total, v.removed),
        (4, 2, 2),
        "{v:?}"
    );
    let sbom = status.sbom.clone().expect("status.sbom");
    assert!(sbom.contains("@sha256:"), "{sbom}");
    let signature = status.signature.clone().expect("status.signature");
    assert!(signature.contains(".sig@sha256:"), "{signature}");
    assert!(
        status
            .provenance
            .as_deref()
            .is_some_and(|p| p.contains(".att@sha256:"))
    );
    let dir = tempfile::tempdir().expect("tmp");
    let public = dir.path().join("cosign.pub");
    fs::write(&public, key.public_key_pem()).expect("write the public key");
    let cosign = support::cosign::Cosign::new();
    let out = cosign.verify(&public, &hardened);
    assert!(
        out.status.success(),
        "cosign verify {hardened}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cosign.verify_attestation(&public, "slsaprovenance", &hardened);
    assert!(
        out.status.success(),
        "cosign verify-attestation {hardened}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The printer column reads the removed count.
    let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig", c.kubeconfig().to_str().expect("utf-8")])
        .args([
            "get",
            "hw",
            "-n",
            &ns,
            "nginx-evidence",
            "-o",
            "custom-columns=REMOVED:.status.vulnerabilities.removed",
        ])
        .output()
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().nth(1).map(str::trim), Some("2"), "{table}");
}

/// A workflow naming a database the admin did not configure fails at once, before its
/// Deployment is touched (there is none), and the reason lists the configured names.
async fn unknown_vulnerability_database(c: &Cluster) {
    let (client, ns) = namespace(c, "unknown-db", &[]).await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "vulnerabilities": {"db": "ubuntu"}}),
    )
    .await;
    let failed = wait_failed(&client, &ns, "web").await;
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "spec.vulnerabilities.db: the operator has no vulnerability database named \"ubuntu\"; the configured ones are osv-fixture (the operator's admin configures them)"
        ),
        "{failed:?}"
    );
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.reason, "VulnerabilityDatabaseUnknown", "{failed:?}");

    // kstatus (Flux's `wait: true`, kpt) sees a failure, not a run in progress forever, and
    // `kubectl wait` can wait for it.
    kstatus::assert_stalled(c, &ns, "web", "spec.vulnerabilities.db:");
}

/// `examples/promote`: the Deployment stays on the hardened image and serves from it.
async fn promote_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "promote", &[]).await;
    deploy_nginx_example(&client, &ns, registry).await;
    let w = example_succeeds(
        &client,
        &ns,
        "examples/promote/workflow.yaml",
        registry,
        "nginx-promoted",
    )
    .await;
    let hardened = w
        .status
        .and_then(|s| s.hardened_image)
        .expect("status.hardenedImage");
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("nginx")
        .await
        .expect("deployment");
    let spec = d.spec.template.spec.expect("pod spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some(hardened.as_str()));
    // harden.compression: zstd, which the node's containerd pulls and runs below.
    let layer = hardened_layer(&hardened);
    assert_eq!(layer.media_type, support::layers::ZSTD);
    layer.assert_no_larger_than_gzip6();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for("a ready pod of the promoted nginx", || async {
        pods.list(&ListParams::default().labels("app=nginx"))
            .await
            .is_ok_and(|l| {
                l.items.iter().any(|p| {
                    let runs = p.spec.as_ref().is_some_and(|s| {
                        s.containers[0].image.as_deref() == Some(hardened.as_str())
                    });
                    let ready = p.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    runs && ready
                })
            })
    })
    .await;
}

async fn nginx_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "nginx", &[]).await;
    deploy_nginx_example(&client, &ns, registry).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let original_ip = ready_pod_ip(&pods, "app=nginx").await;
    let original = get_from_node(c, &original_ip, 80, "/");
    assert_eq!(original.0, 200);

    let (hardened, status) = nginx_example_hardened(&client, &ns, registry).await;
    let result = status.result.expect("status.result");
    eprintln!("examples/nginx: {hardened}, {result:?}");
    let files = hardened_files(&hardened);
    assert!(files.contains("etc/nginx/nginx.conf"), "{files:?}");
    assert!(
        !files.contains("etc/nginx/win-utf"),
        "nginx never reads its charset maps, so only examples/include-ptrace keeps one"
    );
    assert!(result.hardened_bytes < result.source_bytes, "{result:?}");
    assert!(result.removed_shells > 0, "{result:?}");
    let reports = status.reports.expect("reports");
    assert_eq!(reports.received, 1);
    assert_eq!(reports.modes, ["seccomp"], "auto picks seccomp on the node");

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
                 "observe": {"duration": "5s", "collectTimeout": "1m"}, "promote": true}
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
        "auto mode adds no capability"
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
    let reports = status.reports.expect("reports");
    assert_eq!(reports.received, 1, "the sensor reported under restricted");
    assert_eq!(
        reports.modes,
        ["seccomp"],
        "sensorMode auto (the default) picks the seccomp monitor under RuntimeDefault"
    );
    let hardened = status.hardened_image.expect("hardenedImage");
    assert_eq!(
        status.verification.map(|v| v.result),
        Some(VerificationResult::Passed)
    );

    // Promoted: the Deployment keeps the hardened image, free of whittle's annotation, and a
    // ready pod runs it under restricted.
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .expect("deployment");
    assert!(!d.annotations().contains_key("whittle.dev/original"));
    let c = &d.spec.template.spec.as_ref().expect("pod spec").containers[0];
    assert_eq!(c.image.as_deref(), Some(hardened.as_str()));
    assert_eq!(
        c.command.as_deref().map(|c| c[0].as_str()),
        Some("httpd"),
        "the user's command, unwrapped"
    );
    wait_for("a ready pod of the promoted image", || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| {
                l.items.iter().any(|p| {
                    let runs = p.spec.as_ref().is_some_and(|s| {
                        s.containers[0].image.as_deref() == Some(hardened.as_str())
                    });
                    let ready = p.status.as_ref().is_some_and(|s| {
                        s.container_statuses
                            .as_ref()
                            .is_some_and(|c| c.iter().all(|c| c.ready))
                    });
                    runs && ready && p.metadata.deletion_timestamp.is_none()
                })
            })
            .unwrap_or(false)
    })
    .await;
}

/// examples/exercise: the nginx Deployment with an exercise Job (busybox wget) that runs
/// against the instrumented original, then against the hardened rollout.
async fn exercise_example(c: &Cluster, registry: &str) {
    let (client, ns) = namespace(c, "exercise", &[]).await;
    for file in ["nginx/deployment.yaml", "nginx/service.yaml"] {
        apply(
            &client,
            &ns,
            &example(&format!("examples/{file}"), registry),
        )
        .await;
    }
    let before = template(&client, &ns, "nginx").await;
    let w = example_succeeds(
        &client,
        &ns,
        "examples/exercise/workflow.yaml",
        registry,
        "nginx-exercised",
    )
    .await;
    let status = w.status.expect("status");
    let verification = status.verification.expect("status.verification");
    assert_eq!(verification.result, VerificationResult::Passed);
    assert!(
        verification.message.contains("exercise passed"),
        "{verification:?}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Verified" && c.status == "True")
    );
    assert_eq!(
        jobs(&client, &ns, "nginx-exercised").await,
        ["nginx-exercised-observe", "nginx-exercised-verify"]
    );
    let reasons: Vec<String> = events(&client, &ns, "nginx-exercised")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for wanted in [
        "ExerciseStarted",
        "RolledOutHardened",
        "Verified",
        "Succeeded",
    ] {
        assert!(reasons.iter().any(|r| r == wanted), "{wanted}: {reasons:?}");
    }
    assert_eq!(
        template(&client, &ns, "nginx").await,
        before,
        "promote is off: the original template is back"
    );
}

/// The hardened image lacks the page the readiness probe asks for (`harden.exclude`): its pod
/// never becomes ready, the workflow fails with the probe's words, the original comes back.
async fn readiness_rollback(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "notready", &[]).await;
    deploy_busybox_web(&client, &ns, busybox, 1).await;
    let before = template(&client, &ns, "web").await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "3s", "collectTimeout": "1m"},
                     "harden": {"exclude": ["/www/index.html"]},
                     "verify": {"timeout": "20s"}}),
    )
    .await;
    let failed = wait_failed(&client, &ns, "web").await;
    let v = failed
        .verification
        .clone()
        .unwrap_or_else(|| panic!("no status.verification: {:?}", failed.message));
    assert_eq!(
        (v.result, v.reason.as_str()),
        (VerificationResult::Failed, "ReadinessFailed"),
        "{v:?}"
    );
    assert!(
        v.pod.is_some() && v.container.as_deref() == Some("web"),
        "{v:?}"
    );
    assert!(
        v.message.contains("Readiness probe failed") && v.message.contains("404"),
        "the probe's failure is named: {}",
        v.message
    );
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "ReadinessFailed");
    assert!(
        events(&client, &ns, "web")
            .await
            .iter()
            .any(|(r, m)| r == "Failed" && m.contains("Readiness probe failed")),
        "a Warning Event says why"
    );
    assert_eq!(
        template(&client, &ns, "web").await,
        before,
        "rolled back to the original pod template"
    );
}

/// The registry goes away while the workload is observed: hardening cannot reach it, is
/// retried (Events say so), and fails after harden.timeout naming the registry; the Deployment
/// is restored and nothing was pushed under the hardened tag.
async fn registry_outage(
    c: &Cluster,
    registry: &mut whittle_testbed::images::registry::Registry,
    image: &str,
) {
    let (client, ns) = namespace(c, "outage", &[]).await;
    deploy_busybox_web(&client, &ns, image, 1).await;
    let before = template(&client, &ns, "web").await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "8s", "collectTimeout": "1m"},
                     "harden": {"timeout": "20s"}}),
    )
    .await;
    wait_phase(&client, &ns, "web", Phase::Observing).await;
    let host = registry.host();
    registry.stop();
    let failed = wait_failed(&client, &ns, "web").await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("20s") && message.contains(&host),
        "the reason names the registry and the limit: {message}"
    );
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "Timeout");
    assert!(
        events(&client, &ns, "web")
            .await
            .iter()
            .any(|(r, m)| r == "Retrying" && m.contains(&host)),
        "Events say that whittle retried"
    );
    assert_eq!(template(&client, &ns, "web").await, before);
    let tags = registry
        .storage()
        .join("docker/registry/v2/repositories/outage/busybox/_manifests/tags");
    assert!(
        tags.join("1").exists(),
        "the source tag is where the test looks"
    );
    assert!(
        !tags.join("1-whittle-hardened").exists(),
        "nothing was pushed under the hardened tag"
    );
}

/// The registry is gone before the workflow starts (the node still has the image): pushing the
/// instrumented image is retried, then fails after harden.timeout; the Deployment was never
/// changed.
async fn registry_gone(
    c: &Cluster,
    registry: &mut whittle_testbed::images::registry::Registry,
    image: &str,
) {
    let (client, ns) = namespace(c, "gone", &[]).await;
    deploy_busybox_web(&client, &ns, image, 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    ready_pod_ip(&pods, "app=web").await;
    let before = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .expect("deployment");
    let host = registry.host();
    registry.stop();
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "harden": {"timeout": "15s"}}),
    )
    .await;
    let failed = wait_failed(&client, &ns, "web").await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("Instrumenting gave up after 15s") && message.contains(&host),
        "the reason names the registry: {message}"
    );
    assert!(
        events(&client, &ns, "web")
            .await
            .iter()
            .any(|(r, m)| r == "Retrying" && m.contains(&host)),
        "Events say that whittle retried"
    );
    let after = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .expect("deployment");
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the Deployment was never changed"
    );
}

/// While the workload is instrumented (fanotify), its owner scales it and adds an env var: the
/// restore gives back only whittle's fields, the edits stay, and an Event names who made them.
/// The user's own capability, kept beside SYS_ADMIN while instrumented, is the user's again
/// after verification and the restore.
async fn user_edits_kept(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "edits", &[]).await;
    let (mut deployment, service) = busybox_web(busybox, 1);
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"capabilities": {"add": ["NET_BIND_SERVICE"]}});
    apply(&client, &ns, &deployment).await;
    apply(&client, &ns, &service).await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "20s", "collectTimeout": "1m", "sensorMode": "fanotify"}}),
    )
    .await;
    wait_phase(&client, &ns, "web", Phase::Observing).await;
    // A second later than whittle's apply: managedFields times have a resolution of 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("user-edit".into()),
                ..Default::default()
            },
            &Patch::Strategic(json!({"spec": {"replicas": 2, "template": {"spec": {
                "containers": [{"name": "web", "env": [{"name": "EXTRA", "value": "kept"}]}]}}}})),
        )
        .await
        .expect("the user's edit");
    wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let d = deployments.get("web").await.expect("deployment");
    assert_eq!(d.spec.replicas, Some(2), "the scale is kept");
    let c = &d.spec.template.spec.as_ref().expect("pod spec").containers[0];
    assert_eq!(c.image.as_deref(), Some(busybox));
    let env: Vec<(String, Option<String>)> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env,
        [("EXTRA".to_string(), Some("kept".to_string()))],
        "the user's env var stays, whittle's are gone"
    );
    assert_eq!(
        c.security_context
            .clone()
            .and_then(|s| s.capabilities)
            .and_then(|c| c.add)
            .as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..]),
        "the user's capability is back, whittle's SYS_ADMIN gone"
    );
    assert!(
        events(&client, &ns, "web")
            .await
            .iter()
            .any(|(r, m)| r == "UserChangesKept" && m.contains("user-edit")),
        "an Event says the edit was kept"
    );
}

/// A Deployment applied by Argo CD's field manager: the workflow changes nothing and stalls
/// with `GitOpsManaged` (kstatus and `kubectl wait` see it, an Event says what to do) until the
/// user says the tool was told to leave whittle's fields alone.
async fn gitops_managed(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "gitops", &[]).await;
    let (deployment, service) = busybox_web(busybox, 1);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "web",
            &PatchParams::apply("argocd-controller").force(),
            &Patch::Apply(&deployment),
        )
        .await
        .expect("apply as Argo CD");
    apply(&client, &ns, &service).await;
    let generation = deployments
        .get("web")
        .await
        .expect("web")
        .metadata
        .generation;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "observe": {"duration": "10s", "collectTimeout": "1m"},
               "verify": {"enabled": false}}),
    )
    .await;
    wait_for("the GitOpsManaged wait", || async {
        status(&client, &ns, "web")
            .await
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.reason == "GitOpsManaged")
    })
    .await;
    kstatus::assert_stalled(c, &ns, "web", "Deployment ");
    let (_, message) = kstatus::kstatus(c, &ns, "web");
    assert!(message.contains("argocd-controller"), "{message}");
    let events = events(&client, &ns, "web").await;
    assert!(
        events.iter().any(|(r, m)| r == "GitOpsManaged"
            && m.contains("managedFieldsManagers: [whittle]")
            && m.contains("spec.target.gitOps: Proceed")),
        "{events:?}"
    );
    let d = deployments.get("web").await.expect("web");
    assert_eq!(d.metadata.generation, generation, "nothing was changed");
    assert!(!d.annotations().contains_key("whittle.dev/original"));

    let workflows: Api<HardeningWorkflow> = Api::namespaced(client.clone(), &ns);
    workflows
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": {"gitOps": "Proceed"}}})),
        )
        .await
        .expect("gitOps: Proceed");
    wait_phase(&client, &ns, "web", Phase::Succeeded).await;
}

/// nginx whose readiness probe and `preStop` hook are exec commands nginx itself never runs.
/// They are observed through the sensor's `exec` wrapper and kept, unless `probe_excluded`
/// takes the probe's binary out of the hardened image: then verification fails at once.
async fn exec_probe_and_hook(c: &Cluster, probe_excluded: bool) {
    let prefix = if probe_excluded {
        "probe-missing"
    } else {
        "probes"
    };
    let (client, ns) = namespace(c, prefix, &[]).await;
    let image = fixtures::nginx()
        .expect("nginx fixture")
        .push(c.registry(), &format!("{prefix}/nginx:1"))
        .expect("push nginx");
    let probe = json!(["/usr/bin/md5sum", "/etc/debian_version"]);
    let hook = json!(["/bin/sh", "-c", "which nginx > /dev/null"]);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 20,
                "containers": [{"name": "web", "image": image,
                    "readinessProbe": {"exec": {"command": probe}, "periodSeconds": 1},
                    "lifecycle": {"preStop": {"exec": {"command": hook}}}}]}}}
    });
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    apply(&client, &ns, &deployment).await;
    apply(&client, &ns, &service).await;
    let exclude = if probe_excluded {
        json!(["/usr/bin/md5sum"])
    } else {
        json!([])
    };
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "observe": {"duration": "15s", "collectTimeout": "2m"},
               "harden": {"exclude": exclude}, "verify": {"timeout": "5m"}}),
    )
    .await;
    if probe_excluded {
        wait_phase(&client, &ns, "web", Phase::Verifying).await;
        let verifying = Instant::now();
        let failed = wait_failed(&client, &ns, "web").await;
        let took = verifying.elapsed();
        let v = failed.verification.expect("status.verification");
        assert_eq!(v.reason, "ProbeCommandMissing", "{v:?}");
        assert!(v.message.contains("/usr/bin/md5sum"), "{v:?}");
        assert!(
            took < Duration::from_secs(150),
            "at once, not after 5m: {took:?}"
        );
    } else {
        let w = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
        let status = w.status.expect("status");
        let files = hardened_files(status.hardened_image.as_deref().expect("hardened"));
        for kept in [
            "usr/bin/md5sum",
            "etc/debian_version",
            "usr/bin/dash",
            "usr/bin/which.debianutils",
            "etc/alternatives/which",
        ] {
            assert!(files.contains(kept), "{kept} not kept: {files:?}");
        }
    }
    let pod = template(&client, &ns, "web").await.spec.expect("pod spec");
    let c = pod.containers[0].clone();
    let command = |h: Option<ExecAction>| h.and_then(|e| e.command).map(|c| json!(c));
    let readiness = c.readiness_probe.and_then(|p| p.exec);
    assert_eq!(command(readiness), Some(probe), "the user's probe is back");
    let pre_stop = c.lifecycle.and_then(|l| l.pre_stop).and_then(|h| h.exec);
    assert_eq!(command(pre_stop), Some(hook), "the user's hook is back");
}

/// Deleted while observed in fanotify mode: the whole pod template comes back, the user's own
/// capabilities included.
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
                    "env": [{"name": "GREETING", "value": "hello"}],
                    "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}]}}}
    });
    apply(&client, &ns, &deployment).await;
    let before = template(&client, &ns, "web").await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "10m", "sensorMode": "fanotify"}}),
    )
    .await;
    wait_phase(&client, &ns, "web", Phase::Observing).await;
    assert_eq!(kstatus::kstatus(c, &ns, "web").0, "InProgress");
    let during = template(&client, &ns, "web").await;
    assert_ne!(during, before, "instrumented");
    // capabilities.add is an atomic list: applied with fanotify's SYS_ADMIN alone, it would
    // replace the user's entries, and be removed at the restore.
    let added = during
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].security_context.clone())
        .and_then(|s| s.capabilities)
        .and_then(|c| c.add);
    assert_eq!(
        added.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string(), "SYS_ADMIN".into()][..]),
        "the user's capability stays beside the one fanotify needs"
    );
    // The report token is derived from the operator's key: no Secret per workflow.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let made = secrets
        .list(&ListParams::default().labels("whittle.dev/workflow"))
        .await
        .expect("list Secrets")
        .items;
    assert!(made.is_empty(), "whittle made Secrets: {made:?}");

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
    wait_for("the report ConfigMaps to be gone", || async {
        let reports = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("whittle.dev/workflow"))
            .await
            .map(|l| l.items.len())
            .unwrap_or(1);
        reports == 0
    })
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
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
                     "observe": {"duration": "20s", "minReports": 2, "collectTimeout": "15s"}}),
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

/// Someone made a Job named `web-verify` before the workflow, labelled as whittle's, and it
/// succeeded: the name and labels are anyone's to choose, so the workflow does not take it for
/// its verification. It fails naming the Job, restores the Deployment and leaves the Job alone.
async fn foreign_verify_job(c: &Cluster, busybox: &str) {
    let (client, ns) = namespace(c, "foreignjob", &[]).await;
    deploy_busybox_web(&client, &ns, busybox, 1).await;
    let before = template(&client, &ns, "web").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let planted: Job = serde_json::from_value(json!({
        "metadata": {"name": "web-verify", "labels": {"app.kubernetes.io/managed-by": "whittle",
            "whittle.dev/workflow": "web", "whittle.dev/exercise": "verify"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "pass", "image": busybox, "command": ["true"]}]}}}
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &planted)
        .await
        .expect("plant the Job");
    // Running, with whittle's labels: a failed workflow stops its own running Jobs, not this.
    let mut sleeper = planted.clone();
    sleeper.metadata.name = Some("web-sleeper".into());
    if let Some(pod) = sleeper.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.containers[0].command = Some(vec!["sleep".into(), "3600".into()]);
    }
    jobs.create(&PostParams::default(), &sleeper)
        .await
        .expect("plant a running Job");
    wait_for("the planted Job to succeed", || async {
        jobs.get("web-verify")
            .await
            .is_ok_and(|j| j.status.and_then(|s| s.succeeded) == Some(1))
    })
    .await;
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "observe": {"duration": "2s", "collectTimeout": "1m"},
               "exercise": busybox_exercise(busybox)}),
    )
    .await;
    let failed = wait_failed(&client, &ns, "web").await;
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    let message = failed.message.clone().unwrap_or_default();
    assert_eq!(ready.reason, "ExerciseJobConflict", "{message}");
    assert!(
        message.contains(&format!("Job {ns}/web-verify exists")),
        "{message}"
    );
    assert!(
        failed
            .verification
            .as_ref()
            .is_none_or(|v| v.result != VerificationResult::Passed),
        "{:?}",
        failed.verification
    );
    assert!(
        jobs.get_opt("web-verify")
            .await
            .expect("get Job")
            .is_some_and(|j| j.metadata.owner_references.is_none()),
        "the planted Job is not whittle's to adopt or delete"
    );
    assert!(
        jobs.get_opt("web-sleeper")
            .await
            .expect("get Job")
            .is_some_and(|j| j.metadata.deletion_timestamp.is_none()),
        "a running Job labelled as the workflow's but not owned by it is not stopped"
    );
    jobs.delete("web-sleeper", &DeleteParams::background())
        .await
        .expect("delete the running Job");
    assert_eq!(
        template(&client, &ns, "web").await,
        before,
        "the Deployment is restored"
    );
}
