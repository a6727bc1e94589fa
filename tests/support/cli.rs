//! The `whittle` binary as the CLI tests run it: the static sensor named by env, no docker
//! config or cosign password from the machine, HOME inside the target directory.

use std::process::{Command, Output};

use whittle_testbed::binaries::sensor_binary;

pub fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .env(
            "WHITTLE_SENSOR_BIN",
            sensor_binary().expect("sensor binary"),
        )
        .env_remove("DOCKER_CONFIG")
        .env_remove("COSIGN_PASSWORD")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run whittle")
}

/// stdout then stderr, for assertion messages and matching.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
