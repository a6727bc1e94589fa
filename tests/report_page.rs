//! The report pages in a real browser: Debian's headless chromium (installed by `make setup`)
//! loads each page from a file, with nothing else reachable, and the DOM it built and a
//! screenshot are checked: the numbers are the status's, and the bar chart is drawn.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use whittle::api::HardeningWorkflow;
use whittle::api::policy::{HardeningPolicySpec, PolicyStatus};
use whittle::evidence::produce::Evidence;
use whittle::evidence::vulns::matching::Finding;
use whittle::evidence::vulns::severity::Severity;
use whittle::evidence::vulns::{Counts, VulnSummary};
use whittle::image::analysis::packs::PackSummary;
use whittle::image::harden::Summary;
use whittle::image::packages::{Inventory, Manager, OsRelease, Package};
use whittle::local::exercise::ExerciseResult;
use whittle::local::workflow::{ExerciseOutcome, LocalSummary, Phase};
use whittle::page::chart::{HARDENED_COLOUR, SOURCE_COLOUR};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_present() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `make setup` installs Debian's chromium (testbed/scripts/setup.sh)"
    );
}

/// Runs headless chromium on `page` with `args`, a fresh profile, no network use of its own,
/// and a deadline; its stdout.
fn chromium(page: &Path, args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish {} within 120 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    assert!(
        out.status.success(),
        "chromium failed on {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dump_dom(page: &Path) -> String {
    let dom = chromium(page, &["--dump-dom".to_string()]);
    assert!(
        dom.contains("</html>"),
        "no DOM from {}: {dom}",
        page.display()
    );
    dom
}

/// Pixels of the screenshot within 3 of `hex` in each channel.
fn count_colour(png_path: &Path, hex: &str) -> usize {
    let want: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).expect("hex colour"))
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| (0..3).all(|i| px[i].abs_diff(want[i]) <= 3))
        .count()
}

/// Renders `html` to a file, screenshots it, and asserts the chart's two colours cover at
/// least `min` pixels each.
fn chart_shows(dir: &Path, name: &str, html: &str, min: usize) -> PathBuf {
    let page = dir.join(format!("{name}.html"));
    std::fs::write(&page, html).expect("writing the page");
    let shot = dir.join(format!("{name}.png"));
    chromium(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600".to_string(),
        ],
    );
    for colour in [SOURCE_COLOUR, HARDENED_COLOUR] {
        let n = count_colour(&shot, colour);
        assert!(
            n >= min,
            "{name}: only {n} pixels of the chart colour {colour} in the screenshot"
        );
    }
    page
}

fn workflow_fixture() -> HardeningWorkflow {
    serde_json::from_value(json!({
        "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
        "metadata": {"name": "web", "namespace": "shop", "uid": "0c5e"},
        "spec": {"target": {"name": "web"}},
        "status": {
            "phase": "Succeeded",
            "message": "verified: <script>alert(1)</script>",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Succeeded",
                 "message": "the hardened pods rolled out and passed", "lastTransitionTime": "2026-11-23T10:25:40Z"},
                {"type": "Hardened", "status": "True", "reason": "Hardened",
                 "message": "55.7 MB -> 4.2 MB", "lastTransitionTime": "2026-11-23T10:20:00Z"},
            ],
            "sourceImage": "registry.example.com/shop/web@sha256:4842aa\"onload=alert(2)",
            "instrumentedImage": "registry.example.com/shop/web@sha256:e727bb",
            "hardenedImage": "registry.example.com/shop/web@sha256:cc66cc",
            "sourceReference": "registry.example.com/shop/web:1.4",
            "seal": "3c1f9a00",
            "result": {
                "sourceBytes": 55712345, "hardenedBytes": 4212345, "reductionPercent": 92,
                "filesKept": 47, "filesRemoved": 6256, "removedShells": 3,
                "removedPackageManagers": 5, "removedSetuid": 11,
                "packs": [{"name": "tzdata", "found": 1319, "files": 1317, "bytes": 1314856},
                          {"name": "ca-certificates", "found": 290, "files": 288, "bytes": 421000}],
            },
            "verification": {"result": "Passed", "reason": "Passed",
                "message": "the hardened pods rolled out and passed their readiness probes"},
            "vulnerabilities": {
                "before": {"total": 41, "critical": 1, "high": 5, "medium": 20, "low": 10, "unknown": 5},
                "after": {"total": 9, "critical": 0, "high": 2, "medium": 4, "low": 2, "unknown": 1},
                "removed": 32,
                "fixable": {"total": 3, "critical": 0, "high": 2, "medium": 1, "low": 0, "unknown": 0},
                "kept": [{"id": "DSA-5514-1", "package": "libc6", "version": "2.36-9+deb12u1",
                          "fixedVersion": "2.36-9+deb12u3", "severity": "High"}],
                "matchedDatabase": "debian@5d41402abc4b2a76",
            },
            "sbom": "registry.example.com/shop/web@sha256:5b0b",
            "signature": "registry.example.com/shop/web:sha256-cc66.sig@sha256:519",
            "provenance": "registry.example.com/shop/web:sha256-cc66.att@sha256:a77",
            "history": [{"trigger": "Initial", "verdict": "Succeeded", "sourceImage": "r@sha256:4842",
                "hardenedImage": "r@sha256:cc66", "vulnerabilitiesBefore": 41, "vulnerabilitiesAfter": 9,
                "durationSeconds": 250, "observed": true, "completedAt": "2026-11-23T10:25:40Z"}],
        },
    }))
    .expect("workflow fixture")
}

