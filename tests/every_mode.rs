//! Apps that a stat-blind monitor used to break, hardened and verified in every sensor mode
//! (issue 14): a Python web app whose importer stat()s each `m.py` before it loads the cached
//! `__pycache__/m.cpython-3NN.pyc` (fanotify sees only the pyc opened), and a program that
//! opendir()s its configuration directories at start-up and refuses to start without them
//! (fanotify reported directory opens only with FAN_ONDIR). Each `whittle local` run must verify
//! in `ptrace`, `fanotify`, `both` and `auto`; and the exercises are shown to catch the very
//! files those bugs lost, by excluding them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use whittle_testbed::images::fixtures::{self, CONFAPP_BODY, Fixture};

mod support;
use support::cli::{text, whittle};

/// The monitors a report made in `mode` may name. `auto` is ptrace here (`whittle local` gives
/// the container containerd's default capabilities, without CAP_SYS_ADMIN) or, with a sensor
/// that has it, the seccomp user-notification monitor.
fn monitors(mode: &str) -> &'static [&'static str] {
    match mode {
        "ptrace" => &["ptrace"],
        "fanotify" => &["fanotify"],
        "both" => &["both"],
        _ => &["ptrace", "seccomp"],
    }
}

const PYTHON_API: &str =
    r#"curl -fsS http://$WHITTLE_TARGET/api | grep -qF '"greeting": "hello from greet"'"#;
const PYTHON_MISSING: &str =
    r#"test "$(curl -s -o /dev/null -w '%{http_code}' http://$WHITTLE_TARGET/missing)" = 404"#;

fn confapp_exercise() -> String {
    // The whole body: both *.conf of conf.d, in order, and the count of (no) hooks.
    let expected = CONFAPP_BODY.replace('\n', "\\n");
    format!(r#"test "$(curl -fsS http://$WHITTLE_TARGET/)" = "$(printf '{expected}')""#)
}

/// `whittle local` on a private copy of the fixture's layout (it writes its images there).
fn local(fixture: &Fixture, exercises: &[&str], extra: &[&str]) -> (Output, Option<Value>) {
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join(&fixture.name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&fixture.layout)
        .arg(&layout)
        .status()
        .expect("cp");
    assert!(status.success());
    let src = format!("oci:{}:latest", layout.display());
    let summary_path = dir.path().join("summary.json");
    let mut args = vec!["local", &src, "--summary", summary_path.to_str().unwrap()];
    for e in exercises {
        args.extend(["--exercise", e]);
    }
    args.extend(extra);
    let out = whittle(&args);
    let s = summary(&summary_path);
    if let Some(hardened) = s.as_ref().and_then(|s| s["hardenedImage"].as_str()) {
        support::layers::hardened_layer(hardened).assert_no_larger_than_gzip6();
    }
    (out, s)
}

fn summary(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `whittle local --mode MODE` verifies, and its report was made by the monitor MODE names.
fn verifies(fixture: &Fixture, exercises: &[&str], mode: &str) {
    let started = std::time::Instant::now();
    let (out, s) = local(fixture, exercises, &["--mode", mode]);
    let printed = text(&out);
    let verified = s.as_ref().map(|s| s["verified"] == true);
    eprintln!(
        "{}: --mode {mode}: exit {:?}, verified {verified:?}, {:.1}s",
        fixture.name,
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success() && verified == Some(true),
        "{} --mode {mode}: exit {:?}, verified {verified:?}\n{printed}\nsummary: {s:?}",
        fixture.name,
        out.status.code()
    );
    assert!(
        monitors(mode)
            .iter()
            .any(|m| printed.contains(&format!("({m} mode)"))),
        "{} --mode {mode}: the report was not made by {:?}\n{printed}",
        fixture.name,
        monitors(mode)
    );
}

/// Asserts the hardened image failed an exercise and its stderr says why.
fn fails_verification(out: &Output, s: Option<Value>, why: &str) {
    let printed = text(out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("verification failed"), "{printed}");
    let s = s.expect("summary written");
    assert_eq!(s["verified"], false, "{s}");
    assert!(
        s["hardenedStderr"].to_string().contains(why),
        "the hardened app did not fail with {why:?}: {s}"
    );
}

fn python_app(mode: &str) {
    let fixture = fixtures::python_app().expect("python-app fixture");
    verifies(&fixture, &[PYTHON_API, PYTHON_MISSING], mode);
}

fn confapp(mode: &str) {
    let fixture = fixtures::confapp().expect("confapp fixture");
    verifies(&fixture, &[&confapp_exercise()], mode);
}

#[test]
fn a_python_app_with_byte_compiled_modules_verifies_in_ptrace_mode() {
    python_app("ptrace");
}

#[test]
fn a_python_app_with_byte_compiled_modules_verifies_in_fanotify_mode() {
    python_app("fanotify");
}

#[test]
fn a_python_app_with_byte_compiled_modules_verifies_in_both_mode() {
    python_app("both");
}

#[test]
fn a_python_app_with_byte_compiled_modules_verifies_in_auto_mode() {
    python_app("auto");
}

#[test]
fn an_app_that_opendirs_its_configuration_verifies_in_ptrace_mode() {
    confapp("ptrace");
}

#[test]
fn an_app_that_opendirs_its_configuration_verifies_in_fanotify_mode() {
    confapp("fanotify");
}

#[test]
fn an_app_that_opendirs_its_configuration_verifies_in_both_mode() {
    confapp("both");
}

#[test]
fn an_app_that_opendirs_its_configuration_verifies_in_auto_mode() {
    confapp("auto");
}

#[test]
fn a_python_app_without_the_sources_of_its_cached_modules_does_not_start() {
    // What fanotify alone kept before harden added the source of each kept pyc.
    let fixture = fixtures::python_app().expect("python-app fixture");
    let (out, s) = local(
        &fixture,
        &[PYTHON_API],
        &[
            "--mode",
            "fanotify",
            "--exclude",
            "/usr/lib/python3.11/encodings/*.py",
        ],
    );
    fails_verification(&out, s, "no codec search functions registered");
}

#[test]
fn an_app_without_its_empty_configuration_directory_does_not_start() {
    // What fanotify kept before its marks carried FAN_ONDIR: hooks.d is opened, never entered.
    let fixture = fixtures::confapp().expect("confapp fixture");
    let (out, s) = local(
        &fixture,
        &[&confapp_exercise()],
        &["--mode", "fanotify", "--exclude", "/etc/app/hooks.d"],
    );
    fails_verification(
        &out,
        s,
        "could not open configuration directory /etc/app/hooks.d",
    );
}
