//! A seccomp-BPF filter that stops the tracer on path-naming syscalls only (SECCOMP_RET_TRACE)
//! and lets every other syscall run at full speed. Hand-assembled: it is a dozen instructions
//! per syscall of one shape, smaller than any dependency that would generate it.

use libc::{sock_filter, sock_fprog};

use crate::syscalls::PATH_SYSCALLS;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
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

/// The program: allow other architectures' calls untraced (x32/i386 entry points are not
/// expected in x86_64 images), trace the listed syscalls, allow the rest.
pub fn program() -> Vec<sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, ARCH_OFFSET),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, NR_OFFSET),
    ];
    let n = PATH_SYSCALLS.len();
    for (i, s) in PATH_SYSCALLS.iter().enumerate() {
        // On a match jump to the TRACE return after the last comparison.
        let to_trace = (n - i) as u8;
        p.push(jeq(s.nr as u32, to_trace, 0));
    }
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_TRACE));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter the way the kernel would, for one syscall number.
    fn eval(p: &[sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0;
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == ARCH_OFFSET { arch } else { nr },
                BPF_JEQ_K => {
                    pc += if acc == i.k {
                        i.jt as usize
                    } else {
                        i.jf as usize
                    };
                }
                BPF_RET_K => return i.k,
                other => panic!("unexpected opcode {other}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn traces_path_syscalls_only() {
        let p = program();
        assert!(p.len() < 256, "jump offsets fit in u8");
        for s in PATH_SYSCALLS {
            assert_eq!(
                eval(&p, AUDIT_ARCH_X86_64, s.nr as u32),
                libc::SECCOMP_RET_TRACE
            );
        }
        for nr in [
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
}
