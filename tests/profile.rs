//! The profile travels with the hardened image: `whittle harden` attaches the merged reports
//! as an OCI referrer (read back here with skopeo and curl, not whittle's client), and
//! `whittle harden NEW --profile HARDENED` re-hardens a new source from it in CI, with no
//! cluster and no observation, to the same image the reports give.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use whittle::evidence::profile::{self, ARTIFACT_TYPE, MEDIA_TYPE};
use whittle::image::harden::load_report;
use whittle_sensor::report::Report;
use whittle_testbed::images::fixtures::{self, Fixture, layers_paths as lp};
use whittle_testbed::images::oci_layout;
use whittle_testbed::images::registry::Registry;
use whittle_testbed::runc::{Bundle, Container, RunOptions};

mod support;
use support::cli::{text, whittle};

const NEW_PAGE: &str = "<h1>rebuilt upstream</h1>\n";
const PAGE: &str = "var/www/html/index.nginx-debian.html";

fn ok(args: &[&str]) -> (String, String) {
    let out = whittle(args);
    assert!(out.status.success(), "whittle {args:?}: {}", text(&out));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').expect("repo@digest").1
}

/// `GET /` and `GET /missing` from a running nginx.
fn pages(c: &mut Container) -> Vec<(u16, Vec<u8>)> {
    c.wait_port(80, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("nginx did not listen: {e}; stderr: {}", c.stderr()));
    ["/", "/missing"]
        .iter()
        .map(|p| {
            let r = c.http_get(80, p).expect("GET");
            (r.status, r.body)
        })
        .collect()
}

/// The real sensor's report of nginx serving both pages under runc.
fn observe(registry: &Registry, instrumented: &str, out: &Path) {
    let mut bundle = Bundle::from_registry(registry, instrumented).expect("pull instrumented");
    let mut args = bundle.args();
    args.splice(
        1..1,
        ["--report-file".to_string(), "/.whittle/report.json".into()],
    );
    bundle.set_args(args);
    let mut c = Container::start(bundle, RunOptions::default()).expect("start instrumented");
    pages(&mut c);
    let exit = c.stop(Duration::from_secs(30)).expect("stop");
    assert_eq!(exit.code, 0, "stderr: {}", c.stderr());
    std::fs::copy(c.bundle().rootfs().join(".whittle/report.json"), out).expect("report");
}

/// A manifest or index as the registry serves it, read with skopeo.
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

/// A blob straight from the registry's HTTP API.
fn curl_blob(registry: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-fsS"])
        .arg(format!(
            "http://{}/v2/{repo}/blobs/{digest}",
            registry.host()
        ))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", text(&out));
    out.stdout
}

/// The nginx fixture rebuilt upstream: one more layer that changes the page it serves.
fn rebuilt_nginx(work: &Path) -> Fixture {
    let nginx = fixtures::nginx().expect("nginx fixture");
    let layout = work.join("nginx-rebuilt");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&nginx.layout)
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(status.success());
    let root = work.join("layer");
    let page = root.join(PAGE);
    std::fs::create_dir_all(page.parent().unwrap()).expect("mkdir");
    std::fs::write(&page, NEW_PAGE).expect("write page");
    // The layer's directories land on the image's own: keep them as Debian has them.
    for dir in ["", "var", "var/www", "var/www/html"] {
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    oci_layout::append_layer(&layout, &nginx.tag, &root, "change the page").expect("layer");
    Fixture {
        name: "nginx-rebuilt".into(),
        layout,
        tag: nginx.tag,
    }
}

