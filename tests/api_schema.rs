//! The HardeningWorkflow CRD in a real API server: a valid workflow is accepted with its
//! defaults filled in and printed in `kubectl get` columns; invalid ones are refused with a
//! message that says what is wrong; the spec freezes once the workflow has started.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use whittle::api::spec::{CONTAINERS_MESSAGE, FAIL_ON_MESSAGE, IMMUTABLE_MESSAGE, VULN_DB_MESSAGE};
use whittle::api::{HardeningWorkflow, HardeningWorkflowStatus, Phase};
use whittle_testbed::cluster::control_plane::ControlPlane;

fn workflow(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "whittle.dev/v1alpha1",
        "kind": "HardeningWorkflow",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a DynamicObject")
}

fn valid_spec() -> Value {
    json!({
        "target": {"kind": "Deployment", "name": "web", "container": "nginx"},
        "image": "127.0.0.1:5000/shop/web:1.2",
        "observe": {"duration": "1h30m", "minReports": 2, "sensorMode": "fanotify"},
        "exercise": {
            "service": "web",
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "curl", "image": "127.0.0.1:5000/curl:1", "args": ["http://web/"]}]
            }}
        },
        "harden": {"include": ["/etc/nginx"], "exclude": ["/usr/share/doc/**"]},
    })
}

