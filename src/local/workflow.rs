//! `whittle local`: instrument, observe under runc while the exercises run, harden with the
//! sensor's report, then run the hardened image and the same exercises against it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::bundle::{RunConfig, write_spec};
use super::container::{Container, parse_signal};
use super::exercise::{self, ExerciseResult};
use super::forward::Forward;
use super::probe::{self, Probe, ProbeKind};
use super::progress::Progress;
use super::{LocalError, last_lines};
use crate::evidence::produce::{Evidence, EvidenceOptions, HardenInputs, lines, produce};
use crate::evidence::profile;
use crate::image::analysis::packs::Pack;
use crate::image::config::{argv, strings};
use crate::image::distribution::store::{Image, Location, Store};
use crate::image::harden::{self, HardenOptions, Summary};
use crate::image::instrument::instrument;
use crate::image::media::LayerCompression;
use crate::image::unpack::unpack;
use k8s_openapi::jiff::Timestamp;

/// Where the sensor writes its report inside the container.
const REPORT: &str = "/.whittle/report.json";
/// Of `--stop-timeout`, what the sensor leaves itself to write its report after the app's
/// grace period (the rest), before the SIGKILL.
const REPORT_MARGIN: Duration = Duration::from_secs(2);
/// Lines of the hardened container's stderr shown when verification fails.
const STDERR_LINES: usize = 20;

pub struct LocalOptions {
    pub src: Location,
    pub exercises: Vec<String>,
    /// `--exec-probe` commands, each an argv run in the container.
    pub exec_probes: Vec<Vec<String>>,
    /// Run the image's HEALTHCHECK as a probe too.
    pub healthcheck: bool,
    pub port: Option<u16>,
    pub ready: Option<String>,
    pub observe_for: Duration,
    /// The sensor's `--mode`: auto, fanotify, ptrace or both.
    pub mode: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub packs: Vec<Pack>,
    pub compression: LayerCompression,
    pub hardened_image: Option<Location>,
    pub sensor: PathBuf,
    pub ready_timeout: Duration,
    pub exercise_timeout: Duration,
    /// StopSignal, then SIGKILL after this long.
    pub stop_timeout: Duration,
    /// SBOMs, vulnerabilities, signature; the image is signed only once it verified.
    pub evidence: EvidenceOptions,
    /// Attach the report to the hardened image as its profile (`evidence::profile`), once it
    /// verified: a profile is what a later harden trusts without observing.
    pub attach_profile: bool,
}

/// One exercise against both images.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExerciseOutcome {
    pub command: String,
    pub original: ExerciseResult,
    /// None when the hardened image never became ready.
    pub hardened: Option<ExerciseResult>,
}

/// One probe (a command run in the container) in both containers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOutcome {
    pub kind: ProbeKind,
    pub command: Vec<String>,
    /// Run under `whittle-sensor exec` in the instrumented container.
    pub original: ExerciseResult,
    /// Run as written in the hardened container; None when it never became ready.
    pub hardened: Option<ExerciseResult>,
    /// The hardened image lacks the probe's command (runc or a shell found no such file).
    pub command_missing: bool,
}

