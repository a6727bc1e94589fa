//! The workflow as the tools admins wait with see it: the real `kubectl wait`, and kstatus
//! (cli-utils' status library, which Flux's `wait: true` and kpt use) through the test bed's
//! small `kstatus` command.

use std::io::Write;
use std::process::{Command, Stdio};

use whittle_testbed::cluster::Cluster;
use whittle_testbed::tools::{kstatus_binary, kube_binary};

/// `kubectl -n NS ARGS…` as the cluster's admin: whether it succeeded, and what it printed.
pub fn kubectl(c: &Cluster, ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(kube_binary("kubectl").expect("kubectl"))
        .arg("--kubeconfig")
        .arg(c.control_plane().kubeconfig())
        .args(["--namespace", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// kstatus's verdict on workflow `name`: `Current`, `InProgress` or `Failed`, and its message.
pub fn kstatus(c: &Cluster, ns: &str, name: &str) -> (String, String) {
    let (ok, object) = kubectl(c, ns, &["get", "hardeningworkflow", name, "-o", "json"]);
    assert!(ok, "kubectl get: {object}");
    let mut child = Command::new(kstatus_binary().expect("kstatus (make setup builds it)"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kstatus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(object.as_bytes())
        .expect("write to kstatus");
    let out = child.wait_with_output().expect("kstatus output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kstatus: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, message) = text
        .trim_end()
        .split_once('\t')
        .unwrap_or((text.trim_end(), ""));
    (status.to_string(), message.to_string())
}

/// Asserts that kstatus reads workflow `name` as Failed (message starting with
/// `message_start`) and that `kubectl wait --for=condition=Stalled` returns at once.
pub fn assert_stalled(c: &Cluster, ns: &str, name: &str, message_start: &str) {
    let (status, message) = kstatus(c, ns, name);
    assert_eq!(status, "Failed", "{message}");
    assert!(message.starts_with(message_start), "{message}");
    let object = format!("hardeningworkflow/{name}");
    let args = ["wait", "--for=condition=Stalled", "--timeout=10s", &object];
    let (ok, out) = kubectl(c, ns, &args);
    assert!(ok, "kubectl wait --for=condition=Stalled: {out}");
}
