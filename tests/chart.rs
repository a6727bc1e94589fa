//! The Helm chart, through the real helm: `helm lint`, and `helm template` with the default
//! values and with others, read back as objects and checked for what the chart promises (a
//! locked-down pod, least-privilege RBAC that still covers what the operator does, the optional
//! objects only when asked for).

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use whittle::api::names::WORKFLOW_LABEL;
use whittle_testbed::cluster::helm::Helm;

use support::chart::{dir as chart, render};

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
    for sets in [&[][..], &["--set", "watchNamespaces={shop,web}"]] {
        let mut args = vec!["lint", "--strict"];
        args.extend(sets);
        let chart = chart();
        args.push(&chart);
        let out = helm.run(&args).expect("helm lint --strict");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("0 chart(s) failed"), "{sets:?}: {text}");
    }
}

#[test]
fn the_default_install_is_locked_down_and_elects_a_leader() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding"
        ],
        "no ServiceMonitor unless asked for"
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
    let role = named(
        &objects,
        "Role",
        "whittle-system",
        "w-whittle-leader-election",
    );
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["leases"]));
}

/// One grant: (API group, resource, verb, resourceNames), one row per verb.
type Grant = (String, String, String, Vec<String>);

/// The grants of a Role's or ClusterRole's rules, one per (group, resource, verb).
fn grants(role: &Value) -> BTreeSet<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb, names.clone()));
                }
            }
        }
    }
    out
}

/// `(group, resource, "verb verb…", resourceNames)` as [`Grant`]s.
fn expect(rows: &[(&str, &str, &str, &[&str])]) -> BTreeSet<Grant> {
    rows.iter()
        .flat_map(|(group, resource, verbs, names)| {
            verbs.split(' ').map(|verb| {
                (
                    group.to_string(),
                    resource.to_string(),
                    verb.to_string(),
                    names.iter().map(|n| n.to_string()).collect(),
                )
            })
        })
        .collect()
}

/// What the operator does in each namespace it watches, call by call (`src/controller`,
/// `src/reports/store.rs`, `src/server`): exactly these, no more.
fn per_namespace_grants() -> BTreeSet<Grant> {
    expect(&[
        // The controller's watch, the finalizer's JSON patch, the intake's get; a policy's
        // apply and delete of its workflows.
        (
            "whittle.dev",
            "hardeningworkflows",
            "get list watch create patch delete",
            &[],
        ),
        ("whittle.dev", "hardeningworkflows/status", "patch", &[]),
        ("whittle.dev", "hardeningpolicies", "get list watch", &[]),
        ("whittle.dev", "hardeningpolicies/status", "patch", &[]),
        // Read, watched, and patched (server-side apply) to instrument, verify and restore.
        ("apps", "deployments", "get list watch patch", &[]),
        ("apps", "statefulsets", "get list watch patch", &[]),
        ("apps", "daemonsets", "get list watch patch", &[]),
        // Deleted only for an OnDelete target's rollout and a StatefulSet's forced rollback.
        ("", "pods", "get list watch delete", &[]),
        ("", "pods/log", "get", &[]),
        ("", "services", "list", &[]),
        ("discovery.k8s.io", "endpointslices", "list", &[]),
        ("batch", "jobs", "get list watch create delete", &[]),
        ("", "configmaps", "get list watch create update delete", &[]),
        // Registry credentials and signing keys a workflow names, pull secrets of its target.
        ("", "secrets", "get", &[]),
        ("events.k8s.io", "events", "create patch", &[]),
        ("", "events", "list", &[]),
    ])
}

/// Cluster-scoped: the pod tokens sensors present, reviewed; the report pages' token and
/// permission reviews, and a cluster policy's page; with every namespace watched (the
/// default), ClusterHardeningPolicies and the namespaces they select.
fn cluster_grants() -> BTreeSet<Grant> {
    namespaced_install_cluster_grants()
        .union(&expect(&[
            ("whittle.dev", "clusterhardeningpolicies", "list watch", &[]),
            (
                "whittle.dev",
                "clusterhardeningpolicies/status",
                "patch",
                &[],
            ),
            ("", "namespaces", "list", &[]),
        ]))
        .cloned()
        .collect()
}

