//! Writing images: the hardened layer (`write`, compressed by `compression` with `pgzip`'s
//! parallel gzip or zstd; `early` compresses large files' blocks while the layers are read)
//! and images assembled from scratch (`assemble`).

pub mod assemble;
pub mod compression;
// Lowers its compressing threads' priority (setpriority on a thread id).
#[allow(unsafe_code)]
pub mod early;
// Drives zlib's stream API directly, with an allocator of its own.
#[allow(unsafe_code)]
pub mod pgzip;
pub mod write;
