//! The report a sensor sends when its app stops: what the app opened, read, executed, probed
//! and created. Versioned JSON, documented field by field in `docs/report.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped on any change a reader of an older version would misread.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub schema_version: u32,
    pub sensor_version: String,
    /// The monitor that ran: `fanotify`, `ptrace`, `seccomp` (seccomp user notification) or
    /// `both` (fanotify beside seccomp or ptrace).
    pub mode: Mode,
    #[serde(default)]
    pub identity: Identity,
    /// Unix time in milliseconds when the sensor started the app, and when the report was made.
    pub started_at_ms: u64,
    pub stopped_at_ms: u64,
    /// The app's command line as the sensor started it.
    pub argv: Vec<String>,
    /// The app's exit status: its exit code, or 128+N when it died of signal N.
    pub exit_status: i32,
    /// Every path the app touched, keyed by absolute path.
    pub paths: BTreeMap<String, PathRecord>,
    /// Programs the app executed, keyed by absolute path.
    #[serde(default)]
    pub executables: BTreeMap<String, Executable>,
    /// Files that did not exist before the run and were created by it (not part of the image).
    #[serde(default)]
    pub created_files: Vec<String>,
    #[serde(default)]
    pub loss: Loss,
}

/// The monitor a report was recorded with. A sensor of another release may name one this
/// whittle does not know ([`Mode::Other`]): an operator upgraded while a workflow observes still
/// takes the reports of the sensor its previous version injected, and an older operator a newer
/// sensor's. Only `status.reports.modes` shows the mode; harden reads the paths alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Fanotify,
    Ptrace,
    Seccomp,
    Both,
    /// A monitor of another sensor release, by its name: lowercase ASCII letters, digits and
    /// `-`, at most [`MAX_MODE_LEN`] bytes (it ends up in the workflow's status).
    Other(String),
}

/// The longest monitor name a report may give.
pub const MAX_MODE_LEN: usize = 32;

impl Mode {
    pub fn as_str(&self) -> &str {
        match self {
            Mode::Fanotify => "fanotify",
            Mode::Ptrace => "ptrace",
            Mode::Seccomp => "seccomp",
            Mode::Both => "both",
            Mode::Other(name) => name,
        }
    }

    fn from_name(name: &str) -> Result<Mode, String> {
        Ok(match name {
            "fanotify" => Mode::Fanotify,
            "ptrace" => Mode::Ptrace,
            "seccomp" => Mode::Seccomp,
            "both" => Mode::Both,
            other
                if !other.is_empty()
                    && other.len() <= MAX_MODE_LEN
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Mode::Other(other.to_string())
            }
            other => {
                let shown: String = other.chars().take(MAX_MODE_LEN).collect();
                return Err(format!(
                    "report mode {shown:?} is not a monitor name (lowercase letters, digits and '-', at most {MAX_MODE_LEN} bytes)"
                ));
            }
        })
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let name = String::deserialize(deserializer)?;
        Mode::from_name(&name).map_err(serde::de::Error::custom)
    }
}

