//! The vulnerabilities of an image's OS packages before and after a harden, from an OSV database.
//!
//! The database is what osv.dev publishes per ecosystem (`Debian/all.zip`, `Alpine/all.zip`), or a
//! directory of its records. Distribution advisories are filed against source packages, so a
//! package is matched by its source name and source version in the ecosystem its image's
//! os-release names (`Debian:12`, `Alpine:v3.20`). Hardening removes vulnerabilities the only
//! way a scanner would agree with: a package none of whose files is left cannot be exploited, so
//! its findings move from `remaining` to `removed`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::packages::{Inventory, Manager, OsRelease, Package, State};

/// How serious a vulnerability is, worst first (a sort puts critical findings at the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    /// CVSS "low" and also CVSS "none" (0.0). Debian's urgency "unimportant" counts here too: the
    /// security team judged the issue not worth fixing in a release, a judgement of low impact
    /// rather than of none, and a reader should still find it when auditing the image.
    Low,
    /// Neither a CVSS vector we can score nor a severity or urgency we recognise; Debian's "not yet
    /// assigned" and "end-of-life" land here, since they say nothing about impact.
    Unknown,
}

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

/// The largest OSV record read: real ones are a few KiB, the largest few hundred KiB (long
/// `versions` lists), so this refuses only a zip bomb or something that is not a database.
pub const DEFAULT_ENTRY_BYTES: u64 = 16 << 20;

/// What a load may cost: every record (zip entry, file) is refused above `entry_bytes` before
/// it is read past that, and the records kept are charged to `budget`, if any, as they are
/// added (so a database over its budget fails while it is being loaded, not after).
#[derive(Debug, Clone)]
pub struct LoadLimits {
    pub entry_bytes: u64,
    pub budget: Option<Arc<MemoryBudget>>,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            entry_bytes: DEFAULT_ENTRY_BYTES,
            budget: None,
        }
    }
}

/// Memory shared by every database loaded with it: a database's records are charged as they
/// are loaded and released when the database is dropped, so `used` counts exactly the
/// databases alive (in a cache or still in use).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged by the databases alive now.
    pub fn used(&self) -> u64 {
        self.used.load(AtomicOrdering::SeqCst)
    }

    /// Takes `bytes` from the budget, or nothing when they do not fit.
    fn charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// An OSV database held in memory, indexed by ecosystem and package.
#[derive(Debug, Default)]
pub struct VulnDb {
    records: Vec<Record>,
    /// ecosystem -> package name -> what the records say about it.
    affected: HashMap<String, HashMap<String, Vec<Affected>>>,
    withdrawn: usize,
    /// About how much memory the records take (see [`record_bytes`]).
    bytes: u64,
    /// Where `bytes` was charged, to be given back on drop.
    budget: Option<Arc<MemoryBudget>>,
}

impl Drop for VulnDb {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.bytes);
        }
    }
}

#[derive(Debug)]
struct Record {
    id: String,
    aliases: Vec<String>,
    summary: Option<String>,
}

/// One `affected[]` entry, reduced to what matching needs.
#[derive(Debug)]
struct Affected {
    record: usize,
    /// The `ECOSYSTEM` ranges' events; other range types (GIT, SEMVER) do not apply to OS packages.
    ranges: Vec<Vec<Event>>,
    versions: Vec<String>,
    severity: Severity,
}

#[derive(Debug, Clone)]
enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

// The OSV schema, as far as matching and reporting read it; serde ignores the rest.
#[derive(Deserialize)]
struct RawRecord {
    id: String,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    upstream: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    affected: Option<Vec<RawAffected>>,
    #[serde(default)]
    database_specific: Option<Value>,
}

