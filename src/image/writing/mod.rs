//! Writing images: the hardened layer (`write`, a deterministic tar compressed by
//! `codec::compression`) and images assembled from scratch (`assemble`).

pub mod assemble;
pub mod write;
