//! Keeping the sensor's secrets from the app, which runs with the sensor's uid: the app starts
//! without the sensor's variables ([`app_env`]), and the sensor is not dumpable
//! ([`make_undumpable`]), so the app can neither read `/proc/1/environ` or `/proc/1/mem` nor
//! ptrace it. The kernel keeps the environment the sensor was started with in its memory
//! (that is what `/proc/1/environ` shows), so the report token's value is also overwritten
//! there once read ([`scrub`]).

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStringExt;

use crate::options::ENV;

/// PR_SET_DUMPABLE 0: other processes of the same uid lose access to the sensor's /proc files
/// that expose its memory, and the right to ptrace it, unless they hold CAP_SYS_PTRACE.
pub fn make_undumpable() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Undoes [`make_undumpable`] in the app's process before exec, which would restore it anyway:
/// until then the sensor must be able to read the child's memory (the path of its first
/// execve).
pub fn make_dumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
}

/// Overwrites with NULs the values of `names` in the process's environment block. Call once
/// they are read, while the process has one thread (nothing else reads the environment).
pub fn scrub(names: &[&str]) {
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings that the process
    // owns; each write stays within a string's own length.
    unsafe {
        let mut entry = libc::environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let s = *entry;
            let bytes = CStr::from_ptr(s).to_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=')
                && names.iter().any(|n| n.as_bytes() == &bytes[..eq])
            {
                std::ptr::write_bytes(s.add(eq + 1), 0, bytes.len() - eq - 1);
            }
            entry = entry.add(1);
        }
    }
}

/// The app's environment: the sensor's, less the variables meant for the sensor.
pub fn app_env() -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| !ENV.iter().any(|n| k == n))
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            CString::new(entry).ok()
        })
        .collect()
}
