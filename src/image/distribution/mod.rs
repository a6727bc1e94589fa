//! Where images live and how they are named: registries (`registry`, with `platform`'s choice
//! in an index, `blob`'s resumable stream and `retry`), OCI layouts on disk (`layout`), both
//! behind `store::Store` and its `location`s; references and credentials.

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
