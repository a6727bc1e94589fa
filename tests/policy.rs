//! HardeningPolicy on a real cluster (control plane, kubelet + containerd node, registry), the
//! operator holding exactly the chart's permissions and the chart's admission policies in
//! force. The scenarios share the cluster and run concurrently, each in its own namespace:
//! - Harden: four workloads (two Deployments selected by label, one opted out by annotation, a
//!   StatefulSet of the same label but another kind): exactly two workflows, never more than
//!   `maxConcurrent: 1` past Pending at once, both Succeeded and counted; the operator restarted
//!   mid-way makes no duplicate; a workload whose label is removed loses its workflow and is
//!   left as it was before the policy; deleting the policy deletes its workflows;
//! - Report: nothing in the cluster changes (generations unchanged, no workflow), and each
//!   image's predicted removal is in the status;
//! - Tenancy: a user who may create HardeningPolicies and patch Deployments in namespace A
//!   only: a policy in A selects nothing of B; without patch in A, the policy is refused;
//! - a ClusterHardeningPolicy in Report mode selects the workloads of the namespaces its
//!   `namespaceSelector` picks, and only those; a plain user may not create one.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use whittle::api::policy::{ClusterHardeningPolicy, HardeningPolicy, PolicyStatus};
use whittle::api::{HardeningWorkflow, Phase};
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn policies_select_throttle_report_and_respect_tenancy() {
    let (cluster, _kubeconfig, operator) = cluster_with_chart_operator(&[]).await;
    let operator = Mutex::new(operator);
    let c = &cluster;
    let outcome = tokio::time::timeout(Duration::from_secs(900), async {
        tokio::join!(
            timed("harden a namespace", Box::pin(harden(c, &operator))),
            timed("report mode", Box::pin(report(c))),
            timed("tenancy", Box::pin(tenancy(c))),
            timed("a cluster policy", Box::pin(cluster_report(c))),
        )
    })
    .await;
    let log = operator.lock().map(|o| o.log()).unwrap_or_default();
    assert!(
        outcome.is_ok(),
        "the scenarios did not finish in 900s; operator log:\n{log}"
    );
}

/// A busybox httpd workload `name` of `kind`, labelled `labels`, and its own Service.
fn workload(kind: &str, name: &str, image: &str, labels: Value) -> (Value, Value) {
    let (mut w, mut service) = busybox_workload(kind, image, 1);
    w["metadata"] = json!({"name": name, "labels": labels});
    w["spec"]["selector"] = json!({"matchLabels": {"app": name}});
    w["spec"]["template"]["metadata"]["labels"] = json!({"app": name});
    if kind == "StatefulSet" {
        w["spec"]["serviceName"] = json!(name);
    }
    service["metadata"]["name"] = json!(name);
    service["spec"]["selector"] = json!({"app": name});
    (w, service)
}

