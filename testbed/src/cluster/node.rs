//! A real node: containerd v2 (with Debian's runc and CNI plugins), kubelet and kube-proxy,
//! inside the cluster's namespaces. Dropping it leaves nothing behind: no process, no mount, no
//! cgroup.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster::certs::NODE_NAME;
use crate::cluster::control_plane::ControlPlane;
use crate::cluster::namespace::NodeNamespace;
use crate::cluster::node_config;
use crate::error::{Error, IoContext, Result};
use crate::images::registry::random_hex;
use crate::process::Daemon;
use crate::tools;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Node {
    kube_proxy: Option<Daemon>,
    kubelet: Option<Daemon>,
    containerd: Option<Daemon>,
    cgroup_root: String,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts containerd, kubelet and kube-proxy for `plane` and returns once the Node is
    /// Ready. `sandbox_image` is the pause image, in a registry the node can reach.
    pub async fn start(
        plane: &ControlPlane,
        ns: &NodeNamespace,
        sandbox_image: &str,
    ) -> Result<Node> {
        let dir = tempfile::Builder::new()
            .prefix("whittle-node-")
            .tempdir()
            .context(|| "creating the node's temp dir".into())?;
        let d = dir.path().to_path_buf();
        let mut node = Node {
            kube_proxy: None,
            kubelet: None,
            containerd: None,
            cgroup_root: format!("whittle-node-{}", random_hex(4)),
            socket: d.join("containerd/containerd.sock"),
            dir,
        };
        node.write_configs(plane, sandbox_image)?;
        node.create_cgroup_root()?;

        let containerd = tools::containerd_binary()?;
        let mut cmd = ns.node_command(&containerd);
        cmd.arg("--config").arg(d.join("containerd/config.toml"));
        // containerd looks its shim up on PATH.
        let shim_dir = containerd.parent().unwrap_or(Path::new("/"));
        cmd.env("PATH", prepend_path(shim_dir));
        node.containerd = Some(Daemon::spawn("containerd", &mut cmd, &d)?);
        node.wait_for_socket()?;

        let mut cmd = ns.node_command(tools::kube_binary("kubelet")?);
        cmd.arg(format!(
            "--config={}",
            d.join("kubelet/config.yaml").display()
        ))
        .arg(format!(
            "--kubeconfig={}",
            d.join("kubelet/kubeconfig").display()
        ))
        .arg(format!("--root-dir={}", d.join("kubelet/root").display()))
        .arg(format!("--cert-dir={}", d.join("kubelet/pki").display()))
        .arg(format!("--hostname-override={NODE_NAME}"))
        .arg(format!("--node-ip={}", crate::cluster::namespace::NODE_IP))
        .arg("--v=1");
        node.kubelet = Some(Daemon::spawn("kubelet", &mut cmd, &d)?);

        let mut cmd = ns.node_command(tools::kube_binary("kube-proxy")?);
        cmd.arg(format!(
            "--config={}",
            d.join("kube-proxy/config.yaml").display()
        ));
        node.kube_proxy = Some(Daemon::spawn("kube-proxy", &mut cmd, &d)?);

        node.wait_ready(plane).await?;
        Ok(node)
    }

    fn write_configs(&self, plane: &ControlPlane, sandbox_image: &str) -> Result<()> {
        let d = self.dir.path();
        let write = |rel: &str, content: String| -> Result<()> {
            let path = d.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&path, content).context(|| format!("writing {}", path.display()))
        };
        write(
            "containerd/config.toml",
            node_config::containerd_toml(d, sandbox_image),
        )?;
        write(
            "cni/net.d/10-whittle.conflist",
            node_config::cni_conflist(d),
        )?;
        let ca = plane.pki_file("ca.crt");
        write(
            "kubelet/config.yaml",
            node_config::kubelet_yaml(
                d,
                &ca,
                &plane.pki_file("kubelet-serving.crt"),
                &plane.pki_file("kubelet-serving.key"),
                &self.cgroup_root,
            ),
        )?;
        write(
            "kubelet/kubeconfig",
            node_config::kubeconfig(
                &plane.server_url(),
                &ca,
                &format!("system:node:{NODE_NAME}"),
                &plane.pki_file("kubelet.crt"),
                &plane.pki_file("kubelet.key"),
            ),
        )?;
        write(
            "kube-proxy/config.yaml",
            node_config::kube_proxy_yaml(&plane.kubeconfig()),
        )?;
        for sub in ["kubelet/root", "kubelet/pod-logs", "cni/ipam"] {
            fs::create_dir_all(d.join(sub)).context(|| format!("creating {sub}"))?;
        }
        Ok(())
    }

    /// Lets containerd pull from `host` (`127.0.0.1:PORT`) over plain HTTP. containerd reads
    /// these files at each pull, so registries can be added while the node runs.
    pub fn trust_registry(&self, host: &str) -> Result<()> {
        let dir = self.dir.path().join("containerd/certs.d").join(host);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("hosts.toml");
        fs::write(&path, node_config::registry_hosts_toml(host))
            .context(|| format!("writing {}", path.display()))
    }

    /// kubelet's `cgroupRoot` must exist under every v1 hierarchy; a cpuset cgroup is unusable
    /// until it has CPUs and memory nodes.
    fn create_cgroup_root(&self) -> Result<()> {
        for hierarchy in cgroup_hierarchies() {
            let dir = hierarchy.join(&self.cgroup_root);
            fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = fs::read_to_string(hierarchy.join(file))
                        .context(|| format!("reading {file}"))?;
                    fs::write(dir.join(file), value.trim())
                        .context(|| format!("writing {}", dir.join(file).display()))?;
                }
            }
        }
        Ok(())
    }

    fn wait_for_socket(&mut self) -> Result<()> {
        let start = Instant::now();
        while !self.socket.exists() {
            self.check_alive()?;
            if start.elapsed() > Duration::from_secs(30) {
                return Err(self.not_ready("containerd", 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    async fn wait_ready(&mut self, plane: &ControlPlane) -> Result<()> {
        let nodes: Api<NodeObject> = Api::all(plane.client());
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await
                && is_ready(&node)
            {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(self.not_ready("kubelet", READY_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn daemons(&mut self) -> impl Iterator<Item = &mut Daemon> {
        [
            &mut self.containerd,
            &mut self.kubelet,
            &mut self.kube_proxy,
        ]
        .into_iter()
        .flatten()
    }

    fn check_alive(&mut self) -> Result<()> {
        self.daemons().try_for_each(Daemon::check_alive)
    }

    fn not_ready(&mut self, component: &str, seconds: u64) -> Error {
        Error::NotReady {
            component: component.into(),
            seconds,
            detail: self.log(component),
        }
    }

    /// The last lines of `containerd`'s, `kubelet`'s or `kube-proxy`'s log.
    pub fn log(&mut self, component: &str) -> String {
        self.daemons()
            .find(|d| d.name() == component)
            .map(|d| d.log_tail())
            .unwrap_or_default()
    }

    /// The node's working directory (configuration, containerd and kubelet state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every process still running in the node's cgroups: the containers.
    fn container_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            collect_procs(&hierarchy.join(&self.cgroup_root), &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The runc shims this node's containerd started: they outlive containerd by design.
    fn shim_pids(&self) -> Vec<i32> {
        let needle = self.socket.display().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.first()
                        .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                        && args.contains(&needle.as_bytes())
                })
            })
            .collect()
    }
}

impl Drop for Node {
    /// Not graceful on purpose: tests that need a graceful stop delete their pods themselves.
    fn drop(&mut self) {
        for daemon in [
            &mut self.kube_proxy,
            &mut self.kubelet,
            &mut self.containerd,
        ]
        .into_iter()
        .flatten()
        {
            daemon.stop(Duration::from_secs(2));
        }
        for pid in self.shim_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let start = Instant::now();
        loop {
            let pids = self.container_pids();
            if pids.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup_tree(&hierarchy.join(&self.cgroup_root));
        }
    }
}

fn is_ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers, name=systemd, and the
/// hybrid layout's unified v2 tree, where runc also places containers).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").is_file())
        .collect()
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&e.path(), pids);
            }
        }
    }
}

/// cgroups are removed with rmdir, children first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}
