//! Exercises: shell commands run on the host against the running container, with
//! `WHITTLE_TARGET=127.0.0.1:<port>` in their environment. The same commands run against the
//! original (instrumented) image and against the hardened one; a hardened image passes when
//! every exercise exits 0.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command;

use super::{LocalError, last_lines};

/// The outcome of one exercise run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExerciseResult {
    pub command: String,
    /// The command's exit code; None when it was killed (timeout or signal).
    pub exit_code: Option<i32>,
    pub passed: bool,
    pub seconds: f64,
    /// The last lines of its output, to show why it failed.
    pub output_tail: String,
}

/// Runs `sh -c command` with WHITTLE_TARGET set, killing it after `timeout`.
pub async fn run(
    command: &str,
    target: &str,
    timeout: Duration,
) -> Result<ExerciseResult, LocalError> {
    let start = Instant::now();
    let child = Command::new("sh")
        .args(["-c", command])
        .env("WHITTLE_TARGET", target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(LocalError::io(format!("starting exercise `{command}`")))?;
    let what = format!("running exercise `{command}`");
    let (exit_code, output) = bounded(child, timeout, what).await?;
    Ok(ExerciseResult {
        command: command.into(),
        exit_code,
        passed: exit_code == Some(0),
        seconds: start.elapsed().as_secs_f64(),
        output_tail: last_lines(&output, 10),
    })
}

/// Waits for `child` (spawned with piped stdout and stderr, `kill_on_drop`) at most `timeout`:
/// its exit code (None when killed) and its output, or "timed out" once it was killed.
pub(super) async fn bounded(
    child: tokio::process::Child,
    timeout: Duration,
    what: String,
) -> Result<(Option<i32>, String), LocalError> {
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.map_err(LocalError::io(what))?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok((out.status.code(), text))
        }
        // Dropping the child kills it; what it started may linger.
        Err(_) => Ok((None, format!("timed out after {}s", timeout.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_exit_codes_output_and_target() {
        let ok = run(
            "test \"$WHITTLE_TARGET\" = 127.0.0.1:1 && echo fine",
            "127.0.0.1:1",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.output_tail, "fine");
        let bad = run("echo nope >&2; exit 7", "x", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(bad.exit_code, Some(7));
        assert!(!bad.passed && bad.output_tail.contains("nope"));
    }

    #[tokio::test]
    async fn a_hanging_exercise_times_out_and_fails() {
        let r = run("sleep 30", "x", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(
            !r.passed && r.exit_code.is_none() && r.seconds < 5.0,
            "{r:?}"
        );
    }
}
