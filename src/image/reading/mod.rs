//! Reading source layers: each streamed once (`scan`) into the merged tree with OCI whiteout
//! semantics (`tree`), the contents a harden may keep set aside (`spool`).

pub mod scan;
pub mod spool;
pub mod tree;