/// What a namespaced install grants cluster-wide: reviews, and cluster policies' pages.
fn namespaced_install_cluster_grants() -> BTreeSet<Grant> {
    expect(&[
        ("authentication.k8s.io", "tokenreviews", "create", &[]),
        (
            "authorization.k8s.io",
            "subjectaccessreviews",
            "create",
            &[],
        ),
        ("whittle.dev", "clusterhardeningpolicies", "get", &[]),
    ])
}

/// In the operator's own namespace: its report key Secret (create cannot be limited by name)
/// and its own Service, for the report address.
fn own_namespace_grants() -> BTreeSet<Grant> {
    expect(&[
        ("", "secrets", "get", &["whittle-report-key"]),
        ("", "secrets", "create", &[]),
        ("", "services", "get", &["w-whittle"]),
    ])
}

fn named<'a>(objects: &'a [Value], kind: &str, namespace: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && (namespace.is_empty() || o["metadata"]["namespace"] == namespace)
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}: {:?}", kinds(objects)))
}

/// The subjects of a binding are the operator's ServiceAccount and its roleRef is `role`.
fn binds_the_operator(binding: &Value, kind: &str, role: &str) {
    assert_eq!(binding["roleRef"]["kind"], kind, "{binding}");
    assert_eq!(binding["roleRef"]["name"], role, "{binding}");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "w-whittle",
            "namespace": "whittle-system"}]),
        "{binding}"
    );
}

/// Every API the operator calls, with the verbs it uses, and nothing else: cluster-wide by
/// default, the report key only by name in its own namespace, no Secret create or delete
/// anywhere else, no wildcard.
#[test]
fn the_cluster_role_covers_what_the_operator_calls_and_no_more() {
    let objects = render(&[]);
    let cluster_role = named(&objects, "ClusterRole", "", "w-whittle");
    let wanted: BTreeSet<Grant> = per_namespace_grants()
        .union(&cluster_grants())
        .cloned()
        .collect();
    assert_eq!(grants(cluster_role), wanted);
    binds_the_operator(
        named(&objects, "ClusterRoleBinding", "", "w-whittle"),
        "ClusterRole",
        "w-whittle",
    );
    let own = named(&objects, "Role", "whittle-system", "w-whittle-self");
    assert_eq!(grants(own), own_namespace_grants());
    binds_the_operator(
        named(&objects, "RoleBinding", "whittle-system", "w-whittle-self"),
        "Role",
        "w-whittle-self",
    );
    for o in &objects {
        if o["kind"] == "ClusterRole" || o["kind"] == "Role" {
            let g = grants(o);
            assert!(
                !g.iter()
                    .any(|(group, resource, verb, _)| [group, resource, verb]
                        .iter()
                        .any(|s| s.as_str() == "*")),
                "no wildcard: {o}"
            );
            let secrets = |verb: &str| g.iter().any(|(_, r, v, _)| r == "secrets" && v == verb);
            assert!(
                !secrets("delete") && !secrets("update") && !secrets("patch"),
                "{o}"
            );
            assert!(
                !secrets("create") || o["metadata"]["namespace"] == "whittle-system",
                "Secrets are created only in the operator's namespace: {o}"
            );
            let workloads = |verb: &str| {
                g.iter().any(|(_, r, v, _)| {
                    ["deployments", "statefulsets", "daemonsets"].contains(&r.as_str()) && v == verb
                })
            };
            assert!(
                !workloads("create") && !workloads("delete"),
                "the user's workloads are never created or deleted: {o}"
            );
        }
    }
}

