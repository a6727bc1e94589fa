//! Pure: one report out of several, for a pod whose container restarted during observation
//! (each run of the sensor reports once; what every run saw is kept) and for harden, which
//! folds the stored reports one at a time instead of holding them all.

use whittle_sensor::report::Report;

/// Adds what `other` saw to `into`. Paths, executables and created files are united; counts
/// and losses add up; `exists` holds when any run found the path; first-seen times stay
/// relative to `into`'s start. `into` keeps its identity, argv and mode unless `other` is the
/// later run, whose exit status then wins.
pub fn merge(into: &mut Report, other: Report) {
    let base = into.started_at_ms.min(other.started_at_ms);
    // Re-base `into`'s own times first when `other` started earlier.
    if base < into.started_at_ms {
        let delta = into.started_at_ms - base;
        for record in into.paths.values_mut() {
            record.first_seen_ms = record.first_seen_ms.saturating_add(delta);
        }
    }
    let other_delta = other.started_at_ms - base;
    for (path, record) in other.paths {
        let seen = record.first_seen_ms.saturating_add(other_delta);
        match into.paths.get_mut(&path) {
            Some(mine) => {
                mine.access.extend(record.access);
                mine.access.sort_unstable();
                mine.access.dedup();
                mine.exists |= record.exists;
                mine.first_seen_ms = mine.first_seen_ms.min(seen);
                mine.count = mine.count.saturating_add(record.count);
            }
            None => {
                let mut record = record;
                record.first_seen_ms = seen;
                into.paths.insert(path, record);
            }
        }
    }
    for (path, exe) in other.executables {
        match into.executables.get_mut(&path) {
            Some(mine) => {
                mine.count = mine.count.saturating_add(exe.count);
                if mine.argv0.is_empty() {
                    mine.argv0 = exe.argv0;
                }
            }
            None => {
                into.executables.insert(path, exe);
            }
        }
    }
    for file in other.created_files {
        if !into.created_files.contains(&file) {
            into.created_files.push(file);
        }
    }
    into.created_files.sort_unstable();
    let loss = &mut into.loss;
    loss.fanotify_overflows = loss
        .fanotify_overflows
        .saturating_add(other.loss.fanotify_overflows);
    loss.fanotify_unresolved = loss
        .fanotify_unresolved
        .saturating_add(other.loss.fanotify_unresolved);
    loss.ptrace_unresolved = loss
        .ptrace_unresolved
        .saturating_add(other.loss.ptrace_unresolved);
    if other.stopped_at_ms >= into.stopped_at_ms {
        into.exit_status = other.exit_status;
    }
    into.started_at_ms = base;
    into.stopped_at_ms = into.stopped_at_ms.max(other.stopped_at_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use whittle_sensor::report::{Access, Executable, Identity, Loss, Mode, PathRecord};

    fn report(started: u64, paths: &[(&str, bool, u64)], exit: i32) -> Report {
        Report {
            schema_version: whittle_sensor::report::SCHEMA_VERSION,
            sensor_version: "0.1.0".into(),
            mode: Mode::Seccomp,
            identity: Identity {
                pod_name: Some("web-1".into()),
                ..Identity::default()
            },
            started_at_ms: started,
            stopped_at_ms: started + 1000,
            argv: vec!["/app".into()],
            exit_status: exit,
            paths: paths
                .iter()
                .map(|(p, exists, seen)| {
                    let record = PathRecord {
                        access: vec![Access::Open],
                        exists: *exists,
                        first_seen_ms: *seen,
                        count: 1,
                    };
                    (p.to_string(), record)
                })
                .collect(),
            executables: BTreeMap::from([(
                "/app".to_string(),
                Executable {
                    argv0: "/app".into(),
                    count: 1,
                },
            )]),
            created_files: vec![format!("/tmp/{started}")],
            loss: Loss {
                ptrace_unresolved: 1,
                ..Loss::default()
            },
        }
    }

    #[test]
    fn a_restarted_containers_runs_are_united() {
        let mut first = report(1000, &[("/etc/a", true, 5), ("/etc/gone", false, 7)], 1);
        let second = report(3000, &[("/etc/b", true, 5), ("/etc/gone", true, 9)], 0);
        merge(&mut first, second);
        let paths: Vec<&str> = first.paths.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/etc/a", "/etc/b", "/etc/gone"]);
        let gone = &first.paths["/etc/gone"];
        assert!(gone.exists, "found by the second run");
        assert_eq!((gone.count, gone.first_seen_ms), (2, 7));
        assert_eq!(
            first.paths["/etc/b"].first_seen_ms, 2005,
            "relative to the first start"
        );
        assert_eq!(first.executables["/app"].count, 2);
        assert_eq!(first.created_files, ["/tmp/1000", "/tmp/3000"]);
        assert_eq!(first.loss.ptrace_unresolved, 2);
        assert_eq!((first.started_at_ms, first.stopped_at_ms), (1000, 4000));
        assert_eq!(first.exit_status, 0, "the later run's exit status");
    }

    #[test]
    fn an_earlier_run_merged_later_rebases_the_times() {
        let mut later = report(3000, &[("/etc/b", true, 5)], 0);
        merge(&mut later, report(1000, &[("/etc/a", true, 5)], 1));
        assert_eq!(later.started_at_ms, 1000);
        assert_eq!(later.paths["/etc/b"].first_seen_ms, 2005);
        assert_eq!(later.paths["/etc/a"].first_seen_ms, 5);
        assert_eq!(later.exit_status, 0, "the later run still decides");
    }
}
