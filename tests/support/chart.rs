//! The Helm chart as `helm template` renders it, for tests that read its objects.

use std::path::Path;

use serde_json::Value;
use whittle_testbed::cluster::helm::Helm;

/// What follows the chart in `helm install` for a release in `whittle-system` that installs the
/// CRD, RBAC and admission policy but no operator pod (tests run the operator themselves).
pub const WITHOUT_OPERATOR: [&str; 8] = [
    "--namespace",
    "whittle-system",
    "--create-namespace",
    "--set",
    "replicaCount=0",
    "--set",
    "leaderElection.enabled=false",
    "--wait",
];

/// The chart's directory in this checkout.
pub fn dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/whittle")
        .display()
        .to_string()
}

/// The objects `helm template` renders with `sets` (`key=value`).
pub fn render(sets: &[&str]) -> Vec<Value> {
    let helm = Helm::new().expect("helm");
    let chart = dir();
    let mut args = vec!["template", "w", &chart, "--namespace", "whittle-system"];
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