/// `watchNamespaces`: a Role per listed namespace instead of cluster-wide rights to namespaced
/// resources, and the operator told to watch only those.
#[test]
fn a_namespaced_install_has_roles_per_namespace_and_no_cluster_wide_rights() {
    let objects = render(&["watchNamespaces={shop,web}"]);
    for ns in ["shop", "web"] {
        let role = named(&objects, "Role", ns, "w-whittle");
        assert_eq!(grants(role), per_namespace_grants(), "{ns}");
        binds_the_operator(
            named(&objects, "RoleBinding", ns, "w-whittle"),
            "Role",
            "w-whittle",
        );
    }
    // The roles aggregated into the built-in admin/edit/view are for users, and the chart
    // binds them to no one.
    let aggregated = |o: &Value| {
        o["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        })
    };
    for binding in objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
        assert!(
            !role.ends_with("-edit") && !role.ends_with("-view"),
            "{binding}"
        );
    }
    let cluster_roles: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" && !aggregated(o))
        .collect();
    assert_eq!(cluster_roles.len(), 1, "{cluster_roles:?}");
    assert_eq!(
        grants(cluster_roles[0]),
        namespaced_install_cluster_grants(),
        "nothing namespaced cluster-wide, and no cluster policies (they need every namespace)"
    );
    assert_eq!(
        grants(named(&objects, "Role", "whittle-system", "w-whittle-self")),
        own_namespace_grants()
    );
    let watched: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "w-whittle")
        .map(|o| {
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(watched, ["shop", "web"]);
    let flags: Vec<String> = args(&objects)
        .into_iter()
        .filter(|a| a.starts_with("--watch-namespace"))
        .collect();
    assert_eq!(flags, ["--watch-namespace=shop", "--watch-namespace=web"]);
    assert!(
        !args(&render(&[]))
            .iter()
            .any(|a| a.starts_with("--watch-namespace")),
        "cluster-wide by default"
    );
    // Sensors report only from the watched namespaces.
    let policy = find(&objects, "NetworkPolicy").expect("NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"],
        serde_json::json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
            "operator": "In", "values": ["shop", "web"]}]})
    );
}

/// On by default: the report port from instrumented pods (labelled by whittle, in any
/// namespace), `/metrics` from the monitoring namespace, nothing else.
#[test]
fn the_network_policy_admits_sensors_and_monitoring_only() {
    let objects = render(&[]);
    let policy = find(&objects, "NetworkPolicy").expect("a NetworkPolicy by default");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "whittle",
            "app.kubernetes.io/instance": "w"})
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let http = serde_json::json!([{"port": "http", "protocol": "TCP"}]);
    assert_eq!(
        spec["ingress"],
        serde_json::json!([
            {"ports": http, "from": [{
                "namespaceSelector": {},
                "podSelector": {"matchExpressions": [
                    {"key": WORKFLOW_LABEL, "operator": "Exists"}]}}]},
            {"ports": http, "from": [{
                "namespaceSelector": {"matchLabels":
                    {"kubernetes.io/metadata.name": "monitoring"}}}]},
        ]),
        "{spec}"
    );

    let objects = render(&[
        "networkPolicy.metrics.namespaceSelector.matchLabels.team=observability",
        "networkPolicy.metrics.podSelector.matchLabels.app=prometheus",
        "networkPolicy.extraFrom[0].ipBlock.cidr=10.0.0.0/8",
    ]);
    let ingress = &find(&objects, "NetworkPolicy").expect("NetworkPolicy")["spec"]["ingress"];
    assert_eq!(
        ingress[1]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "observability"}},
            "podSelector": {"matchLabels": {"app": "prometheus"}}}])
    );
    assert_eq!(
        ingress[2]["from"],
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.0/8"}}])
    );
    assert_eq!(ingress.as_array().map(Vec::len), Some(3));
    let objects = render(&["networkPolicy.metrics.namespace=prom"]);
    assert_eq!(
        find(&objects, "NetworkPolicy").expect("NetworkPolicy")["spec"]["ingress"][1]["from"],
        serde_json::json!([{"namespaceSelector":
            {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}])
    );

    let off = render(&["networkPolicy.enabled=false"]);
    assert!(find(&off, "NetworkPolicy").is_none());
    // The old value meant "these peers instead of everyone"; ignoring it silently would widen
    // nothing but would surprise, so the chart says what replaced it.
    let helm = Helm::new().expect("helm");
    let err = helm
        .run(&[
            "template",
            "w",
            &chart(),
            "--set",
            "networkPolicy.from[0].podSelector.matchLabels.a=b",
        ])
        .expect_err("networkPolicy.from is refused");
    assert!(err.to_string().contains("networkPolicy.extraFrom"), "{err}");
}

