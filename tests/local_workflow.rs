//! `whittle local` end to end: the demo flow on an OCI layout, the same from an authenticated
//! registry, and proof that verification is real (a hardened image missing a file an exercise
//! needs fails, naming the exercise).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

mod support;
use support::cli::{text, whittle};
use support::layers::{self, hardened_layer, swap_blob};
use whittle_testbed::images::oci_layout;

const HOME_PAGE: &str = r#"curl -fsS http://$WHITTLE_TARGET/ | grep -q "Welcome to nginx""#;
const MISSING_PAGE: &str =
    r#"test "$(curl -s -o /dev/null -w '%{http_code}' http://$WHITTLE_TARGET/missing)" = 404"#;

/// A private copy of the nginx fixture layout: `whittle local` writes its images into it.
fn nginx_layout() -> tempfile::TempDir {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&fixture.layout)
        .arg(dir.path().join("nginx"))
        .status()
        .expect("cp");
    assert!(status.success());
    dir
}

fn summary(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary written")).expect("json")
}

fn local(src: &str, extra: &[&str], summary_path: &Path) -> Output {
    let mut args = vec![
        "local",
        src,
        "--exercise",
        HOME_PAGE,
        "--exercise",
        MISSING_PAGE,
        "--summary",
        summary_path.to_str().unwrap(),
    ];
    args.extend(extra);
    whittle(&args)
}

#[test]
fn the_demo_flow_on_an_oci_layout_is_verified() {
    let dir = nginx_layout();
    let src = format!("oci:{}:latest", dir.path().join("nginx").display());
    let summary_path = dir.path().join("summary.json");
    let out = local(&src, &[], &summary_path);
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&summary_path);
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["hardenedBytes"].as_u64().unwrap() <= 11_000_000, "{s}");
    assert_eq!(s["exercises"].as_array().unwrap().len(), 2);
    for e in s["exercises"].as_array().unwrap() {
        assert_eq!(e["original"]["exitCode"], 0, "{e}");
        assert_eq!(e["hardened"]["exitCode"], 0, "{e}");
    }
    let phases: Vec<&str> = s["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        phases,
        [
            "instrument",
            "start",
            "observe",
            "collect",
            "harden",
            "verify"
        ]
    );
    let printed = text(&out);
    assert!(printed.contains("verified   yes"), "{printed}");
    // The hardened image is in the layout under the default tag.
    let index = std::fs::read_to_string(dir.path().join("nginx/index.json")).unwrap();
    assert!(index.contains("latest-whittle-hardened"), "{index}");
    let layer = hardened_layer(s["hardenedImage"].as_str().unwrap());
    assert_eq!(layer.media_type, layers::GZIP);
    layer.assert_no_larger_than_gzip6();
}

/// `--compression zstd`: the hardened layer is OCI tar+zstd, whittle unpacks it for runc to
/// verify, and it is smaller than the gzip one would be. `--pack tzdata`: every zone is kept,
/// though nginx read only `/etc/localtime`, and the summary and the table say what it cost.
#[test]
fn a_zstd_hardened_image_is_verified_too() {
    let dir = nginx_layout();
    let src = format!("oci:{}:latest", dir.path().join("nginx").display());
    let summary_path = dir.path().join("summary.json");
    let out = local(
        &src,
        &["--compression", "zstd", "--pack", "tzdata"],
        &summary_path,
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&summary_path);
    assert_eq!(s["verified"], true, "{s}");
    let layer = hardened_layer(s["hardenedImage"].as_str().unwrap());
    assert_eq!(layer.media_type, layers::ZSTD);
    let files = layer.files();
    assert!(files.contains("usr/sbin/nginx"));
    assert!(
        files.contains("usr/share/zoneinfo/Europe/Berlin"),
        "--pack tzdata keeps the zones no report named"
    );
    let tzdata = &s["packs"][0];
    assert_eq!(tzdata["name"], "tzdata", "{s}");
    let (found, added) = (
        tzdata["found"].as_u64().unwrap(),
        tzdata["files"].as_u64().unwrap(),
    );
    assert!(
        added > 1000 && added < found,
        "the zone nginx read is not the pack's cost: {tzdata}"
    );
    assert!(tzdata["bytes"].as_u64().unwrap() > 1_000_000, "{tzdata}");
    let printed = text(&out);
    assert!(printed.contains("pack       tzdata: added"), "{printed}");
    layer.assert_no_larger_than_gzip6();
}