/// Where the report comes from (from the env the operator sets; empty under `whittle local`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The image the container runs (reference or digest), from `WHITTLE_IMAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// How a path was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Opened (any flags).
    Open,
    /// Data read (fanotify FAN_ACCESS).
    Read,
    /// Executed, or mapped as the program of an exec.
    Exec,
    /// stat/lstat/statx/access: metadata only.
    Stat,
    /// readlink: the link itself.
    Readlink,
    /// Used as a working directory.
    Chdir,
    /// Written to, renamed, removed, made or truncated.
    Modify,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRecord {
    /// Kinds of access seen, sorted, each once.
    pub access: Vec<Access>,
    /// True when at least one access found the path; false when every attempt failed because
    /// it does not exist (the app probed for it).
    pub exists: bool,
    /// Milliseconds after `startedAtMs` of the first access.
    pub first_seen_ms: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Executable {
    /// argv[0] as the app passed it to execve (ptrace mode; empty under fanotify).
    #[serde(default)]
    pub argv0: String,
    pub count: u64,
}

/// What the sensor knows it missed. Non-zero means the kept set may be incomplete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Loss {
    /// fanotify queue overflows (each loses an unknown number of events).
    #[serde(default)]
    pub fanotify_overflows: u64,
    /// fanotify events whose path could not be read.
    #[serde(default)]
    pub fanotify_unresolved: u64,
    /// Syscalls seen by ptrace or seccomp notification whose path argument could not be read or
    /// resolved (the field keeps its name: the schema is shared).
    #[serde(default)]
    pub ptrace_unresolved: u64,
    /// Accesses to existing paths left out because the report was full (see
    /// [`MAX_JSON_BYTES`]): the hardened image may lack those files. A path accessed twice
    /// after the report filled counts twice.
    #[serde(default)]
    pub dropped_paths: u64,
    /// Accesses to absent paths (probes) left out because the report was full. They cost the
    /// hardened image nothing (an absent path is absent there too), so they go first.
    #[serde(default)]
    pub dropped_absent_paths: u64,
    /// Executions left out of `executables` because the report was full (the programs' paths
    /// are still in `paths` while there is room).
    #[serde(default)]
    pub dropped_execs: u64,
    /// Bytes cut from `argv` and from executables' `argv0` to keep them within bounds.
    #[serde(default)]
    pub truncated_bytes: u64,
}

/// The largest report, as JSON, the operator's intake accepts; the sensor keeps its reports
/// within it.
pub const MAX_JSON_BYTES: usize = 16 << 20;
/// The largest gzip-compressed report body the intake accepts.
pub const MAX_GZIP_BYTES: usize = 4 << 20;

/// A report that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not a whittle report (invalid JSON at line {line}, column {column}): {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "report schema version {found} is not supported (this whittle reads version {SCHEMA_VERSION}); use a sensor and whittle from the same release"
    )]
    Version { found: u32 },
    #[error("report path {0:?} is not absolute and normalised")]
    BadPath(String),
}

impl Report {
    /// Parses and validates a report (JSON; gzip is the transport's business).
    pub fn from_json_slice(bytes: &[u8]) -> Result<Report, ReportError> {
        Self::checked(serde_json::from_slice(bytes))
    }

    /// As [`Report::from_json_slice`], reading the JSON from a stream, so that the operator
    /// never holds a report's JSON and its parsed form at once.
    pub fn from_json_reader(reader: impl std::io::Read) -> Result<Report, ReportError> {
        Self::checked(serde_json::from_reader(std::io::BufReader::new(reader)))
    }

    fn checked(parsed: serde_json::Result<Report>) -> Result<Report, ReportError> {
        let report = parsed.map_err(|e| ReportError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        report.validate()?;
        Ok(report)
    }

    pub fn validate(&self) -> Result<(), ReportError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ReportError::Version {
                found: self.schema_version,
            });
        }
        let all = self
            .paths
            .keys()
            .chain(self.executables.keys())
            .chain(self.created_files.iter());
        for path in all {
            if !is_normal_absolute(path) {
                return Err(ReportError::BadPath(path.clone()));
            }
        }
        Ok(())
    }

    /// The paths that existed when the app used them, sorted.
    pub fn existing_paths(&self) -> impl Iterator<Item = &str> {
        self.paths
            .iter()
            .filter(|(_, r)| r.exists)
            .map(|(p, _)| p.as_str())
    }
}

