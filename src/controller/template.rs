//! Pure: what whittle saves of the user's container, and the server-side-apply configurations
//! that instrument a workload (Deployment, StatefulSet, DaemonSet) and restore it.
//!
//! Every change whittle makes is a field it applies as field manager `whittle`; restoring applies
//! the original values of exactly those fields and stops applying the rest (the env entries it
//! added, the capability, the pod label), which server-side apply then removes. Fields whittle
//! never touched stay the user's, so a user's edit made while the workload is instrumented (a
//! scale, an env var) survives the restore.

use k8s_openapi::api::core::v1::{Container, EnvVar, SecurityContext};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use whittle_sensor::options::ModeChoice;

use std::collections::BTreeSet;

use crate::api::names::{
    FIELD_MANAGER, POD_TOKEN_DIR, POD_TOKEN_FILE, POD_TOKEN_VOLUME, REPORT_AUDIENCE,
    WORKFLOW_LABEL, label_value,
};
use crate::api::{HardeningWorkflow, SensorMode, TargetKind, pod};
use crate::controller::exec_handlers::ExecHandlers;
use crate::controller::workload::Workload;
use crate::image::config::SENSOR_PATH;

/// The workload annotation holding [`Original`]: what restoring needs, whatever happens to the
/// operator. It also marks the workload as taken by one workflow.
pub const ORIGINAL_ANNOTATION: &str = "whittle.dev/original";

/// The sensor needs this long after SIGTERM to let the app exit and deliver its report.
pub const MIN_GRACE_SECONDS: i64 = 60;

/// Kubernetes' default terminationGracePeriodSeconds.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Of the pod's grace period, what the sensor keeps for delivering its report after the app
/// stopped (or was killed).
const DELIVERY_SECONDS: i64 = 5;

/// The env the sensor reads for its identity (the report server refuses reports without a pod).
const IDENTITY_ENV: [&str; 3] = ["POD_NAME", "POD_NAMESPACE", "CONTAINER_NAME"];

/// The user's containers as they were before whittle changed them, and who changed them: the
/// `whittle.dev/original` annotation on the workload. The first container's fields sit at the
/// top level (as when whittle hardened one container, so an annotation written then still
/// reads), the others' in `more`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    pub workflow: String,
    pub workflow_uid: String,
    #[serde(flatten)]
    pub first: SavedContainer,
    /// The other containers whittle changes, in the order the workflow names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<SavedContainer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Whether whittle applies the containers' `securityContext.capabilities.add` (fanotify
    /// mode adds SYS_ADMIN). The list is atomic: applying it takes the whole list from the
    /// user, so every later apply must name the user's original entries or they are removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub takes_capabilities: bool,
}

/// One container as it was before whittle changed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SavedContainer {
    pub container: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// The container's exec probes and hooks, which the instrumented pod runs in the sensor.
    /// Absent in the annotation of an operator that did not wrap them: nothing to put back.
    #[serde(default, skip_serializing_if = "ExecHandlers::is_empty")]
    pub exec_handlers: ExecHandlers,
    /// One of the pod's `initContainers`, applied in that list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

impl SavedContainer {
    fn of(container: &Container, init: bool) -> SavedContainer {
        SavedContainer {
            container: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            command: container.command.clone(),
            args: container.args.clone(),
            env: container.env.clone(),
            security_context: container.security_context.clone(),
            exec_handlers: ExecHandlers::of(container),
            init,
        }
    }

    /// The command the instrumented container runs, when the pod overrides the image's
    /// entrypoint (the instrumented image's own entrypoint wraps it otherwise).
    fn wrapped_command(&self) -> Option<Vec<String>> {
        let command = self.command.as_ref().filter(|c| !c.is_empty())?;
        let mut wrapped = vec![SENSOR_PATH.to_string(), "--".to_string()];
        wrapped.extend(command.iter().cloned());
        Some(wrapped)
    }

    /// The user's own `capabilities.add` (absent: none of the user's to keep).
    fn added_capabilities(&self) -> Option<&Vec<String>> {
        self.security_context
            .as_ref()?
            .capabilities
            .as_ref()?
            .add
            .as_ref()
    }
}

impl Original {
    /// What whittle saves of `containers` (the first is the one `status.sourceImage` names)
    /// and of the pod.
    pub fn of(
        workflow: &HardeningWorkflow,
        workload: &Workload,
        containers: &[&Container],
    ) -> Original {
        let spec = pod_spec(workload);
        let mut saved = containers
            .iter()
            .map(|c| SavedContainer::of(c, spec.is_some_and(|s| pod::is_init(s, &c.name))));
        let first = saved.next().unwrap_or_else(|| SavedContainer {
            container: String::new(),
            image: String::new(),
            command: None,
            args: None,
            env: None,
            security_context: None,
            exec_handlers: ExecHandlers::default(),
            init: false,
        });
        Original {
            workflow: workflow.metadata.name.clone().unwrap_or_default(),
            workflow_uid: workflow.metadata.uid.clone().unwrap_or_default(),
            first,
            more: saved.collect(),
            termination_grace_period_seconds: pod_spec(workload)
                .and_then(|s| s.termination_grace_period_seconds),
            // From the spec, which is immutable once the workflow started: the hold for
            // verification, saved after the first restore, knows that whittle still owns the list.
            takes_capabilities: sensor_needs_sys_admin(workflow.spec.observe.sensor_mode),
        }
    }

    /// Every saved container, the first first.
    pub fn containers(&self) -> impl Iterator<Item = &SavedContainer> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    /// The original image of each saved container, by name.
    pub fn images(&self) -> Images {
        self.containers()
            .map(|c| (c.container.clone(), c.image.clone()))
            .collect()
    }

