//! `HardeningWorkflow.spec`: what to harden and how. Defaults live in the schema, so the API
//! server fills them in and `kubectl get -o yaml` shows the values in force.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::duration::{self, DurationString};
use super::status::HardeningWorkflowStatus;

/// What `target.containers` does not combine with (yet): one source image and one pair of
/// destinations, continuous runs, and the evidence of one image (SBOM, vulnerabilities,
/// signature) are each about a single image.
pub const CONTAINERS_RULE: &str = "!has(self.target.containers) || (!has(self.image) && !has(self.instrumentedImage) && !has(self.hardenedImage) && !has(self.continuous) && (!has(self.sign) || !has(self.sign.keySecret)) && (!has(self.vulnerabilities) || !has(self.vulnerabilities.db)) && (!has(self.harden) || !has(self.harden.sbom) || !self.harden.sbom))";
/// The refusal of [`CONTAINERS_RULE`]; tests and docs quote it.
pub const CONTAINERS_MESSAGE: &str = "target.containers hardens each container's own image to its source's repository: it does not combine with image, instrumentedImage, hardenedImage, continuous, sign.keySecret, vulnerabilities.db or harden.sbom, which are about one image (use target.container for those)";

/// `target.containers: ["*"]`: every container of the pod.
pub const ALL_CONTAINERS: &str = "*";

/// The message of the rule that freezes the spec; tests and docs quote it.
pub const IMMUTABLE_MESSAGE: &str =
    "spec is immutable once the workflow has started; delete and recreate it";

