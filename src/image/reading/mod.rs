//! Reading source layers: each streamed once (`scan`) into the merged tree with OCI whiteout
//! semantics (`tree`), the contents a harden may keep set aside (`spool`), and every blob read
//! to its end, where its digest is compared (`whole`).

pub mod scan;
pub mod spool;
pub mod tree;
pub mod whole;