/// The admission policies (workflows, and policies) are on by default, bound with no
/// exemption, and can be turned off.
#[test]
fn the_admission_policy_is_on_and_binds_everyone() {
    let objects = render(&[]);
    for (name, resources) in [
        (
            "w-whittle-workflow-creator",
            serde_json::json!(["hardeningworkflows"]),
        ),
        (
            "w-whittle-policy-creator",
            serde_json::json!(["hardeningpolicies", "clusterhardeningpolicies"]),
        ),
    ] {
        let policy = named(&objects, "ValidatingAdmissionPolicy", "", name);
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"];
        assert_eq!(rules[0]["resources"], resources);
        assert_eq!(
            rules[0]["operations"],
            serde_json::json!(["CREATE", "UPDATE"])
        );
        let binding = named(&objects, "ValidatingAdmissionPolicyBinding", "", name);
        assert_eq!(binding["spec"]["policyName"], name);
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
        assert!(
            binding["spec"].get("matchResources").is_none(),
            "no namespace or object is exempt: {binding}"
        );
    }
    let off = render(&["admissionPolicy.enabled=false"]);
    assert!(find(&off, "ValidatingAdmissionPolicy").is_none());
    assert!(find(&off, "ValidatingAdmissionPolicyBinding").is_none());
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
        !objects
            .iter()
            .any(|o| o["metadata"]["name"] == "w-whittle-leader-election"),
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
    assert!(
        args.contains(&"--report-pages-token-only".to_string()),
        "on the node's network, loopback is no proof of port-forward: {args:?}"
    );
    let monitor = find(&objects, "ServiceMonitor").expect("ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The per-workflow series' own `namespace` label wins over the target's.
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let policy = find(&objects, "NetworkPolicy").expect("NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "http");
}

/// Each of `concurrency` hardens may fill its spool at once, so the operator's per-harden
/// `--spool-limit` is the spool volume's size shared among them, with a tenth kept free: a
/// large image fails with LimitExceeded instead of the kubelet evicting the operator.
#[test]
fn the_spool_volume_is_shared_among_concurrent_hardens() {
    let limit = |sets: &[&str]| -> Option<u64> {
        args(&render(sets))
            .iter()
            .find_map(|a| a.strip_prefix("--spool-limit=").map(str::to_string))
            .map(|v| v.parse().expect("--spool-limit in bytes"))
    };
    assert_eq!(limit(&[]), Some(2 * 1024 * 1024 * 1024 * 9 / 10 / 4));
    assert_eq!(
        limit(&["spool.sizeLimit=5Gi", "concurrency=8"]),
        Some(5 * 1024 * 1024 * 1024 * 9 / 10 / 8)
    );
    assert_eq!(
        limit(&["spool.sizeLimit=3G", "concurrency=1"]),
        Some(3_000_000_000 * 9 / 10)
    );
    assert_eq!(
        limit(&["spool.sizeLimit=1073741824"]),
        Some((1 << 30) * 9 / 10 / 4)
    );
    // No size limit on the volume: the operator's own default applies.
    assert_eq!(limit(&["spool.sizeLimit="]), None);

    let helm = Helm::new().expect("helm");
    let chart = chart();
    let out = helm
        .command()
        .expect("helm")
        .args(["template", "w", &chart, "--set", "spool.sizeLimit=1.5Gi"])
        .output()
        .expect("helm runs");
    assert!(!out.status.success(), "a fractional size must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spool.sizeLimit"), "{err}");
}

#[test]
fn vulnerability_databases_are_the_admins_named_flags() {
    let defaults = args(&render(&[]));
    for expected in [
        "--vuln-db=alpine=https://osv-vulnerabilities.storage.googleapis.com/Alpine/all.zip",
        "--vuln-db=debian=https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip",
        "--vuln-db-timeout=5m",
        "--vuln-db-max-size=512Mi",
        "--vuln-db-max-entry-size=16Mi",
        "--vuln-db-memory=256Mi",
    ] {
        assert!(defaults.contains(&expected.to_string()), "{defaults:?}");
    }
    // Every flag the chart renders is one `whittle operator` takes.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["operator", "--help"])
        .output()
        .expect("whittle operator --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in defaults.iter().filter(|a| a.starts_with("--vuln-db")) {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(help.contains(&format!("{flag} ")), "{flag} not in:\n{help}");
    }

    let objects = render(&[
        "vulnerabilities.databases.debian=null",
        "vulnerabilities.databases.alpine=null",
        "vulnerabilities.databases.internal=/var/lib/whittle/osv/internal.zip",
        "vulnerabilities.volume.persistentVolumeClaim.claimName=osv-db",
        "vulnerabilities.memory=1Gi",
    ]);
    let a = args(&objects);
    let dbs: Vec<&String> = a.iter().filter(|a| a.starts_with("--vuln-db=")).collect();
    assert_eq!(
        dbs,
        ["--vuln-db=internal=/var/lib/whittle/osv/internal.zip"],
        "{a:?}"
    );
    assert!(a.contains(&"--vuln-db-memory=1Gi".to_string()), "{a:?}");
    let d = find(&objects, "Deployment").expect("Deployment");
    let pod = &d["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "osv"))
        .unwrap_or_else(|| panic!("the osv volume: {pod}"));
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "osv-db");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "osv"))
        .unwrap_or_else(|| panic!("the osv mount: {pod}"));
    assert_eq!(mount["mountPath"], "/var/lib/whittle/osv");
    assert_eq!(mount["readOnly"], true);
    // Without a volume, none is mounted.
    let d = find(&render(&[]), "Deployment")
        .cloned()
        .expect("Deployment");
    let volumes = d["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(!volumes.contains("\"osv\""), "{volumes}");
}

