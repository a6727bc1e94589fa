//! The ptrace monitor, which needs no capability: the sensor is the app's parent, the app asks
//! to be traced (PTRACE_TRACEME) and installs a seccomp filter that stops it only on syscalls
//! that name paths. Every descendant is followed (fork, vfork, clone, exec). At each stop the
//! path arguments are read and resolved against the tracee's dirfd or working directory, and
//! looked up to learn whether the path exists.
//!
//! Every stop is a round trip through the sensor (two context switches), so the work done at a
//! stop is kept to a few syscalls: the registers, one read of the tracee's memory, and a lookup
//! only for paths not already known to exist.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::sys::ptrace;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use crate::paths;
use crate::recorder::Recorder;
use crate::report::Access;
use crate::syscalls::{self, PathSyscall};

const OPTIONS: libc::c_int = libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_EXITKILL;

/// A chdir waiting for its result.
struct Pending {
    sys: &'static PathSyscall,
    paths: Vec<String>,
}

/// What the tracer keeps per traced thread.
#[derive(Default)]
struct Tracee {
    /// The working directory tracked through fork and chdir, for when /proc/PID/cwd is
    /// unreadable.
    cwd: Option<String>,
    pending: Option<Pending>,
    /// `/proc/PID/mem`, opened when the thread is born (or execs), while it still has the
    /// credentials of a process the sensor may read. The kernel checks access when the file is
    /// opened, not when it is read, so one `pread` per path keeps working after the app drops
    /// privileges (nginx workers call setgid and setuid before their first request), where
    /// `process_vm_readv` is refused and only word-by-word PTRACE_PEEKDATA would be left.
    mem: Option<File>,
    /// process_vm_readv was refused for this thread: go straight to PTRACE_PEEKDATA.
    vm_refused: bool,
    /// Its first SIGSTOP (a new tracee's, not a signal for the app) has been seen.
    started: bool,
}

pub struct Tracer<'a> {
    recorder: &'a Recorder,
    tracees: HashMap<i32, Tracee>,
    /// Paths already found to exist. A path's record says `exists` once any lookup found it, so
    /// looking it up again could not change the report: a repeated access costs only the stop.
    existing: HashSet<String>,
}

fn ptrace_raw(req: libc::c_uint, pid: i32, data: usize) -> i64 {
    // SAFETY: requests used here take no pointers from us, only an integer in `data`.
    unsafe { libc::ptrace(req, pid, 0usize, data) }
}

/// Resumes a stopped tracee, to the next seccomp stop (`CONT`) or to its syscall exit
/// (`SYSCALL`), delivering `signal` if non-zero.
fn resume(pid: i32, to_exit: bool, signal: i32) {
    let req = if to_exit {
        libc::PTRACE_SYSCALL
    } else {
        libc::PTRACE_CONT
    };
    ptrace_raw(req, pid, signal as usize);
}

fn open_mem(pid: i32) -> Option<File> {
    File::open(format!("/proc/{pid}/mem")).ok()
}

impl<'a> Tracer<'a> {
    pub fn new(recorder: &'a Recorder, app: i32) -> Tracer<'a> {
        let app_state = Tracee {
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.to_string_lossy().into_owned()),
            started: true,
            ..Tracee::default()
        };
        Tracer {
            recorder,
            tracees: [(app, app_state)].into(),
            existing: HashSet::new(),
        }
    }

    /// Called once the app has stopped itself after PTRACE_TRACEME.
    pub fn attach(&mut self, app: i32) -> std::io::Result<()> {
        if ptrace_raw(libc::PTRACE_SETOPTIONS, app, OPTIONS as usize) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        resume(app, false, 0);
        Ok(())
    }

    fn waits_for_exit(&self, pid: i32) -> bool {
        self.tracees.get(&pid).is_some_and(|t| t.pending.is_some())
    }

