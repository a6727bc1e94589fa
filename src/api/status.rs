//! `HardeningWorkflow.status`: where the workflow is, what it made, and why it stopped. The
//! helpers here are pure, so the controller's decisions can be tested without a cluster.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the workflow is, what it made, and why it stopped. Written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardeningWorkflowStatus {
    /// The stage the workflow is in, e.g. `Observing`. `Pending` while it waits for its target
    /// (the `Ready` condition and `message` say what for); unset until the operator first saw
    /// the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The metadata.generation this status describes, e.g. `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The conditions whittle sets, one per type: `Ready` (True once Succeeded; until then
    /// False, its reason the current phase, what Pending waits for, or why the workflow
    /// failed), `Reconciling` (True while a run is in progress or waiting, absent once it
    /// ended) and `Stalled` (True once it Failed, absent otherwise) as kstatus, `kubectl wait`
    /// and Flux read them, `Instrumented`, `Observed`, `Hardened` and `Verified`, e.g.
    /// `{type: Ready, status: "False", reason: TargetNotFound, message: ...}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The image that was hardened, pinned to its digest, e.g.
    /// `registry.example.com/shop/web@sha256:4842…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// The instrumented image the observed pods ran, pinned to its digest, e.g.
    /// `registry.example.com/shop/web@sha256:e727…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrumented_image: Option<String>,
    /// The hardened image, pinned to its digest, e.g.
    /// `registry.example.com/shop/web@sha256:cc66…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardened_image: Option<String>,
    /// Each container the workflow hardens, when `spec.target.containers` names them, in
    /// the order named (the first is also in `sourceImage`, `instrumentedImage`,
    /// `hardenedImage` and `result`), e.g. `[{name: web, sourceImage: …, hardenedImage: …},
    /// {name: log-tailer, …}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub containers: Vec<ContainerResult>,
    /// The sensor reports: which pods were instrumented and which have reported, e.g.
    /// `{expected: [web-7c9d4-abcde], received: 1, pods: [web-7c9d4-abcde]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<ReportsStatus>,
    /// The operator's seal over the source image, the hardened image and the report materials
    /// its harden produced (an HMAC under the operator's key). Signing checks it, so a status
    /// edited by hand is never signed; 64 hex digits, e.g. `3c1f9a…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// What hardening kept and removed, e.g. `{sourceBytes: 55700000, hardenedBytes: 4200000,
    /// reductionPercent: 92, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<HardenResult>,
    /// The verdict of running the hardened image: what passed, or what failed and where, e.g.
    /// `{result: Failed, reason: ReadinessFailed, pod: web-6f5b8-xyz12, container: web, message:
    /// ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Known vulnerabilities before and after hardening (with `spec.vulnerabilities.db`), e.g.
    /// `{before: {total: 41, ...}, after: {total: 9, ...}, removed: 32}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnerabilitiesStatus>,
    /// The hardened image's SBOM as an OCI referrer (with `spec.harden.sbom`), e.g.
    /// `registry.example.com/shop/web@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    /// The hardened image's cosign signature (with `spec.sign.keySecret`), e.g.
    /// `registry.example.com/shop/web:sha256-….sig@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Its signed SLSA provenance, e.g. `registry.example.com/shop/web:sha256-….att@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// What is happening or what went wrong, for people, e.g. `observing 1 pod(s): 10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current run started: the first when the workflow left Pending, a continuous
    /// one when its trigger came, e.g. `2026-11-23T10:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current phase began (timeouts count from here), e.g. `2026-11-23T10:00:05Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// When the workflow reached Succeeded or Failed, e.g. `2026-11-23T10:25:40Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The source as the workload named it before whittle changed anything (a tag, as in
    /// `spec.image` or the container), which continuous hardening resolves again, e.g.
    /// `registry.example.com/shop/web:1.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_reference: Option<String>,
    /// The digest the registry answers for `sourceReference` (the index's, for a
    /// multi-platform image) when `sourceImage` was resolved, e.g. `sha256:4842…`; a check
    /// compares it with one manifest HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// When continuous hardening last asked the registry for a new digest, e.g.
    /// `2026-11-23T11:25:40Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// Why the current (or last) run started, e.g. `NewDigest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The metadata.generation the current (or last) run started with, e.g. `1`: a
    /// continuous workflow whose spec changed since starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_generation: Option<i64>,
    /// True while a continuous run observes the workload again: its image, hardened from the
    /// stored profile, failed verification, so the new source is observed once before the
    /// run fails for good, e.g. `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observing_again: bool,
    /// The result of the last good run while a continuous run is under way: put back if the
    /// run fails, so that a failed refresh never replaces a good result, e.g.
    /// `{hardenedImage: registry.example.com/shop/web@sha256:cc66…, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<GoodResult>>,
    /// The last runs, newest first (at most 10), e.g. `[{trigger: NewDigest, verdict:
    /// Succeeded, sourceImage: …, hardenedImage: …, startedAt: …, completedAt: …}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Run>,
}

