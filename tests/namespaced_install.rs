//! A namespaced install on a real cluster: the chart with `watchNamespaces` gives the operator
//! a Role in each listed namespace and no cluster-wide rights to namespaced resources, and the
//! operator, run with that ServiceAccount's token and `--watch-namespace`, reconciles workflows
//! there and leaves those of other namespaces untouched (no status, no finalizer). Any watch or
//! call outside its namespaces would be refused by the API server and show in its log.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::Api;
use serde_json::json;
use whittle::api::HardeningWorkflow;
use whittle_testbed::cluster::Cluster;

use support::*;

/// `kubectl auth can-i` with the given kubeconfig: `yes` or `no`.
fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i"])
        .args(args)
        .output()
        .expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespaced_operator_reconciles_its_namespace_and_leaves_others_alone() {
    let cluster = Cluster::start().await.expect("cluster");
    let (client, watched) = namespace(&cluster, "watched", &[]).await;
    let (_, other) = namespace(&cluster, "other", &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac_with(
        &cluster,
        dir.path(),
        &[&format!("watchNamespaces={{{watched}}}")],
    )
    .await;

    // The ServiceAccount's rights end at the watched namespace.
    assert!(can_i(
        &kubeconfig,
        &["patch", "deployments", "-n", &watched]
    ));
    assert!(can_i(&kubeconfig, &["get", "secrets", "-n", &watched]));
    for (verb, resource, ns) in [
        ("get", "secrets", other.as_str()),
        ("patch", "deployments", other.as_str()),
        ("list", "hardeningworkflows.whittle.dev", other.as_str()),
        ("create", "secrets", watched.as_str()),
        ("delete", "secrets", watched.as_str()),
    ] {
        assert!(
            !can_i(&kubeconfig, &[verb, resource, "-n", ns]),
            "{verb} {resource} in {ns}"
        );
    }
    assert!(!can_i(
        &kubeconfig,
        &["list", "deployments", "--all-namespaces"]
    ));

    let operator = Operator::start_as(&cluster, kubeconfig, &["--watch-namespace", &watched], None);
    // Both target a Deployment that does not exist: the one the operator reconciles says so.
    for ns in [&watched, &other] {
        apply_workflow(&client, ns, json!({"target": {"name": "web"}})).await;
    }
    wait_for(
        "the watched namespace's workflow to be reconciled",
        || async {
            status(&client, &watched, "web")
                .await
                .message
                .is_some_and(|m| m.contains("does not exist"))
        },
    )
    .await;
    // The other workflow was created at the same time; give a cluster-wide watch the time it
    // would need to pick it up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let untouched: HardeningWorkflow = Api::namespaced(client.clone(), &other)
        .get("web")
        .await
        .expect("the other workflow");
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    assert!(
        untouched.metadata.finalizers.unwrap_or_default().is_empty(),
        "no finalizer outside the watched namespace"
    );
    let log = operator.log();
    assert!(
        !log.contains("403") && !log.to_lowercase().contains("forbidden"),
        "nothing the operator tried was refused:\n{log}"
    );
}
