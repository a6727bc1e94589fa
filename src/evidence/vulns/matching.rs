//! Which records affect an inventory's packages: a package is matched by its source name and
//! source version in the ecosystem its image's os-release names, with OSV's range rules.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use super::database::{Affected, Event, VulnDb};
use super::severity::Severity;
use super::versions::{AlpineScheme, DebianScheme, Scheme};
use crate::image::packages::{Inventory, Manager, OsRelease, Package};

/// One vulnerability of one installed (binary) package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The OSV id: `DSA-5514-1`, `DEBIAN-CVE-2023-4911`, `ALPINE-CVE-2025-26519`.
    pub id: String,
    /// The record's `aliases` and `upstream` ids (distribution records name their CVEs in
    /// `upstream`), in record order, without repeats.
    pub aliases: Vec<String>,
    /// The binary package: `libc6`.
    pub package: String,
    /// The source package the advisory is filed against: `glibc`.
    pub source: String,
    /// The installed version of the binary package (matching used the source version).
    pub version: String,
    pub severity: Severity,
    /// The source version that fixes it in this ecosystem, when the record names one.
    pub fixed: Option<String>,
    pub summary: Option<String>,
}

/// The distributions whose OSV ecosystems we can match, and the package manager each uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Distro {
    Debian,
    Alpine,
}

impl Distro {
    fn manager(self) -> Manager {
        match self {
            Distro::Debian => Manager::Dpkg,
            Distro::Alpine => Manager::Apk,
        }
    }
}

fn distro_ecosystem(os: &OsRelease) -> Option<(Distro, String)> {
    let version = os.version_id.as_deref()?.trim();
    match os.id.as_str() {
        "debian" => {
            // Debian's releases are named by their major number; testing and sid have none.
            let major = version.split('.').next()?;
            (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (Distro::Debian, format!("Debian:{major}")))
        }
        "alpine" => {
            // Point releases share their branch's ecosystem; edge (`3.21_alpha…`) has none.
            let mut parts = version.split('.');
            let major = parts.next()?;
            let minor = parts.next()?;
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (numeric(major) && numeric(minor) && parts.all(numeric))
                .then(|| (Distro::Alpine, format!("Alpine:v{major}.{minor}")))
        }
        _ => None,
    }
}

/// The OSV ecosystem an image's packages are filed under: `Debian:12`, `Alpine:v3.20`; `None`
/// for a distribution (or a release, such as Debian sid) that OSV has no ecosystem for.
pub fn osv_ecosystem(os: &OsRelease) -> Option<String> {
    distro_ecosystem(os).map(|(_, ecosystem)| ecosystem)
}

/// The vulnerabilities of an inventory's packages, one finding per (vulnerability, binary
/// package), sorted by severity, then id, then package.
pub fn scan(db: &VulnDb, inv: &Inventory) -> Vec<Finding> {
    scan_packages(db, inv)
        .into_iter()
        .map(|(finding, _)| finding)
        .collect()
}

pub(super) fn scan_packages(db: &VulnDb, inv: &Inventory) -> Vec<(Finding, Manager)> {
    let Some(os) = inv.os.as_ref() else {
        if !inv.packages.is_empty() {
            tracing::warn!("no os-release in the image: its packages cannot be matched to OSV");
        }
        return Vec::new();
    };
    let Some((distro, ecosystem)) = distro_ecosystem(os) else {
        tracing::warn!(
            id = %os.id,
            version = ?os.version_id,
            "OSV has no ecosystem for this distribution release: its packages are not matched"
        );
        return Vec::new();
    };
    let Some(by_name) = db.affected.get(&ecosystem) else {
        return Vec::new();
    };
    let mut found: BTreeMap<(String, String), (Finding, Manager)> = BTreeMap::new();
    for package in inv
        .packages
        .iter()
        .filter(|p| p.manager == distro.manager())
    {
        let Some(entries) = by_name.get(&package.source) else {
            continue;
        };
        let matches = match distro {
            Distro::Debian => package_matches::<DebianScheme>(db, package, entries),
            Distro::Alpine => package_matches::<AlpineScheme>(db, package, entries),
        };
        for (entry, fixed) in matches {
            let record = &db.records[entry.record];
            let key = (record.id.clone(), package.name.clone());
            let finding = Finding {
                id: record.id.clone(),
                aliases: record.aliases.clone(),
                package: package.name.clone(),
                source: package.source.clone(),
                version: package.version.clone(),
                severity: entry.severity,
                fixed,
                summary: record.summary.clone(),
            };
            // Two entries of one record for one package (or two architectures of it): keep the
            // worse severity and any fix either names.
            found
                .entry(key)
                .and_modify(|(kept, _)| {
                    kept.severity = kept.severity.min(finding.severity);
                    if kept.fixed.is_none() {
                        kept.fixed = finding.fixed.clone();
                    }
                })
                .or_insert_with(|| (finding, package.manager));
        }
    }
    let mut findings: Vec<(Finding, Manager)> = found.into_values().collect();
    findings.sort_by(|(a, _), (b, _)| {
        (a.severity, &a.id, &a.package, &a.version)
            .cmp(&(b.severity, &b.id, &b.package, &b.version))
    });
    findings
}