    /// The saved original on a workload, if whittle has changed it.
    pub fn on(workload: &Workload) -> Option<Result<Original, serde_json::Error>> {
        workload
            .metadata
            .annotations
            .as_ref()?
            .get(ORIGINAL_ANNOTATION)
            .map(|text| serde_json::from_str(text))
    }

    pub fn belongs_to(&self, workflow: &HardeningWorkflow) -> bool {
        Some(self.workflow_uid.as_str()) == workflow.metadata.uid.as_deref()
    }

    /// Whether whittle raises the grace period (and so must put it back).
    fn raised_grace(&self) -> bool {
        self.termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            < MIN_GRACE_SECONDS
    }

    /// The instrumented pod's grace period: the user's, at least [`MIN_GRACE_SECONDS`].
    fn instrumented_grace(&self) -> i64 {
        self.termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .max(MIN_GRACE_SECONDS)
    }

    /// How long a container's sensor lets the app stop after SIGTERM before it kills it and
    /// delivers: the pod's grace less time to deliver, so a slow-stopping app gets what the
    /// user gave it. A `preStop` hook runs first, on the same clock, for a time whittle cannot
    /// know: it gets half.
    fn sensor_grace(&self, container: &SavedContainer) -> i64 {
        let left = self.instrumented_grace() - DELIVERY_SECONDS;
        if container.exec_handlers.has_pre_stop() {
            left / 2
        } else {
            left
        }
    }
}

/// An image for each container, by the container's name.
pub type Images = std::collections::BTreeMap<String, String>;

/// What the instrumented container needs besides the saved original.
pub struct Instrumentation<'a> {
    /// The instrumented image of each container.
    pub instrumented_images: &'a Images,
    /// `http://IP:PORT/v1/reports/<ns>/<workflow>`.
    pub report_url: &'a str,
    /// The workflow's report token ([`crate::reports::ReportKey::token`]).
    pub report_token: &'a str,
    pub sensor_mode: SensorMode,
}

/// The pod template of a workload, if it has one.
pub fn pod_spec(workload: &Workload) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
    workload.template.spec.as_ref()
}

/// The target container: the one named (an init container too), or the only (app) one.
pub fn target_container<'d>(
    workload: &'d Workload,
    name: Option<&str>,
) -> Result<&'d Container, String> {
    let kind = workload.kind.as_str();
    let containers = pod_spec(workload)
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    match name {
        Some(name) => pod_spec(workload)
            .and_then(|s| pod::container(s, name))
            .ok_or_else(|| {
                let all: Vec<&Container> = pod_spec(workload)
                    .map(|s| pod::containers(s).collect())
                    .unwrap_or_default();
                format!(
                    "the {kind} has no container {name:?} (it has {})",
                    names(all)
                )
            }),
        None => match containers {
            [only] => Ok(only),
            _ => Err(format!(
                "the {kind} has {} containers ({}): set spec.target.container",
                containers.len(),
                names(containers)
            )),
        },
    }
}

/// The containers a workflow hardens, in the order named: `spec.target.containers` (`["*"]`:
/// every app container of the pod; init containers only by name), else the one
/// [`target_container`] finds.
pub fn target_containers<'d>(
    workload: &'d Workload,
    target: &crate::api::Target,
) -> Result<Vec<&'d Container>, String> {
    let Some(wanted) = target.containers.as_ref() else {
        return target_container(workload, target.container.as_deref()).map(|c| vec![c]);
    };
    let containers = pod_spec(workload)
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    if wanted.iter().any(|n| n == crate::api::ALL_CONTAINERS) {
        return Ok(containers.iter().collect());
    }
    wanted
        .iter()
        .map(|name| target_container(workload, Some(name)))
        .collect()
}

