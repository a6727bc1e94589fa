//! `whittle operator-image`: the operator's own image, assembled from this whittle binary and
//! the sensor beside it. `make image` runs it; the Helm chart's default image is its output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use k8s_openapi::jiff::Timestamp;
use whittle::evidence::produce;
use whittle::evidence::sbom;
use whittle::evidence::sign::SigningKey;
use whittle::image::analysis::elf;
use whittle::image::distribution::store::Location;
use whittle::image::instrument::find_sensor;
use whittle::image::writing::assemble::{self, Entry, Recipe};

use super::{CliResult, RegistryArgs, parse_location};

/// The user the chart runs the operator as; the image names it so `runAsNonRoot` holds even
/// without the chart's securityContext.
const USER: u32 = 65532;
const BIN_DIR: &str = "usr/local/bin";
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

#[derive(Args, Debug)]
pub struct OperatorImageArgs {
    /// Where to store the image: registry/repo:tag or oci:DIR:TAG; repeat to store it in
    /// several places (`make image` writes a layout and, with IMAGE=..., pushes there too).
    #[arg(value_parser = parse_location, required = true, value_name = "DST")]
    destinations: Vec<Location>,
    /// The static whittle binary to package (default: the running one).
    #[arg(long, value_name = "PATH")]
    whittle: Option<PathBuf>,
    /// The static sensor binary (default: $WHITTLE_SENSOR_BIN, then whittle-sensor beside whittle).
    #[arg(long, value_name = "PATH")]
    sensor: Option<PathBuf>,
    /// CA certificates for the registries the operator pushes to over HTTPS.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    ca_bundle: PathBuf,
    /// Sign the image pushed to each registry destination with this EC P-256 key (a cosign
    /// key with COSIGN_PASSWORD set, or PKCS#8 PEM), attest its SLSA provenance and attach its
    /// CycloneDX SBOM, where `cosign verify --key` and admission policies find them.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// Attach the image's CycloneDX SBOM to each registry destination as an OCI referrer, even
    /// without --sign-key.
    #[arg(long)]
    sbom: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub async fn operator_image(args: OperatorImageArgs) -> CliResult {
    let started_on = Timestamp::now();
    let registries = args
        .destinations
        .iter()
        .filter(|d| matches!(d, Location::Registry(_)))
        .count();
    if args.sign_key.is_some() && registries == 0 {
        return Err(
            "--sign-key: signatures are stored beside an image in a registry, and every destination is an oci: layout; add a registry/repo:tag destination (IMAGE=... for make image)"
                .into(),
        );
    }
    // A bad key fails before anything is built.
    let key = match &args.sign_key {
        Some(path) => Some(SigningKey::load(path)?),
        None => None,
    };
    let whittle = match &args.whittle {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the running whittle binary: {e}"))?,
    };
    let sensor = find_sensor(args.sensor.as_deref())?;
    let recipe = recipe(
        static_binary(&whittle, "make build")?,
        static_binary(&sensor, "make sensor")?,
        read(
            &args.ca_bundle,
            "install Debian's ca-certificates or pass --ca-bundle",
        )?,
    );
    let named: Vec<Option<&Location>> = args.destinations.iter().map(Some).collect();
    let store = args.registry.store(Default::default(), &named)?;
    let files = sbom_files(&recipe);
    for dst in &args.destinations {
        let made = assemble::assemble(&store, dst, &recipe).await?;
        let pinned = dst.pushed(&made.digest);
        if matches!(dst, Location::Registry(_)) && (args.sbom || key.is_some()) {
            let evidence = produce::assembled(
                &store,
                &pinned,
                made.manifest_size,
                &files,
                json!({ "version": env!("CARGO_PKG_VERSION") }),
                started_on,
                key.as_ref(),
            )
            .await?;
            // On stderr: the last line of stdout stays the pushed image (`make
            // cluster-install` and scripts read it).
            if let Some(a) = &evidence.sbom {
                eprintln!("sbom        {} ({})", a.reference, a.via);
            }
            for (label, r) in [
                ("signature", &evidence.signature),
                ("provenance", &evidence.provenance),
            ] {
                if let Some(r) = r {
                    eprintln!("{label:<11} {r}");
                }
            }
        }
        println!("{pinned}  ({} bytes compressed)", made.layer_bytes);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every file of the image for its SBOM and provenance: the two programs at this version, the
/// rest as data.
fn sbom_files(recipe: &Recipe) -> Vec<sbom::File<'_>> {
    recipe
        .entries
        .iter()
        .filter_map(|(path, entry)| {
            let contents = entry.contents.as_deref()?;
            let program = entry.mode & 0o111 != 0;
            Some(sbom::File {
                path,
                kind: if program { "application" } else { "data" },
                version: program.then_some(env!("CARGO_PKG_VERSION")),
                contents,
            })
        })
        .collect()
}

fn read(path: &Path, hint: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e} ({hint})", path.display()))
}

/// The image has no libc, so both programs must be static.
fn static_binary(path: &Path, builds_it: &str) -> Result<Vec<u8>, String> {
    let bytes = read(path, builds_it)?;
    elf::static_program(&bytes).map_err(|reason| {
        format!(
            "{}: {reason}; the operator image has no libc, so `{builds_it}` builds a static one",
            path.display()
        )
    })?;
    Ok(bytes)
}

/// whittle and the sensor side by side (the operator injects the sensor it finds beside
/// itself), a passwd/group naming the non-root user, CA certificates, and a world-writable
/// /tmp for when TMPDIR is not a volume. No shell: nothing here can run but whittle.
fn recipe(whittle: Vec<u8>, sensor: Vec<u8>, ca_bundle: Vec<u8>) -> Recipe {
    let version = env!("CARGO_PKG_VERSION");
    let entries = BTreeMap::from([
        (format!("{BIN_DIR}/whittle"), Entry::file(0o755, whittle)),
        (format!("{BIN_DIR}/whittle-sensor"), Entry::file(0o755, sensor)),
        (CA_BUNDLE.to_string(), Entry::file(0o644, ca_bundle)),
        (
            "etc/passwd".to_string(),
            Entry::file(
                0o644,
                format!("root:x:0:0:root:/root:/sbin/nologin\nwhittle:x:{USER}:{USER}:whittle:/home/whittle:/sbin/nologin\n")
                    .into_bytes(),
            ),
        ),
        (
            "etc/group".to_string(),
            Entry::file(0o644, format!("root:x:0:\nwhittle:x:{USER}:\n").into_bytes()),
        ),
        ("home/whittle".to_string(), Entry::dir(0o755)),
        ("tmp".to_string(), Entry::dir(0o1777)),
    ]);
    Recipe {
        entries,
        config: json!({
            "User": format!("{USER}:{USER}"),
            "Entrypoint": [format!("/{BIN_DIR}/whittle")],
            "Cmd": ["operator"],
            "Env": [
                "PATH=/usr/local/bin",
                format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
            ],
            "WorkingDir": "/home/whittle",
            "Labels": {
                "org.opencontainers.image.title": "whittle",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
                "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
            },
        }),
        created_by: format!("whittle operator-image (whittle {version})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_refused_with_how_to_build_a_static_one() {
        let err = static_binary(Path::new("/bin/true"), "make build").unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        assert!(err.contains("make build"), "{err}");
    }
}
