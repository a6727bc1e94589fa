//! Running images on this machine with runc, for `whittle local`: a root filesystem plus the
//! image's run configuration become an OCI runtime bundle ([`bundle`]), runc runs it in its own
//! namespaces ([`container`]), a loopback port on the host reaches the app inside its
//! loopback-only network namespace ([`forward`]), exercises are shell commands run on the
//! host against that port ([`exercise`]), and probes are commands run inside the container
//! ([`probe`]).

pub mod bundle;
pub mod container;
pub mod exercise;
pub mod forward;
pub mod probe;
pub mod progress;
pub mod user;
pub mod workflow;

use std::path::PathBuf;

/// What can go wrong while running an image locally. Messages name the container, the file or
/// the command, and carry the container's last stderr lines where they explain the failure.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start runc ({source}); is runc installed? (apt-get install runc)")]
    RuncMissing {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "container {id} exited ({status}) before it was ready; its last stderr lines:\n{stderr}"
    )]
    ExitedEarly {
        id: String,
        status: String,
        stderr: String,
    },
    #[error(
        "container {id} was not ready after {seconds}s ({waited_for}); its last stderr lines:\n{stderr}"
    )]
    NotReady {
        id: String,
        seconds: u64,
        waited_for: String,
        stderr: String,
    },
    #[error("container {id} did not exit within {seconds}s of {signal}")]
    StopTimeout {
        id: String,
        seconds: u64,
        signal: String,
    },
    #[error("`runc {args}` failed: {stderr}")]
    Runc { args: String, stderr: String },
    #[error("image user {user:?} not found in {file}")]
    UnknownUser { user: String, file: PathBuf },
    #[error("unknown stop signal {0:?} in the image config")]
    BadSignal(String),
    #[error("network namespace {path}: {detail}")]
    Netns { path: PathBuf, detail: String },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Evidence(#[from] crate::evidence::produce::EvidenceError),
    #[error(transparent)]
    Profile(#[from] Box<crate::evidence::profile::ProfileError>),
    #[error("{image} exposes no port: pass --port N")]
    NoPort { image: String },
    #[error(
        "exercise `{command}` fails against the ORIGINAL image ({exit}), so it cannot tell whether the hardened one works; fix the exercise. Its output:\n{output}"
    )]
    ExerciseFailedOnOriginal {
        command: String,
        exit: String,
        output: String,
    },
    #[error(
        "{probe} fails in the ORIGINAL container ({exit}), so it cannot tell whether the hardened one works{hint}. Its output:\n{output}"
    )]
    ProbeFailedOnOriginal {
        probe: String,
        exit: String,
        output: String,
        hint: &'static str,
    },
    #[error(
        "the image's Healthcheck.Test {test} is not one Docker runs ([\"CMD\", program, args…], [\"CMD-SHELL\", script] or [\"NONE\"]); pass --no-healthcheck to skip it"
    )]
    BadHealthcheck { test: String },
    #[error(
        "the sensor left no usable report ({detail}); the container's last stderr lines:\n{stderr}"
    )]
    NoReport { detail: String, stderr: String },
}

impl LocalError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
        let what = what.into();
        move |source| LocalError::Io { what, source }
    }
}

/// The last `n` lines of a text, for error messages that show a container's stderr.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