/// The CRD is a template (Helm applies templates on every upgrade, never what is in `crds/`),
/// kept on uninstall, and left out with `crds.install=false`.
#[test]
fn the_crd_is_a_kept_template_unless_turned_off() {
    let objects = render(&[]);
    let crd = find(&objects, "CustomResourceDefinition").expect("the CRD is rendered");
    assert_eq!(crd["metadata"]["name"], "hardeningworkflows.whittle.dev");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "helm uninstall must leave the CRD, and with it every workflow: {}",
        crd["metadata"]
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/name"],
        "whittle"
    );
    // What is rendered is the generated CRD: nothing lost or added on the way but metadata.
    let mut rendered = crd.clone();
    let metadata = rendered["metadata"].as_object_mut().expect("metadata");
    metadata.remove("annotations");
    metadata.remove("labels");
    let generated = serde_json::to_value(whittle::api::crd().expect("crd")).expect("json");
    assert_eq!(rendered, generated);
    let off = render(&["crds.install=false"]);
    assert!(find(&off, "CustomResourceDefinition").is_none(), "{off:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read chart dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Replaces, in the chart at `dir`, every copy of the generated CRD by `yaml`; returns how many.
fn replace_crd(dir: &Path, current: &str, yaml: &str) -> usize {
    let mut replaced = 0;
    for entry in std::fs::read_dir(dir).expect("read chart dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            replaced += replace_crd(&path, current, yaml);
        } else if std::fs::read_to_string(&path).is_ok_and(|text| text == current) {
            std::fs::write(&path, yaml).expect("write the older CRD");
            replaced += 1;
        }
    }
    replaced
}

/// The schema's `spec` properties of the CRD in the cluster.
async fn spec_fields_in_cluster(client: &kube::Client) -> Vec<String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let crd = crds
        .get("hardeningworkflows.whittle.dev")
        .await
        .expect("the CRD is in the cluster");
    let crd = serde_json::to_value(crd).expect("json");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The current CRD as a release before `spec.sign` had it: without the field, and without the
/// rules that name it (the API server refuses a rule naming a field the schema lacks).
fn older_crd() -> Value {
    let mut older = serde_json::to_value(whittle::api::crd().expect("crd")).expect("json");
    let spec = &mut older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec["properties"]
        .as_object_mut()
        .expect("spec properties")
        .remove("sign")
        .expect("the current CRD has spec.sign");
    if let Some(rules) = spec["x-kubernetes-validations"].as_array_mut() {
        rules.retain(|r| !r["rule"].as_str().unwrap_or_default().contains("self.sign"));
    }
    older
}

