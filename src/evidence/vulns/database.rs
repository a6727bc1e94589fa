//! An OSV database held in memory, indexed by ecosystem and package, and loaded from a
//! directory of records or one record (a zip: `archive.rs`).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::budget::{LoadLimits, MemoryBudget};
use super::osv::{RawEvent, RawRecord};
use super::severity::{Severity, cvss_severity, named_field};

/// Why an OSV database could not be loaded. Each names the database and, for a bad record, the
/// file or zip entry, so the user can fix or drop it.
#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("vulnerability database {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vulnerability database {}: not a zip of OSV records: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("vulnerability database {}: {} is not an OSV record: {source}", db.display(), file.display())]
    Record {
        db: PathBuf,
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("vulnerability database {}: entry {entry} is not an OSV record: {source}", db.display())]
    ZipRecord {
        db: PathBuf,
        entry: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("vulnerability database {}: entry {entry} cannot be read: {source}", db.display())]
    ZipEntry {
        db: PathBuf,
        entry: String,
        #[source]
        source: std::io::Error,
    },
    /// A zip bomb, or a record far larger than any OSV record: refused before it is inflated
    /// (or read) past the limit.
    #[error("vulnerability database {}: {entry} is larger than {limit} bytes once inflated, more than any OSV record; not loaded", db.display())]
    EntryTooLarge {
        db: PathBuf,
        entry: String,
        limit: u64,
    },
    /// The records loaded so far, with the other databases held at the same time, would take
    /// more memory than the budget.
    #[error("vulnerability database {}: its records do not fit in the memory budget for vulnerability databases, {limit} bytes ({used} held by others); not loaded", db.display())]
    OverBudget { db: PathBuf, limit: u64, used: u64 },
}

impl VulnDbError {
    /// The same error, saying `shown` where it said `path`: a downloaded database's temporary
    /// file means nothing to the user, its URL does.
    pub fn showing(self, path: &Path, shown: &str) -> VulnDbError {
        let swap = |p: PathBuf| if p == path { PathBuf::from(shown) } else { p };
        match self {
            VulnDbError::Io { path, source } => VulnDbError::Io {
                path: swap(path),
                source,
            },
            VulnDbError::Zip { path, source } => VulnDbError::Zip {
                path: swap(path),
                source,
            },
            VulnDbError::Record { db, file, source } => VulnDbError::Record {
                db: swap(db),
                file: swap(file),
                source,
            },
            VulnDbError::ZipRecord { db, entry, source } => VulnDbError::ZipRecord {
                db: swap(db),
                entry,
                source,
            },
            VulnDbError::ZipEntry { db, entry, source } => VulnDbError::ZipEntry {
                db: swap(db),
                entry,
                source,
            },
            VulnDbError::EntryTooLarge { db, entry, limit } => VulnDbError::EntryTooLarge {
                db: swap(db),
                entry,
                limit,
            },
            VulnDbError::OverBudget { db, limit, used } => VulnDbError::OverBudget {
                db: swap(db),
                limit,
                used,
            },
        }
    }
}

/// An OSV database held in memory, indexed by ecosystem and package.
#[derive(Debug, Default)]
pub struct VulnDb {
    pub(super) records: Vec<Record>,
    /// ecosystem -> package name -> what the records say about it.
    pub(super) affected: HashMap<String, HashMap<String, Vec<Affected>>>,
    withdrawn: usize,
    /// About how much memory the records take (see [`record_bytes`]).
    pub(super) bytes: u64,
    /// Where `bytes` was charged, to be given back on drop.
    pub(super) budget: Option<Arc<MemoryBudget>>,
    /// The records' contents summed up, whatever their order (see [`VulnDb::version`]).
    fingerprint: u64,
}

impl Drop for VulnDb {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.bytes);
        }
    }
}

#[derive(Debug)]
pub(super) struct Record {
    pub(super) id: String,
    pub(super) aliases: Vec<String>,
    pub(super) summary: Option<String>,
}

