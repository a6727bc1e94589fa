//! Where the test bed finds its tools: Debian's binaries on PATH, and the Go-built ones in the
//! per-machine cache that `scripts/setup.sh` fills.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

const TOOLS_ENV: &str = include_str!("../tools.env");

/// A version pinned in `testbed/tools.env` (shared with `scripts/setup.sh`).
pub fn pinned_version(key: &str) -> Result<String> {
    TOOLS_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| Error::Invalid(format!("testbed/tools.env has no {key}")))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/whittle`: survives clean clones, so a warm machine skips
/// the Go builds and the debootstrap runs.
pub fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("whittle")
}

/// A Kubernetes binary (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kubelet,
/// kube-proxy, kubectl).
pub fn kube_binary(name: &str) -> Result<PathBuf> {
    let dir = format!("kubernetes-{}", pinned_version("KUBE_VERSION")?);
    cached(&dir, name)
}

/// containerd v2 (its runc shim lies beside it).
pub fn containerd_binary() -> Result<PathBuf> {
    let dir = format!("containerd-{}", pinned_version("CONTAINERD_VERSION")?);
    cached(&dir, "containerd")
}

/// The helm binary.
pub fn helm_binary() -> Result<PathBuf> {
    let dir = format!("helm-{}", pinned_version("HELM_VERSION")?);
    cached(&dir, "helm")
}

/// The cosign binary (v2: classic `.sig`/`.att` signatures in the registry).
pub fn cosign_binary() -> Result<PathBuf> {
    let dir = format!("cosign-{}", pinned_version("COSIGN_VERSION")?);
    cached(&dir, "cosign")
}

/// The syft binary.
pub fn syft_binary() -> Result<PathBuf> {
    let dir = format!("syft-{}", pinned_version("SYFT_VERSION")?);
    cached(&dir, "syft")
}

/// `kstatus`: reads an object as JSON on stdin and prints how kstatus (cli-utils, as Flux and
/// kpt use it) sees it: `Current`, `InProgress` or `Failed`, a tab, and its message.
pub fn kstatus_binary() -> Result<PathBuf> {
    let dir = format!("kstatus-{}", pinned_version("CLI_UTILS_VERSION")?);
    cached(&dir, "kstatus")
}

fn cached(dir: &str, name: &str) -> Result<PathBuf> {
    let path = cache_root().join("tools").join(dir).join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ToolMissing {
            tool: name.to_string(),
            path,
        })
    }
}

/// Runs a command to completion and returns its output, or an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: shown,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// The command line as a person would type it, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when `path` names an executable on PATH (Debian's tools).
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(name).is_file()))
}
