//! Reaching servers inside network namespaces: sockets made in a namespace, loopback port
//! forwards, a tiny HTTP client, free ports.

pub mod http;
pub mod netns;
pub mod ports;
