//! Fixture images, built with tools that are not whittle's (debootstrap, umoci) so the image
//! engine is tested against an independent writer. Each is built once per machine and cached
//! under `~/.cache/whittle/fixtures/<name>-<hash of recipe>/` as an OCI layout tagged `latest`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::images::oci_layout;
use crate::images::registry::Registry;
use crate::tools;

/// A cached OCI image layout.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub layout: PathBuf,
    pub tag: String,
}

impl Fixture {
    /// `oci:<layout>:<tag>`, the transport syntax skopeo and whittle accept.
    pub fn oci_reference(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }

    /// Pushes the image with skopeo and returns `<registry>/<repo:tag>`.
    pub fn push(&self, registry: &Registry, repo_tag: &str) -> Result<String> {
        let dest = format!("{}/{repo_tag}", registry.host());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = registry.skopeo_creds() {
            cmd.args(["--dest-creds", &creds]);
        }
        cmd.arg(self.oci_reference())
            .arg(format!("docker://{dest}"));
        tools::run(&mut cmd)?;
        Ok(dest)
    }

    /// The image configuration JSON.
    pub fn config(&self) -> Result<Value> {
        oci_layout::image_config(&self.layout, &self.tag)
    }

    /// The manifest JSON.
    pub fn manifest(&self) -> Result<Value> {
        oci_layout::manifest(&self.layout, &self.tag)
    }
}

/// Debian mirror for debootstrap; overridable for machines with a local mirror.
fn mirror() -> String {
    std::env::var("WHITTLE_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

const NGINX_ENTRYPOINT: [&str; 3] = ["/usr/sbin/nginx", "-g", "daemon off;"];

/// Debian bookworm minbase with nginx-light; entrypoint `/usr/sbin/nginx -g 'daemon off;'`,
/// port 80, stop signal SIGQUIT. One layer, as `debootstrap` + `umoci insert` make it.
pub fn nginx() -> Result<Fixture> {
    let recipe = format!(
        "nginx v2: debootstrap --variant=minbase --include=nginx-light bookworm {}; rm apt caches, /dev, logs; one GNU tar layer; entrypoint {NGINX_ENTRYPOINT:?}; 80/tcp; SIGQUIT",
        mirror()
    );
    cached("nginx", &recipe, |work, layout| {
        let rootfs = work.join("rootfs");
        tools::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", "--include=nginx-light", "bookworm"])
                .arg(&rootfs)
                .arg(mirror()),
        )?;
        debootstrap_cleanup(&rootfs)?;
        umoci_new(layout)?;
        append_layer(
            layout,
            &rootfs,
            "debootstrap --variant=minbase --include=nginx-light",
        )?;
        let mut cfg = vec![
            "--config.workingdir=/".to_string(),
            "--config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "--config.exposedports=80/tcp".into(),
            "--config.stopsignal=SIGQUIT".into(),
        ];
        cfg.extend(
            NGINX_ENTRYPOINT
                .iter()
                .map(|a| format!("--config.entrypoint={a}")),
        );
        umoci_config(layout, &cfg)
    })
}

/// The pod sandbox image: one static binary, `/pause` (testbed/src/pause.c).
pub fn pause() -> Result<Fixture> {
    const SOURCE: &str = include_str!("pause.c");
    let recipe = format!("pause v1: cc -Os -static; entrypoint /pause\n{SOURCE}");
    cached("pause", &recipe, |work, layout| {
        let rootfs = work.join("rootfs");
        fs::create_dir_all(&rootfs).context(|| "creating the pause rootfs".into())?;
        fs::write(work.join("pause.c"), SOURCE).context(|| "writing pause.c".into())?;
        tools::run(
            Command::new("cc")
                .args(["-Os", "-static", "-o"])
                .arg(rootfs.join("pause"))
                .arg(work.join("pause.c")),
        )?;
        umoci_new(layout)?;
        append_layer(layout, &rootfs, "cc -Os -static pause.c")?;
        umoci_config(layout, &["--config.entrypoint=/pause".to_string()])
    })
}

/// Debian's static busybox with every applet linked in `/bin`, users root and nobody (65534),
/// `/www/index.html` to serve, and `/bin/sh` as its command. `stop_signal` sets the image's
/// StopSignal (the signal a container runtime stops it with).
pub fn busybox(stop_signal: Option<&str>) -> Result<Fixture> {
    let recipe =
        format!("busybox v1: /bin/busybox (busybox-static) + applets; stop signal {stop_signal:?}");
    let name = match stop_signal {
        Some(sig) => format!("busybox-{}", sig.to_lowercase()),
        None => "busybox".into(),
    };
    cached(&name, &recipe, |work, layout| {
        let rootfs = work.join("rootfs");
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin).context(|| "creating bin".into())?;
        fs::copy("/bin/busybox", bin.join("busybox"))
            .context(|| "copying /bin/busybox (apt-get install busybox-static)".into())?;
        let applets = tools::run(Command::new("/bin/busybox").arg("--list"))?;
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                symlink("busybox", bin.join(applet)).context(|| format!("linking {applet}"))?;
            }
        }
        write(
            &rootfs,
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )?;
        write(&rootfs, "/etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
        write(&rootfs, "/www/index.html", "hello from busybox\n")?;
        fs::create_dir_all(rootfs.join("tmp")).context(|| "creating /tmp".into())?;
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
            .context(|| "chmod /tmp".into())?;
        umoci_new(layout)?;
        append_layer(layout, &rootfs, "busybox-static")?;
        let mut cfg = vec![
            "--config.cmd=/bin/sh".to_string(),
            "--config.env=PATH=/bin".into(),
            "--config.workingdir=/".into(),
        ];
        if let Some(sig) = stop_signal {
            cfg.push(format!("--config.stopsignal={sig}"));
        }
        umoci_config(layout, &cfg)
    })
}

