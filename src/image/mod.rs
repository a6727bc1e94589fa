//! The image engine: registry access, layer streaming, instrument, harden and inspect.
//!
//! The commands (`harden`, `instrument`, `inspect`, `unpack`) sit here; what they are built
//! from is grouped by concern:
//! - `media`: media types, layer compression, descriptors and manifests; a leaf that imports
//!   nothing else of the engine;
//! - `distribution`: where images live and how they are named (registries, OCI layouts,
//!   credentials, references), behind `store::Store`;
//! - `reading`: the source layers streamed once into a merged tree, with kept contents spooled;
//! - `analysis`: what to keep (selection, ELF dependencies, the attack surface removed);
//! - `codec`: parallel gzip, early compression and the layer encoder, for reading and writing;
//! - `writing`: the hardened layer (a deterministic tar) and images assembled from scratch.
//!
//! docs/image-engine.md has a table of where things are.

pub mod analysis;
pub mod codec;
pub mod config;
pub mod distribution;
pub mod error;
pub mod harden;
pub mod inspect;
pub mod instrument;
pub mod limits;
pub mod media;
pub mod packages;
pub mod predict;
pub mod reading;
pub mod unpack;
pub mod writing;

pub use error::{ImageError, Result};
