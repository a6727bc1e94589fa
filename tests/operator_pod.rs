//! The operator as a cluster admin runs it: its own image, assembled by `whittle
//! operator-image` from a static release build (as `make image` does), pushed to the cluster's
//! registry; the chart installed with the real helm using the README's commands; the operator a
//! pod on the real node (non-root, read-only root filesystem, no capability) that becomes ready
//! and reconciles `examples/nginx` to Succeeded, with the sensor it found in its own image.

mod support;

use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use whittle_testbed::binaries;
use whittle_testbed::cluster::Cluster;
use whittle_testbed::cluster::helm::Helm;
use whittle_testbed::images::fixtures;

use support::*;

fn whittle(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle");
    assert!(
        out.status.success(),
        "whittle {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installed_operator_hardens_examples_nginx() {
    let static_whittle = binaries::whittle_binary().expect("static whittle");
    let sensor = binaries::sensor_binary().expect("static sensor");
    let cluster = Cluster::start().await.expect("cluster");
    let registry = cluster.registry().host();
    fixtures::nginx()
        .expect("nginx fixture")
        .push(cluster.registry(), "whittle-examples/nginx:1")
        .expect("push nginx");

    // The image, as an OCI layout and in the registry.
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = format!("oci:{}:test", dir.path().join("image").display());
    let repo = format!("{registry}/whittle/operator");
    let printed = whittle(&[
        "operator-image",
        &layout,
        &format!("{repo}:test"),
        "--insecure",
        "--whittle",
        static_whittle.to_str().expect("utf-8"),
        "--sensor",
        sensor.to_str().expect("utf-8"),
    ]);
    let digest = printed
        .lines()
        .last()
        .and_then(|l| l.split('@').nth(1))
        .and_then(|d| d.split_whitespace().next())
        .expect("a digest in the output")
        .to_string();
    let inspected: Value =
        serde_json::from_str(&whittle(&["inspect", &layout, "--json"])).expect("inspect JSON");
    assert_eq!(inspected["shells"], serde_json::json!([]), "{inspected}");
    assert_eq!(
        inspected["packageManagers"],
        serde_json::json!([]),
        "{inspected}"
    );
    assert!(inspected["packageDatabase"].is_null(), "{inspected}");
    eprintln!(
        "operator image: {} bytes compressed, {} files",
        inspected["totalSize"], inspected["files"]
    );

    // The README's Helm steps, with the image values set.
    let helm = Helm::with_kubeconfig(&cluster.kubeconfig()).expect("helm");
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/whittle");
    let started = Instant::now();
    helm.run(&[
        "install",
        "whittle",
        chart,
        "--namespace",
        "whittle-system",
        "--create-namespace",
        "--set",
        &format!("image.repository={repo}"),
        "--set",
        &format!("image.digest={digest}"),
        "--set",
        "hostNetwork=true",
        "--wait",
        "--timeout",
        "5m",
    ])
    .unwrap_or_else(|e| panic!("helm install: {e}\nnode log:\n{}", cluster_log(&cluster)));
    eprintln!("helm install --wait: {:.1?}", started.elapsed());

    let client = cluster.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "whittle-system");
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=whittle"))
        .await
        .expect("list the operator's pods");
    let pod = listed.items.first().expect("the operator's pod");
    let status = pod.status.as_ref().expect("pod status");
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    assert!(container.ready, "{container:?}");
    assert!(
        container.image_id.ends_with(&digest),
        "{} runs {}",
        digest,
        container.image_id
    );

    // examples/nginx, reconciled by that operator.
    let (client, ns) = namespace(&cluster, "nginx", &[]).await;
    deploy_nginx_example(&client, &ns, &registry).await;
    let (hardened, status) = nginx_example_hardened(&client, &ns, &registry).await;
    let result = status.result.expect("status.result");
    assert!(result.hardened_bytes < result.source_bytes, "{result:?}");
    eprintln!("examples/nginx by the chart-installed operator: {hardened}, {result:?}");
}

fn cluster_log(cluster: &Cluster) -> String {
    let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
    Command::new(kubectl)
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(["-n", "whittle-system", "describe", "pods"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
