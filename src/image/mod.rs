//! The image engine: registry access, layer streaming, instrument, harden and inspect.

pub mod credentials;
pub mod error;
pub mod reference;
pub mod registry;

pub use error::{ImageError, Result};
