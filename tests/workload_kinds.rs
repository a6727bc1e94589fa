//! StatefulSets and DaemonSets on a real cluster (control plane, kubelet + containerd node,
//! registry), with the operator holding exactly the chart's permissions. The scenarios share
//! the cluster and run concurrently:
//! - a StatefulSet of two replicas whose pods keep a file on their PersistentVolumes: hardened
//!   and verified through its Service with an exercise, its template back as it was, and the
//!   data written by the original, the instrumented, the hardened and the restored pods all
//!   still there (the claims survive every rollout);
//! - a StatefulSet with `updateStrategy: OnDelete`, whose controller replaces no pod by itself:
//!   whittle deletes its pods one at a time to roll the instrumented and the hardened image,
//!   and again after the restore, so it ends on its original image;
//! - a DaemonSet (one pod on the node): hardened and verified, its template restored.
//!
//! Killing the operator in every phase of a StatefulSet's run is in `operator_resilience.rs`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use whittle::api::Phase;
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn stateful_sets_and_daemon_sets_are_hardened_and_restored() {
    let (cluster, _kubeconfig, operator) = cluster_with_chart_operator(&[]).await;
    let c = &cluster;
    let outcome = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(
            timed(
                "a StatefulSet keeps its volumes",
                Box::pin(stateful_set_with_volumes(c))
            ),
            timed(
                "an OnDelete StatefulSet",
                Box::pin(on_delete_stateful_set(c))
            ),
            timed("a DaemonSet", Box::pin(daemon_set(c))),
        )
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the scenarios did not finish in 600s; operator log:\n{}",
        operator.log()
    );
}

/// The busybox fixture pushed to a repository of the scenario's own (each hardens to its own
/// `-whittle-hardened` tag).
fn busybox(c: &Cluster, repo: &str) -> String {
    fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), &format!("{repo}/busybox:1"))
        .expect("push busybox")
}

/// What every scenario's workflow asks: a short observation, the exercise through the Service.
fn workflow_spec(kind: &str, image: &str) -> Value {
    json!({"target": {"kind": kind, "name": "web"}, "registry": {"insecure": true},
           "observe": {"duration": "5s", "collectTimeout": "1m"},
           "exercise": busybox_exercise(image), "verify": {"timeout": "3m"}})
}

/// The container's image and command in the workload's template now.
async fn image_of(client: &kube::Client, ns: &str, kind: &str) -> String {
    let api = dynamic(client, ns, kind);
    let w = api.get("web").await.expect("the workload");
    w.data["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn dynamic(client: &kube::Client, ns: &str, kind: &str) -> Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural);
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// The images the pods of `web` run now.
async fn pod_images(client: &kube::Client, ns: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut images: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec?.containers.first()?.image.clone())
        .collect();
    images.sort();
    images
}

/// Two replicas, each with a claim from `volumeClaimTemplates` bound to a hostPath volume; every
/// start of a pod appends a line to `/data/boots` there, which its httpd serves.
async fn stateful_set_with_volumes(c: &Cluster) {
    let (client, ns) = namespace(c, "sts", &[]).await;
    let image = busybox(c, "sts");
    let class = format!("whittle-{ns}");
    let classes: Api<StorageClass> = Api::all(client.clone());
    let apply = PatchParams::apply("whittle-test").force();
    classes
        .patch(
            &class,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": class}, "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "Immediate"})),
        )
        .await
        .expect("storage class");
    let volumes = tempfile::tempdir().expect("volume dirs");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..2 {
        let path = volumes.path().join(format!("pv{i}"));
        std::fs::create_dir_all(&path).expect("volume dir");
        let name = format!("{ns}-pv{i}");
        pvs.patch(
            &name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                "spec": {"capacity": {"storage": "10Mi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": path.to_str().expect("utf-8"),
                                      "type": "Directory"}}})),
        )
        .await
        .expect("persistent volume");
    }
    let (mut set, service) = busybox_workload("StatefulSet", &image, 2);
    let container = &mut set["spec"]["template"]["spec"]["containers"][0];
    container["command"] = json!([
        "sh",
        "-c",
        "echo boot >> /data/boots && cp /www/index.html /data/ && exec httpd -f -p 8080 -h /data"
    ]);
    container["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    set["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "10Mi"}}}}]);
    support::apply(&client, &ns, &set).await;
    support::apply(&client, &ns, &service).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    ready_pod_ip(&pods, "statefulset.kubernetes.io/pod-name=web-1").await;

    apply_workflow(&client, &ns, workflow_spec("StatefulSet", &image)).await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.reports.expect("reports").received,
        2,
        "one report per replica"
    );
    assert_eq!(
        image_of(&client, &ns, "StatefulSet").await,
        image,
        "restored"
    );
    wait_for("the original pods back", || async {
        pod_images(&client, &ns).await == [image.clone(), image.clone()]
    })
    .await;

    // Each replica started on its original, instrumented, hardened and original image again,
    // and its volume kept every line.
    for pod in ["web-0", "web-1"] {
        let ip = ready_pod_ip(&pods, &format!("statefulset.kubernetes.io/pod-name={pod}")).await;
        let (code, body) = get_from_node(c, &ip, 8080, "/boots");
        assert_eq!(code, 200);
        let boots = String::from_utf8_lossy(&body).lines().count();
        assert!(boots >= 4, "{pod}: {boots} boots on its volume");
    }
}

/// `OnDelete`: only deleted pods get a new template, so whittle deletes them.
async fn on_delete_stateful_set(c: &Cluster) {
    let (client, ns) = namespace(c, "ondelete", &[]).await;
    let image = busybox(c, "ondelete");
    let (mut set, service) = busybox_workload("StatefulSet", &image, 1);
    set["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    support::apply(&client, &ns, &set).await;
    support::apply(&client, &ns, &service).await;
    apply_workflow(&client, &ns, workflow_spec("StatefulSet", &image)).await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    assert_eq!(status.reports.expect("reports").received, 1);
    assert!(status.verification.is_some_and(|v| v.reason == "Passed"));
    assert_eq!(image_of(&client, &ns, "StatefulSet").await, image);
    wait_for("the original pod back after the restore", || async {
        pod_images(&client, &ns).await == [image.clone()]
    })
    .await;
}

async fn daemon_set(c: &Cluster) {
    let (client, ns) = namespace(c, "daemons", &[]).await;
    let image = busybox(c, "daemons");
    let (set, service) = busybox_workload("DaemonSet", &image, 1);
    support::apply(&client, &ns, &set).await;
    support::apply(&client, &ns, &service).await;
    apply_workflow(&client, &ns, workflow_spec("DaemonSet", &image)).await;
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.reports.expect("reports").received,
        1,
        "one pod per node"
    );
    let hardened = status.hardened_image.expect("hardened image");
    assert!(hardened_files(&hardened).contains("bin/busybox"));
    assert_eq!(image_of(&client, &ns, "DaemonSet").await, image);
    wait_for("the original pod back", || async {
        pod_images(&client, &ns).await == [image.clone()]
    })
    .await;
}
