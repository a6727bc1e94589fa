//! A whole test cluster in one line: `Cluster::start().await` gives a real control plane, a real
//! node (containerd v2, kubelet, kube-proxy) and a registry the node pulls from, all inside one
//! private network namespace (see [`namespace`]), reachable from the host on loopback.
//!
//! Image references and the kubeconfig mean the same on the host and inside the namespace:
//! the registry and the apiserver listen on `127.0.0.1:PORT` there, and the host forwards the
//! same port. Pods reach the node at [`NODE_IP`]; a test that must be reached by pods (a
//! report endpoint, say) listens there with [`Cluster::listen`], and a process that must run
//! where pods can reach it (the operator) runs under [`Cluster::net_command`].

pub mod certs;
pub mod control_plane;
pub mod helm;
pub mod namespace;
pub mod node;
pub mod node_config;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

pub use namespace::{KUBERNETES_SERVICE_IP, NODE_IP, NodeNamespace, POD_CIDR, SERVICE_CIDR};
pub use node::Node;

use crate::cluster::control_plane::ControlPlane;
use crate::error::Result;
use crate::images::fixtures;
use crate::images::registry::Registry;

/// Fields drop in order: the node before the registry and control plane it uses, the
/// namespace last.
pub struct Cluster {
    node: Node,
    registry: Registry,
    plane: ControlPlane,
    ns: NodeNamespace,
}

impl Cluster {
    /// Starts the namespace, an anonymous registry holding the pause image, the control plane
    /// and the node, and returns once the node is Ready.
    pub async fn start() -> Result<Cluster> {
        let ns = NodeNamespace::create()?;
        let registry = Registry::start_in(&ns, false)?;
        let pause = fixtures::pause()?.push(&registry, "whittle-testbed/pause:1")?;
        let plane = ControlPlane::start_in(&ns).await?;
        let node = Node::start(&plane, &ns, &pause).await?;
        node.trust_registry(&registry.host())?;
        Ok(Cluster {
            node,
            registry,
            plane,
            ns,
        })
    }

    pub fn client(&self) -> Client {
        self.plane.client()
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The node, for its logs and working directory.
    pub fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    /// The cluster's anonymous registry (plain HTTP), where the node pulls from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Another registry inside the cluster, trusted by the node; with `auth`, behind htpasswd
    /// (pods then need an imagePullSecret, [`Registry::docker_config_json`] gives its content).
    pub fn start_registry(&self, auth: bool) -> Result<Registry> {
        let registry = Registry::start_in(&self.ns, auth)?;
        self.node.trust_registry(&registry.host())?;
        Ok(registry)
    }

    /// A namespace with a random name and `labels` (e.g. a Pod Security level), returned once
    /// its `default` service account exists, so that pods are admitted in it.
    pub async fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
        let name = self.plane.namespace(prefix).await?;
        let client = self.client();
        if !labels.is_empty() {
            let labels: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            Api::<Namespace>::all(client.clone())
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
                )
                .await?;
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let start = std::time::Instant::now();
        while accounts.get_opt("default").await?.is_none() {
            if start.elapsed() > std::time::Duration::from_secs(60) {
                return Err(crate::Error::NotReady {
                    component: format!("the default service account of namespace {name}"),
                    seconds: 60,
                    detail: "kube-controller-manager did not create it".into(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(name)
    }

    /// An admin kubeconfig, valid on the host and inside the namespace.
    pub fn kubeconfig(&self) -> PathBuf {
        self.plane.kubeconfig()
    }

    /// A listener on the node IP (port 0 picks one), reachable from pods.
    pub fn listen(&self, port: u16) -> Result<TcpListener> {
        crate::net::netns::listen_on(&self.ns.netns_path(), SocketAddr::from((NODE_IP, port)))
    }

    /// A command run inside the cluster's network namespace: it sees the apiserver and the
    /// registry at the same addresses as the host, pods reach it on [`NODE_IP`], and it
    /// reaches Services' ClusterIPs.
    pub fn net_command(&self, program: impl AsRef<std::path::Path>) -> Command {
        self.ns.net_command(program)
    }

    /// `/proc/<pid>/ns/net` of the cluster's namespace, for [`crate::net::netns`] sockets.
    pub fn netns_path(&self) -> PathBuf {
        self.ns.netns_path()
    }
}