fn names<'c>(containers: impl IntoIterator<Item = &'c Container>) -> String {
    containers
        .into_iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The apply configuration that runs the instrumented image: image, the wrapped command when
/// the pod overrides the entrypoint, the sensor's env, the capability fanotify needs, the pod's
/// own token for the report server (a projected ServiceAccount token, audience `whittle`), a
/// grace period long enough to report, a pod label naming the workflow, and the saved original.
pub fn instrumented(
    kind: TargetKind,
    name: &str,
    saved: &Original,
    inst: &Instrumentation<'_>,
) -> Value {
    let mut spec = by_list(saved, |c| instrumented_container(saved, c, inst));
    spec["volumes"] = json!([pod_token_volume()]);
    if saved.raised_grace() {
        spec["terminationGracePeriodSeconds"] = json!(MIN_GRACE_SECONDS);
    }
    held(kind, name, saved, spec)
}

/// One container of the instrumented pod, with its own sensor env (its name, so that it
/// reports apart).
fn instrumented_container(
    saved: &Original,
    c: &SavedContainer,
    inst: &Instrumentation<'_>,
) -> Value {
    let image = (inst.instrumented_images.get(&c.container)).unwrap_or(&c.image);
    let mut container = json!({"name": c.container, "image": image});
    if let Some(command) = c.wrapped_command() {
        container["command"] = json!(command);
    }
    container["env"] = json!(sensor_env(saved, c, inst));
    c.exec_handlers.apply_to(&mut container, true);
    container["volumeMounts"] =
        json!([{"name": POD_TOKEN_VOLUME, "mountPath": POD_TOKEN_DIR, "readOnly": true}]);
    if sensor_needs_sys_admin(inst.sensor_mode) {
        let mut add = c.added_capabilities().cloned().unwrap_or_default();
        if !add.iter().any(|c| grants_sys_admin(c)) {
            add.push("SYS_ADMIN".into());
        }
        container["securityContext"] = json!({"capabilities": {"add": add}});
    }
    container
}

/// The apply configuration that runs the hardened images to verify them: the original pod
/// with only the images changed (a hardened image keeps the original entrypoint, so the pod's
/// own command still fits), and the workload held again, its pods labelled, until
/// verification ends.
pub fn hardened(kind: TargetKind, name: &str, saved: &Original, hardened: &Images) -> Value {
    held(kind, name, saved, original_spec(saved, hardened))
}

/// The apply configuration of a promoted workload: the original pod on the hardened images,
/// and nothing else of whittle's (the pod label and the annotation go; the workload is free).
pub fn promoted(kind: TargetKind, name: &str, saved: &Original, hardened: &Images) -> Value {
    free(kind, name, original_spec(saved, hardened))
}

/// A configuration that changes the pod `spec` as given, labels the pods with the workflow and
/// saves the original in the annotation: the workload is held by the workflow.
fn held(kind: TargetKind, name: &str, saved: &Original, spec: Value) -> Value {
    let saved_text = serde_json::to_string(saved).unwrap_or_default();
    json!({
        "apiVersion": "apps/v1",
        "kind": kind.as_str(),
        "metadata": {
            "name": name,
            "annotations": {ORIGINAL_ANNOTATION: saved_text},
        },
        "spec": {"template": {
            "metadata": {"labels": {WORKFLOW_LABEL: label_value(&saved.workflow)}},
            "spec": spec,
        }}
    })
}

/// The field managers other than whittle that changed the workload's spec since whittle last
/// applied it (a `kubectl scale`, an edit, a GitOps sync): their changes survive a restore,
/// and whittle says so. Status updates and metadata-only updates (the controller's revision
/// annotation) do not count. managedFields times have a resolution of one second, so an edit
/// in the very second of whittle's apply goes unnamed (it is kept all the same).
pub fn edited_by_others(workload: &Workload) -> Vec<String> {
    let fields = workload
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    let ours = fields
        .iter()
        .filter(|f| f.manager.as_deref() == Some(FIELD_MANAGER) && f.subresource.is_none())
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max();
    let Some(ours) = ours else {
        return Vec::new();
    };
    let touches_spec = |f: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
        f.subresource.as_deref() == Some("scale")
            || f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0.get("f:spec").is_some())
    };
    let managers: BTreeSet<String> = fields
        .iter()
        .filter(|f| f.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|f| f.subresource.as_deref() != Some("status"))
        .filter(|f| f.time.as_ref().is_some_and(|t| t.0 > ours))
        .filter(|f| touches_spec(f))
        .filter_map(|f| f.manager.clone())
        .collect();
    managers.into_iter().collect()
}

/// The env entries whittle adds: where and how to report, and the pod's identity (unless the
/// user's container already defines those names, which then stay the user's).
fn sensor_env(saved: &Original, c: &SavedContainer, inst: &Instrumentation<'_>) -> Vec<Value> {
    let defined = |name: &str| {
        c.env
            .as_ref()
            .is_some_and(|env| env.iter().any(|e| e.name == name))
    };
    let mut env = vec![
        json!({"name": "WHITTLE_REPORT_URL", "value": inst.report_url}),
        // Without it the sensor would pick fanotify whenever the container has CAP_SYS_ADMIN
        // of its own, whatever the workflow asked for.
        json!({"name": "WHITTLE_SENSOR_MODE", "value": inst.sensor_mode.as_str()}),
        json!({"name": "WHITTLE_REPORT_TOKEN", "value": inst.report_token}),
        json!({"name": "WHITTLE_POD_TOKEN_FILE", "value": format!("{POD_TOKEN_DIR}/{POD_TOKEN_FILE}")}),
        json!({"name": "WHITTLE_SENSOR_GRACE", "value": saved.sensor_grace(c).to_string()}),
    ];
    // The sensor takes CAP_SYS_ADMIN away from the app (fanotify needs it for the sensor
    // alone) unless the user's container had it already.
    if had_sys_admin(c.security_context.as_ref()) {
        env.push(json!({"name": "WHITTLE_KEEP_SYS_ADMIN", "value": "1"}));
    }
    for name in IDENTITY_ENV.into_iter().filter(|n| !defined(n)) {
        env.push(match name {
            "POD_NAME" => json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            "POD_NAMESPACE" => json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            _ => json!({"name": name, "value": c.container}),
        });
    }
    env
}

/// A token the kubelet makes for this pod alone and rotates, for the report server only
/// (audience `whittle`): the report server learns from the API server which pod sent a report.
fn pod_token_volume() -> Value {
    json!({
        "name": POD_TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": REPORT_AUDIENCE,
            "expirationSeconds": 3600,
            "path": POD_TOKEN_FILE,
        }}]},
    })
}

/// Whether the user's own container runs with CAP_SYS_ADMIN (added, or privileged).
fn had_sys_admin(context: Option<&SecurityContext>) -> bool {
    let Some(context) = context else {
        return false;
    };
    context.privileged == Some(true)
        || context
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|add| add.iter().any(|c| grants_sys_admin(c)))
}

/// Whether the sensor needs CAP_SYS_ADMIN in `mode`, which the sensor's crate decides.
fn sensor_needs_sys_admin(mode: SensorMode) -> bool {
    ModeChoice::from_name(mode.as_str()).is_some_and(ModeChoice::needs_cap_sys_admin)
}