impl ProbeOutcome {
    fn passed(&self) -> bool {
        self.hardened.as_ref().is_some_and(|h| h.passed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// What `--summary` writes: the harden summary plus the verification.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalSummary {
    #[serde(flatten)]
    pub harden: Summary,
    #[serde(flatten)]
    pub evidence: Evidence,
    pub instrumented_image: String,
    /// True only when every exercise and every probe passed against the hardened image.
    pub verified: bool,
    pub exercises: Vec<ExerciseOutcome>,
    pub probes: Vec<ProbeOutcome>,
    pub phases: Vec<Phase>,
    /// The hardened container's last stderr lines, when verification failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardened_stderr: Option<String>,
}

impl LocalSummary {
    /// The exercises that failed against the hardened image.
    pub fn failed(&self) -> impl Iterator<Item = &ExerciseOutcome> {
        self.exercises
            .iter()
            .filter(|e| !e.hardened.as_ref().is_some_and(|h| h.passed))
    }
}

/// A container of `image` running with a host port forwarded to its app.
struct Running {
    container: Container,
    target: String,
    _forward: Forward,
    bundle: tempfile::TempDir,
    stop_signal: String,
}

impl Running {
    fn rootfs(&self) -> PathBuf {
        self.bundle.path().join("rootfs")
    }
}

/// `--port`, else the image's first ExposedPort.
fn app_port(image: &Image, port: Option<u16>) -> Result<u16, LocalError> {
    if let Some(p) = port {
        return Ok(p);
    }
    image.config["config"]["ExposedPorts"]
        .as_object()
        .into_iter()
        .flat_map(|ports| ports.keys())
        .find_map(|k| k.split('/').next()?.parse().ok())
        .ok_or_else(|| LocalError::NoPort {
            image: image.pinned.to_string(),
        })
}

/// Unpacks `image`, starts `args` in it and waits until the app is ready.
async fn start(
    store: &Store,
    image: &Image,
    args: Vec<String>,
    extra_capabilities: Vec<String>,
    port: u16,
    opts: &LocalOptions,
    progress: &Progress,
) -> Result<Running, LocalError> {
    let bundle = tempfile::Builder::new()
        .prefix("whittle-local-")
        .tempdir()
        .map_err(LocalError::io("creating a bundle directory"))?;
    let rootfs = bundle.path().join("rootfs");
    let bar = progress.bytes("unpack", image.compressed_size());
    unpack(store, image, &rootfs, Some(&bar)).await?;
    bar.finish_and_clear();
    let whittle_dir = rootfs.join(".whittle");
    if whittle_dir.is_dir() {
        // The app may run as any user; the sensor, running as that user, writes the report here.
        std::fs::set_permissions(
            &whittle_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .map_err(LocalError::io("making /.whittle writable"))?;
    }
    let config = &image.config["config"];
    let run = RunConfig {
        args,
        env: strings(&image.config, "Env"),
        cwd: config["WorkingDir"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        user: config["User"].as_str().unwrap_or_default().to_string(),
        extra_capabilities,
    };
    write_spec(bundle.path(), &rootfs, &run)?;
    let mut container = Container::start(bundle.path()).await?;
    let forward = Forward::start(container.netns(), port).await?;
    let target = forward.addr().to_string();
    container
        .wait_ready(port, opts.ready.as_deref(), &target, opts.ready_timeout)
        .await?;
    Ok(Running {
        container,
        target,
        _forward: forward,
        bundle,
        stop_signal: config["StopSignal"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

async fn stop(running: &mut Running, timeout: Duration) -> Result<i32, LocalError> {
    let signal = parse_signal(&running.stop_signal)?;
    running.container.stop(signal, timeout).await
}

/// The probes to run: the image's HEALTHCHECK (unless turned off), then each `--exec-probe`.
fn probes(image: &Image, opts: &LocalOptions) -> Result<Vec<Probe>, LocalError> {
    let mut probes = Vec::new();
    if opts.healthcheck {
        probes.extend(probe::healthcheck(&image.config)?);
    }
    probes.extend(opts.exec_probes.iter().map(|argv| Probe {
        kind: ProbeKind::ExecProbe,
        argv: argv.clone(),
    }));
    Ok(probes)
}

/// The sensor's `--grace`: the app gets the stop timeout less a margin for the report, so the
/// report is written before the SIGKILL.
fn sensor_grace(stop_timeout: Duration) -> String {
    let grace = stop_timeout.saturating_sub(REPORT_MARGIN).as_secs().max(1);
    grace.to_string()
}

pub async fn run(
    store: &Store,
    opts: &LocalOptions,
    progress: &Progress,
) -> Result<LocalSummary, LocalError> {
    let mut phases = Vec::new();
    let mut clock = Instant::now();
    let mut phase = |name: &str, message: String, clock: &mut Instant| {
        let seconds = clock.elapsed().as_secs_f64();
        progress.phase(name, &message);
        phases.push(Phase {
            name: name.to_string(),
            seconds,
        });
        *clock = Instant::now();
    };

    // 1. Instrument.
    let instrumented = instrument(store, &opts.src, None, &opts.sensor).await?;
    phase(
        "instrument",
        format!(
            "{} ({} bytes written)",
            instrumented.pushed, instrumented.bytes_written
        ),
        &mut clock,
    );

    // 2-4. Observe: run it, exercise it, stop it, collect the report.
    let image = store.resolve(&instrumented.image).await?;
    let port = app_port(&image, opts.port)?;
    let probes = probes(&image, opts)?;
    let mut args = argv(&image.config);
    let grace = sensor_grace(opts.stop_timeout);
    let flags = [
        "--mode",
        &opts.mode,
        "--report-file",
        REPORT,
        "--grace",
        &grace,
    ];
    args.splice(1..1, flags.iter().map(|s| s.to_string()));
    let caps = match opts.mode.as_str() {
        "fanotify" | "both" => vec!["CAP_SYS_ADMIN".to_string()],
        _ => Vec::new(),
    };
    let mut observed = start(store, &image, args, caps, port, opts, progress).await?;
    phase(
        "start",
        format!("instrumented container ready on {}", observed.target),
        &mut clock,
    );
    let mut probe_originals = Vec::new();
    for p in &probes {
        let argv = p.wrapped(&opts.mode);
        let result = probe::run(&observed.container, p, &argv, opts.exercise_timeout).await?;
        if !result.passed {
            let _ = stop(&mut observed, opts.stop_timeout).await;
            return Err(LocalError::ProbeFailedOnOriginal {
                probe: p.display(),
                exit: exit_text(&result),
                output: result.output_tail,
                hint: match p.kind {
                    ProbeKind::Healthcheck => " (--no-healthcheck skips it)",
                    ProbeKind::ExecProbe => "; fix the probe",
                },
            });
        }
        probe_originals.push(result);
    }
    let mut originals = Vec::new();
    for command in &opts.exercises {
        let result = exercise::run(command, &observed.target, opts.exercise_timeout).await?;
        if !result.passed {
            let _ = stop(&mut observed, opts.stop_timeout).await;
            return Err(LocalError::ExerciseFailedOnOriginal {
                command: command.clone(),
                exit: exit_text(&result),
                output: result.output_tail,
            });
        }
        originals.push(result);
    }
    if !opts.observe_for.is_zero() {
        tokio::time::sleep(opts.observe_for).await;
    }
    phase(
        "observe",
        format!(
            "{} exercise(s) and {} probe(s) passed against the original",
            originals.len(),
            probe_originals.len()
        ),
        &mut clock,
    );
    let code = stop(&mut observed, opts.stop_timeout).await?;
    let report_path = observed.rootfs().join(REPORT.trim_start_matches('/'));
    let report = harden::load_report(&report_path).map_err(|e| LocalError::NoReport {
        detail: e.to_string(),
        stderr: observed.container.stderr_tail(STDERR_LINES),
    })?;
    phase(
        "collect",
        format!(
            "app exited {code}; report: {} paths ({} mode)",
            report.paths.len(),
            report.mode.as_str()
        ),
        &mut clock,
    );
    drop(observed);

    // 5. Harden.
    let started_on = Timestamp::now();
    let reports = vec![report];
    let bar = progress.bytes("harden", image.compressed_size());
    let summary = harden::harden(
        store,
        &opts.src,
        HardenOptions {
            reports: reports.clone(),
            dst: opts.hardened_image.clone(),
            include: opts.include.clone(),
            exclude: opts.exclude.clone(),
            packs: opts.packs.clone(),
            compression: opts.compression,
            progress: Some(bar.clone()),
        },
    )
    .await?;
    bar.finish_and_clear();
    phase(
        "harden",
        format!(
            "{} ({:.1} MB -> {:.1} MB)",
            summary.pushed,
            summary.source_bytes as f64 / 1e6,
            summary.hardened_bytes as f64 / 1e6
        ),
        &mut clock,
    );

    // 6. Verify: the same exercises against the hardened image.
    let hardened_location = Location::parse(&summary.hardened_image)?;
    let hardened = store.resolve(&hardened_location).await?;
    let mut hardened_results: Vec<Option<ExerciseResult>> = vec![None; opts.exercises.len()];
    let mut probe_results: Vec<Option<ExerciseResult>> = vec![None; probes.len()];
    let mut hardened_stderr = None;
    match start(
        store,
        &hardened,
        argv(&hardened.config),
        Vec::new(),
        port,
        opts,
        progress,
    )
    .await
    {
        Ok(mut running) => {
            for (i, p) in probes.iter().enumerate() {
                probe_results[i] =
                    Some(probe::run(&running.container, p, &p.argv, opts.exercise_timeout).await?);
            }
            for (i, command) in opts.exercises.iter().enumerate() {
                hardened_results[i] =
                    Some(exercise::run(command, &running.target, opts.exercise_timeout).await?);
            }
            let failed = hardened_results
                .iter()
                .chain(&probe_results)
                .any(|r| !r.as_ref().is_some_and(|r| r.passed));
            if failed {
                hardened_stderr = Some(running.container.stderr_tail(STDERR_LINES));
            }
            if let Err(e) = stop(&mut running, opts.stop_timeout).await {
                hardened_stderr.get_or_insert_with(|| running.container.stderr_tail(STDERR_LINES));
                tracing::warn!("stopping the hardened container: {e}");
            }
        }
        Err(e) => hardened_stderr = Some(e.to_string()),
    }
    let exercises: Vec<ExerciseOutcome> = opts
        .exercises
        .iter()
        .zip(originals)
        .zip(hardened_results)
        .map(|((command, original), hardened)| ExerciseOutcome {
            command: command.clone(),
            original,
            hardened,
        })
        .collect();
    let probes: Vec<ProbeOutcome> = probes
        .into_iter()
        .zip(probe_originals)
        .zip(probe_results)
        .map(|((p, original), hardened)| ProbeOutcome {
            kind: p.kind,
            command_missing: hardened.as_ref().is_some_and(|h| {
                !h.passed && crate::controller::phase::command_missing(&h.output_tail)
            }),
            command: p.argv,
            original,
            hardened,
        })
        .collect();
    let verified = exercises
        .iter()
        .all(|e| e.hardened.as_ref().is_some_and(|h| h.passed))
        && probes.iter().all(ProbeOutcome::passed);
    phase(
        "verify",
        if verified {
            format!(
                "all {} exercise(s) and {} probe(s) passed against the hardened image",
                exercises.len(),
                probes.len()
            )
        } else {
            "verification FAILED".to_string()
        },
        &mut clock,
    );

    // 7. Evidence: a signature vouches for an image that verified, so none for one that did not.
    let mut evidence_options = opts.evidence.clone();
    if !verified {
        evidence_options.sign_key = None;
    }
    let packs: Vec<String> = crate::image::analysis::packs::distinct(&opts.packs)
        .into_iter()
        .map(|p| p.name().to_string())
        .collect();
    let inputs = HardenInputs {
        materials: &crate::reports::materials(&reports),
        include: &opts.include,
        exclude: &opts.exclude,
        packs: &packs,
        started_on: Some(started_on),
    };
    let mut evidence = produce(store, &summary, &inputs, &evidence_options).await?;
    if verified
        && opts.attach_profile
        && let Some(merged) = profile::merged(reports)
    {
        evidence.profile = profile::attach(store, &summary, &merged)
            .await
            .map_err(Box::new)?;
    }
    let mut produced: Vec<&str> = lines(&summary, &evidence)
        .into_iter()
        .map(|(label, _)| label)
        .filter(|l| *l != "packages")
        .collect();
    produced.dedup();
    if !produced.is_empty() {
        phase("evidence", produced.join(", "), &mut clock);
    }
    Ok(LocalSummary {
        harden: summary,
        evidence,
        instrumented_image: instrumented.pushed,
        verified,
        exercises,
        probes,
        phases,
        hardened_stderr: if verified { None } else { hardened_stderr },
    })
}

pub fn exit_text(r: &ExerciseResult) -> String {
    match r.exit_code {
        Some(c) => format!("exit {c}"),
        None => "killed or timed out".into(),
    }
}

/// The table `whittle local` prints.
pub fn table(s: &LocalSummary) -> String {
    let mut out = String::new();
    let mb = |b: u64| b as f64 / 1e6;
    out.push_str(&format!("{:<10} {}\n", "source", s.harden.source_image));
    out.push_str(&format!("{:<10} {}\n", "hardened", s.harden.pushed));
    let ratio = s.harden.source_bytes as f64 / s.harden.hardened_bytes.max(1) as f64;
    out.push_str(&format!(
        "{:<10} {:.1} MB -> {:.1} MB ({ratio:.1}x smaller), {} files kept, {} removed\n",
        "size",
        mb(s.harden.source_bytes),
        mb(s.harden.hardened_bytes),
        s.harden.files_kept,
        s.harden.files_removed
    ));
    out.push_str(&format!(
        "{:<10} shells {}, package managers {}, setuid/setgid {}\n",
        "removed",
        s.harden.removed_shells.len(),
        s.harden.removed_package_managers.len(),
        s.harden.removed_setuid.len()
    ));
    for pack in &s.harden.packs {
        out.push_str(&format!("{:<10} {}: {}\n", "pack", pack.name, pack.line()));
    }
    for (label, value) in lines(&s.harden, &s.evidence) {
        out.push_str(&format!("{label:<10} {value}\n"));
    }
    out.push_str(&format!(
        "\n{:<50} {:>10} {:>10}\n",
        "exercise / probe", "original", "hardened"
    ));
    let verdict = |r: Option<&ExerciseResult>| match r {
        Some(r) if r.passed => "pass".to_string(),
        Some(r) => format!("FAIL ({})", exit_text(r)),
        None => "not run".to_string(),
    };
    let rows = s
        .exercises
        .iter()
        .map(|e| (e.command.clone(), &e.original, e.hardened.as_ref(), false))
        .chain(s.probes.iter().map(|p| {
            let line = p.original.command.clone();
            (line, &p.original, p.hardened.as_ref(), p.command_missing)
        }));
    for (mut command, original, hardened, missing) in rows {
        if command.chars().count() > 50 {
            command = command.chars().take(47).collect::<String>() + "...";
        }
        let hardened = if missing {
            "MISSING".to_string()
        } else {
            verdict(hardened)
        };
        out.push_str(&format!(
            "{command:<50} {:>10} {hardened:>10}\n",
            verdict(Some(original)),
        ));
    }
    out.push_str(&format!("\n{:<10} ", "phases"));
    let phases: Vec<String> = s
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, p.seconds))
        .collect();
    out.push_str(&phases.join(", "));
    out.push_str(&format!(
        "\n{:<10} {}\n",
        "verified",
        if s.verified { "yes" } else { "NO" }
    ));
    out
}

/// The failure message: which exercises and probes failed and what the hardened container said.
pub fn failure(s: &LocalSummary) -> String {
    let mut out = String::from("verification failed: the hardened image does not pass\n");
    for e in s.failed() {
        match &e.hardened {
            Some(r) => out.push_str(&format!(
                "  exercise `{}` ({}):\n{}\n",
                e.command,
                exit_text(r),
                indent(&r.output_tail)
            )),
            None => out.push_str(&format!("  exercise `{}`: not run\n", e.command)),
        }
    }
    for p in s.probes.iter().filter(|p| !p.passed()) {
        let line = &p.original.command;
        match &p.hardened {
            Some(r) if p.command_missing => out.push_str(&format!(
                "  {line}: a command it runs is not in the hardened image ({}); keep it with --include PATH:\n{}\n",
                exit_text(r),
                indent(&r.output_tail)
            )),
            Some(r) => out.push_str(&format!(
                "  {line} ({}):\n{}\n",
                exit_text(r),
                indent(&r.output_tail)
            )),
            None => out.push_str(&format!("  {line}: not run\n")),
        }
    }
    if let Some(stderr) = s.hardened_stderr.as_ref().filter(|e| !e.trim().is_empty()) {
        out.push_str(&format!(
            "the hardened container's last stderr lines:\n{}\n",
            indent(&last_lines(stderr, STDERR_LINES))
        ));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
