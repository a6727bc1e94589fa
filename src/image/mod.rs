//! The image engine: registry access, layer streaming, instrument, harden and inspect.
//!
//! The commands (`harden`, `instrument`, `inspect`, `unpack`) sit here; what they are built
//! from is grouped by concern:
//! - `distribution`: where images live and how they are named (registries, OCI layouts,
//!   credentials, references), behind `store::Store`;
//! - `reading`: the source layers streamed once into a merged tree, with kept contents spooled;
//! - `analysis`: what to keep (selection, ELF dependencies, the attack surface removed);
//! - `writing`: the hardened layer (deterministic tar, parallel gzip or zstd) and images
//!   assembled from scratch.

pub mod analysis;
pub mod config;
pub mod distribution;
pub mod error;
pub mod harden;
pub mod inspect;
pub mod instrument;
pub mod limits;
pub mod packages;
pub mod reading;
pub mod unpack;
pub mod writing;

pub use error::{ImageError, Result};
