//! Hardening: build and push the hardened image from the stored reports, within what is left
//! of `harden.timeout`; describe it (SBOM, vulnerabilities), seal what was produced, then
//! verify it or (verification off) sign it and succeed.

use std::collections::BTreeSet;
use std::time::Instant;

use kube::runtime::controller::Action;

use super::step::{SOON, Step};
use crate::api::status::reduction_percent;
use crate::api::{
    ConditionType, FailOn, GateSeverity, HardenResult, KeptVulnerability, PackResult, Phase,
    ReportMaterial, SeverityCounts, VulnerabilitiesStatus, VulnerabilitySeverity,
};
use crate::controller::engine;
use crate::controller::error::{Error, Result};
use crate::controller::phase;
use crate::controller::reason::Reason;
use crate::controller::workload::Workload;
use crate::evidence;
use crate::evidence::produce::{self, EvidenceOptions};
use crate::evidence::vulns::gate::refusal;
use crate::evidence::vulns::matching::Finding;
use crate::evidence::vulns::severity::Severity;
use crate::evidence::vulns::{Counts, Gate, KEPT_LIST_LIMIT, VulnDb, VulnSummary, worst_first};
use crate::image::distribution::store::Store;
use crate::image::harden::Summary;
use crate::reports;
use whittle_sensor::report::Report;

