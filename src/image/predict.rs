//! What a hardening of an image would remove at most, before anything runs: a policy in
//! `mode: Report` shows it for every workload it selects.
//!
//! The least any hardening keeps is what the image's command line needs to start: the programs
//! of its Entrypoint and Cmd (found through the config's `PATH` in the image, symlinks
//! followed, a script's `#!` interpreter too) and everything the harden's own analysis adds to
//! them (ELF interpreter and libraries through ld.so.conf, symlink chains, `/etc/passwd`).
//! Everything else counts as removable. A real hardening keeps more (what the sensor sees the
//! app open: configuration, data, helpers it runs), so the prediction is an upper bound.

use std::collections::BTreeSet;
use std::io::Read;

use indicatif::ProgressBar;
use serde::Serialize;

use super::analysis::select::{Selection, Wanted};
use super::config;
use super::distribution::store::{Image, Location, Store};
use super::error::Result;
use super::harden::{complete, ld_library_path, read_image, refill};
use super::inspect::{self, Inspection};
use super::packages::Inventory;
use super::packages::database::Database;
use super::reading::spool::Spool;
use super::reading::tree::{Kind, Tree, normalize};
use crate::api::policy::Prediction;
use crate::evidence::vulns::{VulnDb, VulnSummary, compare};

/// The `PATH` a runtime (runc, containerd) uses when the image's environment sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How much of a program is read to find a `#!` line (the kernel reads at most 256 bytes).
const SHEBANG_BYTES: u64 = 256;
/// Re-reads allowed to find the entrypoint's scripts (a script's interpreter is not a script
/// the kernel would run either, so one level is all that matters).
const SCRIPT_PASSES: usize = 2;

/// A prediction and what the controller needs beside it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Predicted {
    #[serde(flatten)]
    pub prediction: Prediction,
    /// Compressed bytes, summed over the source's layers.
    pub source_bytes: u64,
    /// The least a hardened layer holds, compressed: the minimal set's share of the files'
    /// bytes applied to `source_bytes` (an estimate: libraries compress about as the rest).
    pub kept_bytes_at_least: u64,
    /// Bytes of regular files, uncompressed: all of them, and those of the minimal set.
    pub file_bytes: u64,
    pub minimal_file_bytes: u64,
    /// The programs the command line starts, as found in the image (`/usr/sbin/nginx`).
    pub entrypoint: Vec<String>,
    /// Non-directory paths of the minimal set: how many, and which (root-relative).
    pub minimal_files: u64,
    #[serde(skip)]
    pub minimal: BTreeSet<String>,
    /// The installed packages, for matching known vulnerabilities.
    #[serde(skip)]
    pub inventory: Inventory,
    /// The same, with `kept` counting only the minimal set's files.
    #[serde(skip)]
    pub minimal_inventory: Inventory,
}

impl Predicted {
    /// Fills `prediction.vulnerabilities` with the known vulnerabilities of the image's
    /// installed packages, and `vulnerabilities_removable` with the summary's `removed`: those
    /// of packages none of whose files is in the minimal set, at most what a hardening removes.
    pub fn match_vulnerabilities(&mut self, db: &VulnDb) -> VulnSummary {
        let summary = compare(db, &self.inventory, &self.minimal_inventory);
        self.prediction.vulnerabilities =
            Some(u32::try_from(summary.before.total).unwrap_or(u32::MAX));
        self.prediction.vulnerabilities_removable =
            Some(u32::try_from(summary.removed.len()).unwrap_or(u32::MAX));
        summary
    }
}

/// A container's `command` and `args`, which replace the image's Entrypoint and Cmd as
/// Kubernetes does: `command` alone drops Cmd too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
}

impl Overrides {
    /// The Entrypoint and Cmd the container runs with.
    fn apply(&self, config: &serde_json::Value) -> (Vec<String>, Vec<String>) {
        match (&self.command, &self.args) {
            (Some(command), args) => (command.clone(), args.clone().unwrap_or_default()),
            (None, Some(args)) => (config::strings(config, "Entrypoint"), args.clone()),
            (None, None) => (
                config::strings(config, "Entrypoint"),
                config::strings(config, "Cmd"),
            ),
        }
    }
}

