//! The seccomp-notify monitor, which needs no capability either: the app installs a filter that
//! returns SECCOMP_RET_USER_NOTIF for the syscalls the ptrace monitor stops on and hands the
//! listener to the sensor. The sensor reads each notification, the path from the app's memory
//! and its dirfd or working directory, records, and answers CONTINUE: the kernel then runs the
//! syscall itself. One wake-up of the sensor per path syscall instead of a ptrace stop (signal
//! delivery, waitpid, GETREGS, CONT), and the kernel hands both sides over on one CPU when it
//! has SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6).
//!
//! A notification arrives before the syscall runs and its result is never seen, so whether a
//! path exists is looked up by the sensor, in the root it shares with the app, exactly as the
//! ptrace monitor does at its syscall-entry stop.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{ptrace, seccomp_filter};
use crate::paths;
use crate::recorder::Recorder;
use crate::report::Access;
use crate::syscalls;

/// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (linux/seccomp.h, 6.6), not in the libc crate.
const FD_SYNC_WAKE_UP: u64 = 1;

/// Syscalls that change a thread's credentials. The sensor can open `/proc/PID/mem` only while
/// the app has its credentials (it has no CAP_SYS_PTRACE), and the kernel checks access when
/// the file is opened, not at each read: stopping here, before the change, is the last moment
/// to open it (nginx workers call setgid, initgroups and setuid before serving). Unlike ptrace
/// there is no PTRACE_PEEKDATA to fall back on.
pub const CRED_SYSCALLS: [i64; 10] = [
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capset,
];

/// The filter the app installs.
pub fn program() -> Vec<libc::sock_filter> {
    seccomp_filter::program(libc::SECCOMP_RET_USER_NOTIF, &CRED_SYSCALLS)
}

/// Whether this kernel, and the seccomp profile the container runs under, let the app install
/// a filter with a listener and the sensor answer CONTINUE. Checked in a throwaway child (a
/// filter cannot be removed once installed). Must run before the sensor starts threads.
pub fn available() -> Result<(), String> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    // SECCOMP_USER_NOTIF_FLAG_CONTINUE came with 5.5; without it the sensor would have to run
    // each syscall on the app's behalf.
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    if version.len() < 2 || (version[0], version[1]) < (5, 5) {
        return Err(format!(
            "Linux {release} has no seccomp user notification with CONTINUE (needs 5.5)"
        ));
    }
    let filter = seccomp_filter::program(libc::SECCOMP_RET_USER_NOTIF, &[]);
    // SAFETY: the sensor has no other threads yet; the child only makes syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the forked child, which exits without unwinding.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(100);
            }
            let code = match seccomp_filter::install_listener(&filter) {
                Ok(_) => 0,
                Err(e) => e.raw_os_error().unwrap_or(101),
            };
            libc::_exit(code)
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(100) => Err("prctl(PR_SET_NO_NEW_PRIVS) refused".into()),
        Some(errno) => Err(format!(
            "installing a seccomp filter with a listener: {} (seccomp(2) forbidden by the \
             container's seccomp profile, or a listener already in force)",
            std::io::Error::from_raw_os_error(errno)
        )),
        None => Err("the seccomp probe child died".into()),
    }
}