/// Hardens the image of one Deployment's container: instrument, observe, harden, verify.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "whittle.dev",
    version = "v1alpha1",
    kind = "HardeningWorkflow",
    doc = "Hardens the image a Deployment runs: instrument it with a sensor, observe the workload, build an image of only what it used, verify it.",
    plural = "hardeningworkflows",
    shortname = "hw",
    category = "whittle",
    namespaced,
    status = "HardeningWorkflowStatus",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(
        name = "Reports",
        type_ = "integer",
        json_path = ".status.reports.received",
        description = "Sensor reports received"
    ),
    printcolumn(
        name = "Reduction %",
        type_ = "integer",
        json_path = ".status.result.reductionPercent",
        description = "How much smaller the hardened image is than the source, in percent"
    ),
    printcolumn(
        name = "Vulns Removed",
        type_ = "integer",
        json_path = ".status.vulnerabilities.removed",
        description = "Known vulnerabilities whose package hardening removed (with vulnerabilities.db)"
    ),
    printcolumn(name = "Hardened Image", type_ = "string", json_path = ".status.hardenedImage"),
    printcolumn(
        name = "Checked",
        type_ = "date",
        json_path = ".status.checkedAt",
        description = "When continuous hardening last checked the source for a new digest",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Editing the spec is allowed until the controller leaves Pending: before that it has
    // changed nothing in the cluster, so a typo can be fixed in place. Afterwards the pods,
    // images and reports all derive from the spec they were made with — except between the
    // runs of a continuous workflow (Succeeded), where a spec change starts the next run.
    validation = Rule::new(
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || (oldSelf.status.phase == 'Succeeded' && has(self.spec.continuous)) || self.spec == oldSelf.spec"
    )
    .message(IMMUTABLE_MESSAGE)
    .field_path(".spec")
    .reason(Reason::FieldValueForbidden)
)]
#[x_kube(
    validation = Rule::new("!has(self.hardenedImage) || !has(self.image) || self.hardenedImage != self.image")
        .message("hardenedImage must differ from image: whittle never overwrites the source image")
        .field_path(".hardenedImage"),
    validation = Rule::new("!has(self.hardenedImage) || !has(self.instrumentedImage) || self.hardenedImage != self.instrumentedImage")
        .message("hardenedImage must differ from instrumentedImage")
        .field_path(".hardenedImage"),
    validation = Rule::new("!has(self.instrumentedImage) || !has(self.image) || self.instrumentedImage != self.image")
        .message("instrumentedImage must differ from image: whittle never overwrites the source image")
        .field_path(".instrumentedImage"),
    validation = Rule::new("!self.promote || !has(self.verify) || !has(self.verify.enabled) || self.verify.enabled")
        .message("promote needs verify.enabled: whittle only rolls out a hardened image that passed verification")
        .field_path(".promote"),
    validation = Rule::new("!has(self.vulnerabilities) || !has(self.vulnerabilities.failOn) || has(self.vulnerabilities.db)")
        .message(FAIL_ON_MESSAGE)
        .field_path(".vulnerabilities.failOn"),
    validation = Rule::new("!has(self.target.containers) || !has(self.target.container)")
        .message("set target.container or target.containers, not both")
        .field_path(".target.containers"),
    validation = Rule::new("!has(self.target.containers) || size(self.target.containers) == 1 || !self.target.containers.exists(c, c == '*')")
        .message("target.containers: '*' means every container and stands alone")
        .field_path(".target.containers"),
    validation = Rule::new(CONTAINERS_RULE)
        .message(CONTAINERS_MESSAGE)
        .field_path(".target.containers")
)]
#[serde(rename_all = "camelCase")]
pub struct HardeningWorkflowSpec {
    /// The workload whose image is hardened, e.g. `{kind: Deployment, name: web, container: web}`.
    pub target: Target,
    /// The image to harden, e.g. `registry.example.com/shop/web:1.4` (default: the target
    /// container's current image). Resolved to a digest before anything is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Where the instrumented image is pushed, e.g. `registry.example.com/shop/web:1.4-observe`
    /// (default: the source's repository, tag `<tag>-whittle-instrumented`). Must differ from
    /// `image`. Outside the source's repository only with `registry.credentialsSecret`: the
    /// pod's pull secrets are no ticket to copy its image elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub instrumented_image: Option<String>,
    /// Where the hardened image is pushed, e.g. `registry.example.com/shop/web:1.4-slim`
    /// (default: the source's repository, tag `<tag>-whittle-hardened`). Must differ from
    /// `image` and `instrumentedImage`. Outside the source's repository only with
    /// `registry.credentialsSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub hardened_image: Option<String>,
    /// How to reach the registry, e.g. `{credentialsSecret: push-creds}`.
    #[serde(default)]
    pub registry: Registry,
    /// How the instrumented workload is observed, e.g. `{duration: 30m, minReports: 2}`.
    #[serde(default)]
    pub observe: Observe,
    /// A Job that exercises the workload, run against the instrumented and the hardened pods,
    /// e.g. `{service: web, template: {spec: {containers: [...]}}}`. Without one, observation
    /// lasts `observe.duration` and verification only waits for the hardened pods to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exercise: Option<Exercise>,
    /// What goes into the hardened image besides what the sensors saw, e.g.
    /// `{include: [/etc/ssl/certs/**], exclude: [/usr/share/doc/**]}`.
    #[serde(default)]
    pub harden: Harden,
    /// Whether and how the hardened image is tried out before it is trusted, e.g.
    /// `{enabled: true, timeout: 10m}`.
    #[serde(default)]
    pub verify: Verify,
    /// Leave the Deployment on the hardened image once it has passed verification, e.g. `true`
    /// (by default the original image comes back). Needs `verify.enabled`.
    #[serde(default)]
    pub promote: bool,
    /// Where known vulnerabilities come from, to count those hardening removes and those the
    /// hardened image keeps, and which of them refuse the image, e.g. `{db: debian, failOn:
    /// {severity: High}}`.
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
    /// How the hardened image is signed once it has passed verification, e.g.
    /// `{keySecret: cosign-key}`.
    #[serde(default)]
    pub sign: Sign,
    /// Keep the result current once the workflow has Succeeded, e.g. `{checkInterval: 1h}`:
    /// every `checkInterval` the operator asks the registry (one manifest HEAD) whether the
    /// source reference names a new digest, and hardens a new one from the stored profile (no
    /// new observation), verifies, signs and promotes it as the first run did. A run that fails
    /// leaves the last good hardened image in place. A spec change of a Succeeded continuous
    /// workflow starts a run too. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<Continuous>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Continuous {
    /// How often the source reference is checked for a new digest, e.g. `1h` (at least `10s`;
    /// each check is one manifest HEAD, spread by up to a tenth of the interval so that many
    /// workflows do not ask at once).
    #[serde(default = "Continuous::default_check_interval")]
    #[schemars(schema_with = "Continuous::interval_schema")]
    pub check_interval: DurationString,
    /// Stop starting new runs, e.g. `true` (as a CronJob's `suspend`): the result and the
    /// history stay; a run under way finishes.
    #[serde(default)]
    pub suspend: bool,
}