/// One container of the target and what became of its image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResult {
    /// The container's name, e.g. `log-tailer`.
    pub name: String,
    /// Its image before whittle, pinned to its digest, e.g.
    /// `registry.example.com/shop/tailer@sha256:4842…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// The instrumented image it ran while observed, e.g.
    /// `registry.example.com/shop/tailer@sha256:e727…` (shared with the containers of the same
    /// source image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrumented_image: Option<String>,
    /// Its hardened image, e.g. `registry.example.com/shop/tailer@sha256:cc66…`: one per source
    /// image, built from the reports of every container that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardened_image: Option<String>,
    /// What hardening its image kept and removed, e.g. `{sourceBytes: 1200000, hardenedBytes:
    /// 300000, reductionPercent: 75, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<HardenResult>,
}

/// How many runs `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// Why a run started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    Initial,
    NewDigest,
    SpecChange,
    Vulnerabilities,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Initial => "Initial",
            Trigger::NewDigest => "NewDigest",
            Trigger::SpecChange => "SpecChange",
            Trigger::Vulnerabilities => "Vulnerabilities",
        }
    }
}

/// One run of the workflow, as `status.history` records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// What started it: `Initial`, `NewDigest`, `SpecChange`, or `Vulnerabilities` (a new
    /// digest while the hardened image kept a fixable vulnerability that asked for a rebuild),
    /// e.g. `NewDigest`.
    pub trigger: Trigger,
    /// How it ended: `Succeeded` or `Failed`, e.g. `Succeeded`.
    pub verdict: Phase,
    /// The reason the run failed (a `Ready` reason), e.g. `ReadinessFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The source it hardened, pinned, e.g. `registry.example.com/shop/web@sha256:4842…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// The hardened image it made, pinned, e.g. `registry.example.com/shop/web@sha256:cc66…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardened_image: Option<String>,
    /// Known vulnerabilities in the source (with `spec.vulnerabilities.db`), e.g. `41`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities_before: Option<u64>,
    /// Known vulnerabilities in the hardened image (with `spec.vulnerabilities.db`), e.g. `9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities_after: Option<u64>,
    /// How long the run took, in seconds, e.g. `250`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Whether the run observed the workload (the first run, and a continuous one whose
    /// profile-only image failed verification) rather than hardening from the stored profile
    /// alone, e.g. `false`.
    #[serde(default)]
    pub observed: bool,
    /// When it started, e.g. `2026-11-23T11:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended, e.g. `2026-11-23T11:04:10Z`.
    pub completed_at: Time,
}

/// What a good run produced: the status fields a failed continuous run puts back, each as the
/// field of the same name in `status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoodResult {
    /// As `status.sourceImage`, e.g. `registry.example.com/shop/web@sha256:4842…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// As `status.sourceDigest`, e.g. `sha256:4842…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// As `status.hardenedImage`, e.g. `registry.example.com/shop/web@sha256:cc66…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardened_image: Option<String>,
    /// As `status.seal`, e.g. `3c1f9a…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// As `status.result`, e.g. `{sourceBytes: 55700000, hardenedBytes: 4200000, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<HardenResult>,
    /// As `status.verification`, e.g. `{result: Passed, reason: Passed, message: ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// As `status.vulnerabilities`, e.g. `{before: {total: 41, ...}, after: {total: 9, ...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnerabilitiesStatus>,
    /// As `status.sbom`, e.g. `registry.example.com/shop/web@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    /// As `status.signature`, e.g. `registry.example.com/shop/web:sha256-….sig@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// As `status.provenance`, e.g. `registry.example.com/shop/web:sha256-….att@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// When that run ended, e.g. `2026-11-23T10:25:40Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Instrumenting,
    Observing,
    Collecting,
    Hardening,
    Verifying,
    Succeeded,
    Failed,
}

