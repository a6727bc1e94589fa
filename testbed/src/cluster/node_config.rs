//! The node's configuration files, as text: containerd, the registry hosts it may pull from over
//! plain HTTP, the CNI network, kubelet and kube-proxy. Each setting that differs from a stock
//! node says why; docs/testbed.md has the whole picture.

use std::path::Path;

use crate::cluster::certs::NODE_NAME;
use crate::cluster::namespace::{NODE_IP, POD_CIDR};

/// containerd v2: everything under `dir`, sockets included, so parallel nodes never meet.
pub fn containerd_toml(dir: &Path, sandbox_image: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd/containerd.sock"
[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
# NRI wants its own socket under /var/run; the node needs no NRI plugin.
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    # one hosts.toml per test registry: they speak plain HTTP
    config_path = "{d}/containerd/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  disable_apparmor = true
  # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj (the sandbox asks for -998)
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{d}/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{d}/cni/net.d"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        runc = runc_path(),
    )
}

/// Debian installs runc in /usr/sbin; elsewhere it may be in /usr/bin.
fn runc_path() -> &'static str {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("runc")
}

/// `certs.d/<host>/hosts.toml`: pull from `host` over plain HTTP.
pub fn registry_hosts_toml(host: &str) -> String {
    format!(
        "server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// The CNI bridge network: every pod gets an address in [`POD_CIDR`] on the `wcni0` bridge,
/// whose gateway address is the node's side.
pub fn cni_conflist(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "whittle-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": "wcni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.join("cni/ipam"),
            }
        }]
    })
    .to_string()
}

/// kubelet's configuration. `cgroup_root` is a per-node cgroup under every v1 hierarchy.
pub fn kubelet_yaml(
    dir: &Path,
    ca: &Path,
    serving_cert: &Path,
    serving_key: &Path,
    cgroup_root: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid); kubelet >= 1.35 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /{cgroup_root}
enforceNodeAllocatable: ["pods"]
failSwapOn: false
containerRuntimeEndpoint: unix://{d}/containerd/containerd.sock
imageServiceEndpoint: unix://{d}/containerd/containerd.sock
podLogsDir: {d}/kubelet/pod-logs
volumePluginDir: {d}/kubelet/volume-plugins
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {serving_cert}
tlsPrivateKeyFile: {serving_key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: AlwaysAllow
# A test machine's disk and memory are whatever they are: never evict, never collect images.
evictionHard: {{}}
evictionSoft: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
registerNode: true
syncFrequency: 5s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
resolvConf: /etc/resolv.conf
# kube-proxy owns the node's iptables rules.
makeIPTablesUtilChains: false
"#,
        ca = ca.display(),
        serving_cert = serving_cert.display(),
        serving_key = serving_key.display(),
    )
}

/// kube-proxy in iptables mode.
pub fn kube_proxy_yaml(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {POD_CIDR}
bindAddress: {NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# The conntrack table is the kernel's, shared with the host: leave its sizes alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  # Pods reach Services on their own bridge: without br_netfilter in the pod path, a reply
  # would bypass the node's un-DNAT unless the node is the source.
  masqueradeAll: true
  localhostNodePorts: false
"#,
        kubeconfig = kubeconfig.display(),
    )
}

/// A kubeconfig with a client certificate (kubelet's own, or the admin's for kube-proxy).
pub fn kubeconfig(server: &str, ca: &Path, user: &str, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: whittle-testbed
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: whittle-testbed
  context: {{cluster: whittle-testbed, user: {user}}}
current-context: whittle-testbed
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_config_keeps_everything_under_the_node_dir() {
        let text = containerd_toml(Path::new("/tmp/n"), "127.0.0.1:5000/pause:1");
        for line in text.lines().filter(|l| l.contains("= \"/")) {
            assert!(
                line.contains("\"/tmp/n/") || line.contains("runc\""),
                "path outside the node dir: {line}"
            );
        }
        assert!(text.contains("sandbox = \"127.0.0.1:5000/pause:1\""));
    }

    #[test]
    fn cni_config_is_json_with_the_pod_range() {
        let v: serde_json::Value =
            serde_json::from_str(&cni_conflist(Path::new("/tmp/n"))).expect("json");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], POD_CIDR);
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/tmp/n/cni/ipam");
    }
}
