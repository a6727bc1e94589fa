//! The x86_64 syscalls that name paths, where their path arguments sit, and what kind of
//! access each is. The seccomp filter traps exactly these; everything else runs untraced.

use libc as c;

use crate::report::Access;

/// A path argument: the register index of its dirfd (None: relative to the cwd) and of the
/// pointer to the path string.
#[derive(Debug, Clone, Copy)]
pub struct PathArg {
    pub dirfd: Option<usize>,
    pub path: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct PathSyscall {
    pub nr: i64,
    pub access: Access,
    pub args: &'static [PathArg],
}

const fn cwd(path: usize) -> PathArg {
    PathArg { dirfd: None, path }
}
const fn at(dirfd: usize, path: usize) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
    }
}

macro_rules! table {
    ($($nr:ident => $access:ident [$($arg:expr),*]),* $(,)?) => {
        pub const PATH_SYSCALLS: &[PathSyscall] = &[
            $(PathSyscall { nr: c::$nr, access: Access::$access, args: &[$($arg),*] }),*
        ];
    };
}

table! {
    SYS_open => Open [cwd(0)],
    SYS_openat => Open [at(0, 1)],
    SYS_openat2 => Open [at(0, 1)],
    SYS_creat => Modify [cwd(0)],
    SYS_execve => Exec [cwd(0)],
    SYS_execveat => Exec [at(0, 1)],
    SYS_stat => Stat [cwd(0)],
    SYS_lstat => Stat [cwd(0)],
    SYS_newfstatat => Stat [at(0, 1)],
    SYS_statx => Stat [at(0, 1)],
    SYS_access => Stat [cwd(0)],
    SYS_faccessat => Stat [at(0, 1)],
    SYS_faccessat2 => Stat [at(0, 1)],
    SYS_readlink => Readlink [cwd(0)],
    SYS_readlinkat => Readlink [at(0, 1)],
    SYS_chdir => Chdir [cwd(0)],
    SYS_chroot => Chdir [cwd(0)],
    SYS_truncate => Modify [cwd(0)],
    SYS_mkdir => Modify [cwd(0)],
    SYS_mkdirat => Modify [at(0, 1)],
    SYS_rmdir => Modify [cwd(0)],
    SYS_unlink => Modify [cwd(0)],
    SYS_unlinkat => Modify [at(0, 1)],
    SYS_rename => Modify [cwd(0), cwd(1)],
    SYS_renameat => Modify [at(0, 1), at(2, 3)],
    SYS_renameat2 => Modify [at(0, 1), at(2, 3)],
    SYS_link => Modify [cwd(0), cwd(1)],
    SYS_linkat => Modify [at(0, 1), at(2, 3)],
    SYS_symlink => Modify [cwd(1)],
    SYS_symlinkat => Modify [at(1, 2)],
    SYS_chmod => Modify [cwd(0)],
    SYS_fchmodat => Modify [at(0, 1)],
    SYS_chown => Modify [cwd(0)],
    SYS_lchown => Modify [cwd(0)],
    SYS_fchownat => Modify [at(0, 1)],
    SYS_utime => Modify [cwd(0)],
    SYS_utimes => Modify [cwd(0)],
    SYS_utimensat => Modify [at(0, 1)],
    SYS_futimesat => Modify [at(0, 1)],
    SYS_mknod => Modify [cwd(0)],
    SYS_mknodat => Modify [at(0, 1)],
    SYS_statfs => Stat [cwd(0)],
    SYS_getxattr => Stat [cwd(0)],
    SYS_lgetxattr => Stat [cwd(0)],
    SYS_listxattr => Stat [cwd(0)],
    SYS_llistxattr => Stat [cwd(0)],
    SYS_setxattr => Modify [cwd(0)],
    SYS_lsetxattr => Modify [cwd(0)],
    SYS_removexattr => Modify [cwd(0)],
    SYS_lremovexattr => Modify [cwd(0)],
    SYS_uselib => Open [cwd(0)],
    SYS_inotify_add_watch => Stat [cwd(1)],
    SYS_name_to_handle_at => Stat [at(0, 1)],
    SYS_mount => Stat [cwd(1)],
    SYS_swapon => Open [cwd(0)],
}

pub fn lookup(nr: i64) -> Option<&'static PathSyscall> {
    PATH_SYSCALLS.iter().find(|s| s.nr == nr)
}
