//! A seccomp-BPF filter that hands path-naming syscalls to the sensor (SECCOMP_RET_TRACE for the
//! ptrace monitor, SECCOMP_RET_USER_NOTIF for the seccomp-notify one) and lets every other
//! syscall run at full speed. Hand-assembled: it is a dozen instructions
//! per syscall of one shape, smaller than any dependency that would generate it.

use std::os::fd::{FromRawFd, OwnedFd};

use libc::{sock_filter, sock_fprog};

use crate::syscalls::PATH_SYSCALLS;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
// Offsets in struct seccomp_data.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The stat calls that are `fstat` when their flags hold AT_EMPTY_PATH: glibc (2.33 and later),
/// musl and Rust's std implement fstat as `newfstatat(fd, "", buf, AT_EMPTY_PATH)` or
/// `statx(fd, "", AT_EMPTY_PATH, ...)`, and the path is then empty: a stop would learn nothing.
/// nginx makes one per request. The filter cannot read the path, so a call that passes
/// AT_EMPTY_PATH together with a non-empty path is not seen either (documented in
/// docs/sensor.md). Pairs of syscall number and index of the flags argument.
pub const FSTAT_FORMS: [(i64, usize); 2] = [(libc::SYS_newfstatat, 3), (libc::SYS_statx, 2)];

/// Offset in struct seccomp_data of the low 32 bits of argument `i` (x86_64 is little-endian).
const fn arg_low_offset(i: usize) -> u32 {
    16 + 8 * i as u32
}

/// The program: allow other architectures' calls untraced (x32/i386 entry points are not
/// expected in x86_64 images), return `action` for the listed syscalls (except their fstat
/// forms) and for `extra`, allow the rest.
pub fn program(action: u32, extra: &[i64]) -> Vec<sock_filter> {
    let n = PATH_SYSCALLS.len() + extra.len();
    let forms = FSTAT_FORMS.len();
    // Layout: header (4), one comparison per syscall (n: the path syscalls, then `extra`),
    // ALLOW, two instructions per fstat form (load flags, test AT_EMPTY_PATH), ALLOW, `action`.
    // Jumps only go forward.
    let first_cmp = 4;
    let first_form = first_cmp + n + 1;
    let allow = first_form + 2 * forms;
    let trace = allow + 1;
    let offset = |from: usize, to: usize| -> u8 { (to - from - 1) as u8 };
    let mut p = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    for (i, s) in PATH_SYSCALLS.iter().enumerate() {
        let at = first_cmp + i;
        let target = match FSTAT_FORMS.iter().position(|(nr, _)| *nr == s.nr) {
            Some(f) => first_form + 2 * f,
            None => trace,
        };
        p.push(jeq(s.nr as u32, offset(at, target), 0));
    }
    for (i, nr) in extra.iter().enumerate() {
        let at = first_cmp + PATH_SYSCALLS.len() + i;
        p.push(jeq(*nr as u32, offset(at, trace), 0));
    }
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    for (f, (_, flags_arg)) in FSTAT_FORMS.iter().enumerate() {
        let at = first_form + 2 * f;
        p.push(stmt(BPF_LD_W_ABS, arg_low_offset(*flags_arg)));
        p.push(sock_filter {
            code: BPF_JSET_K,
            jt: offset(at + 1, allow),
            jf: offset(at + 1, trace),
            k: libc::AT_EMPTY_PATH as u32,
        });
    }
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, action));
    debug_assert_eq!(p.len(), trace + 1);
    p
}

