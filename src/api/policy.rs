//! `HardeningPolicy` (namespaced) and `ClusterHardeningPolicy` (cluster-scoped): select
//! workloads by label and kind, then either report what hardening them would remove at most
//! (`mode: Report`, nothing in the cluster changes) or stamp out one `HardeningWorkflow` per
//! workload from a template (`mode: Harden`), a few at a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::spec::{
    Continuous, Exercise, GitOps, Harden, Observe, Registry, Sign, TargetKind, Verify,
    Vulnerabilities,
};
use super::status::Phase;

/// The annotation by which a workload opts out of every policy, e.g. `whittle.dev/skip: "true"`.
pub const SKIP_ANNOTATION: &str = "whittle.dev/skip";

/// The label on a stamped workflow naming its policy (`<namespace>.<name>` of a namespaced one,
/// the name of a cluster one, as a label value).
pub const POLICY_LABEL: &str = "whittle.dev/policy";

/// The annotation on a stamped workflow with a hash of the template it was made from: a
/// template change shows as a different hash.
pub const TEMPLATE_HASH_ANNOTATION: &str = "whittle.dev/template-hash";

/// At most this many rows in `status.workloads`; the workflows hold the details.
pub const ROW_LIMIT: usize = 100;

/// Hardens the workloads of its namespace that its selector picks, a few at a time.
#[allow(clippy::duplicated_attributes)] // kube's printcolumns repeat `type_ = "integer"`
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "whittle.dev",
    version = "v1alpha1",
    kind = "HardeningPolicy",
    doc = "Selects workloads of its namespace by label and kind, and reports what hardening them would remove (mode Report) or hardens them with one HardeningWorkflow each (mode Harden).",
    plural = "hardeningpolicies",
    shortname = "hpol",
    category = "whittle",
    namespaced,
    status = "PolicyStatus",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.selected"),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.counts.succeeded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HardeningPolicySpec {
    /// `Report` (the default) inspects each selected workload's image and records what a
    /// hardening would remove at most, changing nothing in the cluster; `Harden` opens a
    /// HardeningWorkflow per selected workload, e.g. `Harden`.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Which workloads, by label, e.g. `{matchLabels: {tier: web}}` (absent: every workload
    /// of `kinds`). A workload annotated `whittle.dev/skip: "true"` is skipped and listed so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The kinds selected, e.g. `[Deployment]` (default: Deployment, StatefulSet, DaemonSet).
    #[serde(default = "all_kinds")]
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub kinds: Vec<TargetKind>,
    /// The containers of each workload to harden, as a workflow's `target.containers`, e.g.
    /// `["*"]` (default: the only container; the workflow of a workload with several waits in
    /// Pending with `ContainerNotFound`, naming them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub containers: Option<Vec<String>>,
    /// As a workflow's `target.gitOps`, for every workload, e.g. `Proceed`.
    #[serde(default, skip_serializing_if = "GitOps::is_wait")]
    pub git_ops: GitOps,
    /// At most this many of the policy's workflows are past Pending and not yet finished at
    /// once, e.g. `5` (default 1): the policy never instruments half a namespace at once. The
    /// others wait, listed as `Queued`, and get their workflow when one finishes.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: u32,
    /// When new workflows may start, e.g. `{schedule: "0 22 * * *", duration: 6h}` (absent:
    /// any time). A workflow started in the window runs to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// What each workflow is made of, everything but its target, e.g. `{spec: {observe:
    /// {duration: 30m}, promote: true}}`. A change updates the workflows that can take it
    /// (Pending, or Succeeded and continuous); a finished one is made again; a running one
    /// keeps its spec until it ends.
    #[serde(default)]
    pub template: WorkflowTemplate,
}

/// Hardens the workloads its namespace and workload selectors pick, across the cluster; for
/// cluster admins.
#[allow(clippy::duplicated_attributes)] // kube's printcolumns repeat `type_ = "integer"`
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "whittle.dev",
    version = "v1alpha1",
    kind = "ClusterHardeningPolicy",
    doc = "Selects workloads across namespaces by namespace label, workload label and kind, and reports what hardening them would remove (mode Report) or hardens them with one HardeningWorkflow each (mode Harden).",
    plural = "clusterhardeningpolicies",
    shortname = "chpol",
    category = "whittle",
    status = "PolicyStatus",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Selected", type_ = "integer", json_path = ".status.selected"),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.counts.succeeded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHardeningPolicySpec {
    /// Which namespaces, by label, e.g. `{matchLabels: {whittle.dev/harden: "true"}}`
    /// (absent: every namespace but the operator's and `kube-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// As a HardeningPolicy's, applied in each selected namespace, e.g. `{mode: Report}`.
    #[serde(flatten)]
    pub policy: HardeningPolicySpec,
}

