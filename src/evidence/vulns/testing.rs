//! Inventories, records and databases the tests of the vulnerability modules share.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::database::{VulnDb, json_files};
use super::matching::scan;
use crate::image::packages::{Inventory, Manager, OsRelease, Package};

/// Real osv.dev records: see tests/data/osv/SOURCES.md.
pub(super) fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/real")
}

pub(super) fn os(id: &str, version_id: Option<&str>) -> OsRelease {
    OsRelease {
        id: id.into(),
        version_id: version_id.map(Into::into),
        ..OsRelease::default()
    }
}

pub(super) fn deb(name: &str, version: &str, source: &str, source_version: &str) -> Package {
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

pub(super) fn apk(name: &str, version: &str, origin: &str) -> Package {
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

pub(super) fn inventory(os: OsRelease, packages: Vec<Package>) -> Inventory {
    Inventory {
        os: Some(os),
        packages,
    }
}

/// A database from records given inline, through the same parsing the loader uses.
pub(super) fn db_of(records: &[&str]) -> VulnDb {
    let mut db = VulnDb::default();
    for record in records {
        db.insert(serde_json::from_str(record).expect("test record"));
    }
    db
}

/// A synthetic Debian 12 record for `package` with one ECOSYSTEM range of `events` and the
/// given `versions`, for exercising one rule at a time (the fixture's records are real).
pub(super) fn deb12(id: &str, package: &str, events: &str, versions: &str) -> String {
    format!(
        r#"{{"id": "{id}", "modified": "2024-01-01T00:00:00Z", "affected": [{{
            "package": {{"ecosystem": "Debian:12", "name": "{package}"}},
            "ranges": [{{"type": "ECOSYSTEM", "events": [{events}]}}],
            "versions": [{versions}]}}]}}"#
    )
}

/// (id, fixed) of each finding for one source package at `version` in bookworm.
pub(super) fn hits(db: &VulnDb, source: &str, version: &str) -> Vec<(String, Option<String>)> {
    let inv = inventory(
        os("debian", Some("12")),
        vec![deb(source, version, source, version)],
    );
    scan(db, &inv)
        .into_iter()
        .map(|f| (f.id, f.fixed))
        .collect()
}

pub(super) fn hit(id: &str, fixed: Option<&str>) -> Vec<(String, Option<String>)> {
    vec![(id.to_string(), fixed.map(Into::into))]
}

pub(super) fn zip_of(dir: &Path, out: &Path) {
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

pub(super) fn stretch() -> Inventory {
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

pub(super) fn alpine() -> Inventory {
    inventory(
        os("alpine", Some("3.20.3")),
        vec![
            apk("musl", "1.2.5-r0", "musl"),
            apk("musl-utils", "1.2.5-r0", "musl"),
            apk("zlib", "1.3.1-r1", "zlib"),
        ],
    )
}
