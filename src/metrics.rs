//! The operator's Prometheus metrics, in a registry of their own (nothing global), served on
//! `/metrics` by [`crate::server`]. The report server updates the report counters; the
//! controller the rest.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::{Phase, SeverityCounts};

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Why a report was refused; the `reason` label of `whittle_reports_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No valid report token, or a pod token the API server does not vouch for.
    Unauthorized,
    /// A real pod, but not one of the workflow's instrumented pods.
    Forbidden,
    /// The workflow no longer takes reports (past Collecting), or the name is taken.
    Conflict,
    /// Too many reports in flight, arriving too fast, or stored for the workflow.
    RateLimited,
    Malformed,
    UnknownWorkflow,
    TooLarge,
    UnsupportedEncoding,
    /// The body did not arrive in time.
    Timeout,
    /// The API server could not be read or written: not the sensor's fault.
    ApiUnavailable,
    /// A bug in whittle (a panicked task): not the sensor's fault either.
    Internal,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Unauthorized,
        RejectReason::Forbidden,
        RejectReason::Conflict,
        RejectReason::RateLimited,
        RejectReason::Malformed,
        RejectReason::UnknownWorkflow,
        RejectReason::TooLarge,
        RejectReason::UnsupportedEncoding,
        RejectReason::Timeout,
        RejectReason::ApiUnavailable,
        RejectReason::Internal,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Forbidden => "forbidden",
            RejectReason::Conflict => "conflict",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Malformed => "malformed",
            RejectReason::UnknownWorkflow => "unknown_workflow",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedEncoding => "unsupported_encoding",
            RejectReason::Timeout => "timeout",
            RejectReason::ApiUnavailable => "api_unavailable",
            RejectReason::Internal => "internal",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// `whittle_workflows{phase}`: workflows in each phase.
    pub workflows: IntGaugeVec,
    /// `whittle_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `whittle_reconcile_errors_total{reason}`.
    pub reconcile_errors: IntCounterVec,
    /// `whittle_reports_accepted_total`.
    pub reports_accepted: IntCounter,
    /// `whittle_reports_rejected_total{reason}`, reasons from [`RejectReason`].
    pub reports_rejected: IntCounterVec,
    /// `whittle_harden_duration_seconds`: building and pushing a hardened image.
    pub harden_duration: Histogram,
    /// `whittle_bytes_saved_total`: source minus hardened compressed bytes, summed.
    pub bytes_saved: IntCounter,
    /// `whittle_verifications_total{result}`: `passed` or `failed`.
    pub verifications: IntCounterVec,
    /// `whittle_rollbacks_total{reason}`: the original template restored after a failure.
    pub rollbacks: IntCounterVec,
    /// `whittle_runs_total{trigger,result}`: runs that ended, by what started them (`Initial`,
    /// `NewDigest`, `SpecChange`, `Vulnerabilities`) and how (`Succeeded`, `Failed`).
    pub runs: IntCounterVec,
    /// `whittle_vulnerabilities_kept{namespace,workflow,severity}`: the known vulnerabilities
    /// each workflow's current hardened image keeps (with `spec.vulnerabilities.db`).
    pub vulnerabilities_kept: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new_custom(Some("whittle".into()), None)?;
        let workflows = IntGaugeVec::new(
            Opts::new("workflows", "HardeningWorkflows in each phase"),
            &["phase"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Time one reconcile of a HardeningWorkflow took",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Reconciles that ended in an error",
            ),
            &["reason"],
        )?;
        let reports_accepted = IntCounter::new(
            "reports_accepted_total",
            "Sensor reports accepted and stored",
        )?;
        let reports_rejected = IntCounterVec::new(
            Opts::new("reports_rejected_total", "Sensor reports refused"),
            &["reason"],
        )?;
        let harden_duration = Histogram::with_opts(
            HistogramOpts::new(
                "harden_duration_seconds",
                "Time building and pushing a hardened image took",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )?;
        let bytes_saved = IntCounter::new(
            "bytes_saved_total",
            "Compressed bytes hardened images saved over their sources",
        )?;
        let verifications = IntCounterVec::new(
            Opts::new(
                "verifications_total",
                "Verifications of hardened images, by result",
            ),
            &["result"],
        )?;
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "rollbacks_total",
                "Deployments put back on their original image after a failure",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(workflows.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reports_accepted.clone()))?;
        registry.register(Box::new(reports_rejected.clone()))?;
        registry.register(Box::new(harden_duration.clone()))?;
        registry.register(Box::new(bytes_saved.clone()))?;
        registry.register(Box::new(verifications.clone()))?;
        let runs = IntCounterVec::new(
            Opts::new(
                "runs_total",
                "Runs of workflows that ended, by trigger and result",
            ),
            &["trigger", "result"],
        )?;
        registry.register(Box::new(rollbacks.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        let vulnerabilities_kept = IntGaugeVec::new(
            Opts::new(
                "vulnerabilities_kept",
                "Known vulnerabilities a workflow's current hardened image keeps, by severity",
            ),
            &["namespace", "workflow", "severity"],
        )?;
        registry.register(Box::new(vulnerabilities_kept.clone()))?;
        // Every series exists from the start, so a dashboard shows 0 rather than "no data".
        for phase in Phase::ALL {
            workflows.with_label_values(&[phase.as_str()]).set(0);
        }
        for reason in RejectReason::ALL {
            reports_rejected.with_label_values(&[reason.as_str()]);
        }
        for result in ["passed", "failed"] {
            verifications.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            workflows,
            reconcile_duration,
            reconcile_errors,
            reports_accepted,
            reports_rejected,
            harden_duration,
            bytes_saved,
            verifications,
            rollbacks,
            runs,
            vulnerabilities_kept,
        })
    }

    pub fn reject(&self, reason: RejectReason) {
        self.reports_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Sets the per-phase gauge from a count of workflows in each phase; phases not listed are
    /// set to zero.
    pub fn set_workflows(&self, counts: impl IntoIterator<Item = (Phase, i64)>) {
        let mut all: Vec<(Phase, i64)> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for (phase, n) in counts {
            if let Some(slot) = all.iter_mut().find(|(p, _)| *p == phase) {
                slot.1 += n;
            }
        }
        for (phase, n) in all {
            self.workflows.with_label_values(&[phase.as_str()]).set(n);
        }
    }

    /// The vulnerabilities the current hardened image of `namespace/workflow` keeps (`after`
    /// of its status); none known (no database, or no result yet) removes its series.
    pub fn set_kept(&self, namespace: &str, workflow: &str, after: Option<&SeverityCounts>) {
        let severities = |c: &SeverityCounts| {
            [
                ("critical", c.critical),
                ("high", c.high),
                ("medium", c.medium),
                ("low", c.low),
                ("unknown", c.unknown),
            ]
        };
        match after {
            Some(counts) => {
                for (severity, n) in severities(counts) {
                    let labels = [namespace, workflow, severity];
                    let value = i64::try_from(n).unwrap_or(i64::MAX);
                    self.vulnerabilities_kept
                        .with_label_values(&labels)
                        .set(value);
                }
            }
            None => self.forget(namespace, workflow),
        }
    }

    /// Removes the per-workflow series of a workflow that is gone.
    pub fn forget(&self, namespace: &str, workflow: &str) {
        for severity in ["critical", "high", "medium", "low", "unknown"] {
            let _ = self
                .vulnerabilities_kept
                .remove_label_values(&[namespace, workflow, severity]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric_with_its_prefix() {
        let m = Metrics::new().unwrap();
        m.reports_accepted.inc();
        m.reject(RejectReason::Unauthorized);
        m.reject(RejectReason::Unauthorized);
        m.set_workflows([(Phase::Observing, 2), (Phase::Succeeded, 1)]);
        m.bytes_saved.inc_by(51_500_000);
        let kept = SeverityCounts {
            total: 3,
            high: 2,
            low: 1,
            ..Default::default()
        };
        m.set_kept("shop", "web", Some(&kept));
        m.set_kept("shop", "gone", Some(&kept));
        m.forget("shop", "gone");
        let text = m.encode().unwrap();
        assert!(!text.contains("workflow=\"gone\""), "{text}");
        for line in [
            "whittle_reports_accepted_total 1",
            "whittle_reports_rejected_total{reason=\"unauthorized\"} 2",
            "whittle_reports_rejected_total{reason=\"too_large\"} 0",
            "whittle_workflows{phase=\"Observing\"} 2",
            "whittle_workflows{phase=\"Pending\"} 0",
            "whittle_bytes_saved_total 51500000",
            "whittle_verifications_total{result=\"passed\"} 0",
            "whittle_vulnerabilities_kept{namespace=\"shop\",severity=\"high\",workflow=\"web\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        for name in [
            "whittle_reconcile_duration_seconds_bucket",
            "whittle_harden_duration_seconds_count",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }

    #[test]
    fn two_instances_do_not_collide() {
        // Each has its own registry: tests and embedders can make as many as they like.
        let (a, b) = (Metrics::new().unwrap(), Metrics::new().unwrap());
        a.reports_accepted.inc();
        assert!(
            b.encode()
                .unwrap()
                .contains("whittle_reports_accepted_total 0")
        );
    }
}
