//! `spec.target.containers` on a real cluster (control plane, kubelet + containerd node,
//! registry), with the operator holding exactly the chart's permissions. The scenarios share
//! the cluster and run concurrently:
//! - a pod with an app (nginx) and a log-tailing sidecar (busybox): each container gets its own
//!   sensor and report, each image is hardened to its own repository, the pod is verified as a
//!   whole through its Service, both containers are restored, and `status.containers` lists
//!   both;
//! - a pod running one image (busybox) in two containers, named with `["*"]`: one hardened
//!   image, built from both containers' reports, shared by both;
//! - an app (busybox httpd) with an init container on another image (nginx's, running md5sum
//!   over its config), both named: the init container reports when it exits, its hardened image
//!   keeps what it ran (md5sum and the config, not nginx), the hardened pod passes its init
//!   step, and the init container is restored in `initContainers`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use whittle::api::{HardeningWorkflowStatus, Phase};
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_named_container_is_hardened_verified_and_restored() {
    let (cluster, _kubeconfig, operator) = cluster_with_chart_operator(&[]).await;
    let c = &cluster;
    let outcome = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(
            timed("an app and a sidecar", Box::pin(app_and_sidecar(c))),
            timed("one image twice", Box::pin(one_image_twice(c))),
            timed("an init container", Box::pin(init_container(c))),
        )
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the scenarios did not finish in 600s; operator log:\n{}",
        operator.log()
    );
}

/// A sidecar that tails a log, as log shippers do: busybox's sh and tail.
fn tailer(image: &str) -> Value {
    json!({"name": "tail", "image": image,
           "command": ["sh", "-c", "touch /tmp/app.log; exec tail -f /tmp/app.log"]})
}

fn workflow_spec(containers: Value, exercise: Value) -> Value {
    json!({"target": {"name": "web", "containers": containers}, "registry": {"insecure": true},
           "observe": {"duration": "5s", "collectTimeout": "1m"},
           "exercise": exercise, "verify": {"timeout": "3m"}})
}

/// The containers of `web`'s pod template now: name and image.
async fn template_images(client: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let spec = template(client, ns, "web").await.spec.expect("pod spec");
    spec.containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

/// The images the containers of `web`'s pods run now, by pod.
async fn pod_images(client: &kube::Client, ns: &str) -> Vec<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let spec = p.spec?;
            Some(
                spec.containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect(),
            )
        })
        .collect()
}

/// `status.containers` as (name, hardened image).
fn hardened_by_container(status: &HardeningWorkflowStatus) -> Vec<(String, String)> {
    status
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.hardened_image.clone().unwrap_or_default()))
        .collect()
}

async fn app_and_sidecar(c: &Cluster) {
    let (client, ns) = namespace(c, "sidecar", &[]).await;
    let registry = c.registry().host();
    let nginx = fixtures::nginx()
        .expect("nginx fixture")
        .push(c.registry(), "sidecar/nginx:1")
        .expect("push nginx");
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "sidecar/busybox:1")
        .expect("push busybox");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [
                    {"name": "web", "image": nginx, "ports": [{"name": "http", "containerPort": 80}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}},
                    tailer(&busybox)]}}}
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}
    });
    support::apply(&client, &ns, &deployment).await;
    support::apply(&client, &ns, &service).await;
    let exercise = json!({"template": {"spec": {"containers": [{"name": "check", "image": busybox,
        "command": ["sh", "-c", "wget -q -O - http://$WHITTLE_TARGET/ | grep -q nginx"]}]}}});
    apply_workflow(
        &client,
        &ns,
        workflow_spec(json!(["web", "tail"]), exercise),
    )
    .await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");

    let reports = status.reports.clone().expect("reports");
    assert_eq!(reports.received, 2, "one report per container: {reports:?}");
    assert_eq!(reports.materials.len(), 2, "{reports:?}");
    assert!(
        status
            .verification
            .as_ref()
            .is_some_and(|v| v.reason == "Passed"),
        "{:?}",
        status.verification
    );
    let hardened = hardened_by_container(&status);
    let names: Vec<&str> = hardened.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web", "tail"], "{hardened:?}");
    let (app, sidecar) = (&hardened[0].1, &hardened[1].1);
    assert!(
        app.starts_with(&format!("{registry}/sidecar/nginx@sha256:")),
        "{app}"
    );
    assert!(
        sidecar.starts_with(&format!("{registry}/sidecar/busybox@sha256:")),
        "{sidecar}"
    );
    assert_eq!(
        status.hardened_image.as_ref(),
        Some(app),
        "the first, as before"
    );
    for entry in &status.containers {
        assert!(entry.result.is_some(), "{entry:?}");
        assert!(entry.instrumented_image.is_some(), "{entry:?}");
    }
    assert!(hardened_files(app).contains("usr/sbin/nginx"));
    assert!(hardened_files(sidecar).contains("bin/busybox"));

    assert_eq!(
        template_images(&client, &ns).await,
        [
            ("web".into(), nginx.clone()),
            ("tail".into(), busybox.clone())
        ],
        "both containers restored"
    );
    let spec = template(&client, &ns, "web").await.spec.expect("pod spec");
    for container in &spec.containers {
        let env = container.env.clone().unwrap_or_default();
        assert!(
            env.iter().all(|e| !e.name.starts_with("WHITTLE_")),
            "container {}: whittle's env is gone: {env:?}",
            container.name
        );
    }
    wait_for("the original pod back", || async {
        pod_images(&client, &ns).await == [vec![nginx.clone(), busybox.clone()]]
    })
    .await;
}

