//! The image engine: registry access, layer streaming, instrument, harden and inspect.

pub mod credentials;
pub mod elf;
pub mod error;
pub mod reference;
pub mod registry;
pub mod scan;
pub mod spool;
pub mod tree;

pub use error::{ImageError, Result};
