//! The page of a `whittle local` run: the summary `--summary` writes as JSON, for people.

use std::fmt::Write;

use super::chart::{self, Bar};
use super::html::{badge, bytes, code, esc, facts, opt, page, section, table};
use crate::api::status::reduction_percent;
use crate::evidence::vulns::Counts;
use crate::evidence::vulns::severity::Severity;
use crate::image::packages::State;
use crate::local::exercise::ExerciseResult;
use crate::local::workflow::{LocalSummary, exit_text};

/// The run's page.
pub fn local(s: &LocalSummary) -> String {
    let h = &s.harden;
    let verified = if s.verified { "yes" } else { "NO" };
    let mut body = format!(
        r#"<header><h1>whittle local <code>{}</code></h1><p>Verified {}</p></header>"#,
        esc(&h.source_image),
        badge(verified)
    );
    let reduction = reduction_percent(h.source_bytes, h.hardened_bytes);
    let list = |paths: &[String]| {
        if paths.is_empty() {
            "none".to_string()
        } else {
            paths
                .iter()
                .map(|p| format!("<code>{}</code>", esc(p)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut rows = vec![
        ("source image", code(Some(&h.source_image))),
        ("hardened image", code(Some(&h.hardened_image))),
        ("instrumented image", code(Some(&s.instrumented_image))),
        ("source size", bytes(h.source_bytes)),
        ("hardened size", bytes(h.hardened_bytes)),
        (
            "reduction",
            format!(
                r#"<span class="big reduction" data-percent="{reduction}">{reduction}%</span>"#
            ),
        ),
        (
            "files",
            format!(
                r#"<span class="files-kept">{}</span> kept, <span class="files-removed">{}</span> removed"#,
                h.files_kept, h.files_removed
            ),
        ),
        (
            "shells removed",
            format!(
                r#"<span class="shells-removed" data-count="{}">{}</span>"#,
                h.removed_shells.len(),
                list(&h.removed_shells)
            ),
        ),
        (
            "package managers removed",
            format!(
                r#"<span class="package-managers-removed" data-count="{}">{}</span>"#,
                h.removed_package_managers.len(),
                list(&h.removed_package_managers)
            ),
        ),
        (
            "setuid/setgid removed",
            format!(
                r#"<span class="setuid-removed" data-count="{}">{}</span>"#,
                h.removed_setuid.len(),
                list(&h.removed_setuid)
            ),
        ),
    ];
    let packages = &h.packages.packages;
    if !packages.is_empty() {
        let n = |st: State| packages.iter().filter(|p| p.state() == st).count();
        rows.push((
            "packages",
            format!(
                r#"<span class="packages-kept">{}</span> kept, <span class="packages-partial">{}</span> partly kept, <span class="packages-removed">{}</span> removed (of {})"#,
                n(State::Kept),
                n(State::Partial),
                n(State::Removed),
                packages.len()
            ),
        ));
    }
    if let Some(os) = &h.packages.os {
        rows.push(("OS", opt(os.pretty_name.as_deref().or(Some(&os.id)))));
    }
    body.push_str(&section(
        "image",
        "The image before and after",
        &facts(&rows),
    ));

    let mut charts = chart::bars(
        &[Bar {
            label: "image".into(),
            source: Some(h.source_bytes),
            hardened: Some(h.hardened_bytes),
        }],
        ("source (compressed)", "hardened (compressed)"),
    );
    charts.push_str(&chart::packs(
        h.packs.iter().map(|p| (p.name.as_str(), p.bytes)),
    ));
    body.push_str(&section("bytes", "Where the bytes went", &charts));

    if let Some(v) = &s.evidence.vulnerabilities {
        body.push_str(&section(
            "vulnerabilities",
            "Known vulnerabilities",
            &vulnerabilities(&v.before, &v.after, v.removed.len(), &v.remaining),
        ));
    }
    body.push_str(&section("verification", "Exercises and probes", &checks(s)));

    let mut refs: Vec<(&str, String)> = Vec::new();
    for f in &s.evidence.sbom_files {
        refs.push(("SBOM file", code(Some(&f.display().to_string()))));
    }
    if let Some(a) = &s.evidence.sbom {
        refs.push((
            "SBOM",
            format!("{} ({})", code(Some(&a.reference)), esc(&a.via)),
        ));
    }
    if let Some(a) = &s.evidence.profile {
        refs.push((
            "profile",
            format!("{} ({})", code(Some(&a.reference)), esc(&a.via)),
        ));
    }
    refs.push(("signature", code(s.evidence.signature.as_deref())));
    refs.push(("provenance", code(s.evidence.provenance.as_deref())));
    body.push_str(&section(
        "evidence",
        "SBOM, signature and provenance",
        &facts(&refs),
    ));

    if !s.phases.is_empty() {
        let rows: Vec<Vec<String>> = s
            .phases
            .iter()
            .map(|p| vec![esc(&p.name), format!("{:.1} s", p.seconds)])
            .collect();
        body.push_str(&section(
            "phases",
            "Time",
            &table("phases", &["phase", "took"], &rows),
        ));
    }
    if let Some(stderr) = s
        .hardened_stderr
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        body.push_str(&section(
            "stderr",
            "The hardened container's last stderr lines",
            &format!("<pre>{}</pre>", esc(stderr)),
        ));
    }
    page(&format!("whittle local {}", h.source_image), &body)
}

fn vulnerabilities(
    before: &Counts,
    after: &Counts,
    removed: usize,
    remaining: &[crate::evidence::vulns::matching::Finding],
) -> String {
    let by = |c: &Counts| [c.critical, c.high, c.medium, c.low, c.unknown];
    let names = ["Critical", "High", "Medium", "Low", "Unknown"];
    let mut rows: Vec<Vec<String>> = names
        .iter()
        .zip(by(before).into_iter().zip(by(after)))
        .map(|(name, (b, a))| {
            vec![
                esc(name),
                format!(r#"<span class="num before">{b}</span>"#),
                format!(
                    r#"<span class="num removed">{}</span>"#,
                    b.saturating_sub(a)
                ),
                format!(r#"<span class="num kept">{a}</span>"#),
            ]
        })
        .collect();
    rows.push(vec![
        "<strong>total</strong>".into(),
        format!(r#"<span class="num before total">{}</span>"#, before.total),
        format!(r#"<span class="num removed total">{removed}</span>"#),
        format!(r#"<span class="num kept total">{}</span>"#, after.total),
    ]);
    let mut out = table(
        "severities",
        &["severity", "in the source", "removed", "kept"],
        &rows,
    );
    if !remaining.is_empty() {
        let rows: Vec<Vec<String>> = remaining
            .iter()
            .map(|f| {
                let sev = match f.severity {
                    Severity::Critical => "Critical",
                    Severity::High => "High",
                    Severity::Medium => "Medium",
                    Severity::Low => "Low",
                    Severity::Unknown => "Unknown",
                };
                vec![
                    esc(&f.id),
                    esc(&f.package),
                    esc(&f.version),
                    opt(f.fixed.as_deref()),
                    esc(sev),
                ]
            })
            .collect();
        out.push_str("<h3>Kept</h3>");
        out.push_str(&table(
            "kept",
            &["id", "package", "version", "fixed in", "severity"],
            &rows,
        ));
    }
    out
}

fn verdict(r: Option<&ExerciseResult>, missing: bool) -> String {
    match r {
        _ if missing => badge("MISSING"),
        Some(r) if r.passed => badge("Passed"),
        Some(r) => format!("{} {}", badge("Failed"), esc(&exit_text(r))),
        None => badge("not run"),
    }
}

fn checks(s: &LocalSummary) -> String {
    let mut rows: Vec<Vec<String>> = s
        .exercises
        .iter()
        .map(|e| {
            vec![
                "exercise".into(),
                format!("<code>{}</code>", esc(&e.command)),
                verdict(Some(&e.original), false),
                verdict(e.hardened.as_ref(), false),
            ]
        })
        .collect();
    rows.extend(s.probes.iter().map(|p| {
        vec![
            esc(p.kind.as_str()),
            format!("<code>{}</code>", esc(&p.original.command)),
            verdict(Some(&p.original), false),
            verdict(p.hardened.as_ref(), p.command_missing),
        ]
    }));
    let mut out = table(
        "checks",
        &["kind", "command", "original image", "hardened image"],
        &rows,
    );
    for e in s.failed() {
        if let Some(r) = &e.hardened {
            let _ = write!(
                out,
                "<h3>{}</h3><pre>{}</pre>",
                esc(&e.command),
                esc(&r.output_tail)
            );
        }
    }
    out
}
