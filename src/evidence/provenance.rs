//! SLSA provenance for a hardened image: an in-toto Statement v1 saying which whittle made it,
//! from which source image and sensor reports, with which include/exclude options.
//!
//! Two predicate versions, because verifiers name them differently: `cosign verify-attestation
//! --type slsaprovenance` means SLSA v0.2 (`https://slsa.dev/provenance/v0.2`, the default
//! here, and what most admission policies written for cosign expect), `--type slsaprovenance1`
//! means SLSA v1. Both are checked by decoding into in-toto-golang's structs, so timestamps are
//! RFC 3339 and digests are `{"sha256": "<hex>"}` sets.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::sign::{SignError, SigningKey, attest};
use crate::image::distribution::store::{Location, Store};

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// What kind of build this is: a whittle harden of a source image with sensor reports.
pub const BUILD_TYPE: &str = "https://github.com/whittle-dev/whittle/buildtypes/harden/v1";

/// The builder: this whittle, by version.
pub fn builder_id() -> String {
    format!("https://github.com/whittle-dev/whittle@{}", crate::VERSION)
}

/// Which SLSA provenance predicate to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    /// `https://slsa.dev/provenance/v0.2`: cosign's `--type slsaprovenance`.
    #[default]
    V0_2,
    /// `https://slsa.dev/provenance/v1`: cosign's `--type slsaprovenance1`.
    V1,
}

impl SlsaVersion {
    pub fn predicate_type(self) -> &'static str {
        match self {
            SlsaVersion::V0_2 => "https://slsa.dev/provenance/v0.2",
            SlsaVersion::V1 => "https://slsa.dev/provenance/v1",
        }
    }

    /// The name `cosign verify-attestation --type` gives it.
    pub fn cosign_type(self) -> &'static str {
        match self {
            SlsaVersion::V0_2 => "slsaprovenance",
            SlsaVersion::V1 => "slsaprovenance1",
        }
    }
}

/// What the provenance of one harden says.
#[derive(Debug, Clone)]
pub struct ProvenanceInput {
    /// The hardened image's repository, `registry/repo` (cosign names subjects so).
    pub hardened_name: String,
    /// Its manifest digest, `sha256:<hex>`.
    pub hardened_digest: String,
    /// The source image as the workflow named it (`registry/repo:tag`).
    pub source_image: String,
    /// The source image's manifest digest, `sha256:<hex>`.
    pub source_digest: String,
    /// The sensor reports the harden kept files from: (name, sha256 hex of the report's bytes).
    pub reports: Vec<(String, String)>,
    /// `--include` / `spec.include` globs.
    pub include: Vec<String>,
    /// `--exclude` / `spec.exclude` globs.
    pub exclude: Vec<String>,
    pub started_on: Timestamp,
    pub finished_on: Timestamp,
}

/// The in-toto statement for `input` with a SLSA `version` predicate.
pub fn statement(input: &ProvenanceInput, version: SlsaVersion) -> Result<Value, SignError> {
    let hardened = hex_digest("the hardened image's", &input.hardened_digest)?;
    let source = hex_digest("the source image's", &input.source_digest)?;
    let mut reports = Vec::with_capacity(input.reports.len());
    for (name, digest) in &input.reports {
        reports.push((
            name.as_str(),
            hex_digest(&format!("report {name:?}'s"), digest)?,
        ));
    }
    let parameters = json!({
        "sourceImage": input.source_image,
        "include": input.include,
        "exclude": input.exclude,
    });
    let started = input.started_on.to_string();
    let finished = input.finished_on.to_string();
    let predicate = match version {
        SlsaVersion::V0_2 => {
            let mut materials = vec![json!({
                "uri": input.source_image,
                "digest": { "sha256": source },
            })];
            materials.extend(
                reports
                    .iter()
                    .map(|(name, hex)| json!({ "uri": name, "digest": { "sha256": hex } })),
            );
            json!({
                "builder": { "id": builder_id() },
                "buildType": BUILD_TYPE,
                "invocation": {
                    "parameters": parameters,
                    "environment": { "whittleVersion": crate::VERSION },
                },
                "metadata": {
                    "buildStartedOn": started,
                    "buildFinishedOn": finished,
                    // The parameters and materials are all there is to a harden; the machine
                    // it ran on is not described.
                    "completeness": { "parameters": true, "environment": false, "materials": true },
                    "reproducible": false,
                },
                "materials": materials,
            })
        }
        SlsaVersion::V1 => {
            let mut dependencies = vec![json!({
                "name": "source image",
                "uri": input.source_image,
                "digest": { "sha256": source },
            })];
            dependencies.extend(reports.iter().map(|(name, hex)| {
                json!({
                    "name": name,
                    "mediaType": "application/json",
                    "digest": { "sha256": hex },
                })
            }));
            json!({
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": parameters,
                    "resolvedDependencies": dependencies,
                },
                "runDetails": {
                    "builder": {
                        "id": builder_id(),
                        "version": { "whittle": crate::VERSION },
                    },
                    "metadata": { "startedOn": started, "finishedOn": finished },
                },
            })
        }
    };
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": input.hardened_name, "digest": { "sha256": hardened } }],
        "predicateType": version.predicate_type(),
        "predicate": predicate,
    }))
}

