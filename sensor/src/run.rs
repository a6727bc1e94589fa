//! The sensor as PID 1: start the monitors, start the app, supervise it until it exits, then
//! deliver the report and exit with the app's status.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::caps::{self, has_cap_sys_admin};
use crate::deliver;
use crate::merge::{self, Merger};
use crate::monitor::fanotify::FanotifyMonitor;
use crate::monitor::ptrace::Tracer;
use crate::monitor::seccomp_notify::{self, NotifyMonitor};
use crate::monitor::{self, Environment, Fanotify, SyscallMonitor, seccomp_filter};
use crate::options::Options;
use crate::recorder::Recorder;
use crate::report::Mode;
use crate::secrets;
use crate::signals::{self, Shutdown};

/// Exit status when the sensor itself cannot start the app (docker's convention).
pub const SENSOR_FAILED: i32 = 125;
/// Exit status when the program cannot be executed.
pub const EXEC_FAILED: i32 = 127;

fn log(msg: &str) {
    eprintln!("whittle-sensor: {msg}");
}

/// Runs everything as the container's PID 1 and returns the process exit status.
pub fn run(opts: Options) -> i32 {
    // SAFETY: getpid and prctl with integer arguments.
    if unsafe { libc::getpid() } != 1 {
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let recorder = Arc::new(Recorder::new());
    let privileged = has_cap_sys_admin();
    let Some(plan) = plan(&opts, privileged) else {
        return SENSOR_FAILED;
    };
    let mut fan = None;
    if plan.wants_fanotify() {
        match FanotifyMonitor::start() {
            Ok(m) => fan = Some(m),
            Err(e) if plan.fanotify == Fanotify::IfItStarts => {
                log(&format!("{e}; not using fanotify"));
            }
            Err(e) => {
                log(&e);
                return SENSOR_FAILED;
            }
        }
    }
    if let Some(why) = &plan.fallback {
        log(why);
    }
    let mode = plan.report_mode(fan.is_some());
    // Bound before the app starts, so a probe that runs at once finds it.
    let merger = Merger::bind()
        .map_err(|e| {
            log(&format!(
                "not taking the observations of exec'd commands: {e}"
            ))
        })
        .ok();
    let launch = Launch {
        opts: &opts,
        syscalls: plan.syscalls,
        // The sensor holds CAP_SYS_ADMIN for fanotify (the operator adds it for that); the app
        // keeps it only when its container had it before.
        drop_sys_admin: plan.wants_fanotify() && !opts.keep_sys_admin,
        privileged,
    };
    let stop_fan = Arc::new(AtomicBool::new(false));
    let mut fan_thread = None;
    let outcome = launch.supervise(&recorder, || {
        fan_thread = fan.map(|f| f.spawn(recorder.clone(), stop_fan.clone()));
        if let Some(m) = merger {
            // Never joined: see Merger::spawn.
            let _ = m.spawn(recorder.clone());
        }
    });
    stop_fan.store(true, Ordering::SeqCst);
    if let Some(t) = fan_thread {
        let _ = t.join();
    }
    let (exit_status, shutdown) = match outcome {
        Ok(o) => o,
        Err(code) => return code,
    };
    deliver_report(&recorder, mode, &opts, exit_status, &shutdown);
    exit_status
}

/// `whittle-sensor exec -- CMD`: runs a command the container runtime started beside the app
/// (an exec probe, a lifecycle hook) under the same syscall monitor, and hands what it saw to
/// the PID-1 sensor ([`crate::merge`]). Fanotify is the PID-1 sensor's: it sees the whole
/// mount, the command included, so under fanotify alone the command just runs.
pub fn exec(opts: Options) -> i32 {
    let recorder = Arc::new(Recorder::new());
    let privileged = has_cap_sys_admin();
    let Some(plan) = plan(&opts, privileged) else {
        return SENSOR_FAILED;
    };
    let launch = Launch {
        opts: &opts,
        syscalls: plan.syscalls,
        // The runtime gives an exec'd command the container's capabilities, fanotify's
        // CAP_SYS_ADMIN included: it gets what the app gets.
        drop_sys_admin: plan.wants_fanotify() && !opts.keep_sys_admin,
        privileged,
    };
    let outcome = launch.supervise(&recorder, || {});
    let (exit_status, _) = match outcome {
        Ok(o) => o,
        Err(code) => return code,
    };
    if plan.syscalls != SyscallMonitor::Off {
        let report = recorder.report(plan.report_mode(false), &opts.argv, exit_status);
        if let Err(e) = merge::send(&report) {
            log(&format!("observations of {:?} lost: {e}", opts.argv[0]));
        }
    }
    exit_status
}

/// The monitors to start, or None (logged) when the asked-for mode cannot run here.
fn plan(opts: &Options, privileged: bool) -> Option<monitor::Plan> {
    let env = Environment {
        cap_sys_admin: privileged,
        other_user: opts.user.is_some(),
        // Before any thread starts: the probe forks.
        notify_available: seccomp_notify::available,
    };
    monitor::choose(opts.mode, env).map_err(|e| log(&e)).ok()
}

/// How the app (or an exec'd command) is started and watched.
struct Launch<'o> {
    opts: &'o Options,
    syscalls: SyscallMonitor,
    drop_sys_admin: bool,
    privileged: bool,
}