/// The entries that affect the package's source version, each with the fix it names.
fn package_matches<'db, S: Scheme>(
    db: &VulnDb,
    package: &Package,
    entries: &'db [Affected],
) -> Vec<(&'db Affected, Option<String>)> {
    let installed = match S::parse(&package.source_version) {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(
                package = %package.name,
                version = %package.source_version,
                "unparsable package version: only exact listed versions can match it: {err}"
            );
            None
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        match entry_affects::<S>(entry, installed.as_ref(), &package.source_version) {
            Ok(Some(fixed)) => out.push((entry, fixed)),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                record = %db.records[entry.record].id,
                package = %package.source,
                "record skipped for this package, its versions do not parse: {err}"
            ),
        }
    }
    out
}

/// `Ok(Some(fixed))` when the entry affects the installed version, `Ok(None)` when it does not,
/// `Err` when one of its versions does not parse in the ecosystem's scheme.
fn entry_affects<S: Scheme>(
    entry: &Affected,
    installed: Option<&S::Version>,
    installed_text: &str,
) -> Result<Option<Option<String>>, String> {
    // Parse every event first: a record with a version we cannot order is skipped whole, rather
    // than half-read.
    let mut ranges = Vec::with_capacity(entry.ranges.len());
    for events in &entry.ranges {
        let mut parsed = Vec::with_capacity(events.len());
        for event in events {
            // "introduced: 0" is OSV's "since the first version", whatever the scheme.
            let version = match event {
                Event::Introduced(v) if v == "0" => None,
                _ => Some(S::parse(event.version())?),
            };
            parsed.push((version, event));
        }
        ranges.push(parsed);
    }
    let listed = entry.versions.iter().any(|v| v == installed_text);
    let Some(installed) = installed else {
        return Ok(listed.then_some(None));
    };
    let mut in_range = None;
    for parsed in &mut ranges {
        if let Some(fixed) = range_affects(installed, parsed) {
            in_range = Some(fixed);
            break;
        }
    }
    Ok(match in_range {
        Some(fixed) => Some(fixed),
        None if listed => Some(next_fix(installed, &ranges)),
        None => None,
    })
}

type ParsedEvent<'a, V> = (Option<V>, &'a Event);

/// OSV's evaluation of one range: events in version order, an introduced at or below the
/// version opens it, a fix at or below (or a last_affected below) closes it; a limit bounds the
/// whole range. `Some(fix)` when affected, with the fix that ends the interval the version is in.
fn range_affects<V: Ord>(
    installed: &V,
    events: &mut [ParsedEvent<'_, V>],
) -> Option<Option<String>> {
    let below_limit = events.iter().all(|(v, e)| match (e, v) {
        (Event::Limit(_), Some(limit)) => installed < limit,
        _ => true,
    });
    if !below_limit {
        return None;
    }
    // None ("0") sorts first; a stable sort keeps the record's order among equal versions.
    events.sort_by(|(a, _), (b, _)| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.cmp(b),
    });
    let mut affected = false;
    for (version, event) in events.iter() {
        let at_or_below = version.as_ref().is_none_or(|v| v <= installed);
        if !at_or_below {
            // Every later event is above the version too: the state is final. The next event
            // is the fix for this interval when it is one.
            return affected.then(|| match event {
                Event::Fixed(v) => Some(v.clone()),
                _ => None,
            });
        }
        match event {
            Event::Introduced(_) => affected = true,
            Event::Fixed(_) => affected = false,
            Event::LastAffected(_) => {
                if version.as_ref().is_some_and(|v| v < installed) {
                    affected = false;
                }
            }
            Event::Limit(_) => {}
        }
    }
    affected.then_some(None)
}

