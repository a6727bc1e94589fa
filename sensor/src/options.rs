//! Command line: `whittle-sensor [flags] -- <argv>`. Parsed by hand to keep the static binary
//! small; there are five flags. The operator configures an instrumented pod's sensor through
//! the environment instead ([`ENV`]), since the pod's command may be the user's.

use std::path::PathBuf;
use std::time::Duration;

use crate::deliver::Credentials;

/// Every variable the sensor reads for itself. None reaches the app: the report token must not
/// (the app could forge reports with it), and the others are none of its business.
pub const ENV: &[&str] = &[
    "WHITTLE_REPORT_URL",
    "WHITTLE_SENSOR_MODE",
    "WHITTLE_REPORT_TOKEN",
    "WHITTLE_POD_TOKEN_FILE",
    "WHITTLE_KEEP_SYS_ADMIN",
    "WHITTLE_IMAGE",
    "WHITTLE_SENSOR_GRACE",
];

/// What this sensor process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The container's PID 1: runs the app and delivers the report.
    App,
    /// `whittle-sensor exec -- CMD`: a command the runtime started in the container (a probe,
    /// a hook), whose observations go to the PID-1 sensor.
    Exec,
}

/// The monitors asked for (`--mode`); [`crate::monitor::choose`] decides what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    Auto,
    Fanotify,
    Ptrace,
    Seccomp,
    Both,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub role: Role,
    pub mode: ModeChoice,
    pub grace: Duration,
    pub report_file: Option<PathBuf>,
    pub report_url: Option<String>,
    pub user: Option<(u32, u32)>,
    pub argv: Vec<String>,
    /// What the report is POSTed with.
    pub credentials: Credentials,
    /// Leave the app CAP_SYS_ADMIN under fanotify (the original container had it).
    pub keep_sys_admin: bool,
}

