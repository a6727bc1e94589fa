//! The `whittle` command line: one subcommand per stage, and the options they share.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use whittle::evidence::produce::EvidenceOptions;
use whittle::evidence::sign::SigningKey;
use whittle::evidence::vulns::severity::Severity;
use whittle::evidence::vulns::{Gate, VulnDb};
use whittle::image::analysis::packs::Pack;
use whittle::image::distribution::credentials::Credentials;
use whittle::image::distribution::hints::Hints;
use whittle::image::distribution::platform::Platform;
use whittle::image::distribution::registry::RegistryOptions;
use whittle::image::distribution::store::{Location, Store};
use whittle::image::limits::{self, Limits};
use whittle::image::media::LayerCompression;

mod crdgen;
mod image;
mod local;
mod operator;
mod operator_image;

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// whittle hardens container images to what the application really uses.
#[derive(Parser, Debug)]
#[command(name = "whittle", version, about)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text for people, or as JSON objects for a log pipeline.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Push SRC plus a layer with the sensor, which becomes the entrypoint.
    Instrument(image::InstrumentArgs),
    /// Build an image of only what the sensor's reports (and analysis) say the app needs.
    Harden(image::HardenArgs),
    /// Show an image's OS, packages, shells, setuid files, users and size.
    Inspect(image::InspectArgs),
    /// Instrument, observe under runc while exercises run, harden, and verify — on this machine.
    Local(local::LocalArgs),
    /// Run the Kubernetes operator: reconcile HardeningWorkflows and receive sensor reports.
    Operator(operator::OperatorArgs),
    /// Print the HardeningWorkflow CustomResourceDefinition as YAML, or its Markdown reference.
    Crdgen(crdgen::CrdgenArgs),
    /// Build the operator's own image (this binary and the sensor, non-root, no shell).
    OperatorImage(operator_image::OperatorImageArgs),
}

/// How to reach registries; every command that talks to one takes these.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP instead of HTTPS to the registries of the images named on this command
    /// line (only those: every other host is reached over HTTPS, and credentials never go in
    /// cleartext to it).
    #[arg(long)]
    pub insecure: bool,
    /// The platform to pick from an image index.
    #[arg(long, default_value = "linux/amd64", value_parser = parse_platform)]
    pub platform: Platform,
    /// A docker config JSON with registry credentials (default: $DOCKER_CONFIG/config.json,
    /// then ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// The largest manifest, image index or image config read (they are held in memory);
    /// larger ones are refused before they are read. E.g. 4MiB, 512Ki, 1048576.
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size,
          default_value = "4Mi")]
    pub max_manifest_size: u64,
}

/// The budgets of commands that read an image's layers (harden, inspect, local, operator).
#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// The most file contents set aside while the layers stream past (on disk, in $TMPDIR:
    /// keep it below that volume's size). E.g. 1Gi, 512Mi.
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size,
          default_value = "1Gi")]
    pub spool_limit: u64,
    /// The most paths an image's merged file tree may hold (about 400 bytes of memory each).
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_TREE_ENTRIES)]
    pub max_tree_entries: u64,
}

impl ReadArgs {
    pub fn apply(&self, limits: Limits) -> Limits {
        Limits {
            spool_bytes: self.spool_limit,
            tree_entries: self.max_tree_entries,
            ..limits
        }
    }
}

/// `30m`, `90s`, `1h30m` (a duration as the HardeningWorkflow spec writes them), or `90`
/// seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    whittle::api::duration::parse(s).map_err(|e| e.to_string())
}

/// What a harden keeps and where it puts the result: `harden` and `local` take the same.
#[derive(Args, Debug, Clone)]
pub struct HardenOutputArgs {
    /// Also keep this path (a directory with everything below it) or glob; repeatable.
    #[arg(long, value_name = "P")]
    pub include: Vec<String>,
    /// Drop paths matching this glob (`/usr/share/doc/**`, or `*.pyc` anywhere); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Also keep a named pack of files apps load on paths an exercise rarely takes, where the
    /// image has them: ca-certificates, nss, tzdata, locale; repeatable. The summary says what
    /// each added.
    #[arg(long = "pack", value_enum, value_name = "NAME")]
    pub packs: Vec<Pack>,
    /// The hardened layer's codec: gzip (read everywhere) or zstd (OCI tar+zstd: smaller, for
    /// containerd 1.5+, CRI-O and podman; the image gets OCI media types).
    #[arg(long, value_enum, default_value_t = LayerCompression::Gzip)]
    pub compression: LayerCompression,
    /// Where to put the hardened image (default: <repo>:<tag>-whittle-hardened).
    #[arg(long, value_parser = parse_location, value_name = "DST")]
    pub hardened_image: Option<Location>,
    /// Write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
}

