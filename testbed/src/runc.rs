//! Runs images for real: `umoci unpack` turns an image into an OCI runtime bundle (root
//! filesystem + config.json derived from the image config: argv, env, cwd, user), and `runc`
//! runs it in its own PID, mount and network namespaces. The network namespace has only
//! loopback; tests reach it through [`crate::net::netns`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::images::oci_layout;
use crate::images::registry::Registry;
use crate::net::http;
use crate::net::netns::{self, Forward};
use crate::tools;

/// The capabilities containerd and Docker give a container by default; a Kubernetes pod
/// without a securityContext gets the same.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// An unpacked image: root filesystem plus the runtime spec runc will run.
pub struct Bundle {
    dir: tempfile::TempDir,
    spec: Value,
    image_config: Value,
}

impl Bundle {
    /// Unpacks `layout:tag` with umoci.
    pub fn from_layout(layout: &Path, tag: &str) -> Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("whittle-bundle-")
            .tempdir()
            .context(|| "creating a bundle dir".into())?;
        let bundle = dir.path().join("bundle");
        tools::run(
            Command::new("umoci")
                .args(["unpack", "--image", &format!("{}:{tag}", layout.display())])
                .arg(&bundle),
        )?;
        let spec_path = bundle.join("config.json");
        let spec: Value = serde_json::from_slice(
            &fs::read(&spec_path).context(|| format!("reading {}", spec_path.display()))?,
        )
        .map_err(|e| Error::Invalid(format!("umoci wrote an invalid config.json: {e}")))?;
        let image_config = oci_layout::image_config(layout, tag)?;
        let mut bundle = Bundle {
            dir,
            spec,
            image_config,
        };
        // umoci grants almost nothing; containerd (and so a Kubernetes pod) grants these.
        bundle.set_capabilities(DEFAULT_CAPABILITIES);
        Ok(bundle)
    }

    /// Copies `<registry>/<repo:tag or @digest>` out with skopeo (an independent reader of
    /// whittle's pushes), then unpacks it.
    pub fn from_registry(registry: &Registry, reference: &str) -> Result<Bundle> {
        let reference = reference
            .strip_prefix(&format!("{}/", registry.host()))
            .unwrap_or(reference);
        // skopeo refuses `repo:tag@digest`; the digest is what names the image.
        let reference = match reference.split_once('@') {
            Some((name, digest)) => match name.rsplit_once(':') {
                Some((repo, _tag)) => format!("{repo}@{digest}"),
                None => reference.to_string(),
            },
            None => reference.to_string(),
        };
        let layout = tempfile::Builder::new()
            .prefix("whittle-pulled-")
            .tempdir()
            .context(|| "creating a pull dir".into())?;
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
        if let Some(creds) = registry.skopeo_creds() {
            cmd.args(["--src-creds", &creds]);
        }
        cmd.arg(format!("docker://{}/{reference}", registry.host()))
            .arg(format!("oci:{}:image", layout.path().display()));
        tools::run(&mut cmd)?;
        Self::from_layout(layout.path(), "image")
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// The OCI runtime spec (config.json) runc will be given; edit freely before starting.
    pub fn spec(&self) -> &Value {
        &self.spec
    }

    pub fn spec_mut(&mut self) -> &mut Value {
        &mut self.spec
    }

    /// The image configuration the bundle was unpacked from (`config.StopSignal`, ...).
    pub fn image_config(&self) -> &Value {
        &self.image_config
    }

    pub fn args(&self) -> Vec<String> {
        self.spec["process"]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect()
    }

    pub fn set_args(&mut self, args: Vec<String>) {
        self.spec["process"]["args"] = json!(args);
    }

    /// Sets (or replaces) one environment variable of the container's process.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let prefix = format!("{key}=");
        let mut env: Vec<Value> = self.spec["process"]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)))
            .collect();
        env.push(json!(format!("{key}={value}")));
        self.spec["process"]["env"] = Value::Array(env);
    }

    /// Replaces every capability set (bounding, effective, permitted, inheritable, ambient);
    /// [`DEFAULT_CAPABILITIES`] until changed.
    pub fn set_capabilities(&mut self, caps: &[&str]) {
        let caps = json!(caps);
        self.spec["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": caps, "ambient": caps,
        });
    }

    /// The image's StopSignal, SIGTERM when it names none.
    pub fn stop_signal(&self) -> Result<Signal> {
        match self.image_config["config"]["StopSignal"].as_str() {
            None | Some("") => Ok(Signal::SIGTERM),
            Some(s) => parse_signal(s),
        }
    }

    /// The image's first ExposedPort (`80/tcp` → 80).
    pub fn exposed_port(&self) -> Option<u16> {
        self.image_config["config"]["ExposedPorts"]
            .as_object()?
            .keys()
            .filter_map(|k| k.split('/').next()?.parse().ok())
            .next()
    }
}

/// Parses `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|e| Error::Invalid(format!("signal {s}: {e}")));
    }
    let name = if s.starts_with("SIG") {
        s.to_string()
    } else {
        format!("SIG{s}")
    };
    Signal::from_str(&name).map_err(|e| Error::Invalid(format!("signal {s}: {e}")))
}

/// How to run a container.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Share the host's network namespace instead of getting a loopback-only one.
    pub host_network: bool,
}

