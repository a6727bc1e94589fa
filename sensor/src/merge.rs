//! What Kubernetes runs inside the container besides the app — exec probes, `postStart` and
//! `preStop` hooks, `kubectl exec` — is started by the container runtime, not by the app, so
//! the PID-1 sensor's ptrace and seccomp monitors never see it. `whittle-sensor exec -- CMD`
//! watches such a command and hands what it saw to the PID-1 sensor of the same container,
//! which merges it into the one report the pod delivers.
//!
//! The hand-over is an abstract Unix socket: no file to create (the root filesystem may be
//! read-only), gone with the network namespace. Its name carries the container's mount
//! namespace, so the sensors of two containers of one pod (which share the network namespace)
//! never mix. What arrives is bounded in size and time, taken only from the sensor's own user or
//! root, and goes through the recorder's budget like any access. A process that can connect
//! could only add paths it could equally have had recorded by touching them under a monitor.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use crate::recorder::Recorder;
use crate::report::{MAX_JSON_BYTES, Report};

/// How long one hand-over may take: a probe's own timeout is often one second.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket of the PID-1 sensor of the container this process runs in.
fn address() -> std::io::Result<SocketAddr> {
    use std::os::unix::fs::MetadataExt;
    let mnt = std::fs::metadata("/proc/self/ns/mnt")?.ino();
    SocketAddr::from_abstract_name(format!("whittle-sensor/mnt:{mnt}"))
}

/// Listens for the observations of `whittle-sensor exec` in this container. Binding happens
/// here, before the app starts; [`Merger::spawn`] takes hand-overs on a thread of its own.
pub struct Merger {
    listener: UnixListener,
}

impl Merger {
    pub fn bind() -> std::io::Result<Merger> {
        Ok(Merger {
            listener: UnixListener::bind_addr(&address()?)?,
        })
    }

    /// Merges every hand-over into `recorder` until the process exits (the thread is never
    /// joined: a hand-over after the report was made is simply not in it).
    pub fn spawn(self, recorder: Arc<Recorder>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for stream in self.listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Err(e) = take(stream, &recorder) {
                    eprintln!("whittle-sensor: refused observations of an exec'd command: {e}");
                }
            }
        })
    }
}

/// Reads one hand-over and merges it.
fn take(stream: UnixStream, recorder: &Recorder) -> Result<(), String> {
    let uid = peer_uid(&stream).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    // SAFETY: geteuid cannot fail.
    let own = unsafe { libc::geteuid() };
    if uid != own && uid != 0 {
        return Err(format!("from uid {uid}, not the sensor's ({own}) or root"));
    }
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let limit = MAX_JSON_BYTES as u64 + 1;
    (&stream)
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading: {e}"))?;
    if body.len() > MAX_JSON_BYTES {
        return Err(format!("over {MAX_JSON_BYTES} bytes"));
    }
    let report: Report = serde_json::from_slice(&body).map_err(|e| format!("not a report: {e}"))?;
    recorder.merge(&report);
    Ok(())
}

fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Hands `report` to the PID-1 sensor of this container.
pub fn send(report: &Report) -> Result<(), String> {
    let address = address().map_err(|e| format!("/proc/self/ns/mnt: {e}"))?;
    let mut stream = UnixStream::connect_addr(&address).map_err(|e| {
        format!("no whittle sensor runs as this container's PID 1 to take the observations ({e})")
    })?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    stream
        .write_all(&body)
        .map_err(|e| format!("handing over the observations: {e}"))
}
