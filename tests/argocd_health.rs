//! docs/argocd/health.lua, the Argo CD health check for HardeningWorkflow, run by a real Lua 5.1
//! interpreter (gopher-lua, which Argo CD embeds, implements 5.1) on whole workflows built with
//! whittle's own types and serialized as the API server would return them.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use whittle::api::{
    HardenResult, HardeningWorkflow, HardeningWorkflowStatus, Phase, ReportsStatus, Verification,
    VerificationResult,
};

const SCRIPT: &str = include_str!("../docs/argocd/health.lua");
const LUA: &str = "lua5.1";

/// A JSON value as a Lua table constructor. Strings use only Lua 5.1 escapes: every byte that
/// is not printable ASCII becomes a three-digit `\ddd`, so UTF-8 passes through byte for byte.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs the health script on `obj`; returns `(hs.status, hs.message)`.
fn health(obj: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal function health(obj)\n{SCRIPT}\nend\nlocal hs = health(obj)\nio.write(hs.status .. \"\\n\" .. hs.message)\n",
        lua_literal(obj)
    );
    let mut child = match Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run {LUA} ({e}): run `make setup` to install it"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{LUA} failed: {}\n{stdout}\nprogram:\n{program}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, message) = stdout.split_once('\n').expect("status, newline, message");
    (status.to_string(), message.to_string())
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

fn ready(reason: &str, message: &str, generation: i64) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: if reason == "Succeeded" {
            "True"
        } else {
            "False"
        }
        .into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: at(1_700_000_000),
        observed_generation: Some(generation),
    }
}

/// The whole object, apiVersion to status, as JSON.
fn workflow(generation: i64, status: Option<HardeningWorkflowStatus>) -> Value {
    let spec = serde_json::from_value(json!({
        "target": {"name": "web", "container": "nginx"},
        "exercise": {"service": "web", "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "check", "image": "curlimages/curl", "args": ["-fsS", "http://web/"]}]
        }}}
    }))
    .unwrap();
    let mut w = HardeningWorkflow::new("web", spec);
    w.metadata.namespace = Some("shop".into());
    w.metadata.generation = Some(generation);
    w.status = status;
    let value = serde_json::to_value(&w).unwrap();
    assert_eq!(value["apiVersion"], "whittle.dev/v1alpha1");
    assert_eq!(value["kind"], "HardeningWorkflow");
    value
}

/// A status in `phase`, as the operator writes it: observed, with the Ready condition and a
/// message.
fn status_in(phase: Phase, reason: &str, message: &str) -> HardeningWorkflowStatus {
    let mut s = HardeningWorkflowStatus::default();
    s.set_phase(phase, &at(1_700_000_000));
    s.observed_generation = Some(1);
    s.conditions = vec![ready(reason, message, 1)];
    s.message = Some(message.into());
    s.source_image = Some("registry.example/shop/web@sha256:aaaa".into());
    s
}

const HARDENED: &str = "registry.example/shop/web@sha256:cc66df3f";

fn hardened(mut s: HardeningWorkflowStatus) -> HardeningWorkflowStatus {
    s.hardened_image = Some(HARDENED.into());
    s.result = Some(HardenResult {
        source_bytes: 55_700_000,
        hardened_bytes: 4_200_000,
        reduction_percent: 92,
        files_kept: 47,
        files_removed: 6256,
        removed_shells: 3,
        removed_package_managers: 5,
        removed_setuid: 11,
        packs: Vec::new(),
    });
    s
}

#[test]
fn every_phase_maps_to_its_argo_cd_health() {
    for phase in Phase::ALL {
        let expected = match phase {
            Phase::Pending
            | Phase::Instrumenting
            | Phase::Observing
            | Phase::Collecting
            | Phase::Hardening
            | Phase::Verifying => "Progressing",
            Phase::Succeeded => "Healthy",
            Phase::Failed => "Degraded",
        };
        let note = format!("what {phase} is doing");
        let reason = match phase {
            Phase::Failed => "RolloutFailed",
            _ => phase.as_str(),
        };
        let (status, message) = health(&workflow(1, Some(status_in(phase, reason, &note))));
        assert_eq!(status, expected, "{phase}: {message}");
        assert!(
            message.starts_with(phase.as_str()) && message.contains(&note),
            "{phase}: {message}"
        );
    }
}

#[test]
fn no_status_is_progressing() {
    let (status, message) = health(&workflow(1, None));
    assert_eq!(status, "Progressing");
    assert_eq!(
        message,
        "Pending: waiting for the operator to pick up the workflow"
    );
}

#[test]
fn pending_names_why_it_waits() {
    let s = status_in(
        Phase::Pending,
        "TargetNotFound",
        "Deployment shop/web not found",
    );
    let (status, message) = health(&workflow(1, Some(s)));
    assert_eq!(status, "Progressing");
    assert_eq!(
        message,
        "Pending (TargetNotFound): Deployment shop/web not found"
    );
}