/// Paths in the `layers` fixture and what the upper layers did to them.
pub mod layers_paths {
    /// In the base layer and never touched: content `KEEP_CONTENT`, mode 0640, owner 1000:1000.
    pub const KEPT: &str = "/data/keep.txt";
    pub const KEEP_CONTENT: &str = "kept from the base layer\n";
    /// Deleted by a whiteout in layer 2.
    pub const DELETED: &str = "/data/delete-me.txt";
    /// A directory deleted (with its contents) by a whiteout in layer 3.
    pub const DELETED_DIR: &str = "/data/gone-dir";
    /// Replaced in layer 4: `REPLACED_OLD` in the base, `REPLACED_NEW` on top.
    pub const REPLACED: &str = "/data/replace-me.txt";
    pub const REPLACED_OLD: &str = "old content\n";
    pub const REPLACED_NEW: &str = "new content from layer 4\n";
    /// Made opaque in layer 5: `OPAQUE_OLD` entries vanish, `OPAQUE_NEW` is the only content.
    pub const OPAQUE_DIR: &str = "/opaque";
    pub const OPAQUE_OLD: [&str; 2] = ["/opaque/old.txt", "/opaque/sub/old2.txt"];
    pub const OPAQUE_NEW: &str = "/opaque/new.txt";
    /// Layer 6: a symlink chain `a -> b -> c.txt` and a hard link to `c.txt`.
    pub const LINK_A: &str = "/links/a";
    pub const LINK_B: &str = "/links/b";
    pub const LINK_TARGET: &str = "/links/c.txt";
    pub const LINK_CONTENT: &str = "the end of the chain\n";
    pub const HARD_LINK: &str = "/links/hard";
}