/// The shortest `continuous.checkInterval`: a registry is asked once per interval per workflow.
pub const MIN_CHECK_INTERVAL: &str = "10s";

impl Continuous {
    fn default_check_interval() -> DurationString {
        DurationString::new("1h")
    }

    fn interval_schema(generator: &mut SchemaGenerator) -> Schema {
        duration::at_least_schema(generator, MIN_CHECK_INTERVAL)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Vulnerabilities {
    /// The name of an OSV database the operator's admin configured (the chart's
    /// `vulnerabilities.databases`, e.g. `debian` for osv.dev's Debian/all.zip). The status then
    /// counts vulnerabilities by severity before and after hardening. A URL or a path is refused:
    /// the operator fetches and reads only what its admin configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "vuln_db_schema")]
    pub db: Option<String>,
    /// Refuse a hardened image that still keeps a vulnerability at or above a severity, e.g.
    /// `{severity: High, fixable: true}`: the run fails (`VulnerabilityGate`) and the image is
    /// not verified, signed or promoted (a continuous run leaves the last good one in place).
    /// Needs `db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on: Option<FailOn>,
}

/// The message of the rule that ties `failOn` to `db`; tests and docs quote it.
pub const FAIL_ON_MESSAGE: &str = "vulnerabilities.failOn needs vulnerabilities.db: without a database no vulnerability is known, and every image would pass the gate";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailOn {
    /// The least severity that fails the run, e.g. `High` (High and Critical do). Records that
    /// rate no severity never do.
    pub severity: GateSeverity,
    /// Only vulnerabilities whose record names a fixed version count, e.g. `true` (the
    /// default): those a rebuild of the source can remove. `false` counts every one.
    #[serde(default = "FailOn::default_fixable")]
    pub fixable: bool,
}

impl FailOn {
    fn default_fixable() -> bool {
        true
    }
}

/// A severity `failOn` can name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GateSeverity {
    Critical,
    High,
    Medium,
    Low,
}

/// What a database name looks like: a DNS-1123 label, so neither a URL nor a path.
pub const VULN_DB_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// The API server's refusal of anything else; tests and docs quote it.
pub const VULN_DB_MESSAGE: &str = "must name a vulnerability database the operator's admin configured (at most 63 lowercase letters, digits and '-', e.g. debian), not a URL or a path";

// The pattern is what OpenAPI clients see; the CEL rule gives the refusal a sentence. The
// label's 63 characters are checked in the rule, not by maxLength: the API server skips the
// rules of a field already too long, and a long URL would then be refused only as "Too long".
fn vuln_db_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 2048,
        "pattern": VULN_DB_PATTERN,
        "x-kubernetes-validations": [{
            "rule": format!("size(self) <= 63 && self.matches('{VULN_DB_PATTERN}')"),
            "message": VULN_DB_MESSAGE,
        }],
    })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sign {
    /// A Secret in the workflow's namespace holding the signing key as `cosign.key` (an EC P-256
    /// PKCS#8 PEM, or a cosign key with its password in `cosign.password`; what `cosign
    /// generate-key-pair k8s://NS/NAME` writes), e.g. `cosign-key`. The hardened image and its
    /// SLSA provenance are signed where `cosign verify` finds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The kind of workload, e.g. `StatefulSet`: `Deployment` (the default), `StatefulSet` or
    /// `DaemonSet`, in group `apps`.
    #[serde(default)]
    pub kind: TargetKind,
    /// The workload's name, in the workflow's namespace, e.g. `web`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The container to harden, e.g. `web` (an init container's name too); needed when the pod
    /// has more than one (default: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
    /// Several containers of the pod to harden in one workflow, e.g. `[web, log-tailer]` or
    /// `[web, migrate]` with an init container, or `["*"]` for every app container (init
    /// containers only by name): each is instrumented with its own sensor and report (an init
    /// container's is sent when it exits), each distinct image hardened (two containers of one
    /// image share a hardened image built from both reports), the pod verified as a whole (a
    /// hardened init container must complete), and each result listed in `status.containers`.
    /// Instead of `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub containers: Option<Vec<String>>,
    /// What to do when a GitOps controller (Argo CD, Flux) owns the target's pod template in
    /// its `managedFields`, e.g. `Proceed`: `Wait` (the default) keeps the workflow Pending,
    /// changing nothing, because the tool's self-heal or drift correction would revert the
    /// instrumented template mid-run; `Proceed` once the tool leaves whittle's fields alone
    /// (Argo CD: `ignoreDifferences` with `managedFieldsManagers: [whittle]`; Flux: see
    /// docs/flux.md).
    #[serde(default, skip_serializing_if = "GitOps::is_default")]
    pub git_ops: GitOps,
}

