//! Names, labels and keys the controller and the report server must agree on. Pure functions:
//! one place decides how a report's ConfigMap or an exercise Job is called.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The field manager of every server-side apply whittle makes.
pub const FIELD_MANAGER: &str = "whittle";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "whittle";
/// Label on everything made for a workflow; its value is [`label_value`] of the workflow name.
pub const WORKFLOW_LABEL: &str = "whittle.dev/workflow";
/// Label on a report ConfigMap; its value is [`label_value`] of the pod name.
pub const POD_LABEL: &str = "whittle.dev/pod";
/// Annotation on a report ConfigMap with the exact pod name (labels may only hold a hash).
pub const POD_ANNOTATION: &str = "whittle.dev/pod";
/// Annotation on a report ConfigMap with the container whose sensor sent it (absent in a
/// report that names none: an older sensor's).
pub const CONTAINER_ANNOTATION: &str = "whittle.dev/container";
/// The finalizer that restores the Deployment when a workflow is deleted mid-way.
pub const FINALIZER: &str = "whittle.dev/restore-deployment";
/// Annotation on a report ConfigMap with the uid of the pod whose report it holds.
pub const POD_UID_ANNOTATION: &str = "whittle.dev/pod-uid";
/// Annotation on a report ConfigMap: the sensor runs merged into it (their `startedAtMs`,
/// comma-separated), so a re-sent report is recognised and a restarted container's is added.
pub const RUNS_ANNOTATION: &str = "whittle.dev/runs";
/// The audience of the pod tokens sensors present: the API server's TokenReview checks it, so
/// a token made for anything else (the pod's API token) is refused.
pub const REPORT_AUDIENCE: &str = "whittle";
/// The request header carrying the pod's token.
pub const POD_TOKEN_HEADER: &str = "whittle-pod-token";
/// The projected volume with the pod's token, its mount point in the container and file name.
pub const POD_TOKEN_VOLUME: &str = "whittle-pod-token";
pub const POD_TOKEN_DIR: &str = "/var/run/secrets/whittle.dev/report";
pub const POD_TOKEN_FILE: &str = "token";
/// The key of the gzip-compressed report in a report ConfigMap's binaryData.
pub const REPORT_KEY: &str = "report.json.gz";

/// Longest name of a Secret or ConfigMap (a DNS subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// The ConfigMap holding the reports of one container of one pod: `<workflow>-report-<16 hex
/// digits>`, the digits a hash of the workflow's and the pod's uids and the container's name
/// (a report naming no container hashes the uids alone). Pod names cannot collide across
/// workflows this way (`a` + pod `b-report-c` and `a-report-b` + pod `c` once shared a name),
/// nor a recreated pod's name with its predecessor's, nor a pod's app container with its
/// sidecar.
pub fn report_config_map_name(
    workflow: &str,
    workflow_uid: &str,
    pod_uid: &str,
    container: Option<&str>,
) -> String {
    let hash = match container {
        Some(container) => hex_sha256(&format!("{workflow_uid}/{pod_uid}/{container}")),
        None => hex_sha256(&format!("{workflow_uid}/{pod_uid}")),
    };
    let prefix = fit_name(workflow, MAX_NAME - "-report-".len() - 16);
    format!("{prefix}-report-{}", &hash[..16])
}

/// What a report is expected and counted as: the pod's name when the workflow targets one
/// container (as before whittle hardened several), `<pod>/<container>` when it targets more.
pub fn report_slot(pod: &str, container: Option<&str>, per_container: bool) -> String {
    match container {
        Some(container) if per_container => format!("{pod}/{container}"),
        _ => pod.to_string(),
    }
}

/// Label on an exercise Job: `observe` (against the instrumented original) or `verify`
/// (against the hardened image).
pub const EXERCISE_LABEL: &str = "whittle.dev/exercise";

/// The exercise Job of one run: `<workflow>-observe` or `<workflow>-verify`. A fixed name, so
/// a restarted operator finds the Job it made instead of making another. At most 63
/// characters: the Job controller copies the name into a label of its pods.
pub fn exercise_job_name(workflow: &str, run: &str) -> String {
    fit_name(&format!("{workflow}-{run}"), MAX_LABEL_VALUE)
}

/// The path the sensors POST their reports to; the controller puts it in `WHITTLE_REPORT_URL`.
pub fn report_path(namespace: &str, workflow: &str) -> String {
    format!("/v1/reports/{namespace}/{workflow}")
}

/// `value` itself when it is a valid label value, else `sha256-` and 40 hex digits of its hash
/// (names of Kubernetes objects may be 253 characters, label values only 63).
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        value.to_string()
    } else {
        format!("sha256-{}", &hex_sha256(value)[..40])
    }
}

