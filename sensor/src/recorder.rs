//! Collects accesses from the monitors (possibly from several threads) into the report, within
//! a budget: whatever the app does (a client requesting millions of distinct missing paths, a
//! 60 MiB argument), the report stays below what the intake accepts and the sensor's memory
//! stays bounded. What does not fit is counted in the report's `loss`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths;
use crate::report::{
    Access, Executable, Identity, Loss, MAX_JSON_BYTES, Mode, PathRecord, Report, SCHEMA_VERSION,
};

/// What paths and executables may cost, in bytes of JSON (estimated from above): the report's
/// limit less room for its other fields (argv, identity, loss, a few numbers).
const ENTRY_BUDGET: usize = MAX_JSON_BYTES - (1 << 20);
/// All of `argv` together, in bytes of JSON.
pub const MAX_ARGV_JSON: usize = 64 << 10;
/// One executable's `argv0`, in bytes.
pub const MAX_ARGV0: usize = 1024;
/// Each identity field (from the environment), in bytes.
const MAX_IDENTITY: usize = 4096;
/// Distinct executables kept.
pub const MAX_EXECUTABLES: usize = 4096;
/// The most a path record takes beside its key: every kind of access, maximal numbers (a test
/// checks it).
const PATH_RECORD_JSON: usize = 150;
/// Likewise for an executable's record, without its `argv0` text.
const EXEC_RECORD_JSON: usize = 50;

/// Length of `s` as a JSON string, quotes included (serde_json's escapes).
pub(crate) fn json_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// What recording `path` may cost: its key and record in `paths`, and its entry in
/// `createdFiles`, should the run have made it.
fn path_cost(path: &str) -> usize {
    2 * json_len(path) + 3 + PATH_RECORD_JSON
}

fn exec_cost(path: &str, argv0: &str) -> usize {
    json_len(path) + json_len(argv0) + 2 + EXEC_RECORD_JSON
}

/// The longest prefix of `s` (on a character boundary) that is at most `max` bytes of JSON
/// (quotes excluded), and how many bytes were cut.
fn truncated(s: &str, max: usize) -> (&str, u64) {
    if json_len(s) - 2 <= max {
        return (s, 0);
    }
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let mut buf = [0u8; 4];
        let cost = json_len(c.encode_utf8(&mut buf)) - 2;
        if used + cost > max {
            break;
        }
        used += cost;
        end = i + c.len_utf8();
    }
    (&s[..end], (s.len() - end) as u64)
}

/// `argv` within [`MAX_ARGV_JSON`]: arguments are kept whole while they fit, the first that
/// does not is cut, the rest are left out.
fn bounded_argv(argv: &[String], loss: &mut Loss) -> Vec<String> {
    // The brackets.
    let mut left = MAX_ARGV_JSON - 2;
    let mut out = Vec::new();
    let mut rest = argv.iter();
    for a in rest.by_ref() {
        // Its quotes and a comma.
        let (kept, cut) = truncated(a, left.saturating_sub(3));
        let cost = json_len(kept) + 1;
        if cost > left || (kept.is_empty() && cut > 0) {
            loss.truncated_bytes += a.len() as u64;
            break;
        }
        left -= cost;
        out.push(kept.to_string());
        if cut > 0 {
            loss.truncated_bytes += cut;
            break;
        }
    }
    loss.truncated_bytes += rest.map(|a| a.len() as u64).sum::<u64>();
    out
}

#[derive(Default)]
struct State {
    /// Paths some access found.
    found: BTreeMap<String, PathRecord>,
    /// Paths no access has found so far: the first to give way when the budget runs out.
    absent: BTreeMap<String, PathRecord>,
    executables: BTreeMap<String, Executable>,
    /// Of [`ENTRY_BUDGET`].
    spent: usize,
    loss: Loss,
}

impl State {
    /// Makes `cost` bytes of room, if need be by evicting absent paths when the newcomer is
    /// something found (an existing path or an executable). False when there is no room.
    fn make_room(&mut self, cost: usize, for_found: bool) -> bool {
        while self.spent + cost > ENTRY_BUDGET {
            if !for_found {
                return false;
            }
            let Some((path, record)) = self.absent.pop_last() else {
                return false;
            };
            self.spent -= path_cost(&path);
            self.loss.dropped_absent_paths += record.count;
        }
        true
    }
}

