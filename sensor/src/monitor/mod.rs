//! The monitors that watch what the app uses, and the choice of which of them run.
//!
//! - [`fanotify`]: fanotify marks on the image's mounts; the sensor needs CAP_SYS_ADMIN.
//! - [`ptrace`]: the app stops at each path syscall that [`seccomp_filter`] returns
//!   SECCOMP_RET_TRACE for; needs no capability.
//! - [`seccomp_notify`]: the same filter returns SECCOMP_RET_USER_NOTIF and the sensor answers
//!   the app's notifications; needs no capability, and costs the app less than a ptrace stop.
//!
//! [`choose`] decides from the requested mode and what the sensor found out about where it
//! runs; `run` gathers those facts and starts what the [`Plan`] says.

pub mod fanotify;
pub mod ptrace;
pub mod seccomp_filter;
pub mod seccomp_notify;

use crate::options::ModeChoice;
use crate::report::Mode;

impl ModeChoice {
    /// The mode of this name, as `--mode` and `WHITTLE_SENSOR_MODE` spell it.
    pub fn from_name(name: &str) -> Option<ModeChoice> {
        match name {
            "auto" => Some(ModeChoice::Auto),
            "fanotify" => Some(ModeChoice::Fanotify),
            "ptrace" => Some(ModeChoice::Ptrace),
            "seccomp" => Some(ModeChoice::Seccomp),
            "both" => Some(ModeChoice::Both),
            _ => None,
        }
    }

    /// Whether the sensor cannot run in this mode without CAP_SYS_ADMIN, which the operator
    /// then adds to the instrumented container: fanotify needs it. `auto` uses fanotify only
    /// when the container has the capability already.
    pub fn needs_cap_sys_admin(self) -> bool {
        matches!(self, ModeChoice::Fanotify | ModeChoice::Both)
    }
}

/// What the sensor knows about where it runs, as far as the choice depends on it.
pub struct Environment<Probe: FnOnce() -> Result<(), String>> {
    /// The sensor holds CAP_SYS_ADMIN.
    pub cap_sys_admin: bool,
    /// The app is started as another user (`--user`).
    pub other_user: bool,
    /// Whether the kernel and the seccomp profile allow seccomp user notification. The probe
    /// forks, so it is asked only when the choice depends on the answer.
    pub notify_available: Probe,
}

/// Whether fanotify runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanotify {
    Off,
    /// The sensor fails when fanotify does not start.
    Required,
    /// When fanotify does not start, the sensor says so and goes on without it.
    IfItStarts,
}

/// The monitor of path syscalls, which needs no capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallMonitor {
    Off,
    Ptrace,
    Notify,
}

/// The monitors the sensor starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub fanotify: Fanotify,
    pub syscalls: SyscallMonitor,
    /// Why the choice fell back to a monitor that costs the app more, for the log.
    pub fallback: Option<String>,
}

impl Plan {
    pub fn wants_fanotify(&self) -> bool {
        self.fanotify != Fanotify::Off
    }

    /// The mode the report names, once it is known whether fanotify started.
    pub fn report_mode(&self, fanotify_running: bool) -> Mode {
        match (fanotify_running, self.syscalls) {
            (true, SyscallMonitor::Off) => Mode::Fanotify,
            (true, _) => Mode::Both,
            (false, SyscallMonitor::Notify) => Mode::Seccomp,
            (false, _) => Mode::Ptrace,
        }
    }
}