    /// Handles one stop reported by waitpid for a traced process.
    pub fn on_stop(&mut self, pid: i32, status: i32) {
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        if sig == (libc::SIGTRAP | 0x80) {
            self.on_syscall_exit(pid);
            resume(pid, false, 0);
        } else if sig == libc::SIGTRAP && event != 0 {
            match event {
                libc::PTRACE_EVENT_SECCOMP => self.on_syscall_entry(pid),
                libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                    if let Ok(child) = ptrace::getevent(Pid::from_raw(pid)) {
                        let dir = self.tracees.get(&pid).and_then(|t| t.cwd.clone());
                        let child = self.tracee(child as i32);
                        if child.cwd.is_none() {
                            child.cwd = dir;
                        }
                    }
                }
                libc::PTRACE_EVENT_EXEC => {
                    // A new address space. A thread other than the leader that execs takes the
                    // leader's pid; its old id is gone without an exit.
                    if let Ok(former) = ptrace::getevent(Pid::from_raw(pid))
                        && former as i32 != pid
                    {
                        self.tracees.remove(&(former as i32));
                    }
                    let t = self.tracee(pid);
                    t.mem = open_mem(pid);
                    t.vm_refused = false;
                }
                _ => {}
            }
            resume(pid, self.waits_for_exit(pid), 0);
        } else if sig == libc::SIGSTOP && !self.tracee(pid).started {
            // A new tracee's first stop, before it runs any code of its own: its credentials
            // are still its parent's, so its memory can be opened now.
            let t = self.tracee(pid);
            t.started = true;
            t.mem = open_mem(pid);
            resume(pid, false, 0);
        } else {
            resume(pid, self.waits_for_exit(pid), sig);
        }
    }

    pub fn on_exit(&mut self, pid: i32) {
        self.tracees.remove(&pid);
    }

    fn tracee(&mut self, pid: i32) -> &mut Tracee {
        self.tracees.entry(pid).or_default()
    }

    fn base_dir(&self, pid: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|| self.tracees.get(&pid).and_then(|t| t.cwd.clone()))
    }

    /// Reads a NUL-terminated string from the tracee: from its `/proc/PID/mem` when open, else
    /// with process_vm_readv, else word by word with PTRACE_PEEKDATA.
    fn read_string(&mut self, pid: i32, addr: u64) -> Option<String> {
        let t = self.tracee(pid);
        if let Some(mem) = &t.mem
            && let Some(s) = read_string_with(|buf, at| mem.read_at(buf, at as u64).ok(), addr)
        {
            return Some(s);
        }
        if !t.vm_refused {
            let mut refused = false;
            let s = read_string_with(
                |buf, at| {
                    let len = buf.len();
                    let mut local = [std::io::IoSliceMut::new(buf)];
                    let remote = [RemoteIoVec { base: at, len }];
                    process_vm_readv(Pid::from_raw(pid), &mut local, &remote)
                        .map_err(|e| refused = e == nix::errno::Errno::EPERM)
                        .ok()
                },
                addr,
            );
            if s.is_some() {
                return s;
            }
            self.tracee(pid).vm_refused = refused;
        }
        read_string_peek(pid, addr)
    }

    fn on_syscall_entry(&mut self, pid: i32) {
        let Ok(regs) = ptrace::getregs(Pid::from_raw(pid)) else {
            return;
        };
        let Some(sys) = syscalls::lookup(regs.orig_rax as i64) else {
            return;
        };
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let mut paths = Vec::new();
        for arg in sys.args {
            let ptr = args[arg.path];
            if ptr == 0 {
                continue;
            }
            let Some(path) = self.read_string(pid, ptr) else {
                self.recorder.lost(|l| l.ptrace_unresolved += 1);
                continue;
            };
            if path.is_empty() {
                continue; // AT_EMPTY_PATH: the call is about the dirfd itself.
            }
            let base = if path.starts_with('/') {
                Some(String::new())
            } else {
                match arg.dirfd.map(|i| args[i] as i32) {
                    Some(fd) if fd != libc::AT_FDCWD => {
                        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                            .ok()
                            .map(|p| p.to_string_lossy().into_owned())
                    }
                    _ => self.base_dir(pid),
                }
            };
            match base {
                Some(base) => paths.push(paths::resolve(&base, &path)),
                None => self.recorder.lost(|l| l.ptrace_unresolved += 1),
            }
        }
        let argv0 = if sys.access == Access::Exec {
            let argv = args[if sys.nr == libc::SYS_execveat { 2 } else { 1 }];
            read_word(pid, argv)
                .filter(|p| *p != 0)
                .and_then(|p| self.read_string(pid, p))
                .unwrap_or_default()
        } else {
            String::new()
        };
        if paths.is_empty() {
            return;
        }
        if sys.nr == libc::SYS_chdir {
            // The new working directory counts only if the call succeeds: wait for its exit.
            self.tracee(pid).pending = Some(Pending { sys, paths });
            return;
        }
        // Existence is looked up here rather than read from the syscall's result: the sensor
        // shares the app's mount namespace and root, and skipping the syscall-exit stop halves
        // the round trips through the tracer, the cost that dominates ptrace mode.
        record(self.recorder, &mut self.existing, sys, &paths, &argv0);
    }

    fn on_syscall_exit(&mut self, pid: i32) {
        let Some(p) = self.tracees.get_mut(&pid).and_then(|t| t.pending.take()) else {
            return;
        };
        let Ok(regs) = ptrace::getregs(Pid::from_raw(pid)) else {
            return;
        };
        let ok = (regs.rax as i64) >= 0;
        self.recorder.access(&p.paths[0], p.sys.access, ok);
        if ok {
            self.tracee(pid).cwd = Some(p.paths[0].clone());
        }
    }
}

