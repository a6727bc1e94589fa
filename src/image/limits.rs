//! The budgets every image read keeps, so that a few bytes from a registry cannot cost the
//! operator its memory, its spool volume or a reconcile slot forever: manifests and configs are
//! refused above a size before they are read, the merged file tree above a number of entries,
//! the spool above a number of bytes, and instrument has a deadline.
//!
//! Each refusal is an [`Exceeded`] that names the limit and the flag that raises it.

use std::io;
use std::time::Duration;

/// The OCI distribution specification asks registries to accept manifests of at least 4 MiB,
/// and Docker Hub refuses larger ones; configs of real images are tens of KiB.
pub const DEFAULT_MANIFEST_BYTES: u64 = 4 << 20;
/// About 400 bytes of memory each (measured: 418 with 50-byte paths), so 100 MiB at most: the
/// operator may read several images at once within its 512Mi. Large distributions hold
/// tens of thousands of paths; very large images a few hundred thousand.
pub const DEFAULT_TREE_ENTRIES: u64 = 250_000;
/// Below the chart's spool emptyDir (`spool.sizeLimit`, 2Gi), leaving room for the hardened
/// layer written beside it.
pub const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
pub const DEFAULT_INSTRUMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub const MANIFEST_FLAG: &str = "--max-manifest-size";
pub const TREE_FLAG: &str = "--max-tree-entries";
pub const SPOOL_FLAG: &str = "--spool-limit";
pub const INSTRUMENT_FLAG: &str = "--instrument-timeout";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest, image index or image config read (they are held in memory).
    pub manifest_bytes: u64,
    /// Most paths in an image's merged file tree.
    pub tree_entries: u64,
    /// Most bytes of file contents set aside in one spool.
    pub spool_bytes: u64,
    /// How long instrument may take in all.
    pub instrument_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest_bytes: DEFAULT_MANIFEST_BYTES,
            tree_entries: DEFAULT_TREE_ENTRIES,
            spool_bytes: DEFAULT_SPOOL_BYTES,
            instrument_timeout: DEFAULT_INSTRUMENT_TIMEOUT,
        }
    }
}

/// A budget an image went over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (the limit is {limit}); raise it with {flag} if the image really needs more")]
pub struct Exceeded {
    /// What went over, and by how much when that is known.
    pub what: String,
    pub limit: String,
    /// The command-line flag (of `whittle operator` too) that sets the limit.
    pub flag: &'static str,
}

impl Exceeded {
    pub fn bytes(what: impl Into<String>, limit: u64, flag: &'static str) -> Exceeded {
        Exceeded {
            what: what.into(),
            limit: size_text(limit),
            flag,
        }
    }

    /// As an `io::Error`, for code that reads through `std::io` ([`Exceeded::from_io`] gets it
    /// back).
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// The [`Exceeded`] inside `e`, when it is one.
    pub fn from_io(e: &io::Error) -> Option<Exceeded> {
        e.get_ref()?.downcast_ref::<Exceeded>().cloned()
    }
}

/// `4 MiB, 4194304 bytes`, or `100 bytes`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}, {bytes} bytes", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// `1800s`, `2s`, `250ms`.
pub fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `1048576`, `512Ki`, `4MiB`, `1Gi`, `2G` (binary units with `i`, decimal ones without).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let bad = || format!("{input:?} is not a size such as 1048576, 512Ki, 4MiB, 1Gi or 2G");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim_end_matches('B') {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(bad()),
    };
    // `B` alone is bytes; `BB` is nothing.
    if unit.len() > 1 && unit.ends_with("BB") {
        return Err(bad());
    }
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        let cases = [
            ("1048576", 1 << 20),
            ("512Ki", 512 << 10),
            ("4MiB", 4 << 20),
            ("1Gi", 1 << 30),
            ("2G", 2_000_000_000),
            ("10B", 10),
            ("3k", 3000),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in ["", "Gi", "1.5Gi", "-1", "4 parsecs", "1BB", "99999999999Ti"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(size_text(4 << 20), "4 MiB, 4194304 bytes");
        assert_eq!(size_text(1000), "1000 bytes");
        assert_eq!(duration_text(Duration::from_secs(1800)), "1800s");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn an_exceeded_budget_says_the_limit_and_the_flag_and_survives_io() {
        let e = Exceeded::bytes("the spool holds 2000 bytes", 1024, SPOOL_FLAG);
        let text = e.to_string();
        assert!(
            text.contains("1 KiB, 1024 bytes") && text.contains("--spool-limit"),
            "{text}"
        );
        assert_eq!(Exceeded::from_io(&e.clone().into_io()), Some(e));
        assert_eq!(Exceeded::from_io(&io::Error::other("other")), None);
    }
}
