//! `whittle inspect`: what an image holds that matters for its attack surface — OS, package
//! manager and packages, shells, setuid/setgid files, users — and its size per layer.

use indicatif::ProgressBar;
use serde::Serialize;

use super::analysis::select::read_text;
use super::analysis::surface;
use super::distribution::store::{Image, Location, Store};
use super::error::Result;
use super::harden::read_image;
use super::reading::spool::Spool;
use super::reading::tree::Tree;

/// Files read for the facts below; nothing else is set aside.
pub const READ: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
    "lib/apk/db/installed",
    "etc/passwd",
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub shell: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub image: String,
    /// `PRETTY_NAME` from os-release, when there is one.
    pub os: Option<String>,
    /// `dpkg`, `apk` or `rpm`, when its package database is present (a hardened image keeps a
    /// pruned one, so scanners see what remains).
    pub package_database: Option<String>,
    pub packages: Option<u64>,
    /// Package manager programs (`apt`, `dpkg`, `apk`, `pip`, … in a `bin` directory).
    pub package_managers: Vec<String>,
    pub layers: Vec<Layer>,
    /// Compressed bytes, summed over the layers.
    pub total_size: u64,
    pub files: u64,
    pub shells: Vec<String>,
    pub setuid: Vec<String>,
    pub users: Vec<User>,
}

fn text(tree: &Tree, spool: &Spool, path: &str) -> Option<String> {
    // Inspect set aside every file it reads, so nothing is ever missing.
    read_text(tree, spool, path, &mut Default::default())
}

fn os_name(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}

/// Installed packages in a dpkg status file: stanzas whose Status ends in `installed`.
fn dpkg_installed(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("Status:") && l.trim_end().ends_with(" installed"))
        .count() as u64
}

fn users(passwd: &str) -> Vec<User> {
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then(|| User {
                name: f[0].to_string(),
                uid: f[2].parse().unwrap_or(u32::MAX),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub async fn inspect(
    store: &Store,
    location: &Location,
    progress: Option<&ProgressBar>,
) -> Result<Inspection> {
    let image = store.resolve(location).await?;
    let retain = |_layer: usize, path: &str| READ.contains(&path);
    let (tree, spool, _) = read_image(store, &image, retain, false, progress).await?;
    Ok(facts(&image, &tree, &spool))
}

/// What `inspect` reports of `image`, from its tree and a spool that holds at least the files
/// of [`READ`] (a prediction reads the image once for this and its own analysis).
pub fn facts(image: &Image, tree: &Tree, spool: &Spool) -> Inspection {
    let os = text(tree, spool, "etc/os-release")
        .or_else(|| text(tree, spool, "usr/lib/os-release"))
        .and_then(|t| os_name(&t));
    let (package_database, packages) = if let Some(s) = text(tree, spool, "var/lib/dpkg/status") {
        (Some("dpkg"), Some(dpkg_installed(&s)))
    } else if let Some(s) = text(tree, spool, "lib/apk/db/installed") {
        (
            Some("apk"),
            Some(s.lines().filter(|l| l.starts_with("P:")).count() as u64),
        )
    } else if tree.get("var/lib/rpm").is_some() {
        (Some("rpm"), None)
    } else {
        (None, None)
    };
    let shells = surface::list(tree, surface::is_shell);
    let setuid = surface::list(tree, |_, n| surface::is_setuid(n));
    let users = text(tree, spool, "etc/passwd")
        .map(|t| users(&t))
        .unwrap_or_default();
    Inspection {
        image: image.pinned.to_string(),
        os,
        package_database: package_database.map(str::to_string),
        package_managers: surface::list(tree, surface::is_package_manager),
        packages,
        layers: image
            .layers
            .iter()
            .map(|l| Layer {
                digest: l.digest.clone(),
                size: l.size.max(0) as u64,
            })
            .collect(),
        total_size: image.compressed_size(),
        files: tree.iter().filter(|(_, n)| !n.is_dir()).count() as u64,
        shells,
        setuid,
        users,
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        writeln!(f, "image            {}", self.image)?;
        writeln!(
            f,
            "os               {}",
            self.os.as_deref().unwrap_or("unknown")
        )?;
        match (&self.package_database, self.packages) {
            (Some(db), Some(n)) => writeln!(f, "packages         {n} installed ({db} database)")?,
            (Some(db), None) => writeln!(f, "packages         {db} database")?,
            _ => writeln!(f, "packages         none (no package database)")?,
        }
        writeln!(
            f,
            "size             {:.1} MB compressed in {} layer(s), {} files",
            mb(self.total_size),
            self.layers.len(),
            self.files
        )?;
        for l in &self.layers {
            writeln!(f, "  {}  {:>9.1} MB", l.digest, mb(l.size))?;
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        writeln!(f, "shells           {}", list(&self.shells))?;
        writeln!(f, "package managers {}", list(&self.package_managers))?;
        writeln!(f, "setuid/setgid    {}", list(&self.setuid))?;
        let users: Vec<String> = self
            .users
            .iter()
            .map(|u| format!("{}({})", u.name, u.uid))
            .collect();
        write!(f, "users            {}", list(&users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_os_release_dpkg_status_and_passwd() {
        assert_eq!(
            os_name("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let status = "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: deinstall ok config-files\n\nPackage: c\nStatus: install ok installed\n";
        assert_eq!(dpkg_installed(status), 2);
        let u = users(
            "root:x:0:0:root:/root:/bin/bash\nbad line\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n",
        );
        assert_eq!(u.len(), 2);
        assert_eq!((u[1].name.as_str(), u[1].uid), ("www-data", 33));
    }
}