/// A release installed with an older CRD (one without `spec.sign`), upgraded with `helm upgrade`
/// to this chart, has this chart's CRD in the cluster; `helm uninstall` then leaves the CRD and
/// the workflows where they are.
#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_updates_the_crd_and_uninstall_keeps_it_and_the_workflows() {
    use whittle_testbed::cluster::control_plane::ControlPlane;

    let plane = ControlPlane::start().await.expect("control plane");
    let client = plane.client();
    let helm = Helm::with_kubeconfig(&plane.kubeconfig()).expect("helm");

    let current = whittle::api::crd_yaml().expect("crd yaml");
    let older = older_crd();
    let older = serde_saphyr::to_string(&older).expect("yaml");
    let header: String = current.lines().take(2).map(|l| format!("{l}\n")).collect();
    let older_chart = tempfile::tempdir().expect("chart copy");
    copy_dir(Path::new(&chart()), older_chart.path());
    let copies = replace_crd(older_chart.path(), &current, &format!("{header}{older}"));
    assert!(copies > 0, "the chart holds no copy of the generated CRD");

    let install = |chart: &str, verb: &str| {
        let mut args = vec![verb, "whittle", chart];
        args.extend(support::chart::WITHOUT_OPERATOR);
        helm.run(&args)
            .unwrap_or_else(|e| panic!("helm {verb}: {e}"))
    };
    install(older_chart.path().to_str().expect("utf-8"), "install");
    let before = spec_fields_in_cluster(&client).await;
    assert!(
        !before.iter().any(|f| f == "sign"),
        "the older CRD is installed: {before:?}"
    );

    let ns = plane.namespace("upgrade").await.expect("namespace");
    let workflows: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<whittle::api::HardeningWorkflow>(&()),
    );
    let workflow: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "whittle.dev/v1alpha1",
        "kind": "HardeningWorkflow",
        "metadata": {"name": "web"},
        "spec": {"target": {"name": "web"}},
    }))
    .expect("workflow");
    // The CRD may take a moment to be served after `helm install` returns.
    let started = std::time::Instant::now();
    while let Err(e) = workflows.create(&Default::default(), &workflow).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "creating a workflow: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    install(&chart(), "upgrade");
    let after = spec_fields_in_cluster(&client).await;
    let generated = serde_json::to_value(whittle::api::crd().expect("crd")).expect("json");
    let expected: Vec<String> = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        ["properties"]["spec"]["properties"]
        .as_object()
        .expect("spec properties")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        after, expected,
        "helm upgrade left the older CRD in the cluster"
    );

    helm.run(&[
        "uninstall",
        "whittle",
        "--namespace",
        "whittle-system",
        "--wait",
    ])
    .expect("helm uninstall");
    assert_eq!(
        spec_fields_in_cluster(&client).await,
        expected,
        "helm uninstall removed the CRD"
    );
    workflows
        .get("web")
        .await
        .expect("the workflow outlives helm uninstall");
}

