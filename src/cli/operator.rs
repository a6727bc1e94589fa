//! `whittle operator`: the controller and the report server in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use futures::future::Either;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::info;

use whittle::controller::vuln_dbs::{VulnDbLimits, VulnDbSource, VulnDbs, parse_vuln_db};
use whittle::controller::{self, Context};
use whittle::image::instrument::find_sensor;
use whittle::image::limits::{self, Limits};
use whittle::leader::Leadership;
use whittle::metrics::Metrics;
use whittle::reports::ReportKey;
use whittle::server::{self, ServerState};

use super::{CliResult, ReadArgs, parse_duration};

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Where the report intake, /metrics, /healthz and /readyz listen.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Ask every request for a report page for a bearer token, loopback ones too (by default
    /// a loopback peer, i.e. `kubectl port-forward`, needs none): for a pod on the node's
    /// network, whose loopback every process of the node shares.
    #[arg(long)]
    report_pages_token_only: bool,
    /// The address sensors POST reports to (IP:PORT, no DNS in the pods' way). Default: the
    /// ClusterIP of --service, on its port named `http` (or its first port).
    #[arg(long, value_name = "IP:PORT")]
    report_address: Option<SocketAddr>,
    /// The operator's own Service, used to find --report-address.
    #[arg(long, default_value = "whittle")]
    service: String,
    /// The namespace of --service (default: $POD_NAMESPACE, as the chart sets it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "whittle-system")]
    service_namespace: String,
    /// How many workflows are reconciled at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// The static sensor binary to put in instrumented images (default: $WHITTLE_SENSOR_BIN,
    /// then `whittle-sensor` beside this binary).
    #[arg(long)]
    sensor: Option<PathBuf>,
    /// Reconcile only while holding a Lease, so that of several replicas exactly one does;
    /// every replica serves the report intake.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease for --leader-elect, in the namespace of --service.
    #[arg(long, default_value = "whittle-operator")]
    lease_name: String,
    /// The Secret (in the namespace of --service) holding the key report tokens are derived
    /// from; made with a random key when missing, so every replica shares it.
    #[arg(long, default_value = "whittle-report-key")]
    report_key_secret: String,
    /// Read the report key from this file instead of --report-key-secret (32 bytes or more).
    #[arg(long, value_name = "FILE")]
    report_key_file: Option<PathBuf>,
    /// The largest manifest, image index or image config read (they are held in memory).
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size,
          default_value = "4Mi")]
    max_manifest_size: u64,
    /// How long pushing one instrumented image may take in all (e.g. 30m).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30m")]
    instrument_timeout: Duration,
    // --spool-limit is per harden: with --concurrency N, N spools may be full at once.
    #[command(flatten)]
    budgets: ReadArgs,
    /// Watch only this namespace (repeatable, or comma-separated in $WATCH_NAMESPACES);
    /// workflows elsewhere are left alone. Default: every namespace.
    #[arg(
        long = "watch-namespace",
        value_name = "NAMESPACE",
        env = "WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    watch_namespaces: Vec<String>,
    /// An OSV vulnerability database workflows may name in spec.vulnerabilities.db, as
    /// NAME=URL (downloaded) or NAME=/PATH (a zip or directory in this pod), loaded again
    /// once it is --vuln-db-refresh old, e.g. debian=https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip.
    /// Repeatable. Workflows can name no other.
    #[arg(long = "vuln-db", value_name = "NAME=URL|PATH", value_parser = parse_vuln_db)]
    vuln_dbs: Vec<(String, VulnDbSource)>,
    /// How long downloading one vulnerability database may take in all (e.g. 5m).
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "5m")]
    vuln_db_timeout: Duration,
    /// The largest vulnerability database downloaded (on disk in $TMPDIR, the spool volume,
    /// while it is read: keep it well below that volume's size).
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size, default_value = "512Mi")]
    vuln_db_max_size: u64,
    /// The largest record (zip entry or file) of a vulnerability database once inflated; a
    /// larger one (a zip bomb) fails the load before it is inflated past this.
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size, default_value = "16Mi")]
    vuln_db_max_entry_size: u64,
    /// The memory all loaded vulnerability databases may take together.
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size, default_value = "256Mi")]
    vuln_db_memory: u64,
    /// How long a loaded vulnerability database is used before it is downloaded (or read)
    /// again; continuous hardening re-matches the hardened images against it when it changed.
    #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1h")]
    vuln_db_refresh: Duration,
}