fn policy_fixture() -> (HardeningPolicySpec, PolicyStatus) {
    let spec = serde_json::from_value(json!({"mode": "Harden", "maxConcurrent": 2})).unwrap();
    let status = serde_json::from_value(json!({
        "selected": 3, "skipped": 1,
        "counts": {"queued": 0, "pending": 0, "running": 0, "succeeded": 2, "failed": 0, "reported": 0},
        "totals": {"sourceBytes": 91234567, "hardenedBytes": 21234567, "vulnerabilitiesRemoved": 120,
                   "shellsRemoved": 4, "packageManagersRemoved": 8},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "2 of 2",
                        "lastTransitionTime": "2026-11-23T10:25:40Z"}],
        "workloads": [
            {"namespace": "shop", "kind": "Deployment", "name": "api", "state": "Succeeded",
             "workflow": "shop-deployment-api", "image": "reg/shop/api:2",
             "sourceBytes": 61234567, "hardenedBytes": 11234567},
            {"namespace": "shop", "kind": "Deployment", "name": "batch", "state": "Skipped",
             "message": "annotated whittle.dev/skip"},
            {"namespace": "shop", "kind": "StatefulSet", "name": "web", "state": "Succeeded",
             "workflow": "shop-statefulset-web", "image": "reg/shop/web:1",
             "sourceBytes": 30000000, "hardenedBytes": 10000000},
        ],
    }))
    .unwrap();
    (spec, status)
}

fn run(command: &str, passed: bool) -> ExerciseResult {
    ExerciseResult {
        command: command.into(),
        exit_code: Some(if passed { 0 } else { 1 }),
        passed,
        seconds: 0.4,
        output_tail: String::new(),
    }
}

fn local_fixture() -> LocalSummary {
    let package = |name: &str, files: u64, kept: u64| Package {
        manager: Manager::Dpkg,
        name: name.into(),
        version: "1.0".into(),
        arch: Some("amd64".into()),
        source: name.into(),
        source_version: "1.0".into(),
        files,
        kept,
    };
    let finding = |id: &str, package: &str, severity: Severity| Finding {
        id: id.into(),
        aliases: vec![],
        package: package.into(),
        source: package.into(),
        version: "1.0".into(),
        severity,
        fixed: None,
        summary: None,
    };
    let counts = |critical, high, medium, low, unknown| Counts {
        critical,
        high,
        medium,
        low,
        unknown,
        total: critical + high + medium + low + unknown,
    };
    LocalSummary {
        harden: Summary {
            source_image: "127.0.0.1:5000/nginx@sha256:aa".into(),
            hardened_image: "127.0.0.1:5000/nginx@sha256:bb".into(),
            hardened_manifest_size: 500,
            pushed: "127.0.0.1:5000/nginx:1-whittle-hardened@sha256:bb".into(),
            source_bytes: 48_123_456,
            hardened_bytes: 3_456_789,
            files_kept: 120,
            files_removed: 4321,
            added_by_analysis: 30,
            report_paths_not_in_image: 2,
            removed_shells: vec!["bin/bash".into(), "bin/dash".into()],
            removed_package_managers: vec!["usr/bin/apt".into(), "usr/bin/dpkg".into()],
            removed_setuid: vec!["usr/bin/passwd".into()],
            passes: 1,
            reports: 1,
            packages: Inventory {
                os: Some(OsRelease {
                    id: "debian".into(),
                    version_id: Some("12".into()),
                    codename: Some("bookworm".into()),
                    pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                }),
                packages: vec![
                    package("nginx", 10, 10),
                    package("libc6", 100, 20),
                    package("bash", 50, 0),
                    package("apt", 80, 0),
                ],
            },
            packs: vec![PackSummary {
                name: "tzdata".into(),
                found: 1319,
                files: 1317,
                bytes: 1_314_856,
            }],
        },
        evidence: Evidence {
            vulnerabilities: Some(VulnSummary {
                before: counts(1, 2, 1, 0, 0),
                after: counts(0, 1, 0, 0, 0),
                removed: vec![
                    finding("DSA-1", "bash", Severity::Critical),
                    finding("DSA-2", "apt", Severity::High),
                    finding("DSA-3", "apt", Severity::Medium),
                ],
                remaining: vec![finding("DSA-4", "libc6", Severity::High)],
            }),
            signature: Some("127.0.0.1:5000/nginx:sha256-bb.sig@sha256:cc".into()),
            ..Evidence::default()
        },
        instrumented_image: "127.0.0.1:5000/nginx@sha256:ii".into(),
        verified: true,
        exercises: vec![ExerciseOutcome {
            command: "curl -fsS http://$WHITTLE_TARGET/".into(),
            original: run("curl", true),
            hardened: Some(run("curl", true)),
        }],
        probes: vec![],
        phases: vec![Phase {
            name: "observe".into(),
            seconds: 3.2,
        }],
        hardened_stderr: None,
    }
}

