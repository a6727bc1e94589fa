//! Pure: the commands Kubernetes runs inside the target container besides the app — exec
//! liveness, readiness and startup probes, `postStart` and `preStop` exec hooks. The container
//! runtime starts them, not the app, so the PID-1 sensor's syscall monitors would never see
//! them and the hardened image would lose the client binary a readiness probe runs. While
//! instrumented each one runs as `/.whittle/sensor exec -- <command>`, which hands what it saw
//! to the PID-1 sensor; restoring and verifying put the user's commands back.

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::image::config::SENSOR_PATH;

/// The user's exec commands, by where they sit in the container; a handler that is not an
/// exec (httpGet, tcpSocket, grpc, sleep) is absent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecHandlers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Vec<String>>,
}

fn probe_command(probe: Option<&Probe>) -> Option<Vec<String>> {
    probe?
        .exec
        .as_ref()?
        .command
        .clone()
        .filter(|c| !c.is_empty())
}

fn hook_command(hook: Option<&LifecycleHandler>) -> Option<Vec<String>> {
    hook?
        .exec
        .as_ref()?
        .command
        .clone()
        .filter(|c| !c.is_empty())
}

impl ExecHandlers {
    pub fn of(container: &Container) -> ExecHandlers {
        let lifecycle = container.lifecycle.as_ref();
        ExecHandlers {
            liveness_probe: probe_command(container.liveness_probe.as_ref()),
            readiness_probe: probe_command(container.readiness_probe.as_ref()),
            startup_probe: probe_command(container.startup_probe.as_ref()),
            post_start: hook_command(lifecycle.and_then(|l| l.post_start.as_ref())),
            pre_stop: hook_command(lifecycle.and_then(|l| l.pre_stop.as_ref())),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }

    /// Whether the container stops through a `preStop` exec hook, which takes its share of the
    /// grace period before the app gets SIGTERM.
    pub fn has_pre_stop(&self) -> bool {
        self.pre_stop.is_some()
    }

    /// Each command with the JSON path of its container field.
    fn all(&self) -> impl Iterator<Item = (&'static [&'static str], &Vec<String>)> {
        [
            (&["livenessProbe", "exec"][..], &self.liveness_probe),
            (&["readinessProbe", "exec"][..], &self.readiness_probe),
            (&["startupProbe", "exec"][..], &self.startup_probe),
            (&["lifecycle", "postStart", "exec"][..], &self.post_start),
            (&["lifecycle", "preStop", "exec"][..], &self.pre_stop),
        ]
        .into_iter()
        .filter_map(|(path, command)| Some((path, command.as_ref()?)))
    }

    /// Sets each handler's command in `container` (an apply configuration), wrapped in the
    /// sensor or as the user had it. Only `exec.command` is whittle's: periods, thresholds and
    /// timeouts stay the user's fields.
    pub fn apply_to(&self, container: &mut Value, wrapped: bool) {
        for (path, command) in self.all() {
            let mut at = &mut *container;
            for key in path {
                at = &mut at[*key];
            }
            at["command"] = if wrapped {
                let mut all = vec![SENSOR_PATH.to_string(), "exec".into(), "--".into()];
                all.extend(command.iter().cloned());
                json!(all)
            } else {
                json!(command)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(json!({
            "name": "db", "image": "postgres:16",
            "readinessProbe": {"exec": {"command": ["pg_isready", "-q"]}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 5432}},
            "startupProbe": {"exec": {"command": []}},
            "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "/stop.sh"]}},
                          "postStart": {"httpGet": {"port": 80}}}
        }))
        .unwrap()
    }

    #[test]
    fn only_exec_handlers_with_a_command_are_taken() {
        let h = ExecHandlers::of(&container());
        assert_eq!(
            h,
            ExecHandlers {
                readiness_probe: Some(vec!["pg_isready".into(), "-q".into()]),
                pre_stop: Some(vec!["/bin/sh".into(), "/stop.sh".into()]),
                ..ExecHandlers::default()
            }
        );
        assert!(h.has_pre_stop());
        assert!(ExecHandlers::default().is_empty());
    }

    #[test]
    fn instrumenting_wraps_the_commands_and_restoring_names_the_originals() {
        let h = ExecHandlers::of(&container());
        let mut c = json!({"name": "db"});
        h.apply_to(&mut c, true);
        assert_eq!(
            c,
            json!({"name": "db",
                   "readinessProbe": {"exec": {"command": ["/.whittle/sensor", "exec", "--", "pg_isready", "-q"]}},
                   "lifecycle": {"preStop": {"exec": {"command": ["/.whittle/sensor", "exec", "--", "/bin/sh", "/stop.sh"]}}}})
        );
        let mut c = json!({"name": "db"});
        h.apply_to(&mut c, false);
        assert_eq!(
            c["readinessProbe"]["exec"]["command"],
            json!(["pg_isready", "-q"])
        );
        assert!(c.get("livenessProbe").is_none(), "not an exec probe");
    }
}
