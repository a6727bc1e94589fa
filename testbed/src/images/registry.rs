//! A real OCI distribution registry (Debian's `docker-registry`) on a free loopback port with its
//! own temporary storage, optionally behind htpasswd basic auth.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::cluster::namespace::NodeNamespace;
use crate::error::{Error, IoContext, Result};
use crate::net::netns::Forward;
use crate::net::{http, ports};
use crate::tools;

pub struct Registry {
    port: u16,
    credentials: Option<(String, String)>,
    child: Child,
    /// Reaches a registry inside a cluster's namespace from the host, on the same port.
    _forward: Option<Forward>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Result<Registry> {
        Self::launch(None, None)
    }

    /// A registry that requires basic auth with a generated user and password.
    pub fn start_with_auth() -> Result<Registry> {
        Self::launch(Some(generated_credentials()), None)
    }

    /// A registry inside a cluster's namespace, where the node pulls from it, reachable from
    /// the host at the same `127.0.0.1:PORT` so image references mean the same on both sides.
    pub fn start_in(ns: &NodeNamespace, auth: bool) -> Result<Registry> {
        Self::launch(auth.then(generated_credentials), Some(ns))
    }

    fn launch(
        credentials: Option<(String, String)>,
        ns: Option<&NodeNamespace>,
    ) -> Result<Registry> {
        let mut last = None;
        // Retry: another process may take the probed port before the registry binds it.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("whittle-registry-")
                .tempdir()
                .context(|| "creating the registry's temp dir".into())?;
            let port = ports::free_port()?;
            let config = dir.path().join("config.yml");
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            );
            if let Some((user, password)) = &credentials {
                let htpasswd = dir.path().join("htpasswd");
                let out = tools::run(Command::new("htpasswd").args(["-Bbn", user, password]))?;
                fs::write(&htpasswd, out.stdout).context(|| "writing htpasswd".into())?;
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: whittle-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            fs::write(&config, yaml).context(|| format!("writing {}", config.display()))?;
            let log = fs::File::create(dir.path().join("registry.log"))
                .context(|| "creating the registry log".into())?;
            let log2 = log
                .try_clone()
                .context(|| "duplicating a file handle".into())?;
            let mut cmd = match ns {
                Some(ns) => ns.net_command("docker-registry"),
                None => Command::new("docker-registry"),
            };
            let forward = match ns {
                Some(ns) => match Forward::start_on(port, &ns.netns_path(), port) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                },
                None => None,
            };
            let child = cmd
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|source| Error::Spawn {
                    command: "docker-registry serve (apt-get install docker-registry, or run `make setup`)".into(),
                    source,
                })?;
            let mut registry = Registry {
                port,
                credentials: credentials.clone(),
                child,
                _forward: forward,
                dir,
            };
            match registry.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(registry),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid("registry did not start".into())))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NotReady {
                    component: "docker-registry".into(),
                    seconds: timeout.as_secs(),
                    detail: format!("exited with {status}: {}", self.log()),
                });
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port))
                && let Ok(resp) = http::get(stream, &self.host(), "/v2/")
                && (resp.status == 200 || resp.status == 401)
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: "docker-registry".into(),
                    seconds: timeout.as_secs(),
                    detail: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`, the registry part of image references. Plain HTTP.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The generated user and password, when the registry requires auth.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.credentials.clone()
    }

    /// A docker config JSON (`~/.docker/config.json` / dockerconfigjson Secret) for this registry.
    pub fn docker_config_json(&self) -> String {
        let auths = match &self.credentials {
            Some((u, p)) => {
                serde_json::json!({ self.host(): { "auth": BASE64.encode(format!("{u}:{p}")) } })
            }
            None => serde_json::json!({}),
        };
        serde_json::json!({ "auths": auths }).to_string()
    }

    /// `--creds user:password` for skopeo, when the registry requires auth.
    pub fn skopeo_creds(&self) -> Option<String> {
        self.credentials.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// The registry's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where blobs and manifests are stored, for tests that count what was uploaded.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the registry now (a test of what happens when it is gone); its storage stays
    /// readable through [`Registry::storage`] until drop.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn generated_credentials() -> (String, String) {
    ("whittle".to_string(), format!("pw-{}", random_hex(12)))
}

/// Random hex from the kernel, for passwords and names.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