/// Six layers exercising OCI layer semantics: whiteouts of a file and of a directory, a replaced
/// file, an opaque directory, a symlink chain and a hard link (see [`layers_paths`]).
pub fn layers() -> Result<Fixture> {
    use layers_paths as p;
    cached(
        "layers",
        "layers v2: base; wh file; wh dir; replace; opaque; links (GNU tar layers)",
        |work, layout| {
            let base = work.join("base");
            write(&base, p::KEPT, p::KEEP_CONTENT)?;
            fs::set_permissions(at(&base, p::KEPT), fs::Permissions::from_mode(0o640))
                .context(|| "chmod keep.txt".into())?;
            std::os::unix::fs::chown(at(&base, p::KEPT), Some(1000), Some(1000))
                .context(|| "chown keep.txt".into())?;
            write(&base, p::DELETED, "to be deleted\n")?;
            write(
                &base,
                &format!("{}/inner.txt", p::DELETED_DIR),
                "inside a deleted dir\n",
            )?;
            write(&base, p::REPLACED, p::REPLACED_OLD)?;
            for old in p::OPAQUE_OLD {
                write(&base, old, "hidden by an opaque directory\n")?;
            }
            umoci_new(layout)?;
            append_layer(layout, &base, "base")?;
            let whiteout = |name: &str, path: &str| -> Result<()> {
                let dir = work.join(name);
                let (parent, file) = path.rsplit_once('/').unwrap_or(("", path));
                write(&dir, &format!("{parent}/.wh.{file}"), "")?;
                append_layer(layout, &dir, &format!("whiteout {path}"))
            };
            whiteout("wh-file", p::DELETED)?;
            whiteout("wh-dir", p::DELETED_DIR)?;

            let replaced = work.join("replaced");
            write(&replaced, p::REPLACED, p::REPLACED_NEW)?;
            append_layer(layout, &replaced, "replace")?;

            let opaque = work.join("opaque");
            write(
                &opaque,
                &format!("{}/new.txt", p::OPAQUE_DIR),
                "the only file left in /opaque\n",
            )?;
            write(&opaque, &format!("{}/.wh..wh..opq", p::OPAQUE_DIR), "")?;
            append_layer(layout, &opaque, "opaque")?;

            let root = work.join("links");
            let links = root.join("links");
            write(&links, "/c.txt", p::LINK_CONTENT)?;
            symlink("c.txt", links.join("b")).context(|| "symlink b".into())?;
            symlink("b", links.join("a")).context(|| "symlink a".into())?;
            fs::hard_link(links.join("c.txt"), links.join("hard"))
                .context(|| "hard link".into())?;
            append_layer(layout, &root, "links")?;
            umoci_config(layout, &["--config.cmd=/bin/true".to_string()])
        },
    )
}

fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn write(root: &Path, path: &str, content: &str) -> Result<()> {
    let full = at(root, path);
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&full, content).context(|| format!("writing {}", full.display()))
}