/// How the container's process ended: its exit code, 128+N when it died of signal N (runc's
/// convention, which is also what a shell reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
}

impl Exit {
    pub fn signal(&self) -> Option<Signal> {
        (self.code > 128)
            .then(|| Signal::try_from(self.code - 128).ok())
            .flatten()
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running container; killed and deleted on drop.
pub struct Container {
    id: String,
    state: tempfile::TempDir,
    bundle: Bundle,
    child: Child,
    pid: i32,
    exit: Option<Exit>,
}

impl Container {
    pub fn start(mut bundle: Bundle, options: RunOptions) -> Result<Container> {
        let spec = &mut bundle.spec;
        spec["process"]["terminal"] = json!(false);
        let mut namespaces: Vec<Value> = spec["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n["type"] != "network" && n["type"] != "user")
            .collect();
        if !options.host_network {
            namespaces.push(json!({"type": "network"}));
        }
        spec["linux"]["namespaces"] = Value::Array(namespaces);
        let spec_path = bundle.path().join("config.json");
        fs::write(&spec_path, bundle.spec.to_string())
            .context(|| format!("writing {}", spec_path.display()))?;

        let state = tempfile::Builder::new()
            .prefix("whittle-runc-")
            .tempdir()
            .context(|| "creating runc state dir".into())?;
        let id = format!(
            "whittle-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let out = fs::File::create(state.path().join("stdout")).context(|| "stdout file".into())?;
        let err = fs::File::create(state.path().join("stderr")).context(|| "stderr file".into())?;
        let child = Command::new("runc")
            .arg("--root")
            .arg(state.path().join("runc"))
            .args(["run", "--bundle"])
            .arg(bundle.path())
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: "runc run (apt-get install runc, or run `make setup`)".into(),
                source,
            })?;
        let mut container = Container {
            id,
            state,
            bundle,
            child,
            pid: 0,
            exit: None,
        };
        container.pid = container.wait_running(Duration::from_secs(20))?;
        Ok(container)
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.state.path().join("runc"));
        cmd
    }

    fn wait_running(&mut self, timeout: Duration) -> Result<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // A short-lived app can finish before runc reports it running: that is a run,
                // not a failed start, and wait() returns its status. runc's own failures say so
                // on stderr, which callers see through wait_port()/stderr().
                self.exit = Some(Exit {
                    code: status.code().unwrap_or(-1),
                });
                return Ok(0);
            }
            if let Ok(out) = self
                .runc()
                .args(["state", &self.id])
                .stderr(Stdio::null())
                .output()
                && let Ok(state) = serde_json::from_slice::<Value>(&out.stdout)
                && state["status"] == "running"
                && let Some(pid) = state["pid"].as_i64()
            {
                return Ok(pid as i32);
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: format!("container {}", self.id),
                    seconds: timeout.as_secs(),
                    detail: self.stderr(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's init process, as the host sees it (0 when it exited before runc
    /// reported it running).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// `/proc/<pid>/ns/net`, for `nsenter --net=...` and [`crate::net::netns`].
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// Sends a signal to the container's init process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        tools::run(self.runc().args(["kill", &self.id, signal.as_str()]))?;
        Ok(())
    }

    /// Waits for the container to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context(|| "waiting for runc".into())?
            {
                let exit = Exit {
                    code: status.code().unwrap_or(-1),
                };
                self.exit = Some(exit);
                return Ok(exit);
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: format!("exit of container {}", self.id),
                    seconds: timeout.as_secs(),
                    detail: self.stderr(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `argv` inside the running container as the runtime runs an exec probe or a
    /// `kubectl exec` (`runc exec`: the container's namespaces, env, user and capabilities),
    /// and returns its exit code, stdout and stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<(i32, String, String)> {
        let out = self
            .runc()
            .args(["exec", &self.id])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .context(|| "runc exec".into())?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Sends the image's stop signal and waits for the exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<Exit> {
        self.signal(self.bundle.stop_signal()?)?;
        self.wait(timeout)
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.state.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.state.path().join("stderr")).unwrap_or_default()
    }

    /// Waits until something listens on `port` inside the container.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if netns::connect(&self.netns_path(), port).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = status.code().map(|code| Exit { code });
                return Err(Error::Invalid(format!(
                    "container exited ({status}) before listening on {port}; stderr:\n{}",
                    self.stderr()
                )));
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: format!("port {port} of container {}", self.id),
                    seconds: timeout.as_secs(),
                    detail: self.stderr(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on `127.0.0.1:port` inside the container.
    pub fn http_get(&self, port: u16, path: &str) -> Result<http::Response> {
        let stream = netns::connect(&self.netns_path(), port)?;
        http::get(stream, &format!("127.0.0.1:{port}"), path)
    }

    /// A 127.0.0.1 port on the host that forwards to `port` inside the container.
    pub fn forward(&self, port: u16) -> Result<Forward> {
        Forward::start(&self.netns_path(), port)
    }

    /// A listener on 127.0.0.1:`port` inside the container's network namespace.
    pub fn bind_in_netns(&self, port: u16) -> Result<std::net::TcpListener> {
        netns::listen(&self.netns_path(), port)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self
                .runc()
                .args(["kill", &self.id, "KILL"])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
        }
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}
