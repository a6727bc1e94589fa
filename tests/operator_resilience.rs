//! The operator survives its own death. On a real cluster, one workflow with an exercise Job
//! goes from Pending to Succeeded while the operator process is SIGKILLed once in every phase
//! (Pending, Instrumenting, Observing, Collecting, Hardening, Verifying) and started again:
//! there is still one Job per run, one hardened manifest, every report — for a Deployment, and
//! again for a StatefulSet. Then leader election:
//! a second replica waits while the first holds the Lease (serving reports all the same), and
//! takes over when the first is killed; `whittle_leader` on each says which one leads.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;
use whittle::api::Phase;
use whittle::reports::key::ReportKey;
use whittle_testbed::cluster::{Cluster, NODE_IP};
use whittle_testbed::images::fixtures;

use support::*;

const LEASE: &str = "whittle-operator";

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_survives_being_killed_in_every_phase() {
    let (cluster, client, ns, operator) = killed_in_every_phase("Deployment").await;
    leader_election(&cluster, &client, &ns, operator).await;
}

/// A StatefulSet's run survives the same: its pods are replaced in its own order, and a kill
/// between a template change and the pods that follow it loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stateful_set_survives_the_operator_being_killed_in_every_phase() {
    killed_in_every_phase("StatefulSet").await;
}

/// One workflow on a workload of `kind` from Pending to Succeeded with the operator SIGKILLed
/// in every phase; the cluster, the namespace and the running operator afterwards.
async fn killed_in_every_phase(kind: &str) -> (Cluster, Client, String, Operator) {
    let cluster = cluster_with_crd().await;
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(cluster.registry(), "kill/busybox:1")
        .expect("push busybox");
    let manifests = cluster
        .registry()
        .storage()
        .join("docker/registry/v2/repositories/kill/busybox/_manifests");
    let revisions_before = count(&manifests.join("revisions/sha256"));

    let (client, ns) = namespace(&cluster, "kill", &[]).await;
    let started = Instant::now();
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web", "kind": kind}, "registry": {"insecure": true},
                     "observe": {"duration": "3s", "collectTimeout": "1m"},
                     "exercise": busybox_exercise(&busybox),
                     "verify": {"timeout": "2m"}}),
    )
    .await;
    let elect = ["--leader-elect", "--service-namespace", "default"];
    let mut operator = Operator::start_with(&cluster, &elect, Some("replica-a"));

    // Pending: the target does not exist yet, so the workflow waits there.
    wait_for("the workflow to wait for its target", || async {
        let s = status(&client, &ns, "web").await;
        s.condition(whittle::api::ConditionType::Ready)
            .is_some_and(|c| c.reason == "TargetNotFound")
    })
    .await;
    kill_in(&mut operator, &client, &ns, Phase::Pending).await;
    let (workload, service) = busybox_workload(kind, &busybox, 1);
    apply(&client, &ns, &workload).await;
    apply(&client, &ns, &service).await;

    for phase in [
        Phase::Instrumenting,
        Phase::Observing,
        Phase::Collecting,
        Phase::Hardening,
        Phase::Verifying,
    ] {
        wait_exactly(&client, &ns, phase, &operator).await;
        kill_in(&mut operator, &client, &ns, phase).await;
    }
    let done = wait_phase(&client, &ns, "web", Phase::Succeeded).await;
    eprintln!(
        "{kind}: killed in all six phases: apply to Succeeded in {:.1?}",
        started.elapsed()
    );

    let status = done.status.expect("status");
    assert_eq!(
        jobs(&client, &ns, "web").await,
        ["web-observe", "web-verify"],
        "one Job per run, none made twice"
    );
    let reports = status.reports.expect("reports");
    assert!(!reports.expected.is_empty());
    assert_eq!(
        reports.pods, reports.expected,
        "every instrumented pod's report"
    );
    let stored = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("whittle.dev/workflow=web"))
        .await
        .expect("report ConfigMaps")
        .items
        .len();
    assert_eq!(stored as u32, reports.received, "no report lost or doubled");
    let hardened = status.hardened_image.expect("hardenedImage");
    let digest = hardened.split('@').nth(1).expect("pinned");
    let tagged = std::fs::read_to_string(manifests.join("tags/1-whittle-hardened/current/link"))
        .expect("the hardened tag");
    assert_eq!(tagged.trim(), digest, "the tag names the digest in status");
    // The hardened image carries its profile as a referrer: the artifact's manifest and, on
    // this registry without the referrers API, the referrers-tag index that lists it.
    assert_eq!(
        count(&manifests.join("revisions/sha256")),
        revisions_before + 4,
        "one instrumented and one hardened manifest, and the profile's artifact and referrers index: a harden repeated after a kill pushed the same digests"
    );
    (cluster, client, ns, operator)
}

