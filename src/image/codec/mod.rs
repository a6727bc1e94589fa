//! The layer codecs, shared by reading and writing: `pgzip`'s parallel gzip in one stream,
//! `early`'s blocks of large files compressed while the layers are still read, and
//! `compression`'s encoder of either codec (gzip or zstd) for the hardened layer.

pub mod compression;
// Lowers its compressing threads' priority (setpriority on a thread id).
#[allow(unsafe_code)]
pub mod early;
// Drives zlib's stream API directly, with an allocator of its own.
#[allow(unsafe_code)]
pub mod pgzip;