/// Whether an entry of `capabilities.add` gives CAP_SYS_ADMIN (the runtime accepts the name
/// with or without its `CAP_` prefix).
fn grants_sys_admin(capability: &str) -> bool {
    matches!(capability, "SYS_ADMIN" | "CAP_SYS_ADMIN" | "ALL")
}

/// The apply configuration that puts the original back: the original image, command and grace
/// period (fields whittle had taken over), nothing else (what whittle added goes away), and no
/// annotation.
pub fn restore(kind: TargetKind, name: &str, saved: &Original) -> Value {
    free(kind, name, original_spec(saved, &saved.images()))
}

/// The original values of every field whittle took over, in every container it changed (the
/// images as given, a container missing from `images` on its original; the user's
/// capabilities when fanotify took the list): after an instrumentation whittle owns them, so
/// every later apply must name them all — a field an apply leaves out is removed when whittle
/// is its only manager (the pod's command would fall back to the image's, a lowered grace
/// period to 30 s, a sidecar's image to none).
fn original_spec(saved: &Original, images: &Images) -> Value {
    let mut spec = by_list(saved, |c| {
        let image = images.get(&c.container).unwrap_or(&c.image);
        let mut container = json!({"name": c.container, "image": image});
        if c.wrapped_command().is_some() {
            container["command"] = json!(c.command);
        }
        c.exec_handlers.apply_to(&mut container, false);
        if saved.takes_capabilities
            && let Some(add) = c.added_capabilities()
        {
            container["securityContext"] = json!({"capabilities": {"add": add}});
        }
        container
    });
    if saved.raised_grace()
        && let Some(grace) = saved.termination_grace_period_seconds
    {
        spec["terminationGracePeriodSeconds"] = json!(grace);
    }
    spec
}

/// A pod spec with each saved container, as `make` gives it, in its list: `containers`, and
/// `initContainers` when whittle changes one (both merge by name, so the user's other
/// containers stay theirs).
fn by_list(saved: &Original, make: impl Fn(&SavedContainer) -> Value) -> Value {
    let (init, app): (Vec<&SavedContainer>, Vec<&SavedContainer>) =
        saved.containers().partition(|c| c.init);
    let mut spec = json!({});
    if !app.is_empty() {
        spec["containers"] = json!(app.into_iter().map(&make).collect::<Vec<_>>());
    }
    if !init.is_empty() {
        spec["initContainers"] = json!(init.into_iter().map(&make).collect::<Vec<_>>());
    }
    spec
}

