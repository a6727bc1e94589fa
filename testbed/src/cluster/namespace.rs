//! The network and mount namespace a test cluster lives in.
//!
//! kubelet refuses a loopback node IP, and a routable address on the host would let test traffic
//! leave the machine. So the control plane, the registry and the node share one private network
//! namespace whose only non-loopback interface is a veth pair with both ends inside it: one end
//! holds the node IP, and a default route through it leads nowhere. Nothing in it can reach
//! another machine, and parallel clusters each have their own, so they reuse the same addresses
//! and ports without colliding. The host reaches the cluster through loopback port forwards
//! ([`crate::net::netns::Forward`]).
//!
//! containerd and kubelet also share a private mount namespace: kubelet mounts Secret and
//! downward-API volumes that runc must see, and their mounts (overlay snapshots, tmpfs volumes,
//! pod network namespaces) must never appear on the host. tmpfs over `/run`, `/var/lib` and
//! `/var/log` catch what the node writes to fixed paths whatever it is told: the shims'
//! `/run/containerd/s`, iptables' `xtables.lock`, kubelet's `/var/lib/kubelet/device-plugins` and
//! `/var/log/containers`, libcni's `/var/lib/cni` cache.
//! Both namespaces are held by one `sleep` process; they vanish when it and everything that
//! joined them have exited.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::net::netns;
use crate::tools;

/// The node's address inside its namespace (the same in every cluster: each has its own
/// namespace).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The range pods get their addresses from (CNI bridge + host-local IPAM).
pub const POD_CIDR: &str = "10.78.0.0/24";
/// The range Services get their ClusterIPs from.
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The `kubernetes` Service's ClusterIP (the first address of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

pub struct NodeNamespace {
    holder: Child,
}

impl NodeNamespace {
    pub fn create() -> Result<NodeNamespace> {
        let holder = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                command: "unshare --net --mount sleep infinity".into(),
                source,
            })?;
        let mut ns = NodeNamespace { holder };
        ns.wait_unshared()?;
        ns.configure()?;
        Ok(ns)
    }

    /// `unshare` creates the namespaces, then execs `sleep`: wait until the holder's network
    /// namespace differs from ours.
    fn wait_unshared(&mut self) -> Result<()> {
        let own = std::fs::read_link("/proc/self/ns/net").context(|| "reading our netns".into())?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.holder.try_wait() {
                return Err(Error::Invalid(format!(
                    "unshare --net --mount exited with {status}"
                )));
            }
            let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid())).ok();
            let net = std::fs::read_link(self.netns_path()).ok();
            if exe.is_some_and(|e| e.ends_with("sleep")) && net.is_some_and(|n| n != own) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(Error::NotReady {
                    component: "the node's namespaces".into(),
                    seconds: 10,
                    detail: "unshare did not exec sleep".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn configure(&self) -> Result<()> {
        let ip = |args: &str| -> Result<()> {
            let mut cmd = self.net_command("ip");
            cmd.args(args.split_whitespace());
            tools::run(&mut cmd).map(drop)
        };
        ip("link set lo up")?;
        ip("link add node0 type veth peer name node0p")?;
        ip(&format!("addr add {NODE_IP}/24 dev node0"))?;
        ip("link set node0 up")?;
        ip("link set node0p up")?;
        // A dead end: locally generated packets to ClusterIPs need a route before kube-proxy's
        // OUTPUT rules rewrite them; anything else is dropped here.
        ip("route add default via 10.77.0.254 dev node0 onlink")?;
        // Pods reach ClusterIPs through the node: DNAT'd packets are routed back to the bridge.
        netns::in_netns(&self.netns_path(), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })?;
        for dir in ["/run", "/var/lib", "/var/log"] {
            let mut mount = self.node_command("mount");
            mount.args(["-t", "tmpfs", "-o", "mode=0755", "whittle-node", dir]);
            tools::run(&mut mount)?;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `/proc/<holder>/ns/net`, for [`crate::net::netns`] sockets and `nsenter --net`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// A command that runs `program` inside the network namespace (control plane, registry).
    pub fn net_command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program.as_ref());
        cmd
    }

    /// A command that runs `program` inside the network and the mount namespace (the node's
    /// daemons, and commands that must see its mounts).
    pub fn node_command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg("--")
            .arg(program.as_ref());
        cmd
    }
}

impl Drop for NodeNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