/// Builds the provenance of `input` and stores it, signed, as a cosign attestation of the
/// hardened image `image` (its repository; the digest is `input.hardened_digest`). Returns the
/// attestation's reference.
pub async fn attest_provenance(
    store: &Store,
    image: &Location,
    input: &ProvenanceInput,
    version: SlsaVersion,
    key: &SigningKey,
) -> Result<String, SignError> {
    let statement = statement(input, version)?;
    attest(
        store,
        image,
        &input.hardened_digest,
        &statement,
        version.predicate_type(),
        key,
    )
    .await
}

/// The 64 lowercase hex digits of `digest` (`sha256:<hex>` or bare hex).
fn hex_digest(what: &str, digest: &str) -> Result<String, SignError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex.to_string())
    } else {
        Err(SignError::Provenance {
            what: what.to_string(),
            digest: digest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ProvenanceInput {
        ProvenanceInput {
            hardened_name: "127.0.0.1:5000/shop/web".into(),
            hardened_digest: format!("sha256:{}", "aa".repeat(32)),
            source_image: "127.0.0.1:5000/shop/web:1".into(),
            source_digest: format!("sha256:{}", "bb".repeat(32)),
            reports: vec![("web-7f9c/report.json".into(), "cc".repeat(32))],
            include: vec!["/etc/ssl/**".into()],
            exclude: vec![],
            started_on: Timestamp::from_second(1_700_000_000).unwrap(),
            finished_on: Timestamp::from_second(1_700_000_042).unwrap(),
        }
    }

    #[test]
    fn v0_2_names_the_source_and_reports_as_materials() {
        let s = statement(&input(), SlsaVersion::V0_2).unwrap();
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v0.2");
        assert_eq!(s["subject"][0]["digest"]["sha256"], "aa".repeat(32));
        let p = &s["predicate"];
        assert_eq!(p["builder"]["id"], builder_id());
        assert_eq!(p["materials"][0]["uri"], "127.0.0.1:5000/shop/web:1");
        assert_eq!(p["materials"][0]["digest"]["sha256"], "bb".repeat(32));
        assert_eq!(p["materials"][1]["digest"]["sha256"], "cc".repeat(32));
        assert_eq!(p["invocation"]["parameters"]["include"][0], "/etc/ssl/**");
        assert_eq!(p["metadata"]["buildStartedOn"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn v1_names_them_as_resolved_dependencies() {
        let s = statement(&input(), SlsaVersion::V1).unwrap();
        assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
        let p = &s["predicate"];
        let deps = &p["buildDefinition"]["resolvedDependencies"];
        assert_eq!(deps[0]["digest"]["sha256"], "bb".repeat(32));
        assert_eq!(deps[1]["name"], "web-7f9c/report.json");
        assert_eq!(
            p["runDetails"]["builder"]["version"]["whittle"],
            crate::VERSION
        );
        assert_eq!(
            p["runDetails"]["metadata"]["finishedOn"],
            "2023-11-14T22:14:02Z"
        );
    }

    #[test]
    fn bad_digests_are_named() {
        let mut bad = input();
        bad.reports[0].1 = "abc".into();
        let err = statement(&bad, SlsaVersion::V0_2).unwrap_err();
        assert!(err.to_string().contains("web-7f9c/report.json"), "{err}");
    }
}
