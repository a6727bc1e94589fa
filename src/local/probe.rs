//! Probes: commands run inside the running container, as `docker exec` runs them
//! (`--exec-probe`) and as Docker runs the image's `HEALTHCHECK`. The runtime starts them beside
//! the app, not as its descendants, so the sensor's syscall monitors would not see them: while
//! observing, each runs as `/.whittle/sensor exec -- ARGV`, which watches it and hands what it
//! saw to the PID-1 sensor's report. Against the hardened image they run as written.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::LocalError;
use super::container::Container;
use super::exercise::ExerciseResult;
use crate::image::config::SENSOR_PATH;

/// Where a probe came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProbeKind {
    /// `--exec-probe CMD`.
    #[serde(rename = "exec-probe")]
    ExecProbe,
    /// The image config's `Healthcheck.Test`.
    #[serde(rename = "HEALTHCHECK")]
    Healthcheck,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::ExecProbe => "exec-probe",
            ProbeKind::Healthcheck => "HEALTHCHECK",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: ProbeKind,
    pub argv: Vec<String>,
}

/// An `--exec-probe` command line split into words as a POSIX shell would (quotes, escapes),
/// but run without a shell, as `docker exec` runs its arguments: a hardened image need not keep
/// one.
#[derive(Debug, Clone)]
pub struct Argv(pub Vec<String>);

/// Splits `--exec-probe` into its argv.
pub fn parse_argv(s: &str) -> Result<Argv, String> {
    match shlex::split(s) {
        Some(words) if !words.is_empty() => Ok(Argv(words)),
        Some(_) => Err("an empty command; give the program and its arguments".into()),
        None => Err(format!("{s:?}: unbalanced quotes or a trailing backslash")),
    }
}

impl Probe {
    /// The probe as one line: its kind and its words, quoted where a shell would need it.
    pub fn display(&self) -> String {
        format!("{} {}", self.kind.as_str(), words(&self.argv))
    }

    /// The argv `runc exec` runs while observing: the probe under the sensor, with the
    /// PID-1 sensor's monitor mode.
    pub fn wrapped(&self, mode: &str) -> Vec<String> {
        let mut argv = vec![
            SENSOR_PATH.to_string(),
            "exec".into(),
            "--mode".into(),
            mode.into(),
            "--".into(),
        ];
        argv.extend(self.argv.iter().cloned());
        argv
    }
}

fn words(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// The image's `HEALTHCHECK` as Docker runs it: `["CMD", args…]` runs the args,
/// `["CMD-SHELL", s]` runs the config's `Shell` (else `/bin/sh -c`) with `s`, `["NONE"]` or no
/// test at all means none. Docker-format configs carry it; OCI configs usually do not.
pub fn healthcheck(config: &Value) -> Result<Option<Probe>, LocalError> {
    let Some(test) = config["config"]["Healthcheck"]["Test"].as_array() else {
        return Ok(None);
    };
    let test: Vec<&str> = test.iter().filter_map(Value::as_str).collect();
    let bad = || LocalError::BadHealthcheck {
        test: format!("{test:?}"),
    };
    let argv: Vec<String> = match test.as_slice() {
        [] | ["NONE", ..] => return Ok(None),
        ["CMD", args @ ..] if !args.is_empty() => args.iter().map(|s| s.to_string()).collect(),
        ["CMD-SHELL", script] => {
            let mut shell: Vec<String> = config["config"]["Shell"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            if shell.is_empty() {
                shell = vec!["/bin/sh".into(), "-c".into()];
            }
            shell.push(script.to_string());
            shell
        }
        _ => return Err(bad()),
    };
    Ok(Some(Probe {
        kind: ProbeKind::Healthcheck,
        argv,
    }))
}

/// Runs `argv` in the container (`runc exec`), as the probe's result.
pub async fn run(
    container: &Container,
    probe: &Probe,
    argv: &[String],
    timeout: Duration,
) -> Result<ExerciseResult, LocalError> {
    let out = container.exec(argv, timeout).await?;
    Ok(ExerciseResult {
        command: probe.display(),
        exit_code: out.exit_code,
        passed: out.exit_code == Some(0),
        seconds: out.seconds,
        output_tail: out.output_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hc(test: Value) -> Result<Option<Probe>, LocalError> {
        healthcheck(&json!({"config": {"Healthcheck": {"Test": test}}}))
    }

    #[test]
    fn healthchecks_run_as_docker_runs_them() {
        let argv = |v: Value| hc(v).unwrap().map(|p| p.argv);
        assert_eq!(
            argv(json!(["CMD", "pg_isready", "-q"])),
            Some(vec!["pg_isready".to_string(), "-q".into()])
        );
        assert_eq!(
            argv(json!(["CMD-SHELL", "curl -f localhost || exit 1"])),
            Some(vec![
                "/bin/sh".to_string(),
                "-c".into(),
                "curl -f localhost || exit 1".into()
            ])
        );
        assert_eq!(argv(json!(["NONE"])), None);
        assert_eq!(argv(json!([])), None);
        assert!(healthcheck(&json!({"config": {}})).unwrap().is_none());
        assert!(hc(json!(["CMD"])).is_err());
        assert!(hc(json!(["SOMETHING", "x"])).is_err());
        let custom_shell = healthcheck(&json!({"config": {
            "Shell": ["/bin/bash", "-o", "pipefail", "-c"],
            "Healthcheck": {"Test": ["CMD-SHELL", "true"]}
        }}))
        .unwrap()
        .unwrap();
        assert_eq!(
            custom_shell.argv,
            ["/bin/bash", "-o", "pipefail", "-c", "true"]
        );
    }

    #[test]
    fn exec_probes_are_split_into_words_not_run_by_a_shell() {
        assert_eq!(
            parse_argv(r#"redis-cli -e "PING now" 'a b'"#).unwrap().0,
            ["redis-cli", "-e", "PING now", "a b"]
        );
        assert!(parse_argv("  ").is_err());
        assert!(parse_argv("echo 'unbalanced").is_err());
        let probe = Probe {
            kind: ProbeKind::ExecProbe,
            argv: vec!["/bin/check".into(), "a b".into()],
        };
        assert_eq!(probe.display(), "exec-probe /bin/check 'a b'");
        assert_eq!(
            probe.wrapped("seccomp"),
            [
                SENSOR_PATH,
                "exec",
                "--mode",
                "seccomp",
                "--",
                "/bin/check",
                "a b"
            ]
        );
    }
}
