//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
//! (so Deployments roll out through ReplicaSets and Pods and garbage collection works) and
//! kube-scheduler, built by `scripts/setup.sh` from the Kubernetes Go modules. Certificates are
//! generated per instance; everything is killed and deleted on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

use crate::cluster::certs::Pki;
use crate::cluster::namespace::{NODE_IP, NodeNamespace, SERVICE_CIDR};
use crate::error::{Error, IoContext, Result};
use crate::images::registry::random_hex;
use crate::net::netns::Forward;
use crate::net::ports;
use crate::process::{Daemon, tail};
use crate::tools;

/// Requests of the chart's operator ServiceAccount, at the Metadata level (verb, resource,
/// user; no bodies), once each; nobody else's.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [\"system:serviceaccount:whittle-system:whittle\"]
  - level: None
";

pub struct ControlPlane {
    processes: Vec<Daemon>,
    api_port: u16,
    client: Client,
    /// Reaches the apiserver inside the cluster's namespace from the host.
    _forward: Option<Forward>,
    dir: tempfile::TempDir,
}

const STARTUP: Duration = Duration::from_secs(90);

impl ControlPlane {
    /// Starts every component on the host's loopback and returns once the API answers and the
    /// controller-manager has created the `default` service account (so Pods can be admitted).
    pub async fn start() -> Result<ControlPlane> {
        Self::launch_retrying(None).await
    }

    /// Starts every component inside a cluster's namespace, where a node can join it: the
    /// apiserver listens on every address there and advertises the node IP (so the `kubernetes`
    /// Service works from pods), authorizes kubelet with the Node authorizer, and reaches
    /// kubelet's API with a client certificate. The host reaches it on `127.0.0.1:<port>`
    /// through a forward, the same address as inside, so one kubeconfig serves both.
    pub async fn start_in(ns: &NodeNamespace) -> Result<ControlPlane> {
        Self::launch_retrying(Some(ns)).await
    }

    /// The ports are probed free, then bound by etcd and the apiserver a moment later: another
    /// test starting in parallel may take one in between. Such a start is tried again, with new
    /// ports, a few times.
    async fn launch_retrying(ns: Option<&NodeNamespace>) -> Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match Self::launch(ns).await {
                Err(Error::NotReady { detail, .. })
                    if attempt < 3 && detail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn launch(ns: Option<&NodeNamespace>) -> Result<ControlPlane> {
        // kube picks ring, oci-client's reqwest aws-lc-rs; with both linked rustls needs telling.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("whittle-control-plane-")
            .tempdir()
            .context(|| "creating the control plane's temp dir".into())?;
        let d = dir.path().to_path_buf();
        let pki = Pki::generate()?;
        let files = [
            ("ca.crt", &pki.ca_cert),
            ("apiserver.crt", &pki.server_cert),
            ("apiserver.key", &pki.server_key),
            ("sa.key", &pki.sa_key),
            ("sa.pub", &pki.sa_pub),
            ("kubelet.crt", &pki.kubelet_client.cert),
            ("kubelet.key", &pki.kubelet_client.key),
            ("kubelet-serving.crt", &pki.kubelet_serving.cert),
            ("kubelet-serving.key", &pki.kubelet_serving.key),
            (
                "apiserver-kubelet-client.crt",
                &pki.apiserver_kubelet_client.cert,
            ),
            (
                "apiserver-kubelet-client.key",
                &pki.apiserver_kubelet_client.key,
            ),
        ];
        for (name, content) in files {
            fs::write(d.join(name), content).context(|| format!("writing {name}"))?;
        }
        let (etcd_port, peer_port, api_port) = (
            ports::free_port()?,
            ports::free_port()?,
            ports::free_port()?,
        );
        let server = format!("https://127.0.0.1:{api_port}");
        fs::write(d.join("kubeconfig"), kubeconfig_yaml(&server, &pki))
            .context(|| "writing kubeconfig".into())?;
        let forward = match ns {
            Some(ns) => Some(Forward::start_on(api_port, &ns.netns_path(), api_port)?),
            None => None,
        };

        let mut plane = ControlPlane {
            processes: Vec::new(),
            api_port,
            client: client_from(&d.join("kubeconfig")).await?,
            _forward: forward,
            dir,
        };
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        plane.spawn(
            ns,
            "etcd",
            &[
                "--name=whittle-testbed".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=whittle-testbed={peer_url}"),
                "--log-level=warn".into(),
                "--unsafe-no-fsync".into(),
            ],
        )?;
        let p = |name: &str| d.join(name).display().to_string();
        let mut apiserver = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
        ];
        if ns.is_some() {
            apiserver.extend([
                "--bind-address=0.0.0.0".to_string(),
                format!("--advertise-address={NODE_IP}"),
            ]);
        } else {
            apiserver.extend([
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".into(),
                // The kubernetes Service would point at 127.0.0.1, which Endpoints refuse.
                "--endpoint-reconciler-type=none".into(),
            ]);
        }
        fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY)
            .context(|| "writing the audit policy".into())?;
        plane.spawn(ns, "kube-apiserver", &apiserver)?;
        plane.wait_api().await?;
        let kubeconfig_flag = format!("--kubeconfig={}", p("kubeconfig"));
        plane.spawn(
            ns,
            "kube-controller-manager",
            &[
                kubeconfig_flag.clone(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                "--use-service-account-credentials=true".into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--controllers=*".into(),
                "--concurrent-gc-syncs=5".into(),
            ],
        )?;
        plane.spawn(
            ns,
            "kube-scheduler",
            &[
                kubeconfig_flag,
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ],
        )?;
        plane.wait_default_service_account().await?;
        Ok(plane)
    }

