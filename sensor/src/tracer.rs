//! The ptrace monitor, which needs no capability: the sensor is the app's parent, the app asks
//! to be traced (PTRACE_TRACEME) and installs a seccomp filter that stops it only on syscalls
//! that name paths. Every descendant is followed (fork, vfork, clone, exec). At each stop the
//! path arguments are read and resolved against the tracee's dirfd or working directory, and
//! looked up to learn whether the path exists.

use std::collections::HashMap;

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

pub struct Tracer<'a> {
    recorder: &'a Recorder,
    cwd: HashMap<i32, String>,
    pending: HashMap<i32, Pending>,
    seen: std::collections::HashSet<i32>,
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

impl<'a> Tracer<'a> {
    pub fn new(recorder: &'a Recorder, app: i32) -> Tracer<'a> {
        let mut cwd = HashMap::new();
        if let Ok(d) = std::env::current_dir() {
            cwd.insert(app, d.to_string_lossy().into_owned());
        }
        Tracer {
            recorder,
            cwd,
            pending: HashMap::new(),
            seen: [app].into(),
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

    /// Handles one stop reported by waitpid for a traced process.
    pub fn on_stop(&mut self, pid: i32, status: i32) {
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        if sig == (libc::SIGTRAP | 0x80) {
            self.on_syscall_exit(pid);
            resume(pid, false, 0);
        } else if sig == libc::SIGTRAP && event != 0 {
            if event == libc::PTRACE_EVENT_SECCOMP {
                self.on_syscall_entry(pid);
                resume(pid, self.pending.contains_key(&pid), 0);
                return;
            }
            if matches!(
                event,
                libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE
            ) && let Ok(child) = ptrace::getevent(Pid::from_raw(pid))
            {
                let child = child as i32;
                if let Some(dir) = self.cwd.get(&pid).cloned() {
                    self.cwd.insert(child, dir);
                }
            }
            resume(pid, self.pending.contains_key(&pid), 0);
        } else if sig == libc::SIGSTOP && self.seen.insert(pid) {
            // A new tracee's first stop; not a signal for the app.
            resume(pid, false, 0);
        } else {
            resume(pid, self.pending.contains_key(&pid), sig);
        }
    }

    pub fn on_exit(&mut self, pid: i32) {
        self.cwd.remove(&pid);
        self.pending.remove(&pid);
        self.seen.remove(&pid);
    }

    fn base_dir(&self, pid: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|| self.cwd.get(&pid).cloned())
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
            let Some(path) = read_string(pid, ptr) else {
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
                .and_then(|p| read_string(pid, p))
                .unwrap_or_default()
        } else {
            String::new()
        };
        if paths.is_empty() {
            return;
        }
        if sys.nr == libc::SYS_chdir {
            // The new working directory counts only if the call succeeds: wait for its exit.
            self.pending.insert(pid, Pending { sys, paths });
            return;
        }
        // Existence is looked up here rather than read from the syscall's result: the sensor
        // shares the app's mount namespace and root, and skipping the syscall-exit stop halves
        // the round trips through the tracer, the cost that dominates ptrace mode.
        for (i, path) in paths.iter().enumerate() {
            let exists = std::fs::symlink_metadata(path).is_ok();
            // For rename and link the second path is the one the call makes.
            let found = exists && (i == 0 || sys.access != Access::Modify);
            self.recorder.access(path, sys.access, found);
            if i == 0 && exists && sys.access == Access::Exec {
                self.recorder.exec(path, &argv0);
                if let Some(interp) = shebang(path) {
                    self.recorder.access(&interp, Access::Exec, true);
                    self.recorder.exec(&interp, "");
                }
            }
        }
    }

    fn on_syscall_exit(&mut self, pid: i32) {
        let Some(p) = self.pending.remove(&pid) else {
            return;
        };
        let Ok(regs) = ptrace::getregs(Pid::from_raw(pid)) else {
            return;
        };
        let ok = (regs.rax as i64) >= 0;
        self.recorder.access(&p.paths[0], p.sys.access, ok);
        if ok {
            self.cwd.insert(pid, p.paths[0].clone());
        }
    }
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

/// Reads a NUL-terminated string from the tracee: process_vm_readv page by page, or word by
/// word with PTRACE_PEEKDATA when the tracee changed credentials and vm reads are refused.
fn read_string(pid: i32, addr: u64) -> Option<String> {
    const MAX: usize = 4096;
    let mut out = Vec::new();
    let mut at = addr as usize;
    while out.len() < MAX {
        let page_left = 4096 - (at % 4096);
        let mut buf = vec![0u8; page_left];
        let n = {
            let mut local = [std::io::IoSliceMut::new(&mut buf)];
            let remote = [RemoteIoVec {
                base: at,
                len: page_left,
            }];
            process_vm_readv(Pid::from_raw(pid), &mut local, &remote).unwrap_or(0)
        };
        if n == 0 {
            return read_string_peek(pid, addr);
        }
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