async fn create_policy(client: &Client, ns: &str, name: &str, spec: Value) {
    let api: Api<HardeningPolicy> = Api::namespaced(client.clone(), ns);
    let policy: HardeningPolicy = serde_json::from_value(json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("policy");
    api.create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
}

/// Creates `object`, again while RBAC still refuses ("cannot create"): the API server's
/// authorizer sees a Role created a moment ago only once its cache has it. Whatever else comes
/// back (an admission policy's refusal is a 403 too) is returned.
async fn create_once_rbac_allows<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let start = std::time::Instant::now();
    loop {
        match api.create(&PostParams::default(), object).await {
            Err(kube::Error::Api(s))
                if s.code == 403
                    && s.message.contains("cannot create")
                    && start.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

async fn policy_status(client: &Client, ns: &str, name: &str) -> PolicyStatus {
    let api: Api<HardeningPolicy> = Api::namespaced(client.clone(), ns);
    api.get(name)
        .await
        .expect("policy")
        .status
        .unwrap_or_default()
}

async fn workflows(client: &Client, ns: &str) -> Vec<HardeningWorkflow> {
    let api: Api<HardeningWorkflow> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("workflows")
        .items
}

fn phase(w: &HardeningWorkflow) -> Phase {
    w.status.as_ref().map(|s| s.phase()).unwrap_or_default()
}

async fn harden(c: &Cluster, operator: &Mutex<support::Operator>) {
    let (client, ns) = namespace(c, "policy", &[]).await;
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "policy/busybox:1")
        .expect("push busybox");
    let web = json!({"tier": "web"});
    for (kind, name, labels) in [
        ("Deployment", "a", web.clone()),
        ("Deployment", "b", web.clone()),
        ("Deployment", "c", web.clone()),
        ("StatefulSet", "d", web.clone()),
    ] {
        let (mut w, service) = workload(kind, name, &image, labels);
        if name == "c" {
            w["metadata"]["annotations"] = json!({"whittle.dev/skip": "true"});
        }
        support::apply(&client, &ns, &w).await;
        support::apply(&client, &ns, &service).await;
    }
    let generation_of_c = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("c")
        .await
        .expect("c")
        .metadata
        .generation;
    create_policy(
        &client,
        &ns,
        "web-tier",
        json!({"mode": "Harden", "selector": {"matchLabels": {"tier": "web"}},
               "kinds": ["Deployment"], "maxConcurrent": 1,
               "template": {"spec": {"registry": {"insecure": true},
                   "observe": {"duration": "5s", "collectTimeout": "1m"},
                   "exercise": busybox_exercise(&image), "verify": {"timeout": "3m"}}}}),
    )
    .await;

    // Until both have Succeeded: never two past Pending at once; the operator restarted once
    // while the first runs.
    let restarted = AtomicBool::new(false);
    let most_at_once = AtomicUsize::new(0);
    wait_for("both workflows Succeeded", || async {
        let ws = workflows(&client, &ns).await;
        let running = ws
            .iter()
            .filter(|w| !matches!(phase(w), Phase::Pending | Phase::Succeeded | Phase::Failed))
            .count();
        most_at_once.fetch_max(running, Ordering::SeqCst);
        if running == 1
            && !restarted.swap(true, Ordering::SeqCst)
            && let Ok(mut o) = operator.lock()
        {
            o.restart();
        }
        let failed: Vec<String> = ws
            .iter()
            .filter(|w| phase(w) == Phase::Failed)
            .map(|w| {
                format!(
                    "{}: {:?}",
                    w.name_any(),
                    w.status.as_ref().map(|s| &s.message)
                )
            })
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        ws.len() == 2 && ws.iter().all(|w| phase(w) == Phase::Succeeded)
    })
    .await;
    assert!(restarted.into_inner(), "the operator was restarted mid-way");
    assert_eq!(most_at_once.into_inner(), 1, "maxConcurrent: 1");
    let mut names: Vec<String> = workflows(&client, &ns)
        .await
        .iter()
        .map(|w| w.name_any())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["web-tier-deployment-a", "web-tier-deployment-b"],
        "exactly the selected Deployments, once each"
    );
    wait_for("the policy counts both", || async {
        let s = policy_status(&client, &ns, "web-tier").await;
        s.counts.succeeded == 2 && s.selected == 3
    })
    .await;
    let status = policy_status(&client, &ns, "web-tier").await;
    assert_eq!(status.skipped, 1, "{status:?}");
    let states: Vec<(&str, &str)> = status
        .workloads
        .iter()
        .map(|r| (r.name.as_str(), r.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [("a", "Succeeded"), ("b", "Succeeded"), ("c", "Skipped")]
    );
    assert!(
        status.totals.source_bytes > status.totals.hardened_bytes,
        "{status:?}"
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "{status:?}");
    let c_now = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("c")
        .await
        .expect("c");
    assert_eq!(c_now.metadata.generation, generation_of_c, "c opted out");
    let d = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("d")
        .await
        .expect("d");
    assert!(
        d.annotations().get("whittle.dev/original").is_none(),
        "another kind"
    );

    // b leaves the selection: its workflow goes, b stays as it was.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": null}}})),
        )
        .await
        .expect("unlabel b");
    wait_for("b's workflow deleted", || async {
        let ws = workflows(&client, &ns).await;
        ws.len() == 1 && ws[0].name_any() == "web-tier-deployment-a"
    })
    .await;
    let b = deployments.get("b").await.expect("b");
    assert!(b.annotations().get("whittle.dev/original").is_none());
    let spec = b.spec.template.spec.expect("pod spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));

    // Deleting the policy deletes the workflows it owns (the garbage collector).
    Api::<HardeningPolicy>::namespaced(client.clone(), &ns)
        .delete("web-tier", &Default::default())
        .await
        .expect("delete the policy");
    wait_for("a's workflow deleted with the policy", || async {
        workflows(&client, &ns).await.is_empty()
    })
    .await;
}

async fn report(c: &Cluster) {
    let (client, ns) = namespace(c, "report", &[]).await;
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "report/busybox:1")
        .expect("push busybox");
    let nginx = fixtures::nginx()
        .expect("nginx fixture")
        .push(c.registry(), "report/nginx:1")
        .expect("push nginx");
    let (small, _) = workload("Deployment", "small", &busybox, json!({}));
    let (mut large, _) = workload("Deployment", "large", &nginx, json!({}));
    if let Some(c) = large["spec"]["template"]["spec"]["containers"][0].as_object_mut() {
        c.remove("command");
        c.remove("readinessProbe");
    }
    support::apply(&client, &ns, &small).await;
    support::apply(&client, &ns, &large).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let generations = || async {
        let mut g = Vec::new();
        for name in ["large", "small"] {
            g.push(
                deployments
                    .get(name)
                    .await
                    .expect("deployment")
                    .metadata
                    .generation,
            );
        }
        g
    };
    let before = generations().await;
    create_policy(
        &client,
        &ns,
        "scan",
        json!({"template": {"spec": {"registry": {"insecure": true}}}}),
    )
    .await;
    wait_for("both images reported", || async {
        policy_status(&client, &ns, "scan").await.counts.reported == 2
    })
    .await;
    let status = policy_status(&client, &ns, "scan").await;
    let rows: Vec<&str> = status.workloads.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rows, ["large", "small"]);
    let large = status.workloads[0]
        .prediction
        .clone()
        .expect("nginx predicted");
    assert!(
        large.os.as_deref().is_some_and(|os| os.contains("Debian")),
        "{large:?}"
    );
    assert!(large.packages.is_some_and(|n| n > 50), "{large:?}");
    assert!(
        large.shells.iter().any(|s| s.ends_with("bin/dash")),
        "{large:?}"
    );
    assert!(
        large
            .package_managers
            .iter()
            .any(|p| p.ends_with("bin/dpkg")),
        "{large:?}"
    );
    assert!(status.totals.source_bytes > 0);
    assert_eq!(generations().await, before, "Report mode changes nothing");
    assert!(workflows(&client, &ns).await.is_empty(), "no workflow");
}

