//! The filesystem an image's layers add up to, as metadata only: which path holds what after
//! every layer is applied with OCI semantics (whiteouts, opaque directories, replacement of a
//! directory by a file), and symlink resolution inside it. File contents are never held here.

use std::collections::BTreeMap;
use std::ops::Bound;

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    /// A hard link to `target` (a normalized path) as it was in the same layer.
    HardLink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One path's metadata as the layer that last wrote it had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Index of the layer this entry comes from.
    pub layer: usize,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub uname: Option<String>,
    pub gname: Option<String>,
    /// PAX records worth keeping: extended attributes (`SCHILY.xattr.*`) and sub-second times.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Node {
    /// A directory no layer described: what an unpacker creates for a missing parent.
    pub fn implicit_dir() -> Node {
        Node {
            layer: 0,
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            uname: None,
            gname: None,
            pax: Vec::new(),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// What an entry did to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The entry now lives at this (normalized) path.
    Added(String),
    /// A whiteout or opaque marker: it removed lower paths and is not itself a file.
    Whiteout,
    /// The root directory, or a path that normalizes to nothing: ignored.
    Ignored,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// How many symlinks one resolution may follow, as Linux allows (ELOOP beyond).
const MAX_LINKS: usize = 40;

/// Paths are kept relative to the root, without a leading `/` or `./`: `usr/bin/env`.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Most paths [`Tree::over_limit`] allows; none when not set.
    max_entries: Option<u64>,
}

/// Where a path leads: the existing path at the end, and every symlink followed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: String,
    pub links: Vec<String>,
}

