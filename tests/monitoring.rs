//! The chart's monitoring against the operator's real `/metrics`: every metric that a PromQL
//! expression of the PrometheusRule (rendered by the real `helm template`) or of the Grafana
//! dashboard (its ConfigMap, rendered the same way) names is one the operator's report server
//! really serves, once each metric family has been exercised. docs/monitoring.md lists exactly
//! the metrics served. Both chart objects are optional: off by default, valid YAML when on.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whittle::api::{
    HardenResult, HardeningWorkflowStatus, Phase, SeverityCounts, VulnerabilitiesStatus,
};
use whittle::metrics::{Metrics, RejectReason};
use whittle::reports::ReportKey;
use whittle::server::{self, ServerState};
use whittle_testbed::cluster::helm::Helm;

use support::chart::{dir as chart, render};

const BOTH: [&str; 2] = [
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
];

fn rule_exprs(objects: &[Value]) -> Vec<String> {
    let rule = (objects.iter())
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let groups = rule["spec"]["groups"].as_array().expect("groups");
    let exprs: Vec<String> = (groups.iter())
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(exprs.len() >= 6, "{exprs:?}");
    exprs
}

fn dashboard(objects: &[Value]) -> Value {
    let cm = (objects.iter())
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "w-whittle-dashboard")
        .expect("the dashboard ConfigMap");
    let json = cm["data"]["whittle.json"].as_str().expect("whittle.json");
    serde_json::from_str(json).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard: its panels' targets and the part of its variables'
