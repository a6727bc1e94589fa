//! `whittle instrument`, `whittle harden` and `whittle inspect` (and its `--predict`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;

use k8s_openapi::jiff::Timestamp;
use whittle::evidence::produce::{Evidence, HardenInputs, lines, produce};
use whittle::evidence::profile;
use whittle::evidence::vulns::VulnDb;
use whittle::image::analysis::packs::{self, Pack};
use whittle::image::distribution::store::Location;
use whittle::image::harden::{self, HardenOptions, Summary};
use whittle::image::limits::Limits;
use whittle::image::{inspect as inspection, instrument as instrumenting, predict};
use whittle::local::progress::Progress;

use super::{
    CliResult, EvidenceArgs, HardenOutputArgs, ReadArgs, RegistryArgs, parse_duration,
    parse_location,
};

#[derive(Args, Debug)]
pub struct InstrumentArgs {
    /// The image to instrument: registry/repo:tag, registry/repo@sha256:..., or oci:DIR:TAG.
    #[arg(value_parser = parse_location)]
    src: Location,
    /// Where to push it (default: <repo>:<tag>-whittle-instrumented).
    #[arg(long, value_parser = parse_location, value_name = "DST")]
    instrumented_image: Option<Location>,
    /// The static sensor binary (default: $WHITTLE_SENSOR_BIN, then whittle-sensor beside whittle).
    #[arg(long, value_name = "PATH")]
    sensor: Option<PathBuf>,
    /// How long instrumenting may take in all (e.g. 30m, 90s).
    #[arg(long, value_name = "D", value_parser = parse_duration,
          default_value = "30m")]
    instrument_timeout: Duration,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct HardenArgs {
    /// The image to harden (the original, not the instrumented one).
    #[arg(value_parser = parse_location)]
    src: Location,
    /// A sensor report (JSON, or gzip JSON); repeat to merge several runs.
    #[arg(long = "report", value_name = "R", required_unless_present = "profile")]
    reports: Vec<PathBuf>,
    /// Harden from the profile attached to this earlier hardened image (or from this profile
    /// artifact, registry/repo@sha256:...), merged with any --report: no observation needed.
    #[arg(long, value_name = "IMAGE", value_parser = parse_location)]
    profile: Option<Location>,
    #[command(flatten)]
    output: HardenOutputArgs,
    #[command(flatten)]
    evidence: EvidenceArgs,
    #[command(flatten)]
    budgets: ReadArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// What `harden --summary` writes: the harden and its evidence.
#[derive(serde::Serialize)]
struct HardenSummary<'a> {
    #[serde(flatten)]
    harden: &'a Summary,
    #[serde(flatten)]
    evidence: &'a Evidence,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(value_parser = parse_location)]
    image: Location,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Print, as JSON, what a hardening would remove at most: every shell, package manager,
    /// setuid file and byte but the entrypoint's and its libraries' (what a policy's
    /// `mode: Report` records).
    #[arg(long)]
    predict: bool,
    /// With --predict: an OSV database (a directory or zip of OSV JSON records) to count the
    /// known vulnerabilities of the image's packages with.
    #[arg(long, value_name = "PATH", requires = "predict")]
    vuln_db: Option<PathBuf>,
    #[command(flatten)]
    budgets: ReadArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// A byte bar for layer streaming on a terminal (hidden otherwise); its length is set once
/// the image is resolved.
fn bar(label: &str) -> ProgressBar {
    Progress::new().bytes(label, 0)
}

pub async fn instrument(a: InstrumentArgs) -> CliResult {
    let store = a.registry.store(
        Limits {
            instrument_timeout: a.instrument_timeout,
            ..Limits::default()
        },
        &[Some(&a.src), a.instrumented_image.as_ref()],
    )?;
    let sensor = instrumenting::find_sensor(a.sensor.as_deref())?;
    let done =
        instrumenting::instrument(&store, &a.src, a.instrumented_image.as_ref(), &sensor).await?;
    eprintln!(
        "instrumented {}: {} source layer(s) reused ({} already present, {} mounted, {} copied); {} bytes written",
        done.source,
        done.layers_present + done.layers_mounted + done.layers_copied,
        done.layers_present,
        done.layers_mounted,
        done.layers_copied,
        done.bytes_written
    );
    println!("{}", done.pushed);
    Ok(ExitCode::SUCCESS)
}

/// The packs as provenance records them.
fn pack_names(packs: &[Pack]) -> Vec<String> {
    packs::distinct(packs)
        .into_iter()
        .map(|p| p.name().to_string())
        .collect()
}

pub fn print_summary(s: &Summary) {
    let mb = |b: u64| b as f64 / 1e6;
    let ratio = if s.hardened_bytes > 0 {
        s.source_bytes as f64 / s.hardened_bytes as f64
    } else {
        0.0
    };
    eprintln!(
        "hardened: {:.1} MB -> {:.1} MB ({ratio:.1}x smaller); kept {} files, removed {}",
        mb(s.source_bytes),
        mb(s.hardened_bytes),
        s.files_kept,
        s.files_removed
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    eprintln!("removed shells: {}", list(&s.removed_shells));
    eprintln!(
        "removed package managers: {}",
        list(&s.removed_package_managers)
    );
    eprintln!("removed setuid/setgid: {}", list(&s.removed_setuid));
    for pack in &s.packs {
        eprintln!("pack {}: {}", pack.name, pack.line());
    }
}

pub fn write_json(
    path: &PathBuf,
    value: &impl serde::Serialize,
) -> Result<(), Box<dyn std::error::Error>> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

pub async fn harden(a: HardenArgs) -> CliResult {
    // Reports first: a bad one fails before anything is fetched or pushed.
    let mut reports = harden::load_reports(&a.reports)?;
    a.evidence
        .check(a.output.hardened_image.as_ref().unwrap_or(&a.src))?;
    let evidence_options = a.evidence.options()?;
    let store = a.registry.store(
        a.budgets.apply(Limits::default()),
        &[
            Some(&a.src),
            a.output.hardened_image.as_ref(),
            a.profile.as_ref(),
        ],
    )?;
    let mut materials = whittle::reports::materials(&reports);
    if let Some(image) = &a.profile {
        let fetched = profile::fetch(&store, image).await?;
        eprintln!(
            "profile: {} ({} paths), attached to {}",
            fetched.artifact,
            fetched.profile.paths.len(),
            fetched.image
        );
        let (_, digest) = whittle::reports::material(&fetched.profile);
        materials.push((format!("profile:{}", fetched.artifact), digest));
        reports.push(fetched.profile);
    }
    let progress = bar("layers");
    let started_on = Timestamp::now();
    let opts = HardenOptions {
        reports: reports.clone(),
        dst: a.output.hardened_image,
        include: a.output.include.clone(),
        exclude: a.output.exclude.clone(),
        packs: a.output.packs.clone(),
        compression: a.output.compression,
        progress: Some(progress.clone()),
    };
    let summary = harden::harden(&store, &a.src, opts).await?;
    progress.finish_and_clear();
    let packs = pack_names(&a.output.packs);
    let inputs = HardenInputs {
        materials: &materials,
        include: &a.output.include,
        exclude: &a.output.exclude,
        packs: &packs,
        started_on: Some(started_on),
    };
    let mut evidence = produce(&store, &summary, &inputs, &evidence_options).await?;
    if !a.evidence.no_profile
        && let Some(merged) = profile::merged(reports)
    {
        evidence.profile = profile::attach(&store, &summary, &merged).await?;
    }
    print_summary(&summary);
    for (label, value) in lines(&summary, &evidence) {
        eprintln!("{label}: {value}");
    }
    if let Some(path) = &a.output.summary {
        let both = HardenSummary {
            harden: &summary,
            evidence: &evidence,
        };
        write_json(path, &both)?;
    }
    println!("{}", summary.pushed);
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(a: InspectArgs) -> CliResult {
    let store = a
        .registry
        .store(a.budgets.apply(Limits::default()), &[Some(&a.image)])?;
    let progress = bar("layers");
    if a.predict {
        // A bad database fails before the image is read.
        let db = a.vuln_db.as_deref().map(VulnDb::load).transpose()?;
        let mut predicted = predict::predict(&store, &a.image, Some(&progress)).await?;
        progress.finish_and_clear();
        if let Some(db) = &db {
            predicted.match_vulnerabilities(db);
        }
        println!("{}", serde_json::to_string_pretty(&predicted)?);
        return Ok(ExitCode::SUCCESS);
    }
    let result = inspection::inspect(&store, &a.image, Some(&progress)).await?;
    progress.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{result}");
    }
    Ok(ExitCode::SUCCESS)
}