pub async fn operator(args: OperatorArgs) -> CliResult {
    let mut sources = std::collections::BTreeMap::new();
    for (name, source) in args.vuln_dbs {
        if sources.insert(name.clone(), source).is_some() {
            return Err(format!("--vuln-db: {name} is configured twice").into());
        }
    }
    let vuln_dbs = VulnDbs::new(
        sources,
        VulnDbLimits {
            download_timeout: args.vuln_db_timeout,
            download_bytes: args.vuln_db_max_size,
            entry_bytes: args.vuln_db_max_entry_size,
            memory_bytes: args.vuln_db_memory,
            refresh: args.vuln_db_refresh,
        },
    );
    let client = Client::try_default().await?;
    let sensor = find_sensor(args.sensor.as_deref())?;
    let report_address = match args.report_address {
        Some(a) => a.to_string(),
        None => service_address(&client, &args.service_namespace, &args.service).await?,
    };
    let report_key = match &args.report_key_file {
        Some(path) => ReportKey::from_file(path)?,
        None => ReportKey::load(&client, &args.service_namespace, &args.report_key_secret).await?,
    };
    let metrics = Arc::new(Metrics::new()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut state = ServerState::new(client.clone(), metrics.clone(), report_key.clone());
    state.trust_loopback = !args.report_pages_token_only;
    let server = tokio::spawn(server::serve(listener, state, stopped(stop_rx.clone())));
    info!(listen = %args.listen, %report_address, sensor = %sensor.display(), "whittle operator starting");

    let signals = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    tokio::spawn(signals);

    let leadership = match args.leader_elect {
        false => {
            metrics.leader.set(1);
            None
        }
        true => {
            let identity = identity();
            let mut l = Leadership::campaign(
                client.clone(),
                &args.service_namespace,
                &args.lease_name,
                &identity,
            )
            .await?;
            l.report_to(metrics.leader.clone());
            info!(lease = %args.lease_name, %identity, "waiting to become the leader");
            tokio::select! {
                _ = l.acquired() => info!(%identity, "leading: reconciling workflows"),
                _ = stopped(stop_rx.clone()) => {
                    l.resign().await;
                    server.await??;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(l)
        }
    };
    let mut ctx = Context::new(
        client,
        metrics,
        format!("http://{report_address}"),
        sensor,
        report_key,
    );
    ctx.limits = args.budgets.apply(Limits {
        manifest_bytes: args.max_manifest_size,
        instrument_timeout: args.instrument_timeout,
        ..Limits::default()
    });
    ctx.vuln_dbs = vuln_dbs;
    let ctx = Arc::new(ctx);
    let lost = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let (stop, lost) = (stopped(stop_rx), lost.clone());
        let lease_lost = match &leadership {
            Some(l) => Either::Left(l.lost()),
            None => Either::Right(std::future::pending::<()>()),
        };
        async move {
            tokio::select! {
                _ = stop => {}
                _ = lease_lost => lost.store(true, Ordering::SeqCst),
            }
        }
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tokio::join!(
        controller::run(
            ctx.clone(),
            args.concurrency,
            &args.watch_namespaces,
            shutdown.clone()
        ),
        controller::policy::run(ctx, &args.watch_namespaces, shutdown),
    );
    if lost.load(Ordering::SeqCst) {
        // Another replica leads now; exiting lets this one campaign afresh when restarted,
        // with nothing of the old term in memory.
        return Err("lost the leader Lease; exiting so that a restart campaigns again".into());
    }
    if let Some(l) = leadership {
        l.resign().await;
    }
    server.await??;
    Ok(ExitCode::SUCCESS)
}

/// Who campaigns: the pod's name (the chart sets POD_NAME), else host and process id.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// SIGTERM (a pod being stopped) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `ClusterIP:port` of the operator's Service.
async fn service_address(client: &Client, namespace: &str, name: &str) -> Result<String, String> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = api.get(name).await.map_err(|e| {
        format!("cannot read Service {namespace}/{name} to find the report address (pass --report-address): {e}")
    })?;
    let spec = svc.spec.unwrap_or_default();
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| {
            format!("Service {namespace}/{name} has no ClusterIP (pass --report-address)")
        })?;
    let ports = spec.ports.unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())
        .map(|p| p.port)
        .ok_or_else(|| format!("Service {namespace}/{name} has no port (pass --report-address)"))?;
    Ok(format!("{ip}:{port}"))
}