impl Phase {
    /// In pipeline order (for metrics: one gauge per phase, zeros included).
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Instrumenting,
        Phase::Observing,
        Phase::Collecting,
        Phase::Hardening,
        Phase::Verifying,
        Phase::Succeeded,
        Phase::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Instrumenting => "Instrumenting",
            Phase::Observing => "Observing",
            Phase::Collecting => "Collecting",
            Phase::Hardening => "Hardening",
            Phase::Verifying => "Verifying",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded and Failed: nothing more happens.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The condition types whittle sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The workflow finished successfully (False with the reason while waiting or on failure).
    Ready,
    /// kstatus's "in progress": present (True) only while a run is under way or waiting.
    Reconciling,
    /// kstatus's "failed, needs a person": present (True) only once the workflow Failed.
    Stalled,
    /// Continuous hardening: True when the hardened image is built from the source's current
    /// digest; False with the reason when the last refresh failed.
    UpToDate,
    Instrumented,
    Observed,
    Hardened,
    Verified,
}

impl ConditionType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::UpToDate => "UpToDate",
            ConditionType::Instrumented => "Instrumented",
            ConditionType::Observed => "Observed",
            ConditionType::Hardened => "Hardened",
            ConditionType::Verified => "Verified",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportsStatus {
    /// The instrumented pods whose reports are awaited, e.g. `[web-7c9d4-abcde]`; pods that
    /// join while observing are added.
    #[serde(default)]
    pub expected: Vec<String>,
    /// How many pods have reported, e.g. `1`. A pod that is not in `expected` counts too (a
    /// replacement the ReplicaSet made, say).
    #[serde(default)]
    pub received: u32,
    /// The pods that have reported, e.g. `[web-7c9d4-abcde]`.
    #[serde(default)]
    pub pods: Vec<String>,
    /// The monitors the hardened reports were recorded with, e.g. `[seccomp]`: what
    /// `sensorMode: auto` chose on the node. Set when hardening starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<String>,
    /// The reports harden used, as the provenance names them, e.g. `[{name:
    /// report:shop/web-7c9d4-abcde/web, sha256: 9f86…}]`. Set when hardening starts; reports
    /// are refused from then on, so these are exactly what the image was built from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materials: Vec<ReportMaterial>,
}

/// A report as the provenance names it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ReportMaterial {
    /// `report:<namespace>/<pod>/<container>`, e.g. `report:shop/web-7c9d4-abcde/web`.
    pub name: String,
    /// The sha256 of the report's JSON, hex, e.g. `9f86d081884c7d65…`.
    pub sha256: String,
}

impl ReportsStatus {
    /// The status for `expected` pods of which `reported` have sent a report. Reports from pods
    /// not in `expected` (e.g. a replacement pod the ReplicaSet made) count too: what they saw
    /// is as valid as any other instrumented pod's.
    pub fn new(expected: &BTreeSet<String>, reported: &BTreeSet<String>) -> ReportsStatus {
        ReportsStatus {
            expected: expected.iter().cloned().collect(),
            received: u32::try_from(reported.len()).unwrap_or(u32::MAX),
            pods: reported.iter().cloned().collect(),
            modes: Vec::new(),
            materials: Vec::new(),
        }
    }

