//! `make cluster`: the test bed's cluster for a person to try whittle on, in the foreground
//! like `kind create cluster` (without Docker): a real control plane, a real kubelet +
//! containerd node and a plain-HTTP registry holding the examples' images. Writes
//! `DIR/kubeconfig` and `DIR/env` once the node is Ready (`DIR/env` appearing is the signal
//! that `make demo-cluster` waits for); SIGINT or SIGTERM tears everything down and removes
//! both files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

use whittle_testbed::cluster::Cluster;
use whittle_testbed::images::fixtures;
use whittle_testbed::tools;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: cluster DIR");
        return ExitCode::from(2);
    };
    // Stale files from a cluster that was killed would point at ports nobody serves.
    remove_files(&dir);
    match run(&dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            remove_files(&dir);
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    eprintln!("cluster: starting the control plane, the node and a registry...");
    let cluster = Cluster::start().await?;
    let registry = cluster.registry().host();
    eprintln!(
        "cluster: pushing the examples' images (built with debootstrap, cached after the first run)..."
    );
    fixtures::nginx()?.push(cluster.registry(), "whittle-examples/nginx:1")?;
    fixtures::busybox(None)?.push(cluster.registry(), "whittle-examples/busybox:1")?;

    std::fs::create_dir_all(dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(cluster.kubeconfig(), &kubeconfig)?;
    let kubectl = tools::kube_binary("kubectl")?;
    let helm = tools::helm_binary()?;
    let env = format!(
        "KUBECONFIG={}\nREGISTRY={registry}\nKUBECTL={}\nHELM={}\n",
        kubeconfig.display(),
        kubectl.display(),
        helm.display()
    );
    // Written last and atomically: a reader that sees it can use the cluster.
    let partial = dir.join("env.partial");
    std::fs::write(&partial, &env)?;
    std::fs::rename(&partial, dir.join("env"))?;

    println!(
        "\nThe cluster is up (Ctrl-C tears it down). In another shell:\n\n  \
         set -a; . {env_file}; set +a\n  \
         $KUBECTL get nodes\n  \
         make cluster-install          # the operator image into $REGISTRY, then helm install\n  \
         for f in examples/nginx/*.yaml; do echo ---; sed \"s/localhost:5000/$REGISTRY/\" $f; done | $KUBECTL apply -f -\n  \
         $KUBECTL get hw -w\n\n\
         The registry {registry} holds whittle-examples/nginx:1 and whittle-examples/busybox:1.",
        env_file = dir.join("env").display(),
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("cluster: tearing down...");
    remove_files(dir);
    drop(cluster);
    eprintln!("cluster: gone");
    Ok(())
}

fn remove_files(dir: &Path) {
    for name in ["env", "env.partial", "kubeconfig"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}
