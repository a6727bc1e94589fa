//! What hardening removed, as the tools security teams use see it: `whittle local` on the nginx
//! fixture with `--sbom`, `--vuln-db` and `--sign-key`, then the real syft reading both images,
//! the official CycloneDX schema, the SBOM referrer, and the real cosign verifying the signature
//! and the provenance.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use whittle::evidence::sbom::{self, Subject};
use whittle::evidence::sign::SigningKey;
use whittle::evidence::vulns::VulnDb;
use whittle::evidence::vulns::matching::scan;
use whittle::image::distribution::store::{Location, Store};
use whittle::image::packages::{Inventory, Manager, OsRelease, Package, read_inventory};
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

mod support;
use support::cli::{text, whittle};
use support::cosign::Cosign;
use support::scanners::{cyclonedx_errors, syft_debs};

const HOME_PAGE: &str = r#"curl -fsS http://$WHITTLE_TARGET/ | grep -q "Welcome to nginx""#;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

fn names_with_state(summary: &Value, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    summary["packages"]["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| {
            let (files, kept) = (p["files"].as_u64(), p["kept"].as_u64());
            let state = match (files, kept) {
                (Some(0), _) => "kept",
                (_, Some(0)) => "removed",
                (Some(f), Some(k)) if k < f => "partial",
                _ => "kept",
            };
            keep(state)
        })
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_hardened_nginx_tells_scanners_what_remains() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "evidence/nginx:1")
        .expect("push");
    let dir = tempfile::tempdir().expect("tmp");
    let sboms = dir.path().join("sbom");
    let summary_path = dir.path().join("summary.json");
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv");
    let key = SigningKey::generate().expect("key");
    let key_path = dir.path().join("sign.pem");
    let public = dir.path().join("sign.pub");
    std::fs::write(&key_path, key.to_pkcs8_pem().expect("pem").as_bytes()).expect("write key");
    std::fs::write(&public, key.public_key_pem()).expect("write public key");
    let out = whittle(&[
        "local",
        &src,
        "--insecure",
        "--exercise",
        HOME_PAGE,
        "--sbom",
        sboms.to_str().unwrap(),
        "--vuln-db",
        db.to_str().unwrap(),
        "--sign-key",
        key_path.to_str().unwrap(),
        "--summary",
        summary_path.to_str().unwrap(),
    ]);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let s = json(&summary_path);
    let hardened = s["hardenedImage"].as_str().expect("hardenedImage");
    support::layers::hardened_layer(hardened).assert_no_larger_than_gzip6();

    // syft sees Debian 12 and exactly the packages whittle says still have files.
    let remaining = names_with_state(&s, |state| state != "removed");
    let removed = names_with_state(&s, |state| state == "removed");
    assert!(
        remaining.contains("nginx") && remaining.contains("libc6"),
        "{remaining:?}"
    );
    assert!(
        removed.contains("dpkg") && removed.contains("bash"),
        "{removed:?}"
    );
    let (distro, debs) = syft_debs(hardened);
    assert_eq!(
        distro, "debian 12",
        "the hardened image keeps its os-release"
    );
    assert_eq!(debs, remaining, "syft's packages in the hardened image");
    let (_, source_debs) = syft_debs(&src);
    let all: BTreeSet<String> = remaining.union(&removed).cloned().collect();
    assert_eq!(source_debs, all, "syft's packages in the source image");

    // The summary table names packages and vulnerabilities before and after.
    assert!(
        printed.contains(&format!(
            "packages   {} -> {} ({} removed, ",
            all.len(),
            remaining.len(),
            removed.len()
        )),
        "{printed}"
    );
    // tests/data/osv/SOURCES.md: of the fixture's findings (one per record and binary
    // package), the dpkg and tar ones go with their packages, the glibc ones stay.
    assert!(
        printed.contains("vulns      4 -> 2 (critical 2 -> 2, high 1 -> 0, medium 1 -> 0"),
        "{printed}"
    );
    let v = &s["vulnerabilities"];
    let ids = |list: &str| -> BTreeSet<String> {
        v[list]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    f["id"].as_str().unwrap_or(""),
                    f["package"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        ids("removed"),
        ["WHITTLE-TEST-DPKG dpkg", "WHITTLE-TEST-TAR tar"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        ids("remaining"),
        ["WHITTLE-TEST-GLIBC libc-bin", "WHITTLE-TEST-GLIBC libc6"]
            .map(String::from)
            .into()
    );

    // Read back from the registry (only its package database), the hardened image has the
    // packages that remain, and matching them again finds what the harden said it keeps: what
    // continuous hardening re-matches at every check.
    let (source_inv, hardened_inv) = read_inventories(&registry, &src, hardened);
    let names = |inv: &Inventory| -> BTreeSet<String> {
        inv.packages.iter().map(|p| p.name.clone()).collect()
    };
    assert_eq!(names(&hardened_inv), remaining, "the pruned database");
    assert_eq!(names(&source_inv), all, "the source's database");
    let os = hardened_inv.os.clone().expect("os-release");
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("debian", Some("12"))
    );
    let vuln_db = VulnDb::load(&db).expect("the OSV fixture");
    let rematched: BTreeSet<String> = scan(&vuln_db, &hardened_inv)
        .iter()
        .map(|f| format!("{} {}", f.id, f.package))
        .collect();
    assert_eq!(rematched, ids("remaining"));

    // Both SBOMs are valid CycloneDX 1.6 and list what syft lists.
    for (file, want) in [("source.cdx.json", &all), ("hardened.cdx.json", &remaining)] {
        let bom = json(&sboms.join(file));
        assert_eq!(cyclonedx_errors(&bom), Vec::<String>::new(), "{file}");
        let names: BTreeSet<String> = bom["components"]
            .as_array()
            .expect("components")
            .iter()
            .filter(|c| c["type"] == "library")
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(&names, want, "{file}");
    }
    let bom = json(&sboms.join("hardened.cdx.json"));
    let nginx = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == "nginx")
        .expect("nginx in the SBOM");
    let purl = nginx["purl"].as_str().expect("purl");
    assert!(
        purl.starts_with("pkg:deb/debian/nginx@1.22.1-9")
            && purl.ends_with("?arch=amd64&distro=debian-12"),
        "{purl}"
    );
    let component = &bom["metadata"]["component"];
    assert_eq!(component["version"], hardened.rsplit_once('@').unwrap().1);
    assert_eq!(
        component["pedigree"]["ancestors"][0]["version"],
        s["sourceImage"]
            .as_str()
            .unwrap()
            .rsplit_once('@')
            .unwrap()
            .1,
        "the source image is the hardened one's ancestor"
    );
    assert_eq!(bom["metadata"]["tools"]["components"][0]["name"], "whittle");

    // The hardened SBOM is attached to the image: this registry has no referrers API, so it
    // is listed under the referrers tag, read here with skopeo.
    let digest = hardened.rsplit_once('@').unwrap().1;
    let repo = hardened.rsplit_once('@').unwrap().0;
    assert_eq!(
        s["sbom"]["via"],
        format!("referrers tag {}", digest.replacen(':', "-", 1)),
        "{s}"
    );
    let index = skopeo_raw(&format!("{repo}:{}", digest.replacen(':', "-", 1)));
    let entry = &index["manifests"][0];
    assert_eq!(entry["artifactType"], sbom::MEDIA_TYPE, "{index}");
    let artifact = skopeo_raw(&format!("{repo}@{}", entry["digest"].as_str().unwrap()));
    assert_eq!(artifact["subject"]["digest"], digest, "{artifact}");
    assert_eq!(artifact["layers"][0]["mediaType"], sbom::MEDIA_TYPE);

    // The real cosign verifies the signature and the SLSA provenance with the public key.
    let cosign = Cosign::new();
    let verified = cosign.verify(&public, hardened);
    assert!(
        verified.status.success(),
        "cosign verify: {}",
        text(&verified)
    );
    let attested = cosign.verify_attestation(&public, "slsaprovenance", hardened);
    assert!(
        attested.status.success(),
        "cosign verify-attestation: {}",
        text(&attested)
    );
    assert!(
        s["signature"]
            .as_str()
            .is_some_and(|r| r.contains(".sig@sha256:")),
        "{s}"
    );
    assert!(printed.contains("provenance "), "{printed}");

    // The gate: the fixture's kept glibc Criticals have no fix, so only `critical,any` trips
    // it, and the image it refuses is not signed.
    let gated = format!("{}/evidence/gated:1", registry.host());
    let out = whittle(&[
        "local",
        &src,
        "--insecure",
        "--exercise",
        HOME_PAGE,
        "--hardened-image",
        &gated,
        "--vuln-db",
        db.to_str().unwrap(),
        "--sign-key",
        key_path.to_str().unwrap(),
        "--fail-on",
        "critical,any",
    ]);
    let refused = text(&out);
    assert!(!out.status.success(), "{refused}");
    for part in [
        "keeps 2 vulnerabilities of severity Critical or worse (--fail-on): WHITTLE-TEST-GLIBC in libc-bin ",
        "→ no fix yet (Critical)",
        "; it is not signed",
    ] {
        assert!(refused.contains(part), "{part:?} not in {refused}");
    }
    assert!(
        !cosign.verify(&public, &gated).status.success(),
        "a refused image is not signed"
    );

    // whittle inspect now sees the distribution and the remaining packages.
    let out = whittle(&["inspect", "--insecure", hardened]);
    let inspected = text(&out);
    assert!(out.status.success(), "{inspected}");
    assert!(
        inspected.contains("Debian GNU/Linux 12 (bookworm)"),
        "{inspected}"
    );
    assert!(
        inspected.contains(&format!(
            "packages         {} installed (dpkg database)",
            remaining.len()
        )),
        "{inspected}"
    );
}