    fn spawn(&mut self, ns: Option<&NodeNamespace>, name: &str, args: &[String]) -> Result<()> {
        let binary = tools::kube_binary(name)?;
        let mut cmd = match ns {
            Some(ns) => ns.net_command(&binary),
            None => Command::new(&binary),
        };
        cmd.args(args);
        self.processes
            .push(Daemon::spawn(name, &mut cmd, self.dir.path())?);
        Ok(())
    }

    /// Fails early, with the component's log, when a process died.
    fn check_alive(&mut self) -> Result<()> {
        self.processes.iter_mut().try_for_each(Daemon::check_alive)
    }

    async fn wait_api(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if self.client.apiserver_version().await.is_ok()
                && Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
                    .get_opt("default")
                    .await
                    .is_ok_and(|ns| ns.is_some())
            {
                return Ok(());
            }
            if start.elapsed() > STARTUP {
                return Err(self.not_ready("kube-apiserver"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_default_service_account(&mut self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if api.get_opt("default").await.is_ok_and(|sa| sa.is_some()) {
                return Ok(());
            }
            if start.elapsed() > STARTUP {
                return Err(self.not_ready("kube-controller-manager"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn not_ready(&self, component: &str) -> Error {
        Error::NotReady {
            component: component.into(),
            seconds: STARTUP.as_secs(),
            detail: self.log(component),
        }
    }

    /// A client with cluster-admin rights (`system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A kubeconfig file for the same admin credential (for helm and the operator binary).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The last lines of a component's log, for failure messages.
    pub fn log(&self, component: &str) -> String {
        tail(&self.dir.path().join(format!("{component}.log")))
    }

    /// A file of the cluster's PKI (`ca.crt`, `kubelet.crt`, `kubelet-serving.key`, …).
    /// The API server's audit log: one JSON line per request the chart's operator
    /// ServiceAccount made (`system:serviceaccount:whittle-system:whittle`), for counting what
    /// the operator asks of the API server; nothing else is logged.
    pub fn audit_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default()
    }

    pub fn pki_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The apiserver's port, the same on the host's loopback and inside the cluster's namespace.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// Applies CRDs (server-side) and waits until each is Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in crds {
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| Error::Invalid("a CRD without metadata.name".into()))?;
            api.patch(
                &name,
                &PatchParams::apply("whittle-testbed").force(),
                &Patch::Apply(crd),
            )
            .await?;
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .map_err(|_| Error::NotReady {
                    component: format!("CRD {name}"),
                    seconds: 30,
                    detail: "not Established".into(),
                })?
                .map_err(|e| Error::Invalid(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(())
    }

    /// A namespace with a random name, for tests that must not see each other's objects.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{}", random_hex(4));
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .map_err(|e| Error::Invalid(e.to_string()))?;
        Api::all(self.client.clone())
            .create(&Default::default(), &ns)
            .await?;
        Ok(name)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Clients first (scheduler, controller-manager), etcd last.
        while let Some(mut daemon) = self.processes.pop() {
            // Nothing in a test control plane is worth a graceful shutdown.
            daemon.stop(Duration::ZERO);
        }
    }
}

async fn client_from(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Invalid(format!("reading {}: {e}", path.display())))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Invalid(format!("loading {}: {e}", path.display())))?;
    Ok(Client::try_from(config)?)
}

fn kubeconfig_yaml(server: &str, pki: &Pki) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: whittle-testbed
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: whittle-admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: whittle-testbed
  context:
    cluster: whittle-testbed
    user: whittle-admin
    namespace: default
current-context: whittle-testbed
",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin_cert),
        key = b64(&pki.admin_key),
    )
}
