//! Images and where they live: fixture images built by tools that are not whittle's, OCI
//! layouts read and extended by hand, and the real registry.

pub mod fixtures;
pub mod oci_layout;
pub mod registry;
