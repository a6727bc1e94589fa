//! The page of a `HardeningPolicy` or `ClusterHardeningPolicy`: where its workloads are, what
//! hardening gained (Harden) or would gain at most (Report), workload by workload.

use std::fmt::Write;

use super::chart::{self, Bar};
use super::html::{badge, bytes, code, esc, facts, opt, page, section, table};
use crate::api::policy::{HardeningPolicySpec, PolicyMode, PolicyStatus, WorkloadRow};
use crate::api::status::reduction_percent;

/// The policy's page. `kind` is `HardeningPolicy` or `ClusterHardeningPolicy`; `namespace`
/// is None for the cluster one.
pub fn policy(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    spec: &HardeningPolicySpec,
    status: &PolicyStatus,
) -> String {
    let id = match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    let mode = match spec.mode {
        PolicyMode::Report => "Report",
        PolicyMode::Harden => "Harden",
    };
    let mut body = format!(
        r#"<header><h1>{} <code>{}</code></h1><p>Mode <span class="mode">{}</span>, at most {} at once"#,
        esc(kind),
        esc(&id),
        mode,
        spec.max_concurrent
    );
    if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready") {
        let _ = write!(
            body,
            r#" &#183; Ready {} <span class="reason">{}</span></p><p class="ready-message">{}</p>"#,
            badge(&ready.status),
            esc(&ready.reason),
            esc(&ready.message)
        );
    } else {
        body.push_str("</p>");
    }
    if let Some(next) = &status.next_window {
        let _ = write!(
            body,
            "<p>The window next opens at {}.</p>",
            esc(&next.0.to_string())
        );
    }
    body.push_str("</header>");
    body.push_str(&counts(status));
    body.push_str(&totals(spec.mode, status));
    body.push_str(&workload_chart(spec.mode, status));
    body.push_str(&rows(status));
    page(&format!("{kind} {id}"), &body)
}