/// A release of the chart as it was, with the CRD in `crds/` (helm's, installed once, owned by no
/// release): the first `helm upgrade` to this chart is refused until the release takes the CRD
/// over with `--take-ownership`, as charts/whittle/README.md says; then the CRD is current.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_with_the_crd_in_crds_is_upgraded_with_take_ownership() {
    use whittle_testbed::cluster::control_plane::ControlPlane;

    let plane = ControlPlane::start().await.expect("control plane");
    let client = plane.client();
    let helm = Helm::with_kubeconfig(&plane.kubeconfig()).expect("helm");

    let older = older_crd();
    let old_chart = tempfile::tempdir().expect("chart copy");
    copy_dir(Path::new(&chart()), old_chart.path());
    std::fs::remove_file(old_chart.path().join("templates/crds.yaml")).expect("no CRD template");
    std::fs::create_dir_all(old_chart.path().join("crds")).expect("crds/");
    std::fs::write(
        old_chart.path().join("crds/hardeningworkflow.yaml"),
        serde_saphyr::to_string(&older).expect("yaml"),
    )
    .expect("the older CRD in crds/");

    let base = [
        "--namespace",
        "whittle-system",
        "--set",
        "replicaCount=0",
        "--set",
        "leaderElection.enabled=false",
        "--wait",
    ];
    let old = old_chart.path().to_str().expect("utf-8");
    let mut install = vec!["install", "whittle", old, "--create-namespace"];
    install.extend(base);
    helm.run(&install).expect("helm install the crds/ chart");
    assert!(
        !spec_fields_in_cluster(&client)
            .await
            .iter()
            .any(|f| f == "sign")
    );

    let chart = chart();
    let mut upgrade = vec!["upgrade", "whittle", chart.as_str()];
    upgrade.extend(base);
    let refused = helm
        .run(&upgrade)
        .expect_err("helm cannot adopt a CRD no release owns");
    assert!(
        refused.to_string().contains("cannot be imported"),
        "{refused}"
    );
    upgrade.push("--take-ownership");
    helm.run(&upgrade).expect("helm upgrade --take-ownership");
    assert!(
        spec_fields_in_cluster(&client)
            .await
            .iter()
            .any(|f| f == "sign")
    );
}