pub const USAGE: &str = "usage: whittle-sensor [--mode auto|fanotify|ptrace|seccomp|both] [--grace SECONDS] \
[--report-file PATH] [--report-url http://IP:PORT/PATH] [--user UID:GID] -- PROGRAM [ARGS...]
       whittle-sensor exec [--mode ...] -- COMMAND [ARGS...]   (a probe or hook, merged into PID 1's report)";

/// What the environment sets when no flag does.
#[derive(Debug, Clone, Default)]
pub struct EnvDefaults {
    /// `WHITTLE_REPORT_URL`
    pub report_url: Option<String>,
    /// `WHITTLE_SENSOR_MODE`
    pub mode: Option<String>,
    /// `WHITTLE_REPORT_TOKEN` and `WHITTLE_POD_TOKEN_FILE`
    pub credentials: Credentials,
    /// `WHITTLE_KEEP_SYS_ADMIN=1`
    pub keep_sys_admin: bool,
    /// `WHITTLE_SENSOR_GRACE`: seconds, as `--grace` (the operator sets it from the pod's
    /// terminationGracePeriodSeconds).
    pub grace: Option<String>,
}

impl EnvDefaults {
    pub fn from_env() -> EnvDefaults {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvDefaults {
            report_url: var("WHITTLE_REPORT_URL"),
            mode: var("WHITTLE_SENSOR_MODE"),
            credentials: Credentials {
                bearer: var("WHITTLE_REPORT_TOKEN"),
                pod_token_file: var("WHITTLE_POD_TOKEN_FILE").map(PathBuf::from),
            },
            keep_sys_admin: matches!(var("WHITTLE_KEEP_SYS_ADMIN").as_deref(), Some("1" | "true")),
            grace: var("WHITTLE_SENSOR_GRACE"),
        }
    }
}

fn mode(name: &str, source: &str) -> Result<ModeChoice, String> {
    ModeChoice::from_name(name)
        .ok_or_else(|| format!("{source}{name}: expected auto, fanotify, ptrace, seccomp or both"))
}

/// How long the app has to stop after SIGTERM, less the time kept for the report, when
/// neither `--grace` nor the environment says: within Kubernetes' default 30 s.
const DEFAULT_GRACE: Duration = Duration::from_secs(25);

fn seconds(v: &str, source: &str) -> Result<Duration, String> {
    let secs: f64 = v
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{source}{v}: expected seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{source}{v}: must be positive, at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the arguments after the program name; flags win over `env`.
pub fn parse(args: &[String], env: EnvDefaults) -> Result<Options, String> {
    let (role, args) = match args.split_first() {
        Some((first, rest)) if first == "exec" => (Role::Exec, rest),
        _ => (Role::App, args),
    };
    let env_url = env.report_url;
    let mut o = Options {
        role,
        mode: match env.mode.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => mode(m, "WHITTLE_SENSOR_MODE=")?,
            None => ModeChoice::Auto,
        },
        grace: match env.grace.as_deref() {
            Some(v) => seconds(v, "WHITTLE_SENSOR_GRACE=")?,
            None => DEFAULT_GRACE,
        },
        report_file: None,
        // An exec'd command's observations go to the PID-1 sensor, never to the report server.
        report_url: env_url.filter(|u| !u.is_empty() && role == Role::App),
        user: None,
        argv: Vec::new(),
        credentials: env.credentials,
        keep_sys_admin: env.keep_sys_admin,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if flag == "--" {
            o.argv = it.cloned().collect();
            break;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--mode" => o.mode = mode(&value()?, "--mode ")?,
            "--grace" => o.grace = seconds(&value()?, "--grace ")?,
            "--report-file" => o.report_file = Some(PathBuf::from(value()?)),
            "--report-url" => o.report_url = Some(value()?).filter(|u| !u.is_empty()),
            "--user" => {
                let v = value()?;
                let parsed = v
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
                o.user = Some(parsed.ok_or_else(|| format!("--user {v}: expected UID:GID"))?);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.argv.is_empty() {
        return Err("no program to run after --".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_flags_and_program() {
        let o = parse(
            &s(&[
                "--mode",
                "ptrace",
                "--grace=3",
                "--report-file",
                "/r.json",
                "--user",
                "33:33",
                "--",
                "nginx",
                "-g",
                "x",
            ]),
            EnvDefaults {
                report_url: Some("http://127.0.0.1:1/r".into()),
                mode: Some("fanotify".into()),
                ..EnvDefaults::default()
            },
        )
        .unwrap();
        assert_eq!(o.mode, ModeChoice::Ptrace, "the flag wins over the env");
        assert_eq!(o.grace, Duration::from_secs(3));
        assert_eq!(o.report_file, Some(PathBuf::from("/r.json")));
        assert_eq!(o.report_url.as_deref(), Some("http://127.0.0.1:1/r"));
        assert_eq!(o.user, Some((33, 33)));
        assert_eq!(o.argv, s(&["nginx", "-g", "x"]));
    }

    #[test]
    fn the_environment_chooses_the_mode_when_no_flag_does() {
        let env = |m: &str| EnvDefaults {
            mode: Some(m.into()),
            ..EnvDefaults::default()
        };
        let o = parse(&s(&["--", "x"]), env("ptrace")).unwrap();
        assert_eq!(o.mode, ModeChoice::Ptrace);
        let o = parse(&s(&["--", "x"]), env("seccomp")).unwrap();
        assert_eq!(o.mode, ModeChoice::Seccomp);
        assert_eq!(
            parse(&s(&["--", "x"]), env("")).unwrap().mode,
            ModeChoice::Auto
        );
        assert!(
            parse(&s(&["--", "x"]), env("strace"))
                .unwrap_err()
                .contains("WHITTLE_SENSOR_MODE=strace")
        );
    }

    #[test]
    fn exec_wraps_a_command_and_never_reports_itself() {
        let env = EnvDefaults {
            report_url: Some("http://127.0.0.1:1/r".into()),
            grace: Some("55".into()),
            ..EnvDefaults::default()
        };
        let o = parse(&s(&["exec", "--", "pg_isready", "-q"]), env.clone()).unwrap();
        assert_eq!(o.role, Role::Exec);
        assert_eq!(o.argv, s(&["pg_isready", "-q"]));
        assert_eq!(o.report_url, None, "its observations go to PID 1");
        let app = parse(&s(&["--", "exec"]), env).unwrap();
        assert_eq!(app.role, Role::App, "a program named exec is still the app");
        assert_eq!(app.argv, s(&["exec"]));
        assert_eq!(
            app.grace,
            Duration::from_secs(55),
            "the pod's grace, from the env"
        );
        assert!(
            parse(
                &s(&["--", "x"]),
                EnvDefaults {
                    grace: Some("soon".into()),
                    ..EnvDefaults::default()
                }
            )
            .unwrap_err()
            .contains("WHITTLE_SENSOR_GRACE=soon")
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        assert!(
            parse(&s(&["--mode", "magic", "--", "x"]), EnvDefaults::default())
                .unwrap_err()
                .contains("magic")
        );
        assert!(parse(&s(&["--grace", "-1", "--", "x"]), EnvDefaults::default()).is_err());
        assert!(
            parse(&s(&["--",]), EnvDefaults::default())
                .unwrap_err()
                .contains("no program")
        );
        assert!(
            parse(&s(&["--bogus", "--", "x"]), EnvDefaults::default())
                .unwrap_err()
                .contains("--bogus")
        );
    }
}