fn count(class: &str, n: u32) -> String {
    format!(r#"<span class="big count {class}" data-count="{n}">{n}</span>"#)
}

fn counts(s: &PolicyStatus) -> String {
    let c = &s.counts;
    let cells = [
        ("selected", s.selected),
        ("skipped", s.skipped),
        ("queued", c.queued),
        ("pending", c.pending),
        ("running", c.running),
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("reported", c.reported),
    ];
    let head: Vec<&str> = cells.iter().map(|(l, _)| *l).collect();
    let row = vec![cells.iter().map(|(l, n)| count(l, *n)).collect()];
    section(
        "counts",
        "Workloads by state",
        &table("counts", &head, &row),
    )
}

fn totals(mode: PolicyMode, s: &PolicyStatus) -> String {
    let t = &s.totals;
    let left = match mode {
        PolicyMode::Harden => "hardened size",
        PolicyMode::Report => "predicted minimum size",
    };
    let removed = match mode {
        PolicyMode::Harden => "removed",
        PolicyMode::Report => "removable",
    };
    let reduction = reduction_percent(t.source_bytes, t.hardened_bytes);
    let rows = [
        ("source size", bytes(t.source_bytes)),
        (left, bytes(t.hardened_bytes)),
        (
            "reduction",
            format!(
                r#"<span class="big reduction" data-percent="{reduction}">{reduction}%</span>"#
            ),
        ),
        (
            "known vulnerabilities removed",
            format!(
                r#"<span class="vulnerabilities-removed">{}</span>"#,
                t.vulnerabilities_removed
            ),
        ),
        (
            "shells",
            format!(
                r#"<span class="shells-removed">{}</span> {removed}"#,
                t.shells_removed
            ),
        ),
        (
            "package managers",
            format!(
                r#"<span class="package-managers-removed">{}</span> {removed}"#,
                t.package_managers_removed
            ),
        ),
    ];
    section("totals", "Totals", &facts(&rows))
}

fn row_label(r: &WorkloadRow) -> String {
    format!("{}/{} {}", r.namespace, r.kind.as_str(), r.name)
}

fn workload_chart(mode: PolicyMode, s: &PolicyStatus) -> String {
    let bars: Vec<Bar> = s
        .workloads
        .iter()
        .filter(|r| r.source_bytes.is_some() || r.hardened_bytes.is_some())
        .map(|r| Bar {
            label: row_label(r),
            source: r.source_bytes,
            hardened: r.hardened_bytes,
        })
        .collect();
    let legend = match mode {
        PolicyMode::Harden => ("source (compressed)", "hardened (compressed)"),
        PolicyMode::Report => ("source (compressed)", "predicted minimum (compressed)"),
    };
    let svg = chart::bars(&bars, legend);
    if svg.is_empty() {
        return String::new();
    }
    section("bytes", "Bytes per workload", &svg)
}

fn rows(s: &PolicyStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .workloads
        .iter()
        .map(|r| {
            let p = r.prediction.as_ref();
            let n = |v: Option<usize>| v.map_or_else(|| "&#8212;".into(), |v| v.to_string());
            vec![
                esc(&r.namespace),
                esc(r.kind.as_str()),
                esc(&r.name),
                badge(&r.state),
                opt(r.workflow.as_deref()),
                code(r.image.as_deref()),
                r.source_bytes.map_or_else(|| "&#8212;".into(), bytes),
                r.hardened_bytes.map_or_else(|| "&#8212;".into(), bytes),
                n(p.map(|p| p.shells.len())),
                n(p.map(|p| p.package_managers.len())),
                n(p.map(|p| p.setuid.len())),
                p.map_or_else(|| "&#8212;".into(), |p| format!("{}%", p.removable_percent)),
                opt(r.message.as_deref()),
            ]
        })
        .collect();
    let mut out = table(
        "workloads",
        &[
            "namespace",
            "kind",
            "name",
            "state",
            "workflow",
            "image",
            "source size",
            "hardened / minimum",
            "shells",
            "package managers",
            "setuid",
            "removable",
            "why",
        ],
        &rows,
    );
    if s.truncated {
        out.push_str(&format!(
            r#"<p class="muted truncated">More workloads were selected than the {} rows the status keeps; their workflows hold the details.</p>"#,
            s.workloads.len()
        ));
    }
    section("workloads", "Workloads", &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_escaped_and_counted() {
        let spec: HardeningPolicySpec = serde_json::from_value(json!({"mode": "Report"})).unwrap();
        let status: PolicyStatus = serde_json::from_value(json!({
            "selected": 2, "counts": {"queued": 0, "pending": 0, "running": 0, "succeeded": 0, "failed": 0,
                "reported": 2},
            "totals": {"sourceBytes": 2000000, "hardenedBytes": 500000, "vulnerabilitiesRemoved": 0,
                "shellsRemoved": 2, "packageManagersRemoved": 1},
            "workloads": [
                {"namespace": "shop", "kind": "Deployment", "name": "web", "state": "Reported",
                 "image": "<script>alert(1)</script>", "sourceBytes": 1500000, "hardenedBytes": 400000,
                 "prediction": {"digest": "r@sha256:aa", "files": 10, "shells": ["bin/sh", "bin/bash"],
                    "packageManagers": ["usr/bin/apt"], "removablePercent": 73}},
                {"namespace": "shop", "kind": "StatefulSet", "name": "db", "state": "Skipped",
                 "message": "\"onload=x"},
            ],
        }))
        .unwrap();
        let page = policy("HardeningPolicy", Some("shop"), "all", &spec, &status);
        assert!(!page.contains("<script") && !page.contains("\"onload="));
        assert_eq!(page.matches(r#"<tr class="workloads-row">"#).count(), 2);
        assert!(page.contains(r#"data-percent="75""#), "totals' reduction");
        assert!(page.contains("73%") && page.contains("predicted minimum"));
        assert!(page.contains(r#"data-bytes="1500000""#));
    }
}
