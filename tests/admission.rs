//! The chart's ValidatingAdmissionPolicy on a real API server: a user who may create
//! `HardeningWorkflow`s but lacks a permission the workflow would use through the operator is
//! refused at admission, with a message naming the missing permission, and an admin's identical
//! workflow is admitted. `oci:` locations (directories in the operator's pod) are refused for
//! everyone. Users are impersonated with `kubectl --as`, as a cluster admin would try it.
//!
//! The chart is installed with the real helm (CRD, RBAC, policy and binding; no operator pod).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use whittle_testbed::cluster::control_plane::ControlPlane;
use whittle_testbed::cluster::helm::Helm;

const TENANT: &str = "tenant";

struct Kubectl {
    kubeconfig: PathBuf,
    namespace: String,
}

/// What kubectl said: whether it succeeded, and its stdout and stderr together.
struct Outcome {
    ok: bool,
    text: String,
}

impl Kubectl {
    fn run(&self, user: Option<&str>, args: &[&str], stdin: Option<&str>) -> Outcome {
        let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
        let mut cmd = Command::new(kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.namespace]);
        if let Some(user) = user {
            cmd.args(["--as", user]);
        }
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write to kubectl");
        }
        let out = child.wait_with_output().expect("kubectl output");
        Outcome {
            ok: out.status.success(),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    fn apply(&self, object: &Value) {
        let out = self.run(None, &["apply", "-f", "-"], Some(&object.to_string()));
        assert!(out.ok, "{}", out.text);
    }

    /// `kubectl [--as user] create -f workflow.json`.
    fn create(&self, user: Option<&str>, workflow: &Value, dry_run: bool) -> Outcome {
        let mut args = vec!["create", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        self.run(user, &args, Some(&workflow.to_string()))
    }

    fn can_i(&self, user: &str, verb: &str, resource: &str) -> bool {
        self.run(Some(user), &["auth", "can-i", verb, resource], None)
            .text
            .trim()
            == "yes"
    }
}

fn workflow(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "whittle.dev/v1alpha1",
        "kind": "HardeningWorkflow",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name}, "rules": rules})
}