fn all_kinds() -> Vec<TargetKind> {
    vec![
        TargetKind::Deployment,
        TargetKind::StatefulSet,
        TargetKind::DaemonSet,
    ]
}

fn one() -> u32 {
    1
}

impl GitOps {
    fn is_wait(&self) -> bool {
        *self == GitOps::Wait
    }
}

/// See [`HardeningPolicySpec::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyMode {
    #[default]
    Report,
    Harden,
}

/// See [`HardeningPolicySpec::window`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// When the window opens, as a cron schedule of five fields (minute hour day-of-month
    /// month day-of-week, UTC), e.g. `"0 22 * * 1-5"`.
    #[schemars(length(min = 9, max = 100))]
    pub schedule: String,
    /// How long it stays open, e.g. `6h`.
    #[schemars(schema_with = "super::duration::positive_schema")]
    pub duration: super::DurationString,
}

/// See [`HardeningPolicySpec::template`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplate {
    /// Labels and annotations for each workflow, e.g. `{labels: {team: shop}}`.
    #[serde(default, skip_serializing_if = "TemplateMetadata::is_empty")]
    pub metadata: TemplateMetadata,
    /// A workflow's spec without `target`, `image`, `instrumentedImage` and `hardenedImage`
    /// (each workload's own), e.g. `{observe: {duration: 10m}, verify: {timeout: 5m}}`.
    #[serde(default)]
    pub spec: WorkflowTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// e.g. `{team: shop}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// e.g. `{owner: platform}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateMetadata {
    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// The fields of [`super::HardeningWorkflowSpec`] a policy sets for all its workloads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!self.promote || !has(self.verify) || !has(self.verify.enabled) || self.verify.enabled")
        .message("promote needs verify.enabled: whittle only rolls out a hardened image that passed verification")
        .field_path(".promote"),
    validation = Rule::new("!has(self.vulnerabilities) || !has(self.vulnerabilities.failOn) || has(self.vulnerabilities.db)")
        .message(super::spec::FAIL_ON_MESSAGE)
        .field_path(".vulnerabilities.failOn"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplateSpec {
    /// As a workflow's, e.g. `{credentialsSecret: push-creds}`.
    #[serde(default)]
    pub registry: Registry,
    /// As a workflow's, e.g. `{duration: 30m}`.
    #[serde(default)]
    pub observe: Observe,
    /// As a workflow's; its Job runs against each workload's Service, e.g. `{template: ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<Exercise>,
    /// As a workflow's, e.g. `{packs: [ca-certificates]}`.
    #[serde(default)]
    pub harden: Harden,
    /// As a workflow's, e.g. `{timeout: 10m}`.
    #[serde(default)]
    pub verify: Verify,
    /// As a workflow's, e.g. `true`.
    #[serde(default)]
    pub promote: bool,
    /// As a workflow's, e.g. `{db: debian}`.
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
    /// As a workflow's, e.g. `{keySecret: cosign-key}`.
    #[serde(default)]
    pub sign: Sign,
    /// As a workflow's, e.g. `{checkInterval: 24h}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<Continuous>,
}

/// What a policy selected and where each workload is. Written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The metadata.generation this status describes, e.g. `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (True once every selected workload is reported on or its workflow Succeeded;
    /// False with reason `InProgress`, `WorkflowsFailed` or `WindowClosed` otherwise), and
    /// `Reconciling` / `Stalled` as kstatus reads them, e.g. `{type: Ready, status: "True"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Workloads the selectors pick, skipped ones included, e.g. `4`.
    #[serde(default)]
    pub selected: u32,
    /// Workloads skipped by annotation, or taken by a workflow of someone else's, e.g. `1`.
    #[serde(default)]
    pub skipped: u32,
    /// The policy's workloads by where they are, e.g. `{queued: 2, running: 1, succeeded: 3}`.
    #[serde(default)]
    pub counts: PolicyCounts,
    /// Sums over the workloads, e.g. `{sourceBytes: 9e8, hardenedBytes: 2e8, shellsRemoved: 4}`:
    /// from the succeeded workflows in Harden mode, from the predictions in Report mode.
    #[serde(default)]
    pub totals: PolicyTotals,
    /// One row per selected workload, sorted by namespace, kind and name, at most 100
    /// (`truncated` says when there were more), e.g. `[{namespace: shop, kind: Deployment,
    /// name: web, state: Succeeded, workflow: web-tier-deployment-web}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadRow>,
    /// More workloads were selected than `workloads` lists, e.g. `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// When the window next opens, while it is closed, e.g. `2026-12-07T22:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCounts {
    /// Waiting for a free slot (`maxConcurrent`), the window, or an inspection: no workflow
    /// yet, e.g. `3`.
    pub queued: u32,
    /// Workflows in Pending, e.g. `1`.
    pub pending: u32,
    /// Workflows past Pending and not finished, e.g. `2`.
    pub running: u32,
    /// Workflows Succeeded, e.g. `12`.
    pub succeeded: u32,
    /// Workflows Failed, e.g. `0`.
    pub failed: u32,
    /// Report mode: workloads whose image was inspected, e.g. `20`.
    pub reported: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTotals {
    /// Compressed bytes of the source images, e.g. `91234567`.
    pub source_bytes: u64,
    /// Compressed bytes of the hardened images (Harden), or of what must stay at least
    /// (Report: the entrypoint and the libraries it loads), e.g. `21234567`.
    pub hardened_bytes: u64,
    /// Known vulnerabilities removed (with `vulnerabilities.db`), e.g. `120`.
    pub vulnerabilities_removed: u32,
    /// Shells removed, e.g. `4`.
    pub shells_removed: u32,
    /// Package managers removed, e.g. `8`.
    pub package_managers_removed: u32,
}

/// One selected workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRow {
    /// e.g. `shop` (a ClusterHardeningPolicy's rows span namespaces).
    pub namespace: String,
    /// The workload's kind, e.g. `Deployment`.
    pub kind: TargetKind,
    /// The workload's name, e.g. `web`.
    pub name: String,
    /// `Queued`, `Skipped`, `Refused`, `Reported`, or the workflow's phase, e.g. `Observing`.
    pub state: String,
    /// Why, for `Skipped` and `Refused`, e.g. `annotated whittle.dev/skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The workflow, in the workload's namespace, e.g. `shop-deployment-web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The image the workload runs (the first hardened container's), e.g. `reg/shop/web:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compressed bytes of the image, e.g. `91234567`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    /// Compressed bytes of the hardened image, or of what must stay at least (Report), e.g.
    /// `4212345`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardened_bytes: Option<u64>,
    /// Report mode: what a hardening would remove at most, e.g. `{removablePercent: 92,
    /// shells: [usr/bin/bash]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
}

