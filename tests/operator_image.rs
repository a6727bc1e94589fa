//! The operator's own image carries its own evidence: `whittle operator-image --sign-key`
//! (what `make image SIGN_KEY=...` runs) pushes it with a CycloneDX SBOM referrer, a cosign
//! signature and a signed SLSA provenance, made by the code that signs hardened images.
//!
//! The checks are the real cosign's, offline, with the public key: `cosign verify --key` and
//! `cosign verify-attestation --type slsaprovenance --key`. They are what a Kyverno
//! `verifyImages` rule with a key attestor and an attestation of type
//! `https://slsa.dev/provenance/v0.2` does before it admits a pod (docs/security.md ships such
//! a ClusterPolicy), so an admission policy demanding signed whittle images admits this one and
//! refuses an unsigned copy or one signed with another key.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use whittle::evidence::sbom;
use whittle_testbed::binaries;
use whittle_testbed::images::registry::Registry;

use support::cli::text;
use support::cosign::Cosign;
use support::scanners::cyclonedx_errors;

const PASSWORD: &str = "operator image test";

/// `whittle operator-image` with the static test binaries, `COSIGN_PASSWORD` opening a cosign
/// key.
fn operator_image(args: &[&str]) -> Output {
    let static_whittle = binaries::whittle_binary().expect("static whittle");
    let sensor = binaries::sensor_binary().expect("static sensor");
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .arg("operator-image")
        .args(args)
        .arg("--insecure")
        .arg("--whittle")
        .arg(&static_whittle)
        .arg("--sensor")
        .arg(&sensor)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run whittle operator-image")
}

/// The digest in the last line whittle printed: `registry/repo:tag@sha256:...  (N bytes ...)`.
fn pushed_digest(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split('@').nth(1))
        .and_then(|d| d.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest printed: {}", text(out)))
        .to_string()
}

fn sha256_of(path: &Path) -> String {
    format!(
        "{:x}",
        Sha256::digest(std::fs::read(path).expect("read binary"))
    )
}

/// A manifest, index or blob from the registry with curl (not whittle's client).
fn get(registry: &Registry, path: &str) -> Value {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/{path}", registry.host()))
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {path}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_cosign(what: &str, out: &Output, succeeds: bool, why: &str) {
    assert_eq!(out.status.success(), succeeds, "{what}: {}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "{what} did not say {why:?}: {}",
        text(out)
    );
}

#[test]
fn the_signed_operator_image_verifies_with_cosign_as_an_admission_policy_checks_it() {
    let registry = Registry::start().expect("registry");
    let cosign = Cosign::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, public) = cosign.generate_key_pair(dir.path(), PASSWORD);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let (_, other_public) = cosign.generate_key_pair(&other, PASSWORD);

    let repo = format!("{}/whittle/operator", registry.host());
    let image = format!("{repo}:test");
    let out = operator_image(&[&image, "--sign-key", key.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let digest = pushed_digest(&out);
    let pinned = format!("{repo}@{digest}");
    eprintln!("{}", text(&out));

    // Kyverno's key attestor: the signature, by tag and by digest.
    let verified = cosign.verify(&public, &image);
    let by_key = "The signatures were verified against the specified public key";
    assert_cosign("cosign verify", &verified, true, by_key);
    let claims: Value = serde_json::from_slice(&verified.stdout).expect("cosign prints JSON");
    assert_eq!(
        claims[0]["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert!(cosign.verify(&public, &pinned).status.success());

    // Kyverno's attestation check: the SLSA provenance, signed by the same key, about this
    // digest, naming the binaries it was assembled from.
    let attested = cosign.verify_attestation(&public, "slsaprovenance", &pinned);
    assert_cosign("cosign verify-attestation", &attested, true, by_key);
    let line = String::from_utf8_lossy(&attested.stdout);
    let envelope: Value =
        serde_json::from_str(line.lines().next().expect("an envelope")).expect("envelope JSON");
    let statement: Value = serde_json::from_slice(
        &BASE64
            .decode(envelope["payload"].as_str().expect("payload"))
            .expect("base64"),
    )
    .expect("statement");
    assert_eq!(
        statement["predicateType"],
        "https://slsa.dev/provenance/v0.2"
    );
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["buildType"],
        whittle::evidence::provenance::OPERATOR_IMAGE_BUILD_TYPE
    );
    let material = |uri: &str| {
        predicate["materials"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["uri"] == uri)
            .map(|m| m["digest"]["sha256"].clone())
            .unwrap_or_else(|| panic!("no material {uri}: {predicate:#}"))
    };
    let static_whittle = binaries::whittle_binary().expect("static whittle");
    let sensor = binaries::sensor_binary().expect("static sensor");
    assert_eq!(
        material("/usr/local/bin/whittle"),
        sha256_of(&static_whittle)
    );
    assert_eq!(
        material("/usr/local/bin/whittle-sensor"),
        sha256_of(&sensor)
    );

    // The SBOM referrer: this registry has no referrers API, so it is listed under the
    // referrers tag; a valid CycloneDX 1.6 document naming both programs by hash.
    let index = get(
        &registry,
        &format!(
            "whittle/operator/manifests/{}",
            digest.replacen(':', "-", 1)
        ),
    );
    let entry = &index["manifests"][0];
    assert_eq!(entry["artifactType"], sbom::MEDIA_TYPE, "{index}");
    let artifact = get(
        &registry,
        &format!(
            "whittle/operator/manifests/{}",
            entry["digest"].as_str().expect("digest")
        ),
    );
    assert_eq!(artifact["subject"]["digest"], digest.as_str(), "{artifact}");
    let bom = get(
        &registry,
        &format!(
            "whittle/operator/blobs/{}",
            artifact["layers"][0]["digest"].as_str().expect("blob")
        ),
    );
    assert_eq!(cyclonedx_errors(&bom), Vec::<String>::new(), "{bom:#}");
    assert_eq!(bom["metadata"]["component"]["version"], digest.as_str());
    let hash_of = |name: &str| {
        bom["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .map(|c| c["hashes"][0]["content"].clone())
            .unwrap_or_else(|| panic!("no component {name}: {bom:#}"))
    };
    assert_eq!(hash_of("whittle"), sha256_of(&static_whittle));
    assert_eq!(hash_of("whittle-sensor"), sha256_of(&sensor));

    // What the policy refuses: another key's verification, and the same image unsigned in
    // another repository (signatures live beside the image, per repository).
    assert_cosign(
        "cosign verify with another key",
        &cosign.verify(&other_public, &image),
        false,
        "no matching signatures",
    );
    assert!(
        !cosign
            .verify_attestation(&other_public, "slsaprovenance", &pinned)
            .status
            .success(),
        "the provenance verifies only with the signing key"
    );
    let unsigned = format!("{}/whittle/unsigned:test", registry.host());
    let out = operator_image(&[&unsigned]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        pushed_digest(&out),
        digest,
        "the same binaries assemble the same image"
    );
    assert_cosign(
        "cosign verify of the unsigned copy",
        &cosign.verify(&public, &unsigned),
        false,
        "no signatures found",
    );
}

#[test]
fn a_signing_key_without_a_registry_destination_is_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = format!("oci:{}:test", dir.path().join("image").display());
    let out = operator_image(&[&layout, "--sign-key", "/nonexistent/cosign.key"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("signatures are stored beside an image in a registry"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("image").exists(), "nothing was written");
}
