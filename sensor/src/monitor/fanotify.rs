//! The fanotify monitor: marks every mount of the image's root filesystem and records opens,
//! executions and reads by path. Needs CAP_SYS_ADMIN. The queue is the kernel's default size;
//! an overflow is counted in the report, never silently lost.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use crate::mounts;
use crate::recorder::Recorder;
use crate::report::Access;

pub struct FanotifyMonitor {
    group: Fanotify,
    pub marked: Vec<String>,
}

impl FanotifyMonitor {
    /// Creates the group and marks the image's mounts. Done before the app starts, so its
    /// first exec is seen.
    pub fn start() -> Result<FanotifyMonitor, String> {
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| format!("fanotify_init: {e} (fanotify needs CAP_SYS_ADMIN)"))?;
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let marked = mounts::image_mounts(&mounts::parse_mountinfo(&info));
        for m in &marked {
            group
                .mark(
                    MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_MOUNT,
                    // FAN_ONDIR: directories too, or an app that opendir()s its conf.d and
                    // reads nothing there would lose the directory in the hardened image.
                    MaskFlags::FAN_OPEN
                        | MaskFlags::FAN_OPEN_EXEC
                        | MaskFlags::FAN_ACCESS
                        | MaskFlags::FAN_ONDIR,
                    cwd(),
                    Some(m.as_str()),
                )
                .map_err(|e| format!("fanotify_mark {m}: {e}"))?;
        }
        Ok(FanotifyMonitor { group, marked })
    }

    /// Reads events on a thread until `stop` is set and the queue is drained.
    pub fn spawn(self, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let me = std::process::id() as i32;
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                let ready = {
                    let mut fds = [PollFd::new(self.group.as_fd(), PollFlags::POLLIN)];
                    poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0)
                };
                if ready == 0 {
                    if stopping {
                        return;
                    }
                    continue;
                }
                let Ok(events) = self.group.read_events() else {
                    continue;
                };
                for ev in events {
                    if ev.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                        recorder.lost(|l| l.fanotify_overflows += 1);
                        continue;
                    }
                    if ev.pid() == me {
                        continue;
                    }
                    let Some(fd) = ev.fd() else { continue };
                    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
                        Ok(p) => {
                            let path = p.to_string_lossy();
                            let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
                            let mask = ev.mask();
                            // Once a file is recorded for a kind of access, stop the kernel from
                            // reporting that kind for it again: a busy server then makes no
                            // events at all for the files it serves over and over.
                            let _ = self.group.mark(
                                MarkFlags::FAN_MARK_ADD
                                    | MarkFlags::FAN_MARK_IGNORED_MASK
                                    | MarkFlags::FAN_MARK_IGNORED_SURV_MODIFY,
                                mask & (MaskFlags::FAN_OPEN
                                    | MaskFlags::FAN_OPEN_EXEC
                                    | MaskFlags::FAN_ACCESS
                                    | MaskFlags::FAN_ONDIR),
                                fd,
                                None::<&std::path::Path>,
                            );
                            if mask.contains(MaskFlags::FAN_OPEN_EXEC) {
                                recorder.access(path, Access::Exec, true);
                                recorder.exec(path, "");
                            }
                            if mask.contains(MaskFlags::FAN_OPEN) {
                                recorder.access(path, Access::Open, true);
                            }
                            if mask.contains(MaskFlags::FAN_ACCESS) {
                                recorder.access(path, Access::Read, true);
                            }
                        }
                        Err(_) => recorder.lost(|l| l.fanotify_unresolved += 1),
                    }
                }
            }
        })
    }
}

/// AT_FDCWD as a descriptor: the marked paths are absolute, so the dirfd is never used.
fn cwd() -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel the kernel accepts wherever a dirfd is; never closed.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}