async fn one_image_twice(c: &Cluster) {
    let (client, ns) = namespace(c, "twice", &[]).await;
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "twice/busybox:1")
        .expect("push busybox");
    let (mut deployment, service) = busybox_web(&image, 1);
    let containers = &mut deployment["spec"]["template"]["spec"]["containers"];
    if let Some(list) = containers.as_array_mut() {
        list.push(tailer(&image));
    }
    support::apply(&client, &ns, &deployment).await;
    support::apply(&client, &ns, &service).await;
    let spec = workflow_spec(json!(["*"]), busybox_exercise(&image));
    apply_workflow(&client, &ns, spec).await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    let reports = status.reports.clone().expect("reports");
    assert_eq!(reports.received, 2, "{reports:?}");
    assert_eq!(
        reports.materials.len(),
        2,
        "one hardened image from both containers' reports: {reports:?}"
    );
    let hardened = hardened_by_container(&status);
    assert_eq!(hardened.len(), 2, "{hardened:?}");
    assert_eq!(
        hardened[0].1, hardened[1].1,
        "one image, one hardened image"
    );
    let files = hardened_files(&hardened[0].1);
    // httpd's files from the app's report, tail's from the sidecar's.
    assert!(files.contains("www/index.html"), "the app's");
    assert!(files.contains("bin/tail"), "the sidecar's");
    assert_eq!(
        template_images(&client, &ns).await,
        [
            ("web".into(), image.clone()),
            ("tail".into(), image.clone())
        ]
    );
}

async fn init_container(c: &Cluster) {
    let (client, ns) = namespace(c, "init", &[]).await;
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "init/busybox:1")
        .expect("push busybox");
    let nginx = fixtures::nginx()
        .expect("nginx fixture")
        .push(c.registry(), "init/nginx:1")
        .expect("push nginx");
    let (mut deployment, service) = busybox_web(&busybox, 1);
    // No shell: the init step runs one binary the app image's own entrypoint never starts.
    deployment["spec"]["template"]["spec"]["initContainers"] = json!([{"name": "setup",
        "image": nginx, "command": ["/usr/bin/md5sum", "/etc/nginx/nginx.conf"]}]);
    support::apply(&client, &ns, &deployment).await;
    support::apply(&client, &ns, &service).await;
    let spec = workflow_spec(json!(["web", "setup"]), busybox_exercise(&busybox));
    apply_workflow(&client, &ns, spec).await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    let reports = status.reports.clone().expect("reports");
    assert_eq!(
        reports.received, 2,
        "the app's and the init container's: {reports:?}"
    );
    assert!(
        status
            .verification
            .as_ref()
            .is_some_and(|v| v.reason == "Passed"),
        "{:?}",
        status.verification
    );
    let hardened = hardened_by_container(&status);
    let names: Vec<&str> = hardened.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web", "setup"], "{hardened:?}");
    let files = hardened_files(&hardened[1].1);
    assert!(files.contains("usr/bin/md5sum"), "what the init step ran");
    assert!(files.contains("etc/nginx/nginx.conf"), "what it read");
    assert!(
        !files.contains("usr/sbin/nginx"),
        "nginx never ran in the init container"
    );

    let restored = template(&client, &ns, "web").await.spec.expect("pod spec");
    let init = restored.init_containers.unwrap_or_default();
    assert_eq!(init.len(), 1, "{init:?}");
    assert_eq!(init[0].image.as_deref(), Some(nginx.as_str()));
    assert_eq!(
        init[0].command.as_deref(),
        Some(
            [
                "/usr/bin/md5sum".to_string(),
                "/etc/nginx/nginx.conf".to_string()
            ]
            .as_slice()
        ),
        "its own command back"
    );
    assert!(
        init[0]
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("WHITTLE_")),
        "whittle's env is gone"
    );
    assert!(init[0].volume_mounts.iter().flatten().next().is_none());
    assert_eq!(
        restored.containers[0].image.as_deref(),
        Some(busybox.as_str())
    );
}
