//! What loading vulnerability databases may cost: a cap on each record and a memory budget
//! shared by every database alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

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
    pub(super) fn charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    pub(super) fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Memory taken from a budget for as long as this lives.
pub(super) struct Charge {
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::vulns::database::{VulnDb, VulnDbError};
    use crate::evidence::vulns::testing::fixture;

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
}