/// `/./usr//bin/../lib/` → `usr/lib`; lexical only (`..` over a symlink is not resolved here).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `usr/lib/x` → `usr/lib`; a top-level path's parent is the root `""`.
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Every ancestor directory of `path`, nearest last: `a/b/c` → `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree that reports when it holds more than `max` paths.
    pub fn with_max_entries(max: u64) -> Tree {
        Tree {
            max_entries: Some(max),
            ..Tree::default()
        }
    }

    /// The limit, when the tree holds more paths than it allows.
    pub fn over_limit(&self) -> Option<u64> {
        self.max_entries
            .filter(|&max| self.nodes.len() as u64 > max)
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// Paths strictly under directory `dir` (`""` is the root), in order.
    pub fn descendants<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range::<String, _>((Bound::Included(prefix.clone()), Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty())
    }

    /// Applies one layer entry named `raw_path` (as written in the tar) from layer `node.layer`.
    pub fn apply(&mut self, raw_path: &str, node: Node) -> Applied {
        let path = normalize(raw_path);
        if path.is_empty() {
            return Applied::Ignored;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), path.as_str()),
        };
        // A parent that is a symlink in the tree is followed, as an unpacker that stays inside
        // the root does (a layer writing `lib/x` over `lib -> usr/lib` writes `usr/lib/x`).
        let dir = self.real_dir(&dir);
        if name == OPAQUE {
            self.remove_below(&dir, node.layer);
            return Applied::Whiteout;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let target = join(&dir, hidden);
            self.remove_lower(&target, node.layer);
            return Applied::Whiteout;
        }
        let path = join(&dir, name);
        // Replacing a path removes what was under it, also under a directory no entry named:
        // a file left below a symlink would be reachable through it, outside the root.
        if !node.is_dir() {
            self.remove_below(&path, usize::MAX);
        }
        let mut node = node;
        // A hard link names its source as the layer wrote it; it lands where that path's
        // directories lead, as the entry's own path does.
        if let Kind::HardLink(source) = &node.kind {
            node.kind = Kind::HardLink(self.real_path(source));
        }
        self.nodes.insert(path.clone(), node);
        Applied::Added(path)
    }

    /// Where an entry named `raw_path` lands: normalized, its directory's symlinks followed.
    pub fn real_path(&self, raw_path: &str) -> String {
        let path = normalize(raw_path);
        match path.rsplit_once('/') {
            Some((dir, name)) => join(&self.real_dir(dir), name),
            None => path,
        }
    }

    /// `dir` with every symlink among its components replaced by where it leads; components
    /// that do not exist (yet) are kept as written.
    fn real_dir(&self, dir: &str) -> String {
        if dir.is_empty() || !ancestors_and_self(dir).any(|p| self.is_symlink(p)) {
            return dir.to_string();
        }
        match self.resolve_parent(dir) {
            Some(real) => real,
            None => dir.to_string(),
        }
    }

    fn is_symlink(&self, path: &str) -> bool {
        matches!(
            self.nodes.get(path),
            Some(Node {
                kind: Kind::Symlink(_),
                ..
            })
        )
    }

    /// Removes `path` and everything below it that came from a layer before `layer`.
    fn remove_lower(&mut self, path: &str, layer: usize) {
        if self.nodes.get(path).is_some_and(|n| n.layer < layer) {
            self.nodes.remove(path);
        }
        self.remove_below(path, layer);
    }

    /// Removes everything strictly below directory `dir` that came from a layer before `layer`.
    fn remove_below(&mut self, dir: &str, layer: usize) {
        let doomed: Vec<String> = self
            .descendants(dir)
            .filter(|(_, n)| n.layer < layer)
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.nodes.remove(&p);
        }
    }

    /// Follows `path` (absolute or root-relative) through every symlink, as `open()` would,
    /// to a path that exists. `None` when it leads nowhere or loops.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        let mut links = Vec::new();
        let path = self.walk(path, true, &mut links)?;
        Some(Resolved { path, links })
    }

    /// Like [`Tree::resolve`] but records the links followed into `links` and does not follow
    /// a symlink in the last component (as `lstat()` would).
    pub fn resolve_nofollow(&self, path: &str, links: &mut Vec<String>) -> Option<String> {
        self.walk(path, false, links)
    }

    fn resolve_parent(&self, dir: &str) -> Option<String> {
        let mut links = Vec::new();
        self.walk(dir, true, &mut links)
    }

    fn walk(&self, path: &str, follow_last: bool, links: &mut Vec<String>) -> Option<String> {
        // Components still to visit, in reverse so the next one is at the end.
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut current = String::new();
        let mut followed = 0;
        while let Some(component) = todo.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    current = parent(&current).to_string();
                    continue;
                }
                _ => {}
            }
            let candidate = join(&current, &component);
            let node = self.nodes.get(&candidate);
            let is_last = todo.is_empty();
            match node {
                Some(Node {
                    kind: Kind::Symlink(target),
                    ..
                }) if !is_last || follow_last => {
                    followed += 1;
                    if followed > MAX_LINKS {
                        return None;
                    }
                    links.push(candidate);
                    if target.starts_with('/') {
                        current.clear();
                    }
                    todo.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(str::to_string),
                    );
                }
                Some(n) => {
                    if !is_last && !n.is_dir() {
                        return None;
                    }
                    current = candidate;
                }
                // A directory no layer named but that holds entries exists all the same.
                None if self.descendants(&candidate).next().is_some() => {
                    current = candidate;
                }
                None => return None,
            }
        }
        Some(current)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    ancestors(path).chain(std::iter::once(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(layer: usize, kind: Kind) -> Node {
        Node {
            layer,
            kind,
            ..Node::implicit_dir()
        }
    }

    fn paths(t: &Tree) -> Vec<&str> {
        t.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./usr//bin/"), "usr/bin");
        assert_eq!(normalize("/a/./b/../c"), "a/c");
        assert_eq!(normalize("./"), "");
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers_only() {
        let mut t = Tree::new();
        for p in [
            "etc/", "etc/a", "etc/b", "etc/d/", "etc/d/x", "opt/", "opt/keep",
        ] {
            let kind = if p.ends_with('/') {
                Kind::Dir
            } else {
                Kind::File
            };
            t.apply(p, node(0, kind));
        }
        assert_eq!(t.apply("etc/.wh.a", node(1, Kind::File)), Applied::Whiteout);
        t.apply("etc/.wh.d", node(1, Kind::File));
        // The opaque marker may come after entries of its own layer: those stay.
        t.apply("opt/new", node(1, Kind::File));
        t.apply("opt/.wh..wh..opq", node(1, Kind::File));
        assert_eq!(paths(&t), ["etc", "etc/b", "opt", "opt/new"]);
    }

    #[test]
    fn a_file_replacing_a_directory_removes_its_children() {
        let mut t = Tree::new();
        t.apply("d/", node(0, Kind::Dir));
        t.apply("d/x", node(0, Kind::File));
        t.apply("d/", node(1, Kind::Dir));
        assert_eq!(
            paths(&t),
            ["d", "d/x"],
            "a directory over a directory merges"
        );
        t.apply("d", node(2, Kind::Symlink("elsewhere".into())));
        assert_eq!(paths(&t), ["d"]);
    }

    #[test]
    fn replacing_a_directory_no_entry_named_removes_its_children_too() {
        let mut t = Tree::new();
        t.apply("dir/passwd", node(0, Kind::File));
        t.apply("dir", node(0, Kind::Symlink("/etc".into())));
        assert_eq!(paths(&t), ["dir"]);
    }

    #[test]
    fn a_hard_link_source_lands_where_its_directories_lead() {
        let mut t = Tree::new();
        t.apply("usr/lib/", node(0, Kind::Dir));
        t.apply("lib", node(0, Kind::Symlink("usr/lib".into())));
        t.apply("lib/a.so", node(1, Kind::File));
        t.apply("lib/b.so", node(1, Kind::HardLink("lib/a.so".into())));
        assert_eq!(
            t.get("usr/lib/b.so").map(|n| &n.kind),
            Some(&Kind::HardLink("usr/lib/a.so".into()))
        );
    }

    #[test]
    fn resolves_through_symlink_chains() {
        let mut t = Tree::new();
        t.apply("lib", node(0, Kind::Symlink("usr/lib".into())));
        t.apply(
            "usr/lib/libz.so.1",
            node(0, Kind::Symlink("libz.so.1.3".into())),
        );
        t.apply("usr/lib/libz.so.1.3", node(0, Kind::File));
        t.apply("usr/bin/", node(0, Kind::Dir));
        t.apply("bin", node(0, Kind::Symlink("/usr/bin".into())));
        t.apply("usr/bin/loop", node(0, Kind::Symlink("loop".into())));
        t.apply(
            "usr/bin/up",
            node(0, Kind::Symlink("../lib/libz.so.1".into())),
        );
        let r = t.resolve("/lib/libz.so.1").unwrap();
        assert_eq!(r.path, "usr/lib/libz.so.1.3");
        assert_eq!(r.links, ["lib", "usr/lib/libz.so.1"]);
        assert_eq!(t.resolve("bin/up").unwrap().path, "usr/lib/libz.so.1.3");
        assert_eq!(t.resolve("/bin/loop"), None);
        assert_eq!(t.resolve("/lib/missing"), None);
        assert_eq!(t.resolve("/usr/lib/libz.so.1.3/x"), None);
        let mut links = Vec::new();
        assert_eq!(
            t.resolve_nofollow("/lib/libz.so.1", &mut links).as_deref(),
            Some("usr/lib/libz.so.1")
        );
        // A layer writing through a symlinked directory lands in its target.
        assert_eq!(
            t.apply("lib/libnew.so", node(1, Kind::File)),
            Applied::Added("usr/lib/libnew.so".into())
        );
    }
}
