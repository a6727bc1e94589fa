//! whittle: hardens container images to what the application really uses.
//!
//! The library holds the engine behind the `whittle` binary; docs/image-engine.md tells how
//! the stages (instrument, observe, harden) fit together, docs/operator.md how the operator
//! drives them.

/// The version stamped into provenance labels and reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod api;
pub mod controller;
pub mod evidence;
pub mod image;
pub mod leader;
pub mod local;
pub mod metrics;
pub mod page;
pub mod reports;
pub mod server;

/// Names rustls' crypto provider for the process. kube and oci-client both link rustls, and
/// with two providers compiled in, rustls refuses to guess; call this before any connection.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