/// The supply-chain evidence `harden` and `local` produce besides the image.
#[derive(Args, Debug, Clone, Default)]
pub struct EvidenceArgs {
    /// Write CycloneDX 1.6 SBOMs of the source and the hardened image into DIR
    /// (source.cdx.json, hardened.cdx.json), and attach the hardened one to its image as an OCI
    /// referrer when it is in a registry.
    #[arg(long, value_name = "DIR")]
    pub sbom: Option<PathBuf>,
    /// An OSV database (a directory or zip of OSV JSON records, e.g. osv.dev's
    /// Debian/all.zip): report the vulnerabilities before and after, and which hardening removed.
    #[arg(long, value_name = "PATH")]
    pub vuln_db: Option<PathBuf>,
    /// With --vuln-db: fail, before signing, when the hardened image keeps a vulnerability of
    /// this severity or worse (critical, high, medium, low) that a newer package version fixes;
    /// `SEVERITY,any` counts those without a fix too (`SEVERITY,fixable` is the default).
    #[arg(long, value_name = "SEVERITY[,fixable|any]", value_parser = parse_fail_on)]
    pub fail_on: Option<Gate>,
    /// Do not attach the profile (the merged sensor reports: which files the app opened and
    /// ran) to the hardened image. By default it is attached as an OCI referrer whenever the
    /// hardened image is in a registry, so `whittle harden --profile` can re-harden a new
    /// source from it; whoever can read the registry can read it.
    #[arg(long)]
    pub no_profile: bool,
    /// Sign the hardened image and its SLSA provenance with this EC P-256 key (PKCS#8 PEM, or a
    /// cosign key with COSIGN_PASSWORD set), where `cosign verify --key` finds them.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

impl EvidenceArgs {
    /// Refuses what cannot work before any work is done: cosign finds signatures beside the
    /// image in a registry, so a hardened image bound for an oci: layout cannot be signed.
    pub fn check(&self, hardened: &Location) -> Result<(), String> {
        if self.fail_on.is_some() && self.vuln_db.is_none() {
            return Err(
                "--fail-on needs --vuln-db: without a database no vulnerability is known, and every image would pass"
                    .to_string(),
            );
        }
        if self.sign_key.is_some() && matches!(hardened, Location::Layout(_)) {
            return Err(format!(
                "--sign-key: the hardened image goes to the layout {hardened}, but signatures are stored beside an image in a registry; pass --hardened-image REGISTRY/REPO:TAG"
            ));
        }
        Ok(())
    }

    /// Loads the database and the key, so a bad one fails before any work is done.
    pub fn options(&self) -> Result<EvidenceOptions, Box<dyn std::error::Error>> {
        let vuln_db = match &self.vuln_db {
            Some(path) => Some(std::sync::Arc::new(VulnDb::load(path)?)),
            None => None,
        };
        let sign_key = match &self.sign_key {
            Some(path) => Some(std::sync::Arc::new(SigningKey::load(path)?)),
            None => None,
        };
        Ok(EvidenceOptions {
            sbom_dir: self.sbom.clone(),
            attach_sbom: self.sbom.is_some(),
            vuln_db,
            sign_key,
            gate: self.fail_on,
        })
    }
}

/// `high`, `high,fixable` (the same) or `high,any`.
pub fn parse_fail_on(s: &str) -> Result<Gate, String> {
    let (severity, which) = s.split_once(',').unwrap_or((s, "fixable"));
    let severity = match severity.trim().to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        other => {
            return Err(format!(
                "{other:?} is no severity: critical, high, medium or low"
            ));
        }
    };
    let fixable = match which.trim() {
        "fixable" => true,
        "any" => false,
        other => return Err(format!("{other:?}: after the comma, fixable or any")),
    };
    Ok(Gate { severity, fixable })
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
        .map_err(|e: whittle::image::ImageError| e.to_string())
}

impl RegistryArgs {
    /// A store with `limits`, and this command's --max-manifest-size; with --insecure, plain
    /// HTTP to the registries of `named`, the images on the command line.
    pub fn store(
        &self,
        limits: Limits,
        named: &[Option<&Location>],
    ) -> Result<Store, whittle::image::ImageError> {
        let credentials = Credentials::discover(self.registry_config.as_deref())?;
        let mut insecure_registries: Vec<String> = Vec::new();
        if self.insecure {
            insecure_registries = named
                .iter()
                .flatten()
                .filter_map(|l| l.registry_host())
                .map(str::to_string)
                .collect();
            insecure_registries.sort();
            insecure_registries.dedup();
        }
        Ok(Store::new(
            credentials,
            RegistryOptions {
                insecure_registries,
                platform: self.platform.clone(),
                limits: Limits {
                    manifest_bytes: self.max_manifest_size,
                    ..limits
                },
                hints: Hints::CommandLine,
            },
        ))
    }
}

pub fn parse_location(s: &str) -> Result<Location, String> {
    Location::parse(s).map_err(|e| e.to_string())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_tracing(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "whittle=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Instrument(a) => image::instrument(a).await,
        Command::Harden(a) => image::harden(a).await,
        Command::Inspect(a) => image::inspect(a).await,
        Command::Local(a) => local::local(a).await,
        Command::Crdgen(a) => crdgen::crdgen(a),
        Command::OperatorImage(a) => operator_image::operator_image(a).await,
        Command::Operator(a) => operator::operator(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults, written as sizes people read, are the engine's.
    #[test]
    fn budget_defaults_are_the_engines() {
        #[derive(Parser)]
        struct Both {
            #[command(flatten)]
            read: ReadArgs,
            #[command(flatten)]
            registry: RegistryArgs,
        }
        let both = Both::parse_from(["whittle"]);
        let limits = Limits {
            manifest_bytes: both.registry.max_manifest_size,
            ..both.read.apply(Limits::default())
        };
        assert_eq!(limits, Limits::default());
        assert_eq!(
            parse_duration("30m"),
            Ok(limits::DEFAULT_INSTRUMENT_TIMEOUT)
        );
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
    }

    #[test]
    fn fail_on_is_a_severity_fixable_unless_any() {
        let gate = |severity, fixable| Ok(Gate { severity, fixable });
        assert_eq!(parse_fail_on("high"), gate(Severity::High, true));
        assert_eq!(parse_fail_on("High,fixable"), gate(Severity::High, true));
        assert_eq!(
            parse_fail_on("critical,any"),
            gate(Severity::Critical, false)
        );
        assert_eq!(parse_fail_on("low"), gate(Severity::Low, true));
        assert!(parse_fail_on("unknown").is_err());
        assert!(parse_fail_on("high,maybe").is_err());
    }
}
