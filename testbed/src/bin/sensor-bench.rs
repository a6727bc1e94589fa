//! Benchmark (not a test): nginx requests/s from wrk on loopback, plain and under the sensor in
//! each mode, in the same run. wrk runs inside the container's network namespace (nsenter), so
//! no proxy sits in the path. Writes target/bench/sensor.json and prints a table.
//!
//! Targets: fanotify >= 95% of plain, ptrace >= 70%.

use std::process::{Command, ExitCode};
use std::time::Duration;

use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::images::fixtures;
use whittle_testbed::runc::{Bundle, Container, DEFAULT_CAPABILITIES, RunOptions};

const SECONDS: &str = "10";

fn requests_per_second(variant: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let fixture = fixtures::nginx()?;
    let mut bundle = Bundle::from_layout(&fixture.layout, &fixture.tag)?;
    if variant != "plain" {
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
        argv.extend(bundle.args());
        bundle.set_args(argv);
        if variant == "fanotify" {
            let caps: Vec<&str> = DEFAULT_CAPABILITIES
                .iter()
                .copied()
                .chain(["CAP_SYS_ADMIN"])
                .collect();
            bundle.set_capabilities(&caps);
        }
    }
    let mut c = Container::start(bundle, RunOptions::default())?;
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

fn main() -> ExitCode {
    let mut results = Vec::new();
    for variant in ["plain", "fanotify", "ptrace"] {
        match requests_per_second(variant) {
            Ok(rps) => results.push((variant, rps)),
            Err(e) => {
                eprintln!("sensor-bench: {variant}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let plain = results[0].1;
    println!("{:<10} {:>12} {:>8}", "variant", "requests/s", "ratio");
    let mut json = serde_json::Map::new();
    for (variant, rps) in &results {
        let ratio = rps / plain;
        println!("{variant:<10} {rps:>12.0} {:>7.1}%", ratio * 100.0);
        json.insert(
            variant.to_string(),
            serde_json::json!({"requestsPerSecond": rps, "ratioToPlain": ratio}),
        );
    }
    json.insert(
        "wrk".into(),
        serde_json::json!(format!(
            "-t1 -c16 -d{SECONDS}s, inside the container's network namespace"
        )),
    );
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