impl Step<'_> {
    pub(super) async fn hardening(&mut self) -> Result<Action> {
        let d = self.workload().await?;
        self.container(&d)?;
        let source = self
            .status
            .source_image
            .clone()
            .ok_or_else(|| Error::Failed {
                reason: Reason::StatusIncomplete,
                message: "status.sourceImage is missing: was the status edited by hand?".into(),
            })?;
        let reference = self.source_reference(&d)?;
        let dest = engine::destinations(self.workflow, &reference)?;
        let store = self.store(&d).await?;
        if let Some(r) = self.status.reports.as_mut() {
            r.materials.clear();
            r.modes.clear();
        }
        let first = self.first_group(&d)?;
        let profile = self.profile(first.as_ref()).await?;
        let summary = self.harden(&store, &source, &dest, profile.clone()).await?;
        self.describe(&store, &summary).await?;
        // The profile travels with the image, so that `whittle harden --profile` can harden a
        // later source from it with no cluster.
        if let Some(merged) = profile.first() {
            evidence::profile::attach(&store, &summary, merged)
                .await
                .map_err(Box::new)?;
        }
        let mut message = self.record(&source, &summary);
        if let Some(first) = &first {
            self.record_containers(first, &summary);
            for more in self.more_hardened(&d, &store).await? {
                message = format!("{message}; {more}");
            }
        }
        if self.workflow.spec.verify.enabled {
            self.condition(
                ConditionType::Verified,
                false,
                Reason::Verifying,
                "rolling out the hardened image",
            );
            self.enter(
                Phase::Verifying,
                format!("{message}; verifying it: rolling it out"),
            );
            return Ok(Action::requeue(SOON));
        }
        self.sign(&store).await?;
        self.succeed(message);
        Ok(Action::requeue(SOON))
    }

    /// With `target.containers`: the containers that run the first container's source image
    /// (they share its hardened image). None with one container: every report is its.
    fn first_group(&self, d: &Workload) -> Result<Option<BTreeSet<String>>> {
        if !self.per_container() {
            return Ok(None);
        }
        let source = self.status.source_image.as_ref();
        Ok(Some(
            self.status
                .containers
                .iter()
                .filter(|c| c.source_image.as_ref() == source)
                .map(|c| c.name.clone())
                .chain(std::iter::once(self.container(d)?.name.clone()))
                .collect(),
        ))
    }

    /// With `target.containers`: hardens each source image other than the first container's,
    /// from the reports of the containers that run it, to its own repository; returns what
    /// each harden achieved. (SBOM, vulnerabilities and signing are the first image's alone:
    /// the schema refuses them with `target.containers`.)
    async fn more_hardened(&mut self, d: &Workload, store: &Store) -> Result<Vec<String>> {
        let first = self.status.source_image.clone();
        let mut groups: Vec<(String, BTreeSet<String>)> = Vec::new();
        for c in self
            .status
            .containers
            .iter()
            .filter(|c| c.source_image != first)
        {
            let source = c.source_image.clone().unwrap_or_default();
            match groups.iter_mut().find(|(s, _)| *s == source) {
                Some((_, names)) => {
                    names.insert(c.name.clone());
                }
                None => groups.push((source, BTreeSet::from([c.name.clone()]))),
            }
        }
        let mut said = Vec::new();
        for (source, names) in groups {
            // The destinations derive from the container's image as the Workload names it
            // (restored by now): `<tag>-whittle-hardened` in its repository.
            let reference = self
                .containers(d)?
                .into_iter()
                .find(|c| names.contains(&c.name))
                .and_then(|c| c.image.clone())
                .unwrap_or_else(|| source.clone());
            let dest = engine::destinations(self.workflow, &reference)?;
            let profile = self.profile(Some(&names)).await?;
            let summary = self.harden(store, &source, &dest, profile.clone()).await?;
            if let Some(merged) = profile.first() {
                evidence::profile::attach(store, &summary, merged)
                    .await
                    .map_err(Box::new)?;
            }
            self.record_containers(&names, &summary);
            let result = harden_result(&summary);
            said.push(format!(
                "hardened image {} for {}: {}% smaller",
                summary.hardened_image,
                names.iter().cloned().collect::<Vec<_>>().join(", "),
                result.reduction_percent
            ));
        }
        Ok(said)
    }

    /// The hardened image and result of each of `names` in `status.containers`.
    fn record_containers(&mut self, names: &BTreeSet<String>, summary: &Summary) {
        for c in self
            .status
            .containers
            .iter_mut()
            .filter(|c| names.contains(&c.name))
        {
            c.hardened_image = Some(summary.hardened_image.clone());
            c.result = Some(harden_result(summary));
        }
    }

    /// The stored reports (of `containers`, when given) folded into one profile; which
    /// reports (the materials) and which sensor modes went into it is recorded in status.
    async fn profile(&mut self, containers: Option<&BTreeSet<String>>) -> Result<Vec<Report>> {
        let folded = reports::fold(&self.ctx.client, self.workflow, containers).await?;
        let materials = folded
            .materials
            .iter()
            .map(|(name, sha256)| ReportMaterial {
                name: name.clone(),
                sha256: sha256.clone(),
            });
        let status = self.status.reports.get_or_insert_with(Default::default);
        let mut modes: BTreeSet<String> = status.modes.drain(..).collect();
        modes.extend(folded.modes);
        status.modes = modes.into_iter().collect();
        status.materials.extend(materials);
        Ok(folded.profile.into_iter().collect())
    }

    /// The harden itself, within what is left of `harden.timeout`.
    async fn harden(
        &self,
        store: &Store,
        source: &str,
        dest: &engine::Destinations,
        profile: Vec<Report>,
    ) -> Result<Summary> {
        let left =
            phase::remaining(self.since_phase_start(), self.harden_limit()).unwrap_or_default();
        let started = Instant::now();
        let summary = tokio::time::timeout(
            left,
            engine::harden(store, source, dest, profile, self.workflow),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: format!("hardening {source}"),
            limit: self.workflow.spec.harden.timeout.as_str().to_string(),
        })??;
        let metrics = &self.ctx.metrics;
        metrics
            .harden_duration
            .observe(started.elapsed().as_secs_f64());
        metrics
            .saved_bytes
            .inc_by(summary.source_bytes.saturating_sub(summary.hardened_bytes));
        Ok(summary)
    }

    /// The hardened image's SBOM (attached when `harden.sbom`) and vulnerability counts
    /// (when `vulnerabilities.db` names a database); fails the run when what the image keeps
    /// trips `vulnerabilities.failOn`.
    async fn describe(&mut self, store: &Store, summary: &Summary) -> Result<()> {
        let vuln_db = match &self.workflow.spec.vulnerabilities.db {
            Some(db) => Some(self.ctx.vuln_dbs.get(db).await?),
            None => None,
        };
        let matched_database = (self.workflow.spec.vulnerabilities.db.as_ref())
            .zip(vuln_db.as_ref())
            .map(|(name, db)| database_version(name, db));
        let options = EvidenceOptions {
            sbom_dir: None,
            attach_sbom: self.workflow.spec.harden.sbom,
            vuln_db,
            sign_key: None,
            // The gate runs below, on what describe counted.
            gate: None,
        };
        let evidence = produce::describe(store, summary, &options).await?;
        self.status.sbom = evidence.sbom.map(|a| a.reference);
        self.status.vulnerabilities = evidence.vulnerabilities.as_ref().map(|v| {
            // What continuous checks compare with, so that they do not match this again.
            VulnerabilitiesStatus {
                matched_at: Some(self.now.clone()),
                matched_image: Some(summary.hardened_image.clone()),
                matched_database: matched_database.clone(),
                ..vulnerabilities(v)
            }
        });
        // The post-scan gate: what it refuses is never verified, signed or promoted (a
        // continuous run's failure puts the last good result back).
        if let (Some(fail_on), Some(found)) = (
            &self.workflow.spec.vulnerabilities.fail_on,
            &evidence.vulnerabilities,
        ) {
            let gate = gate(fail_on);
            let blocking = gate.blocking(&found.remaining);
            if !blocking.is_empty() {
                return Err(Error::Failed {
                    reason: Reason::VulnerabilityGate,
                    message: format!(
                        "{}; it is not signed or promoted",
                        refusal(&summary.hardened_image, FAIL_ON, &gate, &blocking)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The result in status, sealed so that signing can tell it was not edited; the message
    /// says what the harden achieved.
    fn record(&mut self, source: &str, summary: &Summary) -> String {
        let result = harden_result(summary);
        let message = format!(
            "hardened image {}: {} bytes instead of {} ({}% smaller), {} files kept, {} removed",
            summary.hardened_image,
            result.hardened_bytes,
            result.source_bytes,
            result.reduction_percent,
            result.files_kept,
            result.files_removed
        );
        let packs: Vec<String> = summary
            .packs
            .iter()
            .map(|p| format!("{} {}", p.name, p.line()))
            .collect();
        let message = if packs.is_empty() {
            message
        } else {
            format!("{message}; packs: {}", packs.join("; "))
        };
        self.status.hardened_image = Some(summary.hardened_image.clone());
        let seal = self
            .ctx
            .report_key
            .seal(&self.sealed(source, &summary.hardened_image));
        self.status.seal = Some(seal);
        self.status.result = Some(result);
        self.condition(ConditionType::Hardened, true, Reason::Pushed, &message);
        message
    }
}

/// `status.result` from what the image engine reports.
fn harden_result(summary: &Summary) -> HardenResult {
    let count = |v: &Vec<String>| v.len() as u64;
    HardenResult {
        source_bytes: summary.source_bytes,
        hardened_bytes: summary.hardened_bytes,
        reduction_percent: reduction_percent(summary.source_bytes, summary.hardened_bytes),
        files_kept: summary.files_kept,
        files_removed: summary.files_removed,
        removed_shells: count(&summary.removed_shells),
        removed_package_managers: count(&summary.removed_package_managers),
        removed_setuid: count(&summary.removed_setuid),
        packs: summary
            .packs
            .iter()
            .map(|p| PackResult {
                name: p.name.clone(),
                found: p.found,
                files: p.files,
                bytes: p.bytes,
            })
            .collect(),
    }
}

/// A database as `status.vulnerabilities.matchedDatabase` names it: `debian@5d41402abc4b2a76`.
pub(super) fn database_version(name: &str, db: &VulnDb) -> String {
    format!("{name}@{}", db.version())
}

fn counts(c: &Counts) -> SeverityCounts {
    SeverityCounts {
        total: c.total as u64,
        critical: c.critical as u64,
        high: c.high as u64,
        medium: c.medium as u64,
        low: c.low as u64,
        unknown: c.unknown as u64,
    }
}

/// `status.vulnerabilities` from what the vulnerability match found.
fn vulnerabilities(v: &VulnSummary) -> VulnerabilitiesStatus {
    let (after, fixable, kept) = keeps(&v.remaining);
    VulnerabilitiesStatus {
        before: counts(&v.before),
        after,
        removed: v.removed.len() as u64,
        fixable,
        kept,
        ..Default::default()
    }
}

/// What a hardened image keeps, for `status.vulnerabilities`: `after` and `fixable` counted,
/// and the worst listed in `kept`.
pub(super) fn keeps(
    remaining: &[Finding],
) -> (SeverityCounts, SeverityCounts, Vec<KeptVulnerability>) {
    let fixable: Vec<Finding> = remaining
        .iter()
        .filter(|f| f.fixed.is_some())
        .cloned()
        .collect();
    let kept = worst_first(remaining)
        .into_iter()
        .take(KEPT_LIST_LIMIT)
        .map(|f| KeptVulnerability {
            id: f.id.clone(),
            package: f.package.clone(),
            version: f.version.clone(),
            fixed_version: f.fixed.clone(),
            severity: severity(f.severity),
        })
        .collect();
    (
        counts(&Counts::of(remaining)),
        counts(&Counts::of(&fixable)),
        kept,
    )
}

pub(super) fn severity(s: Severity) -> VulnerabilitySeverity {
    match s {
        Severity::Critical => VulnerabilitySeverity::Critical,
        Severity::High => VulnerabilitySeverity::High,
        Severity::Medium => VulnerabilitySeverity::Medium,
        Severity::Low => VulnerabilitySeverity::Low,
        Severity::Unknown => VulnerabilitySeverity::Unknown,
    }
}

const FAIL_ON: &str = "spec.vulnerabilities.failOn";

/// The evidence's gate for `spec.vulnerabilities.failOn`.
pub(super) fn gate(fail_on: &FailOn) -> Gate {
    let severity = match fail_on.severity {
        GateSeverity::Critical => Severity::Critical,
        GateSeverity::High => Severity::High,
        GateSeverity::Medium => Severity::Medium,
        GateSeverity::Low => Severity::Low,
    };
    Gate {
        severity,
        fixable: fail_on.fixable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::analysis::packs::PackSummary;

    fn finding(id: &str, severity: Severity, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: Vec::new(),
            package: "libc6".into(),
            source: "glibc".into(),
            version: "2.36-9".into(),
            severity,
            fixed: fixed.map(Into::into),
            summary: None,
        }
    }

    #[test]
    fn the_result_in_status_carries_each_packs_cost() {
        let summary = Summary {
            source_image: "r/s@sha256:aa".into(),
            hardened_image: "r/h@sha256:bb".into(),
            hardened_manifest_size: 1,
            pushed: "r/h:t@sha256:bb".into(),
            source_bytes: 1000,
            hardened_bytes: 100,
            files_kept: 2,
            files_removed: 3,
            added_by_analysis: 0,
            report_paths_not_in_image: 0,
            removed_shells: Vec::new(),
            removed_package_managers: Vec::new(),
            removed_setuid: Vec::new(),
            passes: 1,
            reports: 1,
            packages: Default::default(),
            packs: vec![
                PackSummary {
                    name: "ca-certificates".into(),
                    found: 435,
                    files: 435,
                    bytes: 610_000,
                },
                PackSummary {
                    name: "tzdata".into(),
                    found: 0,
                    files: 0,
                    bytes: 0,
                },
            ],
        };
        let result = harden_result(&summary);
        let yaml = serde_json::to_value(&result).unwrap();
        assert_eq!(
            yaml["packs"],
            serde_json::json!([
                {"name": "ca-certificates", "found": 435, "files": 435, "bytes": 610000},
                {"name": "tzdata", "found": 0, "files": 0, "bytes": 0},
            ])
        );
        let none = harden_result(&Summary {
            packs: Vec::new(),
            ..summary
        });
        assert!(
            serde_json::to_value(&none).unwrap().get("packs").is_none(),
            "no packs asked for, no field"
        );
    }

    #[test]
    fn the_status_counts_the_kept_and_the_fixable_and_lists_the_worst_twenty() {
        let mut remaining = vec![
            finding("LOW-FIX", Severity::Low, Some("2.36-10")),
            finding("CRIT", Severity::Critical, None),
            finding("HIGH-FIX", Severity::High, Some("2.36-9+deb12u3")),
            finding("HIGH", Severity::High, None),
            finding("UNRATED-FIX", Severity::Unknown, Some("2.36-11")),
        ];
        for n in 0..30 {
            remaining.push(finding(&format!("MED-{n:02}"), Severity::Medium, None));
        }
        let summary = VulnSummary {
            before: Counts::of(&remaining),
            after: Counts::of(&remaining),
            removed: Vec::new(),
            remaining,
        };
        let status = vulnerabilities(&summary);
        assert_eq!(
            (status.after.total, status.after.high, status.after.medium),
            (35, 2, 30)
        );
        assert_eq!(
            status.fixable,
            SeverityCounts {
                total: 3,
                critical: 0,
                high: 1,
                medium: 0,
                low: 1,
                unknown: 1,
            }
        );
        assert_eq!(status.kept.len(), KEPT_LIST_LIMIT);
        let ids: Vec<&str> = status.kept.iter().take(4).map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["CRIT", "HIGH-FIX", "HIGH", "MED-00"]);
        assert_eq!(
            status.kept[1],
            KeptVulnerability {
                id: "HIGH-FIX".into(),
                package: "libc6".into(),
                version: "2.36-9".into(),
                fixed_version: Some("2.36-9+deb12u3".into()),
                severity: VulnerabilitySeverity::High,
            }
        );
        // The low and unrated ones fall past the limit: the counts still have them.
        assert!(status.kept.iter().all(|k| k.id != "LOW-FIX"));
    }
}
