//! Benchmark (not a test): continuous hardening on the real node with the real registry.
//!
//! One busybox workflow with `continuous: {checkInterval: 10s}` and `promote: true`, the
//! operator the release build (`whittle operator` in the cluster's network namespace, as the
//! operator tests run it). Measured:
//! - the first run, apply to Succeeded (instrument, observe 5 s, collect, harden, verify);
//! - for each of `WHITTLE_BENCH_RUNS` (default 3) rebuilds pushed under the source tag: from the
//!   push to the run starting (the check interval's share), to the hardened image pushed, to
//!   the Deployment running the verified, promoted image;
//! - the registry requests the checks of an idle workflow make, from the registry's access log
//!   (target, issue 24: one manifest HEAD per check).
//!
//! Writes `$CARGO_TARGET_DIR/bench/continuous.json` (default `target/bench/continuous.json`).
//! `make bench-continuous` runs it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::json;
use whittle::api::{HardeningWorkflowStatus, Phase};
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::{fixtures, oci_layout};

use support::*;

const INTERVAL_SECONDS: u64 = 10;

/// The busybox fixture plus one layer with `marker` in `/www/release.txt`, pushed as
/// `shop/busybox:1`: a rebuild under the same tag.
fn push_rebuild(c: &Cluster, marker: &str) -> String {
    let fixture = fixtures::busybox(None).expect("busybox fixture");
    let copy = tempfile::tempdir().expect("temp dir");
    let layout = copy.path().join("layout");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&fixture.layout)
        .arg(&layout)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "copy the fixture layout");
    let layer = tempfile::tempdir().expect("layer dir");
    std::fs::create_dir_all(layer.path().join("www")).expect("mkdir");
    std::fs::write(layer.path().join("www/release.txt"), marker).expect("write");
    oci_layout::append_layer(&layout, &fixture.tag, layer.path(), "a rebuild").expect("layer");
    let rebuilt = fixtures::Fixture {
        name: "busybox-rebuilt".into(),
        layout,
        tag: fixture.tag.clone(),
    };
    rebuilt.push(c.registry(), "shop/busybox:1").expect("push")
}

async fn running_image(client: &kube::Client, ns: &str) -> String {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api.get("web").await.expect("Deployment web");
    let spec = d.spec.template.spec.expect("pod spec");
    spec.containers[0].image.clone().unwrap_or_default()
}

/// Polls the workflow every 100 ms until `done` holds, returning its status then.
async fn until(
    client: &kube::Client,
    ns: &str,
    done: impl Fn(&HardeningWorkflowStatus) -> bool,
) -> HardeningWorkflowStatus {
    let start = Instant::now();
    loop {
        let s = status(client, ns, "web").await;
        if done(&s) {
            return s;
        }
        assert!(s.phase() != Phase::Failed, "the workflow failed: {s:?}");
        assert!(start.elapsed() < WAIT, "timed out: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Manifest requests for the source tag in the registry's access log.
fn tag_requests(log: &str) -> (usize, usize) {
    let count = |method: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"{method} /v2/shop/busybox/manifests/1 ")))
            .count()
    };
    (count("HEAD"), count("GET"))
}

fn out_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench/continuous.json")
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a benchmark is not a test: say so and leave.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "bench continuous: skipped (a benchmark, not a test: run `make bench-continuous`)"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let runs: usize = std::env::var("WHITTLE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let busybox = push_rebuild(&cluster, "0");
    let operator = Operator::start_as(&cluster, kubeconfig, &[], None);
    let (client, ns) = namespace(&cluster, "bench", &[]).await;
    deploy_busybox_web(&client, &ns, &busybox, 1).await;

    let started = Instant::now();
    apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "observe": {"duration": "5s", "collectTimeout": "1m"},
               "verify": {"timeout": "1m"}, "promote": true,
               "continuous": {"checkInterval": format!("{INTERVAL_SECONDS}s")}}),
    )
    .await;
    until(&client, &ns, |s| {
        s.history.len() == 1 && s.phase() == Phase::Succeeded
    })
    .await;
    let first_run = started.elapsed().as_secs_f64();
    println!("first run (with observation): {first_run:.1} s");

    // Idle: count what the checks ask the registry.
    let before = tag_requests(&cluster.registry().log());
    let checked = status(&client, &ns, "web").await.checked_at;
    let idle = Duration::from_secs(INTERVAL_SECONDS * 4);
    tokio::time::sleep(idle).await;
    let after = tag_requests(&cluster.registry().log());
    let (heads, gets) = (after.0 - before.0, after.1 - before.1);
    let checks = (idle.as_secs() / INTERVAL_SECONDS) as usize;
    assert!(
        status(&client, &ns, "web").await.checked_at > checked,
        "checks ran"
    );
    println!("idle checks: about {checks}: {heads} manifest HEAD(s), {gets} GET(s) of the tag");

    let mut refreshes = Vec::new();
    for i in 1..=runs {
        let pushed = Instant::now();
        push_rebuild(&cluster, &i.to_string());
        let n = i + 1;
        until(&client, &ns, |s| {
            s.history.len() == n - 1 && s.phase() == Phase::Hardening
        })
        .await;
        let detected = pushed.elapsed().as_secs_f64();
        until(&client, &ns, |s| {
            s.phase() == Phase::Verifying || s.history.len() == n
        })
        .await;
        let hardened = pushed.elapsed().as_secs_f64();
        let done = until(&client, &ns, |s| s.history.len() == n).await;
        let image = done.hardened_image.clone().expect("hardened image");
        let start = Instant::now();
        while running_image(&client, &ns).await != image {
            assert!(start.elapsed() < WAIT, "not promoted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let promoted = pushed.elapsed().as_secs_f64();
        println!(
            "refresh {i}: run started after {detected:.1} s, hardened image pushed at {hardened:.1} s, verified and promoted at {promoted:.1} s"
        );
        refreshes.push(
            json!({"startedAfterSeconds": detected, "hardenedAtSeconds": hardened,
                              "promotedAtSeconds": promoted, "observed": done.history[0].observed}),
        );
    }
    drop(operator);

    let result = json!({
        "checkIntervalSeconds": INTERVAL_SECONDS,
        "firstRunSeconds": first_run,
        "idle": {"seconds": idle.as_secs(), "checks": checks, "manifestHeads": heads, "manifestGets": gets},
        "refreshes": refreshes,
    });
    let path = out_path();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("bench dir");
    std::fs::write(&path, serde_json::to_string_pretty(&result).expect("json")).expect("write");
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
