//! The image engine: registry access, layer streaming, instrument, harden and inspect.

pub mod assemble;
pub mod compression;
pub mod config;
pub mod credentials;
pub mod elf;
pub mod error;
pub mod harden;
pub mod inspect;
pub mod instrument;
pub mod layout;
pub mod pgzip;
pub mod reference;
pub mod registry;
pub mod scan;
pub mod select;
pub mod spool;
pub mod store;
pub mod surface;
pub mod tree;
pub mod unpack;
pub mod write;

pub use error::{ImageError, Result};
