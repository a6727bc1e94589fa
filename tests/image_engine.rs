//! The image engine against the real registry and fixtures: instrument, harden with a report
//! made by the real sensor under runc, run the hardened image, inspect; OCI layer semantics on
//! the layers fixture; determinism; auth; image indexes; bad input.
//!
//! Everything goes through the `whittle` binary, as a user would run it; the images it pushes
//! are read back with skopeo and umoci, which are not whittle's code.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use whittle_sensor::report::{Access, Loss, Mode, PathRecord, Report};
use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::images::fixtures::{self, layers_paths as lp};
use whittle_testbed::images::registry::Registry;
use whittle_testbed::runc::{Bundle, Container, RunOptions};

mod support;
use support::layers::swap_blob;

fn whittle(args: &[&str]) -> Output {
    let sensor = sensor_binary().expect("sensor binary");
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .env("WHITTLE_SENSOR_BIN", sensor)
        .env_remove("DOCKER_CONFIG")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run whittle")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = whittle(args);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "whittle {args:?} failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

fn fails(args: &[&str]) -> String {
    let out = whittle(args);
    assert!(!out.status.success(), "whittle {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

/// `GET /` and `GET /missing` from a running nginx: (status, body) of each.
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

/// Runs the instrumented image under runc with containerd's default capabilities (so the
/// sensor picks a monitor that needs no capability), serves the two pages, stops it and
/// returns the report file.
fn observe(registry: &Registry, instrumented: &str, out: &Path) -> Vec<(u16, Vec<u8>)> {
    let mut bundle = Bundle::from_registry(registry, instrumented).expect("pull instrumented");
    let mut args = bundle.args();
    assert_eq!(
        args[..2],
        ["/.whittle/sensor", "--"],
        "entrypoint: {args:?}"
    );
    args.splice(
        1..1,
        ["--report-file".to_string(), "/.whittle/report.json".into()],
    );
    bundle.set_args(args);
    let mut c = Container::start(bundle, RunOptions::default()).expect("start instrumented");
    let seen = pages(&mut c);
    let exit = c.stop(Duration::from_secs(30)).expect("stop");
    assert_eq!(exit.code, 0, "stderr: {}", c.stderr());
    std::fs::copy(c.bundle().rootfs().join(".whittle/report.json"), out).expect("report");
    seen
}

fn run_pages(registry: &Registry, image: &str) -> (Vec<(u16, Vec<u8>)>, PathBuf, Container) {
    let bundle = Bundle::from_registry(registry, image).expect("pull");
    let rootfs = bundle.rootfs();
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let seen = pages(&mut c);
    (seen, rootfs, c)
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image_engine");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').expect("repo@digest").1
}

/// A report made by the real sensor watching nginx serve `/` and `/missing`, made once for all
/// tests of this file (with its own registry, gone when done).
fn nginx_report() -> &'static Path {
    static REPORT: OnceLock<PathBuf> = OnceLock::new();
    REPORT.get_or_init(|| {
        let registry = Registry::start().expect("registry");
        let src = fixtures::nginx()
            .expect("nginx fixture")
            .push(&registry, "report/nginx:1")
            .expect("push");
        let (instrumented, _) = ok(&["instrument", &src, "--insecure"]);
        let path = tmp("nginx-report.json");
        observe(&registry, &instrumented, &path);
        path
    })
}

#[test]
fn nginx_hardened_with_a_sensor_report_serves_the_same_pages() {
    let registry = Registry::start().expect("registry");
    let fixture = fixtures::nginx().expect("nginx fixture");
    let src = fixture.push(&registry, "shop/nginx:1").expect("push");

    // Instrument: the layers are reused; only the sensor layer, config and manifest move.
    let (instrumented, log) = ok(&["instrument", &src, "--insecure"]);
    assert!(
        instrumented.starts_with(&format!(
            "{}/shop/nginx:1-whittle-instrumented@sha256:",
            registry.host()
        )),
        "{instrumented}"
    );
    let written: u64 = log
        .split(" bytes written")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {log}"));
    let sensor_size = std::fs::metadata(sensor_binary().unwrap()).unwrap().len();
    assert!(
        written < sensor_size,
        "{written} bytes written for a {sensor_size}-byte sensor"
    );

    let report = tmp("shop-report.json");
    let original = observe(&registry, &instrumented, &report);
    assert_eq!(original[0].0, 200);
    assert_eq!(original[1].0, 404);

    let summary_path = tmp("shop-summary.json");
    let (hardened, _) = ok(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
        "--summary",
        summary_path.to_str().unwrap(),
    ]);
    let summary = read_json(&summary_path);
    assert_eq!(
        summary["hardenedImage"],
        format!("{}/shop/nginx@{}", registry.host(), digest_of(&hardened))
    );
    assert!(
        hardened.contains("/shop/nginx:1-whittle-hardened@sha256:"),
        "{hardened}"
    );
    let hardened_bytes = summary["hardenedBytes"].as_u64().unwrap();
    assert!(
        hardened_bytes <= 11_000_000,
        "hardened layer is {hardened_bytes} bytes"
    );
    assert!(
        summary["sourceBytes"].as_u64().unwrap() > 5 * hardened_bytes,
        "{summary}"
    );
    assert!(summary["filesRemoved"].as_u64().unwrap() > summary["filesKept"].as_u64().unwrap());
    let shells: Vec<&str> = summary["removedShells"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(shells.iter().any(|s| s.ends_with("/dash")), "{shells:?}");

    // The hardened image answers exactly as the original did, and has no shell.
    let (served, rootfs, mut c) = run_pages(&registry, &hardened);
    assert_eq!(served, original, "hardened nginx answered differently");
    c.stop(Duration::from_secs(30)).expect("stop hardened");
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/dash"] {
        assert!(
            std::fs::symlink_metadata(rootfs.join(shell)).is_err(),
            "/{shell} is still in the hardened image"
        );
    }
    assert!(rootfs.join("etc/passwd").is_file(), "/etc/passwd is kept");
    assert!(
        rootfs.join("usr/sbin/nginx").is_file(),
        "the app itself is kept"
    );

    // Same inputs, same digest, whatever the destination tag.
    let (again, _) = ok(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
        "--hardened-image",
        &format!("{}/shop/nginx:again", registry.host()),
    ]);
    assert_eq!(digest_of(&again), digest_of(&hardened));

    // Provenance and the original process settings travel with the image.
    let config = c.bundle().image_config().clone();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["dev.whittle.stage"], "hardened");
    let source = labels["dev.whittle.source-image"].as_str().unwrap();
    assert!(source.contains("/shop/nginx@sha256:"), "{source}");
    assert_eq!(
        labels["dev.whittle.source-digest"].as_str(),
        source.rsplit_once('@').map(|(_, d)| d)
    );
    assert_eq!(config["config"]["StopSignal"], "SIGQUIT");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/sbin/nginx", "-g", "daemon off;"])
    );
}