/// `/a/b`: absolute, no `.`/`..` components, no empty components, no trailing slash.
pub fn is_normal_absolute(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut paths = BTreeMap::new();
        paths.insert(
            "/etc/nginx/nginx.conf".into(),
            PathRecord {
                access: vec![Access::Open],
                exists: true,
                first_seen_ms: 3,
                count: 1,
            },
        );
        paths.insert(
            "/etc/missing".into(),
            PathRecord {
                access: vec![Access::Stat],
                exists: false,
                first_seen_ms: 4,
                count: 2,
            },
        );
        Report {
            schema_version: SCHEMA_VERSION,
            sensor_version: "0.1.0".into(),
            mode: Mode::Ptrace,
            identity: Identity::default(),
            started_at_ms: 1,
            stopped_at_ms: 2,
            argv: vec!["/usr/sbin/nginx".into()],
            exit_status: 0,
            paths,
            executables: BTreeMap::new(),
            created_files: vec![],
            loss: Loss::default(),
        }
    }

    #[test]
    fn round_trips_and_lists_existing_paths() {
        let json = serde_json::to_vec(&sample()).unwrap();
        let back = Report::from_json_slice(&json).unwrap();
        assert_eq!(back, sample());
        assert_eq!(
            back.existing_paths().collect::<Vec<_>>(),
            ["/etc/nginx/nginx.conf"]
        );
        assert!(
            String::from_utf8(json)
                .unwrap()
                .contains("\"schemaVersion\":1")
        );
    }

    #[test]
    fn rejects_garbage_other_versions_and_relative_paths() {
        let e = Report::from_json_slice(b"{\"schemaVersion\":").unwrap_err();
        assert!(e.to_string().contains("not a whittle report"), "{e}");
        let mut r = sample();
        r.schema_version = 9;
        let e = Report::from_json_slice(&serde_json::to_vec(&r).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        let mut r = sample();
        r.created_files.push("etc/../x".into());
        let e = Report::from_json_slice(&serde_json::to_vec(&r).unwrap()).unwrap_err();
        assert!(e.to_string().contains("etc/../x"), "{e}");
    }

    /// A report as a newer sensor may send it: a field this whittle does not know at the top,
    /// in a path record and in `loss`, and a monitor it has never heard of.
    fn from_a_newer_sensor(mode: &str) -> Vec<u8> {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["mode"] = mode.into();
        v["kernelVersion"] = "7.1.0".into();
        v["paths"]["/etc/nginx/nginx.conf"]["inode"] = 42.into();
        v["loss"]["ebpfLost"] = 3.into();
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_newer_sensors_unknown_fields_and_mode_are_accepted() {
        let r = Report::from_json_slice(&from_a_newer_sensor("ebpf")).unwrap();
        assert_eq!(r.mode, Mode::Other("ebpf".into()));
        assert_eq!(r.mode.as_str(), "ebpf");
        assert_eq!(r.paths, sample().paths, "unknown fields are ignored");
        // Written back (the operator re-serializes what it stores) the name is kept.
        let back = Report::from_json_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.mode, Mode::Other("ebpf".into()));
        for known in ["fanotify", "ptrace", "seccomp", "both"] {
            let r = Report::from_json_slice(&from_a_newer_sensor(known)).unwrap();
            assert_eq!(r.mode.as_str(), known);
            assert!(!matches!(r.mode, Mode::Other(_)), "{known}");
        }
    }

    #[test]
    fn an_unknown_mode_is_a_short_name_or_refused() {
        let long = "e".repeat(MAX_MODE_LEN + 1);
        for bad in ["", "Ebpf", "e bpf", "ebpf\n", long.as_str()] {
            let e = Report::from_json_slice(&from_a_newer_sensor(bad)).unwrap_err();
            assert!(e.to_string().contains("mode"), "{bad:?}: {e}");
        }
        let longest = "e".repeat(MAX_MODE_LEN);
        assert!(Report::from_json_slice(&from_a_newer_sensor(&longest)).is_ok());
        let e = Report::from_json_slice(br#"{"mode": 7}"#).unwrap_err();
        assert!(e.to_string().contains("not a whittle report"), "{e}");
    }

    #[test]
    fn normal_absolute_paths() {
        for ok in ["/", "/a", "/a/b.c"] {
            assert!(is_normal_absolute(ok), "{ok}");
        }
        for bad in ["", "a", "/a/", "/a//b", "/a/./b", "/../a"] {
            assert!(!is_normal_absolute(bad), "{bad}");
        }
    }
}