/// One `affected[]` entry, reduced to what matching needs.
#[derive(Debug)]
pub(super) struct Affected {
    pub(super) record: usize,
    /// The `ECOSYSTEM` ranges' events; other range types (GIT, SEMVER) do not apply to OS packages.
    pub(super) ranges: Vec<Vec<Event>>,
    pub(super) versions: Vec<String>,
    pub(super) severity: Severity,
}

#[derive(Debug, Clone)]
pub(super) enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    pub(super) fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

impl VulnDb {
    /// Loads a directory of OSV records (`*.json`, recursively), a `.zip` of them, or one record,
    /// within the default [`LoadLimits`] and no memory budget.
    pub fn load(path: &Path) -> Result<VulnDb, VulnDbError> {
        VulnDb::load_within(path, &LoadLimits::default())
    }

    /// Loads a directory of OSV records (`*.json`, recursively), a `.zip` of them, or one record.
    /// Withdrawn records are skipped; a record that is not OSV JSON fails the load, naming it,
    /// and so does one over `limits`.
    pub fn load_within(path: &Path, limits: &LoadLimits) -> Result<VulnDb, VulnDbError> {
        let io = |source| VulnDbError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mut db = VulnDb::default();
        db.budget = limits.budget.clone();
        let mut bytes = Vec::new();
        if meta.is_dir() {
            let mut files = Vec::new();
            json_files(path, &mut files).map_err(io)?;
            // Sorted, so that an error names the same file on every run.
            files.sort();
            for file in files {
                read_file(path, &file, limits.entry_bytes, &mut bytes)?;
                db.fingerprint(&bytes);
                let raw = serde_json::from_slice(&bytes).map_err(|source| VulnDbError::Record {
                    db: path.to_path_buf(),
                    file: file.clone(),
                    source,
                })?;
                db.add(raw, path)?;
            }
        } else if is_json(path) {
            read_file(path, path, limits.entry_bytes, &mut bytes)?;
            db.fingerprint(&bytes);
            let raw = serde_json::from_slice(&bytes).map_err(|source| VulnDbError::Record {
                db: path.to_path_buf(),
                file: path.to_path_buf(),
                source,
            })?;
            db.add(raw, path)?;
        } else {
            db.load_zip(path, limits.entry_bytes)?;
        }
        Ok(db)
    }

    /// Adds one record, charging its memory to the budget first.
    pub(super) fn add(&mut self, raw: RawRecord, db: &Path) -> Result<(), VulnDbError> {
        if raw.withdrawn.is_none() {
            let cost = record_bytes(&raw);
            if let Some(budget) = &self.budget
                && !budget.charge(cost)
            {
                return Err(VulnDbError::OverBudget {
                    db: db.to_path_buf(),
                    limit: budget.limit(),
                    used: budget.used().saturating_sub(self.bytes),
                });
            }
            self.bytes += cost;
        }
        self.insert(raw);
        Ok(())
    }