fn add(record: &mut PathRecord, access: Access) {
    record.count += 1;
    if let Err(i) = record.access.binary_search(&access) {
        record.access.insert(i, access);
    }
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
            if let Some(r) = s.found.get_mut(path) {
                return add(r, access);
            }
            if let Some(r) = s.absent.get_mut(path) {
                add(r, access);
                if exists && let Some((path, mut r)) = s.absent.remove_entry(path) {
                    r.exists = true;
                    s.found.insert(path, r);
                }
                return;
            }
            let cost = path_cost(path);
            if !s.make_room(cost, exists) {
                if exists {
                    s.loss.dropped_paths += 1;
                } else {
                    s.loss.dropped_absent_paths += 1;
                }
                return;
            }
            s.spent += cost;
            let record = PathRecord {
                access: vec![access],
                exists,
                first_seen_ms: now_ms().saturating_sub(self.started_at_ms),
                count: 1,
            };
            let map = if exists { &mut s.found } else { &mut s.absent };
            map.insert(path.to_string(), record);
        });
    }

    pub fn exec(&self, path: &str, argv0: &str) {
        if paths::ignored(path) {
            return;
        }
        let (argv0, cut) = truncated(argv0, MAX_ARGV0);
        self.with(|s| {
            if s.executables.contains_key(path) {
                // argv0 is empty under fanotify: a later exec seen by another monitor fills it.
                let fill = s.executables.get(path).is_some_and(|e| e.argv0.is_empty())
                    && !argv0.is_empty()
                    && s.make_room(json_len(argv0) - 2, true);
                if let Some(e) = s.executables.get_mut(path) {
                    e.count += 1;
                    if fill {
                        e.argv0 = argv0.to_string();
                        s.spent += json_len(argv0) - 2;
                        s.loss.truncated_bytes += cut;
                    }
                }
                return;
            }
            let cost = exec_cost(path, argv0);
            if s.executables.len() >= MAX_EXECUTABLES || !s.make_room(cost, true) {
                s.loss.dropped_execs += 1;
                return;
            }
            s.spent += cost;
            s.loss.truncated_bytes += cut;
            s.executables.insert(
                path.to_string(),
                Executable {
                    argv0: argv0.to_string(),
                    count: 1,
                },
            );
        });
    }

    /// Adds what `whittle-sensor exec` saw of a command the runtime ran in this container (a
    /// probe, a hook), path by path through the same budget. Its paths are normalised again: the
    /// report came over a socket, not from this process's monitors.
    pub fn merge(&self, other: &Report) {
        for (path, record) in &other.paths {
            let path = paths::resolve("/", path);
            for access in &record.access {
                self.access(&path, *access, record.exists);
            }
        }
        for (path, e) in &other.executables {
            self.exec(&paths::resolve("/", path), &e.argv0);
        }
        let theirs = &other.loss;
        self.lost(|l| {
            l.fanotify_overflows = l
                .fanotify_overflows
                .saturating_add(theirs.fanotify_overflows);
            l.fanotify_unresolved = l
                .fanotify_unresolved
                .saturating_add(theirs.fanotify_unresolved);
            l.ptrace_unresolved = l.ptrace_unresolved.saturating_add(theirs.ptrace_unresolved);
            l.dropped_paths = l.dropped_paths.saturating_add(theirs.dropped_paths);
            l.dropped_absent_paths = l
                .dropped_absent_paths
                .saturating_add(theirs.dropped_absent_paths);
            l.dropped_execs = l.dropped_execs.saturating_add(theirs.dropped_execs);
            l.truncated_bytes = l.truncated_bytes.saturating_add(theirs.truncated_bytes);
        });
    }

    pub fn lost(&self, f: impl FnOnce(&mut Loss)) {
        self.with(|s| f(&mut s.loss));
    }

    /// The report as it stands. Created files are those whose birth time is after the start.
    pub fn report(&self, mode: Mode, argv: &[String], exit_status: i32) -> Report {
        let (paths, executables, mut loss) = self.with(|s| {
            let mut paths = s.found.clone();
            paths.extend(s.absent.iter().map(|(p, r)| (p.clone(), r.clone())));
            (paths, s.executables.clone(), s.loss.clone())
        });
        let created_files = paths
            .iter()
            .filter(|(p, r)| r.exists && born_after(p, self.born_since_ns))
            .map(|(p, _)| p.clone())
            .collect();
        let argv = bounded_argv(argv, &mut loss);
        Report {
            schema_version: SCHEMA_VERSION,
            sensor_version: env!("CARGO_PKG_VERSION").to_string(),
            mode,
            identity: identity_from_env(),
            started_at_ms: self.started_at_ms,
            stopped_at_ms: now_ms(),
            argv,
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
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| truncated(&v, MAX_IDENTITY).0.to_string())
    };
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
    fn an_exec_d_command_s_observations_join_the_report_normalised() {
        let probe = Recorder::new();
        probe.access("/usr/bin/pg_isready", Access::Exec, true);
        probe.access("/etc/missing.conf", Access::Stat, false);
        probe.exec("/usr/bin/pg_isready", "pg_isready");
        let mut theirs = probe.report(Mode::Seccomp, &["pg_isready".into()], 0);
        // Over a socket: not trusted to be normalised, nor to stay within u64.
        theirs.paths.insert(
            "/etc/../lib/./x.so".into(),
            theirs.paths["/usr/bin/pg_isready"].clone(),
        );
        theirs.paths.insert(
            "/.whittle/sensor".into(),
            theirs.paths["/usr/bin/pg_isready"].clone(),
        );
        theirs.loss.dropped_paths = u64::MAX;

        let pid1 = Recorder::new();
        pid1.access("/usr/sbin/nginx", Access::Exec, true);
        pid1.lost(|l| l.dropped_paths = 1);
        pid1.merge(&theirs);
        let r = pid1.report(Mode::Seccomp, &["nginx".into()], 0);
        let paths: Vec<&str> = r.paths.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/etc/missing.conf",
                "/lib/x.so",
                "/usr/bin/pg_isready",
                "/usr/sbin/nginx"
            ]
        );
        assert!(!r.paths["/etc/missing.conf"].exists);
        assert_eq!(r.executables["/usr/bin/pg_isready"].argv0, "pg_isready");
        assert_eq!(r.loss.dropped_paths, u64::MAX);
    }

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

    /// A name that gzip cannot shrink much: a client asking for random URLs.
    fn random_name(i: u64) -> String {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..48)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
                        [(x % 64) as usize],
                )
            })
            .collect()
    }

    #[test]
    fn millions_of_missing_paths_keep_the_report_under_the_intakes_limits() {
        let r = Recorder::new();
        r.access("/usr/sbin/nginx", Access::Exec, true);
        let n = 2_000_000u64;
        for i in 0..n {
            r.access(
                &format!("/var/www/html/{}", random_name(i)),
                Access::Stat,
                false,
            );
            // Files the app finds after the report filled still make it, in place of probes.
            if i % 100_000 == 0 {
                r.access(&format!("/etc/app/{i}.conf"), Access::Open, true);
            }
        }
        let mut rep = r.report(Mode::Seccomp, &["nginx".into()], 0);
        let encoded = crate::deliver::encode(&mut rep).unwrap();
        assert!(
            encoded.json.len() <= MAX_JSON_BYTES,
            "{}",
            encoded.json.len()
        );
        assert!(
            encoded.gzip.len() <= crate::report::MAX_GZIP_BYTES,
            "{}",
            encoded.gzip.len()
        );
        assert_eq!(rep.existing_paths().count(), 21, "{:?}", rep.loss);
        let absent = rep.paths.values().filter(|r| !r.exists).count() as u64;
        assert!(
            absent > 10_000,
            "{absent}: probes are kept while there is room"
        );
        assert_eq!(rep.loss.dropped_absent_paths + absent, n);
        assert_eq!(rep.loss.dropped_paths, 0);
        eprintln!(
            "2M probes: {} paths kept, {} B of JSON, {} B gzip",
            rep.paths.len(),
            encoded.json.len(),
            encoded.gzip.len()
        );
    }

    #[test]
    fn a_full_report_drops_found_paths_and_counts_them() {
        let r = Recorder::new();
        let mut i = 0;
        while r.with(|s| s.spent) + path_cost("/data/0000000000") <= ENTRY_BUDGET {
            r.access(&format!("/data/{i:010}"), Access::Open, true);
            i += 1;
        }
        r.access("/data/late", Access::Open, true);
        r.access("/data/late", Access::Read, true);
        r.access("/probe", Access::Stat, false);
        // Known paths are still counted.
        r.access("/data/0000000000", Access::Read, true);
        let rep = r.report(Mode::Ptrace, &[], 0);
        assert_eq!(rep.loss.dropped_paths, 2);
        assert_eq!(rep.loss.dropped_absent_paths, 1);
        assert!(!rep.paths.contains_key("/data/late"));
        assert_eq!(rep.paths["/data/0000000000"].count, 2);
        assert!(serde_json::to_vec(&rep).unwrap().len() <= MAX_JSON_BYTES);
    }

    #[test]
    fn a_60_mib_argv_is_truncated() {
        let r = Recorder::new();
        let huge = "x".repeat(60 << 20);
        let argv = vec!["/bin/app".to_string(), huge.clone(), "--after".to_string()];
        r.exec("/bin/app", &huge);
        let rep = r.report(Mode::Seccomp, &argv, 0);
        assert_eq!(rep.argv[0], "/bin/app");
        let argv_json = serde_json::to_vec(&rep.argv).unwrap().len();
        assert!(argv_json <= MAX_ARGV_JSON, "{argv_json}");
        assert!(rep.argv[1].len() > 60_000, "what fits is kept");
        assert_eq!(rep.argv.len(), 2, "what follows the cut is left out");
        assert_eq!(rep.executables["/bin/app"].argv0.len(), MAX_ARGV0);
        let cut = (60u64 << 20) - rep.argv[1].len() as u64 + 7 + (60 << 20) - MAX_ARGV0 as u64;
        assert_eq!(rep.loss.truncated_bytes, cut);
        // Escapes count: a control character is six bytes of JSON, and no character is split.
        let (kept, cut) = truncated("\u{1}é\u{1}", 8);
        assert_eq!((kept, cut), ("\u{1}é", 1));
        assert_eq!(json_len("a\"\u{1}"), 2 + 1 + 2 + 6);
    }

    #[test]
    fn executables_are_bounded_and_evict_probes() {
        let r = Recorder::new();
        for i in 0..MAX_EXECUTABLES + 10 {
            r.exec(&format!("/bin/tool-{i}"), "tool");
        }
        r.exec("/bin/tool-0", "again");
        let rep = r.report(Mode::Ptrace, &[], 0);
        assert_eq!(rep.executables.len(), MAX_EXECUTABLES);
        assert_eq!(rep.loss.dropped_execs, 10);
        assert_eq!(rep.executables["/bin/tool-0"].count, 2);
        // An exec may take a probe's place.
        let r = Recorder::new();
        let mut i = 0;
        while r.with(|s| s.spent) + path_cost("/p/0000000000") <= ENTRY_BUDGET {
            r.access(&format!("/p/{i:010}"), Access::Stat, false);
            i += 1;
        }
        // Longer than the room left.
        let tool = format!("/opt/{}/bin/tool", "d".repeat(300));
        r.exec(&tool, "tool");
        let rep = r.report(Mode::Ptrace, &[], 0);
        assert!(rep.executables.contains_key(&tool));
        assert!(rep.loss.dropped_absent_paths >= 1);
        assert_eq!(rep.loss.dropped_execs, 0);
    }

    #[test]
    fn a_probe_that_later_finds_its_path_moves_to_the_found_paths() {
        let r = Recorder::new();
        r.access("/run/app.pid", Access::Stat, false);
        r.access("/run/app.pid", Access::Open, true);
        let rep = r.report(Mode::Ptrace, &[], 0);
        let rec = &rep.paths["/run/app.pid"];
        assert!(rec.exists);
        assert_eq!(rec.count, 2);
        assert_eq!(rec.access, vec![Access::Open, Access::Stat]);
    }

    #[test]
    fn the_record_bounds_hold() {
        let widest = PathRecord {
            access: vec![
                Access::Open,
                Access::Read,
                Access::Exec,
                Access::Stat,
                Access::Readlink,
                Access::Chdir,
                Access::Modify,
            ],
            exists: false,
            first_seen_ms: u64::MAX,
            count: u64::MAX,
        };
        assert!(serde_json::to_vec(&widest).unwrap().len() <= PATH_RECORD_JSON);
        let exec = Executable {
            argv0: String::new(),
            count: u64::MAX,
        };
        assert!(serde_json::to_vec(&exec).unwrap().len() <= EXEC_RECORD_JSON);
        for s in ["/a", "/a\"b\\c\n", "/\u{7f}\u{1f}é"] {
            assert_eq!(json_len(s), serde_json::to_vec(s).unwrap().len(), "{s:?}");
        }
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