/// What `helm template` says when it refuses the values.
fn refused(sets: &[&str]) -> String {
    let helm = Helm::new().expect("helm");
    let chart = chart();
    let mut args = vec!["template", "w", chart.as_str()];
    for s in sets {
        args.extend(["--set", s]);
    }
    match helm.run(&args) {
        Ok(_) => panic!("helm template accepted {sets:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_typo_or_a_wrong_type_in_the_values_fails_naming_it() {
    let typo = refused(&["replicaCuont=2"]);
    assert!(
        typo.contains("replicaCuont") && typo.contains("not allowed"),
        "{typo}"
    );
    let nested = refused(&["networkPolicy.enabeld=false"]);
    assert!(nested.contains("enabeld"), "{nested}");
    let format = refused(&["logFormat=yaml"]);
    assert!(format.contains("logFormat"), "{format}");
    let port = refused(&["service.port=http"]);
    assert!(port.contains("/service/port"), "{port}");
    // What the README's examples set is accepted.
    render(&[
        "replicaCount=2",
        "priorityClassName=system-cluster-critical",
    ]);
}

#[test]
fn replicas_get_a_disruption_budget_and_the_pod_its_scheduling_values() {
    assert!(
        find(&render(&[]), "PodDisruptionBudget").is_none(),
        "one replica: a budget would block every drain"
    );
    let objects = render(&[
        "replicaCount=2",
        "priorityClassName=system-cluster-critical",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    ]);
    let pdb = find(&objects, "PodDisruptionBudget").expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let d = find(&objects, "Deployment").expect("Deployment");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
        "the budget guards the operator's pods"
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(
        find(
            &render(&["replicaCount=2", "podDisruptionBudget.enabled=false"]),
            "PodDisruptionBudget"
        )
        .is_none()
    );
}

/// The chart's roles aggregate into Kubernetes' own: on a real API server (whose
/// controller-manager aggregates them), a namespace's editor may create and delete workflows and
/// its viewer only read them, with no role of whittle's bound to either.
#[tokio::test(flavor = "multi_thread")]
async fn namespace_users_get_workflow_verbs_from_the_builtin_roles() {
    use whittle_testbed::cluster::control_plane::ControlPlane;

    let plane = ControlPlane::start().await.expect("control plane");
    let helm = Helm::with_kubeconfig(&plane.kubeconfig()).expect("helm");
    let chart = chart();
    let mut args = vec!["install", "whittle", &chart];
    args.extend(support::chart::WITHOUT_OPERATOR);
    helm.run(&args).expect("helm install");
    let ns = plane.namespace("team").await.expect("namespace");
    let kubectl = whittle_testbed::tools::kube_binary("kubectl").expect("kubectl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(plane.kubeconfig())
            .args(["--namespace", &ns])
            .args(args)
            .output()
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run(&[
        "create",
        "rolebinding",
        "alice-edits",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    run(&[
        "create",
        "rolebinding",
        "bob-views",
        "--clusterrole=view",
        "--user=bob",
    ]);
    let can = |user: &str, verb: &str| {
        run(&[
            "auth",
            "can-i",
            verb,
            "hardeningworkflows.whittle.dev",
            "--as",
            user,
        ])
    };
    // The aggregation controller fills the built-in roles a moment after the chart's appear.
    let started = std::time::Instant::now();
    while can("alice", "create") != "yes" || can("bob", "list") != "yes" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "edit and view did not aggregate the chart's roles: alice create {}, bob list {}",
            can("alice", "create"),
            can("bob", "list")
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert_eq!(can("alice", verb), "yes", "an editor may {verb}");
    }
    for verb in ["get", "list", "watch"] {
        assert_eq!(can("bob", verb), "yes", "a viewer may {verb}");
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert_eq!(can("bob", verb), "no", "a viewer may not {verb}");
    }
    assert_eq!(
        run(&[
            "auth",
            "can-i",
            "create",
            "hardeningworkflows.whittle.dev",
            "--as",
            "alice",
            "--namespace",
            "default"
        ]),
        "no",
        "only where the binding is"
    );
}

/// `make chart` packages the chart and pushes it with `helm push` to an OCI registry (the real
/// registry, plain HTTP); helm then shows and installs it from `oci://`, as the README's install
/// section does, into the test control plane.
#[tokio::test(flavor = "multi_thread")]
async fn make_chart_pushes_to_an_oci_registry_that_helm_installs_from() {
    use whittle_testbed::cluster::control_plane::ControlPlane;
    use whittle_testbed::images::registry::Registry;

    let registry = Registry::start().expect("registry");
    let plane = ControlPlane::start().await.expect("control plane");
    let helm = Helm::with_kubeconfig(&plane.kubeconfig()).expect("helm");
    let packaged = tempfile::tempdir().expect("chart dir");
    let repository = format!("oci://{}/charts", registry.host());

    // The Makefile's own recipe, with the test bed's helm and its private helm home.
    let helm_cmd = helm.command().expect("helm");
    let mut make = std::process::Command::new("make");
    make.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", "chart", "PLAIN_HTTP=1"])
        .arg(format!("CHART_REGISTRY={repository}"))
        .arg(format!("CHART_DIR={}", packaged.path().display()))
        .arg(format!("HELM={}", helm_cmd.get_program().to_string_lossy()));
    for (name, value) in helm_cmd.get_envs() {
        if let Some(value) = value {
            make.env(name, value);
        }
    }
    let out = make.output().expect("run make");
    assert!(
        out.status.success(),
        "make chart: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let chart_yaml: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(&chart()).join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let version = chart_yaml["version"].as_str().expect("chart version");
    assert!(
        packaged
            .path()
            .join(format!("whittle-{version}.tgz"))
            .is_file(),
        "make chart packages into CHART_DIR"
    );

    let reference = format!("{repository}/whittle");
    let shown = helm
        .run(&[
            "show",
            "chart",
            &reference,
            "--version",
            version,
            "--plain-http",
        ])
        .expect("helm show chart oci://");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("name: whittle"), "{shown}");
    assert!(shown.contains(&format!("version: {version}")), "{shown}");

    let mut args = vec![
        "install",
        "whittle",
        &reference,
        "--version",
        version,
        "--plain-http",
    ];
    args.extend(support::chart::WITHOUT_OPERATOR);
    helm.run(&args).expect("helm install oci://");
    assert!(
        spec_fields_in_cluster(&plane.client())
            .await
            .iter()
            .any(|f| f == "target"),
        "the chart installed from the registry put the CRD in the cluster"
    );
    let listed = helm
        .run(&["list", "--namespace", "whittle-system", "--output", "json"])
        .expect("helm list");
    let releases: Value = serde_json::from_slice(&listed.stdout).expect("helm list JSON");
    assert_eq!(
        releases[0]["chart"],
        format!("whittle-{version}"),
        "{releases}"
    );
    assert_eq!(releases[0]["status"], "deployed", "{releases}");
}
