//! Benchmark (not a test): the operator's peak memory while 8 maximal reports arrive at once.
//!
//! A real control plane (no node: the pods are API objects, their tokens real pod-bound
//! ServiceAccount tokens from a TokenRequest, audience `whittle`, what the kubelet projects),
//! one workflow in `Observing`, and `whittle operator` (the release binary, a child process)
//! as a standby replica: a Lease held by another identity keeps its controller idle, and its
//! report intake serves as every replica's does. Eight senders, one per pod, each POST one
//! maximal report at the same moment and retry on 429 after `Retry-After`, as the sensor does.
//!
//! Two kinds of maximal report, each against a fresh operator:
//! - `stored`: inflates to just under the 16 MiB JSON limit and compresses to under the 1 MB
//!   a report ConfigMap may hold, so it is decoded, merged, recompressed and stored;
//! - `dense`: a body just under the 4 MiB limit that inflates to just under 16 MiB; decoded in
//!   full, then refused (413) because its compressed form cannot fit a ConfigMap.
//!
//! Peak RSS is the operator's `VmHWM` (from `/proc/PID/status`) after the last reply; the
//! baseline its RSS once idle. Target (issue 22, reported, not asserted): peak < 200 MiB.
//! Writes `$CARGO_TARGET_DIR/bench/intake.json` (default `target/bench/intake.json`).
//! `make bench-intake` runs it; `WHITTLE_BENCH_RUNS` (default 3) sets the runs.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whittle::api::HardeningWorkflow;
use whittle::api::names::{self, POD_TOKEN_HEADER, REPORT_AUDIENCE, WORKFLOW_LABEL};
use whittle::reports::{MAX_REPORT_JSON, MAX_STORED_BYTES, ReportKey};
use whittle::server::intake::MAX_BODY;
use whittle_sensor::report::{
    Access, Executable, Identity, Loss, Mode, PathRecord, Report, SCHEMA_VERSION,
};
use whittle_testbed::binaries;
use whittle_testbed::cluster::control_plane::ControlPlane;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const WHITTLE: &str = env!("CARGO_BIN_EXE_whittle");
const SENDERS: usize = 8;
const TARGET_PEAK_MIB: f64 = 200.0;
const MIB: f64 = (1 << 20) as f64;
const INSTRUMENTED: &str = "127.0.0.1:5000/shop/web@sha256:e7270000000000000000000000000000000000000000000000000000000000e7";
const LEASE: &str = "whittle-bench-leader";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Stored,
    Dense,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stored => "stored",
            Kind::Dense => "dense",
        }
    }
}

/// A deterministic stream of 64-bit values (splitmix64): the dense reports' random path parts.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn path(kind: Kind, i: usize, mix: &mut Mix) -> String {
    match kind {
        Kind::Stored => format!("/srv/app/data/d{:04}/f{i:07}.dat", i / 1000),
        Kind::Dense => format!("/srv/{:016x}/{:016x}", mix.next(), mix.next()),
    }
}

fn report(kind: Kind, namespace: &str, pod: &str, paths: usize) -> Report {
    let mut mix = Mix(0x7768_6974_746c_6502 ^ pod.len() as u64 ^ paths as u64);
    let paths = (0..paths)
        .map(|i| {
            let record = PathRecord {
                access: vec![Access::Open, Access::Read],
                exists: true,
                first_seen_ms: i as u64,
                count: 1,
            };
            (path(kind, i, &mut mix), record)
        })
        .collect();
    Report {
        schema_version: SCHEMA_VERSION,
        sensor_version: whittle::VERSION.into(),
        mode: Mode::Ptrace,
        identity: Identity {
            pod_name: Some(pod.into()),
            pod_namespace: Some(namespace.into()),
            container_name: Some("app".into()),
            image: Some("127.0.0.1:5000/shop/web:1.2-whittle-instrumented".into()),
        },
        started_at_ms: 1_700_000_000_000,
        stopped_at_ms: 1_700_000_060_000,
        argv: vec!["/srv/app/bin/server".into()],
        exit_status: 0,
        paths,
        executables: BTreeMap::from([(
            "/srv/app/bin/server".to_string(),
            Executable {
                argv0: "/srv/app/bin/server".into(),
                count: 1,
            },
        )]),
        created_files: Vec::new(),
        loss: Loss::default(),
    }
}