fn record() -> PathRecord {
    PathRecord {
        access: vec![Access::Open],
        exists: true,
        first_seen_ms: 1,
        count: 1,
    }
}

fn handmade_report(paths: &[(&str, bool)]) -> PathBuf {
    let report = Report {
        schema_version: whittle_sensor::report::SCHEMA_VERSION,
        sensor_version: "test".into(),
        mode: Mode::Ptrace,
        identity: Default::default(),
        started_at_ms: 0,
        stopped_at_ms: 1,
        argv: vec!["/bin/true".into()],
        exit_status: 0,
        paths: paths
            .iter()
            .map(|(p, exists)| {
                (
                    p.to_string(),
                    PathRecord {
                        exists: *exists,
                        ..record()
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        executables: Default::default(),
        created_files: vec![],
        loss: Loss::default(),
    };
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = tmp(&format!("handmade-{n}.json"));
    std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    path
}

/// Pushes the layers fixture, hardens it with a report naming `paths` and `flags`, and
/// unpacks the result (with skopeo and umoci).
fn harden_layers(paths: &[(&str, bool)], flags: &[&str]) -> Bundle {
    let registry = Registry::start().expect("registry");
    let src = fixtures::layers()
        .expect("layers fixture")
        .push(&registry, "sem/layers:1")
        .expect("push");
    let report = handmade_report(paths);
    let mut args = vec![
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
    ];
    args.extend(flags);
    let (hardened, _) = ok(&args);
    Bundle::from_registry(&registry, &hardened).expect("pull hardened")
}

#[test]
fn layer_semantics_whiteouts_opaque_replacement_and_links() {
    let bundle = harden_layers(
        &[
            (lp::KEPT, true),
            (lp::DELETED, true),
            (&format!("{}/inner.txt", lp::DELETED_DIR), true),
            (lp::REPLACED, true),
            (lp::OPAQUE_OLD[0], false),
            (lp::OPAQUE_NEW, true),
            (lp::LINK_A, true),
            (lp::HARD_LINK, true),
        ],
        &[],
    );
    let root = bundle.rootfs();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let kept = at(lp::KEPT);
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), lp::KEEP_CONTENT);
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert!(!at(lp::DELETED).exists(), "whiteout ignored");
    assert!(!at(lp::DELETED_DIR).exists(), "directory whiteout ignored");
    assert_eq!(
        std::fs::read_to_string(at(lp::REPLACED)).unwrap(),
        lp::REPLACED_NEW
    );
    assert!(at(lp::OPAQUE_NEW).is_file());
    for old in lp::OPAQUE_OLD {
        assert!(!at(old).exists(), "{old} survived the opaque directory");
    }
    assert_eq!(std::fs::read_link(at(lp::LINK_A)).unwrap(), Path::new("b"));
    assert_eq!(
        std::fs::read_link(at(lp::LINK_B)).unwrap(),
        Path::new("c.txt")
    );
    assert_eq!(
        std::fs::read_to_string(at(lp::LINK_A)).unwrap(),
        lp::LINK_CONTENT
    );
    let hard = std::fs::metadata(at(lp::HARD_LINK)).unwrap();
    let target = std::fs::metadata(at(lp::LINK_TARGET)).unwrap();
    assert_eq!(
        hard.ino(),
        target.ino(),
        "the hard link is not linked to its target"
    );
    assert_eq!(
        std::fs::read_to_string(at(lp::HARD_LINK)).unwrap(),
        lp::LINK_CONTENT
    );
}

#[test]
fn an_authenticated_registry_works_with_a_docker_config() {
    let registry = Registry::start_with_auth().expect("registry with auth");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "private/nginx:1")
        .expect("push");
    let config = tmp("auth-config.json");
    std::fs::write(&config, registry.docker_config_json()).unwrap();
    let report = nginx_report();

    let refused = fails(&["instrument", &src, "--insecure"]);
    assert!(
        refused.contains(&registry.host())
            && refused.contains("private/nginx")
            && refused.contains("401"),
        "{refused}"
    );
    let (instrumented, _) = ok(&[
        "instrument",
        &src,
        "--insecure",
        "--registry-config",
        config.to_str().unwrap(),
    ]);
    assert!(instrumented.contains("1-whittle-instrumented@sha256:"));
    let (hardened, _) = ok(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
        "--registry-config",
        config.to_str().unwrap(),
    ]);
    assert!(hardened.contains("1-whittle-hardened@sha256:"));
}