/// What inspecting an image found, and what a hardening would remove at most: every shell,
/// package manager and setuid file the entrypoint does not need, and every byte but the
/// entrypoint's and its libraries'.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// The image, pinned to its digest, e.g. `reg/shop/web@sha256:…`.
    pub digest: String,
    /// e.g. `Debian GNU/Linux 12 (bookworm)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Installed packages, e.g. `142`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<u64>,
    /// Files in the image, e.g. `5321`.
    pub files: u64,
    /// e.g. `[bin/bash, bin/dash]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shells: Vec<String>,
    /// e.g. `[usr/bin/apt, usr/bin/dpkg]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_managers: Vec<String>,
    /// e.g. `[usr/bin/passwd]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setuid: Vec<String>,
    /// Known vulnerabilities in the image's packages, with `vulnerabilities.db`, e.g. `57`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<u32>,
    /// Of those, the ones in packages none of whose files the entrypoint needs: at most what a
    /// hardening removes, e.g. `41`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities_removable: Option<u32>,
    /// Percent of the image's bytes a hardening could remove at most, e.g. `83`.
    pub removable_percent: u8,
}

/// Where a stamped workflow is, for the counts.
pub fn count(counts: &mut PolicyCounts, phase: Option<Phase>) {
    match phase.unwrap_or_default() {
        Phase::Pending => counts.pending += 1,
        Phase::Succeeded => counts.succeeded += 1,
        Phase::Failed => counts.failed += 1,
        _ => counts.running += 1,
    }
}
