//! Reading an image's package databases (dpkg `status`, distroless `status.d/`, apk
//! `installed`) and os-release from the tree and spool a harden built, and writing them back
//! pruned to what the hardened image keeps.

use std::collections::{BTreeMap, BTreeSet};

use super::{Inventory, Manager, OsRelease, Package};
use crate::image::reading::spool::Spool;
use crate::image::reading::tree::{Kind, Tree};

const OS_RELEASE: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];
const DPKG_STATUS: &str = "var/lib/dpkg/status";
const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";
const DPKG_INFO: &str = "var/lib/dpkg/info/";
const APK_INSTALLED: &str = "lib/apk/db/installed";

/// Files whose contents the inventory reads, so a harden sets them aside on its first pass.
pub fn is_database(path: &str) -> bool {
    OS_RELEASE.contains(&path)
        || path == DPKG_STATUS
        || path == APK_INSTALLED
        || path
            .strip_prefix(DPKG_STATUS_D)
            .is_some_and(|rest| rest.starts_with('/'))
        || (path.starts_with(DPKG_INFO) && (path.ends_with(".list") || path.ends_with(".md5sums")))
}

/// The text of `path` (root-relative) in the image, following symlinks; `None` when absent or
/// when its content was not set aside.
fn text(tree: &Tree, spool: &Spool, path: &str) -> Option<String> {
    let r = tree.resolve(path)?;
    let node = tree.get(&r.path)?;
    if node.kind != Kind::File {
        return None;
    }
    let bytes = spool.read(spool.get(node.layer, &r.path)?).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn parse_os_release(text: &str) -> OsRelease {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
                .filter(|v| !v.is_empty())
        })
    };
    OsRelease {
        id: field("ID").unwrap_or_else(|| "linux".to_string()),
        version_id: field("VERSION_ID"),
        codename: field("VERSION_CODENAME"),
        pretty_name: field("PRETTY_NAME").or_else(|| field("NAME")),
    }
}

/// A file list (dpkg `.list` or `.md5sums`): each line, with the tree path it names.
#[derive(Debug, Clone)]
struct FileList {
    path: String,
    /// `None` for a line naming nothing in the tree; `Some("")` for the root (`/.`).
    lines: Vec<(String, Option<String>)>,
}

/// One package as its database records it, with the files it owns.
#[derive(Debug, Clone)]
struct Entry {
    package: Package,
    /// The database text this entry came from (a dpkg stanza, an apk block).
    record: String,
    /// For a distroless `status.d/<name>` entry, that file.
    stanza_file: Option<String>,
    lists: Vec<FileList>,
    /// Owned non-directory paths, as the tree holds them (parents' symlinks resolved).
    owned: Vec<String>,
}

/// The package databases of an image, read once and used for the source inventory, the
/// hardened one and the pruned database.
#[derive(Debug, Clone, Default)]
pub struct Database {
    os: Option<OsRelease>,
    /// The paths os-release is at, symlinks included, so a harden can keep it.
    os_paths: BTreeSet<String>,
    entries: Vec<Entry>,
    dpkg_status: bool,
    apk: bool,
}

/// What the hardened image adds so scanners see what remains.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Paths kept as the source has them (os-release and the links to it).
    pub keep: BTreeSet<String>,
    /// Database files written with new contents.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Blank-line separated records (dpkg stanzas, apk package blocks).
fn records(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n\n")
        .map(|s| s.trim_matches('\n'))
        .filter(|s| !s.trim().is_empty())
}

fn field<'a>(stanza: &'a str, key: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|v| v.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A dpkg stanza as a package, when it is installed (not merely configured or half-removed).
fn dpkg_package(stanza: &str) -> Option<Package> {
    // Distroless stanzas carry no Status: being in status.d is being installed.
    if let Some(status) = field(stanza, "Status")
        && status.split_whitespace().last() != Some("installed")
    {
        return None;
    }
    let name = field(stanza, "Package")?.to_string();
    let version = field(stanza, "Version")?.to_string();
    // `Source: glibc`, or `Source: glibc (2.36-9+deb12u4)` when the binary's version differs.
    let (source, source_version) = match field(stanza, "Source") {
        Some(s) => match s.split_once(' ') {
            Some((n, v)) => (
                n.to_string(),
                v.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string(),
            ),
            None => (s.to_string(), version.clone()),
        },
        None => (name.clone(), version.clone()),
    };
    Some(Package {
        manager: Manager::Dpkg,
        name,
        version,
        arch: field(stanza, "Architecture").map(str::to_string),
        source,
        source_version,
        files: 0,
        kept: 0,
    })
}

