//! Test bed for whittle's integration tests: every component is the real thing, started on
//! loopback and torn down on drop.
//!
//! - [`images`]: the real registry (Debian's `docker-registry`, optionally behind htpasswd
//!   auth), fixture images built with `debootstrap`, GNU tar and `umoci` (not with whittle's
//!   code) and cached per machine by a hash of their recipe, OCI layouts read by hand.
//! - [`runc`]: unpack an image with `umoci` and run it with `runc` in its own network namespace.
//! - [`cluster`]: a Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler built from their Go modules by `scripts/setup.sh`), alone on loopback or as
//!   a whole [`cluster::Cluster`] with a real node (containerd v2, kubelet, kube-proxy) and a
//!   registry in a network namespace of its own; the real `helm` pointed at it.
//! - [`net`]: sockets inside network namespaces, port forwards, a tiny HTTP client.
//! - [`binaries`]: the static sensor and whittle builds; [`process`], [`tools`]: daemons and
//!   tools.

pub mod binaries;
pub mod cluster;
pub mod error;
pub mod images;
pub mod net;
pub mod process;
pub mod runc;
pub mod tools;

pub use error::{Error, Result};
