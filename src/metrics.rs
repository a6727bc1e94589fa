//! The operator's Prometheus metrics, in a registry of their own (nothing global), served on
//! `/metrics` by [`crate::server`]. The report server updates the report counters; the
//! controller the rest.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::api::{HardeningWorkflowStatus, Phase, SeverityCounts};

/// The `severity` label values of the per-workflow vulnerability gauges.
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

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
    /// `whittle_saved_bytes_total`: source minus hardened compressed bytes, summed.
    pub saved_bytes: IntCounter,
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
    /// `whittle_vulnerabilities_removed{namespace,workflow,severity}`: the known vulnerabilities
    /// of the source that its hardened image no longer has (`before` minus `after`).
    pub vulnerabilities_removed: IntGaugeVec,
    /// `whittle_source_image_bytes{namespace,workflow}`: compressed size of the source image.
    pub source_image_bytes: IntGaugeVec,
    /// `whittle_hardened_image_bytes{namespace,workflow}`: compressed size of its hardened
    /// image.
    pub hardened_image_bytes: IntGaugeVec,
    /// `whittle_build_info{version}`: always 1; the labels say which build this is.
    pub build_info: IntGaugeVec,
    /// `whittle_leader`: 1 while this replica holds the leader Lease (or elects none) and
    /// reconciles, 0 while it waits.
    pub leader: IntGauge,
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
        let saved_bytes = IntCounter::new(
            "saved_bytes_total",
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
        registry.register(Box::new(saved_bytes.clone()))?;
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
        let vulnerabilities_removed = IntGaugeVec::new(
            Opts::new(
                "vulnerabilities_removed",
                "Known vulnerabilities of a workflow's source that its hardened image no longer has, by severity",
            ),
            &["namespace", "workflow", "severity"],
        )?;
        registry.register(Box::new(vulnerabilities_removed.clone()))?;
        let source_image_bytes = IntGaugeVec::new(
            Opts::new(
                "source_image_bytes",
                "Compressed size of the layers of a workflow's source image",
            ),
            &["namespace", "workflow"],
        )?;
        registry.register(Box::new(source_image_bytes.clone()))?;
        let hardened_image_bytes = IntGaugeVec::new(
            Opts::new(
                "hardened_image_bytes",
                "Compressed size of the layer of a workflow's hardened image",
            ),
            &["namespace", "workflow"],
        )?;
        registry.register(Box::new(hardened_image_bytes.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Always 1; the labels say which whittle this is",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[crate::VERSION]).set(1);
        let leader = IntGauge::new(
            "leader",
            "1 while this replica reconciles (holds the leader Lease, or elects none), 0 while it waits",
        )?;
        registry.register(Box::new(leader.clone()))?;
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
            saved_bytes,
            verifications,
            rollbacks,
            runs,
            vulnerabilities_kept,
            vulnerabilities_removed,
            source_image_bytes,
            hardened_image_bytes,
            build_info,
            leader,
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

    /// The per-workflow gauges of `namespace/workflow` from its status: the sizes of its source
    /// and hardened images and the vulnerabilities removed and kept. A run in progress has none
    /// of its own yet, so the last good result (`previous`) speaks for the workflow meanwhile;
    /// what is known of neither removes the series.
    pub fn set_workflow(&self, namespace: &str, workflow: &str, status: &HardeningWorkflowStatus) {
        let good = status.previous.as_deref();
        let result = (status.result.as_ref()).or(good.and_then(|g| g.result.as_ref()));
        let vulnerabilities = match &status.result {
            Some(_) => status.vulnerabilities.as_ref(),
            None => good.and_then(|g| g.vulnerabilities.as_ref()),
        };
        let pair = [namespace, workflow];
        match result {
            Some(r) => {
                self.source_image_bytes
                    .with_label_values(&pair)
                    .set(gauge(r.source_bytes));
                self.hardened_image_bytes
                    .with_label_values(&pair)
                    .set(gauge(r.hardened_bytes));
            }
            None => {
                let _ = self.source_image_bytes.remove_label_values(&pair);
                let _ = self.hardened_image_bytes.remove_label_values(&pair);
            }
        }
        match vulnerabilities {
            Some(v) => {
                let (before, after) = (severities(&v.before), severities(&v.after));
                for ((severity, was), (_, is)) in before.into_iter().zip(after) {
                    let labels = [namespace, workflow, severity];
                    self.vulnerabilities_kept
                        .with_label_values(&labels)
                        .set(gauge(is));
                    self.vulnerabilities_removed
                        .with_label_values(&labels)
                        .set(gauge(was.saturating_sub(is)));
                }
            }
            None => self.forget_vulnerabilities(namespace, workflow),
        }
    }

    /// Removes the per-workflow series of a workflow that is gone.
    pub fn forget(&self, namespace: &str, workflow: &str) {
        self.forget_vulnerabilities(namespace, workflow);
        let pair = [namespace, workflow];
        let _ = self.source_image_bytes.remove_label_values(&pair);
        let _ = self.hardened_image_bytes.remove_label_values(&pair);
    }

    fn forget_vulnerabilities(&self, namespace: &str, workflow: &str) {
        for severity in SEVERITIES {
            let labels = [namespace, workflow, severity];
            let _ = self.vulnerabilities_kept.remove_label_values(&labels);
            let _ = self.vulnerabilities_removed.remove_label_values(&labels);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn severities(c: &SeverityCounts) -> [(&'static str, u64); 5] {
    [
        ("critical", c.critical),
        ("high", c.high),
        ("medium", c.medium),
        ("low", c.low),
        ("unknown", c.unknown),
    ]
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HardenResult, Trigger, VulnerabilitiesStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn hardened(before: SeverityCounts, after: SeverityCounts) -> HardeningWorkflowStatus {
        HardeningWorkflowStatus {
            result: Some(HardenResult {
                source_bytes: 55_700_000,
                hardened_bytes: 4_200_000,
                ..Default::default()
            }),
            vulnerabilities: Some(VulnerabilitiesStatus {
                before,
                after,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exposes_every_metric_with_its_prefix() {
        let m = Metrics::new().unwrap();
        m.reports_accepted.inc();
        m.reject(RejectReason::Unauthorized);
        m.reject(RejectReason::Unauthorized);
        m.set_workflows([(Phase::Observing, 2), (Phase::Succeeded, 1)]);
        m.saved_bytes.inc_by(51_500_000);
        let before = SeverityCounts {
            total: 10,
            critical: 1,
            high: 5,
            low: 4,
            ..Default::default()
        };
        let kept = SeverityCounts {
            total: 3,
            high: 2,
            low: 1,
            ..Default::default()
        };
        let status = hardened(before, kept);
        m.set_workflow("shop", "web", &status);
        m.set_workflow("shop", "gone", &status);
        m.forget("shop", "gone");
        let text = m.encode().unwrap();
        assert!(!text.contains("workflow=\"gone\""), "{text}");
        let version = format!("whittle_build_info{{version=\"{}\"}} 1", crate::VERSION);
        for line in [
            "whittle_reports_accepted_total 1",
            "whittle_reports_rejected_total{reason=\"unauthorized\"} 2",
            "whittle_reports_rejected_total{reason=\"too_large\"} 0",
            "whittle_workflows{phase=\"Observing\"} 2",
            "whittle_workflows{phase=\"Pending\"} 0",
            "whittle_saved_bytes_total 51500000",
            "whittle_verifications_total{result=\"passed\"} 0",
            "whittle_vulnerabilities_kept{namespace=\"shop\",severity=\"high\",workflow=\"web\"} 2",
            "whittle_vulnerabilities_removed{namespace=\"shop\",severity=\"high\",workflow=\"web\"} 3",
            "whittle_vulnerabilities_removed{namespace=\"shop\",severity=\"critical\",workflow=\"web\"} 1",
            "whittle_vulnerabilities_removed{namespace=\"shop\",severity=\"medium\",workflow=\"web\"} 0",
            "whittle_source_image_bytes{namespace=\"shop\",workflow=\"web\"} 55700000",
            "whittle_hardened_image_bytes{namespace=\"shop\",workflow=\"web\"} 4200000",
            version.as_str(),
            "whittle_leader 0",
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
    fn a_run_in_progress_shows_the_last_good_result_and_nothing_known_removes_the_series() {
        let m = Metrics::new().unwrap();
        let kept = SeverityCounts {
            high: 2,
            ..Default::default()
        };
        let mut status = hardened(kept.clone(), kept);
        status.start_run(
            Trigger::NewDigest,
            "registry.example/web:2".into(),
            None,
            Some(2),
            &Time(Timestamp::now()),
        );
        m.set_workflow("shop", "web", &status);
        let text = m.encode().unwrap();
        for line in [
            "whittle_hardened_image_bytes{namespace=\"shop\",workflow=\"web\"} 4200000",
            "whittle_vulnerabilities_kept{namespace=\"shop\",severity=\"high\",workflow=\"web\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        m.set_workflow("shop", "web", &HardeningWorkflowStatus::default());
        let text = m.encode().unwrap();
        assert!(!text.contains("workflow=\"web\""), "{text}");
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