/// Reads `location` once (within the store's limits, as every image read) and predicts what a
/// hardening would remove at most, for the image's own command line.
pub async fn predict(
    store: &Store,
    location: &Location,
    progress: Option<&ProgressBar>,
) -> Result<Predicted> {
    predict_for(store, location, &Overrides::default(), progress).await
}

/// [`predict`] for a container that runs the image with its own `command` and `args`.
pub async fn predict_for(
    store: &Store,
    location: &Location,
    overrides: &Overrides,
    progress: Option<&ProgressBar>,
) -> Result<Predicted> {
    let image = store.resolve(location).await?;
    let env_path = path_dirs(&image.config);
    let workdir = image.config["config"]["WorkingDir"]
        .as_str()
        .unwrap_or("/")
        .to_string();
    let (entrypoint, cmd) = overrides.apply(&image.config);
    let names = commands(&entrypoint, &cmd);
    // Named by file name only: the first pass sets aside the programs wherever they are, the
    // loader's configuration, shared libraries, the package databases and what inspect reads.
    let first = Wanted {
        seen: names.iter().map(|n| format!("/{n}")).collect(),
        ld_library_path: ld_library_path(&image.config),
        ..Default::default()
    };
    let (mut tree, mut spool, _) =
        read_image(store, &image, first.first_pass(), false, progress).await?;
    let mut passes = 1;
    let programs = loop {
        let mut missing = BTreeSet::new();
        let programs = programs(&tree, &spool, &names, &env_path, &workdir, &mut missing);
        if missing.is_empty() || passes >= SCRIPT_PASSES {
            break programs;
        }
        (tree, spool) = refill(store, &image, tree, spool, missing).await?;
        passes += 1;
    };
    // What inspect reads is set aside by the first pass already (a test checks); read it before
    // the selection's passes, which only add.
    let facts = inspect::facts(&image, &tree, &spool);
    let database = Database::read(&tree, &spool);
    let wanted = Wanted {
        seen: programs.iter().cloned().collect(),
        ld_library_path: first.ld_library_path,
        ..Default::default()
    };
    let (tree, _spool, selection, _) = complete(store, &image, tree, spool, &wanted).await?;
    Ok(assemble(
        &image, &tree, &facts, &database, &selection, programs,
    ))
}

fn assemble(
    image: &Image,
    tree: &Tree,
    facts: &Inspection,
    database: &Database,
    selection: &Selection,
    entrypoint: Vec<String>,
) -> Predicted {
    let keep = &selection.keep;
    let file_bytes = regular_bytes(tree, |_| true);
    let minimal_file_bytes = regular_bytes(tree, |p| keep.contains(p));
    let source_bytes = image.compressed_size();
    let minimal: BTreeSet<String> = tree
        .iter()
        .filter(|(p, n)| !n.is_dir() && keep.contains(p.as_str()))
        .map(|(p, _)| p.clone())
        .collect();
    let inventory = database.inventory(None);
    let packages = facts
        .packages
        .or_else(|| (!inventory.packages.is_empty()).then_some(inventory.packages.len() as u64));
    Predicted {
        prediction: Prediction {
            digest: facts.image.clone(),
            os: facts.os.clone(),
            packages,
            files: facts.files,
            shells: removable(&facts.shells, keep),
            package_managers: removable(&facts.package_managers, keep),
            setuid: removable(&facts.setuid, keep),
            vulnerabilities: None,
            vulnerabilities_removable: None,
            removable_percent: removable_percent(minimal_file_bytes, file_bytes),
        },
        source_bytes,
        kept_bytes_at_least: share(source_bytes, minimal_file_bytes, file_bytes),
        file_bytes,
        minimal_file_bytes,
        entrypoint,
        minimal_files: minimal.len() as u64,
        minimal,
        minimal_inventory: database.inventory(Some(keep)),
        inventory,
    }
}

