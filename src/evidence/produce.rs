//! The evidence step after a harden has pushed its image: SBOMs written and attached,
//! vulnerabilities before and after, the signature and the signed provenance. `whittle harden`,
//! `whittle local` and the operator run the same step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::provenance::{
    Build, Material, OPERATOR_IMAGE_BUILD_TYPE, ProvenanceInput, SlsaVersion, attest_build,
    attest_provenance,
};
use super::sbom::{self, Subject};
use super::sign::{SignError, SigningKey, sign_image};
use super::vulns::gate::refusal;
use super::vulns::{Gate, VulnDb, VulnSummary, compare};
use crate::image::ImageError;
use crate::image::distribution::store::{Attached, Location, Store};
use crate::image::harden::Summary;
use crate::image::packages::State;

/// What evidence to produce; all of it is off by default.
#[derive(Clone, Default)]
pub struct EvidenceOptions {
    /// Write `source.cdx.json` and `hardened.cdx.json` here.
    pub sbom_dir: Option<PathBuf>,
    /// Attach the hardened image's SBOM to it as an OCI referrer (registries only).
    pub attach_sbom: bool,
    pub vuln_db: Option<Arc<VulnDb>>,
    /// Sign the hardened image and its provenance.
    pub sign_key: Option<Arc<SigningKey>>,
    /// Refuse (before signing) a hardened image that keeps what this gate refuses; needs
    /// `vuln_db`.
    pub gate: Option<Gate>,
}

/// What the harden was asked to keep, for the provenance.
#[derive(Debug, Clone, Default)]
pub struct HardenInputs<'a> {
    /// The reports harden used, as provenance names them: `(name, sha256 of the JSON)`
    /// ([`crate::reports::materials`]).
    pub materials: &'a [(String, String)],
    pub include: &'a [String],
    pub exclude: &'a [String],
    /// The packs' names.
    pub packs: &'a [String],
    pub started_on: Option<Timestamp>,
}

/// What the evidence step produced (`--summary` and the operator's status carry it).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// SBOM files written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sbom_files: Vec<PathBuf>,
    /// The hardened image's SBOM as an OCI referrer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Attached>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnSummary>,
    /// The profile the image was hardened from, as an OCI referrer ([`super::profile`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Attached>,
    /// The cosign signature: `registry/repo:sha256-<hex>.sig@sha256:...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signed SLSA provenance: `registry/repo:sha256-<hex>.att@sha256:...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("writing the SBOM {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching the SBOM to {image}: {source}")]
    Attach {
        image: String,
        #[source]
        source: ImageError,
    },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{0}: not pinned to a digest (internal)")]
    Unpinned(String),
    /// The hardened image keeps what the vulnerability gate refuses: the refusal.
    #[error("{0}")]
    Gate(String),
}

