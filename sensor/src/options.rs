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
];

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
[--report-file PATH] [--report-url http://IP:PORT/PATH] [--user UID:GID] -- PROGRAM [ARGS...]";

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
        }
    }
}

fn mode(name: &str, source: &str) -> Result<ModeChoice, String> {
    ModeChoice::from_name(name)
        .ok_or_else(|| format!("{source}{name}: expected auto, fanotify, ptrace, seccomp or both"))
}

/// Parses the arguments after the program name; flags win over `env`.
pub fn parse(args: &[String], env: EnvDefaults) -> Result<Options, String> {
    let env_url = env.report_url;
    let mut o = Options {
        mode: match env.mode.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => mode(m, "WHITTLE_SENSOR_MODE=")?,
            None => ModeChoice::Auto,
        },
        grace: Duration::from_secs(25),
        report_file: None,
        report_url: env_url.filter(|u| !u.is_empty()),
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
            "--grace" => {
                let v = value()?;
                let secs: f64 = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| format!("--grace {v}: expected seconds"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(format!("--grace {v}: must be positive"));
                }
                o.grace = Duration::from_secs_f64(secs);
            }
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