/// The directories of the image's `PATH`, or the runtime's default.
fn path_dirs(config: &serde_json::Value) -> Vec<String> {
    let path = config::strings(config, "Env")
        .iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// The commands the image's command line starts for certain: the first word; the Cmd's first
/// word when an Entrypoint comes before it (entrypoint scripts end in `exec "$@"`); and the
/// first word of a shell's `-c` script.
fn commands(entrypoint: &[String], cmd: &[String]) -> Vec<String> {
    let argv: Vec<&String> = entrypoint.iter().chain(cmd).collect();
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: &str| {
        if !n.is_empty() && !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    };
    let Some(first) = argv.first() else {
        return Vec::new();
    };
    push(first);
    if !entrypoint.is_empty()
        && let Some(c) = cmd.first()
        && !c.starts_with('-')
    {
        push(c);
    }
    let base = first.rsplit('/').next().unwrap_or(first);
    if base.ends_with("sh") || base == "busybox" {
        let script = argv
            .iter()
            .position(|a| a.as_str() == "-c")
            .and_then(|i| argv.get(i + 1));
        if let Some(word) = script.and_then(|s| s.split_whitespace().next()) {
            // `exec nginx …` runs nginx.
            let word = if word == "exec" {
                script
                    .and_then(|s| s.split_whitespace().nth(1))
                    .unwrap_or("")
            } else {
                word
            };
            push(word);
        }
    }
    names
}

/// Where the runtime finds `name`: a path with a `/` as written (relative to `workdir`),
/// otherwise the first executable non-directory of that name in a `PATH` directory. The
/// absolute path as named, before symlinks (the selection follows and keeps them).
fn find_program(tree: &Tree, name: &str, path: &[String], workdir: &str) -> Option<String> {
    let exists = |candidate: &str| {
        tree.resolve(candidate)
            .and_then(|r| tree.get(&r.path).cloned())
            .is_some_and(|n| !n.is_dir() && n.mode & 0o111 != 0)
    };
    let candidates: Vec<String> = if name.contains('/') {
        let joined = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("{workdir}/{name}")
        };
        vec![joined]
    } else {
        path.iter().map(|d| format!("{d}/{name}")).collect()
    };
    candidates
        .into_iter()
        .find(|c| exists(c))
        .map(|c| format!("/{}", normalize(&c)))
}

/// The interpreter a `#!` line names, and the program `env` is asked to run, if any.
fn shebang(head: &[u8]) -> Vec<String> {
    let Some(rest) = head.strip_prefix(b"#!") else {
        return Vec::new();
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Vec::new();
    };
    let mut found = vec![interpreter.to_string()];
    if interpreter.rsplit('/').next() == Some("env")
        && let Some(program) = words.find(|w| !w.starts_with('-') && !w.contains('='))
    {
        found.push(program.to_string());
    }
    found
}

