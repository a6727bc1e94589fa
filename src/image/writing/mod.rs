//! Writing images: the hardened layer (`write`, compressed by `compression` with `pgzip`'s
//! parallel gzip or zstd; `early` compresses large files' blocks while the layers are read)
//! and images assembled from scratch (`assemble`).

pub mod assemble;
pub mod compression;
pub mod early;
pub mod pgzip;
pub mod write;
