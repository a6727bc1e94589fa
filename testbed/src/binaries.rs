//! The static binaries the tests put into images: the sensor (copied into every instrumented
//! image; `$WHITTLE_SENSOR_BIN` when set, as the Makefile builds it once) and whittle (the
//! operator's own image; `$WHITTLE_STATIC_BIN` when set). Otherwise they are built here with
//! the Makefile's static flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};
use crate::tools;

/// The workspace root (this crate lives in `testbed/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds (once per test run, under a lock) and returns the static-pie release sensor.
pub fn sensor_binary() -> Result<PathBuf> {
    static_build(
        "WHITTLE_SENSOR_BIN",
        &["--release", "-p", "whittle-sensor"],
        "release/whittle-sensor",
    )
}

/// Builds (once per test run, under a lock) and returns a static-pie `whittle` in the
/// `image-test` profile: `make image`'s build, minus most optimisation (see Cargo.toml).
pub fn whittle_binary() -> Result<PathBuf> {
    static_build(
        "WHITTLE_STATIC_BIN",
        &[
            "--profile",
            "image-test",
            "-p",
            "whittle",
            "--bin",
            "whittle",
        ],
        "image-test/whittle",
    )
}

/// `select` picks the profile and the package; `built` is the binary's path below the target's
/// directory.
fn static_build(env: &str, select: &[&str], built: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Invalid(format!(
                "{env}={} is not a file",
                p.display()
            )))
        };
    }
    // A target dir of its own: the outer `cargo test` may still hold the main one's lock, and
    // static flags must not invalidate the host build.
    let target = workspace().join("target/static");
    std::fs::create_dir_all(&target).context(|| format!("creating {}", target.display()))?;
    let lock = std::fs::File::create(target.join("build.lock"))
        .context(|| "creating the static build lock".into())?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Invalid(format!("locking the static build: {e}")))?;
    tools::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--quiet"])
            .args(select)
            .args(["--target", "x86_64-unknown-linux-gnu"]),
    )?;
    Ok(target.join("x86_64-unknown-linux-gnu").join(built))
}