/// Records one syscall's resolved paths, looking up whether each exists (the seccomp-notify
/// monitor shares this, so both monitors report the same thing for the same call).
pub(crate) fn record(
    recorder: &Recorder,
    existing: &mut HashSet<String>,
    sys: &PathSyscall,
    paths: &[String],
    argv0: &str,
) {
    for (i, path) in paths.iter().enumerate() {
        let exists = exists(existing, path);
        // For rename and link the second path is the one the call makes.
        let found = exists && (i == 0 || sys.access != Access::Modify);
        recorder.access(path, sys.access, found);
        if i == 0 && exists && sys.access == Access::Exec {
            recorder.exec(path, argv0);
            if let Some(interp) = shebang(path) {
                recorder.access(&interp, Access::Exec, true);
                recorder.exec(&interp, "");
            }
        }
    }
}

/// Paths remembered as found; beyond, they are looked up again (the memory stays bounded
/// whatever the app does, and a real app's paths fit many times over).
const MAX_KNOWN: usize = 1 << 16;

/// Whether `path` exists, looked up once: only paths not yet found are looked up again. A
/// path's record says `exists` once any lookup found it, so looking again could not change the
/// report.
pub(crate) fn exists(existing: &mut HashSet<String>, path: &str) -> bool {
    if existing.contains(path) {
        return true;
    }
    let exists = std::fs::symlink_metadata(path).is_ok();
    if exists && existing.len() < MAX_KNOWN {
        existing.insert(path.to_string());
    }
    exists
}

/// The interpreter of a `#!` script: the kernel opens it, not the app, so no syscall names it.
fn shebang(path: &str) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let text = std::str::from_utf8(&line[..end]).ok()?;
    let interp = text.split_whitespace().next()?;
    interp.starts_with('/').then(|| paths::resolve("/", interp))
}

fn read_word(pid: i32, addr: u64) -> Option<u64> {
    ptrace::read(Pid::from_raw(pid), addr as ptrace::AddressType)
        .ok()
        .map(|w| w as u64)
}

/// Reads a NUL-terminated string of at most 4096 bytes with `read(buf, addr)`, which returns how
/// many bytes it read at `addr` (None or 0: unreadable). Chunks never cross a page, so a string
/// that ends just before an unmapped page is still read.
pub(crate) fn read_string_with(
    mut read: impl FnMut(&mut [u8], usize) -> Option<usize>,
    addr: u64,
) -> Option<String> {
    const MAX: usize = 4096;
    let mut buf = [0u8; 512];
    let mut out = Vec::new();
    let mut at = addr as usize;
    while out.len() < MAX {
        let len = (4096 - at % 4096).min(buf.len());
        let n = read(&mut buf[..len], at).filter(|&n| n > 0)?;
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..n]);
        at += n;
    }
    None
}

fn read_string_peek(pid: i32, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < 4096 {
        let word = read_word(pid, at)?.to_ne_bytes();
        if let Some(end) = word.iter().position(|&b| b == 0) {
            out.extend_from_slice(&word[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&word);
        at += 8;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_shebang_interpreters() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/usr/bin/../bin/env python3\nprint(1)\n").unwrap();
        assert_eq!(
            super::shebang(script.to_str().unwrap()).as_deref(),
            Some("/usr/bin/env")
        );
        std::fs::write(&script, "\x7fELF").unwrap();
        assert_eq!(super::shebang(script.to_str().unwrap()), None);
    }
}
