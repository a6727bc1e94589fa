//! An OCI runtime bundle for runc: `config.json` next to a root filesystem. The spec starts from
//! oci-spec's defaults (the mounts, masked paths and namespaces runc's own `runc spec` gives)
//! and takes the process from the image config, as containerd would.

use std::fs;
use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::json;

use super::{LocalError, user};

/// The capabilities containerd gives a container (and so a Kubernetes pod without a
/// securityContext). The sensor's ptrace mode needs nothing more; fanotify adds CAP_SYS_ADMIN.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The process an image runs, taken from its config.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// Entrypoint followed by Cmd.
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// WorkingDir; `/` when the image names none.
    pub cwd: String,
    /// User as the image names it (`name`, `uid`, `name:group`, `uid:gid`), resolved against the
    /// root filesystem's /etc/passwd and /etc/group.
    pub user: String,
    /// Capabilities beyond [`DEFAULT_CAPABILITIES`].
    pub extra_capabilities: Vec<String>,
}

/// Writes `bundle/config.json` for `rootfs` (an absolute path) and `run`.
pub fn write_spec(bundle: &Path, rootfs: &Path, run: &RunConfig) -> Result<(), LocalError> {
    let ids = user::resolve(&run.user, rootfs)?;
    let mut spec = serde_json::to_value(Spec::default()).map_err(|e| LocalError::Io {
        what: "serialising the default runtime spec".into(),
        source: e.into(),
    })?;
    let caps: Vec<&str> = DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(run.extra_capabilities.iter().map(String::as_str))
        .collect();
    let cwd = if run.cwd.is_empty() { "/" } else { &run.cwd };
    spec["hostname"] = json!("whittle");
    spec["root"] = json!({ "path": rootfs, "readonly": false });
    spec["process"] = json!({
        "terminal": false,
        "user": { "uid": ids.uid, "gid": ids.gid },
        "args": run.args,
        "env": run.env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": caps, "ambient": caps,
        },
        // containerd's default: setuid binaries keep working. No rlimits: the app inherits
        // ours, as it would under `whittle local`'s caller.
        "noNewPrivileges": false,
    });
    let path = bundle.join("config.json");
    fs::write(&path, spec.to_string())
        .map_err(LocalError::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_carries_the_image_process_and_isolates_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/passwd"), "app:x:100:101::/:/bin/false\n").unwrap();
        let run = RunConfig {
            args: vec!["/app".into(), "--serve".into()],
            env: vec!["A=1".into()],
            cwd: String::new(),
            user: "app".into(),
            extra_capabilities: vec!["CAP_SYS_ADMIN".into()],
        };
        write_spec(dir.path(), &rootfs, &run).unwrap();
        let spec: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["process"]["args"], json!(["/app", "--serve"]));
        assert_eq!(spec["process"]["cwd"], "/");
        assert_eq!(spec["process"]["user"], json!({"uid": 100, "gid": 101}));
        let caps = spec["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")) && caps.contains(&json!("CAP_CHOWN")));
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(namespaces.iter().any(|n| n["type"] == "network"));
        assert!(
            spec["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/proc")
        );
    }
}
