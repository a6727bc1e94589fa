//! Signal forwarding. Every catchable signal is blocked in all of the sensor's threads and
//! taken by one thread with sigtimedwait, which forwards it to the app. The first stop signal
//! (TERM, INT, QUIT, PWR) starts the grace clock; if the app is still running when it nearly
//! runs out, the app is killed, leaving the rest of the grace period for report delivery.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Faults are the sensor's own and must not be blocked; SIGCHLD stays for waitpid; KILL and
/// STOP cannot be caught.
fn forwardable(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGKILL
            | libc::SIGSTOP
            | libc::SIGCHLD
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGFPE
            | libc::SIGILL
            | libc::SIGTRAP
            | libc::SIGSYS
    )
}

pub fn forward_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
            if forwardable(sig) {
                libc::sigaddset(&mut set, sig);
            }
        }
        set
    }
}

/// Blocks the forwarded signals in the calling thread (and threads it spawns later).
pub fn block() {
    let set = forward_set();
    // SAFETY: valid set pointer; old mask not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Clears the signal mask; the app must not inherit the sensor's.
pub fn unblock_all() {
    // SAFETY: an empty set is valid.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// State shared between the supervisor and the forwarding thread.
pub struct Shutdown {
    pub app: AtomicI32,
    pub done: AtomicBool,
    stop_at: Mutex<Option<Instant>>,
    pub grace: Duration,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Arc<Shutdown> {
        Arc::new(Shutdown {
            app: AtomicI32::new(0),
            done: AtomicBool::new(false),
            stop_at: Mutex::new(None),
            grace,
        })
    }

    pub fn stop_at(&self) -> Option<Instant> {
        *self.stop_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time kept for report delivery at the end of the grace period.
    pub fn reserve(&self) -> Duration {
        (self.grace / 5).min(Duration::from_secs(5))
    }

    /// When the report must be delivered by: the end of the grace period after the stop signal,
    /// or a grace period from now when the app ended on its own.
    pub fn deadline(&self) -> Instant {
        self.stop_at().unwrap_or_else(Instant::now) + self.grace
    }

    /// Runs the forwarding loop on its own thread until `done`.
    pub fn spawn(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || me.forward_loop())
    }

    fn forward_loop(&self) {
        let set = forward_set();
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while !self.done.load(Ordering::SeqCst) {
            // SAFETY: valid set and timespec; info is not needed.
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
            let app = self.app.load(Ordering::SeqCst);
            if sig > 0 && app > 0 {
                if matches!(
                    sig,
                    libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGPWR
                ) {
                    let mut at = self.stop_at.lock().unwrap_or_else(|p| p.into_inner());
                    at.get_or_insert_with(Instant::now);
                }
                // SAFETY: plain kill of the app's pid.
                unsafe { libc::kill(app, sig) };
            }
            if let Some(at) = self.stop_at()
                && app > 0
                && at.elapsed() + self.reserve() >= self.grace
                && !self.done.load(Ordering::SeqCst)
            {
                eprintln!(
                    "whittle-sensor: the app did not exit within the grace period; killing it"
                );
                // SAFETY: plain kill of the app's pid.
                unsafe { libc::kill(app, libc::SIGKILL) };
                self.app.store(0, Ordering::SeqCst);
            }
        }
    }
}
