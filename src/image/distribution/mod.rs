//! Where images live and how they are named: registries (`registry`), OCI layouts on disk
//! (`layout`), both behind `store::Store`; references and credentials.

mod blob;
mod capped;
mod cleartext;
pub mod credentials;
pub mod hints;
pub mod layout;
pub mod location;
pub mod platform;
pub mod reference;
pub mod registry;
mod retry;
pub mod store;