#[test]
fn observing_and_collecting_count_the_reports() {
    for phase in [Phase::Observing, Phase::Collecting] {
        let mut s = status_in(phase, phase.as_str(), "observing 2 pod(s): 10m");
        s.instrumented_image = Some("registry.example/shop/web@sha256:bbbb".into());
        s.reports = Some(ReportsStatus {
            expected: vec!["web-a".into(), "web-b".into()],
            received: 1,
            pods: vec!["web-a".into()],
            modes: Vec::new(),
            materials: Vec::new(),
        });
        let (status, message) = health(&workflow(1, Some(s)));
        assert_eq!(status, "Progressing");
        assert_eq!(
            message,
            format!("{phase}: 1/2 pod(s) reported; observing 2 pod(s): 10m")
        );
    }
}

#[test]
fn succeeded_names_the_hardened_image_and_the_reduction() {
    let mut s = hardened(status_in(
        Phase::Succeeded,
        "Succeeded",
        "verified; Deployment shop/web runs its original image again",
    ));
    s.verification = Some(Verification {
        result: VerificationResult::Passed,
        reason: "Passed".into(),
        message: "the hardened pods became ready and the exercise passed against them".into(),
        pod: None,
        container: None,
    });
    let (status, message) = health(&workflow(1, Some(s)));
    assert_eq!(status, "Healthy");
    assert_eq!(
        message,
        format!("Succeeded: hardened image {HARDENED} (92% smaller, 55700000 -> 4200000 bytes)")
    );
}

#[test]
fn a_failed_verification_is_degraded_with_its_reason_and_log_lines() {
    // Log lines carry quotes, backslashes, newlines, tabs and UTF-8: the Lua literal keeps them.
    let logs = "nginx: [emerg] open() \"/etc/nginx/mime.types\" failed (2: No such file)\n\tC:\\path ]] é ✓";
    let message = format!(
        "pod web-7f9c container nginx keeps crashing on the hardened image (exit 1); last lines: {logs}"
    );
    let mut s = hardened(status_in(Phase::Failed, "CrashLooping", &message));
    s.verification = Some(Verification {
        result: VerificationResult::Failed,
        reason: "CrashLooping".into(),
        message: message.clone(),
        pod: Some("web-7f9c".into()),
        container: Some("nginx".into()),
    });
    let (status, got) = health(&workflow(1, Some(s)));
    assert_eq!(status, "Degraded");
    assert_eq!(
        got,
        format!(
            "Failed (CrashLooping): {message}; verification Failed (CrashLooping) in pod web-7f9c container nginx"
        )
    );
}

#[test]
fn a_failure_before_verification_names_its_reason() {
    let message = "1 report(s) arrived within 5m and 2 are needed; no report from web-b";
    let (status, got) = health(&workflow(
        1,
        Some(status_in(Phase::Failed, "ReportsMissing", message)),
    ));
    assert_eq!(status, "Degraded");
    assert_eq!(got, format!("Failed (ReportsMissing): {message}"));
}

#[test]
fn a_stale_status_waits_for_the_operator() {
    // The spec was edited while Pending (generation 3); the status still describes generation 1.
    let s = status_in(
        Phase::Pending,
        "TargetNotFound",
        "Deployment shop/web not found",
    );
    let (status, message) = health(&workflow(3, Some(s)));
    assert_eq!(status, "Progressing");
    assert_eq!(message, "waiting for the operator to observe generation 3");
}

#[test]
fn an_unknown_phase_is_unknown() {
    let mut obj = workflow(1, Some(status_in(Phase::Hardening, "Hardening", "")));
    obj["status"]["phase"] = json!("Paused");
    let (status, message) = health(&obj);
    assert_eq!(status, "Unknown");
    assert_eq!(message, "unknown phase Paused");
}

#[test]
fn lua_strings_use_only_lua_5_1_escapes() {
    assert_eq!(lua_string("a\"b\\c\n\u{e9}"), r#""a\"b\\c\010\195\169""#);
    assert_eq!(
        lua_literal(&json!({"k": [1, null, true], "x": -2.5})),
        r#"{["k"] = {1, nil, true}, ["x"] = -2.5}"#
    );
}

#[test]
fn the_argocd_cm_snippet_in_the_docs_is_the_script() {
    let doc = include_str!("../docs/argocd.md");
    let key = "  resource.customizations.health.whittle.dev_HardeningWorkflow: |\n";
    let start = doc.find(key).expect("docs/argocd.md has the argocd-cm key") + key.len();
    let snippet: String = doc[start..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(
        snippet == SCRIPT,
        "the argocd-cm snippet in docs/argocd.md differs from docs/argocd/health.lua"
    );
}