impl Launch<'_> {
    /// Starts the program under the syscall monitor, runs `started` once it runs (threads may
    /// start from then on: the fork is behind), forwards signals, and waits for it. The
    /// program's exit status and the shutdown state, or the sensor's own exit status when the
    /// program could not be started.
    fn supervise(
        &self,
        recorder: &Arc<Recorder>,
        started: impl FnOnce(),
    ) -> Result<(i32, Arc<Shutdown>), i32> {
        let opts = self.opts;
        let syscalls = self.syscalls;
        let Ok(argv) = opts
            .argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>()
        else {
            log("the program's arguments contain a NUL byte");
            return Err(SENSOR_FAILED);
        };
        let filter = match syscalls {
            SyscallMonitor::Notify => seccomp_notify::program(),
            _ => seccomp_filter::program(libc::SECCOMP_RET_TRACE, &[]),
        };
        let envp = secrets::app_env();
        // The app hands the seccomp listener over this pair before it execs.
        let mut pair = [-1; 2];
        if syscalls == SyscallMonitor::Notify {
            // SAFETY: socketpair writes two descriptors into the array.
            let rc = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                    0,
                    pair.as_mut_ptr(),
                )
            };
            if rc != 0 {
                log(&format!("socketpair: {}", std::io::Error::last_os_error()));
                return Err(SENSOR_FAILED);
            }
        }
        signals::block();

        // SAFETY: the sensor has no other threads yet, so the child may run arbitrary code
        // until exec; it only makes syscalls and writes to stderr.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            log(&format!("fork: {}", std::io::Error::last_os_error()));
            return Err(SENSOR_FAILED);
        }
        if pid == 0 {
            let exec = Exec {
                argv: &argv,
                envp: &envp,
                drop_sys_admin: self.drop_sys_admin,
            };
            child(&exec, opts, syscalls, pair[1], self.privileged, &filter);
        }

        let shutdown = Shutdown::new(opts.grace);
        let mut tracer = (syscalls == SyscallMonitor::Ptrace).then(|| Tracer::new(recorder, pid));
        if let Some(t) = tracer.as_mut() {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            if !libc::WIFSTOPPED(status) || t.attach(pid).is_err() {
                log(
                    "the app did not stop for tracing; is ptrace forbidden (seccomp profile, YAMA)?",
                );
                return Err(SENSOR_FAILED);
            }
        }
        if syscalls == SyscallMonitor::Notify {
            // SAFETY: closing our copy of the app's end, so that recv sees EOF if the app dies
            // before sending.
            unsafe { libc::close(pair[1]) };
            let received = seccomp_notify::recv_listener(pair[0]);
            // SAFETY: our end is no longer needed.
            unsafe { libc::close(pair[0]) };
            match received {
                Ok(listener) => {
                    // Never joined (see NotifyMonitor::spawn).
                    let _ = NotifyMonitor::new(listener).spawn(recorder.clone());
                }
                Err(e) => {
                    log(&format!(
                        "the app did not hand over its seccomp listener ({e}); use --mode ptrace"
                    ));
                    return Err(SENSOR_FAILED);
                }
            }
        }
        shutdown.app.store(pid, Ordering::SeqCst);
        let forwarder = shutdown.spawn();
        started();
        let exit_status = supervise(pid, tracer.as_mut());
        shutdown.done.store(true, Ordering::SeqCst);
        let _ = forwarder.join();
        Ok((exit_status, shutdown))
    }
}

/// Waits for the app, reaping every other child (orphans re-parented to us) and handling
/// ptrace stops, and returns the app's exit status.
fn supervise(app: i32, mut tracer: Option<&mut Tracer>) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return SENSOR_FAILED,
            }
        }
        if libc::WIFSTOPPED(status) {
            if let Some(t) = tracer.as_deref_mut() {
                t.on_stop(pid, status);
            }
            continue;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            continue;
        };
        if let Some(t) = tracer.as_deref_mut() {
            t.on_exit(pid);
        }
        if pid == app {
            return code;
        }
    }
}

