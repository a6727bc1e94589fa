//! Benchmark (not a test): nginx requests/s from wrk on loopback, plain and under the sensor in
//! each mode, in the same run. wrk runs inside the container's network namespace (nsenter), so
//! no proxy sits in the path. Each variant runs RUNS times, round-robin (so a change in the
//! machine's load hits every variant alike); the table gives the median and the spread.
//!
//! Then the cost of one trapped syscall per monitor: a fixed workload (`find / -xdev`, which
//! stats and opens every directory of the image, 20 times over) is timed plain and under each
//! syscall monitor, less the same container running `true`, and the difference to plain is
//! divided by the number of path syscalls the sensor recorded (the sum of the report's
//! counts).
//!
//! Writes target/bench/sensor.json and prints both tables. Targets: fanotify >= 95% of plain,
//! ptrace and seccomp >= 25%.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::images::fixtures;
use whittle_testbed::runc::{Bundle, Container, DEFAULT_CAPABILITIES, RunOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const SECONDS: &str = "10";
const RUNS: usize = 5;
const VARIANTS: [&str; 4] = ["plain", "fanotify", "ptrace", "seccomp"];
/// The monitors that stop the app on path syscalls, whose cost per stop is measured.
const SYSCALL_MONITORS: [&str; 2] = ["ptrace", "seccomp"];
const WORKLOAD: &str = "i=0; while [ $i -lt 20 ]; do find / -xdev >/dev/null; i=$((i+1)); done";

/// The nginx fixture, under the sensor in `variant` unless plain, running `app` (the image's
/// command when None).
fn bundle(variant: &str, app: Option<Vec<String>>) -> Result<Bundle> {
    let fixture = fixtures::nginx()?;
    let mut bundle = Bundle::from_layout(&fixture.layout, &fixture.tag)?;
    let app = app.unwrap_or_else(|| bundle.args());
    if variant == "plain" {
        bundle.set_args(app);
        return Ok(bundle);
    }
    let dir = bundle.rootfs().join(".whittle");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(sensor_binary()?, dir.join("sensor"))?;
    let mut argv: Vec<String> = [
        "/.whittle/sensor",
        "--mode",
        variant,
        "--report-file",
        "/.whittle/report.json",
        "--",
    ]
    .map(String::from)
    .to_vec();
    argv.extend(app);
    bundle.set_args(argv);
    if variant == "fanotify" {
        let caps: Vec<&str> = DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .chain(["CAP_SYS_ADMIN"])
            .collect();
        bundle.set_capabilities(&caps);
    }
    Ok(bundle)
}

fn requests_per_second(variant: &str) -> Result<f64> {
    let mut c = Container::start(bundle(variant, None)?, RunOptions::default())?;
    c.wait_port(80, Duration::from_secs(30))?;
    let out = Command::new("nsenter")
        .arg(format!("--net={}", c.netns_path().display()))
        .args(["wrk", "-t1", "-c16", "-d", SECONDS, "http://127.0.0.1:80/"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "wrk printed no Requests/sec:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let exit = c.stop(Duration::from_secs(30))?;
    if exit.code != 0 {
        return Err(format!("{variant}: nginx exited {}: {}", exit.code, c.stderr()).into());
    }
    Ok(rps)
}

/// Seconds a container running `script` takes from start to exit, and, under a monitor, the
/// number of path syscalls its report counts.
fn workload(variant: &str, script: &str) -> Result<(f64, u64)> {
    let app = ["sh", "-c", script].map(String::from).to_vec();
    let b = bundle(variant, Some(app))?;
    let start = Instant::now();
    let mut c = Container::start(b, RunOptions::default())?;
    let exit = c.wait(Duration::from_secs(300))?;
    let took = start.elapsed().as_secs_f64();
    if exit.code != 0 {
        return Err(format!("{variant}: workload exited {}: {}", exit.code, c.stderr()).into());
    }
    if variant == "plain" {
        return Ok((took, 0));
    }
    let path = c.bundle().rootfs().join(".whittle/report.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let count = report["paths"]
        .as_object()
        .ok_or_else(|| format!("{}: no paths in the report", path.display()))?
        .values()
        .filter_map(|r| r["count"].as_u64())
        .sum();
    Ok((took, count))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn run() -> Result<serde_json::Value> {
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..RUNS {
        for (i, variant) in VARIANTS.iter().enumerate() {
            let r = requests_per_second(variant).map_err(|e| format!("{variant}: {e}"))?;
            eprintln!("round {}: {variant} {r:.0} requests/s", round + 1);
            rps[i].push(r);
        }
    }
    // A variant's share of plain is taken within each round (the same machine load) and the
    // median of those is reported: the load of a shared machine moves plain by 2x between
    // rounds, which the ratio of the two medians would mix in.
    println!(
        "{:<10} {:>12} {:>22} {:>10} {:>16}",
        "variant", "median rq/s", "min-max rq/s", "of plain", "min-max of plain"
    );
    let mut json = serde_json::Map::new();
    for (variant, runs) in VARIANTS.iter().zip(&rps) {
        let m = median(runs);
        let (lo, hi) = min_max(runs);
        let ratios: Vec<f64> = runs.iter().zip(&rps[0]).map(|(r, p)| r / p).collect();
        let ratio = median(&ratios);
        let (rlo, rhi) = min_max(&ratios);
        println!(
            "{variant:<10} {m:>12.0} {:>22} {:>9.1}% {:>16}",
            format!("{lo:.0}-{hi:.0}"),
            ratio * 100.0,
            format!("{:.1}-{:.1}%", rlo * 100.0, rhi * 100.0)
        );
        json.insert(
            variant.to_string(),
            serde_json::json!({
                "requestsPerSecond": runs,
                "median": m,
                "min": lo,
                "max": hi,
                "ratiosToPlain": ratios,
                "ratioToPlain": ratio,
            }),
        );
    }

    let variants: Vec<&str> = ["plain"].into_iter().chain(SYSCALL_MONITORS).collect();
    // Each run is timed with the workload and with `true` in its place: the difference leaves
    // out what does not depend on the workload (runc, the sensor's start, the report).
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut trapped = vec![0u64; variants.len()];
    for _ in 0..RUNS {
        for (i, variant) in variants.iter().enumerate() {
            let (t, n) =
                workload(variant, WORKLOAD).map_err(|e| format!("{variant} workload: {e}"))?;
            let (idle, _) =
                workload(variant, "true").map_err(|e| format!("{variant} true: {e}"))?;
            times[i].push(t - idle);
            trapped[i] = trapped[i].max(n);
        }
    }
    let plain_s = median(&times[0]);
    println!("\nper trapped syscall (`{WORKLOAD}`, plain {plain_s:.3} s):");
    println!(
        "{:<10} {:>10} {:>10} {:>14}",
        "monitor", "median s", "syscalls", "us/syscall"
    );
    let mut per_event = serde_json::Map::new();
    for i in 1..variants.len() {
        let m = median(&times[i]);
        let us = (m - plain_s) / trapped[i].max(1) as f64 * 1e6;
        println!(
            "{:<10} {m:>10.3} {:>10} {us:>14.1}",
            variants[i], trapped[i]
        );
        per_event.insert(
            variants[i].to_string(),
            serde_json::json!({
                "seconds": times[i],
                "medianSeconds": m,
                "trappedSyscalls": trapped[i],
                "microsecondsPerSyscall": us,
            }),
        );
    }
    per_event.insert("plainSeconds".into(), serde_json::json!(times[0]));
    per_event.insert("workload".into(), serde_json::json!(WORKLOAD));
    json.insert("perSyscall".into(), per_event.into());
    json.insert(
        "wrk".into(),
        serde_json::json!(format!(
            "-t1 -c16 -d{SECONDS}s, inside the container's network namespace, {RUNS} runs"
        )),
    );
    Ok(json.into())
}

fn main() -> ExitCode {
    let json = match run() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("sensor-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let path = dir.join("sensor.json");
    let written = std::fs::create_dir_all(&dir).and_then(|_| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => {
            println!("written to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sensor-bench: writing {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
