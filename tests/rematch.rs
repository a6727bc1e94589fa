//! Continuous hardening re-matches what the hardened image keeps, on a real cluster (control
//! plane, kubelet + containerd node, registry): the operator serves an OSV database from a
//! directory (tests/data/osv's synthetic bookworm records) and loads it again every few
//! seconds (`--vuln-db-refresh`). The nginx example hardens with `continuous`; its glibc
//! finding is Critical with no fix, so nothing needs a rebuild. Then a new record, a High for
//! glibc with a fix, lands in the directory: within a few checks `status.vulnerabilities` lists
//! it, and UpToDate is False with `RebuildNeeded` naming the package and the fixed version,
//! with one Warning Event; no run starts (the source did not move). Later checks, and a
//! restarted operator, neither read the image again nor repeat the Event.
//!
//! Its own cluster and operator, so that it runs beside the other cluster tests.

mod support;

use std::fs;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;
use whittle::api::{HardeningWorkflowStatus, Phase, Trigger};
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

/// A High for glibc with a fix no bookworm version has reached yet: every kept libc6 is
/// affected and fixable.
const GLIBC_FIXABLE: &str = r#"{
  "schema_version": "1.6.0",
  "id": "WHITTLE-TEST-GLIBC-FIXABLE",
  "modified": "2026-12-02T00:00:00Z",
  "summary": "Synthetic test record: glibc, every bookworm version affected, fixed in 99.0-1",
  "affected": [{
    "package": {"ecosystem": "Debian:12", "name": "glibc"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0-1"}]}]
  }],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}]
}"#;

const NAME: &str = "nginx";

fn up_to_date(status: &HardeningWorkflowStatus) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "UpToDate")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Warning Events `RebuildNeeded` about the workflow, with how often each was given.
async fn rebuild_events(client: &kube::Client, ns: &str) -> Vec<(String, i32)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "involvedObject.kind=HardeningWorkflow,involvedObject.name={NAME},reason=RebuildNeeded"
    );
    api.list(&ListParams::default().fields(&selector))
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| {
            let count = e.series.and_then(|s| s.count).or(e.count).unwrap_or(1);
            (e.message.unwrap_or_default(), count)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_fixable_record_is_matched_against_the_kept_packages_and_asks_for_a_rebuild() {
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let registry = cluster.registry().host();
    fixtures::nginx()
        .expect("nginx fixture")
        .push(cluster.registry(), "whittle-examples/nginx:1")
        .expect("push nginx");
    let synthetic = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/bookworm-synthetic");
    let osv = dir.path().join("osv");
    fs::create_dir(&osv).expect("mkdir");
    for entry in fs::read_dir(&synthetic).expect("read the fixture") {
        let path = entry.expect("entry").path();
        fs::copy(&path, osv.join(path.file_name().expect("name"))).expect("copy");
    }
    let db = format!("osv={}", osv.display());
    let mut operator = Operator::start_as(
        &cluster,
        kubeconfig,
        &["--vuln-db", &db, "--vuln-db-refresh", "3s"],
        None,
    );

    let outcome = tokio::time::timeout(
        Duration::from_secs(600),
        AssertUnwindSafe(scenario(&cluster, &registry, &osv, &mut operator)).catch_unwind(),
    )
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            eprintln!("operator log:\n{}", operator.log());
            std::panic::resume_unwind(panic);
        }
        Err(_) => panic!(
            "the scenario did not finish in 600s; operator log:\n{}",
            operator.log()
        ),
    }
}