async fn tenancy(c: &Cluster) {
    let (client, a) = namespace(c, "tenant-a", &[]).await;
    let (_, b) = namespace(c, "tenant-b", &[]).await;
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "tenant/busybox:1")
        .expect("push busybox");
    let (w, _) = workload("Deployment", "other", &image, json!({"tier": "web"}));
    support::apply(&client, &b, &w).await;
    // alice may create policies in A, and patch Deployments there only.
    let grant = |user: &str, verbs: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": user},
               "rules": [{"apiGroups": ["whittle.dev"], "resources": ["hardeningpolicies"],
                          "verbs": ["create", "get"]},
                         {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs}]})
    };
    let bind = |user: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": user},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    };
    for (user, verbs) in [
        ("alice", json!(["get", "list", "patch"])),
        ("bob", json!(["get", "list"])),
    ] {
        let role: k8s_openapi::api::rbac::v1::Role =
            serde_json::from_value(grant(user, verbs)).expect("role");
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(bind(user)).expect("binding");
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &a)
            .create(&PostParams::default(), &role)
            .await
            .expect("role");
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &a)
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding");
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(c.kubeconfig()).expect("kubeconfig");
    let admin = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    let as_user = |user: &str| {
        let mut config = admin.clone();
        config.auth_info.impersonate = Some(user.to_string());
        Client::try_from(config).expect("impersonating client")
    };
    let spec = json!({"mode": "Harden", "selector": {"matchLabels": {"tier": "web"}},
                      "kinds": ["Deployment", "StatefulSet"]});
    // bob lacks patch on Deployments in A (and any right on StatefulSets): refused, saying so.
    let bob: Api<HardeningPolicy> = Api::namespaced(as_user("bob"), &a);
    let policy: HardeningPolicy = serde_json::from_value(json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningPolicy",
        "metadata": {"name": "mine"}, "spec": spec.clone()}))
    .expect("policy");
    let refused = create_once_rbac_allows(&bob, &policy).await;
    let message = match refused {
        Err(kube::Error::Api(s)) => s.message.clone(),
        other => panic!("bob's policy was not refused: {other:?}"),
    };
    assert!(
        message.contains("lacks patch on deployments.apps in namespace"),
        "{message}"
    );
    // alice may patch Deployments in A but not StatefulSets: refused too; with Deployments only,
    // admitted — and B's Deployment of the same label is not hers to select.
    let alice: Api<HardeningPolicy> = Api::namespaced(as_user("alice"), &a);
    let refused = create_once_rbac_allows(&alice, &policy).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("statefulsets.apps")),
        "{refused:?}"
    );
    let mut deployments_only = policy.clone();
    deployments_only.spec.kinds = vec![whittle::api::TargetKind::Deployment];
    alice
        .create(&PostParams::default(), &deployments_only)
        .await
        .expect("alice's policy is admitted");
    wait_for("alice's policy reconciled", || async {
        policy_status(&client, &a, "mine")
            .await
            .observed_generation
            .is_some()
    })
    .await;
    let status = policy_status(&client, &a, "mine").await;
    assert_eq!(
        status.selected, 0,
        "nothing in A carries the label: {status:?}"
    );
    assert!(workflows(&client, &b).await.is_empty(), "nothing made in B");
    let other = Api::<Deployment>::namespaced(client.clone(), &b)
        .get("other")
        .await
        .expect("other");
    assert!(other.annotations().get("whittle.dev/original").is_none());
}

