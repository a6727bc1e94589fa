//! The real `helm` binary, isolated from the machine's own helm state (its cache, config and
//! data directories are temporary) and pointed at a test control plane.

use std::path::Path;
use std::process::{Command, Output};

use crate::error::{IoContext, Result};
use crate::tools;

pub struct Helm {
    home: tempfile::TempDir,
    kubeconfig: Option<std::path::PathBuf>,
}

impl Helm {
    /// Helm with no cluster: enough for `lint` and `template`.
    pub fn new() -> Result<Helm> {
        let home = tempfile::Builder::new()
            .prefix("whittle-helm-")
            .tempdir()
            .context(|| "creating helm's home".into())?;
        Ok(Helm {
            home,
            kubeconfig: None,
        })
    }

    /// Helm that talks to the cluster a kubeconfig names.
    pub fn with_kubeconfig(kubeconfig: &Path) -> Result<Helm> {
        let mut helm = Self::new()?;
        helm.kubeconfig = Some(kubeconfig.to_path_buf());
        Ok(helm)
    }

    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(tools::helm_binary()?);
        let h = self.home.path();
        cmd.env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"));
        if let Some(k) = &self.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        Ok(cmd)
    }

    /// Runs helm with `args`, returning its output or an error carrying it.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        tools::run(self.command()?.args(args))
    }
}