/// The labels on everything whittle makes for `workflow`.
pub fn workflow_labels(workflow: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (WORKFLOW_LABEL.to_string(), label_value(workflow)),
    ])
}

/// A label selector for what whittle made for `workflow`.
pub fn workflow_selector(workflow: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{WORKFLOW_LABEL}={}",
        label_value(workflow)
    )
}

/// True for a valid label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending with an
/// alphanumeric character (or empty).
pub fn is_label_value(value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= MAX_LABEL_VALUE
            && alnum(value.chars().next())
            && alnum(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// True for a DNS subdomain (RFC 1123), what names of pods, ConfigMaps and Secrets must be.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

/// `name` if it fits in `max`, else a prefix of it, `-`, and 10 hex digits of the whole
/// name's hash. The prefix is cut back to end on an alphanumeric character, so a valid DNS
/// subdomain stays one.
fn fit_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = &hex_sha256(name)[..10];
    let mut cut = max - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = name[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{prefix}-{hash}")
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_config_maps_are_named_by_both_uids() {
        let name = report_config_map_name("web", "w-uid", "p-uid", None);
        assert!(name.starts_with("web-report-") && name.len() == "web-report-".len() + 16);
        assert_eq!(report_path("shop", "web"), "/v1/reports/shop/web");
        assert_eq!(
            name,
            report_config_map_name("web", "w-uid", "p-uid", None),
            "deterministic"
        );
        assert_ne!(
            name,
            report_config_map_name("web", "w-uid", "p-uid2", None),
            "another pod"
        );
        assert_ne!(
            name,
            report_config_map_name("web", "w-uid2", "p-uid", None),
            "a namesake workflow"
        );
    }

    #[test]
    fn each_container_of_a_pod_has_its_own_report() {
        let app = report_config_map_name("web", "w-uid", "p-uid", Some("app"));
        let sidecar = report_config_map_name("web", "w-uid", "p-uid", Some("sidecar"));
        assert_ne!(app, sidecar, "two containers of one pod, two ConfigMaps");
        assert_ne!(app, report_config_map_name("web", "w-uid", "p-uid", None));
        assert_eq!(
            app,
            report_config_map_name("web", "w-uid", "p-uid", Some("app")),
            "a restarted container's report goes where its first went"
        );
        assert_eq!(report_slot("web-0", Some("app"), true), "web-0/app");
        assert_eq!(report_slot("web-0", Some("app"), false), "web-0");
        assert_eq!(report_slot("web-0", None, true), "web-0");
    }

    #[test]
    fn report_config_map_names_of_two_workflows_never_collide() {
        // Once `<workflow>-report-<pod>`: workflow `a` with pod `b-report-c` and workflow
        // `a-report-b` with pod `c` shared a ConfigMap.
        let one = report_config_map_name("a", "uid-a", "pod-uid-1", None);
        let two = report_config_map_name("a-report-b", "uid-b", "pod-uid-2", None);
        assert_ne!(one, two);
        assert!(!two.ends_with(&one[one.len() - 16..]));
    }

    #[test]
    fn long_names_are_hashed_to_fit_and_stay_valid() {
        let workflow = format!("{}.b", "a".repeat(250));
        let a = report_config_map_name(&workflow, "w", "p1", None);
        let b = report_config_map_name(&workflow, "w", "p2", None);
        assert!(
            a.len() <= MAX_NAME && b.len() <= MAX_NAME,
            "{} {}",
            a.len(),
            b.len()
        );
        assert_ne!(a, b, "different pods, different ConfigMaps");
        assert!(is_dns_subdomain(&a), "{a}");
        // A cut that would end on '.' or '-' is cut back.
        let dotted = fit_name(&format!("{}.{}", "a".repeat(241), "b".repeat(20)), MAX_NAME);
        assert!(is_dns_subdomain(&dotted), "{dotted}");
    }

    #[test]
    fn label_values_fall_back_to_a_hash() {
        assert_eq!(label_value("web-7d4b9c-x2x9z"), "web-7d4b9c-x2x9z");
        let long = "p".repeat(64);
        let hashed = label_value(&long);
        assert!(
            hashed.starts_with("sha256-") && is_label_value(&hashed),
            "{hashed}"
        );
        assert_ne!(hashed, label_value(&"p".repeat(65)));
        assert!(is_label_value(&"a".repeat(63)));
        assert!(!is_label_value("-a") && !is_label_value("a.") && !is_label_value("a/b"));
        assert_eq!(
            workflow_selector("web"),
            "app.kubernetes.io/managed-by=whittle,whittle.dev/workflow=web"
        );
        assert_eq!(workflow_labels("web")[WORKFLOW_LABEL], "web");
    }

    #[test]
    fn dns_subdomains() {
        for ok in ["a", "web-1", "a.b-c.d", "0x"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            "a_b",
            ".a",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