/// The programs of `names` found in the image, with the interpreters their `#!` lines name;
/// contents not set aside yet are noted in `missing`.
fn programs(
    tree: &Tree,
    spool: &Spool,
    names: &[String],
    path: &[String],
    workdir: &str,
    missing: &mut BTreeSet<(usize, String)>,
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for name in names {
        let Some(program) = find_program(tree, name, path, workdir) else {
            continue;
        };
        let interpreters = head(tree, spool, &program, missing)
            .map(|h| shebang(&h))
            .unwrap_or_default();
        for p in std::iter::once(program).chain(
            interpreters
                .iter()
                .filter_map(|i| find_program(tree, i, path, workdir)),
        ) {
            if !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// The first bytes of the file `path` leads to.
fn head(
    tree: &Tree,
    spool: &Spool,
    path: &str,
    missing: &mut BTreeSet<(usize, String)>,
) -> Option<Vec<u8>> {
    let r = tree.resolve(path)?;
    let node = tree.get(&r.path)?;
    let content = match &node.kind {
        Kind::File => r.path.clone(),
        Kind::HardLink(target) => target.clone(),
        _ => return None,
    };
    let Some(range) = spool.get(node.layer, &content) else {
        missing.insert((node.layer, content));
        return None;
    };
    let mut bytes = Vec::new();
    spool
        .open(range)
        .take(SHEBANG_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Bytes of the regular files whose paths `pick` admits (a hard link's bytes are its
/// target's, counted once).
fn regular_bytes(tree: &Tree, pick: impl Fn(&str) -> bool) -> u64 {
    tree.iter()
        .filter(|(p, n)| n.kind == Kind::File && pick(p))
        .map(|(_, n)| n.size)
        .sum()
}

/// `/`-prefixed paths (as inspect lists them) outside `keep`, root-relative (as the policy's
/// status names them).
fn removable(found: &[String], keep: &BTreeSet<String>) -> Vec<String> {
    found
        .iter()
        .map(|p| p.trim_start_matches('/'))
        .filter(|p| !keep.contains(*p))
        .map(str::to_string)
        .collect()
}

/// `100 − kept/total × 100`, rounded down; 0 for an image without file bytes.
fn removable_percent(kept: u64, total: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    let kept = u128::from(kept.min(total));
    let total = u128::from(total);
    let kept_percent = (kept * 100).div_ceil(total);
    (100 - kept_percent) as u8
}

/// `whole × part / of`, rounded down.
fn share(whole: u64, part: u64, of: u64) -> u64 {
    if of == 0 {
        return 0;
    }
    (u128::from(whole) * u128::from(part.min(of)) / u128::from(of)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reading::scan::Retain;
    use crate::image::reading::tree::Node;

    fn node(kind: Kind, mode: u32, size: u64) -> Node {
        Node {
            kind,
            mode,
            size,
            ..Node::implicit_dir()
        }
    }

    /// `usr/sbin/nginx` (executable), `bin -> usr/bin`, `usr/bin/sh -> dash`, `usr/bin/dash`,
    /// `etc/nginx.conf` (not executable), `usr/local/bin` (a directory).
    fn tree() -> Tree {
        let mut t = Tree::new();
        t.apply("usr/sbin/nginx", node(Kind::File, 0o755, 1000));
        t.apply("usr/bin/dash", node(Kind::File, 0o755, 100));
        t.apply("usr/bin/sh", node(Kind::Symlink("dash".into()), 0o777, 0));
        t.apply("bin", node(Kind::Symlink("usr/bin".into()), 0o777, 0));
        t.apply("etc/nginx.conf", node(Kind::File, 0o644, 10));
        t.apply("usr/local/bin/", node(Kind::Dir, 0o755, 0));
        t.apply("usr/local/bin/nginx.conf", node(Kind::File, 0o644, 1));
        t
    }

    fn dirs(path: &str) -> Vec<String> {
        path.split(':').map(str::to_string).collect()
    }

    #[test]
    fn programs_are_found_through_path_and_symlinks() {
        let t = tree();
        let path = dirs("/usr/local/bin:/usr/sbin:/bin");
        assert_eq!(
            find_program(&t, "nginx", &path, "/").as_deref(),
            Some("/usr/sbin/nginx")
        );
        // Through the `bin -> usr/bin` and `sh -> dash` links: the selection keeps the chain.
        assert_eq!(
            find_program(&t, "sh", &path, "/").as_deref(),
            Some("/bin/sh")
        );
        let keep = crate::image::analysis::select::select(
            &t,
            &Spool::new().expect("spool"),
            &Wanted {
                seen: ["/bin/sh".to_string()].into(),
                ..Default::default()
            },
        )
        .keep;
        for p in ["bin", "usr/bin/sh", "usr/bin/dash"] {
            assert!(keep.contains(p), "{p} in {keep:?}");
        }
        // Not on PATH, not executable, or a directory: not a program.
        assert_eq!(find_program(&t, "dash", &dirs("/usr/sbin"), "/"), None);
        assert_eq!(find_program(&t, "nginx.conf", &dirs("/etc"), "/"), None);
        assert_eq!(find_program(&t, "bin", &dirs("/usr/local"), "/"), None);
        assert_eq!(
            find_program(&t, "nginx.conf", &dirs("/usr/local/bin"), "/"),
            None
        );
        // A path is taken as written, relative to the working directory.
        assert_eq!(
            find_program(&t, "sbin/nginx", &[], "/usr").as_deref(),
            Some("/usr/sbin/nginx")
        );
        assert_eq!(
            find_program(&t, "/bin/dash", &[], "/tmp").as_deref(),
            Some("/bin/dash")
        );
    }

    #[test]
    fn the_command_line_names_entrypoint_cmd_and_shell_scripts() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            commands(&s(&["/usr/sbin/nginx", "-g", "daemon off;"]), &[]),
            ["/usr/sbin/nginx"]
        );
        assert_eq!(commands(&[], &s(&["/bin/sh"])), ["/bin/sh"]);
        assert_eq!(
            commands(&s(&["/docker-entrypoint.sh"]), &s(&["nginx", "-g", "x"])),
            ["/docker-entrypoint.sh", "nginx"]
        );
        assert_eq!(
            commands(&s(&["/entry"]), &s(&["--flag"])),
            ["/entry"],
            "an option is not a command"
        );
        assert_eq!(
            commands(&[], &s(&["sh", "-c", "exec nginx -g 'daemon off;'"])),
            ["sh", "nginx"]
        );
        assert!(commands(&[], &[]).is_empty());
        assert_eq!(path_dirs(&serde_json::json!({})), dirs(DEFAULT_PATH));
        assert_eq!(
            path_dirs(&serde_json::json!({"config": {"Env": ["A=1", "PATH=/bin:/opt/x"]}})),
            ["/bin", "/opt/x"]
        );
    }

    #[test]
    fn a_containers_command_and_args_replace_the_images() {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let config = serde_json::json!({"config": {"Entrypoint": ["/entry"], "Cmd": ["nginx"]}});
        let with = |command: Option<&[&str]>, args: Option<&[&str]>| {
            Overrides {
                command: command.map(s),
                args: args.map(s),
            }
            .apply(&config)
        };
        assert_eq!(with(None, None), (s(&["/entry"]), s(&["nginx"])));
        assert_eq!(
            with(None, Some(&["httpd"])),
            (s(&["/entry"]), s(&["httpd"]))
        );
        assert_eq!(with(Some(&["/bin/sh"]), None), (s(&["/bin/sh"]), vec![]));
        assert_eq!(
            with(Some(&["/bin/sh"]), Some(&["-c", "x"])),
            (s(&["/bin/sh"]), s(&["-c", "x"]))
        );
    }

    #[test]
    fn a_script_brings_its_interpreter() {
        assert_eq!(shebang(b"#!/bin/sh\nset -e\n"), ["/bin/sh"]);
        assert_eq!(shebang(b"#! /bin/bash -e\n"), ["/bin/bash"]);
        assert_eq!(
            shebang(b"#!/usr/bin/env -S python3 -u\n"),
            ["/usr/bin/env", "python3"]
        );
        assert!(shebang(b"\x7fELF\x02").is_empty());
        assert!(shebang(b"#!\n").is_empty());

        let mut t = tree();
        t.apply("entry.sh", node(Kind::File, 0o755, 20));
        let mut spool = Spool::new().expect("spool");
        spool
            .put(0, "entry.sh", &mut &b"#!/bin/sh\nexec \"$@\"\n"[..])
            .expect("put");
        spool.flush().expect("flush");
        let mut missing = BTreeSet::new();
        let names = [
            "/entry.sh".to_string(),
            "nginx".to_string(),
            "absent".to_string(),
        ];
        let found = programs(&t, &spool, &names, &dirs("/usr/sbin"), "/", &mut missing);
        assert_eq!(found, ["/entry.sh", "/bin/sh", "/usr/sbin/nginx"]);
        // nginx's content was not set aside: noted, to be read again.
        assert!(
            missing.contains(&(0, "usr/sbin/nginx".to_string())),
            "{missing:?}"
        );
    }

    #[test]
    fn removable_percent_rounds_down_and_stays_in_range() {
        assert_eq!(removable_percent(0, 0), 0);
        assert_eq!(removable_percent(0, 1000), 100);
        assert_eq!(removable_percent(1000, 1000), 0);
        assert_eq!(removable_percent(2000, 1000), 0);
        assert_eq!(removable_percent(123, 1000), 87);
        assert_eq!(removable_percent(1, 1000), 99, "99.9 rounds down");
        assert_eq!(
            removable_percent(u64::MAX / 2, u64::MAX),
            50,
            "just under half kept"
        );
        assert_eq!(share(1000, 1, 4), 250);
        assert_eq!(share(1000, 5, 0), 0);
        assert_eq!(share(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn lists_leave_out_the_minimal_set() {
        let found = vec!["/bin/busybox".to_string(), "/bin/bash".to_string()];
        let keep: BTreeSet<String> = ["bin".to_string(), "bin/busybox".to_string()].into();
        assert_eq!(removable(&found, &keep), ["bin/bash"]);
        assert!(removable(&[], &keep).is_empty());
    }

    #[test]
    fn the_first_pass_sets_aside_what_inspect_reads() {
        let first = Wanted::default().first_pass();
        for path in inspect::READ {
            assert!(first.retain(0, path, 1), "{path}");
        }
    }
}
