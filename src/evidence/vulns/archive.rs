//! Loading a zip of OSV records (what osv.dev publishes per ecosystem), charging its central
//! directory to the budget before the zip reader holds it.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::budget::{Charge, MemoryBudget};
use super::database::{VulnDb, VulnDbError, is_json};

impl VulnDb {
    pub(super) fn load_zip(&mut self, path: &Path, entry_bytes: u64) -> Result<(), VulnDbError> {
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
            self.fingerprint(&bytes);
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
}

/// What the zip reader keeps per entry besides the entry's directory record (its name, extra
/// fields): a generous bound on `zip::ZipFileData` and its index slot.
const ZIP_ENTRY_BYTES: u64 = 512;

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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::evidence::vulns::budget::{DEFAULT_ENTRY_BYTES, LoadLimits};
    use crate::evidence::vulns::matching::scan;
    use crate::evidence::vulns::testing::{alpine, fixture, stretch, zip_of};

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
}