/// `label_values(…, label)` queries that selects series.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"].as_str().expect("query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map(|(series, _)| series.to_string())
            .unwrap_or_else(|| panic!("variable query {query} is not label_values(…, label)"));
        exprs.push(inner);
    }
    exprs
}

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp_min",
    "clamp_max",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "increase",
    "irate",
    "label_replace",
    "max_over_time",
    "min_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
];
const AGGREGATIONS: &[&str] = &[
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// The metric names a PromQL expression selects: every identifier that is not a function, an
/// aggregation, a keyword, a label (in `{…}` or a `by (…)` list), a string, a number, a range
/// or a Grafana variable. An unknown function is an error, so a misspelled function is not
/// taken for a metric, nor a misspelled metric for a function.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| -> Result<usize, String> {
        let mut j = from;
        let mut quote = None;
        while j < chars.len() {
            match (quote, chars[j]) {
                (Some(_), '\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'' | '`') => quote = Some(chars[j]),
                (None, c) if c == close => return Ok(j + 1),
                _ => {}
            }
            j += 1;
        }
        Err(format!("{expr}: no closing {close}"))
    };
    let next_non_space = |from: usize| (from..chars.len()).find(|&j| !chars[j].is_whitespace());
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}')?;
        } else if c == '[' {
            i = skip_to(i + 1, ']')?;
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c)?;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(i).map(|j| chars[j]);
            if LABEL_LISTS.contains(&word.as_str()) {
                if next == Some('(') {
                    let open = next_non_space(i).unwrap_or(i);
                    i = skip_to(open + 1, ')')?;
                }
            } else if AGGREGATIONS.contains(&word.as_str()) || KEYWORDS.contains(&word.as_str()) {
            } else if next == Some('(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("{expr}: unknown function {word}"));
                }
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    if names.is_empty() {
        return Err(format!("{expr}: names no metric"));
    }
    Ok(names)
}

/// Every metric family used once, as a running operator would after a few workflows.
fn exercised() -> Metrics {
    let m = Metrics::new().expect("metrics");
    m.set_workflows([(Phase::Failed, 1)]);
    m.reconcile_duration.observe(0.2);
    m.reconcile_errors.with_label_values(&["Api"]).inc();
    m.reports_accepted.inc();
    m.reject(RejectReason::Forbidden);
    m.harden_duration.observe(12.0);
    m.saved_bytes.inc_by(51_500_000);
    m.verifications.with_label_values(&["passed"]).inc();
    m.rollbacks.with_label_values(&["ReadinessFailed"]).inc();
    m.runs.with_label_values(&["Initial", "Succeeded"]).inc();
    m.leader.set(1);
    let counts = SeverityCounts {
        total: 2,
        high: 2,
        ..Default::default()
    };
    let status = HardeningWorkflowStatus {
        result: Some(HardenResult {
            source_bytes: 55_700_000,
            hardened_bytes: 4_200_000,
            ..Default::default()
        }),
        vulnerabilities: Some(VulnerabilitiesStatus {
            before: counts.clone(),
            after: counts,
            ..Default::default()
        }),
        ..Default::default()
    };
    m.set_workflow("shop", "web", &status);
    m
}

/// `GET /metrics` from the operator's report server, on a port of its own.
async fn scrape(metrics: Metrics) -> String {
    // The server needs a client for the report intake; /metrics never calls the API.
    whittle::init_tls();
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let key = ReportKey::generate().expect("key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = ServerState::new(client, Arc::new(metrics), key);
    let served = tokio::spawn(server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 30s")
        .expect("read");
    let _ = stop.send(());
    served.await.expect("server task").expect("server");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The sample names of a Prometheus text exposition (a histogram's `_bucket`, `_sum`, `_count`).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            l[..end].to_string()
        })
        .collect()
}

#[tokio::test]
async fn every_alert_and_dashboard_query_names_a_metric_the_operator_serves() {
    let served = exported(&scrape(exercised()).await);
    let objects = render(&BOTH);
    let rules = rule_exprs(&objects);
    let panels = dashboard_exprs(&dashboard(&objects));
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (what, expr) in
        (rules.iter().map(|e| ("alert", e))).chain(panels.iter().map(|e| ("dashboard", e)))
    {
        let names = metric_names(expr).unwrap_or_else(|e| panic!("{what}: {e}"));
        for name in names {
            if !served.contains(&name) {
                missing.push(format!("{what}: {name} in {expr}"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the operator does not export:\n{}\nit exports: {served:?}",
        missing.join("\n")
    );
    // The alerts the issue asks for, by what they watch.
    let all_rules = rules.join("\n");
    for name in [
        "whittle_build_info",
        "whittle_leader",
        "whittle_workflows",
        "whittle_rollbacks_total",
        "whittle_reports_rejected_total",
    ] {
        assert!(all_rules.contains(name), "no alert on {name}");
    }
    assert!(
        all_rules.contains("absent(whittle_build_info{"),
        "{all_rules}"
    );
    // The dashboard shows the per-workflow gauges.
    for name in [
        "whittle_source_image_bytes",
        "whittle_hardened_image_bytes",
        "whittle_vulnerabilities_kept",
        "whittle_vulnerabilities_removed",
        "whittle_saved_bytes_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn the_name_check_catches_a_misspelt_metric_or_function() {
    let served: BTreeSet<String> = ["whittle_runs_total".to_string()].into();
    let names = metric_names(
        r#"sum by (trigger) (increase(whittle_runs_totl{job="w",result=~"F.*"}[1h])) > 0"#,
    )
    .expect("names");
    assert_eq!(names, ["whittle_runs_totl".to_string()].into());
    assert!(!served.contains("whittle_runs_totl"));
    assert!(metric_names("sum(increse(whittle_runs_total[5m]))").is_err());
    assert!(metric_names("vector(1)").is_err());
    let grafana = metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(whittle_harden_duration_seconds_bucket[$__rate_interval]))) / 1e3",
    )
    .expect("names");
    assert_eq!(
        grafana,
        ["whittle_harden_duration_seconds_bucket".to_string()].into()
    );
}

#[tokio::test]
async fn docs_list_exactly_the_metrics_served() {
    let served: BTreeSet<String> = exported(&scrape(exercised()).await)
        .into_iter()
        .map(|n| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = n.strip_suffix(suffix)
                    && base.ends_with("_seconds")
                {
                    return base.to_string();
                }
            }
            n
        })
        .collect();
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring.md"))
            .expect("docs/monitoring.md");
    // The metrics table: rows starting with `| `whittle_…``.
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `whittle_"))
        .map(|rest| {
            format!(
                "whittle_{}",
                rest.split(['`', '{']).next().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(documented, served, "docs/monitoring.md's metrics table");
}

#[test]
fn both_are_off_by_default_and_valid_when_on() {
    let off = render(&[]);
    assert!(off.iter().all(|o| o["kind"] != "PrometheusRule"), "{off:?}");
    assert!(
        off.iter()
            .all(|o| o["metadata"]["name"] != "w-whittle-dashboard"),
        "a dashboard without grafanaDashboard.enabled"
    );
    let on = render(&[
        "prometheusRule.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "prometheusRule.alertLabels.team=platform",
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.label=dashboards",
        "grafanaDashboard.labelValue=whittle",
        "grafanaDashboard.namespace=monitoring",
    ]);
    let rule = on
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("rule");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    for r in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
    {
        assert_eq!(r["labels"]["team"], "platform", "{r}");
        assert!(r["labels"]["severity"].is_string(), "{r}");
        assert!(r["annotations"]["description"].is_string(), "{r}");
    }
    let cm = on
        .iter()
        .find(|o| o["metadata"]["name"] == "w-whittle-dashboard")
        .expect("dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "whittle");
    assert_eq!(dashboard(&on)["uid"], "whittle-overview");
    let default_label = render(&["grafanaDashboard.enabled=true"]);
    let cm = default_label
        .iter()
        .find(|o| o["metadata"]["name"] == "w-whittle-dashboard")
        .expect("dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");

    let helm = Helm::new().expect("helm");
    let chart = chart();
    let typo = helm.run(&[
        "template",
        "w",
        &chart,
        "--set",
        "prometheusRule.enabeld=true",
    ]);
    let typo = typo.expect_err("a typo refused").to_string();
    assert!(typo.contains("enabeld"), "{typo}");
    let mut args = vec!["lint", "--strict"];
    for s in BOTH {
        args.extend(["--set", s]);
    }
    args.push(&chart);
    let out = helm.run(&args).expect("helm lint --strict");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 chart(s) failed"), "{text}");
}
