//! Continuous hardening's re-match: at a check that finds the source unchanged, the packages
//! the hardened image keeps are matched again against the workflow's vulnerability database
//! (refreshed every `--vuln-db-refresh`), so that `status.vulnerabilities` says what the image
//! carries today, not what was known when it was built. Only the image's package database is
//! read, and only when the image or the database changed since the last match.
//!
//! A kept vulnerability at or above the threshold (`vulnerabilities.failOn`'s severity, else
//! High) with a fix cannot be hardened away: the source must be rebuilt with the fix. Then
//! UpToDate is False with `RebuildNeeded`, naming package and versions; a Warning Event says it
//! once per new set of such findings. A failure here never fails the workflow: it is reported
//! and tried again at the next check.

use kube::runtime::events::EventType;

use super::hardening::{database_version, gate, keeps};
use super::step::Step;
use crate::api::{ConditionType, KeptVulnerability, VulnerabilitiesStatus, VulnerabilitySeverity};
use crate::controller::error::{Error, Result};
use crate::controller::reason::Reason;
use crate::evidence::vulns::matching::scan;
use crate::evidence::vulns::severity::Severity;
use crate::image::distribution::store::Location;
use crate::image::packages::read_inventory;

/// How many of the findings that need a rebuild the message names; it counts them all.
const NAMED_IN_MESSAGE: usize = 3;

impl Step<'_> {
    /// Matches the hardened image again when needed, then says whether the source must be
    /// rebuilt: true when it set UpToDate (False, `RebuildNeeded`) itself.
    pub(super) async fn rematch(&mut self, reference: &str) -> bool {
        if let Some(db) = self.workflow.spec.vulnerabilities.db.clone()
            && let Err(e) = self.match_again(&db).await
        {
            let note = format!(
                "could not match the hardened image's packages against spec.vulnerabilities.db {db} again: {e}; status.vulnerabilities is as last matched, and the next check tries again"
            );
            self.ctx
                .event(
                    self.workflow,
                    EventType::Warning,
                    Reason::RematchFailed,
                    &note,
                )
                .await;
        }
        let threshold = self.rebuild_threshold();
        let kept = self
            .status
            .vulnerabilities
            .as_ref()
            .map(|v| v.kept.as_slice())
            .unwrap_or_default();
        let needing = needs_rebuild(kept, threshold);
        if needing.is_empty() {
            return false;
        }
        let message = rebuild_message(reference, &needing, threshold);
        let prior = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::UpToDate.as_str())
            .map(|c| (c.reason.as_str(), c.message.as_str()));
        let announce = is_news(prior, &message);
        self.condition(
            ConditionType::UpToDate,
            false,
            Reason::RebuildNeeded,
            &message,
        );
        if announce {
            self.ctx
                .event(
                    self.workflow,
                    EventType::Warning,
                    Reason::RebuildNeeded,
                    &message,
                )
                .await;
        }
        true
    }

    /// `vulnerabilities.failOn`'s severity, else High.
    fn rebuild_threshold(&self) -> Severity {
        self.workflow
            .spec
            .vulnerabilities
            .fail_on
            .as_ref()
            .map_or(Severity::High, |f| gate(f).severity)
    }

    /// Reads the hardened image's packages and matches them against `db`, unless that image
    /// was matched against this very database already.
    async fn match_again(&mut self, db: &str) -> Result<()> {
        let Some(image) = self.status.hardened_image.clone() else {
            return Ok(());
        };
        let loaded = self.ctx.vuln_dbs.get(db).await?;
        let database = database_version(db, &loaded);
        if !needs_match(self.status.vulnerabilities.as_ref(), &image, &database) {
            return Ok(());
        }
        let d = self.workload().await?;
        let store = self.store(&d).await?;
        let location = Location::parse(&image)?;
        let inventory = read_inventory(&store, &location)
            .await
            .map_err(Error::from)?;
        let remaining = scan(&loaded, &inventory);
        let (after, fixable, kept) = keeps(&remaining);
        let v = self
            .status
            .vulnerabilities
            .get_or_insert_with(Default::default);
        *v = VulnerabilitiesStatus {
            after,
            fixable,
            kept,
            matched_at: Some(self.now.clone()),
            matched_image: Some(image),
            matched_database: Some(database),
            before: v.before.clone(),
            removed: v.removed,
        };
        Ok(())
    }
}

/// Whether `image` must be read and matched against `database`: not when the last match was
/// of this image against this database (the same records, even if loaded again since).
fn needs_match(last: Option<&VulnerabilitiesStatus>, image: &str, database: &str) -> bool {
    !last.is_some_and(|v| {
        v.matched_image.as_deref() == Some(image) && v.matched_database.as_deref() == Some(database)
    })
}

fn graded(s: VulnerabilitySeverity) -> Severity {
    match s {
        VulnerabilitySeverity::Critical => Severity::Critical,
        VulnerabilitySeverity::High => Severity::High,
        VulnerabilitySeverity::Medium => Severity::Medium,
        VulnerabilitySeverity::Low => Severity::Low,
        VulnerabilitySeverity::Unknown => Severity::Unknown,
    }
}

/// The kept vulnerabilities at or above `threshold` that have a fix, in the status's order
/// (worst first): only a rebuild of the source removes them. An unrated one never counts, as
/// at the gate.
fn needs_rebuild(kept: &[KeptVulnerability], threshold: Severity) -> Vec<&KeptVulnerability> {
    kept.iter()
        .filter(|k| {
            let s = graded(k.severity);
            s != Severity::Unknown && s <= threshold && k.fixed_version.is_some()
        })
        .collect()
}