/// The largest report of `kind` for `pod` within the intake's limits: its JSON under
/// MAX_REPORT_JSON, its gzip body under MAX_BODY (and, for `stored`, under what a ConfigMap
/// holds). Returns (JSON bytes, gzip body).
fn maximal(kind: Kind, namespace: &str, pod: &str) -> Result<(usize, Vec<u8>)> {
    let margin = 64 << 10;
    let body_limit = match kind {
        Kind::Stored => MAX_STORED_BYTES - margin,
        Kind::Dense => MAX_BODY - margin,
    };
    let probe = serde_json::to_vec(&report(kind, namespace, pod, 1000))?;
    let mut paths = (MAX_REPORT_JSON - margin) * 1000 / probe.len();
    for _ in 0..50 {
        let json = serde_json::to_vec(&report(kind, namespace, pod, paths))?;
        let body = whittle_sensor::deliver::gzip(&json);
        if json.len() < MAX_REPORT_JSON - margin / 2 && body.len() < body_limit {
            return Ok((json.len(), body));
        }
        paths = paths * 97 / 100;
    }
    Err(format!("no {} report within the limits", kind.name()).into())
}

/// A pod object of `workflow` running the instrumented image, and the token the kubelet would
/// project into it.
async fn pod_with_token(client: &Client, ns: &str, name: &str) -> Result<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {WORKFLOW_LABEL: names::label_value("web")}},
        "spec": {
            "serviceAccountName": "reporter",
            "containers": [{"name": "app", "image": INSTRUMENTED}],
        },
    }))?;
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![REPORT_AUDIENCE.to_string()]),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request("reporter", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| "the TokenRequest returned no token".into())
}

/// One POST over a fresh connection: (status, Retry-After seconds).
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, u64)> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    // The intake may answer (429, 413) before the body is read, and close: then the write
    // fails and the answer is still there to read.
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await
    }
    .await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    if raw.is_empty() {
        sent?;
    }
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", &text[..text.len().min(200)]))?;
    let retry = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(1);
    Ok((status, retry))
}

/// Sends until the intake stops answering 429: (final status, 429s seen).
async fn deliver(
    addr: SocketAddr,
    path: String,
    token: String,
    pod_token: String,
    body: Vec<u8>,
) -> Result<(u16, u32)> {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Authorization", auth.as_str()),
        (POD_TOKEN_HEADER, pod_token.as_str()),
    ];
    let mut throttled = 0;
    loop {
        let (status, retry) = post(addr, &path, &headers, &body).await?;
        if status != 429 || throttled >= 60 {
            return Ok((status, throttled));
        }
        throttled += 1;
        tokio::time::sleep(Duration::from_secs(retry)).await;
    }
}

/// `whittle operator` as a standby replica: its controller waits for the Lease another identity
/// holds; its intake serves.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(plane: &ControlPlane, dir: &Path, port: u16) -> Result<Operator> {
        let log = dir.join(format!("operator-{port}.log"));
        let out = fs::File::create(&log)?;
        let child = Command::new(WHITTLE)
            .args(["operator", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--report-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--sensor")
            .arg(binaries::sensor_binary()?)
            .arg("--report-key-file")
            .arg(dir.join("report.key"))
            .args([
                "--leader-elect",
                "--lease-name",
                LEASE,
                "--service-namespace",
                "default",
            ])
            .env("KUBECONFIG", plane.kubeconfig())
            .env("POD_NAME", "bench-standby")
            .env("RUST_LOG", "whittle=info,warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Operator { child, log })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `field` of /proc/PID/status (VmRSS, VmHWM) in bytes.
    fn memory(&self, field: &str) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("no {field} in /proc/{}/status", self.child.id()).into())
    }

    async fn ready(&mut self, addr: SocketAddr) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the operator exited ({status}):\n{}", self.log()).into());
            }
            if self.log().contains("waiting to become the leader")
                && tokio::net::TcpStream::connect(addr).await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("the operator did not start serving:\n{}", self.log()).into())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    plane: ControlPlane,
    client: Client,
    ns: String,
    token: String,
    dir: tempfile::TempDir,
    pods: usize,
}

async fn setup() -> Result<Setup> {
    let plane = ControlPlane::start().await?;
    plane.install_crds(&[whittle::api::crd()?]).await?;
    let client = plane.client();
    let ns = plane.namespace("bench").await?;
    let workflows: Api<HardeningWorkflow> = Api::namespaced(client.clone(), &ns);
    let spec = serde_json::from_value(json!({"target": {"name": "web"}}))?;
    let workflow = workflows
        .create(&PostParams::default(), &HardeningWorkflow::new("web", spec))
        .await?;
    let status = json!({"status": {"phase": "Observing", "instrumentedImage": INSTRUMENTED}});
    workflows
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let uid = workflow.metadata.uid.ok_or("the workflow has no uid")?;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "reporter"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await?;
    // Held by another replica for an hour: the operators under test stay standbys.
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("bench-leader".into()),
            lease_duration_seconds: Some(3600),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &lease)
        .await?;
    let dir = tempfile::tempdir()?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("random report key: {e}"))?;
    // As text: the operator trims whitespace around a key file.
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(dir.path().join("report.key"), &text)?;
    let key = ReportKey::new(text.into_bytes())?;
    let token = key.token(&ns, "web", &uid);
    Ok(Setup {
        plane,
        client,
        ns,
        token,
        dir,
        pods: 0,
    })
}

