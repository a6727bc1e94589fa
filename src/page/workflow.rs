//! The page of one `HardeningWorkflow`: its status, as people would rather look at it.

use std::fmt::Write;

use kube::ResourceExt;

use super::chart::{self, Bar};
use super::html::{badge, bytes, code, esc, facts, opt, page, section, table};
use crate::api::{
    HardenResult, HardeningWorkflow, HardeningWorkflowStatus, SeverityCounts, Verification,
    VerificationResult, VulnerabilitiesStatus, VulnerabilitySeverity,
};

/// The workflow's page.
pub fn workflow(w: &HardeningWorkflow) -> String {
    let namespace = w.namespace().unwrap_or_default();
    let name = w.name_any();
    let empty = HardeningWorkflowStatus::default();
    let s = w.status.as_ref().unwrap_or(&empty);
    let mut body = header(&namespace, &name, s);
    body.push_str(&image(s));
    body.push_str(&bytes_chart(s));
    if let Some(v) = &s.vulnerabilities {
        body.push_str(&section(
            "vulnerabilities",
            "Known vulnerabilities",
            &vulnerabilities(v),
        ));
    }
    body.push_str(&section(
        "verification",
        "Verification",
        &verification(s.verification.as_ref()),
    ));
    body.push_str(&evidence(s));
    if !s.history.is_empty() {
        body.push_str(&history(s));
    }
    body.push_str(&conditions(s));
    page(&format!("HardeningWorkflow {namespace}/{name}"), &body)
}

fn header(namespace: &str, name: &str, s: &HardeningWorkflowStatus) -> String {
    let mut out = format!(
        r#"<header><h1>HardeningWorkflow <code>{}/{}</code></h1><p>Phase {}"#,
        esc(namespace),
        esc(name),
        badge(s.phase().as_str())
    );
    if let Some(ready) = s.condition(crate::api::ConditionType::Ready) {
        let _ = write!(
            out,
            r#" &#183; Ready {} <span class="reason">{}</span></p><p class="ready-message">{}</p>"#,
            badge(&ready.status),
            esc(&ready.reason),
            esc(&ready.message)
        );
    } else {
        out.push_str("</p>");
    }
    if let Some(m) = s.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = write!(out, r#"<p class="message">{}</p>"#, esc(m));
    }
    out.push_str("</header>");
    out
}

/// The rows every harden result shows: sizes, files, what was taken out.
pub(super) fn result_rows(r: &HardenResult) -> Vec<(&'static str, String)> {
    vec![
        ("source size", bytes(r.source_bytes)),
        ("hardened size", bytes(r.hardened_bytes)),
        (
            "reduction",
            format!(
                r#"<span class="big reduction" data-percent="{0}">{0}%</span>"#,
                r.reduction_percent
            ),
        ),
        (
            "files",
            format!(
                r#"<span class="files-kept">{}</span> kept, <span class="files-removed">{}</span> removed"#,
                r.files_kept, r.files_removed
            ),
        ),
        (
            "removed",
            format!(
                r#"<span class="shells-removed">{}</span> shell(s), <span class="package-managers-removed">{}</span> package manager(s), <span class="setuid-removed">{}</span> setuid/setgid file(s)"#,
                r.removed_shells, r.removed_package_managers, r.removed_setuid
            ),
        ),
    ]
}