fn word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
        Severity::Unknown => "Unknown",
    }
}

/// The UpToDate message: which packages, installed → fixed, and what to do.
fn rebuild_message(reference: &str, needing: &[&KeptVulnerability], threshold: Severity) -> String {
    let named: Vec<String> = needing
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|k| {
            format!(
                "{} in {} {} → {} ({})",
                k.id,
                k.package,
                k.version,
                k.fixed_version.as_deref().unwrap_or_default(),
                word(graded(k.severity))
            )
        })
        .collect();
    let more = needing.len().saturating_sub(NAMED_IN_MESSAGE);
    let rest = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let n = needing.len();
    let plural = if n == 1 { "y" } else { "ies" };
    format!(
        "the hardened image keeps {n} vulnerabilit{plural} of severity {} or worse with a fix: {}{rest}; {reference} names no new digest: rebuild the source image {reference} to pick it up",
        word(threshold),
        named.join(", ")
    )
}

/// A Warning Event only for a new set of findings: not when UpToDate already said the same.
fn is_news(prior: Option<(&str, &str)>, message: &str) -> bool {
    prior != Some((Reason::RebuildNeeded.as_str(), message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &str, severity: VulnerabilitySeverity, fixed: Option<&str>) -> KeptVulnerability {
        KeptVulnerability {
            id: id.into(),
            package: "libc6".into(),
            version: "2.36-9+deb12u4".into(),
            fixed_version: fixed.map(Into::into),
            severity,
        }
    }

    fn matched(image: &str, database: &str) -> VulnerabilitiesStatus {
        VulnerabilitiesStatus {
            matched_image: Some(image.into()),
            matched_database: Some(database.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_image_is_read_again_only_when_it_or_the_database_changed() {
        let same = matched("r/web@sha256:a", "debian@01");
        let older = VulnerabilitiesStatus::default();
        let cases = [
            (None, "r/web@sha256:a", "debian@01", true),
            (Some(&older), "r/web@sha256:a", "debian@01", true),
            (Some(&same), "r/web@sha256:a", "debian@01", false),
            (Some(&same), "r/web@sha256:b", "debian@01", true),
            (Some(&same), "r/web@sha256:a", "debian@02", true),
            (Some(&same), "r/web@sha256:a", "alpine@01", true),
        ];
        for (last, image, database, want) in cases {
            assert_eq!(
                needs_match(last, image, database),
                want,
                "{last:?} {image} {database}"
            );
        }
    }

    #[test]
    fn a_rebuild_is_needed_for_a_kept_fixable_finding_at_or_above_the_threshold() {
        use VulnerabilitySeverity::*;
        let list = [
            kept("CRIT", Critical, None),
            kept("HIGH-FIX", High, Some("2.36-9+deb12u9")),
            kept("MED-FIX", Medium, Some("2.36-9+deb12u8")),
            kept("UNRATED-FIX", Unknown, Some("2.36-10")),
        ];
        let ids = |t| -> Vec<String> {
            needs_rebuild(&list, t)
                .iter()
                .map(|k| k.id.clone())
                .collect()
        };
        let cases: [(Severity, &[&str]); 4] = [
            (Severity::Critical, &[]),
            (Severity::High, &["HIGH-FIX"]),
            (Severity::Medium, &["HIGH-FIX", "MED-FIX"]),
            (Severity::Low, &["HIGH-FIX", "MED-FIX"]),
        ];
        for (threshold, want) in cases {
            assert_eq!(ids(threshold), want, "{threshold:?}");
        }
    }

    #[test]
    fn the_message_names_package_versions_and_the_source_to_rebuild() {
        use VulnerabilitySeverity::*;
        let one = kept("HIGH-FIX", High, Some("99.0-1"));
        assert_eq!(
            rebuild_message("r/shop/web:1", &[&one], Severity::High),
            "the hardened image keeps 1 vulnerability of severity High or worse with a fix: HIGH-FIX in libc6 2.36-9+deb12u4 → 99.0-1 (High); r/shop/web:1 names no new digest: rebuild the source image r/shop/web:1 to pick it up"
        );
        let many: Vec<KeptVulnerability> = (0..5)
            .map(|n| kept(&format!("C-{n}"), Critical, Some("99.0-1")))
            .collect();
        let refs: Vec<&KeptVulnerability> = many.iter().collect();
        let message = rebuild_message("r/web:1", &refs, Severity::Critical);
        assert!(
            message.contains("keeps 5 vulnerabilities of severity Critical or worse"),
            "{message}"
        );
        assert!(
            message.contains("C-2 in libc6 2.36-9+deb12u4 → 99.0-1 (Critical) and 2 more;"),
            "{message}"
        );
    }

    #[test]
    fn the_warning_is_given_once_per_set_of_findings() {
        let message = "the hardened image keeps 1 vulnerability …";
        let cases = [
            (None, true),
            (
                Some(("Current", "r/web:1 still names r/web@sha256:a")),
                true,
            ),
            (
                Some(("RebuildNeeded", "the hardened image keeps 2 …")),
                true,
            ),
            (Some(("RebuildNeeded", message)), false),
        ];
        for (prior, want) in cases {
            assert_eq!(is_news(prior, message), want, "{prior:?}");
        }
    }
}