/// One run of `kind`: a fresh operator, 8 fresh pods, 8 maximal reports at once.
async fn run_once(setup: &mut Setup, kind: Kind) -> Result<Value> {
    let mut bodies = Vec::new();
    let mut pods = Vec::new();
    for _ in 0..SENDERS {
        setup.pods += 1;
        let pod = format!("web-{}-{}", kind.name(), setup.pods);
        let token = pod_with_token(&setup.client, &setup.ns, &pod).await?;
        bodies.push(maximal(kind, &setup.ns, &pod)?);
        pods.push(token);
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut operator = Operator::start(&setup.plane, setup.dir.path(), port)?;
    operator.ready(addr).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = operator.memory("VmRSS")?;
    let path = names::report_path(&setup.ns, "web");
    let json_bytes = bodies.iter().map(|(j, _)| *j).max().unwrap_or(0);
    let body_bytes = bodies.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    let start = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .zip(pods)
        .map(|((_, body), pod_token)| {
            tokio::spawn(deliver(
                addr,
                path.clone(),
                setup.token.clone(),
                pod_token,
                body,
            ))
        })
        .collect();
    let mut statuses = BTreeMap::<u16, u32>::new();
    let mut throttled = 0;
    for task in tasks {
        let (status, retries) = task.await??;
        *statuses.entry(status).or_default() += 1;
        throttled += retries;
    }
    let wall = start.elapsed().as_secs_f64();
    let peak = operator.memory("VmHWM")?;
    if operator.log().contains("leading: reconciling") {
        return Err("the operator under test became the leader".into());
    }
    Ok(json!({
        "kind": kind.name(),
        "json_bytes": json_bytes,
        "body_bytes": body_bytes,
        "statuses": statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "retries_after_429": throttled,
        "seconds": wall,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
    }))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn run() -> Result<()> {
    whittle::init_tls();
    let runs: usize = std::env::var("WHITTLE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut setup = setup().await?;
    let mut results = Vec::new();
    for run in 0..runs {
        for kind in [Kind::Stored, Kind::Dense] {
            let r = run_once(&mut setup, kind).await?;
            println!(
                "run {} {:<6} report {:>5.1} MiB JSON, body {:>4.2} MiB: replies {} (429s retried: {}), {:.1}s; RSS {:.0} MiB idle, peak {:.0} MiB",
                run + 1,
                kind.name(),
                r["json_bytes"].as_f64().unwrap_or(0.0) / MIB,
                r["body_bytes"].as_f64().unwrap_or(0.0) / MIB,
                r["statuses"],
                r["retries_after_429"],
                r["seconds"].as_f64().unwrap_or(0.0),
                r["baseline_rss_bytes"].as_f64().unwrap_or(0.0) / MIB,
                r["peak_rss_bytes"].as_f64().unwrap_or(0.0) / MIB,
            );
            results.push(r);
        }
    }
    let mut summary = BTreeMap::new();
    for kind in [Kind::Stored, Kind::Dense] {
        let peaks: Vec<f64> = results
            .iter()
            .filter(|r| r["kind"] == kind.name())
            .filter_map(|r| r["peak_rss_bytes"].as_f64())
            .map(|b| b / MIB)
            .collect();
        let max = peaks.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<6} peak RSS median {:.0} MiB, max {:.0} MiB (target < {TARGET_PEAK_MIB} MiB): {}",
            kind.name(),
            median(peaks.clone()),
            max,
            if max < TARGET_PEAK_MIB {
                "met"
            } else {
                "MISSED"
            }
        );
        summary.insert(
            kind.name(),
            json!({"median_peak_mib": median(peaks), "max_peak_mib": max}),
        );
    }
    let out = json!({
        "senders": SENDERS,
        "target_peak_mib": TARGET_PEAK_MIB,
        "summary": summary,
        "runs": results,
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench");
    fs::create_dir_all(&dir)?;
    let file = dir.join("intake.json");
    fs::write(&file, serde_json::to_string_pretty(&out)?)?;
    println!("written to {}", file.display());
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a benchmark is not a test: say so and leave.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bench intake: skipped (a benchmark, not a test: run `make bench-intake`)");
        return ExitCode::SUCCESS;
    }
    let result = tokio::runtime::Runtime::new()
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench intake: {e}");
            ExitCode::FAILURE
        }
    }
}
