//! The real tools that consume whittle's evidence: syft reading an image's packages, and the
//! official CycloneDX JSON schema.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use whittle_testbed::tools::syft_binary;

/// What syft (the real one, from its Go module) finds in an image of a plain-HTTP registry:
/// the distribution `id version` and the names of the Debian packages.
pub fn syft_debs(reference: &str) -> (String, BTreeSet<String>) {
    let out = Command::new(syft_binary().expect("syft"))
        .args(["scan", "-q", "-o", "json"])
        .arg(format!("registry:{reference}"))
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .env("SYFT_REGISTRY_INSECURE_USE_HTTP", "true")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run syft");
    assert!(
        out.status.success(),
        "syft scan {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("syft JSON");
    let distro = format!(
        "{} {}",
        doc["distro"]["id"].as_str().unwrap_or("none"),
        doc["distro"]["versionID"].as_str().unwrap_or("none")
    );
    let debs = doc["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter(|a| a["type"] == "deb")
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    (distro, debs)
}

/// Errors of `bom` against the CycloneDX 1.6 JSON schema (and the SPDX and JSF schemas it
/// refers to), as published in CycloneDX/specification and checked into tests/data/cyclonedx.
pub fn cyclonedx_errors(bom: &Value) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cyclonedx");
    let load = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).expect("schema file"))
            .expect("schema JSON")
    };
    let registry = jsonschema::Registry::new()
        .add(
            "http://cyclonedx.org/schema/spdx.schema.json",
            load("spdx.schema.json"),
        )
        .and_then(|r| {
            r.add(
                "http://cyclonedx.org/schema/jsf-0.82.schema.json",
                load("jsf-0.82.schema.json"),
            )
        })
        .and_then(|r| r.prepare())
        .expect("schema registry");
    let schema = load("bom-1.6.schema.json");
    let validator = jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&schema)
        .expect("CycloneDX schema");
    validator
        .iter_errors(bom)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}