/// See [`Target::git_ops`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GitOps {
    #[default]
    Wait,
    Proceed,
}

impl GitOps {
    fn is_default(&self) -> bool {
        *self == GitOps::Wait
    }
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TargetKind {
    #[default]
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
            TargetKind::DaemonSet => "DaemonSet",
        }
    }

    /// The resource's plural, as RBAC names it.
    pub fn plural(&self) -> &'static str {
        match self {
            TargetKind::Deployment => "deployments",
            TargetKind::StatefulSet => "statefulsets",
            TargetKind::DaemonSet => "daemonsets",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// A `kubernetes.io/dockerconfigjson` Secret in the workflow's namespace, e.g.
    /// `push-creds`, with the credentials for pulling the source and pushing the new images.
    /// Default: the imagePullSecrets of the target's pod template (none: anonymous), which
    /// push only to the source's own repository. When set, it alone is used, and
    /// `instrumentedImage` and `hardenedImage` may name other repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Talk plain HTTP instead of HTTPS to this workflow's own registries, those of `image`
    /// (or the container's image), `instrumentedImage` and `hardenedImage`, e.g. `true` for a
    /// local registry such as `localhost:5000`. Every other host (a token service a registry
    /// names, for one) is reached over HTTPS only: credentials never go in cleartext to it.
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observe {
    /// How long the instrumented workload runs before whittle restores the original and
    /// collects the reports, e.g. `30s`, `10m`, `1h30m`. Without an exercise: 10m when unset.
    /// With an exercise, observation ends when its Job has succeeded, then lasts this much
    /// longer if set (unset: no longer). `0s` is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationString>,
    /// How many sensor reports are enough to harden, e.g. `2`. Hardening starts once every
    /// instrumented pod has reported and there are at least this many; after `collectTimeout`,
    /// it starts with at least this many (a Warning Event names the silent pods), and fewer
    /// fail the workflow.
    #[serde(default = "Observe::default_min_reports")]
    #[schemars(range(min = 1))]
    pub min_reports: u32,
    /// How long to wait for the instrumented pods' reports once the original pod template is
    /// back and they are stopping, e.g. `2m`.
    #[serde(default = "Observe::default_collect_timeout")]
    #[schemars(schema_with = "duration::positive_schema")]
    pub collect_timeout: DurationString,
    /// How the sensor watches the app, e.g. `seccomp`. `auto` (the default) adds no capability
    /// and runs the cheapest complete monitor the container allows: `seccomp` where the kernel
    /// and the pod's seccomp profile permit user notification (they do under the `restricted`
    /// Pod Security level's RuntimeDefault), `ptrace` otherwise. `seccomp` and `ptrace` add no
    /// capability and record the same paths; seccomp costs the app about half as much per
    /// path syscall. `fanotify` adds CAP_SYS_ADMIN to the container, which the `baseline` and
    /// `restricted` levels refuse, and costs the app almost nothing, but it cannot see stat
    /// calls or failed opens (see docs/sensor.md).
    #[serde(default)]
    pub sensor_mode: SensorMode,
}

/// How long observation lasts without an exercise when `observe.duration` is unset.
pub const DEFAULT_OBSERVE: std::time::Duration = std::time::Duration::from_secs(600);

impl Observe {
    /// How long to observe after the exercise Job succeeded (with an exercise) or in all
    /// (without one).
    pub fn duration_after(&self, exercised: bool) -> std::time::Duration {
        match &self.duration {
            Some(d) => d.get().unwrap_or_default(),
            None if exercised => std::time::Duration::ZERO,
            None => DEFAULT_OBSERVE,
        }
    }

    /// The duration as the user wrote it, or what applies when unset, for messages.
    pub fn duration_text(&self, exercised: bool) -> String {
        match (&self.duration, exercised) {
            (Some(d), _) => d.as_str().to_string(),
            (None, true) => "until the exercise Job succeeds".to_string(),
            (None, false) => "10m".to_string(),
        }
    }

    fn default_min_reports() -> u32 {
        1
    }
    fn default_collect_timeout() -> DurationString {
        DurationString::new("5m")
    }
}

impl Default for Observe {
    fn default() -> Self {
        Observe {
            duration: None,
            min_reports: Observe::default_min_reports(),
            collect_timeout: Observe::default_collect_timeout(),
            sensor_mode: SensorMode::default(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SensorMode {
    #[default]
    Auto,
    Seccomp,
    Ptrace,
    Fanotify,
}

impl SensorMode {
    /// The value of the sensor's `--mode` flag.
    pub fn as_str(&self) -> &'static str {
        match self {
            SensorMode::Auto => "auto",
            SensorMode::Seccomp => "seccomp",
            SensorMode::Ptrace => "ptrace",
            SensorMode::Fanotify => "fanotify",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exercise {
    /// The Service, in the workflow's namespace, that the exercise Job talks to, e.g. `web`
    /// (default: the one Service whose selector matches the target's pod labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub service: Option<String>,
    /// The pod template of the exercise Job, e.g. `{spec: {containers: [{name: check, image:
    /// busybox, command: [sh, -c, 'wget -q -O- http://$WHITTLE_TARGET/']}]}}`; it must succeed
    /// against the original. Every container gets env `WHITTLE_TARGET`, the Service's
    /// `ClusterIP:port` (its first port); `restartPolicy` defaults to `Never`.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
    /// How long one run of the exercise Job may take (its activeDeadlineSeconds), e.g. `5m`.
    /// The Job is not retried.
    #[serde(default = "Exercise::default_timeout")]
    #[schemars(schema_with = "duration::positive_schema")]
    pub timeout: DurationString,
}

impl Exercise {
    fn default_timeout() -> DurationString {
        DurationString::new("10m")
    }
}

// The full PodTemplateSpec schema would add hundreds of kilobytes to the CRD; the API server
// validates the template for real when the Job is created.
fn pod_template_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "A pod template (metadata and spec), as in a Job's spec.template.",
    })
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Harden {
    /// Paths or globs kept even if no sensor saw them, e.g. `/etc/nginx/**` or
    /// `/usr/share/zoneinfo` (a directory keeps everything below it).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 4096)))]
    pub include: Vec<String>,
    /// Globs of paths dropped even if a sensor saw them, e.g. `/usr/share/doc/**` or `*.pyc` (a
    /// pattern without `/` matches a name anywhere; a matching directory drops what is below).
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 4096)))]
    pub exclude: Vec<String>,
    /// Named packs of files apps load on paths an exercise rarely takes, kept where the image
    /// has them, e.g. `[ca-certificates, tzdata]`: `ca-certificates` (the CA bundle, for
    /// TLS clients), `nss` (nsswitch.conf, hosts, resolv.conf, glibc's files and dns modules),
    /// `tzdata` (`/usr/share/zoneinfo`, `/etc/localtime`), `locale` (`/usr/lib/locale`,
    /// `/usr/share/i18n`). None by default: what the sensors saw is kept anyway, and each
    /// pack's cost is reported in `status.result.packs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub packs: Vec<Pack>,
    /// How long building and pushing the hardened image may take, e.g. `30m`; at most `2h`.
    /// It also bounds retries: a failure that is retried (a registry outage, say) fails the
    /// workflow once Instrumenting or Hardening has lasted this long.
    #[serde(default = "Harden::default_timeout")]
    #[schemars(schema_with = "Harden::timeout_schema")]
    pub timeout: DurationString,
    /// Attach a CycloneDX 1.6 SBOM of the hardened image to it as an OCI referrer (artifactType
    /// `application/vnd.cyclonedx+json`; the referrers tag on registries without the referrers
    /// API), e.g. `true`.
    #[serde(default)]
    pub sbom: bool,
    /// The hardened layer's codec, e.g. `zstd`. `gzip` (the default) is read by every runtime
    /// and registry tool; `zstd` (OCI `tar+zstd`, which containerd 1.5 and later, CRI-O and
    /// podman run) is smaller and unpacks faster, and gives the image OCI media types.
    #[serde(default)]
    pub compression: Compression,
}

// A named include pack: the image engine's `Pack`, which the API does not import. No doc
// comments, on it or its variants: the CRD would show them on every item.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pack {
    CaCertificates,
    Nss,
    Tzdata,
    Locale,
}