/// Merges `patch` into the valid spec (null deletes a key).
fn spec_with(patch: Value) -> Value {
    let mut spec = valid_spec();
    merge(&mut spec, patch);
    spec
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

async fn refused(api: &Api<DynamicObject>, name: &str, spec: Value, expected: &[&str]) {
    let err = api
        .create(&PostParams::default(), &workflow(name, spec))
        .await
        .expect_err(&format!("{name}: the API server must refuse it"));
    let text = err.to_string();
    for part in expected {
        assert!(text.contains(part), "{name}: {part:?} not in: {text}");
    }
}

fn dynamic_api(client: Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, ns, &HardeningWorkflow::api_resource())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_enforces_the_schema() {
    let plane = ControlPlane::start().await.expect("control plane");
    plane
        .install_crds(&[whittle::api::crd().expect("crd")])
        .await
        .expect("the API server accepts the CRD");
    let ns = plane.namespace("schema").await.expect("namespace");
    let api = dynamic_api(plane.client(), &ns);

    // Accepted, with every default the README promises filled in by the API server.
    api.create(&PostParams::default(), &workflow("ok", valid_spec()))
        .await
        .expect("a valid workflow is accepted");
    let typed: Api<HardeningWorkflow> = Api::namespaced(plane.client(), &ns);
    let minimal = typed
        .create(
            &PostParams::default(),
            &HardeningWorkflow::new(
                "minimal",
                serde_json::from_value(json!({"target": {"name": "web"}})).expect("spec"),
            ),
        )
        .await
        .expect("a minimal workflow is accepted");
    let stored = serde_json::to_value(&minimal.spec).expect("json");
    assert_eq!(
        stored,
        json!({
            "target": {"kind": "Deployment", "name": "web"},
            "registry": {"insecure": false},
            "observe": {"minReports": 1, "collectTimeout": "5m", "sensorMode": "auto"},
            "harden": {"include": [], "exclude": [], "timeout": "15m", "sbom": false, "compression": "gzip"},
            "verify": {"enabled": true, "timeout": "5m"},
            "promote": false,
            "vulnerabilities": {},
            "sign": {},
        })
    );
    // An explicit null means "unset": pruned, not stored.
    let mut with_null = valid_spec();
    with_null["hardenedImage"] = Value::Null;
    let nulled = api
        .create(&PostParams::default(), &workflow("nulled", with_null))
        .await
        .expect("null is accepted as unset");
    assert!(
        nulled.data["spec"].get("hardenedImage").is_none(),
        "{}",
        nulled.data
    );

    refused(
        &api,
        "no-target",
        spec_with(json!({"target": null})),
        &["spec.target", "Required value"],
    )
    .await;
    refused(
        &api,
        "no-name",
        spec_with(json!({"target": {"name": null}})),
        &["spec.target.name", "Required value"],
    )
    .await;
    refused(
        &api,
        "words",
        spec_with(json!({"observe": {"duration": "10 minutes"}})),
        &[
            "spec.observe.duration",
            "must be a duration such as 30s, 10m or 1h30m",
        ],
    )
    .await;
    refused(
        &api,
        "zero-timeout",
        spec_with(json!({"harden": {"timeout": "0s"}})),
        &["spec.harden.timeout", "must be longer than 0s"],
    )
    .await;
    // A workflow holds one of the operator's reconcile slots and a spool for this long.
    refused(
        &api,
        "day-long-timeout",
        spec_with(json!({"harden": {"timeout": "2h1s"}})),
        &["spec.harden.timeout", "must be at most 2h"],
    )
    .await;
    api.create(
        &PostParams::default(),
        &workflow(
            "longest-timeout",
            spec_with(json!({"harden": {"timeout": "1h60m"}})),
        ),
    )
    .await
    .expect("harden.timeout of exactly the maximum is accepted");
    refused(
        &api,
        "strace",
        spec_with(json!({"observe": {"sensorMode": "strace"}})),
        &[
            "spec.observe.sensorMode",
            "Unsupported value: \"strace\"",
            "\"auto\"",
            "\"seccomp\"",
            "\"ptrace\"",
            "\"fanotify\"",
        ],
    )
    .await;
    let packed = api
        .create(
            &PostParams::default(),
            &workflow(
                "packs",
                spec_with(json!({"harden": {"packs": ["ca-certificates", "tzdata"]}})),
            ),
        )
        .await
        .expect("named include packs are accepted");
    assert_eq!(
        packed.data["spec"]["harden"]["packs"],
        json!(["ca-certificates", "tzdata"])
    );
    refused(
        &api,
        "unknown-pack",
        spec_with(json!({"harden": {"packs": ["openssl"]}})),
        &[
            "spec.harden.packs[0]",
            "Unsupported value: \"openssl\"",
            "\"ca-certificates\"",
            "\"nss\"",
            "\"tzdata\"",
            "\"locale\"",
        ],
    )
    .await;
    refused(
        &api,
        "cronjob",
        spec_with(json!({"target": {"kind": "CronJob"}})),
        &[
            "spec.target.kind",
            "Unsupported value: \"CronJob\"",
            "\"DaemonSet\"",
        ],
    )
    .await;
    refused(
        &api,
        "same-image",
        spec_with(json!({"hardenedImage": "127.0.0.1:5000/shop/web:1.2"})),
        &[
            "spec.hardenedImage",
            "hardenedImage must differ from image: whittle never overwrites the source image",
        ],
    )
    .await;
    refused(
        &api,
        "same-instrumented",
        spec_with(json!({"instrumentedImage": "r/x:1", "hardenedImage": "r/x:1"})),
        &[
            "spec.hardenedImage",
            "hardenedImage must differ from instrumentedImage",
        ],
    )
    .await;
    refused(
        &api,
        "no-reports",
        spec_with(json!({"observe": {"minReports": 0}})),
        &[
            "spec.observe.minReports",
            "should be greater than or equal to 1",
        ],
    )
    .await;
    refused(
        &api,
        "blind-promote",
        spec_with(json!({"promote": true, "verify": {"enabled": false}})),
        &["spec.promote", "promote needs verify.enabled"],
    )
    .await;
    refused(
        &api,
        "no-template",
        spec_with(json!({"exercise": {"template": null}})),
        &["spec.exercise.template", "Required value"],
    )
    .await;
    // vulnerabilities.db names a database the operator's admin configured: a URL would make
    // the operator fetch what a tenant chooses (the cloud metadata service), a path would tell
    // the tenant which files exist in the operator's pod.
    for (name, db) in [
        (
            "db-metadata-url",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        ),
        ("db-shadow", "/etc/shadow"),
        ("db-relative", "../../var/run/secrets"),
        ("db-upper", "Debian"),
        ("db-long", &"a".repeat(64)),
    ] {
        refused(
            &api,
            name,
            spec_with(json!({"vulnerabilities": {"db": db}})),
            &["spec.vulnerabilities.db", VULN_DB_MESSAGE],
        )
        .await;
    }
    api.create(
        &PostParams::default(),
        &workflow(
            "db-name",
            spec_with(json!({"vulnerabilities": {"db": "debian-12"}})),
        ),
    )
    .await
    .expect("a database name is accepted");
    // The gate needs a database: without one nothing is known and every image would pass.
    refused(
        &api,
        "fail-on-no-db",
        spec_with(json!({"vulnerabilities": {"failOn": {"severity": "High"}}})),
        &["spec.vulnerabilities.failOn", FAIL_ON_MESSAGE],
    )
    .await;
    // Several containers: named, or `*` alone; not with what is about one image.
    let containers = |list: Value| json!({"target": {"name": "web", "containers": list}, "registry": {"insecure": true}});
    for (name, list) in [("two", json!(["web", "tail"])), ("all", json!(["*"]))] {
        api.create(&PostParams::default(), &workflow(name, containers(list)))
            .await
            .unwrap_or_else(|e| panic!("{name}: target.containers is accepted: {e}"));
    }
    refused(
        &api,
        "star-and-more",
        containers(json!(["*", "web"])),
        &["spec.target.containers", "'*' means every container"],
    )
    .await;
    refused(
        &api,
        "container-and-containers",
        spec_with(json!({"target": {"containers": ["web"]}})),
        &["spec.target.containers", "not both"],
    )
    .await;
    refused(
        &api,
        "containers-duplicate",
        containers(json!(["web", "web"])),
        &["spec.target.containers", "Duplicate value"],
    )
    .await;
    for (name, field) in [
        (
            "containers-image",
            json!({"image": "127.0.0.1:5000/shop/web:1.2"}),
        ),
        ("containers-continuous", json!({"continuous": {}})),
        ("containers-sign", json!({"sign": {"keySecret": "k"}})),
        (
            "containers-db",
            json!({"vulnerabilities": {"db": "debian"}}),
        ),
        ("containers-sbom", json!({"harden": {"sbom": true}})),
    ] {
        let mut spec = containers(json!(["web", "tail"]));
        merge(&mut spec, field);
        refused(
            &api,
            name,
            spec,
            &["spec.target.containers", CONTAINERS_MESSAGE],
        )
        .await;
    }
    refused(
        &api,
        "fail-on-unknown",
        spec_with(json!({"vulnerabilities": {"db": "debian", "failOn": {"severity": "Unknown"}}})),
        &["spec.vulnerabilities.failOn.severity", "Unsupported value"],
    )
    .await;
    let gated = api
        .create(
            &PostParams::default(),
            &workflow(
                "fail-on",
                spec_with(
                    json!({"vulnerabilities": {"db": "debian", "failOn": {"severity": "High"}}}),
                ),
            ),
        )
        .await
        .expect("a gate with a database is accepted");
    assert_eq!(
        gated.data["spec"]["vulnerabilities"]["failOn"],
        json!({"severity": "High", "fixable": true}),
        "fixable defaults to true"
    );

    // Before the controller starts, a typo can be fixed in place.
    api.patch(
        "ok",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"observe": {"duration": "20m"}}})),
    )
    .await
    .expect("the spec of a workflow that has not started can change");
    set_phase(&typed, "ok", Phase::Pending).await;
    api.patch(
        "ok",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"observe": {"duration": "30m"}}})),
    )
    .await
    .expect("the spec of a Pending workflow can change");

    // Once it has started, it cannot: neither a field of ours nor one inside the template.
    set_phase(&typed, "ok", Phase::Instrumenting).await;
    for (what, patch) in [
        ("observe.duration", json!({"observe": {"duration": "40m"}})),
        (
            "hardenedImage",
            json!({"hardenedImage": "127.0.0.1:5000/shop/web:other"}),
        ),
        (
            "exercise.template",
            json!({"exercise": {"template": {"spec": {"restartPolicy": "OnFailure"}}}}),
        ),
    ] {
        let err = api
            .patch(
                "ok",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": patch})),
            )
            .await
            .expect_err(&format!("changing {what} after the start is refused"));
        let text = err.to_string();
        assert!(
            text.contains(IMMUTABLE_MESSAGE) && text.contains("spec"),
            "{what}: {text}"
        );
    }
    // Labels and the status still move.
    api.patch(
        "ok",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "shop"}}})),
    )
    .await
    .expect("metadata can change after the start");
    set_phase(&typed, "ok", Phase::Observing).await;
    let now = typed.get("ok").await.expect("get");
    assert_eq!(
        now.spec.observe.duration.as_ref().map(|d| d.as_str()),
        Some("30m")
    );

    // kubectl shows the printer columns.
    let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
    let out = std::process::Command::new(kubectl)
        .args(["--kubeconfig", plane.kubeconfig().to_str().expect("utf-8")])
        .args(["get", "hw", "-n", &ns, "ok"])
        .output()
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PHASE",
            "TARGET",
            "REPORTS",
            "REDUCTION",
            "%",
            "VULNS",
            "REMOVED",
            "HARDENED",
            "IMAGE",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table.contains("Observing") && table.contains("web"),
        "{table}"
    );
}

/// Moves the workflow to `phase` through the status subresource, as the controller does.
async fn set_phase(api: &Api<HardeningWorkflow>, name: &str, phase: Phase) {
    let mut status = HardeningWorkflowStatus::default();
    status.set_phase(
        phase,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("status of {name} -> {phase}: {e}"));
}
