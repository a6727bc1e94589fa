//! One runc container: `runc run` in the foreground as our child (so its exit status is the
//! app's), with a private runc state root, stdout and stderr captured to files. Killed and
//! deleted on drop, so an interrupted run leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::{LocalError, forward, last_lines};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Container {
    id: String,
    state: tempfile::TempDir,
    child: Child,
    pid: i32,
    exit: Option<i32>,
}

/// How a command run in the container with [`Container::exec`] ended.
#[derive(Debug, Clone)]
pub struct Exec {
    /// None when it was killed (timeout or signal).
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The last lines of its stdout and stderr (runc's own complaints included).
    pub output_tail: String,
}

/// How long a container may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Parses an image StopSignal (`SIGQUIT`, `QUIT`, `3`); SIGTERM when empty.
pub fn parse_signal(s: &str) -> Result<Signal, LocalError> {
    if s.is_empty() {
        return Ok(Signal::SIGTERM);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| LocalError::BadSignal(s.into()));
    }
    let name = if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    };
    Signal::from_str(&name).map_err(|_| LocalError::BadSignal(s.into()))
}

impl Container {
    /// Starts the bundle and returns once runc reports the container running.
    pub async fn start(bundle: &Path) -> Result<Container, LocalError> {
        let state = tempfile::Builder::new()
            .prefix("whittle-runc-")
            .tempdir()
            .map_err(LocalError::io("creating a runc state directory"))?;
        let id = format!(
            "whittle-local-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let out = std::fs::File::create(state.path().join("stdout"))
            .map_err(LocalError::io("creating the stdout file"))?;
        let err = std::fs::File::create(state.path().join("stderr"))
            .map_err(LocalError::io("creating the stderr file"))?;
        let child = Command::new("runc")
            .arg("--root")
            .arg(state.path().join("runc"))
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalError::RuncMissing { source })?;
        let mut container = Container {
            id,
            state,
            child,
            pid: 0,
            exit: None,
        };
        container.pid = container.wait_running(Duration::from_secs(30)).await?;
        Ok(container)
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.state.path().join("runc"));
        cmd
    }

    async fn wait_running(&mut self, timeout: Duration) -> Result<i32, LocalError> {
        let start = Instant::now();
        loop {
            self.check_exited()?;
            let out = self
                .runc()
                .args(["state", &self.id])
                .stderr(Stdio::null())
                .output()
                .await;
            if let Ok(out) = out
                && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && state["status"] == "running"
                && let Some(pid) = state["pid"].as_i64()
            {
                return Ok(pid as i32);
            }
            if start.elapsed() > timeout {
                return Err(self.not_ready(timeout, "runc to report it running"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_exited(&mut self) -> Result<(), LocalError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exit = status.code();
            return Err(LocalError::ExitedEarly {
                id: self.id.clone(),
                status: status.to_string(),
                stderr: self.stderr_tail(20),
            });
        }
        Ok(())
    }

    fn not_ready(&self, timeout: Duration, waited_for: &str) -> LocalError {
        LocalError::NotReady {
            id: self.id.clone(),
            seconds: timeout.as_secs(),
            waited_for: waited_for.into(),
            stderr: self.stderr_tail(20),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's network namespace, as the host sees it.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// Waits until the app accepts connections on `port`, or until `ready_cmd` (run on the host
    /// with `sh -c`, `WHITTLE_TARGET` set to `target`) succeeds.
    pub async fn wait_ready(
        &mut self,
        port: u16,
        ready_cmd: Option<&str>,
        target: &str,
        timeout: Duration,
    ) -> Result<(), LocalError> {
        let start = Instant::now();
        loop {
            self.check_exited()?;
            let ready = match ready_cmd {
                Some(cmd) => Command::new("sh")
                    .args(["-c", cmd])
                    .env("WHITTLE_TARGET", target)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                None => forward::connect(&self.netns(), port).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let what = match ready_cmd {
                    Some(cmd) => format!("`{cmd}` to succeed"),
                    None => format!("port {port} to accept connections"),
                };
                return Err(self.not_ready(timeout, &what));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `argv` in the container as `docker exec` does (`runc exec`: the container's
    /// namespaces, user, environment and capabilities), killing runc after `timeout`.
    pub async fn exec(&self, argv: &[String], timeout: Duration) -> Result<Exec, LocalError> {
        let start = Instant::now();
        let child = self
            .runc()
            .args(["exec", &self.id])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalError::RuncMissing { source })?;
        // On a timeout runc goes; the command it started may linger until the container stops.
        let what = format!("runc exec {}", self.id);
        let (exit_code, output) = super::exercise::bounded(child, timeout, what).await?;
        Ok(Exec {
            exit_code,
            seconds: start.elapsed().as_secs_f64(),
            output_tail: last_lines(&output, 10),
        })
    }

    /// Stops the container the way `docker stop` does: sends `signal`, waits up to `timeout`
    /// for the exit, then SIGKILL. Returns the exit code (128+N for death by signal N, runc's
    /// convention). An app running as PID 1 without a handler for `signal` ignores it (the
    /// kernel's rule for PID 1), so it is the SIGKILL that ends it.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<i32, LocalError> {
        if let Some(code) = self.exit {
            return Ok(code);
        }
        self.kill(signal.as_str()).await?;
        if let Some(code) = self.wait_exit(timeout).await? {
            return Ok(code);
        }
        tracing::info!(container = %self.id, signal = signal.as_str(), seconds = timeout.as_secs(),
            "the container did not stop in time; killing it");
        self.kill("SIGKILL").await?;
        self.wait_exit(KILL_WAIT)
            .await?
            .ok_or_else(|| LocalError::StopTimeout {
                id: self.id.clone(),
                seconds: timeout.as_secs() + KILL_WAIT.as_secs(),
                signal: format!("{} and SIGKILL", signal.as_str()),
            })
    }

    /// `runc kill ID SIGNAL`; an error only when it failed and the container still runs.
    async fn kill(&mut self, signal: &str) -> Result<(), LocalError> {
        let out = self
            .runc()
            .args(["kill", &self.id, signal])
            .output()
            .await
            .map_err(|source| LocalError::RuncMissing { source })?;
        if !out.status.success() && self.child.try_wait().ok().flatten().is_none() {
            return Err(LocalError::Runc {
                args: format!("kill {} {signal}", self.id),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// The exit code if the container exits within `timeout`.
    async fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, LocalError> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                let code = status.code().unwrap_or(-1);
                self.exit = Some(code);
                Ok(Some(code))
            }
            Ok(Err(e)) => Err(LocalError::Io {
                what: format!("waiting for container {}", self.id),
                source: e,
            }),
            Err(_) => Ok(None),
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.state.path().join("stdout")).unwrap_or_default()
    }

    /// The last `n` lines the container wrote to stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        last_lines(
            &std::fs::read_to_string(self.state.path().join("stderr")).unwrap_or_default(),
            n,
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let root = self.state.path().join("runc");
        let runc = |args: &[&str]| {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        if self.exit.is_none() {
            runc(&["kill", &self.id, "KILL"]);
        }
        runc(&["delete", "--force", &self.id]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stop_signals_as_images_write_them() {
        assert_eq!(parse_signal("SIGQUIT").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("QUIT").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("").unwrap(), Signal::SIGTERM);
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .to_string()
                .contains("SIGNOPE")
        );
    }
}
