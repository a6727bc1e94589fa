//! `whittle local`: the whole workflow on this machine, with runc.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use whittle::image::distribution::store::Location;
use whittle::image::instrument::find_sensor;
use whittle::image::limits::Limits;
use whittle::local::probe::{Argv, parse_argv};
use whittle::local::progress::Progress;
use whittle::local::workflow::{self, LocalOptions};

use super::image::write_json;
use super::{CliResult, EvidenceArgs, HardenOutputArgs, ReadArgs, RegistryArgs, parse_location};

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// The image to harden: registry/repo:tag, registry/repo@sha256:..., or oci:DIR:TAG.
    #[arg(value_parser = parse_location)]
    src: Location,
    /// A shell command run on the host against the app (`$WHITTLE_TARGET` is host:port);
    /// repeatable. Each must pass against the original image and then the hardened one.
    #[arg(long = "exercise", value_name = "CMD", required = true)]
    exercises: Vec<String>,
    /// A command run inside the container, as `docker exec` runs it (split into words as a
    /// shell would, run without one); repeatable. While observing it runs under the sensor, so
    /// what it needs is kept; it must then succeed in the hardened container too.
    #[arg(long = "exec-probe", value_name = "CMD", value_parser = parse_argv)]
    exec_probes: Vec<Argv>,
    /// Do not run the image's HEALTHCHECK (run by default, like an --exec-probe).
    #[arg(long)]
    no_healthcheck: bool,
    /// The app's port in the container (default: the image's first ExposedPort).
    #[arg(long)]
    port: Option<u16>,
    /// A command that succeeds once the app is ready (default: the port accepts connections).
    #[arg(long, value_name = "CMD")]
    ready: Option<String>,
    /// Keep observing this long after the exercises (e.g. 30s, 2m).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "0s")]
    observe_for: Duration,
    /// The sensor's monitor: auto (seccomp here, else ptrace: no added capability), fanotify,
    /// ptrace, seccomp, both.
    #[arg(long, default_value = "auto", value_parser = ["auto", "fanotify", "ptrace", "seccomp", "both"])]
    mode: String,
    /// The static sensor binary (default: $WHITTLE_SENSOR_BIN, then whittle-sensor beside whittle).
    #[arg(long, value_name = "PATH")]
    sensor: Option<PathBuf>,
    /// How long the app may take to become ready.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "60s")]
    ready_timeout: Duration,
    /// How long one exercise may run.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "120s")]
    exercise_timeout: Duration,
    /// How long a container may take to exit after the image's StopSignal before it is
    /// killed, as `docker stop` does; the sensor's grace period fits inside it.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "10s")]
    stop_timeout: Duration,
    /// How long instrumenting may take in all (e.g. 30m, 90s).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30m")]
    instrument_timeout: Duration,
    #[command(flatten)]
    output: HardenOutputArgs,
    /// Write the summary as one self-contained HTML page to FILE (no script, nothing fetched:
    /// it opens offline), also when verification fails.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    evidence: EvidenceArgs,
    #[command(flatten)]
    budgets: ReadArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `90`, `90s`, `2m`, `1h`, `500ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

pub async fn local(a: LocalArgs) -> CliResult {
    a.evidence
        .check(a.output.hardened_image.as_ref().unwrap_or(&a.src))?;
    let evidence = a.evidence.options()?;
    let store = a.registry.store(
        a.budgets.apply(Limits {
            instrument_timeout: a.instrument_timeout,
            ..Limits::default()
        }),
        &[Some(&a.src), a.output.hardened_image.as_ref()],
    )?;
    let opts = LocalOptions {
        evidence,
        attach_profile: !a.evidence.no_profile,
        sensor: find_sensor(a.sensor.as_deref())?,
        src: a.src,
        exercises: a.exercises,
        exec_probes: a.exec_probes.into_iter().map(|p| p.0).collect(),
        healthcheck: !a.no_healthcheck,
        port: a.port,
        ready: a.ready,
        observe_for: a.observe_for,
        mode: a.mode,
        include: a.output.include,
        exclude: a.output.exclude,
        packs: a.output.packs,
        compression: a.output.compression,
        hardened_image: a.output.hardened_image,
        ready_timeout: a.ready_timeout,
        exercise_timeout: a.exercise_timeout,
        stop_timeout: a.stop_timeout,
    };
    let progress = Progress::new();
    let summary = workflow::run(&store, &opts, &progress).await?;
    println!("\n{}", workflow::table(&summary));
    if let Some(path) = &a.output.summary {
        write_json(path, &summary)?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, whittle::page::local(&summary))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if summary.verified {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", workflow::failure(&summary));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
    }
}