    pub(super) fn insert(&mut self, raw: RawRecord) {
        if raw.withdrawn.is_some() {
            self.withdrawn += 1;
            return;
        }
        let record = self.records.len();
        let mut aliases = Vec::new();
        for alias in raw.aliases.into_iter().chain(raw.upstream).flatten() {
            if alias != raw.id && !aliases.contains(&alias) {
                aliases.push(alias);
            }
        }
        let record_cvss = raw.severity.as_deref().and_then(cvss_severity);
        let record_named = named_field(raw.database_specific.as_ref(), "severity");
        for affected in raw.affected.into_iter().flatten() {
            let Some(package) = affected.package else {
                continue;
            };
            let ranges: Vec<Vec<Event>> = affected
                .ranges
                .into_iter()
                .flatten()
                .filter(|range| range.kind == "ECOSYSTEM")
                .map(|range| range.events.into_iter().flat_map(events).collect())
                .collect();
            let versions = affected.versions.unwrap_or_default();
            if ranges.is_empty() && versions.is_empty() {
                continue;
            }
            // The most specific statement wins: this package's own CVSS, the record's CVSS, then
            // the distribution's word for this package (Debian's urgency), then the record's.
            let severity = affected
                .severity
                .as_deref()
                .and_then(cvss_severity)
                .or(record_cvss)
                .or_else(|| named_field(affected.ecosystem_specific.as_ref(), "severity"))
                .or_else(|| named_field(affected.ecosystem_specific.as_ref(), "urgency"))
                .or_else(|| named_field(affected.database_specific.as_ref(), "severity"))
                .or(record_named)
                .unwrap_or(Severity::Unknown);
            self.affected
                .entry(package.ecosystem)
                .or_default()
                .entry(package.name)
                .or_default()
                .push(Affected {
                    record,
                    ranges,
                    versions,
                    severity,
                });
        }
        self.records.push(Record {
            id: raw.id,
            aliases,
            summary: raw.summary,
        });
    }

    /// Counts one record's bytes into [`VulnDb::version`].
    pub(super) fn fingerprint(&mut self, record: &[u8]) {
        // FNV-1a per record, summed: the same records give the same version in any order (a
        // zip's entry order is the publisher's).
        let hash = record.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        self.fingerprint = self.fingerprint.wrapping_add(hash);
    }

    /// What the database holds, in 16 hex digits: the same for the same records, whenever and
    /// wherever they were loaded, so that a match need not be repeated against a database that
    /// a refresh (or an operator restart) loaded again unchanged.
    pub fn version(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }

    /// Records loaded, withdrawn ones not counted.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Withdrawn records the load skipped.
    pub fn withdrawn(&self) -> usize {
        self.withdrawn
    }