async fn scenario(c: &Cluster, registry: &str, osv: &Path, operator: &mut Operator) {
    let (client, ns) = namespace(c, "rematch", &[]).await;
    deploy_nginx_example(&client, &ns, registry).await;
    let mut w = example("examples/nginx/workflow.yaml", registry);
    w["spec"]["vulnerabilities"] = json!({"db": "osv"});
    w["spec"]["continuous"] = json!({"checkInterval": "10s"});
    apply(&client, &ns, &w).await;
    wait_phase(&client, &ns, NAME, Phase::Succeeded).await;

    // A first check: the source has not moved, and the kept Criticals have no fix.
    let first = wait_until(&client, &ns, "a first check", |s| s.checked_at.is_some()).await;
    let (state, reason, _) = up_to_date(&first).expect("UpToDate");
    assert_eq!((state.as_str(), reason.as_str()), ("True", "Current"));
    let v1 = first
        .vulnerabilities
        .clone()
        .expect("status.vulnerabilities");
    assert_eq!((v1.after.total, v1.fixable.total), (2, 0), "{v1:?}");
    let hardened = first.hardened_image.clone().expect("status.hardenedImage");
    assert_eq!(v1.matched_image.as_deref(), Some(hardened.as_str()));
    let source = first.source_reference.clone().expect("sourceReference");

    // The database gains a fixable High for the glibc the image keeps (written whole, then
    // renamed in: a reload never sees half a record).
    let staged = osv.join("fixable.partial");
    fs::write(&staged, GLIBC_FIXABLE).expect("write");
    fs::rename(&staged, osv.join("WHITTLE-TEST-GLIBC-FIXABLE.json")).expect("rename");
    let added = Instant::now();

    let rebuild = wait_until(&client, &ns, "RebuildNeeded", |s| {
        up_to_date(s).is_some_and(|(_, r, _)| r == "RebuildNeeded")
    })
    .await;
    println!(
        "the new record was matched {:?} after it was written",
        added.elapsed()
    );
    let v2 = rebuild
        .vulnerabilities
        .clone()
        .expect("status.vulnerabilities");
    let fixable: Vec<(&str, &str, Option<&str>)> = v2
        .kept
        .iter()
        .filter(|k| k.id == "WHITTLE-TEST-GLIBC-FIXABLE")
        .map(|k| {
            (
                k.id.as_str(),
                k.package.as_str(),
                k.fixed_version.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        fixable,
        [
            ("WHITTLE-TEST-GLIBC-FIXABLE", "libc-bin", Some("99.0-1")),
            ("WHITTLE-TEST-GLIBC-FIXABLE", "libc6", Some("99.0-1")),
        ],
        "{v2:?}"
    );
    assert_eq!(
        (v2.after.total, v2.after.high, v2.fixable.high),
        (4, 2, 2),
        "{v2:?}"
    );
    assert_eq!(
        (&v2.before, v2.removed),
        (&v1.before, v1.removed),
        "what the harden removed stays"
    );
    assert_ne!(v2.matched_database, v1.matched_database, "{v2:?}");
    assert_eq!(v2.matched_image.as_deref(), Some(hardened.as_str()));
    let (state, _, message) = up_to_date(&rebuild).expect("UpToDate");
    assert_eq!(state, "False");
    for part in [
        "keeps 2 vulnerabilities of severity High or worse with a fix",
        "WHITTLE-TEST-GLIBC-FIXABLE in libc",
        "→ 99.0-1 (High)",
        &format!("rebuild the source image {source} to pick it up"),
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    // The source did not move: no run, the same hardened image.
    assert_eq!(rebuild.history, first.history, "no new run");
    assert_eq!(rebuild.phase(), Phase::Succeeded);
    assert_eq!(rebuild.hardened_image, first.hardened_image);

    // Later checks (the database is loaded again every 3s, unchanged) neither read the image
    // again nor repeat the Event; nor does a restarted operator.
    let matched_at = v2.matched_at.clone();
    tokio::time::sleep(Duration::from_secs(25)).await;
    operator.restart();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let later = status(&client, &ns, NAME).await;
    assert!(later.checked_at > rebuild.checked_at, "still checking");
    let v3 = later
        .vulnerabilities
        .clone()
        .expect("status.vulnerabilities");
    assert_eq!(v3.matched_at, matched_at, "not matched again: {v3:?}");
    assert_eq!(up_to_date(&later), up_to_date(&rebuild));
    assert_eq!(later.history, first.history, "no new run");
    let given = rebuild_events(&client, &ns).await;
    assert_eq!(given, [(message, 1)], "one Warning Event");

    // The source is rebuilt under its tag: the next check hardens it, a run the kept
    // vulnerability asked for.
    let nginx = fixtures::nginx().expect("nginx fixture");
    push_rebuilt(
        c,
        &nginx,
        &[("etc/rebuilt", "1")],
        "whittle-examples/nginx:1",
    );
    let rerun = wait_until(&client, &ns, "a run from the rebuilt source", |s| {
        s.history.len() == 2 && s.phase() == Phase::Succeeded
    })
    .await;
    let run = &rerun.history[0];
    assert_eq!(
        (run.trigger, run.verdict),
        (Trigger::Vulnerabilities, Phase::Succeeded),
        "{run:?}"
    );
    let counted = rerun
        .vulnerabilities
        .clone()
        .expect("status.vulnerabilities");
    assert_eq!(
        (run.vulnerabilities_before, run.vulnerabilities_after),
        (Some(counted.before.total), Some(counted.after.total)),
        "the run's counts, with the record added above: {run:?}"
    );
    assert!(run.duration_seconds.is_some_and(|d| d >= 0), "{run:?}");
    assert_ne!(
        rerun.hardened_image, first.hardened_image,
        "a new hardened image"
    );
}

/// Polls the workflow's status until `done` holds.
async fn wait_until(
    client: &kube::Client,
    ns: &str,
    what: &str,
    done: impl Fn(&HardeningWorkflowStatus) -> bool,
) -> HardeningWorkflowStatus {
    let start = Instant::now();
    loop {
        let last = status(client, ns, NAME).await;
        if done(&last) {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{what}: not after 120s: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