/// A second replica waits while the first leads, serves the report intake meanwhile, and
/// leads once the first is gone.
async fn leader_election(cluster: &Cluster, client: &Client, ns: &str, mut first: Operator) {
    let elect = [
        "--leader-elect",
        "--service-namespace",
        "default",
        "--log-format",
        "json",
    ];
    let second = first.replica(cluster, &elect, Some("replica-b"));
    wait_for("the second replica to campaign", || async {
        second.log().contains("waiting to become the leader")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !second.log().contains("leading"),
        "two replicas must never lead at once:\n{}",
        second.log()
    );
    assert_eq!(holder(client).await, "replica-a");
    // whittle_leader says which replica reconciles, for the "not leading" alert.
    assert_eq!(leader_gauge(cluster, first.port()), "1");
    assert_eq!(leader_gauge(cluster, second.port()), "0");
    // The standby's intake answers from the cluster's state: a token of the shared key for a
    // workflow that does not exist gets past the signature check and is looked up.
    let token = ReportKey::new(first.report_key())
        .expect("report key")
        .token(ns, "missing", "00000000-0000-0000-0000-000000000000");
    let status = post_report(
        cluster,
        second.port(),
        &format!("/v1/reports/{ns}/missing"),
        &token,
    );
    assert_eq!(status, 404, "the standby's intake looked the workflow up");

    first.kill();
    let killed = Instant::now();
    wait_for("the second replica to lead", || async {
        second.log().contains("leading: reconciling workflows")
    })
    .await;
    eprintln!(
        "the standby took over {:.1?} after the leader was killed",
        killed.elapsed()
    );
    assert_eq!(holder(client).await, "replica-b");
    wait_for("whittle_leader 1 on the new leader", || async {
        leader_gauge(cluster, second.port()) == "1"
    })
    .await;
    // --log-format json: every line a JSON object with a level and a message.
    for line in second.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

async fn holder(client: &Client) -> String {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get(LEASE)
        .await
        .expect("the Lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// Polls (briefly, so as not to miss a short phase) until the workflow is in `phase`.
async fn wait_exactly(client: &Client, ns: &str, phase: Phase, operator: &Operator) {
    let start = Instant::now();
    loop {
        let now = status(client, ns, "web").await.phase();
        if now == phase {
            return;
        }
        assert!(
            now != Phase::Failed && now != Phase::Succeeded && start.elapsed() < WAIT,
            "waiting for {phase}, the workflow is {now}; operator log:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs the operator, checks that it died in `phase`, and starts it again.
async fn kill_in(operator: &mut Operator, client: &Client, ns: &str, phase: Phase) {
    operator.kill();
    let now = status(client, ns, "web").await.phase();
    assert_eq!(now, phase, "the kill landed in {phase}");
    eprintln!("killed the operator in {phase}");
    operator.restart();
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// POSTs an empty report to the operator at NODE_IP:port; the HTTP status.
/// The value of `whittle_leader` on the replica serving on `port`.
fn leader_gauge(cluster: &Cluster, port: u16) -> String {
    let (code, body) = get_from_node(cluster, &NODE_IP.to_string(), port, "/metrics");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("whittle_leader "))
        .unwrap_or_else(|| panic!("no whittle_leader in:\n{text}"))
        .trim()
        .to_string()
}

fn post_report(cluster: &Cluster, port: u16, path: &str, token: &str) -> u16 {
    let addr = std::net::SocketAddr::from((NODE_IP, port));
    let mut stream = whittle_testbed::net::netns::in_netns(&cluster.netns_path(), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .expect("connect to the standby");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
