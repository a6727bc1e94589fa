//! What hardening did to an image's vulnerabilities: the findings of packages it removed, those
//! of packages it kept, and their counts by severity.

use std::collections::HashSet;

use serde::Serialize;

use super::database::VulnDb;
use super::matching::{Finding, scan_packages};
use super::severity::Severity;
use crate::image::packages::{Inventory, Manager, State};

/// Findings by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub unknown: usize,
    pub total: usize,
}

impl Counts {
    pub fn of(findings: &[Finding]) -> Counts {
        let mut counts = Counts::default();
        for finding in findings {
            match finding.severity {
                Severity::Critical => counts.critical += 1,
                Severity::High => counts.high += 1,
                Severity::Medium => counts.medium += 1,
                Severity::Low => counts.low += 1,
                Severity::Unknown => counts.unknown += 1,
            }
            counts.total += 1;
        }
        counts
    }
}

/// What hardening did to an image's vulnerabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VulnSummary {
    pub before: Counts,
    pub after: Counts,
    /// Findings of packages the hardened image no longer holds any file of.
    pub removed: Vec<Finding>,
    /// Findings of packages it keeps, wholly or in part.
    pub remaining: Vec<Finding>,
}

/// Before and after: a finding is removed when the hardened image holds no file of its package.
pub fn compare(db: &VulnDb, source: &Inventory, hardened: &Inventory) -> VulnSummary {
    let before = scan_packages(db, source);
    // Any architecture of a package that keeps a file keeps the package's findings.
    let kept: HashSet<(Manager, &str)> = hardened
        .packages
        .iter()
        .filter(|p| p.state() != State::Removed)
        .map(|p| (p.manager, p.name.as_str()))
        .collect();
    let (remaining, removed): (Vec<_>, Vec<_>) = before
        .iter()
        .partition(|(finding, manager)| kept.contains(&(*manager, finding.package.as_str())));
    let removed: Vec<Finding> = removed.into_iter().map(|(f, _)| f.clone()).collect();
    let remaining: Vec<Finding> = remaining.into_iter().map(|(f, _)| f.clone()).collect();
    let all: Vec<Finding> = before.into_iter().map(|(f, _)| f).collect();
    VulnSummary {
        before: Counts::of(&all),
        after: Counts::of(&remaining),
        removed,
        remaining,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::evidence::vulns::testing::{alpine, fixture, stretch};

    #[test]
    fn compare_moves_the_findings_of_removed_packages() {
        let db = VulnDb::load(&fixture()).unwrap();
        let source = stretch();
        let mut hardened = source.clone();
        for package in &mut hardened.packages {
            match package.name.as_str() {
                // Gone: dpkg is a package manager, which hardening always drops.
                "dpkg" => package.kept = 0,
                // Partly kept: the library is still there to exploit.
                "libssl1.1" => package.kept = 3,
                _ => {}
            }
        }
        // The openssl command-line tool is not even listed in the hardened inventory.
        hardened.packages.retain(|p| p.name != "openssl");
        let summary = compare(&db, &source, &hardened);
        let ids = |findings: &[Finding]| -> Vec<(String, String)> {
            findings
                .iter()
                .map(|f| (f.id.clone(), f.package.clone()))
                .collect()
        };
        assert_eq!(
            ids(&summary.removed),
            [
                ("DLA-3008-1".to_string(), "openssl".to_string()),
                ("DLA-3022-1".to_string(), "dpkg".to_string()),
            ]
        );
        assert_eq!(
            ids(&summary.remaining),
            [("DLA-3008-1".to_string(), "libssl1.1".to_string())]
        );
        assert_eq!((summary.before.total, summary.before.unknown), (3, 3));
        assert_eq!((summary.after.total, summary.after.unknown), (1, 1));

        // Nothing removed: before and after agree.
        let same = compare(&db, &source, &source);
        assert!(same.removed.is_empty());
        assert_eq!(same.before, same.after);
    }

    #[test]
    fn the_summary_serialises_in_camel_case_with_lowercase_severities() {
        let db = VulnDb::load(&fixture()).unwrap();
        let json = serde_json::to_value(compare(&db, &alpine(), &alpine())).unwrap();
        assert_eq!(json["before"]["high"], 2);
        assert_eq!(json["after"]["total"], 2);
        assert_eq!(json["removed"], Value::Array(vec![]));
        let finding = &json["remaining"][0];
        assert_eq!(finding["severity"], "high");
        assert_eq!(finding["fixed"], "1.2.5-r1");
        assert_eq!(finding["source"], "musl");
        assert_eq!(finding["summary"], Value::Null);
    }
}