fn binding(name: &str, user: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

/// Grants `user` the `rules` in the namespace and waits until the authorizer says so (RBAC is
/// read from an informer cache).
fn grant(k: &Kubectl, name: &str, user: &str, rules: Value, check: (&str, &str)) {
    k.apply(&role(name, rules));
    k.apply(&binding(name, user));
    wait("the grant to take effect", || {
        k.can_i(user, check.0, check.1)
    });
}

fn wait(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn install_chart(kubeconfig: &Path) {
    let helm = Helm::with_kubeconfig(kubeconfig).expect("helm");
    let chart = support::chart::dir();
    let mut args = vec!["install", "whittle", &chart];
    args.extend(support::chart::WITHOUT_OPERATOR);
    helm.run(&args).expect("helm install the chart");
}

/// Asserts that the tenant is refused with a message containing each of `words`, and that the
/// admin's identical workflow is admitted.
fn refused_for_tenant_admitted_for_admin(k: &Kubectl, case: &str, w: &Value, words: &[&str]) {
    let out = k.create(Some(TENANT), w, false);
    assert!(
        !out.ok,
        "{case}: a tenant lacking the permission was admitted:\n{}",
        out.text
    );
    for word in words {
        assert!(
            out.text.contains(word),
            "{case}: the refusal does not say {word:?}:\n{}",
            out.text
        );
    }
    assert!(
        out.text.contains(&format!("user \"{TENANT}\"")),
        "{case}: the refusal names the user:\n{}",
        out.text
    );
    eprintln!("{case}: {}", out.text.trim());
    let admin = k.create(None, w, false);
    assert!(
        admin.ok,
        "{case}: the admin's identical workflow was refused:\n{}",
        admin.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_grants_nothing_its_creator_lacks() {
    let plane = ControlPlane::start().await.expect("control plane");
    install_chart(&plane.kubeconfig());
    let ns = plane.namespace("tenant").await.expect("namespace");
    let k = Kubectl {
        kubeconfig: plane.kubeconfig(),
        namespace: ns.clone(),
    };

    // The tenant may create workflows, and patch the one Deployment `web`: nothing else.
    grant(
        &k,
        "tenant-workflows",
        TENANT,
        json!([{"apiGroups": ["whittle.dev"], "resources": ["hardeningworkflows"],
                "verbs": ["create", "get", "list"]}]),
        ("create", "hardeningworkflows.whittle.dev"),
    );
    grant(
        &k,
        "tenant-web",
        TENANT,
        json!([{"apiGroups": ["apps"], "resources": ["deployments"],
                "resourceNames": ["web"], "verbs": ["get", "patch"]}]),
        ("patch", "deployments.apps/web"),
    );

    // The policy is read by the API server from an informer: wait until it is in force.
    let probe = workflow(
        "probe",
        json!({"target": {"name": "web"}, "image": "oci:/probe"}),
    );
    wait("the admission policy to be in force", || {
        !k.create(None, &probe, true).ok
    });
    // The API server type-checks each expression against the CRD's schema: a misspelt field
    // would only show up here (and evaluate to an error at admission).
    let policy_status = || {
        let out = k.run(
            None,
            &[
                "get",
                "validatingadmissionpolicy",
                "whittle-workflow-creator",
                "-o",
                "jsonpath={.status}",
            ],
            None,
        );
        assert!(out.ok, "{}", out.text);
        serde_json::from_str::<Value>(&out.text).unwrap_or(Value::Null)
    };
    wait("the policy to be type-checked", || {
        !policy_status()["typeChecking"].is_null()
    });
    let status = policy_status();
    assert!(
        status["typeChecking"]["expressionWarnings"].is_null(),
        "{status}"
    );

    // Within its rights, the tenant is admitted.
    let own = workflow("own", json!({"target": {"name": "web"}}));
    let out = k.create(Some(TENANT), &own, false);
    assert!(out.ok, "the tenant's own workflow: {}", out.text);

    let exercise =
        json!({"template": {"spec": {"containers": [{"name": "check", "image": "busybox"}]}}});
    let cases = [
        (
            "a target the tenant cannot patch",
            workflow("db", json!({"target": {"name": "db"}})),
            vec!["lacks patch on deployments.apps \"db\""],
        ),
        (
            "a StatefulSet of the target's name, which the tenant cannot patch",
            workflow(
                "web-set",
                json!({"target": {"name": "web", "kind": "StatefulSet"}}),
            ),
            vec!["lacks patch on statefulsets.apps \"web\""],
        ),
        (
            "an exercise without create on jobs",
            workflow(
                "exercised",
                json!({"target": {"name": "web"}, "exercise": exercise}),
            ),
            vec!["lacks create on jobs.batch", "spec.exercise"],
        ),
        (
            "registry credentials the tenant cannot read",
            workflow(
                "creds",
                json!({"target": {"name": "web"}, "registry": {"credentialsSecret": "admin-creds"}}),
            ),
            vec![
                "lacks get on secrets \"admin-creds\"",
                "spec.registry.credentialsSecret",
            ],
        ),
        (
            "a signing key the tenant cannot read",
            workflow(
                "signed",
                json!({"target": {"name": "web"}, "sign": {"keySecret": "admin-key"}}),
            ),
            vec!["lacks get on secrets \"admin-key\"", "spec.sign.keySecret"],
        ),
    ];
    for (case, w, words) in &cases {
        refused_for_tenant_admitted_for_admin(&k, case, w, words);
    }

    // An `oci:` location is a directory in the operator's pod: nobody's to name.
    for field in ["image", "instrumentedImage", "hardenedImage"] {
        let name = format!("oci-{}", field.to_lowercase());
        let w = workflow(
            &name,
            json!({"target": {"name": "web"}, field: "oci:/var/spool/whittle/x:1"}),
        );
        for user in [Some(TENANT), None] {
            let out = k.create(user, &w, false);
            assert!(!out.ok, "{field} oci: admitted for {user:?}:\n{}", out.text);
            assert!(
                out.text.contains(&format!("spec.{field}")) && out.text.contains("oci:"),
                "{field}: {}",
                out.text
            );
        }
    }

    // Given each permission, the tenant's workflow that uses them all is admitted.
    grant(
        &k,
        "tenant-more",
        TENANT,
        json!([
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"],
             "resourceNames": ["own-creds", "own-key"], "verbs": ["get"]},
            {"apiGroups": ["whittle.dev"], "resources": ["hardeningworkflows"],
             "verbs": ["patch", "update"]},
        ]),
        ("create", "jobs.batch"),
    );
    let full = workflow(
        "full",
        json!({"target": {"name": "web"}, "exercise": exercise,
               "registry": {"credentialsSecret": "own-creds"},
               "sign": {"keySecret": "own-key"}}),
    );
    let out = k.create(Some(TENANT), &full, false);
    assert!(out.ok, "the tenant's full workflow: {}", out.text);

    // An update is checked like a create: the new spec may not name what the tenant lacks.
    let out = k.run(
        Some(TENANT),
        &[
            "patch",
            "hardeningworkflow",
            "full",
            "--type=merge",
            "-p",
            r#"{"spec":{"registry":{"credentialsSecret":"admin-creds"}}}"#,
        ],
        None,
    );
    assert!(
        !out.ok && out.text.contains("secrets \"admin-creds\""),
        "an update to another's Secret: {}",
        out.text
    );
    let out = k.run(
        Some(TENANT),
        &[
            "patch",
            "hardeningworkflow",
            "full",
            "--type=merge",
            "-p",
            r#"{"spec":{"image":"oci:/etc"}}"#,
        ],
        None,
    );
    assert!(
        !out.ok && out.text.contains("oci:"),
        "an update to an oci: image: {}",
        out.text
    );
    // Metadata alone (a label, a finalizer the garbage collector removes) grants nothing: an
    // update that leaves the spec as it was is not checked against it.
    let out = k.run(
        Some(TENANT),
        &["label", "hardeningworkflow", "creds", "team=shop"],
        None,
    );
    assert!(
        out.ok,
        "a label on the admin's workflow by a user who may patch workflows: {}",
        out.text
    );
}