/// A plain-HTTP listener on loopback that answers every request with `reply` and keeps the
/// request heads it received.
fn recorder(reply: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("address").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = conn.read(&mut chunk) {
                head.extend_from_slice(&chunk[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            log.lock()
                .expect("log")
                .push(String::from_utf8_lossy(&head).to_lowercase());
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (host, seen)
}

#[test]
fn credentials_never_go_in_cleartext_to_a_host_not_declared_insecure() {
    // The token service the registry's challenge names: plain HTTP, on a host no image on the
    // command line names, so --insecure does not cover it.
    let (realm, seen) = recorder(
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    let (registry, _) = recorder(format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{realm}/token\",service=\"registry\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let config = tmp("cleartext-config.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user:secret");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {&registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let src = format!("{registry}/shop/web:1");
    let e = fails(&[
        "inspect",
        &src,
        "--insecure",
        "--registry-config",
        config.to_str().unwrap(),
    ]);
    for request in seen.lock().unwrap().iter() {
        assert!(
            !request.contains("authorization"),
            "credentials in cleartext to {realm}: {request}"
        );
    }
    assert!(
        e.contains(&format!("http://{realm}/token")) && e.contains("not declared insecure"),
        "{e}"
    );
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl")
}

#[test]
fn an_image_index_resolves_to_the_requested_platform() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "multi/nginx:1")
        .expect("push");
    let host = registry.host();
    let head = curl(&[
        "-I",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{host}/v2/multi/nginx/manifests/1"),
    ]);
    let headers = String::from_utf8_lossy(&head.stdout).to_lowercase();
    let field = |name: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {headers}"))
    };
    let (digest, size) = (field("docker-content-digest"), field("content-length"));
    let size: u64 = size.parse().unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let put = curl(&[
        "-f",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &index.to_string(),
        &format!("http://{host}/v2/multi/nginx/manifests/multi"),
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    let multi = format!("{host}/multi/nginx:multi");
    let (json, _) = ok(&["inspect", &multi, "--insecure", "--json"]);
    let inspected: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        inspected["image"],
        format!("{host}/multi/nginx@{digest}"),
        "the index resolved to the amd64 manifest"
    );
    let missing = fails(&["inspect", &multi, "--insecure", "--platform", "linux/s390x"]);
    assert!(
        missing.contains("linux/s390x") && missing.contains("linux/arm64/v8, linux/amd64"),
        "{missing}"
    );
    // Instrument from the index pins the chosen manifest.
    let (instrumented, _) = ok(&["instrument", &multi, "--insecure"]);
    assert!(instrumented.contains("multi-whittle-instrumented@sha256:"));
    drop(src);
}

#[test]
fn bad_reports_and_unknown_images_fail_clearly_and_push_nothing() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::layers()
        .expect("layers fixture")
        .push(&registry, "bad/layers:1")
        .expect("push");
    let host = registry.host();
    let tag_exists = |tag: &str| {
        curl(&[
            "-f",
            "-o",
            "/dev/null",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{host}/v2/bad/layers/manifests/{tag}"),
        ])
        .status
        .success()
    };
    assert!(tag_exists("1"));

    let garbage = tmp("garbage-report.json");
    std::fs::write(&garbage, b"{\"schemaVersion\": 1, \"paths\": [").unwrap();
    let e = fails(&[
        "harden",
        &src,
        "--report",
        garbage.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        e.contains(garbage.to_str().unwrap()) && e.contains("not a whittle report"),
        "{e}"
    );
    assert!(
        !tag_exists("1-whittle-hardened"),
        "a failed harden pushed an image"
    );

    let relative = tmp("relative-report.json");
    let mut report: Value = read_json(&handmade_report(&[(lp::KEPT, true)]));
    report["paths"]["relative/path"] = serde_json::to_value(record()).unwrap();
    std::fs::write(&relative, report.to_string()).unwrap();
    let e = fails(&[
        "harden",
        &src,
        "--report",
        relative.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(e.contains("relative/path"), "{e}");
    assert!(!tag_exists("1-whittle-hardened"));

    let good = handmade_report(&[(lp::KEPT, true)]);
    let e = fails(&[
        "harden",
        &format!("{host}/bad/nothing:here"),
        "--report",
        good.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        e.contains(&host) && e.contains("bad/nothing") && e.contains("tag here"),
        "{e}"
    );
    let e = fails(&["instrument", "127.0.0.1:1/x/y:1", "--insecure"]);
    assert!(
        e.contains("127.0.0.1:1") && e.contains("could not be reached"),
        "{e}"
    );
}

#[test]
fn layouts_instrument_by_hard_link_and_inspect_shows_the_attack_surface() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let out = tempfile::tempdir().expect("tmp");
    let src = fixture.oci_reference();
    let dst = format!("oci:{}:inst", out.path().display());
    let (instrumented, log) = ok(&["instrument", &src, "--instrumented-image", &dst]);
    assert!(instrumented.starts_with(&format!("oci:{}:inst@sha256:", out.path().display())));
    assert!(
        log.contains("1 mounted"),
        "the layer was not hard-linked: {log}"
    );

    let (text, _) = ok(&["inspect", &src]);
    assert!(text.contains("Debian GNU/Linux 12"), "{text}");
    let (json, _) = ok(&["inspect", &src, "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["packageDatabase"], "dpkg");
    assert!(v["packages"].as_u64().unwrap() > 50, "{v}");
    assert!(
        v["packageManagers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/usr/bin/dpkg"),
        "{v}"
    );
    assert!(
        v["shells"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "/usr/bin/dash"),
        "{v}"
    );
    assert!(
        v["setuid"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().ends_with("/su")),
        "{v}"
    );
    assert!(
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "root")
    );

    // The hardened image has none of that.
    let report = nginx_report();
    let hardened = format!("oci:{}:hard", out.path().display());
    ok(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--hardened-image",
        &hardened,
    ]);
    let (json, _) = ok(&["inspect", &hardened, "--json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["packageManagers"], serde_json::json!([]), "{v}");
    // What remains is still declared to scanners: a pruned database, not none.
    assert_eq!(v["packageDatabase"], "dpkg", "{v}");
    assert_eq!(v["os"], "Debian GNU/Linux 12 (bookworm)", "{v}");
    assert_eq!(v["shells"], serde_json::json!([]), "{v}");
    assert_eq!(v["setuid"], serde_json::json!([]), "{v}");
}

#[test]
fn include_adds_directories_and_globs_and_exclude_wins() {
    let bundle = harden_layers(
        &[(lp::KEPT, true)],
        &[
            "--include",
            lp::OPAQUE_DIR,
            "--include",
            "/data/*.txt",
            "--exclude",
            lp::KEPT,
        ],
    );
    let at = |p: &str| bundle.rootfs().join(p.trim_start_matches('/'));
    assert!(
        at(lp::OPAQUE_NEW).is_file(),
        "an included directory keeps its contents"
    );
    assert_eq!(
        std::fs::read_to_string(at(lp::REPLACED)).unwrap(),
        lp::REPLACED_NEW,
        "a glob include"
    );
    assert!(!at(lp::KEPT).exists(), "--exclude wins over the report");
    assert!(!at(lp::LINK_TARGET).exists(), "nothing else is kept");
}

/// Hardens the nginx-ca fixture (nginx with a CA trust store no report names) with `flags`;
/// returns the summary and the hardened layer's paths.
fn harden_nginx_ca(
    registry: &Registry,
    src: &str,
    flags: &[&str],
    name: &str,
) -> (Value, std::collections::BTreeSet<String>) {
    let report = handmade_report(&[("/usr/sbin/nginx", true), ("/etc/nginx/nginx.conf", true)]);
    let summary = tmp(&format!("{name}-summary.json"));
    let dst = format!("{}/packs/nginx:{name}", registry.host());
    let mut args = vec![
        "harden",
        src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
        "--hardened-image",
        &dst,
        "--summary",
        summary.to_str().unwrap(),
    ];
    args.extend(flags);
    let (_, log) = ok(&args);
    let summary = read_json(&summary);
    eprintln!("{log}");
    let layer = support::layers::hardened_layer(summary["hardenedImage"].as_str().unwrap());
    (summary, layer.files())
}

#[test]
fn a_pack_keeps_the_ca_bundle_no_report_named_and_the_summary_says_what_it_cost() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::nginx_ca()
        .expect("nginx-ca fixture")
        .push(&registry, "packs/nginx:1")
        .expect("push");
    const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
    let certificate = |files: &std::collections::BTreeSet<String>| {
        files
            .iter()
            .any(|f| f.starts_with("usr/share/ca-certificates/mozilla/") && f.ends_with(".crt"))
    };

    let (without, files) = harden_nginx_ca(&registry, &src, &[], "without");
    assert!(!files.contains(BUNDLE), "no report named the bundle");
    assert!(!certificate(&files), "nor a certificate");
    assert!(
        files.contains("usr/sbin/nginx"),
        "the app is kept: {files:?}"
    );
    assert_eq!(
        without.get("packs"),
        Some(&serde_json::json!([])),
        "{without}"
    );

    let (with, files) = harden_nginx_ca(
        &registry,
        &src,
        &[
            "--pack",
            "ca-certificates",
            "--pack",
            "tzdata",
            "--pack",
            "nss",
            "--pack",
            "locale",
            "--pack",
            "ca-certificates",
        ],
        "with",
    );
    assert!(
        files.contains(BUNDLE),
        "--pack ca-certificates keeps the bundle"
    );
    assert!(certificate(&files), "and the certificates it is made of");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("etc/ssl/certs/") && f.ends_with(".pem")),
        "and the links OpenSSL looks certificates up by"
    );
    assert!(files.contains("etc/localtime") && files.contains("usr/share/zoneinfo/Etc/UTC"));
    let packs = with["packs"].as_array().expect("packs in the summary");
    let names: Vec<&str> = packs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ca-certificates", "nss", "tzdata", "locale"],
        "{with}"
    );
    let ca = &packs[0];
    let bundle_size = std::fs::metadata(Path::new("/").join(BUNDLE))
        .unwrap()
        .len();
    assert!(
        ca["bytes"].as_u64().unwrap() > bundle_size,
        "the bundle and the certificates are the pack's cost: {ca}"
    );
    assert!(ca["files"].as_u64().unwrap() > 100, "{ca}");
    assert!(
        ca["found"].as_u64().unwrap() >= ca["files"].as_u64().unwrap(),
        "{ca}"
    );
    assert!(
        with["hardenedBytes"].as_u64().unwrap() > without["hardenedBytes"].as_u64().unwrap(),
        "the packs make the image larger: {} vs {}",
        with["hardenedBytes"],
        without["hardenedBytes"]
    );
}

/// Where a registry of the testbed keeps blob `digest` (its filesystem storage driver).
fn registry_blob(registry: &Registry, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// A registry that serves other content for a layer, of the same size, whose tar ends long
/// before the blob does: the digest is compared all the same, by harden and by inspect, and
/// nothing is pushed.
#[test]
fn a_swapped_layer_padded_after_its_end_of_archive_fails_the_digest_check() {
    let registry = Registry::start().expect("registry");
    let fixture = fixtures::nginx().expect("nginx fixture");
    let src = fixture.push(&registry, "swap/nginx:1").expect("push");
    let manifest = fixture.manifest().expect("manifest");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let padding = swap_blob(&registry_blob(&registry, digest));
    eprintln!("layer {digest} swapped: {padding} bytes of padding after end-of-archive");

    let e = fails(&["inspect", &src, "--insecure"]);
    assert!(e.contains(digest) && e.contains("with digest"), "{e}");
    let report = handmade_report(&[("/etc/passwd", true)]);
    let e = fails(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(e.contains(digest) && e.contains("with digest"), "{e}");
    let pushed = curl(&[
        "-f",
        "-o",
        "/dev/null",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!(
            "http://{}/v2/swap/nginx/manifests/1-whittle-hardened",
            registry.host()
        ),
    ]);
    assert!(!pushed.status.success(), "a hardened image was pushed");
}

/// The size a plain-HTTP registry states for the manifest at `url`.
fn manifest_size(url: &str) -> u64 {
    let head = curl(&[
        "-I",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        url,
    ]);
    String::from_utf8_lossy(&head.stdout)
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length for {url}"))
}

/// Every budget refuses with the limit and the flag that raises it: a manifest over the cap
/// (on the registry's Content-Length, before the body is read), an index entry whose
/// descriptor states more (before it is fetched), a config over the cap (on its descriptor),
/// a file tree with more paths, a spool with more bytes; and a refused harden pushes nothing.
#[test]
fn each_budget_refuses_with_its_limit_and_flag() {
    let registry = Registry::start().expect("registry");
    let fixture = fixtures::nginx().expect("nginx fixture");
    let src = fixture.push(&registry, "budget/nginx:1").expect("push");
    let host = registry.host();
    let size = manifest_size(&format!("http://{host}/v2/budget/nginx/manifests/1"));
    let config_size = fixture.manifest().expect("manifest")["config"]["size"]
        .as_u64()
        .expect("config size");
    assert!(config_size > size, "{config_size} <= {size}");

    let below = (size - 1).to_string();
    let e = fails(&["inspect", &src, "--insecure", "--max-manifest-size", &below]);
    eprintln!("{e}");
    assert!(
        e.contains(&format!("is {size} bytes"))
            && e.contains(&format!("the limit is {below} bytes"))
            && e.contains("--max-manifest-size"),
        "{e}"
    );
    let between = (size + 10).to_string();
    let e = fails(&[
        "inspect",
        &src,
        "--insecure",
        "--max-manifest-size",
        &between,
    ]);
    eprintln!("{e}");
    assert!(
        e.contains(&format!("config {host}/budget/nginx@sha256:"))
            && e.contains(&format!("is {config_size} bytes"))
            && e.contains("--max-manifest-size"),
        "{e}"
    );

    // An index whose entry says its manifest is larger than the cap.
    let digest = curl(&[
        "-sI",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{host}/v2/budget/nginx/manifests/1"),
    ]);
    let digest = String::from_utf8_lossy(&digest.stdout)
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("docker-content-digest: ")
                .map(|d| d.trim().to_string())
        })
        .expect("digest header");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": 5 << 20,
            "platform": {"os": "linux", "architecture": "amd64"}}]
    });
    let put = curl(&[
        "-f",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &index.to_string(),
        &format!("http://{host}/v2/budget/nginx/manifests/index"),
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let e = fails(&[
        "inspect",
        &format!("{host}/budget/nginx:index"),
        "--insecure",
    ]);
    eprintln!("{e}");
    assert!(
        e.contains("is 5242880 bytes, as its descriptor says")
            && e.contains("4 MiB, 4194304 bytes")
            && e.contains("--max-manifest-size"),
        "{e}"
    );

    let e = fails(&["inspect", &src, "--insecure", "--max-tree-entries", "100"]);
    eprintln!("{e}");
    assert!(
        e.contains("more than 100 paths (the limit is 100 paths)")
            && e.contains("--max-tree-entries"),
        "{e}"
    );

    let report = handmade_report(&[("/usr/sbin/nginx", true), ("/etc/passwd", true)]);
    let e = fails(&[
        "harden",
        &src,
        "--report",
        report.to_str().unwrap(),
        "--insecure",
        "--spool-limit",
        "64Ki",
    ]);
    eprintln!("{e}");
    assert!(
        e.contains("64 KiB, 65536 bytes") && e.contains("--spool-limit"),
        "{e}"
    );
    let pushed = curl(&[
        "-f",
        "-o",
        "/dev/null",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{host}/v2/budget/nginx/manifests/1-whittle-hardened"),
    ]);
    assert!(!pushed.status.success(), "a refused harden pushed an image");
}

/// A registry that accepts connections and never answers: instrument gives up at its
/// deadline, with the flag that sets it, instead of waiting on read timeouts and retries.
#[test]
fn instrument_gives_up_at_its_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let host = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let started = std::time::Instant::now();
    let e = fails(&[
        "instrument",
        &format!("{host}/silent/app:1"),
        "--insecure",
        "--instrument-timeout",
        "3s",
    ]);
    let took = started.elapsed();
    eprintln!("{e}");
    assert!(
        e.contains("did not finish in time")
            && e.contains("the limit is 3s")
            && e.contains("--instrument-timeout"),
        "{e}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