/// Installs the filter on the calling thread (inherited by children and kept across execve).
/// Needs no_new_privs or CAP_SYS_ADMIN.
pub fn install(program: &[sock_filter]) -> std::io::Result<()> {
    let prog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    // SAFETY: prog points at a live, correctly sized filter for the duration of the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Installs the filter on the calling thread with a user-notification listener
/// (SECCOMP_FILTER_FLAG_NEW_LISTENER) and returns the listener. Needs no_new_privs or
/// CAP_SYS_ADMIN; fails with EBUSY when a filter already in force has a listener.
pub fn install_listener(program: &[sock_filter]) -> std::io::Result<OwnedFd> {
    let prog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    // SAFETY: prog points at a live, correctly sized filter for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const sock_fprog,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter the way the kernel would, for one syscall number and its arguments.
    fn eval_args(p: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut pc = 0;
        let mut acc = 0;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        NR_OFFSET => nr,
                        ARCH_OFFSET => arch,
                        k if k >= 16 && k % 8 == 0 => args[(k as usize - 16) / 8] as u32,
                        k => panic!("unexpected load offset {k}"),
                    }
                }
                BPF_JEQ_K | BPF_JSET_K => {
                    let hit = if i.code == BPF_JEQ_K {
                        acc == i.k
                    } else {
                        acc & i.k != 0
                    };
                    pc += if hit { i.jt as usize } else { i.jf as usize };
                }
                BPF_RET_K => return i.k,
                other => panic!("unexpected opcode {other}"),
            }
            pc += 1;
        }
    }

    fn eval(p: &[sock_filter], arch: u32, nr: u32) -> u32 {
        eval_args(p, arch, nr, [0; 6])
    }

    #[test]
    fn traces_path_syscalls_only() {
        let p = program(libc::SECCOMP_RET_TRACE, &[]);
        assert!(p.len() < 256, "jump offsets fit in u8");
        for s in PATH_SYSCALLS {
            assert_eq!(
                eval(&p, AUDIT_ARCH_X86_64, s.nr as u32),
                libc::SECCOMP_RET_TRACE
            );
        }
        for nr in [
            libc::SYS_accept4,
            libc::SYS_recvfrom,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_fstat,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_sendfile,
            libc::SYS_epoll_wait,
        ] {
            assert_eq!(
                eval(&p, AUDIT_ARCH_X86_64, nr as u32),
                libc::SECCOMP_RET_ALLOW
            );
        }
        assert_eq!(
            eval(&p, 0x4000_0003, libc::SYS_open as u32),
            libc::SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn the_notify_program_also_stops_extra_syscalls() {
        let extra = [libc::SYS_setuid, libc::SYS_setresgid];
        let p = program(libc::SECCOMP_RET_USER_NOTIF, &extra);
        assert!(p.len() < 256, "jump offsets fit in u8");
        for nr in PATH_SYSCALLS.iter().map(|s| s.nr).chain(extra) {
            assert_eq!(
                eval(&p, AUDIT_ARCH_X86_64, nr as u32),
                libc::SECCOMP_RET_USER_NOTIF
            );
        }
        assert_eq!(
            eval_args(
                &p,
                AUDIT_ARCH_X86_64,
                libc::SYS_newfstatat as u32,
                [3, 0, 0, libc::AT_EMPTY_PATH as u64, 0, 0]
            ),
            libc::SECCOMP_RET_ALLOW
        );
        for nr in [libc::SYS_read, libc::SYS_getuid, libc::SYS_clone] {
            assert_eq!(
                eval(&p, AUDIT_ARCH_X86_64, nr as u32),
                libc::SECCOMP_RET_ALLOW
            );
        }
    }

    #[test]
    fn fstat_forms_run_untraced_path_forms_stop() {
        let p = program(libc::SECCOMP_RET_TRACE, &[]);
        let empty = libc::AT_EMPTY_PATH as u64;
        let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
        let stat = libc::SYS_newfstatat as u32;
        let statx = libc::SYS_statx as u32;
        let x86_64 = AUDIT_ARCH_X86_64;
        // newfstatat(dirfd, path, buf, flags); statx(dirfd, path, flags, mask, buf).
        assert_eq!(
            eval_args(&p, x86_64, stat, [3, 0, 0, empty, 0, 0]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            eval_args(&p, x86_64, stat, [3, 0, 0, nofollow, 0, 0]),
            libc::SECCOMP_RET_TRACE
        );
        assert_eq!(
            eval_args(&p, x86_64, statx, [3, 0, empty | nofollow, 0, 0, 0]),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            eval_args(&p, x86_64, statx, [3, 0, 0, empty, 0, 0]),
            libc::SECCOMP_RET_TRACE,
            "statx's flags are its third argument"
        );
        // Other calls are traced whatever their arguments.
        assert_eq!(
            eval_args(
                &p,
                x86_64,
                libc::SYS_openat as u32,
                [0, 0, empty, empty, 0, 0]
            ),
            libc::SECCOMP_RET_TRACE
        );
    }
}
