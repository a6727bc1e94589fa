//! Where a workflow may push, on a real cluster with the chart's RBAC: without
//! `spec.registry.credentialsSecret` the operator pulls and pushes with the workload's own pull
//! secrets, which are no ticket to copy its image elsewhere. A `spec.hardenedImage` outside the
//! source's repository fails the workflow with `DestinationNotAllowed` before anything is
//! pushed or the Deployment is touched. (Which names are allowed is unit-tested in
//! `controller::engine`.)

mod support;

use serde_json::json;
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_outside_the_sources_repository_needs_a_credentials_secret() {
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let registry = cluster.registry();
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(registry, "shop/web:1")
        .expect("push busybox");
    let operator = Operator::start_as(&cluster, kubeconfig, &[], None);

    let (client, ns) = namespace(&cluster, "dest", &[]).await;
    deploy_busybox_web(&client, &ns, &busybox, 1).await;
    let before = template(&client, &ns, "web").await;
    let elsewhere = format!("{}/other/copy:1", registry.host());
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "hardenedImage": elsewhere}),
    )
    .await;
    let failed = wait_failed(&client, &ns, "web").await;
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "DestinationNotAllowed", "{}", operator.log());
    let message = failed.message.unwrap_or_default();
    for part in [
        "spec.hardenedImage",
        elsewhere.as_str(),
        "spec.registry.credentialsSecret",
        &format!("{}/shop/web", registry.host()),
    ] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    assert_eq!(template(&client, &ns, "web").await, before);
    let repositories = registry.storage().join("docker/registry/v2/repositories");
    assert!(
        repositories.join("shop/web").exists(),
        "the source is where the test looks"
    );
    assert!(
        !repositories.join("other").exists(),
        "nothing was pushed outside the source's repository"
    );
}
