//! `make demo`'s sample image: builds the nginx fixture (debootstrap, cached after the first
//! run) and copies its OCI image layout to the directory given, where `whittle local` reads it
//! and writes the instrumented and hardened images next to it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use whittle_testbed::images::fixtures;

fn main() -> ExitCode {
    let Some(dest) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: demo-image DIR");
        return ExitCode::from(2);
    };
    eprintln!("demo: building the nginx fixture (debootstrap; cached after the first run)...");
    let fixture = match fixtures::nginx() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if dest.exists()
        && let Err(e) = std::fs::remove_dir_all(&dest)
    {
        eprintln!("demo: removing {}: {e}", dest.display());
        return ExitCode::FAILURE;
    }
    if let Some(parent) = dest.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        eprintln!("demo: creating {}: {e}", parent.display());
        return ExitCode::FAILURE;
    }
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&fixture.layout)
        .arg(&dest)
        .status();
    match copied {
        Ok(s) if s.success() => {
            println!("oci:{}:{}", dest.display(), fixture.tag);
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("demo: copying the fixture to {}: {other:?}", dest.display());
            ExitCode::FAILURE
        }
    }
}