async fn cluster_report(c: &Cluster) {
    let marker = format!("picked-{}", std::process::id());
    let (client, picked) = namespace(c, "picked", &[("whittle-test/scan", &marker)]).await;
    let (_, other) = namespace(c, "unpicked", &[]).await;
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(c.registry(), "cluster/busybox:1")
        .expect("push busybox");
    for ns in [&picked, &other] {
        let (w, _) = workload("Deployment", "app", &image, json!({}));
        support::apply(&client, ns, &w).await;
    }
    let policy: ClusterHardeningPolicy = serde_json::from_value(json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "ClusterHardeningPolicy",
        "metadata": {"name": marker},
        "spec": {"mode": "Report",
                 "namespaceSelector": {"matchLabels": {"whittle-test/scan": marker}},
                 "template": {"spec": {"registry": {"insecure": true}}}}
    }))
    .expect("cluster policy");
    // dave may create cluster policies, and patch Deployments in the picked namespace only:
    // not enough for a policy over every namespace the selector may ever pick.
    let dave = format!("dave-{marker}");
    let cluster_role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": dave},
        "rules": [{"apiGroups": ["whittle.dev"], "resources": ["clusterhardeningpolicies"],
                   "verbs": ["create"]}]}))
    .expect("cluster role");
    let cluster_binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
        serde_json::from_value(json!({
            "metadata": {"name": dave},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": dave},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": dave}]}))
        .expect("cluster role binding");
    let edit: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": dave},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": dave}]}))
    .expect("role binding");
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &cluster_role)
        .await
        .expect("cluster role");
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &cluster_binding)
        .await
        .expect("cluster role binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &picked)
        .create(&PostParams::default(), &edit)
        .await
        .expect("role binding");
    let kubeconfig = kube::config::Kubeconfig::read_from(c.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    config.auth_info.impersonate = Some(dave.clone());
    let as_dave: Api<ClusterHardeningPolicy> =
        Api::all(Client::try_from(config).expect("impersonating client"));
    let refused = create_once_rbac_allows(&as_dave, &policy).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s))
            if s.message.contains("lacks patch on deployments.apps cluster-wide")),
        "{refused:?}"
    );

    let api: Api<ClusterHardeningPolicy> = Api::all(client.clone());
    api.create(&PostParams::default(), &policy)
        .await
        .expect("create the cluster policy");
    wait_for("the picked namespace's workload reported", || async {
        api.get(&marker)
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.counts.reported == 1)
    })
    .await;
    let status = api
        .get(&marker)
        .await
        .expect("cluster policy")
        .status
        .unwrap_or_default();
    let rows: Vec<(&str, &str)> = status
        .workloads
        .iter()
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(rows, [(picked.as_str(), "app")], "{status:?}");
    let _ = api.delete(&marker, &Default::default()).await;
}