/// `registry/repo` and `sha256:...` of a pinned reference (`registry/repo[:tag]@sha256:...`).
fn split_pinned(pinned: &str) -> Result<(String, String), EvidenceError> {
    let (name, digest) = pinned
        .rsplit_once('@')
        .ok_or_else(|| EvidenceError::Unpinned(pinned.to_string()))?;
    // A tag before the digest is not part of the repository's name; a registry's port is.
    let (scheme, rest) = match name.strip_prefix("oci:") {
        Some(rest) => ("oci:", rest),
        None => ("", name),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let rest = match rest[last_slash..].find(':') {
        Some(colon) => &rest[..last_slash + colon],
        None => rest,
    };
    Ok((format!("{scheme}{rest}"), digest.to_string()))
}

fn write(dir: &Path, name: &str, bom: &serde_json::Value) -> Result<PathBuf, EvidenceError> {
    let path = dir.join(name);
    let io = |source| EvidenceError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_string_pretty(bom).map_err(|e| io(std::io::Error::other(e)))?;
    std::fs::write(&path, text + "\n").map_err(io)?;
    Ok(path)
}

/// Produces the evidence `opts` asks for about the image `summary` describes.
pub async fn produce(
    store: &Store,
    summary: &Summary,
    inputs: &HardenInputs<'_>,
    opts: &EvidenceOptions,
) -> Result<Evidence, EvidenceError> {
    let mut out = describe(store, summary, opts).await?;
    if let (Some(gate), Some(found)) = (&opts.gate, &out.vulnerabilities) {
        let blocking = gate.blocking(&found.remaining);
        if !blocking.is_empty() {
            let refused = refusal(&summary.hardened_image, "--fail-on", gate, &blocking);
            return Err(EvidenceError::Gate(format!("{refused}; it is not signed")));
        }
    }
    if let Some(key) = &opts.sign_key {
        let (signature, provenance) = sign(
            store,
            &summary.hardened_image,
            &summary.source_image,
            inputs,
            key,
        )
        .await?;
        out.signature = Some(signature);
        out.provenance = Some(provenance);
    }
    Ok(out)
}

/// What the image holds: its SBOMs (written, attached) and the vulnerabilities before and after.
pub async fn describe(
    store: &Store,
    summary: &Summary,
    opts: &EvidenceOptions,
) -> Result<Evidence, EvidenceError> {
    let mut out = Evidence::default();
    let (source_name, source_digest) = split_pinned(&summary.source_image)?;
    let (hardened_name, hardened_digest) = split_pinned(&summary.hardened_image)?;
    let source = Subject {
        name: &source_name,
        digest: &source_digest,
    };
    let hardened = Subject {
        name: &hardened_name,
        digest: &hardened_digest,
    };
    let now = Timestamp::now().to_string();
    let hardened_bom = sbom::cyclonedx(&hardened, &summary.packages, Some(&source), &now);
    if let Some(dir) = &opts.sbom_dir {
        let source_bom = sbom::cyclonedx(&source, &summary.packages, None, &now);
        out.sbom_files
            .push(write(dir, "source.cdx.json", &source_bom)?);
        out.sbom_files
            .push(write(dir, "hardened.cdx.json", &hardened_bom)?);
    }
    let location = pinned_location(&summary.hardened_image)?;
    // An oci: layout has no referrers: the SBOM files are the evidence there.
    if opts.attach_sbom && matches!(location, Location::Registry(_)) {
        out.sbom = Some(
            attach_sbom(
                store,
                &summary.hardened_image,
                summary.hardened_manifest_size,
                &hardened_bom,
            )
            .await?,
        );
    }
    if let Some(db) = &opts.vuln_db {
        let mut source_inventory = summary.packages.clone();
        for p in &mut source_inventory.packages {
            p.kept = p.files;
        }
        out.vulnerabilities = Some(compare(db, &source_inventory, &summary.packages));
    }
    Ok(out)
}

/// Attaches `bom` to the image `pinned` (`registry/repo[:tag]@sha256:...`, whose manifest is
/// `manifest_size` bytes) as an OCI referrer.
pub async fn attach_sbom(
    store: &Store,
    pinned: &str,
    manifest_size: u64,
    bom: &serde_json::Value,
) -> Result<Attached, EvidenceError> {
    let location = pinned_location(pinned)?;
    let bytes = serde_json::to_vec(bom).unwrap_or_default();
    store
        .attach(
            &location,
            manifest_size,
            sbom::MEDIA_TYPE,
            "sbom.cdx.json",
            Bytes::from(bytes),
        )
        .await
        .map_err(|source| EvidenceError::Attach {
            image: pinned.to_string(),
            source,
        })
}

/// The evidence of an image whittle assembled itself from `files` (the operator's own, by
/// `whittle operator-image`), pushed as `pinned` with a manifest of `manifest_size` bytes: its
/// SBOM attached as an OCI referrer and, with `key`, the image signed and its SLSA provenance
/// (the files as materials, `parameters` as the build's) attested, as for a hardened image.
pub async fn assembled(
    store: &Store,
    pinned: &str,
    manifest_size: u64,
    files: &[sbom::File<'_>],
    parameters: serde_json::Value,
    started_on: Timestamp,
    key: Option<&SigningKey>,
) -> Result<Evidence, EvidenceError> {
    let (name, digest) = split_pinned(pinned)?;
    let subject = Subject {
        name: &name,
        digest: &digest,
    };
    let now = Timestamp::now();
    let bom = sbom::assembled(&subject, files, &now.to_string());
    let mut out = Evidence {
        sbom: Some(attach_sbom(store, pinned, manifest_size, &bom).await?),
        ..Evidence::default()
    };
    if let Some(key) = key {
        let location = pinned_location(pinned)?;
        out.signature = Some(sign_image(store, &location, &digest, key).await?);
        let build = Build {
            subject_name: name.clone(),
            subject_digest: digest.clone(),
            build_type: OPERATOR_IMAGE_BUILD_TYPE,
            parameters,
            materials: files
                .iter()
                .map(|f| Material {
                    name: format!("/{}", f.path),
                    uri: None,
                    media_type: None,
                    sha256: format!("{:x}", Sha256::digest(f.contents)),
                })
                .collect(),
            started_on,
            finished_on: Timestamp::now(),
        };
        out.provenance =
            Some(attest_build(store, &location, &build, SlsaVersion::V0_2, key).await?);
    }
    Ok(out)
}

fn pinned_location(pinned: &str) -> Result<Location, EvidenceError> {
    Location::parse(pinned).map_err(|source| EvidenceError::Attach {
        image: pinned.to_string(),
        source,
    })
}

/// Signs the hardened image (pinned) and its SLSA provenance; returns both references.
pub async fn sign(
    store: &Store,
    hardened_image: &str,
    source_image: &str,
    inputs: &HardenInputs<'_>,
    key: &SigningKey,
) -> Result<(String, String), EvidenceError> {
    let (source_name, source_digest) = split_pinned(source_image)?;
    let (hardened_name, hardened_digest) = split_pinned(hardened_image)?;
    let location = pinned_location(hardened_image)?;
    let signature = sign_image(store, &location, &hardened_digest, key).await?;
    let input = ProvenanceInput {
        hardened_name,
        hardened_digest,
        source_image: source_name,
        source_digest,
        reports: inputs.materials.to_vec(),
        include: inputs.include.to_vec(),
        exclude: inputs.exclude.to_vec(),
        packs: inputs.packs.to_vec(),
        started_on: inputs.started_on.unwrap_or_else(Timestamp::now),
        finished_on: Timestamp::now(),
    };
    let provenance = attest_provenance(store, &location, &input, SlsaVersion::V0_2, key).await?;
    Ok((signature, provenance))
}

/// `12 -> 7 (5 removed, 3 partial)`: how many packages the source and the hardened image hold.
pub fn packages_line(summary: &Summary) -> Option<String> {
    let packages = &summary.packages.packages;
    if packages.is_empty() {
        return None;
    }
    let count = |s: State| packages.iter().filter(|p| p.state() == s).count();
    let (removed, partial) = (count(State::Removed), count(State::Partial));
    Some(format!(
        "{} -> {} ({removed} removed, {partial} partial)",
        packages.len(),
        packages.len() - removed
    ))
}

/// `41 -> 9 (critical 1 -> 0, high 5 -> 1, ...)`.
pub fn vulnerabilities_line(v: &VulnSummary) -> String {
    let (b, a) = (&v.before, &v.after);
    format!(
        "{} -> {} (critical {} -> {}, high {} -> {}, medium {} -> {}, low {} -> {}, unknown {} -> {})",
        b.total,
        a.total,
        b.critical,
        a.critical,
        b.high,
        a.high,
        b.medium,
        a.medium,
        b.low,
        a.low,
        b.unknown,
        a.unknown
    )
}

/// The evidence as `label  value` lines for a summary table.
pub fn lines(summary: &Summary, evidence: &Evidence) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(line) = packages_line(summary) {
        out.push(("packages", line));
    }
    if let Some(v) = &evidence.vulnerabilities {
        out.push(("vulns", vulnerabilities_line(v)));
    }
    for f in &evidence.sbom_files {
        out.push(("sbom", f.display().to_string()));
    }
    if let Some(a) = &evidence.sbom {
        out.push(("sbom", format!("{} ({})", a.reference, a.via)));
    }
    if let Some(a) = &evidence.profile {
        out.push(("profile", format!("{} ({})", a.reference, a.via)));
    }
    if let Some(s) = &evidence.signature {
        out.push(("signature", s.clone()));
    }
    if let Some(p) = &evidence.provenance {
        out.push(("provenance", p.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_references_split_into_name_and_digest() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        for (input, name) in [
            (
                format!("127.0.0.1:5000/shop/web:1.0-whittle-hardened@{d}"),
                "127.0.0.1:5000/shop/web",
            ),
            (
                format!("127.0.0.1:5000/shop/web@{d}"),
                "127.0.0.1:5000/shop/web",
            ),
            (format!("oci:/tmp/layout:v1@{d}"), "oci:/tmp/layout"),
            (format!("oci:layout:v1@{d}"), "oci:layout"),
            (format!("127.0.0.1:5000/web@{d}"), "127.0.0.1:5000/web"),
        ] {
            let (n, digest) = split_pinned(&input).expect("pinned");
            assert_eq!((n.as_str(), digest.as_str()), (name, d), "{input}");
        }
        assert!(split_pinned("127.0.0.1:5000/web:1").is_err());
    }
}