/// The monitors to run in `mode`, or why the sensor cannot honour it.
///
/// fanotify misses the stat family and failed opens (probes whose answer changes what the app
/// does), so auto never runs it alone: with CAP_SYS_ADMIN it pairs it with a syscall monitor
/// (fanotify still sees what no syscall filter does, such as io_uring opens). That monitor is
/// seccomp user notification where the kernel and the seccomp profile allow it, since it costs
/// the app less than a ptrace stop, and ptrace otherwise.
pub fn choose<Probe: FnOnce() -> Result<(), String>>(
    mode: ModeChoice,
    env: Environment<Probe>,
) -> Result<Plan, String> {
    let fanotify = if mode.needs_cap_sys_admin() {
        Fanotify::Required
    } else if mode == ModeChoice::Auto && env.cap_sys_admin {
        Fanotify::IfItStarts
    } else {
        Fanotify::Off
    };
    let plan = |syscalls, fallback| Plan {
        fanotify,
        syscalls,
        fallback,
    };
    // The sensor reads an app's memory through /proc/PID/mem, which the kernel refuses once the
    // app runs as another user (no CAP_SYS_PTRACE): only a tracer can still PTRACE_PEEKDATA.
    Ok(match mode {
        ModeChoice::Fanotify => plan(SyscallMonitor::Off, None),
        ModeChoice::Ptrace | ModeChoice::Both => plan(SyscallMonitor::Ptrace, None),
        ModeChoice::Seccomp if env.other_user => {
            return Err(
                "--mode seccomp cannot read the memory of an app started as another user \
                 (--user); use --mode ptrace or auto"
                    .into(),
            );
        }
        ModeChoice::Seccomp => {
            (env.notify_available)().map_err(|e| format!("{e}; use --mode ptrace or auto"))?;
            plan(SyscallMonitor::Notify, None)
        }
        ModeChoice::Auto if env.other_user => plan(SyscallMonitor::Ptrace, None),
        ModeChoice::Auto => match (env.notify_available)() {
            Ok(()) => plan(SyscallMonitor::Notify, None),
            Err(e) => plan(SyscallMonitor::Ptrace, Some(format!("{e}; using ptrace"))),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use ModeChoice::{Auto, Both, Ptrace, Seccomp};
    use SyscallMonitor::{Notify, Off};

    const NO_NOTIFY: &str = "Linux 5.4 has no seccomp user notification with CONTINUE (needs 5.5)";

    /// One row of the table: the facts, and what the sensor runs (or the start of its error).
    struct Row {
        says: &'static str,
        mode: ModeChoice,
        cap_sys_admin: bool,
        other_user: bool,
        notify: Result<(), &'static str>,
        expect: Result<(Fanotify, SyscallMonitor, Option<&'static str>), &'static str>,
        /// Whether the (forking) notify probe runs.
        probes: bool,
    }

    fn row(
        says: &'static str,
        (mode, cap_sys_admin, other_user, notify): (
            ModeChoice,
            bool,
            bool,
            Result<(), &'static str>,
        ),
        expect: Result<(Fanotify, SyscallMonitor, Option<&'static str>), &'static str>,
        probes: bool,
    ) -> Row {
        Row {
            says,
            mode,
            cap_sys_admin,
            other_user,
            notify,
            expect,
            probes,
        }
    }

    #[test]
    fn the_monitors_each_mode_runs_where_the_sensor_finds_itself() {
        use Fanotify::{IfItStarts, Required};
        let fan = ModeChoice::Fanotify;
        let ptrace = SyscallMonitor::Ptrace;
        let off = Fanotify::Off;
        let no = Err(NO_NOTIFY);
        let using_ptrace = "Linux 5.4 has no seccomp user notification with CONTINUE (needs 5.5); \
                            using ptrace";
        let rows = [
            // auto
            row(
                "auto without CAP_SYS_ADMIN runs seccomp notify alone",
                (Auto, false, false, Ok(())),
                Ok((off, Notify, None)),
                true,
            ),
            row(
                "auto with CAP_SYS_ADMIN adds fanotify, if it starts, beside seccomp notify",
                (Auto, true, false, Ok(())),
                Ok((IfItStarts, Notify, None)),
                true,
            ),
            row(
                "auto falls back to ptrace, saying why, where notify is not available",
                (Auto, false, false, no),
                Ok((off, ptrace, Some(using_ptrace))),
                true,
            ),
            row(
                "auto with CAP_SYS_ADMIN and no notify pairs fanotify with ptrace",
                (Auto, true, false, no),
                Ok((IfItStarts, ptrace, Some(using_ptrace))),
                true,
            ),
            row(
                "auto for an app of another user takes ptrace without probing notify",
                (Auto, false, true, Ok(())),
                Ok((off, ptrace, None)),
                false,
            ),
            row(
                "auto with CAP_SYS_ADMIN for an app of another user pairs fanotify with ptrace",
                (Auto, true, true, Ok(())),
                Ok((IfItStarts, ptrace, None)),
                false,
            ),
            // seccomp
            row(
                "seccomp runs seccomp notify alone, whatever the capabilities",
                (Seccomp, true, false, Ok(())),
                Ok((off, Notify, None)),
                true,
            ),
            row(
                "seccomp without CAP_SYS_ADMIN runs seccomp notify alone",
                (Seccomp, false, false, Ok(())),
                Ok((off, Notify, None)),
                true,
            ),
            row(
                "seccomp fails where notify is not available, naming the alternatives",
                (Seccomp, false, false, no),
                Err(
                    "Linux 5.4 has no seccomp user notification with CONTINUE (needs 5.5); \
                     use --mode ptrace or auto",
                ),
                true,
            ),
            row(
                "seccomp fails for an app of another user, without probing notify",
                (Seccomp, false, true, Ok(())),
                Err(
                    "--mode seccomp cannot read the memory of an app started as another user \
                     (--user); use --mode ptrace or auto",
                ),
                false,
            ),
            // ptrace
            row(
                "ptrace runs ptrace alone, whatever the capabilities",
                (Ptrace, true, false, Ok(())),
                Ok((off, ptrace, None)),
                false,
            ),
            row(
                "ptrace runs for an app of another user, where notify is not available",
                (Ptrace, false, true, no),
                Ok((off, ptrace, None)),
                false,
            ),
            // fanotify
            row(
                "fanotify runs fanotify alone and requires it to start",
                (fan, true, false, Ok(())),
                Ok((Required, Off, None)),
                false,
            ),
            row(
                "fanotify without CAP_SYS_ADMIN still requires it (fanotify_init then fails)",
                (fan, false, true, no),
                Ok((Required, Off, None)),
                false,
            ),
            // both
            row(
                "both requires fanotify and pairs it with ptrace",
                (Both, true, false, Ok(())),
                Ok((Required, ptrace, None)),
                false,
            ),
            row(
                "both pairs fanotify with ptrace for an app of another user",
                (Both, false, true, no),
                Ok((Required, ptrace, None)),
                false,
            ),
        ];
        for r in rows {
            let probed = Cell::new(false);
            let got = choose(
                r.mode,
                Environment {
                    cap_sys_admin: r.cap_sys_admin,
                    other_user: r.other_user,
                    notify_available: || {
                        probed.set(true);
                        r.notify.map_err(String::from)
                    },
                },
            );
            let want = r.expect.map(|(fanotify, syscalls, fallback)| Plan {
                fanotify,
                syscalls,
                fallback: fallback.map(String::from),
            });
            assert_eq!(got, want.map_err(String::from), "{}", r.says);
            assert_eq!(probed.get(), r.probes, "{}: probed notify", r.says);
        }
    }

    /// With the table above, this covers all of mode × CAP_SYS_ADMIN × user × notify: every
    /// combination decides as the one with the facts the mode ignores set to a row's.
    #[test]
    fn what_a_mode_ignores_changes_nothing() {
        let decide = |mode, cap_sys_admin, other_user, notify: bool| {
            choose(
                mode,
                Environment {
                    cap_sys_admin,
                    other_user,
                    notify_available: || {
                        if notify {
                            Ok(())
                        } else {
                            Err(NO_NOTIFY.into())
                        }
                    },
                },
            )
        };
        for mode in [Auto, ModeChoice::Fanotify, Ptrace, Seccomp, Both] {
            for cap in [false, true] {
                for user in [false, true] {
                    for notify in [false, true] {
                        let same_as = match mode {
                            ModeChoice::Fanotify | Ptrace | Both => decide(mode, true, false, true),
                            Seccomp if user => decide(mode, false, user, true),
                            Seccomp => decide(mode, false, user, notify),
                            Auto if user => decide(mode, cap, user, true),
                            Auto => decide(mode, cap, user, notify),
                        };
                        assert_eq!(
                            decide(mode, cap, user, notify),
                            same_as,
                            "{mode:?} with cap {cap}, user {user}, notify {notify}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_report_names_the_monitors_that_ran() {
        let plan = |syscalls| Plan {
            fanotify: Fanotify::IfItStarts,
            syscalls,
            fallback: None,
        };
        assert_eq!(plan(Off).report_mode(true), Mode::Fanotify);
        assert_eq!(plan(Notify).report_mode(true), Mode::Both);
        assert_eq!(plan(SyscallMonitor::Ptrace).report_mode(true), Mode::Both);
        assert_eq!(
            plan(Notify).report_mode(false),
            Mode::Seccomp,
            "fanotify did not start"
        );
        assert_eq!(
            plan(SyscallMonitor::Ptrace).report_mode(false),
            Mode::Ptrace
        );
    }

    #[test]
    fn only_the_modes_that_require_fanotify_need_cap_sys_admin() {
        for (name, needs) in [
            ("auto", false),
            ("fanotify", true),
            ("ptrace", false),
            ("seccomp", false),
            ("both", true),
        ] {
            let mode = ModeChoice::from_name(name).unwrap();
            assert_eq!(mode.needs_cap_sys_admin(), needs, "{name}");
            let plan = choose(
                mode,
                Environment {
                    cap_sys_admin: false,
                    other_user: false,
                    notify_available: || Ok(()),
                },
            );
            assert_eq!(
                plan.unwrap().fanotify == Fanotify::Required,
                needs,
                "{name}: the capability is the one fanotify needs"
            );
        }
        assert_eq!(ModeChoice::from_name("strace"), None);
    }
}