/// The inventories of `source` and `hardened` as `read_inventory` reads them from the registry.
fn read_inventories(registry: &Registry, source: &str, hardened: &str) -> (Inventory, Inventory) {
    whittle::init_tls();
    let store = Store::new(
        whittle::image::distribution::credentials::Credentials::anonymous(),
        whittle::image::distribution::registry::RegistryOptions {
            insecure_registries: vec![registry.host()],
            ..Default::default()
        },
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let read = |r: &str| {
            let location = Location::parse(r).expect("reference");
            let store = &store;
            async move { read_inventory(store, &location).await.expect("inventory") }
        };
        (read(source).await, read(hardened).await)
    })
}

/// A manifest or index as the registry serves it, read with skopeo (not whittle's client).
fn skopeo_raw(reference: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

#[test]
fn sboms_of_any_inventory_are_valid_cyclonedx() {
    let package = |name: &str, version: &str, manager, files, kept| Package {
        manager,
        name: name.into(),
        version: version.into(),
        arch: Some("amd64".into()),
        source: name.into(),
        source_version: version.into(),
        files,
        kept,
    };
    let inventory = Inventory {
        os: Some(OsRelease {
            id: "debian".into(),
            version_id: Some("12".into()),
            codename: None,
            pretty_name: None,
        }),
        packages: vec![
            package("libc6", "2.36-9+deb12u4", Manager::Dpkg, 10, 4),
            package("perl-base", "5.36.0-7+deb12u1", Manager::Dpkg, 5, 0),
            package("musl", "1.2.5-r0", Manager::Apk, 2, 2),
        ],
    };
    let source = Subject {
        name: "127.0.0.1:5000/web",
        digest: "sha256:aaa",
    };
    let hardened = Subject {
        name: "127.0.0.1:5000/web",
        digest: "sha256:bbb",
    };
    let ts = "2026-12-02T04:00:00Z";
    for bom in [
        sbom::cyclonedx(&source, &inventory, None, ts),
        sbom::cyclonedx(&hardened, &inventory, Some(&source), ts),
        sbom::cyclonedx(&source, &Inventory::default(), None, ts),
        sbom::assembled(
            &hardened,
            &[
                sbom::File {
                    path: "usr/local/bin/whittle",
                    kind: "application",
                    version: Some("0.1.0"),
                    contents: b"\x7fELF",
                },
                sbom::File {
                    path: "etc/passwd",
                    kind: "data",
                    version: None,
                    contents: b"root:x:0:0::/:/sbin/nologin\n",
                },
            ],
            ts,
        ),
    ] {
        assert_eq!(cyclonedx_errors(&bom), Vec::<String>::new(), "{bom:#}");
    }
    let mut broken = sbom::cyclonedx(&source, &inventory, None, ts);
    broken["components"][1]["type"] = "not-a-type".into();
    assert!(
        !cyclonedx_errors(&broken).is_empty(),
        "the schema check can fail"
    );
}

#[test]
fn bad_evidence_options_fail_before_any_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = format!("oci:{}:latest", dir.path().join("nothing").display());
    let out = whittle(&[
        "local",
        &src,
        "--exercise",
        "true",
        "--sign-key",
        "/no/key.pem",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("signatures are stored beside an image in a registry"),
        "{}",
        text(&out)
    );
    let bad_db = dir.path().join("db");
    std::fs::create_dir(&bad_db).expect("mkdir");
    std::fs::write(bad_db.join("X-1.json"), r#"{"summary": "no id"}"#).expect("write");
    let reg = "127.0.0.1:1/shop/web:1";
    let out = whittle(&[
        "local",
        reg,
        "--exercise",
        "true",
        "--vuln-db",
        bad_db.to_str().unwrap(),
    ]);
    let printed = text(&out);
    assert!(!out.status.success());
    assert!(
        printed.contains("X-1.json is not an OSV record"),
        "{printed}"
    );
    let out = whittle(&[
        "local",
        reg,
        "--exercise",
        "true",
        "--sign-key",
        "/no/key.pem",
    ]);
    let printed = text(&out);
    assert!(!out.status.success());
    assert!(printed.contains("signing key /no/key.pem"), "{printed}");
    let out = whittle(&["local", reg, "--exercise", "true", "--fail-on", "high"]);
    let printed = text(&out);
    assert!(!out.status.success());
    assert!(printed.contains("--fail-on needs --vuln-db"), "{printed}");
}
