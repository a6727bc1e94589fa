//! The test bed's Kubernetes is real: the API server accepts a CRD and an object of it, a kube
//! watcher sees the object's creation and update, a Deployment gets a ReplicaSet and Pods from
//! the real controller-manager, garbage collection removes them, and the real helm installs a
//! chart into it.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use whittle_testbed::cluster::control_plane::ControlPlane;
use whittle_testbed::cluster::helm::Helm;

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.whittle.dev"},
        "spec": {
            "group": "smoke.whittle.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1}}
                    }}
                }}
            }]
        }
    }))
    .expect("crd")
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_is_real() {
    let plane = ControlPlane::start().await.expect("control plane");
    let client = plane.client();
    let ns = plane.namespace("smoke").await.expect("namespace");

    // A CRD and an object of it; the schema is enforced by the API server itself.
    plane
        .install_crds(&[widget_crd()])
        .await
        .expect("install CRD");
    let gvk = GroupVersionKind::gvk("smoke.whittle.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.whittle.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": 0}
    }))
    .expect("object");
    let err = widgets
        .create(&PostParams::default(), &invalid)
        .await
        .expect_err("schema refuses size 0");
    assert!(format!("{err}").contains("spec.size"), "{err}");

    let mut events = watcher(widgets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.whittle.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}
    }))
    .expect("object");
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    let seen = tokio::time::timeout(Duration::from_secs(30), events.try_next())
        .await
        .expect("watch event in time")
        .expect("watch ok")
        .expect("an object");
    assert_eq!(seen.data["spec"]["size"], 1);
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .expect("update widget");
    let updated = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let obj = events
                .try_next()
                .await
                .expect("watch ok")
                .expect("an object");
            if obj.data["spec"]["size"] == 2 {
                return obj;
            }
        }
    })
    .await
    .expect("the watcher sees the update");
    assert_eq!(updated.metadata.name.as_deref(), Some("w1"));

    // A Deployment rolls out through a ReplicaSet and Pods made by the controller-manager.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/nginx:1"}]}
            }
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let by_app = ListParams::default().labels("app=web");
    eventually("a ReplicaSet owned by the Deployment", || async {
        replicasets.list(&by_app).await.is_ok_and(|l| {
            l.items.iter().any(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Deployment" && o.name == "web")
            })
        })
    })
    .await;
    eventually("two Pods owned by the ReplicaSet", || async {
        pods.list(&by_app).await.is_ok_and(|l| {
            l.items.len() == 2
                && l.items.iter().all(|p| {
                    p.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.kind == "ReplicaSet")
                })
        })
    })
    .await;

    // Garbage collection follows the owner references down.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete deployment");
    eventually("the ReplicaSet and Pods to be collected", || async {
        replicasets
            .list(&by_app)
            .await
            .is_ok_and(|l| l.items.is_empty())
            && pods.list(&by_app).await.is_ok_and(|l| l.items.is_empty())
    })
    .await;

    // The real helm installs a chart into this API server.
    let chart = tempfile::tempdir().expect("chart dir");
    std::fs::create_dir_all(chart.path().join("templates")).expect("templates");
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\ndescription: test bed smoke chart\n",
    )
    .expect("Chart.yaml");
    std::fs::write(chart.path().join("values.yaml"), "greeting: hello\n").expect("values");
    std::fs::write(
        chart.path().join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .expect("template");
    let helm = Helm::with_kubeconfig(&plane.kubeconfig()).expect("helm");
    let chart_dir = chart.path().to_str().expect("utf-8 path");
    helm.run(&["lint", chart_dir]).expect("helm lint");
    helm.run(&[
        "install",
        "smoke",
        chart_dir,
        "--namespace",
        &ns,
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    ])
    .expect("helm install");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = configmaps
        .get("smoke-greeting")
        .await
        .expect("the chart's ConfigMap");
    assert_eq!(cm.data.expect("data")["greeting"], "hi");
    let releases = helm
        .run(&["list", "--namespace", &ns, "--short"])
        .expect("helm list");
    assert_eq!(String::from_utf8_lossy(&releases.stdout).trim(), "smoke");
}
