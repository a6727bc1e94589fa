//! The vulnerabilities of an image's OS packages before and after a harden, from an OSV database.
//!
//! The database is what osv.dev publishes per ecosystem (`Debian/all.zip`, `Alpine/all.zip`), or a
//! directory of its records. Distribution advisories are filed against source packages, so a
//! package is matched by its source name and source version in the ecosystem its image's
//! os-release names (`Debian:12`, `Alpine:v3.20`). Hardening removes vulnerabilities the only
//! way a scanner would agree with: a package none of whose files is left cannot be exploited, so
//! its findings move from `remaining` to `removed`.
//!
//! By concern: `database.rs` holds a database in memory and loads it from a directory of
//! records (`archive.rs` from a zip), within the limits of `budget.rs`; `osv.rs` is the part
//! of the OSV schema read; `severity.rs` grades a record; `matching.rs` finds an inventory's
//! findings, ordering versions with `versions/` (Debian's and Alpine's schemes); `summary.rs`
//! counts them before and after a harden; `gate.rs` orders what a hardened image keeps and
//! decides whether `vulnerabilities.failOn` refuses it.

mod archive;
pub mod budget;
pub mod database;
pub mod gate;
pub mod matching;
mod osv;
pub mod severity;
pub mod summary;
#[cfg(test)]
mod testing;
mod versions;

pub use budget::{DEFAULT_ENTRY_BYTES, LoadLimits, MemoryBudget};
pub use database::{VulnDb, VulnDbError};
pub use gate::{Gate, KEPT_LIST_LIMIT, worst_first};
pub use summary::{Counts, VulnSummary, compare};
