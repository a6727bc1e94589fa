//! Unpacking for `whittle local` against layers written to reach outside the root filesystem:
//! a hard link whose source runs through a symlinked directory must not link a host file into
//! the rootfs (a later chown, chmod or write through the link would change the host's file).
//! The images are OCI layouts written with whittle's store; the root filesystems are unpacked
//! with whittle's `unpack`, as `whittle local` does, and the host's files are looked at after.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytes::Bytes;
use whittle::image::distribution::credentials::Credentials;
use whittle::image::distribution::registry::RegistryOptions;
use whittle::image::distribution::store::{Location, Store};
use whittle::image::media::{Flavor, descriptor};
use whittle::image::unpack::unpack;

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One tar entry of a crafted layer.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// Owner, mode and time every entry gets: those of `like`, so that even an unpacker that
/// followed a link onto it would leave its metadata as it was.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Meta {
    fn of(path: &Path) -> Meta {
        let m = std::fs::metadata(path).expect("stat");
        Meta {
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            gid: u64::from(m.gid()),
            mtime: m.mtime() as u64,
        }
    }
}

fn layer(entries: &[Entry<'_>], meta: &Meta) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        let (path, data): (&str, &[u8]) = match entry {
            Entry::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                (path, data)
            }
            Entry::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (path, &[])
            }
            Entry::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(target).expect("link name");
                (path, &[])
            }
            Entry::HardLink(path, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(target).expect("link name");
                (path, &[])
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, path, data).expect("tar entry");
    }
    let tar = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn store() -> Store {
    Store::new(Credentials::anonymous(), RegistryOptions::default())
}

/// Writes an image of `layers` into a new layout and unpacks it as `whittle local` would;
/// returns the temporary directory holding both (`rootfs/` is the root filesystem), or the
/// unpack's error.
async fn unpacked(layers: Vec<Vec<u8>>) -> (tempfile::TempDir, Result<(), String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let at = Location::parse(&format!("oci:{}:t", dir.path().join("layout").display()))
        .expect("location");
    let store = store();
    let mut descriptors = Vec::new();
    for layer in layers {
        let size = layer.len() as u64;
        let digest = store.put_blob(&at, Bytes::from(layer)).await.expect("blob");
        descriptors.push(descriptor(GZIP_LAYER, &digest, size));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    store
        .put_image(&at, Flavor::Oci, &config, &descriptors)
        .await
        .expect("image");
    let image = store.resolve(&at).await.expect("resolve");
    let result = unpack(&store, &image, &dir.path().join("rootfs"), None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    (dir, result)
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `dir/secret` (under a directory no entry names), then `dir` replaced by a symlink to a
/// host directory, then a hard link to `dir/secret`: the file outside the rootfs keeps its one
/// link, and nothing in the rootfs is it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_through_a_symlinked_parent_does_not_reach_a_host_file() {
    // In the temporary directory, where the rootfs is too: the same filesystem, so a link
    // would succeed if it were attempted.
    let outside = tempfile::tempdir().expect("tmp");
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "host content\n").expect("write");
    let meta = Meta::of(&secret);
    let before = std::fs::metadata(&secret).expect("stat");
    let target = outside.path().to_str().expect("utf-8");
    let (dir, result) = unpacked(vec![layer(
        &[
            Entry::File("dir/secret", b"image content\n"),
            Entry::Symlink("dir", target),
            Entry::HardLink("x", "dir/secret"),
        ],
        &meta,
    )])
    .await;
    let after = std::fs::metadata(&secret).expect("stat");
    let rootfs = dir.path().join("rootfs");
    assert_eq!(
        after.nlink(),
        before.nlink(),
        "the host file got a link from the rootfs (unpack: {result:?})"
    );
    assert!(!same_inode(&rootfs.join("x"), &secret));
    assert_eq!(std::fs::read(&secret).unwrap(), b"host content\n");
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        1,
        "unpack wrote into the host directory"
    );
    result.expect("unpack");
    assert_eq!(
        std::fs::read_link(rootfs.join("dir")).unwrap(),
        outside.path()
    );
}

/// The same against `/etc/passwd` itself, whose link count says whether anything links it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_through_a_symlink_to_etc_does_not_link_the_hosts_passwd() {
    let passwd = Path::new("/etc/passwd");
    let meta = Meta::of(passwd);
    let before = std::fs::metadata(passwd).expect("stat /etc/passwd");
    let (dir, result) = unpacked(vec![layer(
        &[
            Entry::File("dir/passwd", b"root:x:0:0:image:/root:/bin/sh\n"),
            Entry::Symlink("dir", "/etc"),
            Entry::HardLink("x", "dir/passwd"),
        ],
        &meta,
    )])
    .await;
    let after = std::fs::metadata(passwd).expect("stat /etc/passwd");
    assert_eq!(
        after.nlink(),
        before.nlink(),
        "/etc/passwd got a link from the rootfs (unpack: {result:?})"
    );
    assert!(!same_inode(&dir.path().join("rootfs/x"), passwd));
    assert_eq!(
        (after.mode(), after.uid(), after.gid(), after.mtime()),
        (before.mode(), before.uid(), before.gid(), before.mtime())
    );
    result.expect("unpack");
}

/// A hard link written through a symlinked directory that stays inside the root
/// (`lib -> usr/lib`) links to the file where the symlink leads, as a runtime's unpacker does.
#[tokio::test(flavor = "multi_thread")]
async fn a_hard_link_through_a_symlink_inside_the_root_links_where_it_leads() {
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
    };
    let base = layer(
        &[
            Entry::Dir("usr/"),
            Entry::Dir("usr/lib/"),
            Entry::Symlink("lib", "usr/lib"),
        ],
        &meta,
    );
    let top = layer(
        &[
            Entry::File("lib/libz.so.1", b"ELF, say\n"),
            Entry::HardLink("lib/libz.so", "lib/libz.so.1"),
        ],
        &meta,
    );
    let (dir, result) = unpacked(vec![base, top]).await;
    result.expect("unpack");
    let rootfs = dir.path().join("rootfs");
    assert!(
        same_inode(
            &rootfs.join("usr/lib/libz.so"),
            &rootfs.join("usr/lib/libz.so.1")
        ),
        "not linked"
    );
    assert_eq!(
        std::fs::read(rootfs.join("usr/lib/libz.so")).unwrap(),
        b"ELF, say\n"
    );
}

/// Replacing a path removes what was under it: a file under a directory no entry names is
/// gone once a symlink takes the directory's place, not written where the symlink leads.
#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_directory_by_a_symlink_removes_what_was_under_it() {
    let meta = Meta {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
    };
    let (dir, result) = unpacked(vec![
        layer(
            &[Entry::Dir("etc/"), Entry::File("data/f", b"old\n")],
            &meta,
        ),
        layer(&[Entry::Symlink("data", "etc")], &meta),
    ])
    .await;
    result.expect("unpack");
    let rootfs = dir.path().join("rootfs");
    assert_eq!(
        std::fs::read_link(rootfs.join("data")).unwrap(),
        Path::new("etc")
    );
    assert!(!rootfs.join("etc/f").exists());
}