fn image(s: &HardeningWorkflowStatus) -> String {
    let mut rows = vec![
        ("source image", code(s.source_image.as_deref())),
        ("source as named", code(s.source_reference.as_deref())),
        ("hardened image", code(s.hardened_image.as_deref())),
    ];
    match &s.result {
        Some(r) => rows.extend(result_rows(r)),
        None => rows.push(("result", "not hardened yet".into())),
    }
    let mut out = facts(&rows);
    if let Some(r) = &s.result
        && !r.packs.is_empty()
    {
        let packs: Vec<Vec<String>> = r
            .packs
            .iter()
            .map(|p| {
                vec![
                    esc(&p.name),
                    format!(r#"<span class="num">{}</span>"#, p.found),
                    format!(r#"<span class="num">{}</span>"#, p.files),
                    bytes(p.bytes),
                ]
            })
            .collect();
        out.push_str("<h3>Packs</h3>");
        out.push_str(&table(
            "packs",
            &[
                "pack",
                "files in the image",
                "files it added",
                "bytes it added (uncompressed)",
            ],
            &packs,
        ));
    }
    if s.containers.len() > 1 {
        let rows: Vec<Vec<String>> = s
            .containers
            .iter()
            .map(|c| {
                let r = c.result.as_ref();
                vec![
                    esc(&c.name),
                    code(c.source_image.as_deref()),
                    code(c.hardened_image.as_deref()),
                    r.map_or_else(|| "&#8212;".into(), |r| bytes(r.source_bytes)),
                    r.map_or_else(|| "&#8212;".into(), |r| bytes(r.hardened_bytes)),
                    r.map_or_else(|| "&#8212;".into(), |r| format!("{}%", r.reduction_percent)),
                ]
            })
            .collect();
        out.push_str("<h3>Containers</h3>");
        out.push_str(&table(
            "containers",
            &[
                "container",
                "source",
                "hardened",
                "source size",
                "hardened size",
                "reduction",
            ],
            &rows,
        ));
    }
    section("image", "The image before and after", &out)
}

fn bytes_chart(s: &HardeningWorkflowStatus) -> String {
    let mut bars = Vec::new();
    if s.containers.len() > 1 {
        for c in &s.containers {
            if let Some(r) = &c.result {
                bars.push(Bar {
                    label: format!("container {}", c.name),
                    source: Some(r.source_bytes),
                    hardened: Some(r.hardened_bytes),
                });
            }
        }
    } else if let Some(r) = &s.result {
        bars.push(Bar {
            label: "image".into(),
            source: Some(r.source_bytes),
            hardened: Some(r.hardened_bytes),
        });
    }
    let mut out = chart::bars(&bars, ("source (compressed)", "hardened (compressed)"));
    if let Some(r) = &s.result {
        out.push_str(&chart::packs(
            r.packs.iter().map(|p| (p.name.as_str(), p.bytes)),
        ));
    }
    if out.is_empty() {
        return String::new();
    }
    section("bytes", "Where the bytes went", &out)
}

const SEVERITIES: [VulnerabilitySeverity; 5] = [
    VulnerabilitySeverity::Critical,
    VulnerabilitySeverity::High,
    VulnerabilitySeverity::Medium,
    VulnerabilitySeverity::Low,
    VulnerabilitySeverity::Unknown,
];

fn severity_name(s: VulnerabilitySeverity) -> &'static str {
    match s {
        VulnerabilitySeverity::Critical => "Critical",
        VulnerabilitySeverity::High => "High",
        VulnerabilitySeverity::Medium => "Medium",
        VulnerabilitySeverity::Low => "Low",
        VulnerabilitySeverity::Unknown => "Unknown",
    }
}

fn of(c: &SeverityCounts, s: VulnerabilitySeverity) -> u64 {
    match s {
        VulnerabilitySeverity::Critical => c.critical,
        VulnerabilitySeverity::High => c.high,
        VulnerabilitySeverity::Medium => c.medium,
        VulnerabilitySeverity::Low => c.low,
        VulnerabilitySeverity::Unknown => c.unknown,
    }
}

fn num(class: &str, n: u64) -> String {
    format!(r#"<span class="num {class}">{n}</span>"#)
}

fn vulnerabilities(v: &VulnerabilitiesStatus) -> String {
    let mut rows: Vec<Vec<String>> = SEVERITIES
        .iter()
        .map(|&sev| {
            let (before, after) = (of(&v.before, sev), of(&v.after, sev));
            vec![
                esc(severity_name(sev)),
                num("before", before),
                num("removed", before.saturating_sub(after)),
                num("kept", after),
                num("fixable", of(&v.fixable, sev)),
            ]
        })
        .collect();
    rows.push(vec![
        "<strong>total</strong>".into(),
        num("before total", v.before.total),
        num("removed total", v.removed),
        num("kept total", v.after.total),
        num("fixable total", v.fixable.total),
    ]);
    let mut out = table(
        "severities",
        &[
            "severity",
            "in the source",
            "removed",
            "kept",
            "kept, with a fix",
        ],
        &rows,
    );
    if !v.kept.is_empty() {
        let kept: Vec<Vec<String>> = v
            .kept
            .iter()
            .map(|k| {
                vec![
                    esc(&k.id),
                    esc(&k.package),
                    esc(&k.version),
                    opt(k.fixed_version.as_deref()),
                    esc(severity_name(k.severity)),
                ]
            })
            .collect();
        out.push_str("<h3>Kept (most severe first)</h3>");
        out.push_str(&table(
            "kept",
            &["id", "package", "version", "fixed in", "severity"],
            &kept,
        ));
    }
    out.push_str(&facts(&[
        ("matched against", opt(v.matched_database.as_deref())),
        ("matched image", code(v.matched_image.as_deref())),
        (
            "matched at",
            opt(v.matched_at.as_ref().map(|t| t.0.to_string()).as_deref()),
        ),
    ]));
    out
}

fn verification(v: Option<&Verification>) -> String {
    let Some(v) = v else {
        return r#"<p class="muted">not verified yet</p>"#.into();
    };
    let result = match v.result {
        VerificationResult::Passed => "Passed",
        VerificationResult::Failed => "Failed",
    };
    facts(&[
        ("verdict", badge(result)),
        ("reason", esc(&v.reason)),
        ("pod", opt(v.pod.as_deref())),
        ("container", opt(v.container.as_deref())),
        ("message", format!("<pre>{}</pre>", esc(&v.message))),
    ])
}

fn evidence(s: &HardeningWorkflowStatus) -> String {
    let rows = [
        ("SBOM", code(s.sbom.as_deref())),
        ("signature", code(s.signature.as_deref())),
        ("provenance", code(s.provenance.as_deref())),
        ("seal", code(s.seal.as_deref())),
        ("instrumented image", code(s.instrumented_image.as_deref())),
    ];
    let mut out = facts(&rows);
    out.push_str(
        r#"<p class="muted">OCI references in the hardened image's registry; e.g. <code>cosign verify --key cosign.pub IMAGE</code> checks the signature and <code>cosign verify-attestation --type slsaprovenance1 --key cosign.pub IMAGE</code> the provenance.</p>"#,
    );
    if let Some(r) = &s.reports {
        let _ = write!(
            out,
            "<p>Built from {} report(s) of {} pod(s) expected{}.</p>",
            r.received,
            r.expected.len(),
            if r.modes.is_empty() {
                String::new()
            } else {
                format!(", recorded with {}", esc(&r.modes.join(", ")))
            }
        );
    }
    section("evidence", "SBOM, signature and provenance", &out)
}

fn history(s: &HardeningWorkflowStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .history
        .iter()
        .map(|r| {
            let n = |v: Option<u64>| v.map_or_else(|| "&#8212;".into(), |v| v.to_string());
            vec![
                esc(r.trigger.as_str()),
                badge(r.verdict.as_str()),
                opt(r.reason.as_deref()),
                code(r.hardened_image.as_deref()),
                n(r.vulnerabilities_before),
                n(r.vulnerabilities_after),
                r.duration_seconds
                    .map_or_else(|| "&#8212;".into(), |d| format!("{d} s")),
                esc(&r.completed_at.0.to_string()),
            ]
        })
        .collect();
    section(
        "history",
        "Runs",
        &table(
            "history",
            &[
                "trigger",
                "verdict",
                "reason",
                "hardened image",
                "vulns before",
                "vulns after",
                "took",
                "completed",
            ],
            &rows,
        ),
    )
}

fn conditions(s: &HardeningWorkflowStatus) -> String {
    if s.conditions.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = s
        .conditions
        .iter()
        .map(|c| {
            vec![
                esc(&c.type_),
                badge(&c.status),
                esc(&c.reason),
                esc(&c.message),
                esc(&c.last_transition_time.0.to_string()),
            ]
        })
        .collect();
    section(
        "conditions",
        "Conditions",
        &table(
            "conditions",
            &["type", "status", "reason", "message", "since"],
            &rows,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hostile() -> HardeningWorkflow {
        serde_json::from_value(json!({
            "apiVersion": "whittle.dev/v1alpha1", "kind": "HardeningWorkflow",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"target": {"name": "web"}},
            "status": {
                "phase": "Failed",
                "message": "<script>alert(1)</script>",
                "sourceImage": "reg/x\"onload=alert(2) x=\"@sha256:aa",
                "hardenedImage": "reg/x'onload=alert(3)'",
                "result": {"sourceBytes": 55700000, "hardenedBytes": 4212345, "reductionPercent": 92,
                    "filesKept": 47, "filesRemoved": 6256, "removedShells": 3,
                    "removedPackageManagers": 5, "removedSetuid": 11,
                    "packs": [{"name": "<img src=x onerror=alert(4)>", "found": 1, "files": 1, "bytes": 10}]},
                "verification": {"result": "Failed", "reason": "ReadinessFailed",
                    "message": "</pre><script>alert(5)</script>"},
                "conditions": [{"type": "Ready", "status": "False", "reason": "ReadinessFailed",
                    "message": "<script>alert(6)</script>", "lastTransitionTime": "2026-11-23T10:00:00Z"}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn strings_from_the_status_are_escaped() {
        let page = workflow(&hostile());
        for raw in [
            "<script>",
            "\"onload=",
            "'onload=",
            "<img src=x",
            "</pre><script>",
        ] {
            assert!(!page.contains(raw), "{raw} reached the page unescaped");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&quot;onload=alert(2)"));
        assert!(page.contains("&lt;script&gt;alert(6)"));
        assert!(!page.contains("<script"), "no script at all");
    }

    #[test]
    fn numbers_are_readable_and_exact() {
        let page = workflow(&hostile());
        assert!(page.contains(r#"data-bytes="55700000""#) && page.contains("55.7 MB"));
        assert!(page.contains(r#"data-bytes="4212345""#) && page.contains("4.2 MB"));
        assert!(page.contains(r#"data-percent="92""#));
        assert!(page.contains(r#"class="shells-removed">3<"#));
        assert!(page.contains(r#"<svg class="chart""#));
    }

    #[test]
    fn an_empty_status_still_renders() {
        let mut w = hostile();
        w.status = None;
        let page = workflow(&w);
        assert!(page.contains("Pending") && page.contains("not hardened yet"));
        assert!(!page.contains("<svg"));
    }
}
