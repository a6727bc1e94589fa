//! The Helm chart, through the real helm: `helm lint`, and `helm template` with the default
//! values and with others, read back as objects and checked for what the chart promises (a
//! locked-down pod, least-privilege RBAC that still covers what the operator does, the optional
//! objects only when asked for).

use std::path::Path;

use serde_json::Value;
use whittle_testbed::cluster::helm::Helm;

fn chart() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/whittle")
        .display()
        .to_string()
}

/// The objects `helm template` renders with `sets` (`key=value`).
fn render(sets: &[&str]) -> Vec<Value> {
    let helm = Helm::new().expect("helm");
    let chart = chart();
    let mut args = vec![
        "template",
        "w",
        chart.as_str(),
        "--namespace",
        "whittle-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm.run(&args).expect("helm template");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .expect("helm template renders YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    k.sort();
    k
}

fn args(objects: &[Value]) -> Vec<String> {
    let d = find(objects, "Deployment").expect("a Deployment");
    serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .expect("args")
}

#[test]
fn helm_lint_is_clean() {
    let helm = Helm::new().expect("helm");
    let out = helm
        .run(&["lint", "--strict", &chart()])
        .expect("helm lint --strict");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 chart(s) failed"), "{text}");
}

#[test]
fn the_default_install_is_locked_down_and_elects_a_leader() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "no ServiceMonitor or NetworkPolicy unless asked for"
    );
    let d = find(&objects, "Deployment").expect("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod.get("hostNetwork").is_none(), "{pod}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/whittle-dev/whittle:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "2Gi");
    let env: Vec<&str> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default())
        .collect();
    for wanted in ["POD_NAME", "POD_NAMESPACE", "TMPDIR"] {
        assert!(env.contains(&wanted), "{wanted}: {env:?}");
    }
    let args = args(&objects);
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(
        args.contains(&"--service=w-whittle".to_string()),
        "{args:?}"
    );
    let svc = find(&objects, "Service").expect("Service");
    assert_eq!(
        svc["spec"]["ports"][0]["name"], "http",
        "the report address is found by this name"
    );
    let role = find(&objects, "Role").expect("Role");
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["leases"]));
}

/// Every API the operator calls, with the verbs it uses: the ClusterRole grants each, and no
/// rule grants a wildcard.
#[test]
fn the_cluster_role_covers_what_the_operator_calls_and_no_more() {
    let objects = render(&[]);
    let rules = find(&objects, "ClusterRole").expect("ClusterRole")["rules"]
        .as_array()
        .expect("rules")
        .clone();
    let grants = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has =
                |key: &str, v: &str| r[key].as_array().is_some_and(|a| a.iter().any(|x| x == v));
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let needed = [
        (
            "whittle.dev",
            "hardeningworkflows",
            "get list watch patch update",
        ),
        ("whittle.dev", "hardeningworkflows/status", "patch"),
        ("whittle.dev", "hardeningworkflows/finalizers", "update"),
        ("apps", "deployments", "get list watch patch"),
        ("", "pods", "get list watch"),
        ("", "pods/log", "get"),
        ("", "services", "get list"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("batch", "jobs", "get list watch create delete"),
        ("", "configmaps", "get list watch create patch delete"),
        ("", "secrets", "get create delete"),
        ("events.k8s.io", "events", "create patch"),
        ("", "events", "list"),
    ];
    for (group, resource, verbs) in needed {
        for verb in verbs.split(' ') {
            assert!(grants(group, resource, verb), "{group}/{resource}: {verb}");
        }
    }
    let text = serde_json::to_string(&rules).expect("json");
    assert!(!text.contains("\"*\""), "no wildcard: {text}");
    assert!(
        !grants("apps", "deployments", "delete") && !grants("apps", "deployments", "create"),
        "the user's Deployments are never created or deleted"
    );
}

#[test]
fn non_default_values_are_honoured() {
    let objects = render(&[
        "replicaCount=2",
        "leaderElection.enabled=false",
        "serviceMonitor.enabled=true",
        "networkPolicy.enabled=true",
        "image.repository=127.0.0.1:5000/whittle",
        "image.tag=dev",
        "spool.sizeLimit=5Gi",
        "logFormat=json",
        "concurrency=8",
        "hostNetwork=true",
        "extraVolumes[0].name=osv",
        "extraVolumes[0].configMap.name=osv-db",
        "extraVolumeMounts[0].name=osv",
        "extraVolumeMounts[0].mountPath=/var/lib/whittle/osv",
    ]);
    let by_digest = render(&["image.repository=r/whittle", "image.digest=sha256:abc"]);
    let d = find(&by_digest, "Deployment").expect("Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "r/whittle@sha256:abc"
    );
    let k = kinds(&objects);
    assert!(k.contains(&"ServiceMonitor".to_string()), "{k:?}");
    assert!(k.contains(&"NetworkPolicy".to_string()), "{k:?}");
    assert!(
        !k.contains(&"Role".to_string()),
        "no Lease permission without leader election: {k:?}"
    );
    let d = find(&objects, "Deployment").expect("Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "127.0.0.1:5000/whittle:dev");
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "5Gi");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["volumes"][1]["configMap"]["name"], "osv-db", "{pod}");
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"],
        "/var/lib/whittle/osv"
    );
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let args = args(&objects);
    assert!(!args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(args.contains(&"--log-format=json".to_string()), "{args:?}");
    assert!(args.contains(&"--concurrency=8".to_string()), "{args:?}");
    let monitor = find(&objects, "ServiceMonitor").expect("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let policy = find(&objects, "NetworkPolicy").expect("NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "http");
}
