//! Unpacking an image into a root filesystem on disk, for running it locally with runc. The
//! layers are merged with the same [`Tree`] harden uses (so whiteouts and opaque directories
//! mean the same thing in both), then written out path by path, parents first.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use indicatif::ProgressBar;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::distribution::store::{Image, Store};
use super::error::{ImageError, Result};
use super::harden::read_image;
use super::reading::spool::Spool;
use super::reading::tree::{Kind, Node, Tree, ancestors};

/// What went to disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Writes `image`'s filesystem under `dest` (an empty directory), owners and modes included.
pub async fn unpack(
    store: &Store,
    image: &Image,
    dest: &Path,
    progress: Option<&ProgressBar>,
) -> Result<Unpacked> {
    let (tree, spool, _) =
        read_image(store, image, |_: usize, _: &str| true, false, progress).await?;
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || materialize(&tree, &spool, &dest))
        .await
        .map_err(|e| {
            ImageError::layer(
                "unpack",
                format!("writing the root filesystem stopped: {e}"),
            )
        })?
}

fn materialize(tree: &Tree, spool: &Spool, dest: &Path) -> Result<Unpacked> {
    let mut done = Unpacked::default();
    let mut dirs: Vec<(&String, &Node)> = Vec::new();
    // Hard links last: a link may sort before its source, which must be on disk to link to.
    let is_link = |n: &Node| matches!(n.kind, Kind::HardLink(_));
    let others = tree.iter().filter(|(_, n)| !is_link(n));
    let links = tree.iter().filter(|(_, n)| is_link(n));
    for (path, node) in others.chain(links) {
        // The tree follows symlinked parents when it applies entries, so a path under a
        // symlink would only come from a layer trying to write outside the root: skip it.
        if under_symlink(tree, path) {
            continue;
        }
        let full = dest.join(path);
        let what = || format!("unpacking /{path}");
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(ImageError::io(what()))?;
        }
        match &node.kind {
            Kind::Dir => {
                if !full.is_dir() {
                    fs::create_dir(&full).map_err(ImageError::io(what()))?;
                }
                // Modes and times of directories are set last: writing inside changes them.
                dirs.push((path, node));
                done.entries += 1;
                continue;
            }
            Kind::File | Kind::HardLink(_) => {
                let source = match &node.kind {
                    Kind::HardLink(t) => t.as_str(),
                    _ => path.as_str(),
                };
                // The source is checked as the link's own path is: link() follows symlinks in
                // its directories, and one leading out of the root would link a host file in
                // (a chown or write through the link then changes the host's file).
                if matches!(node.kind, Kind::HardLink(_)) && under_symlink(tree, source) {
                    tracing::warn!(
                        path = %path,
                        source = %source,
                        "not unpacking a hard link whose source runs through a symlink"
                    );
                    continue;
                }
                let same_file = matches!(&node.kind, Kind::HardLink(t)
                    if tree.get(t).is_some_and(|n| n.layer == node.layer && n.kind == Kind::File));
                if same_file && regular_file_within(dest, source) {
                    fs::hard_link(dest.join(source), &full).map_err(ImageError::io(what()))?;
                    done.entries += 1;
                    continue;
                }
                let range = spool.get(node.layer, source).ok_or_else(|| {
                    ImageError::layer("unpack", format!("no content for /{path}"))
                })?;
                let mut out = File::create(&full).map_err(ImageError::io(what()))?;
                done.bytes +=
                    io::copy(&mut spool.open(range), &mut out).map_err(ImageError::io(what()))?;
            }
            Kind::Symlink(target) => {
                symlink(target, &full).map_err(ImageError::io(what()))?;
                lchown(&full, Some(node.uid as u32), Some(node.gid as u32))
                    .map_err(ImageError::io(what()))?;
                done.entries += 1;
                continue;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                let kind = if matches!(node.kind, Kind::Char(..)) {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(
                    &full,
                    kind,
                    Mode::from_bits_truncate(node.mode),
                    makedev(u64::from(*major), u64::from(*minor)),
                )
                .map_err(|e| ImageError::io(what())(e.into()))?;
            }
            Kind::Fifo => {
                mknod(
                    &full,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(node.mode),
                    0,
                )
                .map_err(|e| ImageError::io(what())(e.into()))?;
            }
        }
        set_metadata(&full, node).map_err(ImageError::io(what()))?;
        done.entries += 1;
    }
    // Deepest first, so setting a parent's time is not undone by its children.
    for (path, node) in dirs.into_iter().rev() {
        set_metadata(&dest.join(path), node)
            .map_err(ImageError::io(format!("unpacking /{path}")))?;
    }
    Ok(done)
}

/// Whether one of `path`'s directories is a symlink in the tree.
fn under_symlink(tree: &Tree, path: &str) -> bool {
    ancestors(path).any(|a| {
        matches!(
            tree.get(a),
            Some(Node {
                kind: Kind::Symlink(_),
                ..
            })
        )
    })
}

/// Whether `dest/path` is a regular file reached through real directories only, as written
/// so far: no component on disk is a symlink, whatever the tree says.
fn regular_file_within(dest: &Path, path: &str) -> bool {
    let is = |p: &str, want: fn(&fs::FileType) -> bool| {
        fs::symlink_metadata(dest.join(p)).is_ok_and(|m| want(&m.file_type()))
    };
    ancestors(path).all(|a| is(a, fs::FileType::is_dir)) && is(path, fs::FileType::is_file)
}

fn set_metadata(path: &Path, node: &Node) -> io::Result<()> {
    lchown(path, Some(node.uid as u32), Some(node.gid as u32))?;
    // After chown, which clears setuid/setgid bits.
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))?;
    // Opening a FIFO would block; devices and FIFOs keep the time they were made.
    if matches!(node.kind, Kind::File | Kind::HardLink(_) | Kind::Dir) {
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(node.mtime);
        File::open(path)?.set_modified(mtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn node(kind: Kind) -> Node {
        Node {
            kind,
            mode: 0o644,
            ..Node::implicit_dir()
        }
    }

    #[test]
    fn a_hard_link_source_is_checked_like_its_own_path() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("dir")).unwrap();
        assert!(!regular_file_within(root.path(), "dir/f"));
        std::fs::write(root.path().join("g"), "in the root").unwrap();
        assert!(regular_file_within(root.path(), "g"));

        let mut tree = Tree::new();
        tree.apply("x", node(Kind::HardLink("dir/f".into())));
        let target = outside.path().to_str().unwrap().to_string();
        tree.apply("dir", node(Kind::Symlink(target)));
        assert!(under_symlink(&tree, "dir/f"));
        let dest = root.path().join("rootfs");
        let spool = Spool::new().unwrap();
        materialize(&tree, &spool, &dest).unwrap();
        assert!(std::fs::symlink_metadata(dest.join("x")).is_err());
        assert_eq!(
            std::fs::metadata(outside.path().join("f")).unwrap().nlink(),
            1
        );
    }
}