/// Sends the listener to the sensor over `sock` (SCM_RIGHTS). Called in the app's process after
/// installing the filter, before exec.
pub fn send_listener(sock: RawFd, listener: RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 array: cmsg buffers must be aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr and the control buffer are local and sized with CMSG_SPACE; CMSG_FIRSTHDR
    // of a buffer that large is non-null.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener);
        if libc::sendmsg(sock, &msg, 0) != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives the listener the app sent; an error when the app closed the socket without sending
/// (it could not install the filter and has said why on stderr).
pub fn recv_listener(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: as in send_listener; the received descriptor is taken into an OwnedFd once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        loop {
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            break;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the app sent no seccomp listener",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// What the monitor keeps per app thread (notifications name threads).
#[derive(Default)]
struct Target {
    /// `/proc/PID/mem`, opened at the thread's first notification or before it changes
    /// credentials; stale after an exec (reads return nothing), then opened again.
    mem: Option<File>,
    /// The last working directory read from `/proc/PID/cwd` or set by chdir, for when the
    /// link is no longer readable (the thread dropped privileges).
    cwd: Option<String>,
}

pub struct NotifyMonitor {
    listener: OwnedFd,
}

/// Above this many threads known, the dead ones are forgotten (their `/proc/PID/mem` files
/// would otherwise stay open for the whole run).
const PRUNE_AT: usize = 1024;

impl NotifyMonitor {
    pub fn new(listener: OwnedFd) -> NotifyMonitor {
        // Where the kernel has it (6.6), the app and the sensor are switched on one CPU rather
        // than one waking the other on another CPU: on a 2-vCPU VM that wake-up is most of the
        // cost. Older kernels refuse it (EINVAL) and the monitor works without it.
        // SAFETY: the ioctl reads a u64 flags word.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                FD_SYNC_WAKE_UP,
            )
        };
        NotifyMonitor { listener }
    }

    /// Answers notifications on a thread for the rest of the sensor's life. It is never joined:
    /// the last notification of a dying container may come at any time, and the report is a
    /// snapshot of the recorder, which the thread only ever adds to.
    pub fn spawn(self, recorder: Arc<Recorder>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut s = Supervisor {
                fd: self.listener.as_raw_fd(),
                recorder: &recorder,
                targets: HashMap::new(),
                existing: HashSet::new(),
            };
            s.run();
            drop(self.listener);
        })
    }
}

struct Supervisor<'a> {
    fd: RawFd,
    recorder: &'a Recorder,
    targets: HashMap<u32, Target>,
    existing: HashSet<String>,
}