/// An apk `installed` block as a package and the files it owns (`F:` directory, `R:` file).
fn apk_package(block: &str) -> Option<(Package, Vec<String>)> {
    let name = field(block, "P")?.to_string();
    let version = field(block, "V")?.to_string();
    let mut dir = String::new();
    let mut owned = Vec::new();
    for line in block.lines() {
        if let Some(d) = line.strip_prefix("F:") {
            dir = d.trim_matches('/').to_string();
        } else if let Some(f) = line.strip_prefix("R:") {
            owned.push(if dir.is_empty() {
                f.to_string()
            } else {
                format!("{dir}/{f}")
            });
        }
    }
    let package = Package {
        manager: Manager::Apk,
        source: field(block, "o").unwrap_or(&name).to_string(),
        source_version: version.clone(),
        arch: field(block, "A").map(str::to_string),
        name,
        version,
        files: 0,
        kept: 0,
    };
    Some((package, owned))
}

/// An apk block without the `R:` files that are not kept (and their `Z:`/`a:` lines) and the
/// `F:` directories that are not (and their `M:` lines).
fn prune_apk(block: &str, kept: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut dir = String::new();
    let mut dir_kept = true;
    let mut file_kept = true;
    let mut in_file = false;
    for line in block.lines() {
        let (key, value) = line.split_once(':').unwrap_or((line, ""));
        let keep_line = match key {
            "F" => {
                dir = value.trim_matches('/').to_string();
                dir_kept = kept(&dir);
                in_file = false;
                dir_kept
            }
            "M" if !in_file => dir_kept,
            "R" => {
                in_file = true;
                let path = if dir.is_empty() {
                    value.to_string()
                } else {
                    format!("{dir}/{value}")
                };
                file_kept = dir_kept && kept(&path);
                file_kept
            }
            "Z" | "a" if in_file => file_kept,
            _ => true,
        };
        if keep_line {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Paths a dpkg `.list` (one absolute path per line) or `.md5sums` (`<md5>  <path>`) line names.
fn listed_path(line: &str, md5sums: bool) -> Option<&str> {
    let path = if md5sums {
        line.split_once("  ").map(|(_, p)| p)?
    } else {
        line
    };
    Some(path.trim_start_matches('/'))
}

/// A path a package installed as a file or link, not as a directory. On a merged /usr, the
/// `/lib` a package lists as a directory is a symlink to one: that is still a directory.
fn is_owned_file(tree: &Tree, path: &str) -> bool {
    match tree.get(path).map(|n| &n.kind) {
        None | Some(Kind::Dir) => false,
        Some(Kind::Symlink(_)) => !tree
            .resolve(path)
            .is_some_and(|r| tree.get(&r.path).is_some_and(|n| n.is_dir())),
        Some(_) => true,
    }
}

impl Database {
    /// Reads os-release and the dpkg and apk databases from an image whose database files
    /// ([`is_database`]) were set aside.
    pub fn read(tree: &Tree, spool: &Spool) -> Database {
        let mut db = Database::default();
        for path in OS_RELEASE {
            if let (Some(r), Some(t)) = (tree.resolve(path), text(tree, spool, path)) {
                db.os.get_or_insert_with(|| parse_os_release(&t));
                db.os_paths.insert(path.to_string());
                db.os_paths.insert(r.path);
                db.os_paths.extend(r.links);
            }
        }
        if let Some(status) = text(tree, spool, DPKG_STATUS) {
            db.dpkg_status = true;
            for stanza in records(&status) {
                let Some(package) = dpkg_package(stanza) else {
                    continue;
                };
                let arch = package.arch.clone().unwrap_or_default();
                let name = &package.name;
                // Multi-Arch: same packages name their lists `<name>:<arch>`.
                let lists = [
                    format!("{DPKG_INFO}{name}:{arch}.list"),
                    format!("{DPKG_INFO}{name}.list"),
                    format!("{DPKG_INFO}{name}:{arch}.md5sums"),
                    format!("{DPKG_INFO}{name}.md5sums"),
                ];
                db.push(tree, spool, package, stanza, None, &lists);
            }
        }
        let status_d: Vec<String> = tree
            .descendants(DPKG_STATUS_D)
            .filter(|(p, n)| n.kind == Kind::File && !p.ends_with(".md5sums"))
            .map(|(p, _)| p.clone())
            .collect();
        for path in status_d {
            let Some(t) = text(tree, spool, &path) else {
                continue;
            };
            for stanza in records(&t) {
                if let Some(package) = dpkg_package(stanza) {
                    let lists = [format!("{path}.md5sums")];
                    db.push(tree, spool, package, stanza, Some(path.clone()), &lists);
                }
            }
        }
        if let Some(installed) = text(tree, spool, APK_INSTALLED) {
            db.apk = true;
            for block in records(&installed) {
                if let Some((package, owned)) = apk_package(block) {
                    db.entries.push(Entry {
                        package,
                        record: block.to_string(),
                        stanza_file: None,
                        lists: Vec::new(),
                        owned,
                    });
                }
            }
        }
        for e in &mut db.entries {
            e.owned.retain(|p| is_owned_file(tree, p));
            e.owned.sort();
            e.owned.dedup();
            e.package.files = e.owned.len() as u64;
            e.package.kept = e.package.files;
        }
        db.entries.sort_by(|a, b| {
            (a.package.manager, &a.package.name).cmp(&(b.package.manager, &b.package.name))
        });
        db
    }

    fn push(
        &mut self,
        tree: &Tree,
        spool: &Spool,
        package: Package,
        stanza: &str,
        stanza_file: Option<String>,
        candidates: &[String],
    ) {
        let mut lists = Vec::new();
        let mut owned = Vec::new();
        for path in candidates {
            let Some(t) = text(tree, spool, path) else {
                continue;
            };
            let md5sums = path.ends_with(".md5sums");
            let lines = t
                .lines()
                .map(|line| {
                    let real = listed_path(line, md5sums).and_then(|p| match p {
                        "" | "." => Some(String::new()),
                        // The parents' symlinks followed (`lib/x` → `usr/lib/x` on a merged
                        // /usr), not the last component's: a package owns the link itself.
                        p => tree.resolve_nofollow(p, &mut Vec::new()),
                    });
                    (line.to_string(), real)
                })
                .collect::<Vec<_>>();
            owned.extend(lines.iter().filter_map(|(_, r)| r.clone()));
            lists.push(FileList {
                path: path.clone(),
                lines,
            });
        }
        self.entries.push(Entry {
            package,
            record: stanza.to_string(),
            stanza_file,
            lists,
            owned,
        });
    }

    /// The distribution, when the image has an os-release.
    pub fn os(&self) -> Option<&OsRelease> {
        self.os.as_ref()
    }

    /// The packages, with `kept` counted against `keep` (the hardened image's paths), or as
    /// the source holds them when `keep` is `None`.
    pub fn inventory(&self, keep: Option<&BTreeSet<String>>) -> Inventory {
        let packages = self
            .entries
            .iter()
            .map(|e| {
                let mut p = e.package.clone();
                if let Some(keep) = keep {
                    p.kept = e.owned.iter().filter(|o| keep.contains(o.as_str())).count() as u64;
                }
                p
            })
            .collect();
        Inventory {
            os: self.os.clone(),
            packages,
        }
    }

    /// os-release as the source has it, and the database files rewritten for the packages
    /// that still have files in `keep`, their file lists trimmed to the kept paths.
    pub fn pruned(&self, keep: &BTreeSet<String>) -> Pruned {
        let mut out = Pruned {
            keep: self.os_paths.clone(),
            files: BTreeMap::new(),
        };
        let kept = |p: &str| p.is_empty() || keep.contains(p);
        let mut status = String::new();
        let mut apk = String::new();
        for e in &self.entries {
            let remains = e.owned.is_empty() || e.owned.iter().any(|o| keep.contains(o.as_str()));
            if !remains {
                continue;
            }
            let record = format!("{}\n\n", e.record);
            match (e.package.manager, &e.stanza_file) {
                (Manager::Apk, _) => {
                    apk.push_str(&prune_apk(&e.record, &kept));
                    apk.push('\n');
                }
                (Manager::Dpkg, Some(file)) => {
                    out.files.insert(file.clone(), record.into_bytes());
                }
                (Manager::Dpkg, None) => status.push_str(&record),
            }
            for list in &e.lists {
                let lines: String = list
                    .lines
                    .iter()
                    .filter(|(_, real)| real.as_deref().is_some_and(kept))
                    .map(|(line, _)| format!("{line}\n"))
                    .collect();
                out.files.insert(list.path.clone(), lines.into_bytes());
            }
        }
        if self.dpkg_status {
            out.files
                .insert(DPKG_STATUS.to_string(), status.into_bytes());
        }
        if self.apk {
            out.files
                .insert(APK_INSTALLED.to_string(), apk.into_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::packages::State;
    use crate::image::reading::tree::Node;

    fn node(kind: Kind) -> Node {
        Node {
            kind,
            ..Node::implicit_dir()
        }
    }

    /// A merged-/usr Debian tree with two packages: libc6 (one file kept) and tar (none).
    fn debian() -> (Tree, Spool) {
        let mut tree = Tree::new();
        let mut spool = Spool::new().expect("spool");
        tree.apply("lib", node(Kind::Symlink("usr/lib".into())));
        for d in ["usr", "usr/lib", "usr/bin", "etc", "var/lib/dpkg/info"] {
            tree.apply(d, node(Kind::Dir));
        }
        let files: &[(&str, &str)] = &[
            (
                "usr/lib/os-release",
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
            ),
            (
                DPKG_STATUS,
                "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n shared libraries\n\nPackage: tar\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.34+dfsg-1.2+deb12u1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
            ),
            (
                "var/lib/dpkg/info/libc6:amd64.list",
                "/.\n/lib\n/lib/libc.so.6\n/usr/lib/libm.so.6\n/usr/share/doc/libc6/gone\n",
            ),
            (
                "var/lib/dpkg/info/libc6:amd64.md5sums",
                "aaaa  lib/libc.so.6\nbbbb  usr/lib/libm.so.6\n",
            ),
            (
                "var/lib/dpkg/info/tar.list",
                "/.\n/usr\n/usr/bin\n/usr/bin/tar\n",
            ),
            ("usr/lib/libc.so.6", "libc"),
            ("usr/lib/libm.so.6", "libm"),
            ("usr/bin/tar", "tar"),
        ];
        for (path, content) in files {
            tree.apply(path, node(Kind::File));
            spool.put(0, path, &mut content.as_bytes()).expect("put");
        }
        tree.apply(
            "etc/os-release",
            node(Kind::Symlink("../usr/lib/os-release".into())),
        );
        spool.flush().expect("flush");
        (tree, spool)
    }

    #[test]
    fn reads_the_distribution_packages_and_their_files() {
        let (tree, spool) = debian();
        let db = Database::read(&tree, &spool);
        let os = db.os().expect("os-release");
        assert_eq!(
            (os.id.as_str(), os.version_id.as_deref()),
            ("debian", Some("12"))
        );
        assert_eq!(os.codename.as_deref(), Some("bookworm"));
        let inv = db.inventory(None);
        let names: Vec<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["libc6", "tar"],
            "a package that is not installed is not listed"
        );
        let libc = &inv.packages[0];
        assert_eq!(
            (libc.source.as_str(), libc.source_version.as_str()),
            ("glibc", "2.36-9+deb12u4")
        );
        // `/lib/libc.so.6` is `usr/lib/libc.so.6` through the merged-/usr link; a listed file
        // the image lacks (the removed doc) is not counted.
        assert_eq!((libc.files, libc.kept, libc.state()), (2, 2, State::Kept));
    }

    #[test]
    fn the_hardened_inventory_counts_what_is_kept() {
        let (tree, spool) = debian();
        let db = Database::read(&tree, &spool);
        let keep: BTreeSet<String> = ["usr", "usr/lib", "usr/lib/libc.so.6", "lib"]
            .map(String::from)
            .into();
        let inv = db.inventory(Some(&keep));
        let states: Vec<(&str, u64, State)> = inv
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.kept, p.state()))
            .collect();
        assert_eq!(
            states,
            [("libc6", 1, State::Partial), ("tar", 0, State::Removed)]
        );
    }

    #[test]
    fn the_pruned_database_lists_only_what_remains() {
        let (tree, spool) = debian();
        let db = Database::read(&tree, &spool);
        let keep: BTreeSet<String> = ["usr", "usr/lib", "usr/lib/libc.so.6", "lib"]
            .map(String::from)
            .into();
        let pruned = db.pruned(&keep);
        assert!(
            pruned.keep.contains("etc/os-release") && pruned.keep.contains("usr/lib/os-release")
        );
        let file = |p: &str| String::from_utf8(pruned.files[p].clone()).expect("utf-8");
        let status = file(DPKG_STATUS);
        assert!(status.starts_with("Package: libc6\n"), "{status}");
        assert!(
            status.contains(" shared libraries\n"),
            "continuation lines survive: {status}"
        );
        assert!(!status.contains("Package: tar"), "{status}");
        assert!(!status.contains("Package: gone"), "{status}");
        assert_eq!(
            file("var/lib/dpkg/info/libc6:amd64.list"),
            "/.\n/lib\n/lib/libc.so.6\n"
        );
        assert_eq!(
            file("var/lib/dpkg/info/libc6:amd64.md5sums"),
            "aaaa  lib/libc.so.6\n"
        );
        assert!(
            !pruned.files.contains_key("var/lib/dpkg/info/tar.list"),
            "a removed package's list is not written"
        );
    }

    #[test]
    fn distroless_status_d_and_apk_are_read_and_pruned() {
        let mut tree = Tree::new();
        let mut spool = Spool::new().expect("spool");
        let files: &[(&str, &str)] = &[
            (
                "var/lib/dpkg/status.d/libssl3",
                "Package: libssl3\nVersion: 3.0.15-1~deb12u1\nArchitecture: amd64\nSource: openssl\n",
            ),
            (
                "var/lib/dpkg/status.d/libssl3.md5sums",
                "cccc  usr/lib/libssl.so.3\ndddd  usr/lib/libcrypto.so.3\n",
            ),
            (
                APK_INSTALLED,
                "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\nZ:Q1x=\na:0:0:755\nR:libc.musl-x86_64.so.1\nZ:Q1y=\nF:usr/share/doc\nM:0:0:755\nR:README\nZ:Q1z=\n\nP:busybox\nV:1.36.1-r29\nA:x86_64\no:busybox\nF:bin\nR:busybox\n",
            ),
            ("usr/lib/libssl.so.3", "ssl"),
            ("usr/lib/libcrypto.so.3", "crypto"),
            ("lib/ld-musl-x86_64.so.1", "ld"),
            ("lib/libc.musl-x86_64.so.1", "libc"),
            ("usr/share/doc/README", "doc"),
            ("bin/busybox", "bb"),
        ];
        for (path, content) in files {
            tree.apply(path, node(Kind::File));
            spool.put(0, path, &mut content.as_bytes()).expect("put");
        }
        spool.flush().expect("flush");
        let db = Database::read(&tree, &spool);
        let inv = db.inventory(None);
        let got: Vec<(Manager, &str, &str, u64)> = inv
            .packages
            .iter()
            .map(|p| (p.manager, p.name.as_str(), p.source.as_str(), p.files))
            .collect();
        assert_eq!(
            got,
            [
                (Manager::Dpkg, "libssl3", "openssl", 2),
                (Manager::Apk, "busybox", "busybox", 1),
                (Manager::Apk, "musl", "musl", 3),
            ]
        );
        let keep: BTreeSet<String> = [
            "usr",
            "usr/lib",
            "usr/lib/libssl.so.3",
            "lib",
            "lib/ld-musl-x86_64.so.1",
        ]
        .map(String::from)
        .into();
        let pruned = db.pruned(&keep);
        let file = |p: &str| String::from_utf8(pruned.files[p].clone()).expect("utf-8");
        assert_eq!(
            file("var/lib/dpkg/status.d/libssl3.md5sums"),
            "cccc  usr/lib/libssl.so.3\n"
        );
        assert!(file("var/lib/dpkg/status.d/libssl3").starts_with("Package: libssl3\n"));
        assert_eq!(
            file(APK_INSTALLED),
            "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\nZ:Q1x=\na:0:0:755\n\n",
            "busybox is gone; musl keeps only its kept file and directory"
        );
    }

    #[test]
    fn database_files_are_recognised() {
        for p in [
            "etc/os-release",
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/libc6",
            "var/lib/dpkg/info/libc6:amd64.list",
            "var/lib/dpkg/info/tar.md5sums",
            "lib/apk/db/installed",
        ] {
            assert!(is_database(p), "{p}");
        }
        for p in [
            "var/lib/dpkg/info/tar.postinst",
            "var/lib/dpkg/status-old",
            "var/lib/dpkg/status.dx/a",
        ] {
            assert!(!is_database(p), "{p}");
        }
    }
}