    /// Expected pods that have not reported, sorted: what a "too few reports" message names.
    pub fn silent(&self) -> Vec<&str> {
        let reported: BTreeSet<&str> = self.pods.iter().map(String::as_str).collect();
        let mut silent: Vec<&str> = self
            .expected
            .iter()
            .map(String::as_str)
            .filter(|p| !reported.contains(p))
            .collect();
        silent.sort_unstable();
        silent
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerificationResult {
    Passed,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Passed or Failed, e.g. `Failed`.
    pub result: VerificationResult,
    /// In one word, e.g. `CrashLooping`: Passed, RolloutFailed, CrashLooping, ReadinessFailed,
    /// ExerciseFailed, Timeout.
    pub reason: String,
    /// What was checked or what went wrong, with the failing container's last log lines, e.g.
    /// `the hardened pods rolled out and passed their readiness probes`.
    pub message: String,
    /// The pod that failed, if one did, e.g. `web-6f5b8-xyz12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The container that failed, if one did, e.g. `web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilitiesStatus {
    /// In the source image, by severity, e.g. `{total: 41, critical: 1, high: 5, ...}`.
    pub before: SeverityCounts,
    /// In the hardened image (their package still has files there), e.g. `{total: 9, ...}`.
    pub after: SeverityCounts,
    /// How many hardening removed (no file of their package is left), e.g. `32`.
    pub removed: u64,
    /// Of those the hardened image keeps (`after`), the ones whose record names a fixed
    /// version, by severity: a rebuild of the source with the fix removes them, e.g. `{total:
    /// 3, critical: 1, high: 2, ...}`.
    #[serde(default)]
    pub fixable: SeverityCounts,
    /// What the hardened image keeps, most severe first and, within a severity, those with a
    /// fix first (at most 20; `after` counts them all), e.g. `[{id: DSA-5514-1, package:
    /// libc6, version: 2.36-9+deb12u1, fixedVersion: 2.36-9+deb12u3, severity: High}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptVulnerability>,
    /// When the hardened image's packages were last matched against the database: by the
    /// harden, then again by each continuous check that finds the image or the database
    /// changed, e.g. `2026-11-23T11:25:40Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_at: Option<Time>,
    /// The hardened image whose packages were matched, e.g.
    /// `registry.example.com/shop/web@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_image: Option<String>,
    /// The database they were matched against: its name and a digest of its records, e.g.
    /// `debian@5d41402abc4b2a76`; a check whose database and image are those matched already
    /// does not read the image again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_database: Option<String>,
}

/// One vulnerability the hardened image keeps (a file of its package is still there).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptVulnerability {
    /// The record's id in the database, e.g. `DSA-5514-1`.
    pub id: String,
    /// The installed (binary) package, e.g. `libc6`.
    pub package: String,
    /// Its installed version, e.g. `2.36-9+deb12u1`.
    pub version: String,
    /// The version of its source package that fixes it, when the record names one, e.g.
    /// `2.36-9+deb12u3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// How serious it is, e.g. `High`.
    pub severity: VulnerabilitySeverity,
}

/// A severity as the status names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VulnerabilitySeverity {
    Critical,
    High,
    Medium,
    Low,
    /// The record rates no severity.
    Unknown,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeverityCounts {
    /// All of them, e.g. `41`.
    pub total: u64,
    /// Critical (CVSS 9.0 and above, or the advisory's own rating), e.g. `1`.
    pub critical: u64,
    /// High (CVSS 7.0 to 8.9, or Debian urgency `high`), e.g. `5`.
    pub high: u64,
    /// Medium (CVSS 4.0 to 6.9, or Debian urgency `medium`), e.g. `20`.
    pub medium: u64,
    /// Low (CVSS below 4.0, or Debian urgency `low` or `unimportant`), e.g. `10`.
    pub low: u64,
    /// Records that rate no severity, e.g. `5`.
    pub unknown: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HardenResult {
    /// Compressed size of the source image's layers, in bytes, e.g. `55700000`.
    pub source_bytes: u64,
    /// Compressed size of the hardened image's layer, in bytes, e.g. `4200000`.
    pub hardened_bytes: u64,
    /// 100 × (1 − hardened / source), rounded, e.g. `92`; negative if the image grew.
    pub reduction_percent: i64,
    /// Files (every path but directories) of the source kept in the hardened image, e.g. `47`.
    pub files_kept: u64,
    /// Files (every path but directories) of the source left out, e.g. `6256`.
    pub files_removed: u64,
    /// Shells left out (`sh`, `bash`, `busybox`, … in a `bin` directory), e.g. `3`.
    pub removed_shells: u64,
    /// Package managers left out (`apt`, `dpkg`, `apk`, `pip`, … in a `bin` directory), e.g.
    /// `5`.
    pub removed_package_managers: u64,
    /// Setuid or setgid files left out, e.g. `11`.
    pub removed_setuid: u64,
    /// What each of `spec.harden.packs` added beyond what the reports and analysis kept, e.g.
    /// `[{name: tzdata, found: 1319, files: 1317, bytes: 1314856}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackResult>,
}

/// What one include pack cost.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackResult {
    /// The pack, e.g. `ca-certificates`.
    pub name: String,
    /// Files (every path but directories) of the source the pack names, e.g. `290`; `0` when
    /// the image has none of them and the pack added nothing.
    pub found: u64,
    /// Files kept only because of the pack (with the libraries and link targets they need),
    /// e.g. `288`.
    pub files: u64,
    /// Their uncompressed size in bytes, e.g. `421000`.
    pub bytes: u64,
}

/// `100 × (1 − hardened / source)`, rounded to the nearest integer; 0 for an empty source.
pub fn reduction_percent(source: u64, hardened: u64) -> i64 {
    if source == 0 {
        return 0;
    }
    let ratio = hardened as f64 / source as f64;
    ((1.0 - ratio) * 100.0).round() as i64
}

impl HardeningWorkflowStatus {
    /// Every instrumented image of the run: the first container's, and each listed
    /// container's.
    pub fn instrumented_images(&self) -> BTreeSet<&str> {
        self.instrumented_image
            .iter()
            .map(String::as_str)
            .chain(
                self.containers
                    .iter()
                    .filter_map(|c| c.instrumented_image.as_deref()),
            )
            .collect()
    }

