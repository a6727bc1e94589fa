//! Which paths the hardened image keeps: what the reports saw, plus what the app needs but a
//! sensor cannot see (ELF interpreters and libraries, symlink chains, parent directories,
//! `/etc/passwd` and `/etc/group`, `--include`), minus `--exclude`.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::elf;
use crate::image::codec::early::{EARLY_MIN, Likely};
use crate::image::error::{ImageError, Result};
use crate::image::reading::scan::Retain;
use crate::image::reading::spool::{Range, Spool};
use crate::image::reading::tree::{Kind, Resolved, Tree, ancestors, normalize};

/// Always kept when present, so that user and group names resolve (getpwnam, `USER name`).
pub const ALWAYS: &[&str] = &["etc/passwd", "etc/group"];
/// Read to learn where the loader looks; their contents are always set aside.
const LOADER_CONFIG: &[&str] = &["etc/ld.so.conf", "etc/ld-musl-x86_64.path"];
const LOADER_CONFIG_DIR: &str = "etc/ld.so.conf.d/";

/// `--include` and `--exclude` as given: absolute paths or globs (`/usr/share/zoneinfo/**`;
/// a pattern without `/` matches a name anywhere, like `*.pyc`).
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    include_paths: Vec<String>,
    include_globs: GlobSet,
    exclude: GlobSet,
    has_exclude: bool,
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<Glob> {
    let anchored = if pattern.starts_with('/') {
        pattern.to_string()
    } else if pattern.contains('/') {
        format!("/{pattern}")
    } else {
        format!("/**/{pattern}")
    };
    GlobBuilder::new(&anchored)
        .literal_separator(true)
        .build()
        .map_err(|e| ImageError::Pattern {
            pattern: pattern.to_string(),
            reason: e.kind().to_string(),
        })
}

fn glob_set(patterns: &[&str]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p)?);
    }
    b.build().map_err(|e| ImageError::Pattern {
        pattern: patterns.join(" "),
        reason: e.to_string(),
    })
}

impl Patterns {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Patterns> {
        for p in include.iter().chain(exclude) {
            if p.trim().is_empty() {
                return Err(ImageError::Pattern {
                    pattern: p.clone(),
                    reason: "empty pattern".into(),
                });
            }
        }
        let (globs, paths): (Vec<&String>, Vec<&String>) = include.iter().partition(|p| is_glob(p));
        Ok(Patterns {
            include_paths: paths.iter().map(|p| normalize(p)).collect(),
            include_globs: glob_set(&globs.iter().map(|s| s.as_str()).collect::<Vec<_>>())?,
            exclude: glob_set(&exclude.iter().map(String::as_str).collect::<Vec<_>>())?,
            has_exclude: !exclude.is_empty(),
        })
    }

    /// True when `path` (root-relative) or a directory above it is named by `--include`.
    pub fn included(&self, path: &str) -> bool {
        self.include_globs.is_match(format!("/{path}"))
            || self.include_paths.iter().any(|p| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
    }

    /// True when `path` or a directory above it matches `--exclude`.
    pub fn excluded(&self, path: &str) -> bool {
        self.has_exclude
            && ancestors(path)
                .chain(std::iter::once(path))
                .any(|p| self.exclude.is_match(format!("/{p}")))
    }
}

/// What a harden starts from.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Absolute paths the reports saw existing.
    pub seen: BTreeSet<String>,
    /// Every other path the reports name (probed and absent, created during the run): the
    /// directory such a path is in must exist for the app to find or create it there.
    pub touched: BTreeSet<String>,
    pub patterns: Patterns,
    /// `LD_LIBRARY_PATH` from the image's environment.
    pub ld_library_path: Vec<String>,
}

