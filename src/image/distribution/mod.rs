//! Where images live and how they are named: registries (`registry`), OCI layouts on disk
//! (`layout`), both behind `store::Store`; references and credentials.

mod capped;
mod cleartext;
pub mod credentials;
pub mod layout;
pub mod location;
pub mod reference;
pub mod registry;
pub mod store;