    /// The phase, Pending when none was recorded yet.
    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or_default()
    }

    /// Moves to `phase`: records when it began, when the workflow started (first phase after
    /// Pending) and when it completed (a terminal phase). Returns false, changing nothing, when
    /// the workflow is already in `phase`.
    pub fn set_phase(&mut self, phase: Phase, now: &Time) -> bool {
        if self.phase == Some(phase) {
            return false;
        }
        self.phase = Some(phase);
        self.phase_started_at = Some(now.clone());
        if phase != Phase::Pending && self.started_at.is_none() {
            self.started_at = Some(now.clone());
        }
        if phase.is_terminal() {
            self.completed_at = Some(now.clone());
        }
        true
    }

    /// The result of the current run, as a failed later run would need it back.
    pub fn good_result(&self) -> GoodResult {
        GoodResult {
            source_image: self.source_image.clone(),
            source_digest: self.source_digest.clone(),
            hardened_image: self.hardened_image.clone(),
            seal: self.seal.clone(),
            result: self.result.clone(),
            verification: self.verification.clone(),
            vulnerabilities: self.vulnerabilities.clone(),
            sbom: self.sbom.clone(),
            signature: self.signature.clone(),
            provenance: self.provenance.clone(),
            completed_at: self.completed_at.clone(),
        }
    }

    /// A new run of a Succeeded workflow from `source_image` (its registry digest
    /// `source_digest`): the good result is kept aside, the run's own fields start empty.
    pub fn start_run(
        &mut self,
        trigger: Trigger,
        source_image: String,
        source_digest: Option<String>,
        generation: Option<i64>,
        now: &Time,
    ) {
        self.previous = Some(Box::new(self.good_result()));
        self.started_at = Some(now.clone());
        self.completed_at = None;
        self.trigger = Some(trigger);
        self.run_generation = generation;
        self.source_image = Some(source_image);
        self.source_digest = source_digest;
        for field in [&mut self.hardened_image, &mut self.seal, &mut self.sbom] {
            *field = None;
        }
        self.signature = None;
        self.provenance = None;
        self.result = None;
        self.verification = None;
        self.vulnerabilities = None;
    }

    /// The run that failed gives way to the good result it was to replace.
    pub fn restore_previous(&mut self) -> bool {
        let Some(good) = self.previous.take() else {
            return false;
        };
        let good = *good;
        self.source_image = good.source_image;
        self.source_digest = good.source_digest;
        self.hardened_image = good.hardened_image;
        self.seal = good.seal;
        self.result = good.result;
        self.verification = good.verification;
        self.vulnerabilities = good.vulnerabilities;
        self.sbom = good.sbom;
        self.signature = good.signature;
        self.provenance = good.provenance;
        true
    }

