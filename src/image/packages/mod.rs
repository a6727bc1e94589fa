//! The OS packages an image holds, and how much of each a harden kept.
//!
//! Scanners (Trivy, Grype, syft) read the distribution from os-release and the packages from the
//! package manager's database, so the hardened image carries both, pruned to the packages that
//! still have files: a scanner then reports what is really left, neither the removed packages nor
//! (with no database at all) nothing.

pub mod database;

use serde::Serialize;

use super::distribution::store::{Location, Store};
use super::error::Result;
use super::harden::read_image;

/// Which database a package came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Dpkg,
    Apk,
}

/// The distribution, from `etc/os-release` (or `usr/lib/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OsRelease {
    /// `ID`: `debian`, `alpine`, `ubuntu`...
    pub id: String,
    /// `VERSION_ID`: `12`, `3.20.3`; absent on testing/unstable.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`: `bookworm`.
    pub codename: Option<String>,
    /// `PRETTY_NAME`, else `NAME`.
    pub pretty_name: Option<String>,
}

/// How much of a package's files a harden kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Every file it installed is in the hardened image.
    Kept,
    /// Some are.
    Partial,
    /// None is: the package is gone, and so are its vulnerabilities.
    Removed,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub manager: Manager,
    /// The binary package: `nginx-light`, `libc6`.
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, `x86_64`; absent when the database does not say.
    pub arch: Option<String>,
    /// The source package advisories are filed against (Debian `Source:`, Alpine origin `o:`);
    /// the binary name when the database names none.
    pub source: String,
    /// The source version (differs from `version` for binNMUs); `version` when none is given.
    pub source_version: String,
    /// Files (not directories) the package installed that the image holds.
    pub files: u64,
    /// Of those, how many the hardened image keeps (`files` before a harden).
    pub kept: u64,
}

impl Package {
    /// A package that installed no files (a metapackage) loses nothing, so it counts as kept.
    pub fn state(&self) -> State {
        if self.files == 0 {
            State::Kept
        } else if self.kept == 0 {
            State::Removed
        } else if self.kept < self.files {
            State::Partial
        } else {
            State::Kept
        }
    }
}

/// An image's distribution and packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub os: Option<OsRelease>,
    /// Sorted by manager, then name.
    pub packages: Vec<Package>,
}

/// The distribution and packages of an image in a registry, as a scanner would read them:
/// only os-release and the package database files are set aside (within the store's limits,
/// as every image read). On a hardened image that is the pruned database, so the packages are
/// those it still holds files of.
pub async fn read_inventory(store: &Store, location: &Location) -> Result<Inventory> {
    let image = store.resolve(location).await?;
    let retain = |_layer: usize, path: &str| database::is_database(path);
    let (tree, spool, _) = read_image(store, &image, retain, false, None).await?;
    Ok(database::Database::read(&tree, &spool).inventory(None))
}
