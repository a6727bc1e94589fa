//! The static sensor binary the tests copy into images: `$WHITTLE_SENSOR_BIN` when set (the
//! Makefile builds it once), otherwise built here the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};
use crate::tools;

/// The workspace root (this crate lives in `testbed/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds (once per test run, under a lock) and returns the static-pie sensor.
pub fn sensor_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WHITTLE_SENSOR_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Invalid(format!(
                "WHITTLE_SENSOR_BIN={} is not a file",
                p.display()
            )))
        };
    }
    // A target dir of its own: the outer `cargo test` may still hold the main one's lock, and
    // static flags must not invalidate the host build.
    let target = workspace().join("target/sensor");
    std::fs::create_dir_all(&target).context(|| format!("creating {}", target.display()))?;
    let lock = std::fs::File::create(target.join("build.lock"))
        .context(|| "creating the sensor build lock".into())?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Invalid(format!("locking the sensor build: {e}")))?;
    tools::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "whittle-sensor",
                "--target",
                "x86_64-unknown-linux-gnu",
            ]),
    )?;
    Ok(target.join("x86_64-unknown-linux-gnu/release/whittle-sensor"))
}