#[test]
fn the_same_from_an_authenticated_registry() {
    let registry = Registry::start_with_auth().expect("registry");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "local/nginx:1")
        .expect("push");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.json");
    std::fs::write(&config, registry.docker_config_json()).unwrap();
    let summary_path = dir.path().join("summary.json");
    let out = local(
        &src,
        &["--insecure", "--registry-config", config.to_str().unwrap()],
        &summary_path,
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = summary(&summary_path);
    assert_eq!(s["verified"], true, "{s}");
    let hardened = s["hardenedImage"].as_str().unwrap();
    assert!(
        hardened.starts_with(&format!("{}/local/nginx@sha256:", registry.host())),
        "{hardened}"
    );
}

#[test]
fn verification_fails_when_the_hardened_image_lacks_what_an_exercise_needs() {
    let dir = nginx_layout();
    let src = format!("oci:{}:latest", dir.path().join("nginx").display());
    let summary_path = dir.path().join("summary.json");
    // The observed run serves the page, so the report names it; dropping it must be caught.
    let out = local(
        &src,
        &["--exclude", "/var/www/html/index.nginx-debian.html"],
        &summary_path,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("verification failed") && printed.contains(HOME_PAGE),
        "the failing exercise is not named:\n{printed}"
    );
    let s = summary(&summary_path);
    assert_eq!(s["verified"], false);
    let exercises = s["exercises"].as_array().unwrap();
    assert_eq!(exercises[0]["hardened"]["passed"], false, "{s}");
    assert_eq!(exercises[1]["hardened"]["passed"], true, "{s}");
}

#[test]
fn an_exercise_that_fails_against_the_original_is_the_exercises_fault() {
    let dir = nginx_layout();
    let src = format!("oci:{}:latest", dir.path().join("nginx").display());
    let out = whittle(&[
        "local",
        &src,
        "--exercise",
        "curl -fsS http://$WHITTLE_TARGET/no-such-page",
    ]);
    assert!(!out.status.success());
    let printed = text(&out);
    assert!(
        printed.contains("fails against the ORIGINAL image") && printed.contains("no-such-page"),
        "{printed}"
    );
}

/// A layout whose layer blob was swapped for other content of the same size, padded after the
/// tar's end-of-archive: `whittle local` compares the digest while unpacking, before anything
/// runs.
#[test]
fn a_swapped_layer_padded_after_its_end_of_archive_fails_the_digest_check() {
    let dir = nginx_layout();
    let layout = dir.path().join("nginx");
    let manifest = oci_layout::manifest(&layout, "latest").expect("manifest");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    swap_blob(&oci_layout::blob_path(&layout, digest).expect("blob path"));
    let src = format!("oci:{}:latest", layout.display());
    let out = local(&src, &[], &dir.path().join("summary.json"));
    assert!(!out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains(digest) && printed.contains("with digest"),
        "{printed}"
    );
}

/// `whittle local` sets every file aside to unpack an image: its spool budget refuses an image
/// larger than the limit, naming the flag, before anything runs.
#[test]
fn the_spool_limit_refuses_an_image_too_large_to_unpack() {
    let dir = nginx_layout();
    let src = format!("oci:{}:latest", dir.path().join("nginx").display());
    let out = local(
        &src,
        &["--spool-limit", "8Mi"],
        &dir.path().join("summary.json"),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("8 MiB, 8388608 bytes") && printed.contains("--spool-limit"),
        "{printed}"
    );
}