fn empty_dir(dir: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            let r = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

fn image(layout: &Path) -> String {
    format!("{}:latest", layout.display())
}

fn umoci_new(layout: &Path) -> Result<()> {
    tools::run(Command::new("umoci").args(["init", "--layout"]).arg(layout))?;
    tools::run(Command::new("umoci").args(["new", "--image", &image(layout)]))?;
    Ok(())
}

fn append_layer(layout: &Path, dir: &Path, created_by: &str) -> Result<()> {
    crate::images::oci_layout::append_layer(layout, "latest", dir, created_by)
}

fn umoci_config(layout: &Path, args: &[String]) -> Result<()> {
    tools::run(
        Command::new("umoci")
            .args(["config", "--image", &image(layout)])
            .args(args),
    )?;
    // umoci leaves unreferenced blobs from each step behind; drop them to keep the cache small.
    tools::run(Command::new("umoci").args(["gc", "--layout"]).arg(layout))?;
    Ok(())
}

/// Returns the cached fixture, building it under an exclusive lock when absent, so parallel
/// tests build it once and a crash mid-build never leaves a half-made layout in the cache.
fn cached(
    name: &str,
    recipe: &str,
    build: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<Fixture> {
    let dir = tools::cache_root().join("fixtures");
    fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let hash = hex(&Sha256::digest(recipe.as_bytes()))[..16].to_string();
    let layout = dir.join(format!("{name}-{hash}"));
    let fixture = Fixture {
        name: name.to_string(),
        layout: layout.clone(),
        tag: "latest".into(),
    };
    if layout.join("index.json").is_file() {
        return Ok(fixture);
    }
    let lock_path = dir.join(format!("{name}.lock"));
    let lock_file =
        fs::File::create(&lock_path).context(|| format!("creating {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Invalid(format!("locking {}: {e}", lock_path.display())))?;
    if layout.join("index.json").is_file() {
        return Ok(fixture);
    }
    let work = tempfile::Builder::new()
        .prefix(&format!("whittle-fixture-{name}-"))
        .tempdir_in(&dir)
        .context(|| "creating a fixture work dir".into())?;
    let staged = work.path().join("layout");
    build(work.path(), &staged)?;
    fs::rename(&staged, &layout)
        .context(|| format!("moving the fixture into {}", layout.display()))?;
    Ok(fixture)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Python app of [`python_app`]: `GET /api` answers JSON built with a module of its own.
const PYTHON_MAIN: &str = r#"import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import greet


def stop(signum, frame):
    raise SystemExit(0)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/api":
            self.send_error(404)
            return
        body = json.dumps({"greeting": greet.message(), "python": sys.version.split()[0]})
        data = body.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("listening on :8000", file=sys.stderr, flush=True)
HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"#;

/// Where `apt-get install ca-certificates` puts the trust store on Debian and Ubuntu.
const CA_PATHS: [&str; 3] = [
    "etc/ssl/certs",
    "usr/share/ca-certificates",
    "etc/ca-certificates.conf",
];

/// The nginx fixture with a second layer holding this machine's Debian/Ubuntu trust store, as
/// `apt-get install ca-certificates` leaves it: `/etc/ssl/certs` (`ca-certificates.crt` and the
/// `*.pem` links into `/usr/share/ca-certificates`), `/usr/share/ca-certificates`,
/// `/etc/ca-certificates.conf`. nginx serving plain HTTP never reads them; a TLS client in the
/// image would.
pub fn nginx_ca() -> Result<Fixture> {
    let nginx = nginx()?;
    let bundle = fs::read("/etc/ssl/certs/ca-certificates.crt")
        .context(|| "reading this machine's /etc/ssl/certs/ca-certificates.crt".into())?;
    let recipe = format!(
        "nginx-ca v1: {} + a layer of {CA_PATHS:?} (bundle sha256 {})",
        nginx.layout.display(),
        hex(&Sha256::digest(&bundle))
    );
    cached("nginx-ca", &recipe, |work, layout| {
        tools::run(Command::new("cp").arg("-a").arg(&nginx.layout).arg(layout))?;
        let rootfs = work.join("rootfs");
        for path in CA_PATHS {
            let dest = rootfs.join(path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
            }
            tools::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(Path::new("/").join(path))
                    .arg(&dest),
            )?;
        }
        append_layer(layout, &rootfs, "apt-get install ca-certificates")
    })
}

const PYTHON_GREET: &str = r#"def message():
    return "hello from greet"
"#;

const PYTHON_ENTRYPOINT: [&str; 2] = ["/usr/bin/python3", "/app/main.py"];

/// Debian bookworm minbase with python3 (python3-minimal has no http.server or json) and a
/// small web app in `/app` (`main.py`, which imports `greet.py`), byte-compiled with
/// `python3 -m compileall` so `/app/__pycache__` exists beside the stdlib's. `GET /api` on port
/// 8000 answers `{"greeting": "hello from greet", "python": …}`; the app exits on SIGTERM.
pub fn python_app() -> Result<Fixture> {
    let recipe = format!(
        "python-app v1: debootstrap --variant=minbase --include=python3 bookworm {}; rm apt caches, /dev, logs; /app/main.py, /app/greet.py, compileall; one GNU tar layer; entrypoint {PYTHON_ENTRYPOINT:?}; 8000/tcp; SIGTERM\n{PYTHON_MAIN}\n{PYTHON_GREET}",
        mirror()
    );
    cached("python-app", &recipe, |work, layout| {
        let rootfs = work.join("rootfs");
        tools::run(
            Command::new("debootstrap")
                .args(["--variant=minbase", "--include=python3", "bookworm"])
                .arg(&rootfs)
                .arg(mirror()),
        )?;
        write(&rootfs, "/app/main.py", PYTHON_MAIN)?;
        write(&rootfs, "/app/greet.py", PYTHON_GREET)?;
        tools::run(Command::new("chroot").arg(&rootfs).args([
            "/usr/bin/python3",
            "-m",
            "compileall",
            "-q",
            "/app",
        ]))?;
        debootstrap_cleanup(&rootfs)?;
        umoci_new(layout)?;
        append_layer(
            layout,
            &rootfs,
            "debootstrap --variant=minbase --include=python3; /app; compileall",
        )?;
        let mut cfg = vec![
            "--config.workingdir=/app".to_string(),
            "--config.env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "--config.exposedports=8000/tcp".into(),
            "--config.stopsignal=SIGTERM".into(),
        ];
        cfg.extend(
            PYTHON_ENTRYPOINT
                .iter()
                .map(|a| format!("--config.entrypoint={a}")),
        );
        umoci_config(layout, &cfg)
    })
}

/// Removes what debootstrap leaves that an image should not carry: apt caches, the contents of
/// /dev, /proc, /sys, /tmp and /run, and the bootstrap log; /tmp ends up 1777.
fn debootstrap_cleanup(rootfs: &Path) -> Result<()> {
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
    ] {
        empty_dir(&rootfs.join(dir))?;
    }
    for file in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/log/bootstrap.log",
    ] {
        let _ = fs::remove_file(rootfs.join(file));
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .context(|| "chmod /tmp".into())
}

/// What the `confapp` fixture's configuration makes it answer on every request.
pub const CONFAPP_BODY: &str = "greeting=hello from conf.d\nname=confapp\nhooks=0\n";

/// One static program, `/confapp` (testbed/src/images/confapp.c), that opendir()s
/// `/etc/app/conf.d` and loads its `*.conf` (`00-greeting.conf`, `10-name.conf`; a `README` there
/// is not read), opendir()s `/etc/app/hooks.d` (empty), refuses to start when either is missing,
/// and answers every HTTP request on port 8080 with [`CONFAPP_BODY`]. Stop signal SIGTERM.
pub fn confapp() -> Result<Fixture> {
    const SOURCE: &str = include_str!("confapp.c");
    let recipe = format!(
        "confapp v1: cc -Os -static; conf.d 00-greeting.conf 10-name.conf README; empty hooks.d; entrypoint /confapp; 8080/tcp; SIGTERM\n{SOURCE}"
    );
    cached("confapp", &recipe, |work, layout| {
        let rootfs = work.join("rootfs");
        fs::create_dir_all(&rootfs).context(|| "creating the confapp rootfs".into())?;
        fs::write(work.join("confapp.c"), SOURCE).context(|| "writing confapp.c".into())?;
        tools::run(
            Command::new("cc")
                .args(["-Os", "-static", "-o"])
                .arg(rootfs.join("confapp"))
                .arg(work.join("confapp.c")),
        )?;
        write(
            &rootfs,
            "/etc/app/conf.d/00-greeting.conf",
            "greeting=hello from conf.d\n",
        )?;
        write(&rootfs, "/etc/app/conf.d/10-name.conf", "name=confapp\n")?;
        write(
            &rootfs,
            "/etc/app/conf.d/README",
            "Drop *.conf files here; they are loaded in name order.\n",
        )?;
        fs::create_dir_all(rootfs.join("etc/app/hooks.d")).context(|| "creating hooks.d".into())?;
        umoci_new(layout)?;
        append_layer(layout, &rootfs, "cc -Os -static confapp.c; /etc/app")?;
        umoci_config(
            layout,
            &[
                "--config.entrypoint=/confapp".to_string(),
                "--config.exposedports=8080/tcp".into(),
                "--config.stopsignal=SIGTERM".into(),
            ],
        )
    })
}
