//! Benchmark (not a test): a HardeningPolicy over many small Deployments on the real node.
//!
//! For each size of `WHITTLE_BENCH_SIZES` (default `5,10,20`), a fresh namespace with that many
//! busybox httpd Deployments (one replica, one Service each) and a policy with `maxConcurrent:
//! 5` (`WHITTLE_BENCH_CONCURRENT`), observing 5 s, verifying by readiness. The operator (the
//! bench-profile `whittle`, with exactly the chart's permissions) is restarted before each size,
//! so each peak is its own. Measured per size:
//! - the time from the policy's creation to every workflow Succeeded;
//! - where a workflow's time goes: the mean time to each of its conditions (Instrumented,
//!   Observed, Hardened, Verified), from its creation;
//! - the operator's peak RSS (sampled every 200 ms, and VmHWM at the end) and CPU seconds
//!   (utime + stime from /proc/PID/stat);
//! - API requests the operator made per workflow, from the API server's audit log (the chart's
//!   ServiceAccount only).
//!
//! Writes `$CARGO_TARGET_DIR/bench/policy.json`. `make bench-policy` runs it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use whittle::api::policy::HardeningPolicy;
use whittle::api::{HardeningWorkflow, Phase};
use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;

use support::*;

const CONDITIONS: [&str; 4] = ["Instrumented", "Observed", "Hardened", "Verified"];

fn out_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench/policy.json")
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("bench policy: skipped (a benchmark, not a test: run `make bench-policy`)");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run())
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// A field of /proc/PID/status in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// utime + stime of /proc/PID/stat, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command may hold spaces: fields count from after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // state is field 3 of stat, the first after ')': utime is 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}

/// Distinct requests (audit IDs) in the audit log.
fn requests(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["auditID"].as_str().map(str::to_string))
        .collect()
}

fn deployment(name: &str, image: &str) -> (Value, Value) {
    let (mut d, mut service) = busybox_web(image, 1);
    d["metadata"] = json!({"name": name, "labels": {"bench": "yes"}});
    d["spec"]["selector"] = json!({"matchLabels": {"app": name}});
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": name});
    service["metadata"]["name"] = json!(name);
    service["spec"]["selector"] = json!({"app": name});
    (d, service)
}

async fn workflows(client: &Client, ns: &str) -> Vec<HardeningWorkflow> {
    Api::<HardeningWorkflow>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Mean seconds from each workflow's creation to each of its conditions turning True.
fn phase_times(ws: &[HardeningWorkflow]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for w in ws {
        let Some(created) = w.metadata.creation_timestamp.as_ref() else {
            continue;
        };
        for c in w.status.iter().flat_map(|s| s.conditions.iter()) {
            if CONDITIONS.contains(&c.type_.as_str()) && c.status == "True" {
                let secs = (c.last_transition_time.0.as_second() - created.0.as_second()) as f64;
                let e = sums.entry(c.type_.clone()).or_default();
                e.0 += secs;
                e.1 += 1;
            }
        }
    }
    sums.into_iter()
        .map(|(k, (sum, n))| (k, sum / f64::from(n.max(1))))
        .collect()
}

async fn run() -> ExitCode {
    let sizes = env_list("WHITTLE_BENCH_SIZES", "5,10,20");
    let concurrent = env_list("WHITTLE_BENCH_CONCURRENT", "5")
        .first()
        .copied()
        .unwrap_or(5);
    let cluster = Cluster::start().await.expect("cluster");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = install_chart_rbac(&cluster, dir.path()).await;
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(cluster.registry(), "bench/busybox:1")
        .expect("push busybox");
    let mut operator = Operator::start_as(&cluster, kubeconfig, &[], None);
    let mut results = Vec::new();
    for size in sizes {
        operator.restart();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = operator.pid().expect("operator pid");
        let (client, ns) = namespace(&cluster, &format!("bench{size}"), &[]).await;
        for i in 0..size {
            let (d, s) = deployment(&format!("w{i}"), &image);
            apply(&client, &ns, &d).await;
            apply(&client, &ns, &s).await;
        }
        let idle_rss = memory(pid, "VmRSS");
        let cpu_before = cpu_seconds(pid);
        let requests_before = requests(&cluster.control_plane().audit_log());
        let peak = Arc::new(AtomicU64::new(idle_rss));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(memory(pid, "VmRSS"), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        let policy: HardeningPolicy = serde_json::from_value(json!({
            "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningPolicy",
            "metadata": {"name": "bench"},
            "spec": {"mode": "Harden", "selector": {"matchLabels": {"bench": "yes"}},
                     "kinds": ["Deployment"], "maxConcurrent": concurrent,
                     "template": {"spec": {"registry": {"insecure": true},
                         "observe": {"duration": "5s", "collectTimeout": "1m"},
                         "verify": {"timeout": "3m"}}}}
        }))
        .expect("policy");
        let started = Instant::now();
        Api::<HardeningPolicy>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &policy)
            .await
            .expect("create policy");
        let mut most_running = 0;
        loop {
            let ws = workflows(&client, &ns).await;
            let running = ws
                .iter()
                .filter(|w| {
                    let p = w.status.as_ref().map(|s| s.phase()).unwrap_or_default();
                    !matches!(p, Phase::Pending | Phase::Succeeded | Phase::Failed)
                })
                .count();
            most_running = most_running.max(running);
            let failed: Vec<String> = ws
                .iter()
                .filter(|w| {
                    w.status
                        .as_ref()
                        .is_some_and(|s| s.phase() == Phase::Failed)
                })
                .map(|w| w.name_any())
                .collect();
            assert!(
                failed.is_empty(),
                "workflows failed: {failed:?}\n{}",
                operator.log()
            );
            let done = ws.len() == size
                && ws.iter().all(|w| {
                    w.status
                        .as_ref()
                        .is_some_and(|s| s.phase() == Phase::Succeeded)
                });
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60 * 60),
                "timed out:\n{}",
                operator.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let total = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let _ = sampler.join();
        let cpu = cpu_seconds(pid) - cpu_before;
        let made = requests(&cluster.control_plane().audit_log());
        let calls = made.difference(&requests_before).count();
        let ws = workflows(&client, &ns).await;
        let phases = phase_times(&ws);
        let result = json!({
            "workloads": size,
            "maxConcurrent": concurrent,
            "mostRunningAtOnce": most_running,
            "totalSeconds": total,
            "meanSecondsToCondition": phases,
            "operatorIdleRssBytes": idle_rss,
            "operatorPeakRssBytes": peak.load(Ordering::SeqCst),
            "operatorVmHwmBytes": memory(pid, "VmHWM"),
            "operatorCpuSeconds": cpu,
            "apiRequests": calls,
            "apiRequestsPerWorkflow": calls as f64 / size as f64,
        });
        println!("{size} workloads: {result}");
        results.push(result);
        // Deleting the policy deletes its workflows; the next size starts clean.
        let _ = Api::<HardeningPolicy>::namespaced(client.clone(), &ns)
            .delete("bench", &Default::default())
            .await;
    }
    drop(operator);
    let path = out_path();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("bench dir");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({"runs": results})).expect("json"),
    )
    .expect("write");
    println!("wrote {}", path.display());
    ExitCode::SUCCESS
}