    /// Records the run that just ended (newest first, at most [`HISTORY_LIMIT`]).
    pub fn record_run(&mut self, verdict: Phase, reason: Option<&str>, now: &Time) {
        let run = Run {
            trigger: self.trigger.unwrap_or(Trigger::Initial),
            verdict,
            reason: reason.map(str::to_string),
            source_image: self.source_image.clone(),
            hardened_image: self.hardened_image.clone(),
            vulnerabilities_before: self.vulnerabilities.as_ref().map(|v| v.before.total),
            vulnerabilities_after: self.vulnerabilities.as_ref().map(|v| v.after.total),
            duration_seconds: self
                .started_at
                .as_ref()
                .map(|start| now.0.as_second() - start.0.as_second()),
            observed: self.trigger.is_none_or(|t| t == Trigger::Initial) || self.observing_again,
            started_at: self.started_at.clone(),
            completed_at: now.clone(),
        };
        self.history.insert(0, run);
        self.history.truncate(HISTORY_LIMIT);
        self.observing_again = false;
    }

    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }

    /// True when the condition is present with status True.
    pub fn is_true(&self, type_: ConditionType) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// `Reconciling` and `Stalled` from the phase and `Ready`, as kstatus expects them: a run
    /// in progress (or waiting in Pending) is Reconciling with Ready's reason and message, a
    /// Failed one is Stalled with its failure's, and a finished one has neither. A wait that
    /// only a person can end (`waits_on_a_person`) is Stalled too. True when anything changed.
    pub fn set_kstatus_conditions(
        &mut self,
        now: &Time,
        generation: Option<i64>,
        waits_on_a_person: bool,
    ) -> bool {
        let (reason, message) = match self.condition(ConditionType::Ready) {
            Some(ready) => (ready.reason.clone(), ready.message.clone()),
            None => (self.phase().as_str().to_string(), String::new()),
        };
        let (reconciling, stalled) = match self.phase() {
            Phase::Succeeded => (false, false),
            Phase::Failed => (false, true),
            Phase::Pending if waits_on_a_person => (false, true),
            _ => (true, false),
        };
        let mut changed = false;
        for (type_, present) in [
            (ConditionType::Reconciling, reconciling),
            (ConditionType::Stalled, stalled),
        ] {
            changed |= if present {
                let status = ConditionStatus::True;
                self.set_condition(type_, status, &reason, &message, now, generation)
            } else {
                self.remove_condition(type_)
            };
        }
        changed
    }

    /// Removes the condition of `type_`; true if there was one.
    pub fn remove_condition(&mut self, type_: ConditionType) -> bool {
        let before = self.conditions.len();
        self.conditions.retain(|c| c.type_ != type_.as_str());
        self.conditions.len() != before
    }

    /// Sets a condition. `lastTransitionTime` moves to `now` only when the status changes (or
    /// the condition is new), as the Kubernetes API conventions ask; reason, message and
    /// observedGeneration always take the new values. Returns whether anything changed.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: &Time,
        generation: Option<i64>,
    ) -> bool {
        let status = status.as_str();
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == type_.as_str())
        {
            Some(c) => {
                let before = c.clone();
                if c.status != status {
                    c.status = status.to_string();
                    c.last_transition_time = now.clone();
                }
                c.reason = reason.to_string();
                c.message = message.to_string();
                c.observed_generation = generation;
                *c != before
            }
            None => {
                self.conditions.push(Condition {
                    type_: type_.as_str().to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                    message: message.to_string(),
                    last_transition_time: now.clone(),
                    observed_generation: generation,
                });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn a_condition_transitions_only_when_its_status_changes() {
        let mut s = HardeningWorkflowStatus::default();
        let t = ConditionType::Observed;
        assert!(s.set_condition(
            t,
            ConditionStatus::False,
            "Waiting",
            "0/2",
            &at(10),
            Some(1)
        ));
        assert_eq!(s.condition(t).unwrap().last_transition_time, at(10));

        // Same status, new message: the transition time stays, the message moves.
        assert!(s.set_condition(
            t,
            ConditionStatus::False,
            "Waiting",
            "1/2",
            &at(20),
            Some(1)
        ));
        let c = s.condition(t).unwrap();
        assert_eq!(
            (c.last_transition_time.clone(), c.message.as_str()),
            (at(10), "1/2")
        );

        // Nothing new: nothing changes, not even the time.
        assert!(!s.set_condition(
            t,
            ConditionStatus::False,
            "Waiting",
            "1/2",
            &at(30),
            Some(1)
        ));
        assert_eq!(s.condition(t).unwrap().last_transition_time, at(10));

        assert!(s.set_condition(
            t,
            ConditionStatus::True,
            "Reported",
            "2/2",
            &at(40),
            Some(2)
        ));
        let c = s.condition(t).unwrap();
        assert_eq!(c.last_transition_time, at(40));
        assert_eq!(c.observed_generation, Some(2));
        assert!(s.is_true(t));
        assert!(!s.is_true(ConditionType::Hardened));

        s.set_condition(
            ConditionType::Ready,
            false.into(),
            "Observing",
            "",
            &at(50),
            None,
        );
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Observed", "Ready"]);
    }

    #[test]
    fn kstatus_sees_a_run_in_progress_as_reconciling_a_failure_as_stalled_a_success_as_neither() {
        let kinds = |s: &HardeningWorkflowStatus| -> Vec<(String, String, String)> {
            let mut v: Vec<_> = s
                .conditions
                .iter()
                .filter(|c| c.type_ == "Reconciling" || c.type_ == "Stalled")
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect();
            v.sort();
            v
        };
        let row = |t: &str, r: &str| (t.to_string(), "True".to_string(), r.to_string());
        let mut s = HardeningWorkflowStatus::default();
        assert!(
            s.set_kstatus_conditions(&at(1), Some(1), false),
            "a new workflow is in progress"
        );
        assert_eq!(kinds(&s), [row("Reconciling", "Pending")]);

        s.set_phase(Phase::Pending, &at(2));
        s.set_condition(
            ConditionType::Ready,
            false.into(),
            "TargetNotFound",
            "no web",
            &at(2),
            Some(1),
        );
        assert!(s.set_kstatus_conditions(&at(2), Some(1), false));
        assert_eq!(kinds(&s), [row("Reconciling", "TargetNotFound")]);
        assert_eq!(
            s.condition(ConditionType::Reconciling).unwrap().message,
            "no web"
        );
        assert!(
            !s.set_kstatus_conditions(&at(3), Some(1), false),
            "nothing new, nothing changes"
        );

        s.set_condition(
            ConditionType::Ready,
            false.into(),
            "GitOpsManaged",
            "Argo CD",
            &at(3),
            Some(1),
        );
        assert!(s.set_kstatus_conditions(&at(3), Some(1), true));
        assert_eq!(
            kinds(&s),
            [row("Stalled", "GitOpsManaged")],
            "a wait only a person can end"
        );

        s.set_phase(Phase::Failed, &at(4));
        s.set_condition(
            ConditionType::Ready,
            false.into(),
            "ReadinessFailed",
            "pod web-1",
            &at(4),
            Some(1),
        );
        assert!(s.set_kstatus_conditions(&at(4), Some(1), false));
        assert_eq!(kinds(&s), [row("Stalled", "ReadinessFailed")]);
        assert_eq!(
            s.condition(ConditionType::Stalled).unwrap().message,
            "pod web-1"
        );

        let mut ok = HardeningWorkflowStatus::default();
        ok.set_kstatus_conditions(&at(1), Some(1), false);
        ok.set_phase(Phase::Succeeded, &at(5));
        ok.set_condition(
            ConditionType::Ready,
            true.into(),
            "Succeeded",
            "verified",
            &at(5),
            Some(1),
        );
        assert!(ok.set_kstatus_conditions(&at(5), Some(1), false));
        assert_eq!(kinds(&ok), []);
        assert!(ok.is_true(ConditionType::Ready));
    }

    #[test]
    fn a_failed_run_gives_the_good_result_back_and_the_history_keeps_both() {
        let mut s = HardeningWorkflowStatus {
            phase: Some(Phase::Succeeded),
            source_image: Some("r/web@sha256:01".into()),
            hardened_image: Some("r/web@sha256:h1".into()),
            seal: Some("seal-1".into()),
            signature: Some("r/web:sha256-h1.sig".into()),
            trigger: Some(Trigger::Initial),
            started_at: Some(at(1)),
            ..Default::default()
        };
        s.record_run(Phase::Succeeded, None, &at(2));
        let good = s.good_result();

        s.start_run(
            Trigger::NewDigest,
            "r/web@sha256:02".into(),
            Some("sha256:i2".into()),
            Some(1),
            &at(3),
        );
        assert_eq!(s.source_image.as_deref(), Some("r/web@sha256:02"));
        assert_eq!(
            (
                s.hardened_image.clone(),
                s.seal.clone(),
                s.signature.clone()
            ),
            (None, None, None)
        );
        assert_eq!(
            (s.started_at.clone(), s.completed_at.clone()),
            (Some(at(3)), None)
        );
        s.hardened_image = Some("r/web@sha256:h2".into());

        s.record_run(Phase::Failed, Some("ReadinessFailed"), &at(4));
        assert!(s.restore_previous());
        assert!(!s.restore_previous(), "once");
        assert_eq!(s.good_result().hardened_image, good.hardened_image);
        assert_eq!(
            (s.seal.as_deref(), s.signature.as_deref()),
            (Some("seal-1"), Some("r/web:sha256-h1.sig"))
        );
        let runs: Vec<_> = s
            .history
            .iter()
            .map(|r| {
                (
                    r.trigger,
                    r.verdict,
                    r.reason.as_deref(),
                    r.hardened_image.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            runs,
            [
                (
                    Trigger::NewDigest,
                    Phase::Failed,
                    Some("ReadinessFailed"),
                    Some("r/web@sha256:h2")
                ),
                (
                    Trigger::Initial,
                    Phase::Succeeded,
                    None,
                    Some("r/web@sha256:h1")
                ),
            ]
        );
    }

    #[test]
    fn the_history_keeps_the_newest_runs() {
        let mut s = HardeningWorkflowStatus::default();
        for i in 0..(HISTORY_LIMIT as i64 + 5) {
            s.started_at = Some(at(i));
            s.record_run(Phase::Succeeded, None, &at(i));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].duration_seconds, Some(0));
        assert_eq!(
            s.history[0].completed_at,
            at(HISTORY_LIMIT as i64 + 4),
            "newest first"
        );
    }

    #[test]
    fn phases_record_start_phase_start_and_completion() {
        let mut s = HardeningWorkflowStatus::default();
        assert_eq!(s.phase(), Phase::Pending);
        assert!(s.set_phase(Phase::Pending, &at(1)));
        assert_eq!(s.started_at, None);
        assert!(s.set_phase(Phase::Instrumenting, &at(2)));
        assert!(!s.set_phase(Phase::Instrumenting, &at(3)));
        assert_eq!(s.phase_started_at, Some(at(2)));
        assert!(s.set_phase(Phase::Observing, &at(4)));
        assert_eq!(
            (
                s.started_at.clone(),
                s.phase_started_at.clone(),
                s.completed_at.clone()
            ),
            (Some(at(2)), Some(at(4)), None)
        );
        assert!(s.set_phase(Phase::Failed, &at(5)));
        assert_eq!(s.completed_at, Some(at(5)));
        assert!(Phase::Failed.is_terminal() && !Phase::Verifying.is_terminal());
    }

    #[test]
    fn reports_name_the_silent_pods() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let r = ReportsStatus::new(
            &set(&["web-b", "web-a", "web-c"]),
            &set(&["web-b", "web-x"]),
        );
        assert_eq!(r.received, 2);
        assert_eq!(r.expected, ["web-a", "web-b", "web-c"]);
        assert_eq!(r.silent(), ["web-a", "web-c"]);
    }

    #[test]
    fn reduction_is_a_rounded_percentage() {
        assert_eq!(reduction_percent(55_700_000, 4_200_000), 92);
        assert_eq!(reduction_percent(100, 100), 0);
        assert_eq!(reduction_percent(100, 150), -50);
        assert_eq!(reduction_percent(0, 10), 0);
    }

    #[test]
    fn phases_serialize_as_their_names() {
        for p in Phase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