#[test]
fn a_new_source_is_hardened_from_the_profile_attached_to_the_last_hardened_image() {
    let registry = Registry::start().expect("registry");
    let work = tempfile::tempdir().expect("tmp");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "profile/nginx:1")
        .expect("push");
    let (instrumented, _) = ok(&["instrument", &src, "--insecure"]);
    let report_path = work.path().join("report.json");
    observe(&registry, &instrumented, &report_path);

    // (a) harden attaches the profile: the report, as the referrers tag lists it.
    let summary_path = work.path().join("summary.json");
    let (hardened, log) = ok(&[
        "harden",
        &src,
        "--report",
        report_path.to_str().unwrap(),
        "--insecure",
        "--summary",
        summary_path.to_str().unwrap(),
    ]);
    let summary: Value =
        serde_json::from_slice(&std::fs::read(&summary_path).expect("summary")).expect("json");
    let digest = digest_of(&hardened);
    let tag = digest.replacen(':', "-", 1);
    assert_eq!(
        summary["profile"]["via"],
        format!("referrers tag {tag}"),
        "{summary}"
    );
    assert!(log.contains("profile: "), "{log}");
    let repo = "profile/nginx";
    let index = skopeo_raw(&format!("{}/{repo}:{tag}", registry.host()));
    let entries: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter(|m| m["artifactType"] == ARTIFACT_TYPE)
        .collect();
    assert_eq!(entries.len(), 1, "{index}");
    let artifact = skopeo_raw(&format!(
        "{}/{repo}@{}",
        registry.host(),
        entries[0]["digest"].as_str().unwrap()
    ));
    assert_eq!(artifact["subject"]["digest"], digest, "{artifact}");
    let layer = &artifact["layers"][0];
    assert_eq!(layer["mediaType"], MEDIA_TYPE);
    let blob = curl_blob(&registry, repo, layer["digest"].as_str().unwrap());
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut json)
        .expect("gzip");
    let attached: Report = serde_json::from_slice(&json).expect("a report");
    let report = load_report(&report_path).expect("report");
    assert!(
        !report.argv.is_empty(),
        "the sensor records the command line"
    );
    assert_eq!(
        attached,
        profile::portable(&profile::merged([report.clone()]).unwrap())
    );
    assert!(attached.argv.is_empty(), "no command line in the registry");
    assert_eq!(attached.paths, report.paths);

    // (b) a new upstream digest, hardened in CI from the profile alone.
    let new_src = rebuilt_nginx(work.path())
        .push(&registry, "profile/nginx:2")
        .expect("push rebuilt");
    let host = registry.host();
    let (from_profile, log) = ok(&[
        "harden",
        &new_src,
        "--profile",
        &hardened,
        "--insecure",
        "--hardened-image",
        &format!("{host}/{repo}:2-from-profile"),
    ]);
    assert!(
        log.contains(&format!("attached to {host}/{repo}@{digest}")),
        "{log}"
    );
    let (from_reports, _) = ok(&[
        "harden",
        &new_src,
        "--report",
        report_path.to_str().unwrap(),
        "--insecure",
        "--no-profile",
        "--hardened-image",
        &format!("{host}/{repo}:2-from-reports"),
    ]);
    assert_eq!(
        digest_of(&from_profile),
        digest_of(&from_reports),
        "the profile hardens as the reports do"
    );
    assert_ne!(digest_of(&from_profile), digest);
    let bundle = Bundle::from_registry(&registry, &from_profile).expect("pull");
    let rootfs = bundle.rootfs();
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let served = pages(&mut c);
    c.stop(Duration::from_secs(30)).expect("stop");
    assert_eq!(
        served[0],
        (200, NEW_PAGE.as_bytes().to_vec()),
        "the new page"
    );
    assert_eq!(served[1].0, 404);
    assert!(rootfs.join("usr/sbin/nginx").is_file(), "the app is kept");
    assert!(
        std::fs::symlink_metadata(rootfs.join("bin/sh")).is_err(),
        "no shell"
    );
    // The image hardened from the profile carries it on, for the next upstream digest.
    let again = skopeo_raw(&format!(
        "{host}/{repo}:{}",
        digest_of(&from_profile).replacen(':', "-", 1)
    ));
    assert_eq!(
        again["manifests"][0]["artifactType"], ARTIFACT_TYPE,
        "{again}"
    );

    // (c) an image without a profile: the source itself.
    let out = whittle(&["harden", &new_src, "--profile", &src, "--insecure"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("has no whittle profile attached"), "{said}");
}

/// Two profiles on one image: whittle names both and picks neither; naming one works.
#[test]
fn several_profiles_are_refused_by_name_and_one_can_be_named() {
    let registry = Registry::start().expect("registry");
    let work = tempfile::tempdir().expect("tmp");
    let src = fixtures::layers()
        .expect("layers fixture")
        .push(&registry, "several/layers:1")
        .expect("push");
    let report = |name: &str, paths: &[&str]| -> PathBuf {
        let mut r: Value = serde_json::json!({
            "schemaVersion": whittle_sensor::report::SCHEMA_VERSION,
            "sensorVersion": "0.1.0",
            "mode": "seccomp",
            "identity": {},
            "startedAtMs": 0,
            "stoppedAtMs": 1,
            "argv": ["/bin/true"],
            "exitStatus": 0,
            "paths": {},
            "executables": {},
            "createdFiles": [],
            "loss": {},
        });
        for p in paths {
            r["paths"][*p] = serde_json::json!({"access": ["open"], "exists": true, "firstSeenMs": 0, "count": 1});
        }
        let path = work.path().join(name);
        std::fs::write(&path, r.to_string()).expect("write report");
        path
    };
    let one = report("one.json", &[lp::KEPT]);
    let two = report("two.json", &[lp::KEPT, "/etc/no-such-file"]);
    let (first, _) = ok(&[
        "harden",
        &src,
        "--report",
        one.to_str().unwrap(),
        "--insecure",
    ]);
    let (second, _) = ok(&[
        "harden",
        &src,
        "--report",
        two.to_str().unwrap(),
        "--insecure",
    ]);
    assert_eq!(
        digest_of(&first),
        digest_of(&second),
        "a path not in the image changes nothing"
    );
    let out = whittle(&["harden", &src, "--profile", &first, "--insecure"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("has 2 whittle profiles attached"), "{said}");
    let named = said
        .split("e.g. ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a profile named");
    ok(&[
        "harden",
        &src,
        "--profile",
        named,
        "--insecure",
        "--no-profile",
    ]);
}
