//! Sockets inside another network namespace. A socket belongs to the namespace of the thread
//! that created it, so a short-lived thread enters the namespace, creates the socket and hands
//! it back; the test's own threads never leave the host namespace. This reaches a container
//! that has only loopback without giving it any routable address.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, IoContext, Result};

/// Runs `f` on a short-lived thread inside the network namespace `netns`: sockets it makes and
/// `/proc/sys/net` files it opens belong to that namespace.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(netns).context(|| format!("opening {}", netns.display()))?;
    let shown = netns.display().to_string();
    thread::spawn(move || -> Result<T> {
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Invalid(format!("entering network namespace {shown}: {e}")))?;
        f().context(|| format!("socket in network namespace {shown}"))
    })
    .join()
    .map_err(|_| Error::Invalid("network-namespace thread panicked".into()))?
}

/// Connects to `127.0.0.1:port` inside the namespace.
pub fn connect(netns: &Path, port: u16) -> Result<TcpStream> {
    in_netns(netns, move || TcpStream::connect(("127.0.0.1", port)))
}

/// Listens on `127.0.0.1:port` inside the namespace (port 0 picks one).
pub fn listen(netns: &Path, port: u16) -> Result<TcpListener> {
    listen_on(netns, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Listens on `addr` inside the namespace, e.g. the node IP so that pods reach the listener.
pub fn listen_on(netns: &Path, addr: SocketAddr) -> Result<TcpListener> {
    in_netns(netns, move || TcpListener::bind(addr))
}

/// A proxy from a free port on the host's 127.0.0.1 to `127.0.0.1:port` inside a namespace;
/// stops accepting when dropped.
pub struct Forward {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub fn start(netns: &Path, port: u16) -> Result<Forward> {
        Self::start_on(0, netns, port)
    }

    /// Like [`Forward::start`] on a chosen host port, so that an address such as
    /// `127.0.0.1:PORT` means the same service on the host and inside the namespace.
    pub fn start_on(host_port: u16, netns: &Path, port: u16) -> Result<Forward> {
        let listener = TcpListener::bind(("127.0.0.1", host_port))
            .context(|| format!("binding forward port 127.0.0.1:{host_port}"))?;
        let addr = listener
            .local_addr()
            .context(|| "reading the forward address".into())?;
        let stop = Arc::new(AtomicBool::new(false));
        let netns: PathBuf = netns.to_path_buf();
        let stopped = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = connect(&netns, port) else {
                    continue;
                };
                pipe(client, upstream);
            }
        });
        Ok(Forward { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    copy(a, b2);
    copy(b, a2);
}