/// For a version the record lists as affected: the lowest fix above it any range names.
fn next_fix<V: Ord>(installed: &V, ranges: &[Vec<ParsedEvent<'_, V>>]) -> Option<String> {
    ranges
        .iter()
        .flatten()
        .filter_map(|(version, event)| match (event, version) {
            (Event::Fixed(text), Some(v)) if v > installed => Some((v, text)),
            _ => None,
        })
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, text)| text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::vulns::testing::{
        alpine, apk, db_of, deb, deb12, fixture, hit, hits, inventory, os, stretch,
    };

    #[test]
    fn ecosystem_names_come_from_os_release() {
        assert_eq!(
            osv_ecosystem(&os("debian", Some("12"))).as_deref(),
            Some("Debian:12")
        );
        assert_eq!(
            osv_ecosystem(&os("alpine", Some("3.20.3"))).as_deref(),
            Some("Alpine:v3.20")
        );
        assert_eq!(
            osv_ecosystem(&os("alpine", Some("3.21"))).as_deref(),
            Some("Alpine:v3.21")
        );
        // Debian sid and Alpine edge have no OSV ecosystem; nor has a distribution we do not match.
        assert_eq!(osv_ecosystem(&os("debian", None)), None);
        assert_eq!(
            osv_ecosystem(&os("alpine", Some("3.21_alpha20240807"))),
            None
        );
        assert_eq!(osv_ecosystem(&os("ubuntu", Some("24.04"))), None);
    }

    #[test]
    fn ranges_introduced_fixed_last_affected_and_limit() {
        let db = db_of(&[
            &deb12(
                "WINDOW",
                "window",
                r#"{"introduced": "1.0-1"}, {"fixed": "1.5-1"}"#,
                "",
            ),
            &deb12(
                "LAST",
                "last",
                r#"{"introduced": "0"}, {"last_affected": "2.0-1"}"#,
                "",
            ),
            // Two intervals, listed out of order: OSV sorts events by version.
            &deb12(
                "TWICE",
                "twice",
                r#"{"introduced": "2.0-1"}, {"fixed": "3.0-1"}, {"introduced": "0"}, {"fixed": "1.0-1"}"#,
                "",
            ),
            &deb12("NOFIX", "nofix", r#"{"introduced": "0"}"#, ""),
            &deb12(
                "LIMIT",
                "limit",
                r#"{"introduced": "0"}, {"limit": "5.0-1"}"#,
                "",
            ),
        ]);
        assert!(hits(&db, "window", "0.9-1").is_empty());
        assert_eq!(hits(&db, "window", "1.0-1"), hit("WINDOW", Some("1.5-1")));
        assert_eq!(hits(&db, "window", "1.4-9"), hit("WINDOW", Some("1.5-1")));
        assert!(hits(&db, "window", "1.5-1").is_empty());

        assert_eq!(hits(&db, "last", "2.0-1"), hit("LAST", None));
        assert!(hits(&db, "last", "2.0-2").is_empty());

        assert_eq!(hits(&db, "twice", "0.5-1"), hit("TWICE", Some("1.0-1")));
        assert!(hits(&db, "twice", "1.5-1").is_empty());
        assert_eq!(hits(&db, "twice", "2.5-1"), hit("TWICE", Some("3.0-1")));
        assert!(hits(&db, "twice", "3.0-1").is_empty());

        // No fix yet: every version, however new, is affected.
        assert_eq!(hits(&db, "nofix", "99:9.9-9"), hit("NOFIX", None));

        assert_eq!(hits(&db, "limit", "4.9-1"), hit("LIMIT", None));
        assert!(hits(&db, "limit", "5.0-1").is_empty());
    }

    #[test]
    fn versions_lists_match_exact_versions() {
        let db = db_of(&[
            &deb12("LISTED", "listed", "", r#""1.2-3", "1.2-4""#),
            // Listed but outside the range: the list still says affected, and the range's fix
            // above the version is the one to report.
            &deb12(
                "BOTH",
                "both",
                r#"{"introduced": "1.2-4"}, {"fixed": "1.2-5"}"#,
                r#""1.2-3""#,
            ),
        ]);
        assert_eq!(hits(&db, "listed", "1.2-3"), hit("LISTED", None));
        assert_eq!(hits(&db, "listed", "1.2-4"), hit("LISTED", None));
        assert!(hits(&db, "listed", "1.2-5").is_empty());
        assert_eq!(hits(&db, "both", "1.2-3"), hit("BOTH", Some("1.2-5")));
        assert!(hits(&db, "both", "1.2-5").is_empty());
    }

    #[test]
    fn unparsable_versions_skip_the_record_for_that_package_only() {
        let db = db_of(&[
            &deb12(
                "BROKEN",
                "pkg",
                r#"{"introduced": "0"}, {"fixed": "1.0 beta"}"#,
                "",
            ),
            &deb12(
                "GOOD",
                "pkg",
                r#"{"introduced": "0"}, {"fixed": "2.0-1"}"#,
                "",
            ),
        ]);
        assert_eq!(hits(&db, "pkg", "1.5-1"), hit("GOOD", Some("2.0-1")));
        // An installed version that does not parse still matches a record listing it exactly.
        let listed = db_of(&[&deb12("EXACT", "odd", "", r#""weird version""#)]);
        assert_eq!(hits(&listed, "odd", "weird version"), hit("EXACT", None));
        assert!(hits(&db, "pkg", "weird version").is_empty());
    }

    #[test]
    fn real_debian_records_match_by_release_and_source_package() {
        let db = VulnDb::load(&fixture()).unwrap();
        assert_eq!((db.len(), db.withdrawn()), (5, 0));
        let findings = scan(&db, &stretch());
        let got: Vec<(&str, &str, Option<&str>)> = findings
            .iter()
            .map(|f| (f.id.as_str(), f.package.as_str(), f.fixed.as_deref()))
            .collect();
        // openssl is affected through both of its binaries; dpkg too; tzdata is at the fix; the
        // nginx advisory is for wheezy and says nothing about stretch.
        assert_eq!(
            got,
            vec![
                ("DLA-3008-1", "libssl1.1", Some("1.1.0l-1~deb9u6")),
                ("DLA-3008-1", "openssl", Some("1.1.0l-1~deb9u6")),
                ("DLA-3022-1", "dpkg", Some("1.18.26")),
            ]
        );
        let openssl = &findings[1];
        assert_eq!(openssl.aliases, ["CVE-2022-1292", "DEBIAN-CVE-2022-1292"]);
        assert_eq!(openssl.source, "openssl");
        assert_eq!(openssl.version, "1.1.0l-1~deb9u5");
        assert_eq!(
            openssl.summary.as_deref(),
            Some("openssl - security update")
        );
        // DLAs carry no CVSS and no urgency.
        assert_eq!(openssl.severity, Severity::Unknown);

        // The same sources in bookworm, as the test bed's nginx image has them: these records
        // are all for older releases, so none applies.
        let bookworm = inventory(
            os("debian", Some("12")),
            vec![
                deb("dpkg", "1.21.22", "dpkg", "1.21.22"),
                deb("libssl3", "3.0.15-1~deb12u1", "openssl", "3.0.15-1~deb12u1"),
                deb("nginx-light", "1.22.1-9", "nginx", "1.22.1-9"),
                deb("tzdata", "2024a-0+deb12u1", "tzdata", "2024a-0+deb12u1"),
            ],
        );
        assert!(scan(&db, &bookworm).is_empty());

        // And the nginx advisory in its own release.
        let wheezy = |version: &str| {
            inventory(
                os("debian", Some("7")),
                vec![deb("nginx-light", version, "nginx", version)],
            )
        };
        let nginx = scan(&db, &wheezy("1.2.1-2.2+wheezy2"));
        assert_eq!(nginx.len(), 1);
        assert_eq!(nginx[0].id, "DSA-3029-1");
        assert_eq!(nginx[0].aliases, ["CVE-2014-3616"]);
        assert_eq!(nginx[0].fixed.as_deref(), Some("1.2.1-2.2+wheezy3"));
        assert!(scan(&db, &wheezy("1.2.1-2.2+wheezy3")).is_empty());
    }

    #[test]
    fn a_real_alpine_record_matches_the_origin_with_apk_ordering() {
        let db = VulnDb::load(&fixture().join("alpine")).unwrap();
        let findings = scan(&db, &alpine());
        let got: Vec<(&str, &str, Option<&str>, Severity)> = findings
            .iter()
            .map(|f| {
                (
                    f.id.as_str(),
                    f.package.as_str(),
                    f.fixed.as_deref(),
                    f.severity,
                )
            })
            .collect();
        // CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:H/A:H scores 7.0.
        assert_eq!(
            got,
            vec![
                (
                    "ALPINE-CVE-2025-26519",
                    "musl",
                    Some("1.2.5-r1"),
                    Severity::High
                ),
                (
                    "ALPINE-CVE-2025-26519",
                    "musl-utils",
                    Some("1.2.5-r1"),
                    Severity::High
                ),
            ]
        );
        assert_eq!(findings[0].aliases, ["CVE-2025-26519"]);
        let at = |version_id: &str, version: &str| {
            scan(
                &db,
                &inventory(
                    os("alpine", Some(version_id)),
                    vec![apk("musl", version, "musl")],
                ),
            )
        };
        assert!(at("3.20.3", "1.2.5-r1").is_empty());
        // The 3.19 fix is a git snapshot: `_git` sorts after the release and before `-r5`.
        assert_eq!(
            at("3.19.1", "1.2.4_git20230717-r4")[0].fixed.as_deref(),
            Some("1.2.4_git20230717-r5")
        );
        assert!(at("3.19.1", "1.2.4_git20230717-r5").is_empty());
        assert!(at("3.19.1", "1.2.4-r3").len() == 1);
        // introduced 0.9.13: older musl is not affected; 3.15 is not in the record.
        assert!(at("3.20.0", "0.9.12-r0").is_empty());
        assert!(at("3.15.0", "1.2.2-r7").is_empty());
    }

    #[test]
    fn one_finding_per_vulnerability_and_binary_package_sorted() {
        // Two entries of one record for one source, and a binary built twice (two arches).
        let twice = r#"{"id": "DUP", "affected": [
            {"package": {"ecosystem": "Debian:12", "name": "glibc"}, "versions": ["2.36-9"]},
            {"package": {"ecosystem": "Debian:12", "name": "glibc"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u3"}]}]}]}"#;
        let db = db_of(&[twice, &deb12("AAA", "glibc", r#"{"introduced": "0"}"#, "")]);
        let mut i386 = deb("libc6", "2.36-9", "glibc", "2.36-9");
        i386.arch = Some("i386".into());
        let inv = inventory(
            os("debian", Some("12")),
            vec![
                deb("libc-bin", "2.36-9", "glibc", "2.36-9"),
                deb("libc6", "2.36-9", "glibc", "2.36-9"),
                i386,
            ],
        );
        let got: Vec<(String, String, Option<String>)> = scan(&db, &inv)
            .into_iter()
            .map(|f| (f.id, f.package, f.fixed))
            .collect();
        let fix = Some("2.36-9+deb12u3".to_string());
        assert_eq!(
            got,
            vec![
                ("AAA".into(), "libc-bin".into(), None),
                ("AAA".into(), "libc6".into(), None),
                ("DUP".into(), "libc-bin".into(), fix.clone()),
                ("DUP".into(), "libc6".into(), fix),
            ]
        );
    }
}
