//! A loopback port on the host that reaches a port inside a container's network namespace.
//! The container has only loopback (no address, no route), so a socket for each connection is
//! created inside its namespace by a short-lived thread that `setns()`s there (a socket stays
//! in the namespace it was made in) and is then spliced to the host-side connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::LocalError;

/// Connects to `127.0.0.1:port` inside the namespace at `netns`.
pub async fn connect(netns: &Path, port: u16) -> Result<TcpStream, LocalError> {
    let path = netns.to_path_buf();
    let shown = path.clone();
    // A dedicated thread, not a pooled one: setns() changes the calling thread for good.
    let std_stream = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || -> Result<std::net::TcpStream, String> {
            let ns = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
            let stream =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(stream)
        })
        .join()
    })
    .await
    .map_err(|e| netns_error(&shown, e.to_string()))?
    .map_err(|_| netns_error(&shown, "connect thread panicked".into()))?
    .map_err(|detail| netns_error(&shown, format!("127.0.0.1:{port}: {detail}")))?;
    TcpStream::from_std(std_stream).map_err(|e| netns_error(&shown, e.to_string()))
}

fn netns_error(path: &Path, detail: String) -> LocalError {
    LocalError::Netns {
        path: path.to_path_buf(),
        detail,
    }
}

/// Forwards connections from a free 127.0.0.1 port to `port` in the namespace; stops on drop.
pub struct Forward {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Forward {
    pub async fn start(netns: PathBuf, port: u16) -> Result<Forward, LocalError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(LocalError::io("binding a loopback port for the container"))?;
        let addr = listener
            .local_addr()
            .map_err(LocalError::io("reading the forward address"))?;
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let netns = netns.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = connect(&netns, port).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(Forward { addr, task })
    }

    /// `127.0.0.1:<port>` on the host.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
