//! Free loopback ports for the servers the tests start.

use std::net::TcpListener;

use crate::error::{IoContext, Result};

/// A port that was free a moment ago. Servers started on it are checked for readiness, and the
/// callers retry on a bind race, so the small window between probe and use does no harm.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context(|| "binding 127.0.0.1:0".into())?;
    Ok(l.local_addr()
        .context(|| "reading a bound address".into())?
        .port())
}
