//! Collects accesses from the monitors (possibly from several threads) into the report.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths;
use crate::report::{Access, Executable, Identity, Loss, Mode, PathRecord, Report, SCHEMA_VERSION};

#[derive(Default)]
struct State {
    paths: BTreeMap<String, PathRecord>,
    executables: BTreeMap<String, Executable>,
    loss: Loss,
}

pub struct Recorder {
    started_at_ms: u64,
    /// The start on the filesystem's clock: file times come from the kernel's coarse clock
    /// (one tick, a few ms, behind the precise one), so a file the app makes right at start can
    /// carry a birth time before `started_at_ms`. Compared with this, it never does.
    born_since_ns: i128,
    state: Mutex<State>,
}

/// CLOCK_REALTIME_COARSE in nanoseconds, the clock file timestamps are taken from.
fn coarse_now_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return now_ms() as i128 * 1_000_000;
    }
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started_at_ms: now_ms(),
            born_since_ns: coarse_now_ns(),
            state: Mutex::new(State::default()),
        }
    }

    pub fn started_at_ms(&self) -> u64 {
        self.started_at_ms
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panicking monitor thread must not cost the report: take the data as it stands.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// One access to `path` (absolute, normalised); `exists` says whether it found the path.
    pub fn access(&self, path: &str, access: Access, exists: bool) {
        if paths::ignored(path) {
            return;
        }
        self.with(|s| {
            // Most accesses repeat a known path: no allocation, no clock read for those.
            if !s.paths.contains_key(path) {
                let record = PathRecord {
                    access: Vec::new(),
                    exists: false,
                    first_seen_ms: now_ms().saturating_sub(self.started_at_ms),
                    count: 0,
                };
                s.paths.insert(path.to_string(), record);
            }
            let Some(r) = s.paths.get_mut(path) else {
                return;
            };
            r.count += 1;
            r.exists |= exists;
            if let Err(i) = r.access.binary_search(&access) {
                r.access.insert(i, access);
            }
        });
    }

    pub fn exec(&self, path: &str, argv0: &str) {
        if paths::ignored(path) {
            return;
        }
        self.with(|s| {
            let e = s.executables.entry(path.to_string()).or_insert(Executable {
                argv0: argv0.to_string(),
                count: 0,
            });
            e.count += 1;
            if e.argv0.is_empty() {
                e.argv0 = argv0.to_string();
            }
        });
    }

    pub fn lost(&self, f: impl FnOnce(&mut Loss)) {
        self.with(|s| f(&mut s.loss));
    }

    /// The report as it stands. Created files are those whose birth time is after the start.
    pub fn report(&self, mode: Mode, argv: &[String], exit_status: i32) -> Report {
        let (paths, executables, loss) =
            self.with(|s| (s.paths.clone(), s.executables.clone(), s.loss.clone()));
        let created_files = paths
            .iter()
            .filter(|(p, r)| r.exists && born_after(p, self.born_since_ns))
            .map(|(p, _)| p.clone())
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            sensor_version: env!("CARGO_PKG_VERSION").to_string(),
            mode,
            identity: identity_from_env(),
            started_at_ms: self.started_at_ms,
            stopped_at_ms: now_ms(),
            argv: argv.to_vec(),
            exit_status,
            paths,
            executables,
            created_files,
            loss,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn identity_from_env() -> Identity {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Identity {
        pod_name: var("POD_NAME"),
        pod_namespace: var("POD_NAMESPACE"),
        container_name: var("CONTAINER_NAME"),
        image: var("WHITTLE_IMAGE"),
    }
}

/// True when the file at `path` was born at or after `since_ns` (statx birth time, against the
/// coarse clock), so the run made it. Filesystems without birth times report nothing as created.
fn born_after(path: &str, since_ns: i128) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statx writes into a zeroed, properly sized struct; the path is a valid C string.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BTIME,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_BTIME == 0 {
        return false;
    }
    let born_ns = stx.stx_btime.tv_sec as i128 * 1_000_000_000 + stx.stx_btime.tv_nsec as i128;
    born_ns >= since_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_accesses_and_ignores_own_files() {
        let r = Recorder::new();
        r.access("/etc/a", Access::Stat, false);
        r.access("/etc/a", Access::Open, true);
        r.access("/etc/a", Access::Open, true);
        r.access("/.whittle/report.json", Access::Open, true);
        r.exec("/bin/ls", "ls");
        let rep = r.report(Mode::Ptrace, &["x".into()], 3);
        let a = &rep.paths["/etc/a"];
        assert_eq!(a.access, vec![Access::Open, Access::Stat]);
        assert!(a.exists);
        assert_eq!(a.count, 3);
        assert_eq!(rep.paths.len(), 1);
        assert_eq!(rep.executables["/bin/ls"].argv0, "ls");
        assert_eq!(rep.exit_status, 3);
        rep.validate().unwrap();
    }

    #[test]
    fn files_born_during_the_run_are_created_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, "x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = Recorder::new();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let new = dir.path().join("new");
        std::fs::write(&new, "y").unwrap();
        assert!(!born_after(old.to_str().unwrap(), r.born_since_ns));
        // tmpfs and ext4 have birth times; where the filesystem has none nothing is "created".
        let mut probe: libc::statx = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(new.to_str().unwrap()).unwrap();
        let rc =
            unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_BTIME, &mut probe) };
        if rc == 0 && probe.stx_mask & libc::STATX_BTIME != 0 {
            assert!(born_after(new.to_str().unwrap(), r.born_since_ns));
            // A file made at once after the start, within the same clock tick, counts too
            // (nginx's first temp directory did not, now and then).
            for i in 0..200 {
                let r = Recorder::new();
                let at_once = dir.path().join(format!("at-once-{i}"));
                std::fs::write(&at_once, "z").unwrap();
                assert!(
                    born_after(at_once.to_str().unwrap(), r.born_since_ns),
                    "{i}"
                );
            }
        }
    }
}