/// The hardened layer's codec (the image engine's `LayerCompression`, which the API does not
/// import so that it never changes with the engine). Its variants carry no doc comments:
/// schemars would turn them into a `oneOf` that a CRD's structural schema does not want.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

/// The longest `harden.timeout`: a workflow holds one of the operator's reconcile slots and a
/// spool for this long, so a tenant may not hold them for days.
pub const MAX_HARDEN_TIMEOUT: &str = "2h";

impl Harden {
    fn default_timeout() -> DurationString {
        DurationString::new("15m")
    }

    fn timeout_schema(generator: &mut SchemaGenerator) -> Schema {
        duration::bounded_schema(generator, MAX_HARDEN_TIMEOUT)
    }
}

impl Default for Harden {
    fn default() -> Self {
        Harden {
            include: Vec::new(),
            exclude: Vec::new(),
            packs: Vec::new(),
            timeout: Harden::default_timeout(),
            sbom: false,
            compression: Compression::Gzip,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// Whether to roll the hardened image out and run the exercise against it (the original
    /// comes back if it fails), e.g. `false` to end in Succeeded as soon as the hardened image
    /// is pushed.
    #[serde(default = "Verify::default_enabled")]
    pub enabled: bool,
    /// How long the hardened rollout and its exercise may take, e.g. `10m`. It also bounds the
    /// instrumented rollout: instrumented pods not ready by then fail the workflow.
    #[serde(default = "Verify::default_timeout")]
    #[schemars(schema_with = "duration::positive_schema")]
    pub timeout: DurationString,
}

impl Verify {
    fn default_enabled() -> bool {
        true
    }
    fn default_timeout() -> DurationString {
        DurationString::new("5m")
    }
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            enabled: Verify::default_enabled(),
            timeout: Verify::default_timeout(),
        }
    }
}
