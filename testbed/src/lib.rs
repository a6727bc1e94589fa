//! Test bed for whittle's integration tests: every component is the real thing, started on
//! loopback and torn down on drop.
//!
//! - [`registry::Registry`]: Debian's `docker-registry`, optionally behind htpasswd auth.
//! - [`fixtures`]: Debian images built with `debootstrap` and packed with `umoci` (not with
//!   whittle's code), cached per machine by a hash of their recipe.
//! - [`runc`]: unpack an image with `umoci` and run it with `runc` in its own network namespace.
//! - [`control_plane::ControlPlane`]: etcd, kube-apiserver, kube-controller-manager and
//!   kube-scheduler built from their Go modules by `scripts/setup.sh`.
//! - [`cluster::Cluster`]: that control plane with a real node (containerd v2, kubelet,
//!   kube-proxy) and a registry, in a network namespace of its own.
//! - [`helm`]: the real `helm` binary, pointed at a control plane.

pub mod certs;
pub mod cluster;
pub mod control_plane;
pub mod error;
pub mod fixtures;
pub mod helm;
pub mod http;
pub mod netns;
pub mod oci_layout;
pub mod ports;
pub mod process;
pub mod registry;
pub mod runc;
pub mod sensor;
pub mod tools;

pub use error::{Error, Result};