/// A configuration that sets the pod `spec` as given and holds nothing: no label, no
/// annotation.
fn free(kind: TargetKind, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind.as_str(),
        "metadata": {"name": name},
        "spec": {"template": {"spec": spec}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn w(d: Deployment) -> Workload {
        d.into()
    }

    fn deployment(container: Value, grace: Option<i64>) -> Workload {
        let mut spec = json!({"containers": [container]});
        if let Some(g) = grace {
            spec["terminationGracePeriodSeconds"] = json!(g);
        }
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {}, "template": {"spec": spec}}
        }))
        .unwrap();
        d.into()
    }

    fn workflow() -> HardeningWorkflow {
        let mut w = HardeningWorkflow::new(
            "harden-web",
            serde_json::from_value(json!({"target": {"name": "web"}})).unwrap(),
        );
        w.metadata.uid = Some("uid-1".into());
        w
    }

    fn one(image: &str) -> Images {
        Images::from([("web".to_string(), image.to_string())])
    }

    fn inst(mode: SensorMode) -> Instrumentation<'static> {
        static IMAGES: std::sync::LazyLock<Images> =
            std::sync::LazyLock::new(|| one("r/web:1-whittle-instrumented@sha256:aa"));
        Instrumentation {
            instrumented_images: &IMAGES,
            report_url: "http://10.96.0.9:8080/v1/reports/shop/harden-web",
            report_token: "v1.uid-1.00ff",
            sensor_mode: mode,
        }
    }

    fn saved(container: Value, grace: Option<i64>) -> Original {
        let d = deployment(container, grace);
        let c = target_container(&d, None).unwrap().clone();
        Original::of(&workflow(), &d, &[&c])
    }

    #[test]
    fn an_image_entrypoint_is_wrapped_by_the_image_a_pod_command_by_the_template() {
        let plain = saved(json!({"name": "web", "image": "r/web:1"}), None);
        let patch = instrumented(
            TargetKind::Deployment,
            "web",
            &plain,
            &inst(SensorMode::Ptrace),
        );
        let c = &patch["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "r/web:1-whittle-instrumented@sha256:aa");
        assert!(c.get("command").is_none());

        let overridden = saved(
            json!({"name": "web", "image": "r/web:1", "command": ["/app", "-x"], "args": ["y"]}),
            None,
        );
        let patch = instrumented(
            TargetKind::Deployment,
            "web",
            &overridden,
            &inst(SensorMode::Ptrace),
        );
        let c = &patch["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["command"],
            json!(["/.whittle/sensor", "--", "/app", "-x"])
        );
        assert!(c.get("args").is_none(), "args are left to the user");
        let back = restore(TargetKind::Deployment, "web", &overridden);
        assert_eq!(
            back["spec"]["template"]["spec"]["containers"][0]["command"],
            json!(["/app", "-x"])
        );
    }

    #[test]
    fn exec_probes_and_hooks_run_in_the_sensor_while_instrumented_and_as_they_were_after() {
        let s = saved(
            json!({"name": "web", "image": "r/web:1",
                   "readinessProbe": {"exec": {"command": ["check", "-q"]}, "periodSeconds": 1},
                   "lifecycle": {"preStop": {"exec": {"command": ["/stop.sh"]}}}}),
            Some(120),
        );
        // The annotation keeps them, so a restarted operator restores them.
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Original>(&text).unwrap(), s);
        let c = |patch: &Value| patch["spec"]["template"]["spec"]["containers"][0].clone();
        let inst = c(&instrumented(
            TargetKind::Deployment,
            "web",
            &s,
            &inst(SensorMode::Seccomp),
        ));
        assert_eq!(
            inst["readinessProbe"],
            json!({"exec": {"command": ["/.whittle/sensor", "exec", "--", "check", "-q"]}}),
            "only the command is whittle's; the period stays the user's field"
        );
        assert_eq!(
            inst["lifecycle"]["preStop"]["exec"]["command"],
            json!(["/.whittle/sensor", "exec", "--", "/stop.sh"])
        );
        let h = one("r/web:1-h@sha256:bb");
        for back in [
            restore(TargetKind::Deployment, "web", &s),
            hardened(TargetKind::Deployment, "web", &s, &h),
        ] {
            assert_eq!(
                c(&back)["readinessProbe"]["exec"]["command"],
                json!(["check", "-q"])
            );
            assert_eq!(
                c(&back)["lifecycle"]["preStop"]["exec"]["command"],
                json!(["/stop.sh"])
            );
        }
        let grace = inst["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "WHITTLE_SENSOR_GRACE")
            .unwrap()["value"]
            .clone();
        assert_eq!(
            grace, "57",
            "the pod's 120 s less delivery, half of it left to preStop"
        );

        // An annotation written before probes were wrapped: nothing of theirs to put back.
        let old: Original = serde_json::from_value(json!({"workflow": "w", "workflowUid": "u",
            "container": "web", "image": "r/web:1"}))
        .unwrap();
        assert!(
            c(&restore(TargetKind::Deployment, "web", &old))
                .get("readinessProbe")
                .is_none()
        );
    }

    #[test]
    fn ptrace_adds_no_capability_fanotify_adds_sys_admin_only() {
        let s = saved(json!({"name": "web", "image": "r/web:1"}), None);
        let ptrace = instrumented(TargetKind::Deployment, "web", &s, &inst(SensorMode::Ptrace));
        assert!(
            ptrace["spec"]["template"]["spec"]["containers"][0]
                .get("securityContext")
                .is_none()
        );
        let fanotify = instrumented(
            TargetKind::Deployment,
            "web",
            &s,
            &inst(SensorMode::Fanotify),
        );
        assert_eq!(
            fanotify["spec"]["template"]["spec"]["containers"][0]["securityContext"],
            json!({"capabilities": {"add": ["SYS_ADMIN"]}})
        );
    }

    #[test]
    fn the_sensor_knows_every_mode_a_workflow_asks_for_and_only_fanotify_needs_sys_admin() {
        use SensorMode::{Auto, Fanotify, Ptrace, Seccomp};
        for mode in [Auto, Seccomp, Ptrace, Fanotify] {
            assert!(ModeChoice::from_name(mode.as_str()).is_some(), "{mode:?}");
            assert_eq!(sensor_needs_sys_admin(mode), mode == Fanotify, "{mode:?}");
        }
    }

    #[test]
    fn the_sensor_env_reports_with_the_workflow_token_and_the_pod_token_and_keeps_the_users_names()
    {
        let s = saved(
            json!({"name": "web", "image": "r/web:1",
                   "env": [{"name": "POD_NAME", "value": "mine"}]}),
            None,
        );
        let patch = instrumented(TargetKind::Deployment, "web", &s, &inst(SensorMode::Ptrace));
        let env = patch["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "WHITTLE_REPORT_URL",
                "WHITTLE_SENSOR_MODE",
                "WHITTLE_REPORT_TOKEN",
                "WHITTLE_POD_TOKEN_FILE",
                "WHITTLE_SENSOR_GRACE",
                "POD_NAMESPACE",
                "CONTAINER_NAME"
            ]
        );
        assert_eq!(env[4]["value"], "55", "the raised 60 s less delivery");
        assert_eq!(env[1]["value"], "ptrace");
        assert_eq!(env[2]["value"], "v1.uid-1.00ff");
        assert_eq!(env[3]["value"], "/var/run/secrets/whittle.dev/report/token");
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "whittle"
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0],
            json!({"name": "whittle-pod-token", "mountPath": "/var/run/secrets/whittle.dev/report", "readOnly": true})
        );
        let back = restore(TargetKind::Deployment, "web", &s);
        assert!(back["spec"]["template"]["spec"].get("volumes").is_none());
        assert!(
            back["spec"]["template"]["spec"]["containers"][0]
                .get("volumeMounts")
                .is_none()
        );
    }

    /// A workload under test, in fanotify mode: the capabilities list is atomic, so applying
    /// whittle's `[SYS_ADMIN]` would replace the user's list, and leaving it out later would
    /// remove it.
    fn fanotify_workflow() -> HardeningWorkflow {
        let mut w = HardeningWorkflow::new(
            "harden-web",
            serde_json::from_value(
                json!({"target": {"name": "web"}, "observe": {"sensorMode": "fanotify"}}),
            )
            .unwrap(),
        );
        w.metadata.uid = Some("uid-1".into());
        w
    }

    #[test]
    fn the_users_own_capabilities_survive_fanotify_verification_and_restore() {
        let d = deployment(
            json!({"name": "web", "image": "r/web:1", "securityContext": {"runAsUser": 1000,
                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}}),
            None,
        );
        let c = target_container(&d, None).unwrap().clone();
        let s = Original::of(&fanotify_workflow(), &d, &[&c]);
        let patch = instrumented(
            TargetKind::Deployment,
            "web",
            &s,
            &inst(SensorMode::Fanotify),
        );
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"][0]["securityContext"],
            json!({"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}}),
            "the list is atomic: whittle applies the user's entries with its own"
        );
        let original = json!({"capabilities": {"add": ["NET_BIND_SERVICE"]}});
        for (what, config) in [
            ("restore", restore(TargetKind::Deployment, "web", &s)),
            (
                "hardened",
                hardened(TargetKind::Deployment, "web", &s, &one("r/web@sha256:bb")),
            ),
            (
                "promoted",
                promoted(TargetKind::Deployment, "web", &s, &one("r/web@sha256:bb")),
            ),
        ] {
            assert_eq!(
                config["spec"]["template"]["spec"]["containers"][0]["securityContext"], original,
                "{what}: whittle owns the list since it instrumented, so it applies the original"
            );
        }
        let back: Original = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(
            restore(TargetKind::Deployment, "web", &back),
            restore(TargetKind::Deployment, "web", &s),
            "via the annotation"
        );

        // Already there, SYS_ADMIN is not added twice.
        for own in ["SYS_ADMIN", "CAP_SYS_ADMIN", "ALL"] {
            let d = deployment(
                json!({"name": "web", "image": "r/web:1",
                       "securityContext": {"capabilities": {"add": [own]}}}),
                None,
            );
            let c = target_container(&d, None).unwrap().clone();
            let s = Original::of(&fanotify_workflow(), &d, &[&c]);
            let patch = instrumented(
                TargetKind::Deployment,
                "web",
                &s,
                &inst(SensorMode::Fanotify),
            );
            assert_eq!(
                patch["spec"]["template"]["spec"]["containers"][0]["securityContext"],
                json!({"capabilities": {"add": [own]}})
            );
        }
    }

    #[test]
    fn without_fanotify_whittle_never_applies_the_users_capabilities() {
        let s = saved(
            json!({"name": "web", "image": "r/web:1",
                   "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}}),
            None,
        );
        let patch = instrumented(TargetKind::Deployment, "web", &s, &inst(SensorMode::Ptrace));
        assert!(
            patch["spec"]["template"]["spec"]["containers"][0]
                .get("securityContext")
                .is_none()
        );
        for config in [
            restore(TargetKind::Deployment, "web", &s),
            hardened(TargetKind::Deployment, "web", &s, &one("r/web@sha256:bb")),
        ] {
            assert!(
                config["spec"]["template"]["spec"]["containers"][0]
                    .get("securityContext")
                    .is_none(),
                "a field whittle never took stays the user's alone"
            );
        }
        let fanotify_without_own = Original::of(
            &fanotify_workflow(),
            &deployment(json!({"name": "web", "image": "r/web:1"}), None),
            &[&serde_json::from_value(json!({"name": "web", "image": "r/web:1"})).unwrap()],
        );
        assert!(
            restore(TargetKind::Deployment, "web", &fanotify_without_own)["spec"]["template"]["spec"]["containers"][0]
                .get("securityContext")
                .is_none(),
            "no list of the user's: whittle's [SYS_ADMIN] is released, and so removed"
        );
    }

    #[test]
    fn the_app_keeps_sys_admin_only_when_the_user_gave_it() {
        let keeps = |container: Value| {
            let s = saved(container, None);
            let patch = instrumented(
                TargetKind::Deployment,
                "web",
                &s,
                &inst(SensorMode::Fanotify),
            );
            patch["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "WHITTLE_KEEP_SYS_ADMIN" && e["value"] == "1")
        };
        assert!(!keeps(json!({"name": "web", "image": "r/web:1"})));
        assert!(keeps(json!({"name": "web", "image": "r/web:1",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}}})));
        assert!(keeps(json!({"name": "web", "image": "r/web:1",
            "securityContext": {"privileged": true}})));
        assert!(!keeps(json!({"name": "web", "image": "r/web:1",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}})));
    }

    #[test]
    fn the_grace_period_is_raised_to_60s_and_put_back() {
        for (grace, raised, restored) in [
            (None, Some(60), None),
            (Some(10), Some(60), Some(10)),
            (Some(90), None, None),
        ] {
            let s = saved(json!({"name": "web", "image": "r/web:1"}), grace);
            let patch = instrumented(TargetKind::Deployment, "web", &s, &inst(SensorMode::Ptrace));
            let spec = &patch["spec"]["template"]["spec"];
            assert_eq!(spec["terminationGracePeriodSeconds"].as_i64(), raised);
            let back = restore(TargetKind::Deployment, "web", &s);
            assert_eq!(
                back["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64(),
                restored,
                "{grace:?}: only a value whittle changed is applied back; an unset one is released"
            );
        }
    }

    #[test]
    fn the_saved_original_round_trips_through_the_annotation() {
        let s = saved(
            json!({"name": "web", "image": "r/web:1", "args": ["a"],
                   "securityContext": {"runAsUser": 1000}}),
            Some(45),
        );
        let patch = instrumented(TargetKind::Deployment, "web", &s, &inst(SensorMode::Ptrace));
        let d: Deployment = serde_json::from_value(json!({
            "metadata": patch["metadata"].clone(), "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        let back = Original::on(&w(d.clone())).unwrap().unwrap();
        assert_eq!(back, s);
        assert!(back.belongs_to(&workflow()));
        let restore = restore(TargetKind::Deployment, "web", &s);
        assert!(restore["metadata"].get("annotations").is_none());
        assert_eq!(
            restore["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "web", "image": "r/web:1"})
        );
    }

    fn three_containers() -> Workload {
        serde_json::from_value::<Deployment>(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "web", "image": "r/web:1", "command": ["/app"]},
                {"name": "tail", "image": "r/tail:1",
                 "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}}},
                {"name": "other", "image": "r/other:1"}]}}}
        }))
        .unwrap()
        .into()
    }

    #[test]
    fn the_target_containers_are_those_named_or_all() {
        let d = three_containers();
        let mut workflow = workflow();
        workflow.spec.target.containers = Some(vec!["*".into()]);
        let all = target_containers(&d, &workflow.spec.target).unwrap();
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["web", "tail", "other"],
            "`*`: every one, in the pod's order"
        );
        workflow.spec.target.containers = Some(vec!["tail".into(), "web".into()]);
        let named = target_containers(&d, &workflow.spec.target).unwrap();
        let names: Vec<&str> = named.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tail", "web"], "in the order named");
        workflow.spec.target.containers = Some(vec!["web".into(), "nosuch".into()]);
        let err = target_containers(&d, &workflow.spec.target).unwrap_err();
        assert!(err.contains("no container \"nosuch\""), "{err}");
    }

    /// A pod with an app and a sidecar, both hardened: each saved, each instrumented with its
    /// own sensor identity, each restored, each on its own hardened image.
    #[test]
    fn two_containers_are_saved_instrumented_and_restored_each() {
        let d = three_containers();
        let mut workflow = workflow();
        workflow.spec.target.containers = Some(vec!["web".into(), "tail".into()]);
        let chosen = target_containers(&d, &workflow.spec.target).unwrap();
        let s = Original::of(&workflow, &d, &chosen);
        let images = Images::from([
            ("web".to_string(), "r/web:1-i@sha256:aa".to_string()),
            ("tail".to_string(), "r/tail:1-i@sha256:cc".to_string()),
        ]);
        let inst = Instrumentation {
            instrumented_images: &images,
            ..inst(SensorMode::Ptrace)
        };
        let patch = instrumented(TargetKind::Deployment, "web", &s, &inst);
        let containers = patch["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 2, "the third container is not whittle's");
        assert_eq!(containers[0]["image"], "r/web:1-i@sha256:aa");
        assert_eq!(containers[1]["image"], "r/tail:1-i@sha256:cc");
        assert_eq!(
            containers[1]["readinessProbe"]["exec"]["command"],
            json!(["/.whittle/sensor", "exec", "--", "cat", "/tmp/ok"])
        );
        for (c, name) in containers.iter().zip(["web", "tail"]) {
            let env = c["env"].as_array().unwrap();
            let identity = env.iter().find(|e| e["name"] == "CONTAINER_NAME");
            assert_eq!(identity.map(|e| &e["value"]), Some(&json!(name)));
        }

        // Through the annotation, both come back.
        let held: Deployment = serde_json::from_value(json!({
            "metadata": patch["metadata"].clone(), "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        let back = Original::on(&w(held)).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.more.len(), 1);
        let restored = restore(TargetKind::Deployment, "web", &back);
        assert_eq!(
            restored["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "r/web:1", "command": ["/app"]},
                   {"name": "tail", "image": "r/tail:1",
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}}}]),
            "every container whittle owns fields of is named, with its original values"
        );
        let hardened_images = Images::from([
            ("web".to_string(), "r/web@sha256:bb".to_string()),
            ("tail".to_string(), "r/tail@sha256:dd".to_string()),
        ]);
        let h = hardened(TargetKind::Deployment, "web", &back, &hardened_images);
        assert_eq!(
            h["spec"]["template"]["spec"]["containers"][1],
            json!({"name": "tail", "image": "r/tail@sha256:dd",
                   "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}}})
        );
        assert_eq!(
            h["spec"]["template"]["spec"]["containers"][0]["image"],
            "r/web@sha256:bb"
        );
    }

    fn app_and_two_init_containers() -> Workload {
        serde_json::from_value::<Deployment>(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {}, "template": {"spec": {
                "containers": [{"name": "web", "image": "r/web:1"}],
                "initContainers": [{"name": "setup", "image": "r/setup:1", "command": ["/prep"]},
                                   {"name": "other", "image": "r/other:1"}]}}}
        }))
        .unwrap()
        .into()
    }

    #[test]
    fn init_containers_are_targets_by_name_only() {
        let d = app_and_two_init_containers();
        let mut workflow = workflow();
        workflow.spec.target.containers = Some(vec!["*".into()]);
        let all = target_containers(&d, &workflow.spec.target).unwrap();
        assert_eq!(all.len(), 1, "`*` is the app containers");
        assert_eq!(
            target_container(&d, None).map(|c| &c.name),
            Ok(&"web".to_string())
        );
        assert_eq!(
            target_container(&d, Some("setup")).map(|c| &c.name),
            Ok(&"setup".to_string())
        );
        let err = target_container(&d, Some("nosuch")).unwrap_err();
        assert!(err.contains("(it has web, setup, other)"), "{err}");
    }

    /// An init container named beside the app: instrumented, hardened and restored in
    /// `initContainers`, the app in `containers`.
    #[test]
    fn a_named_init_container_is_changed_in_its_own_list() {
        let d = app_and_two_init_containers();
        let mut workflow = workflow();
        workflow.spec.target.containers = Some(vec!["web".into(), "setup".into()]);
        let chosen = target_containers(&d, &workflow.spec.target).unwrap();
        let s = Original::of(&workflow, &d, &chosen);
        assert!(!s.first.init && s.more[0].init);
        let images = Images::from([
            ("web".to_string(), "r/web:1-i@sha256:aa".to_string()),
            ("setup".to_string(), "r/setup:1-i@sha256:cc".to_string()),
        ]);
        let inst = Instrumentation {
            instrumented_images: &images,
            ..inst(SensorMode::Ptrace)
        };
        let patch = instrumented(TargetKind::Deployment, "web", &s, &inst);
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
        let init = &spec["initContainers"];
        assert_eq!(
            init.as_array().map(Vec::len),
            Some(1),
            "`other` is not whittle's"
        );
        assert_eq!(init[0]["image"], "r/setup:1-i@sha256:cc");
        assert_eq!(
            init[0]["command"],
            json!(["/.whittle/sensor", "--", "/prep"])
        );
        assert!(init[0]["env"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["name"] == "CONTAINER_NAME" && e["value"] == "setup")
        }));
        assert_eq!(init[0]["volumeMounts"][0]["name"], POD_TOKEN_VOLUME);

        let held: Deployment = serde_json::from_value(json!({
            "metadata": patch["metadata"].clone(), "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        let back = Original::on(&w(held)).unwrap().unwrap();
        assert_eq!(back, s, "the init flag survives the annotation");
        let restored = restore(TargetKind::Deployment, "web", &back);
        assert_eq!(
            restored["spec"]["template"]["spec"]["initContainers"],
            json!([{"name": "setup", "image": "r/setup:1", "command": ["/prep"]}])
        );
        let hardened_images = Images::from([
            ("web".to_string(), "r/web@sha256:bb".to_string()),
            ("setup".to_string(), "r/setup@sha256:dd".to_string()),
        ]);
        let h = hardened(TargetKind::Deployment, "web", &back, &hardened_images);
        assert_eq!(
            h["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "r/setup@sha256:dd"
        );
        assert_eq!(
            h["spec"]["template"]["spec"]["containers"][0]["image"],
            "r/web@sha256:bb"
        );
    }

    #[test]
    fn an_annotation_of_one_container_reads_as_before() {
        let old: Original = serde_json::from_value(json!({"workflow": "w", "workflowUid": "u",
            "container": "web", "image": "r/web:1", "command": ["/app"]}))
        .unwrap();
        assert_eq!(old.first.container, "web");
        assert!(old.more.is_empty());
        let text = serde_json::to_value(&old).unwrap();
        assert_eq!(
            text,
            json!({"workflow": "w", "workflowUid": "u", "container": "web", "image": "r/web:1",
                   "command": ["/app"]}),
            "one container is written as before"
        );
    }

    #[test]
    fn the_target_container_is_named_or_the_only_one() {
        let two: Deployment = serde_json::from_value(json!({
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}
        }))
        .unwrap();
        assert_eq!(
            target_container(&w(two.clone()), Some("b")).unwrap().name,
            "b"
        );
        let err = target_container(&w(two.clone()), None).unwrap_err();
        assert!(err.contains("2 containers (a, b)"), "{err}");
        let err = target_container(&w(two.clone()), Some("c")).unwrap_err();
        assert!(err.contains("no container \"c\""), "{err}");
    }

    #[test]
    fn verification_holds_the_deployment_and_promotion_lets_it_go() {
        let s = saved(
            json!({"name": "web", "image": "r/web:1", "command": ["/app"]}),
            Some(10),
        );
        let h = hardened(TargetKind::Deployment, "web", &s, &one("r/web@sha256:bb"));
        assert_eq!(
            h["spec"]["template"]["spec"],
            json!({"containers": [{"name": "web", "image": "r/web@sha256:bb", "command": ["/app"]}],
                   "terminationGracePeriodSeconds": 10}),
            "the original command and grace period, which whittle owns since it instrumented them, \
             and the hardened image: leaving them out would remove them"
        );
        assert!(h["metadata"]["annotations"][ORIGINAL_ANNOTATION].is_string());
        assert_eq!(
            h["spec"]["template"]["metadata"]["labels"][WORKFLOW_LABEL],
            "harden-web"
        );
        let p = promoted(TargetKind::Deployment, "web", &s, &one("r/web@sha256:bb"));
        assert!(p["metadata"].get("annotations").is_none());
        assert!(p["spec"]["template"].get("metadata").is_none());
        assert_eq!(
            p["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "web", "image": "r/web@sha256:bb", "command": ["/app"]})
        );
    }

    #[test]
    fn edits_by_others_after_whittles_apply_are_named() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                 "fieldsV1": {"f:spec": {}}},
                {"manager": "whittle", "operation": "Apply", "time": "2026-01-01T00:01:00Z",
                 "fieldsV1": {"f:spec": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "time": "2026-01-01T00:02:00Z",
                 "fieldsV1": {"f:metadata": {}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "time": "2026-01-01T00:02:00Z", "fieldsV1": {"f:status": {}}},
                {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:03:00Z",
                 "fieldsV1": {"f:spec": {}}},
                {"manager": "kubectl-scale", "operation": "Update", "subresource": "scale",
                 "time": "2026-01-01T00:04:00Z", "fieldsV1": {"f:spec": {}}}
            ]},
            "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        assert_eq!(
            edited_by_others(&w(d.clone())),
            ["kubectl-edit", "kubectl-scale"]
        );
        let untouched: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        assert!(edited_by_others(&w(untouched)).is_empty());
    }
}
