//! The app's capabilities. fanotify needs CAP_SYS_ADMIN in the sensor, not in the app, so the
//! app starts without it unless the container had it before whittle came
//! (`WHITTLE_KEEP_SYS_ADMIN=1`).

/// Bit of CAP_SYS_ADMIN in the capability sets (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;

/// _LINUX_CAPABILITY_VERSION_3: 64-bit sets, as two 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

pub fn has_cap_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// How CAP_SYS_ADMIN left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// From every set, the bounding set included.
    Everywhere,
    /// From every set but the bounding set, which takes CAP_SETPCAP to change; no_new_privs
    /// is set instead, or a root app would get the capability back at its next exec.
    NoNewPrivs,
}

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Removes CAP_SYS_ADMIN from the calling process's bounding, ambient, effective, permitted
/// and inheritable sets. Called in the app's process, just before exec.
pub fn drop_sys_admin() -> Result<Dropped, String> {
    let cap = CAP_SYS_ADMIN as libc::c_ulong;
    // SAFETY: prctl and capget/capset with integer arguments and pointers to local structs of
    // the layout the kernel expects for version 3 (one header, two data halves).
    unsafe {
        // EINVAL before Linux 4.3, which has no ambient set: nothing to lower then.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
            cap,
            0,
            0,
        );
        let dropped = if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 {
            Dropped::Everywhere
        } else if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 {
            Dropped::NoNewPrivs
        } else {
            return Err(errno(
                "prctl(PR_CAPBSET_DROP) and prctl(PR_SET_NO_NEW_PRIVS)",
            ));
        };
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(errno("capget"));
        }
        let keep = !(1u32 << CAP_SYS_ADMIN);
        data[0].effective &= keep;
        data[0].permitted &= keep;
        data[0].inheritable &= keep;
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(errno("capset"));
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_caps(pid: i32) -> Vec<(String, u64)> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
            })
            .collect()
    }

    /// In a forked child, so the test process keeps its capabilities.
    #[test]
    fn drops_the_capability_from_every_set() {
        // SAFETY: the child only makes syscalls, reads a file and exits without unwinding.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match drop_sys_admin() {
                Ok(_) => {
                    let caps = status_caps(std::process::id() as i32);
                    let held = caps
                        .iter()
                        .any(|(_, bits)| bits & (1 << CAP_SYS_ADMIN) != 0);
                    // Without CAP_SETPCAP the bounding set keeps it.
                    let bounding_only = caps
                        .iter()
                        .all(|(k, bits)| k == "CapBnd" || bits & (1 << CAP_SYS_ADMIN) == 0);
                    if !held || bounding_only { 0 } else { 1 }
                }
                Err(_) => 2,
            };
            // SAFETY: leaving the forked child without running the test harness's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
