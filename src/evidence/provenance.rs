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
    /// `--pack` / `spec.harden.packs` names; recorded only when there are any, so that a harden
    /// without packs states what it stated before packs existed.
    pub packs: Vec<String>,
    pub started_on: Timestamp,
    pub finished_on: Timestamp,
}

/// What any provenance says, whatever whittle built: a harden ([`ProvenanceInput`]) or an
/// image it assembled itself (the operator's own, `whittle operator-image`).
#[derive(Debug, Clone)]
pub struct Build {
    /// The built image's repository, `registry/repo`.
    pub subject_name: String,
    /// Its manifest digest, `sha256:<hex>`.
    pub subject_digest: String,
    /// [`BUILD_TYPE`] or [`OPERATOR_IMAGE_BUILD_TYPE`].
    pub build_type: &'static str,
    /// The options that shaped the build (v0.2 `invocation.parameters`, v1
    /// `externalParameters`).
    pub parameters: Value,
    /// What went into it; each checked to be a sha256 digest.
    pub materials: Vec<Material>,
    pub started_on: Timestamp,
    pub finished_on: Timestamp,
}

/// One input of a build: v0.2 names it by `uri` (or `name` without one), v1 by both.
#[derive(Debug, Clone)]
pub struct Material {
    pub name: String,
    pub uri: Option<String>,
    pub media_type: Option<&'static str>,
    /// `sha256:<hex>` or bare hex.
    pub sha256: String,
}

/// What kind of build the operator's image is: whittle's static binaries assembled into a
/// one-layer image by `whittle operator-image`.
pub const OPERATOR_IMAGE_BUILD_TYPE: &str =
    "https://github.com/whittle-dev/whittle/buildtypes/operator-image/v1";

impl ProvenanceInput {
    /// The harden as a [`Build`]: the source image, then the reports, as materials.
    pub fn build(&self) -> Build {
        let mut materials = vec![Material {
            name: "source image".into(),
            uri: Some(self.source_image.clone()),
            media_type: None,
            sha256: self.source_digest.clone(),
        }];
        materials.extend(self.reports.iter().map(|(name, digest)| Material {
            name: name.clone(),
            uri: None,
            media_type: Some("application/json"),
            sha256: digest.clone(),
        }));
        Build {
            subject_name: self.hardened_name.clone(),
            subject_digest: self.hardened_digest.clone(),
            build_type: BUILD_TYPE,
            parameters: {
                let mut parameters = json!({
                    "sourceImage": self.source_image,
                    "include": self.include,
                    "exclude": self.exclude,
                });
                if !self.packs.is_empty() {
                    parameters["packs"] = json!(self.packs);
                }
                parameters
            },
            materials,
            started_on: self.started_on,
            finished_on: self.finished_on,
        }
    }
}

/// The in-toto statement for `input` with a SLSA `version` predicate.
pub fn statement(input: &ProvenanceInput, version: SlsaVersion) -> Result<Value, SignError> {
    let build = input.build();
    // Checked first so that a harden's messages name the hardened and the source image.
    hex_digest("the hardened image's", &build.subject_digest)?;
    hex_digest("the source image's", &input.source_digest)?;
    build_statement(&build, version)
}

/// The in-toto statement for any `build` with a SLSA `version` predicate.
pub fn build_statement(build: &Build, version: SlsaVersion) -> Result<Value, SignError> {
    let subject = hex_digest("the built image's", &build.subject_digest)?;
    let mut materials = Vec::with_capacity(build.materials.len());
    for m in &build.materials {
        materials.push((m, hex_digest(&format!("{:?}'s", m.name), &m.sha256)?));
    }
    let started = build.started_on.to_string();
    let finished = build.finished_on.to_string();
    let predicate = match version {
        SlsaVersion::V0_2 => {
            let materials: Vec<Value> = materials
                .iter()
                .map(|(m, hex)| {
                    json!({
                        "uri": m.uri.as_deref().unwrap_or(&m.name),
                        "digest": { "sha256": hex },
                    })
                })
                .collect();
            json!({
                "builder": { "id": builder_id() },
                "buildType": build.build_type,
                "invocation": {
                    "parameters": build.parameters,
                    "environment": { "whittleVersion": crate::VERSION },
                },
                "metadata": {
                    "buildStartedOn": started,
                    "buildFinishedOn": finished,
                    // The parameters and materials are all there is to the build; the machine
                    // it ran on is not described.
                    "completeness": { "parameters": true, "environment": false, "materials": true },
                    "reproducible": false,
                },
                "materials": materials,
            })
        }
        SlsaVersion::V1 => {
            let dependencies: Vec<Value> = materials
                .iter()
                .map(|(m, hex)| {
                    let mut d = json!({ "name": m.name, "digest": { "sha256": hex } });
                    if let Some(uri) = &m.uri {
                        d["uri"] = json!(uri);
                    }
                    if let Some(media_type) = m.media_type {
                        d["mediaType"] = json!(media_type);
                    }
                    d
                })
                .collect();
            json!({
                "buildDefinition": {
                    "buildType": build.build_type,
                    "externalParameters": build.parameters,
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
        "subject": [{ "name": build.subject_name, "digest": { "sha256": subject } }],
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

/// [`attest_provenance`] for any [`Build`]: its provenance, signed, as a cosign attestation of
/// `image` (the build's subject).
pub async fn attest_build(
    store: &Store,
    image: &Location,
    build: &Build,
    version: SlsaVersion,
    key: &SigningKey,
) -> Result<String, SignError> {
    let statement = build_statement(build, version)?;
    attest(
        store,
        image,
        &build.subject_digest,
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
            packs: vec!["ca-certificates".into()],
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
        assert_eq!(p["invocation"]["parameters"]["packs"][0], "ca-certificates");
        let without = ProvenanceInput {
            packs: vec![],
            ..input()
        };
        let s = statement(&without, SlsaVersion::V0_2).unwrap();
        assert!(
            s["predicate"]["invocation"]["parameters"]
                .get("packs")
                .is_none(),
            "no packs, no parameter"
        );
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
