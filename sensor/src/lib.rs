//! whittle's sensor. The library holds the report types ([`report`]), shared with the operator
//! and the image engine, and the sensor itself, which the `whittle-sensor` binary runs as the
//! container's PID 1: it starts the app, watches what it uses with the monitors of
//! [`monitor`] (fanotify and/or ptrace or seccomp user notification, chosen by
//! [`monitor::choose`]), forwards signals ([`signals`]), reaps orphans, and on exit delivers
//! the report ([`deliver`]). See docs/sensor.md.

pub mod caps;
pub mod codec;
pub mod deliver;
pub mod merge;
pub mod monitor;
pub mod mounts;
pub mod options;
pub mod paths;
pub mod recorder;
pub mod report;
pub mod run;
pub mod secrets;
pub mod signals;
pub mod syscalls;
