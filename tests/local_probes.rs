//! `whittle local` with commands run inside the container, as `docker exec` and Docker's
//! `HEALTHCHECK` run them: not the app's descendants, so the sensor sees them only because
//! whittle runs them under `whittle-sensor exec` while observing. md5sum and sha1sum are in the
//! nginx fixture and nginx never runs them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use whittle_testbed::images::{fixtures, oci_layout};
use whittle_testbed::runc::{Bundle, Container, RunOptions};

mod support;
use support::cli::{text, whittle};
use support::layers::hardened_layer;

const HOME_PAGE: &str = r#"curl -fsS http://$WHITTLE_TARGET/ | grep -q "Welcome to nginx""#;
const PROBE: &str = "/usr/bin/md5sum /etc/debian_version";
const HEALTHCHECK: &str = "sha1sum /etc/host.conf";

/// A private copy of the nginx fixture layout; with `healthcheck`, its config carries a Docker
/// `HEALTHCHECK CMD-SHELL` (umoci cannot write one: it is not in the OCI config).
fn nginx_layout(healthcheck: bool) -> tempfile::TempDir {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("nginx");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&fixture.layout)
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(status.success());
    if healthcheck {
        oci_layout::edit_config(&layout, "latest", |c| {
            c["config"]["Healthcheck"] = json!({
                "Test": ["CMD-SHELL", HEALTHCHECK],
                "Interval": 30_000_000_000u64,
            });
        })
        .expect("add a HEALTHCHECK");
    }
    dir
}

fn local(dir: &Path, extra: &[&str]) -> (Output, Value) {
    let src = format!("oci:{}:latest", dir.join("nginx").display());
    let summary_path = dir.join("summary.json");
    let mut args = vec![
        "local",
        &src,
        "--exercise",
        HOME_PAGE,
        "--summary",
        summary_path.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = whittle(&args);
    let summary = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, summary)
}

fn hardened_files(s: &Value) -> std::collections::BTreeSet<String> {
    hardened_layer(s["hardenedImage"].as_str().expect("hardenedImage")).files()
}

#[test]
fn an_exec_probe_keeps_the_binary_it_runs_and_verifies() {
    let dir = nginx_layout(false);
    let (out, s) = local(dir.path(), &["--exec-probe", PROBE]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s["verified"], true, "{s}");
    let probes = s["probes"].as_array().expect("probes in the summary");
    assert_eq!(probes.len(), 1, "{s}");
    assert_eq!(probes[0]["kind"], "exec-probe", "{s}");
    assert_eq!(probes[0]["original"]["exitCode"], 0, "{s}");
    assert_eq!(probes[0]["hardened"]["exitCode"], 0, "{s}");
    let files = hardened_files(&s);
    assert!(files.contains("usr/bin/md5sum"), "md5sum not kept");
    assert!(
        !files.contains("usr/bin/sha1sum"),
        "what nothing ran is still removed"
    );
    let printed = text(&out);
    assert!(
        printed.contains("exec-probe /usr/bin/md5sum") && printed.contains("verified   yes"),
        "{printed}"
    );
}

/// The negative control: hardened without the probe, the image lacks md5sum (and, with
/// `--no-healthcheck`, sha1sum), so the same commands run in it as `docker exec` would fail.
#[test]
fn without_the_probe_the_hardened_image_cannot_run_it() {
    let dir = nginx_layout(true);
    let (out, s) = local(dir.path(), &["--no-healthcheck"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s["probes"].as_array().map(Vec::len), Some(0), "{s}");
    let files = hardened_files(&s);
    assert!(!files.contains("usr/bin/md5sum") && !files.contains("usr/bin/sha1sum"));

    let bundle =
        Bundle::from_layout(&dir.path().join("nginx"), "latest-whittle-hardened").expect("unpack");
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    c.wait_port(80, Duration::from_secs(30))
        .expect("the hardened nginx listens");
    let (code, _, err) = c
        .exec(&["/usr/bin/md5sum", "/etc/debian_version"])
        .expect("runc exec");
    assert_ne!(code, 0, "md5sum ran in the hardened image");
    assert!(err.contains("no such file or directory"), "{err}");
    let (code, _, err) = c
        .exec(&["/usr/bin/sha1sum", "/etc/host.conf"])
        .expect("runc exec");
    assert_ne!(code, 0, "sha1sum ran in the hardened image: {err}");
    c.stop(Duration::from_secs(30)).expect("stop");
}

/// A probe whose command the hardened image lacks (here excluded on purpose) fails
/// verification, saying the command is missing rather than just "exit 255".
#[test]
fn a_probe_whose_command_the_hardened_image_lacks_fails_verification_saying_so() {
    let dir = nginx_layout(false);
    let (out, s) = local(
        dir.path(),
        &["--exec-probe", PROBE, "--exclude", "/usr/bin/md5sum"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(s["verified"], false, "{s}");
    let probe = &s["probes"][0];
    assert_eq!(probe["original"]["passed"], true, "{s}");
    assert_eq!(probe["hardened"]["passed"], false, "{s}");
    assert_eq!(probe["commandMissing"], true, "{s}");
    let printed = text(&out);
    assert!(
        printed.contains("verification failed")
            && printed.contains("/usr/bin/md5sum")
            && printed.contains("is not in the hardened image"),
        "{printed}"
    );
}

#[test]
fn the_images_healthcheck_is_run_and_kept() {
    let dir = nginx_layout(true);
    let (out, s) = local(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s["verified"], true, "{s}");
    let probes = s["probes"].as_array().expect("probes in the summary");
    assert_eq!(probes.len(), 1, "{s}");
    assert_eq!(probes[0]["kind"], "HEALTHCHECK", "{s}");
    assert_eq!(
        probes[0]["command"],
        json!(["/bin/sh", "-c", HEALTHCHECK]),
        "{s}"
    );
    assert_eq!(probes[0]["hardened"]["exitCode"], 0, "{s}");
    let files = hardened_files(&s);
    assert!(files.contains("usr/bin/sha1sum"), "sha1sum not kept");
    // /bin is usr/bin here (merged /usr); /bin/sh is dash.
    assert!(
        files.contains("usr/bin/sh") && files.contains("usr/bin/dash"),
        "the HEALTHCHECK's shell not kept"
    );
    let printed = text(&out);
    assert!(printed.contains("HEALTHCHECK"), "{printed}");
}