/// What the app's process execs, and with what.
struct Exec<'a> {
    argv: &'a [CString],
    envp: &'a [CString],
    drop_sys_admin: bool,
}

fn child(
    exec: &Exec<'_>,
    opts: &Options,
    syscalls: SyscallMonitor,
    sock: libc::c_int,
    privileged: bool,
    filter: &[libc::sock_filter],
) -> ! {
    let fail = |what: &str| -> ! {
        log(&format!("{what}: {}", std::io::Error::last_os_error()));
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(SENSOR_FAILED) }
    };
    signals::unblock_all();
    secrets::make_dumpable();
    // SAFETY: plain syscalls in the freshly forked child.
    unsafe {
        // seccomp without CAP_SYS_ADMIN requires no_new_privs.
        if syscalls != SyscallMonitor::Off
            && !privileged
            && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        {
            fail("prctl(PR_SET_NO_NEW_PRIVS)");
        }
        if syscalls == SyscallMonitor::Ptrace {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                fail("ptrace(PTRACE_TRACEME)");
            }
            libc::raise(libc::SIGSTOP);
            if seccomp_filter::install(filter).is_err() {
                fail("installing the seccomp filter");
            }
        }
        if syscalls == SyscallMonitor::Notify {
            match seccomp_filter::install_listener(filter) {
                Ok(listener) => {
                    if seccomp_notify::send_listener(sock, listener.as_raw_fd()).is_err() {
                        fail("sending the seccomp listener to the sensor");
                    }
                    // The app must not keep the listener: it could answer its own syscalls.
                    drop(listener);
                    libc::close(sock);
                }
                Err(e) => {
                    log(&format!(
                        "installing the seccomp filter with a listener: {e}; use --mode ptrace"
                    ));
                    libc::_exit(SENSOR_FAILED)
                }
            }
        }
        // After the seccomp filter, whose installation may have needed it.
        if exec.drop_sys_admin {
            match caps::drop_sys_admin() {
                Ok(caps::Dropped::Everywhere) => {}
                Ok(caps::Dropped::NoNewPrivs) => log(
                    "no CAP_SETPCAP to drop CAP_SYS_ADMIN from the app's bounding set: \
                     no_new_privs keeps the app from regaining it (setuid programs gain nothing)",
                ),
                Err(e) => {
                    log(&format!("dropping the app's CAP_SYS_ADMIN: {e}"));
                    libc::_exit(SENSOR_FAILED)
                }
            }
        }
        if let Some((uid, gid)) = opts.user {
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                fail("dropping to the image's user");
            }
        }
        let mut ptrs: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let mut env: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
        env.push(std::ptr::null());
        // PATH is looked up in the sensor's environment, which has the same PATH.
        libc::execvpe(ptrs[0], ptrs.as_ptr(), env.as_ptr());
        log(&format!(
            "cannot execute {:?}: {}",
            opts.argv[0],
            std::io::Error::last_os_error()
        ));
        libc::_exit(EXEC_FAILED)
    }
}

fn deliver_report(
    recorder: &Recorder,
    mode: Mode,
    opts: &Options,
    exit_status: i32,
    shutdown: &Shutdown,
) {
    let mut report = recorder.report(mode, &opts.argv, exit_status);
    let encoded = match deliver::encode(&mut report) {
        Ok(e) => e,
        Err(e) => {
            log(&format!("serialising the report: {e}"));
            return;
        }
    };
    let loss = &report.loss;
    if loss.dropped_paths + loss.dropped_absent_paths + loss.dropped_execs > 0 {
        log(&format!(
            "the report was full: left out {} accesses to existing paths, {} to absent paths \
             and {} executions",
            loss.dropped_paths, loss.dropped_absent_paths, loss.dropped_execs
        ));
    }
    if let Some(path) = &opts.report_file
        && let Err(e) = deliver::write_file(path, &encoded.json)
    {
        log(&e.to_string());
    }
    if let Some(url) = &opts.report_url {
        let result = deliver::parse_url(url)
            .and_then(|u| deliver::send(&u, &opts.credentials, &encoded.gzip, shutdown.deadline()));
        match result {
            Ok(()) => log(&format!(
                "report delivered to {url} ({} paths)",
                report.paths.len()
            )),
            Err(e) => log(&format!("report not delivered: {e}")),
        }
    }
}