#[test]
fn the_workflow_page_renders_its_status_in_a_browser() {
    chromium_present();
    let dir = tempfile::tempdir().unwrap();
    let html = whittle::page::workflow(&workflow_fixture());
    let page = chart_shows(dir.path(), "workflow", &html, 2000);
    let dom = dump_dom(&page);
    for want in [
        r#"data-percent="92">92%"#,
        r#"data-bytes="55712345" title="55712345 bytes">55.7 MB"#,
        r#"data-bytes="4212345" title="4212345 bytes">4.2 MB"#,
        r#"class="num before total">41<"#,
        r#"class="num removed total">32<"#,
        r#"class="num kept total">9<"#,
        r#"class="num removed">1<"#,
        r#"class="shells-removed">3<"#,
        r#"class="package-managers-removed">5<"#,
        "DSA-5514-1",
        "sha256-cc66.sig@sha256:519",
        "sha256-cc66.att@sha256:a77",
        r#"<rect class="bar source" data-bytes="55712345""#,
        r#"<rect class="bar hardened" data-bytes="1314856""#,
    ] {
        assert!(dom.contains(want), "the DOM lacks {want}");
    }
    // Escaped on the page, text in the DOM: the browser made no element of it.
    assert!(!dom.contains("<script"), "a script element in the DOM");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!dom.contains(r#"" onload="#) && !dom.contains(" onload=\"alert"));
}

#[test]
fn the_policy_page_lists_every_row_and_charts_the_bytes() {
    chromium_present();
    let dir = tempfile::tempdir().unwrap();
    let (spec, status) = policy_fixture();
    let html = whittle::page::policy("HardeningPolicy", Some("shop"), "web-tier", &spec, &status);
    let page = chart_shows(dir.path(), "policy", &html, 2000);
    let dom = dump_dom(&page);
    assert_eq!(dom.matches(r#"<tr class="workloads-row">"#).count(), 3);
    let reduction = whittle::api::status::reduction_percent(91234567, 21234567);
    for want in [
        format!(r#"data-percent="{reduction}">{reduction}%"#),
        r#"class="big count succeeded" data-count="2""#.to_string(),
        r#"class="big count skipped" data-count="1""#.to_string(),
        r#"data-bytes="91234567""#.to_string(),
        r#"<rect class="bar source" data-bytes="61234567""#.to_string(),
        r#"<rect class="bar hardened" data-bytes="10000000""#.to_string(),
        r#"class="vulnerabilities-removed">120<"#.to_string(),
        "annotated whittle.dev/skip".to_string(),
    ] {
        assert!(dom.contains(&want), "the DOM lacks {want}");
    }
}

#[test]
fn the_local_page_renders_the_summary() {
    chromium_present();
    let dir = tempfile::tempdir().unwrap();
    let summary = local_fixture();
    let html = whittle::page::local(&summary);
    let page = chart_shows(dir.path(), "local", &html, 2000);
    let dom = dump_dom(&page);
    let reduction = whittle::api::status::reduction_percent(48_123_456, 3_456_789);
    for want in [
        format!(r#"data-percent="{reduction}">{reduction}%"#),
        r#"data-bytes="48123456""#.to_string(),
        r#"class="packages-removed">2<"#.to_string(),
        r#"class="packages-partial">1<"#.to_string(),
        r#"class="num removed total">3<"#.to_string(),
        r#"class="num kept total">1<"#.to_string(),
        r#"class="shells-removed" data-count="2""#.to_string(),
        "curl -fsS http://$WHITTLE_TARGET/".to_string(),
    ] {
        assert!(dom.contains(&want), "the DOM lacks {want}");
    }
}

/// The screenshot check itself: a page without the chart has none of its colours.
#[test]
fn a_page_without_the_chart_shows_none_of_its_colours() {
    chromium_present();
    let dir = tempfile::tempdir().unwrap();
    let html = whittle::page::workflow(&workflow_fixture());
    let start = html.find("<svg").unwrap();
    let mut stripped = html.clone();
    while let Some(s) = stripped.find("<svg") {
        let e = stripped[s..].find("</svg>").unwrap() + s + "</svg>".len();
        stripped.replace_range(s..e, "");
    }
    assert!(start > 0 && !stripped.contains("<svg"));
    let page = dir.path().join("nochart.html");
    std::fs::write(&page, &stripped).unwrap();
    let shot = dir.path().join("nochart.png");
    chromium(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600".to_string(),
        ],
    );
    for colour in [SOURCE_COLOUR, HARDENED_COLOUR] {
        assert_eq!(count_colour(&shot, colour), 0, "{colour}");
    }
}