#[derive(Deserialize)]
struct RawSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    #[serde(default)]
    package: Option<RawPackage>,
    #[serde(default)]
    severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    ranges: Option<Vec<RawRange>>,
    #[serde(default)]
    versions: Option<Vec<String>>,
    #[serde(default)]
    ecosystem_specific: Option<Value>,
    #[serde(default)]
    database_specific: Option<Value>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    introduced: Option<String>,
    #[serde(default)]
    fixed: Option<String>,
    #[serde(default)]
    last_affected: Option<String>,
    #[serde(default)]
    limit: Option<String>,
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
                let raw = serde_json::from_slice(&bytes).map_err(|source| VulnDbError::Record {
                    db: path.to_path_buf(),
                    file: file.clone(),
                    source,
                })?;
                db.add(raw, path)?;
            }
        } else if is_json(path) {
            read_file(path, path, limits.entry_bytes, &mut bytes)?;
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

    fn load_zip(&mut self, path: &Path, entry_bytes: u64) -> Result<(), VulnDbError> {
        let file = fs::File::open(path).map_err(|source| VulnDbError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let zip_error = |source| VulnDbError::Zip {
            path: path.to_path_buf(),
            source,
        };
        // The zip reader holds a record of every entry in memory while it is open: charged
        // before the directory is read, so a zip of countless tiny entries fails on the budget
        // instead of exhausting memory, and given back when the archive is closed.
        let _directory = match &self.budget {
            Some(budget) => Some(self.charge_directory(budget.clone(), path)?),
            None => None,
        };
        let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_error)?;
        let mut bytes = Vec::new();
        for index in 0..archive.len() {
            let entry = archive.by_index(index).map_err(zip_error)?;
            // Only shown and checked for `.json`, never extracted: a lossy name is enough.
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            if entry.is_dir() || !is_json(Path::new(&name)) {
                continue;
            }
            let too_large = || VulnDbError::EntryTooLarge {
                db: path.to_path_buf(),
                entry: format!("entry {name}"),
                limit: entry_bytes,
            };
            // The declared size refuses an honest bomb before a byte is inflated; the reader's
            // own cap stops one whose header lies.
            if entry.size() > entry_bytes {
                return Err(too_large());
            }
            bytes.clear();
            entry
                .take(entry_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|source| VulnDbError::ZipEntry {
                    db: path.to_path_buf(),
                    entry: name.clone(),
                    source,
                })?;
            if bytes.len() as u64 > entry_bytes {
                return Err(too_large());
            }
            let raw = serde_json::from_slice(&bytes).map_err(|source| VulnDbError::ZipRecord {
                db: path.to_path_buf(),
                entry: name,
                source,
            })?;
            self.add(raw, path)?;
        }
        Ok(())
    }

    fn charge_directory(
        &self,
        budget: Arc<MemoryBudget>,
        path: &Path,
    ) -> Result<Option<Charge>, VulnDbError> {
        let directory = central_directory(path).map_err(|source| VulnDbError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Not a zip: the zip reader says so.
        let Some(directory) = directory else {
            return Ok(None);
        };
        let bytes = directory
            .entries
            .saturating_mul(ZIP_ENTRY_BYTES)
            .saturating_add(directory.bytes);
        if !budget.charge(bytes) {
            return Err(VulnDbError::OverBudget {
                db: path.to_path_buf(),
                limit: budget.limit(),
                used: budget.used().saturating_sub(self.bytes),
            });
        }
        Ok(Some(Charge { budget, bytes }))
    }

    /// Adds one record, charging its memory to the budget first.
    fn add(&mut self, raw: RawRecord, db: &Path) -> Result<(), VulnDbError> {
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

    fn insert(&mut self, raw: RawRecord) {
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

/// What the zip reader keeps per entry besides the entry's directory record (its name, extra
/// fields): a generous bound on `zip::ZipFileData` and its index slot.
const ZIP_ENTRY_BYTES: u64 = 512;

/// Memory taken from a budget for as long as this lives.
struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// What a zip's end-of-central-directory record says about its directory.
#[derive(Debug, PartialEq, Eq)]
struct CentralDirectory {
    entries: u64,
    bytes: u64,
}

/// The zip's entry count and directory size, read from its last 64 KiB (the end record, and the
/// zip64 one it points to), or None when there is no end record.
fn central_directory(path: &Path) -> std::io::Result<Option<CentralDirectory>> {
    use std::io::{Seek, SeekFrom};
    const END: [u8; 4] = *b"PK\x05\x06";
    const LOCATOR: [u8; 4] = *b"PK\x06\x07";
    const END64: [u8; 4] = *b"PK\x06\x06";
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    // The end record (22 bytes) followed by a comment of at most 65535.
    let tail_len = len.min(22 + 65535);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = Vec::new();
    (&mut file).take(tail_len).read_to_end(&mut tail)?;
    let u16_at = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u32_at = |b: &[u8], at: usize| {
        u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
    };
    let u64_at = |b: &[u8], at: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(raw)
    };
    let Some(end) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&at| tail[at..at + 4] == END)
    else {
        return Ok(None);
    };
    let mut directory = CentralDirectory {
        entries: u16_at(&tail, end + 10),
        bytes: u32_at(&tail, end + 12),
    };
    // Zip64: the end record's fields are saturated and the real ones are in the zip64 record.
    if end >= 20 && tail[end - 20..end - 16] == LOCATOR {
        let at = u64_at(&tail, end - 12);
        let mut record = [0u8; 56];
        if at.checked_add(56).is_some_and(|e| e <= len) {
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut record)?;
            if record[..4] == END64 {
                directory = CentralDirectory {
                    entries: u64_at(&record, 32),
                    bytes: u64_at(&record, 40),
                };
            }
        }
    }
    Ok(Some(directory))
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

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
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

/// The severity of the newest CVSS version the list has a vector we can score for.
fn cvss_severity(list: &[RawSeverity]) -> Option<Severity> {
    ["CVSS_V4", "CVSS_V3"].iter().find_map(|kind| {
        list.iter()
            .filter(|s| s.kind == *kind)
            .find_map(|s| match s.score.parse::<cvss::Cvss>() {
                Ok(vector) => Some(match vector.severity() {
                    cvss::Severity::Critical => Severity::Critical,
                    cvss::Severity::High => Severity::High,
                    cvss::Severity::Medium => Severity::Medium,
                    cvss::Severity::Low | cvss::Severity::None => Severity::Low,
                }),
                Err(err) => {
                    tracing::debug!(vector = %s.score, "unscorable CVSS vector: {err}");
                    None
                }
            })
    })
}

fn named_field(object: Option<&Value>, field: &str) -> Option<Severity> {
    named_severity(object?.get(field)?.as_str()?)
}

/// GHSA's, Alpine's, Ubuntu's severity words and Debian's urgencies (which may carry the
/// tracker's `*`/`**` marks).
fn named_severity(word: &str) -> Option<Severity> {
    match word
        .trim()
        .trim_end_matches('*')
        .to_ascii_lowercase()
        .as_str()
    {
        "critical" => Some(Severity::Critical),
        "high" | "important" => Some(Severity::High),
        "medium" | "moderate" => Some(Severity::Medium),
        "low" | "negligible" | "unimportant" => Some(Severity::Low),
        _ => None,
    }
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

fn scan_packages(db: &VulnDb, inv: &Inventory) -> Vec<(Finding, Manager)> {
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

/// A version ordering an OSV ecosystem defines.
trait Scheme {
    type Version: Ord;
    fn parse(text: &str) -> Result<Self::Version, String>;
}

struct DebianScheme;

impl Scheme for DebianScheme {
    type Version = debversion::Version;
    fn parse(text: &str) -> Result<Self::Version, String> {
        text.parse::<debversion::Version>()
            .map_err(|err| format!("{text:?}: {err}"))
    }
}

struct AlpineScheme;

impl Scheme for AlpineScheme {
    type Version = apk::Version;
    fn parse(text: &str) -> Result<Self::Version, String> {
        apk::Version::parse(text).map_err(|err| format!("{text:?}: {err}"))
    }
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

/// Alpine's package version ordering, as apk-tools defines it.
///
/// No maintained Rust crate implements it (searched crates.io and docs.rs: the `alpm*` crates
/// are Arch's pacman, `apk-tools-sys` binds the C library, `alpkit` reads APKBUILDs and does not
/// order versions), so this follows apk-package(5)'s grammar,
/// `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`, with apk-tools' tokenising
/// rules for the corner cases (leading zeros in later components, a letter after a number).
/// Versions apk itself calls invalid (an upper-case letter, an unknown suffix, a trailing
/// separator) are refused rather than ordered.
mod apk {
    use std::cmp::Ordering;

    /// Token kinds in apk's order: when two versions agree up to a point and then continue
    /// with different kinds, the lower kind is the greater version (more components beat a
    /// letter, anything beats the end), except that a pre-release suffix is always less.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        /// A `.`-separated component after the first.
        Component,
        /// The first component, or digits following a letter or a run of leading zeros.
        Digits,
        Letter,
        Suffix,
        SuffixNumber,
        Hash,
        Revision,
        End,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Value {
        /// A component's run of leading zeros: more zeros is less (`1.01` > `1.001`), and any
        /// run is less than a component without one (`1.01` < `1.1`).
        Zeros(usize),
        /// Digits without leading zeros ("" is 0), compared as an unbounded number.
        Number(String),
        Letter(u8),
        /// alpha, beta, pre, rc sort below no suffix (-4..-1); cvs, svn, git, hg, p above (0..4).
        Suffix(i8),
        /// A commit hash orders nothing.
        Hash,
    }

    impl Value {
        fn order(&self, other: &Value) -> Ordering {
            match (self, other) {
                (Value::Zeros(a), Value::Zeros(b)) => b.cmp(a),
                (Value::Zeros(_), _) => Ordering::Less,
                (_, Value::Zeros(_)) => Ordering::Greater,
                (Value::Number(a), Value::Number(b)) => {
                    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
                }
                (Value::Letter(a), Value::Letter(b)) => a.cmp(b),
                (Value::Suffix(a), Value::Suffix(b)) => a.cmp(b),
                _ => Ordering::Equal,
            }
        }
    }

    const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
    const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

    #[derive(Debug, Clone)]
    pub struct Version {
        tokens: Vec<(Kind, Value)>,
    }

    impl Version {
        pub fn parse(text: &str) -> Result<Version, String> {
            let b = text.as_bytes();
            if !b.first().is_some_and(u8::is_ascii_digit) {
                return Err("does not start with a digit".into());
            }
            let mut tokens = Vec::new();
            let mut kind = Kind::Digits;
            let mut pos = 0;
            loop {
                let mut forced = None;
                let value = match kind {
                    Kind::Component if b[pos] == b'0' => {
                        let zeros = b[pos..].iter().take_while(|&&c| c == b'0').count();
                        pos += zeros;
                        forced = Some(Kind::Digits);
                        Value::Zeros(zeros)
                    }
                    Kind::Component | Kind::Digits | Kind::SuffixNumber | Kind::Revision => {
                        let digits = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
                        if digits == 0 && kind == Kind::Component {
                            return Err(format!("empty component at byte {pos}"));
                        }
                        let number = text[pos..pos + digits].trim_start_matches('0').to_string();
                        pos += digits;
                        Value::Number(number)
                    }
                    Kind::Letter => {
                        pos += 1;
                        Value::Letter(b[pos - 1])
                    }
                    Kind::Suffix => {
                        let rest = &text[pos..];
                        let (rank, name) = PRE
                            .iter()
                            .enumerate()
                            .map(|(i, name)| (i as i8 - PRE.len() as i8, name))
                            .chain(POST.iter().enumerate().map(|(i, name)| (i as i8, name)))
                            .find(|(_, name)| rest.starts_with(*name))
                            .ok_or_else(|| format!("unknown suffix at {rest:?}"))?;
                        pos += name.len();
                        Value::Suffix(rank)
                    }
                    Kind::Hash => {
                        let hex = b[pos..]
                            .iter()
                            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                            .count();
                        if hex == 0 {
                            return Err("empty commit hash".into());
                        }
                        pos += hex;
                        Value::Hash
                    }
                    Kind::End => unreachable!("the loop stops at the end"),
                };
                tokens.push((kind, value));
                if pos == b.len() {
                    return Ok(Version { tokens });
                }
                kind = match forced {
                    Some(next) => next,
                    None => next_kind(kind, b, &mut pos)?,
                };
                if pos == b.len() {
                    return Err("ends with a separator".into());
                }
            }
        }
    }

    /// The kind of the next token, consuming its separator.
    fn next_kind(prev: Kind, b: &[u8], pos: &mut usize) -> Result<Kind, String> {
        let c = b[*pos];
        let next = if matches!(prev, Kind::Digits | Kind::Component) && c.is_ascii_lowercase() {
            Kind::Letter
        } else if prev == Kind::Letter && c.is_ascii_digit() {
            Kind::Digits
        } else if prev == Kind::Suffix && c.is_ascii_digit() {
            Kind::SuffixNumber
        } else {
            *pos += 1;
            match c {
                b'.' => Kind::Component,
                b'_' => Kind::Suffix,
                b'-' if b.get(*pos) == Some(&b'r') => {
                    *pos += 1;
                    Kind::Revision
                }
                b'~' => Kind::Hash,
                _ => return Err(format!("unexpected {:?} at byte {}", c as char, *pos - 1)),
            }
        };
        // Components come in grammar order; going back is only allowed where apk allows it.
        let allowed = next >= prev
            || matches!(
                (prev, next),
                (Kind::Digits, Kind::Component)
                    | (Kind::SuffixNumber, Kind::Suffix)
                    | (Kind::Letter, Kind::Digits)
            );
        if allowed {
            Ok(next)
        } else {
            Err(format!("{next:?} after {prev:?} at byte {}", *pos))
        }
    }

    impl Ord for Version {
        fn cmp(&self, other: &Version) -> Ordering {
            let end = (Kind::End, Value::Hash);
            let mut i = 0;
            loop {
                let (ka, va) = self.tokens.get(i).unwrap_or(&end);
                let (kb, vb) = other.tokens.get(i).unwrap_or(&end);
                i += 1;
                if ka == kb {
                    if *ka == Kind::End {
                        return Ordering::Equal;
                    }
                    match va.order(vb) {
                        Ordering::Equal => continue,
                        order => return order,
                    }
                }
                let pre = |k: &Kind, v: &Value| {
                    *k == Kind::Suffix && matches!(v, Value::Suffix(rank) if *rank < 0)
                };
                if pre(ka, va) {
                    return Ordering::Less;
                }
                if pre(kb, vb) {
                    return Ordering::Greater;
                }
                return kb.cmp(ka);
            }
        }
    }

    impl PartialOrd for Version {
        fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }

    impl PartialEq for Version {
        fn eq(&self, other: &Version) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }

    impl Eq for Version {}
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Real osv.dev records: see tests/data/osv/SOURCES.md.
    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/real")
    }

    fn os(id: &str, version_id: Option<&str>) -> OsRelease {
        OsRelease {
            id: id.into(),
            version_id: version_id.map(Into::into),
            ..OsRelease::default()
        }
    }

    fn deb(name: &str, version: &str, source: &str, source_version: &str) -> Package {
        Package {
            manager: Manager::Dpkg,
            name: name.into(),
            version: version.into(),
            arch: Some("amd64".into()),
            source: source.into(),
            source_version: source_version.into(),
            files: 10,
            kept: 10,
        }
    }

    fn apk(name: &str, version: &str, origin: &str) -> Package {
        Package {
            manager: Manager::Apk,
            name: name.into(),
            version: version.into(),
            arch: Some("x86_64".into()),
            source: origin.into(),
            source_version: version.into(),
            files: 4,
            kept: 4,
        }
    }

    fn inventory(os: OsRelease, packages: Vec<Package>) -> Inventory {
        Inventory {
            os: Some(os),
            packages,
        }
    }

    /// A database from records given inline, through the same parsing the loader uses.
    fn db_of(records: &[&str]) -> VulnDb {
        let mut db = VulnDb::default();
        for record in records {
            db.insert(serde_json::from_str(record).expect("test record"));
        }
        db
    }

    /// A synthetic Debian 12 record for `package` with one ECOSYSTEM range of `events` and the
    /// given `versions`, for exercising one rule at a time (the fixture's records are real).
    fn deb12(id: &str, package: &str, events: &str, versions: &str) -> String {
        format!(
            r#"{{"id": "{id}", "modified": "2024-01-01T00:00:00Z", "affected": [{{
                "package": {{"ecosystem": "Debian:12", "name": "{package}"}},
                "ranges": [{{"type": "ECOSYSTEM", "events": [{events}]}}],
                "versions": [{versions}]}}]}}"#
        )
    }

    /// (id, fixed) of each finding for one source package at `version` in bookworm.
    fn hits(db: &VulnDb, source: &str, version: &str) -> Vec<(String, Option<String>)> {
        let inv = inventory(
            os("debian", Some("12")),
            vec![deb(source, version, source, version)],
        );
        scan(db, &inv)
            .into_iter()
            .map(|f| (f.id, f.fixed))
            .collect()
    }

    fn hit(id: &str, fixed: Option<&str>) -> Vec<(String, Option<String>)> {
        vec![(id.to_string(), fixed.map(Into::into))]
    }

    fn zip_of(dir: &Path, out: &Path) {
        let mut files = Vec::new();
        json_files(dir, &mut files).unwrap();
        files.sort();
        let mut writer = zip::ZipWriter::new(fs::File::create(out).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for file in files {
            let name = file
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            writer.start_file(name, options).unwrap();
            writer.write_all(&fs::read(&file).unwrap()).unwrap();
        }
        writer.finish().unwrap();
    }

    fn stretch() -> Inventory {
        inventory(
            os("debian", Some("9")),
            vec![
                deb("dpkg", "1.18.25", "dpkg", "1.18.25"),
                deb("libssl1.1", "1.1.0l-1~deb9u5", "openssl", "1.1.0l-1~deb9u5"),
                deb("nginx-light", "1.10.3-1+deb9u7", "nginx", "1.10.3-1+deb9u7"),
                deb("openssl", "1.1.0l-1~deb9u5", "openssl", "1.1.0l-1~deb9u5"),
                deb("tzdata", "2021a-0+deb9u4", "tzdata", "2021a-0+deb9u4"),
            ],
        )
    }

    fn alpine() -> Inventory {
        inventory(
            os("alpine", Some("3.20.3")),
            vec![
                apk("musl", "1.2.5-r0", "musl"),
                apk("musl-utils", "1.2.5-r0", "musl"),
                apk("zlib", "1.3.1-r1", "zlib"),
            ],
        )
    }

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
    fn debian_ordering_epochs_tildes_and_security_updates() {
        let db = db_of(&[
            &deb12(
                "EPOCH",
                "epoch",
                r#"{"introduced": "0"}, {"fixed": "1:2.0"}"#,
                "",
            ),
            &deb12(
                "TILDE",
                "tilde",
                r#"{"introduced": "0"}, {"fixed": "1.0"}"#,
                "",
            ),
            &deb12(
                "DEB12U",
                "glibc",
                r#"{"introduced": "0"}, {"fixed": "2.36-9+deb12u3"}"#,
                "",
            ),
        ]);
        // An epoch outranks any upstream version: 3.0 is older than 1:2.0.
        assert_eq!(hits(&db, "epoch", "3.0"), hit("EPOCH", Some("1:2.0")));
        assert!(hits(&db, "epoch", "1:2.0").is_empty());
        assert!(hits(&db, "epoch", "1:2.0.1").is_empty());
        // A tilde sorts before the release it precedes.
        assert_eq!(hits(&db, "tilde", "1.0~rc1"), hit("TILDE", Some("1.0")));
        assert!(hits(&db, "tilde", "1.0").is_empty());
        assert!(hits(&db, "tilde", "1.0+dfsg").is_empty());
        // Security updates count numerically: u10 comes after u3, though "u10" < "u3" as text.
        assert_eq!(
            hits(&db, "glibc", "2.36-9"),
            hit("DEB12U", Some("2.36-9+deb12u3"))
        );
        assert_eq!(
            hits(&db, "glibc", "2.36-9+deb12u2"),
            hit("DEB12U", Some("2.36-9+deb12u3"))
        );
        assert!(hits(&db, "glibc", "2.36-9+deb12u3").is_empty());
        assert!(hits(&db, "glibc", "2.36-9+deb12u10").is_empty());
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
    fn a_malformed_zip_entry_names_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        fs::create_dir(&records).unwrap();
        fs::write(records.join("DSA-1-1.json"), r#"{"summary": "x"}"#).unwrap();
        let zip = dir.path().join("all.zip");
        zip_of(&records, &zip);
        let err = VulnDb::load(&zip).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "vulnerability database {}: entry DSA-1-1.json is not an OSV record: missing field `id` at line 1 column 16",
                zip.display()
            )
        );
        // A file that is not a zip says so.
        let junk = dir.path().join("junk.zip");
        fs::write(&junk, "not a zip").unwrap();
        let err = VulnDb::load(&junk).unwrap_err().to_string();
        assert!(err.contains("not a zip of OSV records"), "{err}");
    }

    /// The process's peak resident memory so far, from /proc.
    fn peak_rss() -> u64 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib << 10
    }

    #[test]
    fn a_zip_bomb_is_refused_naming_the_entry_without_inflating_it() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("all.zip");
        // 512 MiB of JSON whitespace: about 0.5 MiB deflated.
        const INFLATED: usize = 512 << 20;
        {
            let mut writer = zip::ZipWriter::new(fs::File::create(&zip).unwrap());
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            writer.start_file("DSA-0-0.json", options).unwrap();
            writer.write_all(br#"{"id": "DSA-0-0"}"#).unwrap();
            writer.start_file("bomb.json", options).unwrap();
            let spaces = vec![b' '; 1 << 20];
            for _ in 0..INFLATED / spaces.len() {
                writer.write_all(&spaces).unwrap();
            }
            writer.finish().unwrap();
        }
        assert!(fs::metadata(&zip).unwrap().len() < 4 << 20);
        let before = peak_rss();
        let err = VulnDb::load(&zip).unwrap_err();
        let grown = peak_rss().saturating_sub(before);
        assert_eq!(
            err.to_string(),
            format!(
                "vulnerability database {}: entry bomb.json is larger than {DEFAULT_ENTRY_BYTES} bytes once inflated, more than any OSV record; not loaded",
                zip.display()
            )
        );
        // Inflating it would have taken the process's peak up by 512 MiB.
        assert!(grown < 64 << 20, "peak memory grew by {grown} bytes");
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

    #[test]
    fn a_zip_of_countless_entries_is_charged_before_its_directory_is_read() {
        // Every entry costs the zip reader memory for its directory record, JSON or not.
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("all.zip");
        {
            let mut writer = zip::ZipWriter::new(fs::File::create(&zip).unwrap());
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for i in 0..70_000 {
                writer.start_file(format!("n/{i}.txt"), options).unwrap();
            }
            writer.start_file("DSA-0-0.json", options).unwrap();
            writer.write_all(br#"{"id": "DSA-0-0"}"#).unwrap();
            writer.finish().unwrap();
        }
        let directory = central_directory(&zip).unwrap().expect("an end record");
        assert_eq!(directory.entries, 70_001);
        let budget = Arc::new(MemoryBudget::new(4 << 20));
        let limits = LoadLimits {
            budget: Some(budget.clone()),
            ..LoadLimits::default()
        };
        let err = VulnDb::load_within(&zip, &limits).unwrap_err();
        assert!(matches!(err, VulnDbError::OverBudget { .. }), "{err}");
        assert_eq!(budget.used(), 0);
        // With room for its directory it loads, and keeps only its record's share.
        let budget = Arc::new(MemoryBudget::new(64 << 20));
        let limits = LoadLimits {
            budget: Some(budget.clone()),
            ..LoadLimits::default()
        };
        let db = VulnDb::load_within(&zip, &limits).unwrap();
        assert_eq!(db.len(), 1);
        assert_eq!(budget.used(), db.bytes());
        assert!(db.bytes() < 1000, "{}", db.bytes());
    }

    #[test]
    fn databases_share_a_memory_budget_and_give_it_back_when_dropped() {
        let unlimited = VulnDb::load(&fixture()).unwrap();
        let size = unlimited.bytes();
        assert!(size > 1000, "{size}");
        let budget = Arc::new(MemoryBudget::new(size * 3 / 2));
        let limits = LoadLimits {
            budget: Some(budget.clone()),
            ..LoadLimits::default()
        };
        let first = VulnDb::load_within(&fixture(), &limits).unwrap();
        assert_eq!(budget.used(), size);
        // A second copy does not fit beside the first, and what it had charged comes back.
        let err = VulnDb::load_within(&fixture(), &limits).unwrap_err();
        assert!(
            matches!(err, VulnDbError::OverBudget { used, .. } if used == size),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("do not fit in the memory budget for vulnerability databases"),
            "{err}"
        );
        assert_eq!(budget.used(), size);
        drop(first);
        assert_eq!(budget.used(), 0);
        let second = VulnDb::load_within(&fixture(), &limits).unwrap();
        assert_eq!(second.len(), unlimited.len());
        // One too large for the whole budget fails on its own.
        let small = LoadLimits {
            budget: Some(Arc::new(MemoryBudget::new(size / 2))),
            ..LoadLimits::default()
        };
        assert!(matches!(
            VulnDb::load_within(&fixture(), &small),
            Err(VulnDbError::OverBudget { .. })
        ));
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
    fn the_fixture_directory_and_its_zip_give_identical_results() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("all.zip");
        zip_of(&fixture(), &zip);
        let from_dir = VulnDb::load(&fixture()).unwrap();
        let from_zip = VulnDb::load(&zip).unwrap();
        assert_eq!(from_dir.len(), from_zip.len());
        for inv in [stretch(), alpine()] {
            let a = scan(&from_dir, &inv);
            assert!(!a.is_empty());
            assert_eq!(a, scan(&from_zip, &inv));
        }
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
    fn apk_version_ordering() {
        let v = |s: &str| apk::Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let ascending = [
            "0.9.13",
            "1.01",
            "1.1",
            "1.2_alpha",
            "1.2_beta2",
            "1.2_rc1",
            "1.2",
            "1.2-r1",
            "1.2-r10",
            "1.2_p1",
            "1.2a",
            "1.2b",
            "1.2.0",
            "1.2.9",
            "1.2.10",
            "1.2.10_git20230717",
            "1.2.10_git20230717-r5",
            "2",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
        assert_eq!(v("1.2-r01"), v("1.2-r1"));
        assert_eq!(v("1.2~abc123-r1"), v("1.2~def456-r1"));
        for invalid in [
            "", "r1", "1.2A", "1.2_foo", "1.2-", "1..2", "1.2-r1.3", "1.2a.3", "1.2é",
        ] {
            assert!(apk::Version::parse(invalid).is_err(), "{invalid:?} parsed");
        }
    }

    #[test]
    fn severity_from_cvss_then_distribution_words() {
        let record = |id: &str, top: &str, affected: &str| {
            format!(
                r#"{{"id": "{id}", {top} "affected": [{{
                    "package": {{"ecosystem": "Debian:12", "name": "pkg"}},
                    "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}]}}]
                    {affected}}}]}}"#
            )
        };
        let v3_critical =
            r#"{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}"#;
        let v3_medium =
            r#"{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}"#;
        let v4_high = r#"{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N"}"#;
        let db = db_of(&[
            &record("A-V3", &format!(r#""severity": [{v3_critical}],"#), ""),
            // The newest CVSS version wins.
            &record(
                "B-V4",
                &format!(r#""severity": [{v3_critical}, {v4_high}],"#),
                "",
            ),
            // This package's own vector wins over the record's.
            &record(
                "C-OWN",
                &format!(r#""severity": [{v3_critical}],"#),
                &format!(r#", "severity": [{v3_medium}]"#),
            ),
            &record(
                "D-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "unimportant"}"#,
            ),
            &record(
                "E-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "medium**"}"#,
            ),
            &record(
                "F-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "not yet assigned"}"#,
            ),
            &record(
                "G-DB",
                r#""database_specific": {"severity": "MODERATE"},"#,
                "",
            ),
            &record("H-NONE", "", ""),
            // A vector that does not parse falls through to the next source of severity.
            &record(
                "I-BAD",
                r#""severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/garbage"}],"#,
                r#", "ecosystem_specific": {"urgency": "high"}"#,
            ),
        ]);
        let inv = inventory(
            os("debian", Some("12")),
            vec![deb("pkg", "1.0-1", "pkg", "1.0-1")],
        );
        let got: Vec<(String, Severity)> = scan(&db, &inv)
            .into_iter()
            .map(|f| (f.id, f.severity))
            .collect();
        let want: Vec<(String, Severity)> = [
            ("A-V3", Severity::Critical),
            ("B-V4", Severity::High),
            ("I-BAD", Severity::High),
            ("C-OWN", Severity::Medium),
            ("E-URG", Severity::Medium),
            ("G-DB", Severity::Medium),
            ("D-URG", Severity::Low),
            ("F-URG", Severity::Unknown),
            ("H-NONE", Severity::Unknown),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
        assert_eq!(got, want);
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