impl Supervisor<'_> {
    fn run(&mut self) {
        loop {
            // SAFETY: seccomp_notif is plain data; RECV requires it zeroed.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: RECV writes one seccomp_notif into req.
            let rc = unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
            if rc < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // The thread was killed while waiting for us, or no process is left under
                    // the filter: then RECV fails at once, forever, and would spin. The
                    // listener reports POLLHUP once the last one is gone (Linux 5.8).
                    Some(libc::ENOENT) if self.app_left() => continue,
                    _ => return,
                }
            }
            self.handle(&req);
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            };
            // SAFETY: SEND reads one seccomp_notif_resp. ENOENT (the thread is gone) needs no
            // handling: there is nothing left to let run.
            unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
        }
    }

    /// Whether any process still runs under the filter; waits up to 100 ms to find out, so
    /// that a listener whose processes are all gone but that does not report POLLHUP (before
    /// 5.8) costs ten wake-ups a second, not a spinning CPU.
    fn app_left(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        !(n > 0 && pfd.revents & libc::POLLHUP != 0 && pfd.revents & libc::POLLIN == 0)
    }

    /// Whether the thread behind notification `id` is still waiting for our answer: then what
    /// was read from `/proc/PID/...` was read from that thread, not from one that reused its id.
    fn still_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: ID_VALID reads a u64.
        unsafe { libc::ioctl(self.fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
    }

    fn target(&mut self, pid: u32) -> &mut Target {
        if self.targets.len() >= PRUNE_AT && !self.targets.contains_key(&pid) {
            self.targets
                .retain(|p, _| std::path::Path::new(&format!("/proc/{p}")).exists());
        }
        self.targets.entry(pid).or_default()
    }

    fn handle(&mut self, req: &libc::seccomp_notif) {
        let pid = req.pid;
        let nr = req.data.nr as i64;
        if CRED_SYSCALLS.contains(&nr) {
            // Open (again: an exec may have made the old file stale) while the credentials are
            // still ones the sensor may read, and remember the working directory for when
            // /proc/PID/cwd becomes unreadable.
            let mem = open_mem(pid);
            let cwd = read_link(format!("/proc/{pid}/cwd"));
            if self.still_valid(req.id) {
                let t = self.target(pid);
                if mem.is_some() {
                    t.mem = mem;
                }
                if cwd.is_some() {
                    t.cwd = cwd;
                }
            }
            return;
        }
        let Some(sys) = syscalls::lookup(nr) else {
            return;
        };
        let args = req.data.args;
        let mut raw = Vec::with_capacity(sys.args.len());
        let mut unreadable = 0;
        for arg in sys.args {
            let ptr = args[arg.path];
            if ptr == 0 {
                continue;
            }
            match self.read_string(pid, ptr) {
                Some(path) if path.is_empty() => {} // AT_EMPTY_PATH: about the dirfd itself.
                Some(path) => raw.push((arg, path)),
                None => unreadable += 1,
            }
        }
        let argv0 = if sys.access == Access::Exec && !raw.is_empty() {
            let argv = args[if sys.nr == libc::SYS_execveat { 2 } else { 1 }];
            self.read_word(pid, argv)
                .filter(|p| *p != 0)
                .and_then(|p| self.read_string(pid, p))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut resolved = Vec::with_capacity(raw.len());
        for (arg, path) in raw {
            let base = if path.starts_with('/') {
                Some(String::new())
            } else {
                match arg.dirfd.map(|i| args[i] as i32) {
                    Some(fd) if fd != libc::AT_FDCWD => read_link(format!("/proc/{pid}/fd/{fd}")),
                    _ => self.cwd(pid),
                }
            };
            match base {
                Some(base) => resolved.push(paths::resolve(&base, &path)),
                None => unreadable += 1,
            }
        }
        // Memory and links read after the thread stopped waiting may belong to another thread
        // that reused the id: drop them rather than record someone else's paths.
        if !self.still_valid(req.id) {
            return;
        }
        if unreadable > 0 {
            self.recorder.lost(|l| l.ptrace_unresolved += unreadable);
        }
        if resolved.is_empty() {
            return;
        }
        if sys.access == Access::Chdir {
            // The call's result is never seen: the new directory counts if it is one.
            let path = &resolved[0];
            let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
            self.recorder.access(path, sys.access, is_dir);
            if is_dir && sys.nr == libc::SYS_chdir {
                self.target(pid).cwd = Some(path.clone());
            }
            return;
        }
        ptrace::record(self.recorder, &mut self.existing, sys, &resolved, &argv0);
    }

    fn cwd(&mut self, pid: u32) -> Option<String> {
        match read_link(format!("/proc/{pid}/cwd")) {
            Some(cwd) => {
                self.target(pid).cwd = Some(cwd.clone());
                Some(cwd)
            }
            None => self.targets.get(&pid).and_then(|t| t.cwd.clone()),
        }
    }

    /// Reads `buf.len()` bytes or fewer at `addr` through the thread's `/proc/PID/mem`, opening
    /// it (again) when there is none or it reads nothing: after an exec, or a reused id, the
    /// open file belongs to an address space that is gone.
    fn read_at(&mut self, pid: u32, buf: &mut [u8], addr: usize) -> Option<usize> {
        let t = self.target(pid);
        if let Some(mem) = &t.mem
            && let Ok(n) = mem.read_at(buf, addr as u64)
            && n > 0
        {
            return Some(n);
        }
        let mem = open_mem(pid)?;
        let n = mem.read_at(buf, addr as u64).ok().filter(|&n| n > 0);
        self.target(pid).mem = Some(mem);
        n
    }

    fn read_string(&mut self, pid: u32, addr: u64) -> Option<String> {
        ptrace::read_string_with(|buf, at| self.read_at(pid, buf, at), addr)
    }

    fn read_word(&mut self, pid: u32, addr: u64) -> Option<u64> {
        let mut word = [0u8; 8];
        (self.read_at(pid, &mut word, addr as usize)? == 8).then(|| u64::from_ne_bytes(word))
    }
}

fn open_mem(pid: u32) -> Option<File> {
    File::open(format!("/proc/{pid}/mem")).ok()
}

fn read_link(path: String) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cred_syscalls_are_not_path_syscalls() {
        for nr in CRED_SYSCALLS {
            assert!(syscalls::lookup(nr).is_none(), "{nr}");
        }
    }
}