    /// About how much memory the records take.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Reads one record file into `bytes`, refusing it above `limit` before reading past that.
fn read_file(db: &Path, file: &Path, limit: u64, bytes: &mut Vec<u8>) -> Result<(), VulnDbError> {
    let io = |source| VulnDbError::Io {
        path: file.to_path_buf(),
        source,
    };
    bytes.clear();
    fs::File::open(file)
        .map_err(io)?
        .take(limit.saturating_add(1))
        .read_to_end(bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(VulnDbError::EntryTooLarge {
            db: db.to_path_buf(),
            entry: file.display().to_string(),
            limit,
        });
    }
    Ok(())
}

/// About the memory [`VulnDb::insert`] keeps of `raw`: its strings and the structures holding
/// them (an upper bound: the ecosystem and package keys are counted for every entry, though
/// the index stores each once).
fn record_bytes(raw: &RawRecord) -> u64 {
    const STRING: usize = std::mem::size_of::<String>();
    let strings = |list: &Option<Vec<String>>| -> usize {
        list.iter().flatten().map(|s| STRING + s.len()).sum()
    };
    let mut total = std::mem::size_of::<Record>()
        + raw.id.len()
        + raw.summary.as_ref().map_or(0, String::len)
        + strings(&raw.aliases)
        + strings(&raw.upstream);
    for affected in raw.affected.iter().flatten() {
        total += std::mem::size_of::<Affected>() + STRING * 2 + strings(&affected.versions);
        if let Some(package) = &affected.package {
            total += package.ecosystem.len() + package.name.len();
        }
        for range in affected.ranges.iter().flatten() {
            total += std::mem::size_of::<Vec<Event>>();
            for event in &range.events {
                for version in [
                    &event.introduced,
                    &event.fixed,
                    &event.last_affected,
                    &event.limit,
                ]
                .into_iter()
                .flatten()
                {
                    total += std::mem::size_of::<Event>() + version.len();
                }
            }
        }
    }
    total as u64
}

pub(super) fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

pub(super) fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        // Symlinked directories are not followed: a link back up the tree would never end.
        if kind.is_dir() {
            json_files(&path, out)?;
        } else if is_json(&path) && fs::metadata(&path)?.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn events(raw: RawEvent) -> impl Iterator<Item = Event> {
    [
        raw.introduced.map(Event::Introduced),
        raw.fixed.map(Event::Fixed),
        raw.last_affected.map(Event::LastAffected),
        raw.limit.map(Event::Limit),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::evidence::vulns::testing::{deb12, hit, hits};

    #[test]
    fn the_version_changes_with_the_records_and_not_with_their_order_or_a_reload() {
        let record = |id: &str| deb12(id, "glibc", r#"{"introduced": "0"}"#, "");
        let one = tempfile::tempdir().unwrap();
        fs::write(one.path().join("a.json"), record("A")).unwrap();
        fs::write(one.path().join("b.json"), record("B")).unwrap();
        // The same records under names that sort the other way.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("z.json"), record("A")).unwrap();
        fs::write(other.path().join("y.json"), record("B")).unwrap();
        let version = |p: &Path| VulnDb::load(p).unwrap().version();
        let first = version(one.path());
        assert_eq!(first.len(), 16);
        assert_eq!(version(one.path()), first, "reloaded unchanged");
        assert_eq!(version(other.path()), first, "in another order");
        fs::write(one.path().join("c.json"), record("C")).unwrap();
        let added = version(one.path());
        assert_ne!(added, first, "a new record");
        fs::write(one.path().join("c.json"), record("C2")).unwrap();
        assert_ne!(version(one.path()), added, "an edited record");
    }

    #[test]
    fn withdrawn_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut withdrawn: Value =
            serde_json::from_str(&deb12("GONE", "pkg", r#"{"introduced": "0"}"#, "")).unwrap();
        withdrawn["withdrawn"] = Value::from("2024-02-01T00:00:00Z");
        fs::write(dir.path().join("GONE.json"), withdrawn.to_string()).unwrap();
        fs::write(
            dir.path().join("KEPT.json"),
            deb12("KEPT", "pkg", r#"{"introduced": "0"}"#, ""),
        )
        .unwrap();
        let db = VulnDb::load(dir.path()).unwrap();
        assert_eq!((db.len(), db.withdrawn()), (1, 1));
        assert_eq!(hits(&db, "pkg", "1.0-1"), hit("KEPT", None));
    }

    #[test]
    fn a_malformed_record_in_a_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("debian")).unwrap();
        fs::write(
            dir.path().join("debian/DSA-1-1.json"),
            r#"{"summary": "x"}"#,
        )
        .unwrap();
        let err = VulnDb::load(dir.path()).unwrap_err().to_string();
        let file = dir.path().join("debian/DSA-1-1.json");
        assert_eq!(
            err,
            format!(
                "vulnerability database {}: {} is not an OSV record: missing field `id` at line 1 column 16",
                dir.path().display(),
                file.display()
            )
        );
        // Not JSON at all, and not a database at all.
        fs::write(dir.path().join("debian/DSA-1-1.json"), "{").unwrap();
        let err = VulnDb::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("DSA-1-1.json is not an OSV record: EOF"),
            "{err}"
        );
        let missing = dir.path().join("nope.zip");
        let err = VulnDb::load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("vulnerability database {}: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_record_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("DSA-1-1.json");
        fs::write(
            &file,
            format!(r#"{{"id": "DSA-1-1", "summary": "{}"}}"#, "x".repeat(2000)),
        )
        .unwrap();
        let limits = LoadLimits {
            entry_bytes: 1000,
            budget: None,
        };
        let err = VulnDb::load_within(dir.path(), &limits).unwrap_err();
        assert!(
            matches!(&err, VulnDbError::EntryTooLarge { entry, limit: 1000, .. } if *entry == file.display().to_string()),
            "{err}"
        );
        assert!(VulnDb::load_within(&file, &limits).is_err());
        assert_eq!(VulnDb::load(dir.path()).unwrap().len(), 1);
    }
}