impl Wanted {
    /// What to set aside on the first pass, before anything is resolved.
    pub fn first_pass(&self) -> FirstPass {
        let names: HashSet<String> = self
            .seen
            .iter()
            .filter_map(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        FirstPass {
            names: Arc::new(Mutex::new(names)),
            patterns: Arc::new(self.patterns.clone()),
            speculative: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// File names worth setting aside on the first pass: a file is most likely needed when a report
/// names it, under this or another path (a symlinked directory), or names a symlink to it (a
/// versioned soname: `libz.so.1 -> libz.so.1.3`, which layers list before the file).
///
/// Shared libraries are set aside too, up to [`SPECULATIVE_BYTES`]: they usually sit in a
/// layer below the program that needs them, and a library analysis finds that no report named
/// would otherwise cost a second read of that whole layer.
#[derive(Clone)]
pub struct FirstPass {
    names: Arc<Mutex<HashSet<String>>>,
    patterns: Arc<Patterns>,
    speculative: Arc<AtomicU64>,
}

/// How much of the spool may hold libraries no report named (the disk, not memory, pays).
pub const SPECULATIVE_BYTES: u64 = 256 << 20;

fn is_shared_library(path: &str) -> bool {
    let name = file_name(path);
    (name.ends_with(".so") || name.contains(".so.")) && path.contains("lib")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl FirstPass {
    /// Named by a report (by file name), or needed whatever the reports say.
    fn named(&self, path: &str) -> bool {
        let named = self
            .names
            .lock()
            .map(|n| n.contains(file_name(path)))
            .unwrap_or(true);
        // The kernel, not the app, opens a program's ELF interpreter, so no report names it.
        let loader = ["ld-linux", "ld64.so", "ld-musl"]
            .iter()
            .any(|p| file_name(path).starts_with(p));
        named
            || loader
            || ALWAYS.contains(&path)
            || LOADER_CONFIG.contains(&path)
            || path.starts_with(LOADER_CONFIG_DIR)
            || crate::image::packages::database::is_database(path)
            || self.patterns.included(path)
    }
}

impl Retain for FirstPass {
    fn retain(&self, _layer: usize, path: &str, size: u64) -> bool {
        self.named(path)
            || (is_shared_library(path)
                && self.speculative.fetch_add(size, Ordering::Relaxed) + size <= SPECULATIVE_BYTES)
    }

    /// Large files: those the reports name are nearly always kept (a name can match a file
    /// elsewhere), libraries set aside in case are compressed when nothing named waits.
    fn early(&self, _layer: usize, path: &str, size: u64) -> Option<Likely> {
        if size < EARLY_MIN || self.patterns.excluded(path) {
            return None;
        }
        Some(if self.named(path) {
            Likely::Named
        } else {
            Likely::Maybe
        })
    }

    fn symlink(&self, path: &str, target: &str) {
        if let Ok(mut names) = self.names.lock()
            && names.contains(file_name(path.trim_end_matches('/')))
        {
            names.insert(file_name(target).to_string());
        }
    }
}

/// The result: every path to write (parents included), and contents still needed.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub keep: BTreeSet<String>,
    /// `(layer, path)` contents the kept set needs that the spool does not hold yet.
    pub missing: BTreeSet<(usize, String)>,
    /// Paths kept because analysis (not a report) found them needed.
    pub added_by_analysis: usize,
    /// Report paths that are not in the image (created at run time, or on a volume).
    pub not_in_image: usize,
}

struct Closure<'a> {
    tree: &'a Tree,
    spool: &'a Spool,
    keep: BTreeSet<String>,
    queue: VecDeque<String>,
    missing: BTreeSet<(usize, String)>,
}

impl Closure<'_> {
    fn add_resolved(&mut self, r: Resolved) {
        for link in r.links {
            self.keep.insert(link);
        }
        if self.keep.insert(r.path.clone()) {
            self.queue.push_back(r.path);
        }
    }

    fn add_path(&mut self, path: &str) {
        if self.tree.get(path).is_some() && self.keep.insert(path.to_string()) {
            self.queue.push_back(path.to_string());
        }
    }

    /// The content range of the file at `path`, or a note that a second pass must fetch it.
    fn content(&mut self, layer: usize, path: &str) -> Option<Range> {
        let range = self.spool.get(layer, path);
        if range.is_none() {
            self.missing.insert((layer, path.to_string()));
        }
        range
    }

    fn system_dirs(&mut self) -> Vec<String> {
        let (tree, spool) = (self.tree, self.spool);
        let missing = &mut self.missing;
        let mut dirs = Vec::new();
        if let Some(conf) = read_text(tree, spool, "etc/ld.so.conf", missing) {
            let mut include = |pattern: &str| {
                let Ok(set) = glob_set(&[pattern]) else {
                    return Vec::new();
                };
                // The tree iterates in path order, the order ldconfig reads included files in.
                let files: Vec<String> = tree
                    .iter()
                    .filter(|(p, n)| n.kind == Kind::File && set.is_match(format!("/{p}")))
                    .map(|(p, _)| p.clone())
                    .collect();
                files
                    .iter()
                    .filter_map(|f| read_text(tree, spool, f, missing))
                    .collect()
            };
            dirs = elf::parse_ld_so_conf(&conf, &mut include, 0);
        }
        if let Some(musl) = read_text(tree, spool, "etc/ld-musl-x86_64.path", missing) {
            dirs.extend(
                musl.split([':', '\n'])
                    .map(str::trim)
                    .filter(|d| d.starts_with('/'))
                    .map(str::to_string),
            );
        }
        dirs.extend(elf::DEFAULT_DIRS.iter().map(|d| d.to_string()));
        dirs
    }

    /// Follows the ELF dependencies of the regular file kept at `path`, whose bytes are
    /// `layer`'s version of `content_path`.
    fn follow_elf(
        &mut self,
        path: &str,
        layer: usize,
        content_path: &str,
        wanted: &Wanted,
        system: &[String],
    ) {
        let Some(range) = self.content(layer, content_path) else {
            return;
        };
        let mut head = [0u8; 4];
        if self.spool.open(range).read_exact(&mut head).is_err() || !elf::is_elf(&head) {
            return;
        }
        let Some(deps) = elf::read_deps(self.spool.open(range)) else {
            return;
        };
        if let Some(interp) = &deps.interpreter
            && let Some(r) = self.tree.resolve(interp)
        {
            self.add_resolved(r);
        }
        let dirs = elf::search_dirs(&deps, &format!("/{path}"), &wanted.ld_library_path, system);
        for name in &deps.needed {
            let candidates: Vec<String> = if name.contains('/') {
                vec![name.clone()]
            } else {
                dirs.iter().map(|d| format!("{d}/{name}")).collect()
            };
            let found = candidates.iter().find_map(|c| {
                self.tree
                    .resolve(c)
                    .filter(|r| self.tree.get(&r.path).is_some_and(|n| !n.is_dir()))
            });
            if let Some(r) = found {
                self.add_resolved(r);
            }
        }
    }
}

/// The source a cached module needs: CPython loads `dir/__pycache__/m.cpython-311.pyc` (or
/// `m.cpython-311.opt-1.pyc`) only after a stat() of `dir/m.py` finds it, so a monitor blind to
/// stats (fanotify) reports the cache and not the source, and the hardened image would fail
/// with "no codec search functions registered". Certain, not a guess: PEP 3147 caches are never
/// loaded without their source.
fn pyc_source(path: &str) -> Option<String> {
    let (dir, file) = match path.rsplit_once("/__pycache__/") {
        Some((dir, file)) => (format!("{dir}/"), file),
        None => (String::new(), path.strip_prefix("__pycache__/")?),
    };
    let stem = file.strip_suffix(".pyc")?;
    let (module, tag) = stem.split_once('.')?;
    (!module.is_empty() && !tag.is_empty() && !file.contains('/'))
        .then(|| format!("{dir}{module}.py"))
}

/// Computes the kept set from `wanted` over `tree`, reading ELF files and loader configuration
/// from `spool`. When `missing` comes back non-empty, fetch those contents and call again.
pub fn select(tree: &Tree, spool: &Spool, wanted: &Wanted) -> Selection {
    let mut c = Closure {
        tree,
        spool,
        keep: BTreeSet::new(),
        queue: VecDeque::new(),
        missing: BTreeSet::new(),
    };
    let mut not_in_image = 0;
    for path in &wanted.seen {
        match tree.resolve(path) {
            Some(r) => c.add_resolved(r),
            None => not_in_image += 1,
        }
    }
    for path in wanted.touched.iter().chain(&wanted.seen) {
        if tree.resolve(path).is_some() {
            continue;
        }
        let nearest = ancestors(path.trim_start_matches('/'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find_map(|dir| {
                tree.resolve(dir)
                    .filter(|r| tree.get(&r.path).is_some_and(|n| n.is_dir()))
            });
        if let Some(r) = nearest {
            c.add_resolved(r);
        }
    }
    let from_reports = c.keep.len();
    for path in ALWAYS {
        if let Some(r) = tree.resolve(path) {
            c.add_resolved(r);
        }
    }
    let included: Vec<String> = tree
        .iter()
        .filter(|(p, _)| wanted.patterns.included(p))
        .map(|(p, _)| p.clone())
        .collect();
    for path in &included {
        c.add_path(path);
    }
    for path in &wanted.patterns.include_paths {
        // An include through a symlink (`/lib/x` with `lib -> usr/lib`) keeps the chain too.
        if let Some(r) = tree.resolve(path) {
            let dir = r.path.clone();
            c.add_resolved(r);
            let below: Vec<String> = tree.descendants(&dir).map(|(p, _)| p.clone()).collect();
            for p in below {
                c.add_path(&p);
            }
        }
    }
    let system = c.system_dirs();
    while let Some(path) = c.queue.pop_front() {
        let Some(node) = tree.get(&path) else {
            continue;
        };
        if let Some(source) = pyc_source(&path)
            && let Some(r) = tree.resolve(&source)
        {
            c.add_resolved(r);
        }
        match &node.kind {
            Kind::File => c.follow_elf(&path, node.layer, &path, wanted, &system),
            Kind::HardLink(target) => {
                // The link's bytes are its target's as of the link's layer; keep the target
                // too when it is still that same file.
                if tree
                    .get(target)
                    .is_some_and(|t| t.layer == node.layer && t.kind == Kind::File)
                {
                    c.add_path(target);
                }
                let target = target.clone();
                c.follow_elf(&path, node.layer, &target, wanted, &system);
            }
            Kind::Symlink(_) => {
                if let Some(r) = tree.resolve(&path) {
                    c.add_resolved(r);
                }
            }
            _ => {}
        }
    }
    // Symlinks that lead to something kept, with their chains.
    let dirs: HashSet<&str> = c.keep.iter().flat_map(|p| ancestors(p)).collect();
    let mut links = Vec::new();
    for (path, node) in tree.iter() {
        if matches!(node.kind, Kind::Symlink(_))
            && !c.keep.contains(path)
            && let Some(r) = tree.resolve(path)
            && (c.keep.contains(&r.path) || dirs.contains(r.path.as_str()))
        {
            links.extend(r.links);
        }
    }
    c.keep.extend(links);
    let added_by_analysis = c.keep.len().saturating_sub(from_reports);
    // The root itself is not an entry of a layer.
    let mut keep: BTreeSet<String> = c
        .keep
        .into_iter()
        .filter(|p| !p.is_empty() && !wanted.patterns.excluded(p))
        .collect();
    let parents: Vec<String> = keep
        .iter()
        .flat_map(|p| ancestors(p).map(str::to_string).collect::<Vec<_>>())
        .collect();
    keep.extend(parents);
    // What an exclude dropped needs no content.
    let missing = c
        .missing
        .into_iter()
        .filter(|(_, p)| !wanted.patterns.excluded(p))
        .collect();
    Selection {
        keep,
        missing,
        added_by_analysis,
        not_in_image,
    }
}

/// The text of the file `path` leads to, or a note in `missing` that its content is needed.
pub fn read_text(
    tree: &Tree,
    spool: &Spool,
    path: &str,
    missing: &mut BTreeSet<(usize, String)>,
) -> Option<String> {
    let r = tree.resolve(path)?;
    let node = tree.get(&r.path)?;
    if node.kind != Kind::File {
        return None;
    }
    let Some(range) = spool.get(node.layer, &r.path) else {
        missing.insert((node.layer, r.path));
        return None;
    };
    let bytes = spool.read(range).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reading::tree::Node;

    #[test]
    fn a_cached_module_keeps_its_source() {
        assert_eq!(
            pyc_source("usr/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc").as_deref(),
            Some("usr/lib/python3.11/encodings/utf_8.py")
        );
        assert_eq!(
            pyc_source("app/__pycache__/main.cpython-312.opt-1.pyc").as_deref(),
            Some("app/main.py")
        );
        assert_eq!(
            pyc_source("__pycache__/m.cpython-311.pyc").as_deref(),
            Some("m.py")
        );
        assert_eq!(
            pyc_source("app/main.pyc"),
            None,
            "a legacy pyc loads without its source"
        );
        assert_eq!(pyc_source("app/__pycache__/notes.txt"), None);

        let mut tree = Tree::new();
        for p in [
            "app/__pycache__/main.cpython-311.pyc",
            "app/main.py",
            "app/other.py",
            "app/__pycache__/gone.cpython-311.pyc",
        ] {
            tree.apply(
                p,
                Node {
                    kind: Kind::File,
                    ..Node::implicit_dir()
                },
            );
        }
        let spool = Spool::new().expect("spool");
        let wanted = Wanted {
            seen: [
                "/app/__pycache__/main.cpython-311.pyc".to_string(),
                "/app/__pycache__/gone.cpython-311.pyc".to_string(),
            ]
            .into(),
            ..Default::default()
        };
        let keep = select(&tree, &spool, &wanted).keep;
        assert!(keep.contains("app/main.py"), "{keep:?}");
        assert!(!keep.contains("app/other.py"), "{keep:?}");
    }
}
