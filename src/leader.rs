//! Leader election on a `coordination.k8s.io` Lease, through `kube-lease-manager` (it takes
//! and renews the Lease with server-side apply, so two replicas can never both hold it). Only
//! the holder reconciles; every replica serves the report intake, whose state is in the
//! cluster anyway.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a Lease stays valid after its last renewal; a replica that dies leaves the
/// workflows unreconciled this long at most.
pub const LEASE_SECONDS: u64 = 15;
/// The holder renews this long before the Lease would expire.
const GRACE_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    #[source]
    source: LeaseManagerError,
}

/// A campaign for the Lease: running in the background until dropped or resigned.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Starts campaigning for Lease `namespace/name` (created if missing) as `identity`.
    pub async fn campaign(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> Result<Leadership, LeaderError> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_field_manager(format!("whittle-{identity}"))
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await
            .map_err(|source| LeaderError {
                namespace: namespace.into(),
                name: name.into(),
                source,
            })?;
        let (leading, task) = manager.watch().await;
        Ok(Leadership { leading, task })
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquired(&mut self) {
        let _ = self.leading.wait_for(|l| *l).await;
    }

    /// A future that completes when this replica no longer holds the Lease (or the campaign
    /// ended), for the controller's shutdown.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut leading = self.leading.clone();
        async move {
            let _ = leading.wait_for(|l| !*l).await;
        }
    }

    /// Keeps `gauge` (`whittle_leader`) at 1 while this replica holds the Lease and at 0
    /// otherwise, so that an alert sees a cluster where no replica leads.
    pub fn report_to(&self, gauge: IntGauge) {
        tokio::spawn(track(self.leading.clone(), gauge));
    }

    /// Gives the Lease up, so another replica takes over at once rather than after it expires.
    pub async fn resign(self) {
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

async fn track(mut leading: watch::Receiver<bool>, gauge: IntGauge) {
    loop {
        gauge.set(i64::from(*leading.borrow_and_update()));
        if leading.changed().await.is_err() {
            // The campaign ended: this replica no longer leads.
            gauge.set(0);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settles(gauge: &IntGauge, want: i64) {
        for _ in 0..100 {
            if gauge.get() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("whittle_leader is {}, not {want}", gauge.get());
    }

    #[tokio::test]
    async fn the_gauge_follows_the_lease() {
        let gauge = IntGauge::new("leader", "test").unwrap();
        gauge.set(7);
        let (tx, rx) = watch::channel(false);
        tokio::spawn(track(rx, gauge.clone()));
        settles(&gauge, 0).await;
        tx.send(true).unwrap();
        settles(&gauge, 1).await;
        tx.send(false).unwrap();
        settles(&gauge, 0).await;
        tx.send(true).unwrap();
        settles(&gauge, 1).await;
        drop(tx);
        settles(&gauge, 0).await;
    }
}
