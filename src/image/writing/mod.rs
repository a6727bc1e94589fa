//! Writing images: the hardened layer (`write`, compressed by `compression` with `pgzip`'s
//! parallel gzip or zstd) and images assembled from scratch (`assemble`).

pub mod assemble;
pub mod compression;
pub mod pgzip;
pub mod write;
