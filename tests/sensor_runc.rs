//! The sensor in real containers: runc runs the nginx fixture with the static sensor copied to
//! /.whittle/sensor as PID 1, in fanotify mode (CAP_SYS_ADMIN) and in the ptrace and seccomp
//! (user notification) modes (containerd's default capabilities: no CAP_SYS_ADMIN, no
//! CAP_SYS_PTRACE).

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use whittle_sensor::report::{Mode, Report};
use whittle_testbed::binaries::sensor_binary;
use whittle_testbed::images::fixtures;
use whittle_testbed::runc::{Bundle, Container, DEFAULT_CAPABILITIES, RunOptions};

/// The nginx fixture with the sensor installed; `args` go before `--`, `app` after it (the
/// image's own command when empty).
fn instrumented(args: &[&str], app: &[&str], extra_caps: &[&str]) -> Bundle {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let mut bundle = Bundle::from_layout(&fixture.layout, &fixture.tag).expect("unpack");
    let dir = bundle.rootfs().join(".whittle");
    std::fs::create_dir_all(&dir).expect("mkdir /.whittle");
    std::fs::copy(sensor_binary().expect("sensor binary"), dir.join("sensor"))
        .expect("copy sensor");
    let original = if app.is_empty() {
        bundle.args()
    } else {
        app.iter().map(|s| s.to_string()).collect()
    };
    let mut argv: Vec<String> = vec!["/.whittle/sensor".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push("--".into());
    argv.extend(original);
    bundle.set_args(argv);
    let caps: Vec<&str> = DEFAULT_CAPABILITIES
        .iter()
        .chain(extra_caps)
        .copied()
        .collect();
    bundle.set_capabilities(&caps);
    bundle
}

fn report_of(container: &Container) -> Report {
    let path = container.bundle().rootfs().join(".whittle/report.json");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; stderr: {}", path.display(), container.stderr()));
    Report::from_json_slice(&bytes).expect("valid report")
}

fn observe_nginx(mode_flag: &str, extra_caps: &[&str]) -> Report {
    let bundle = instrumented(
        &[
            "--mode",
            mode_flag,
            "--report-file",
            "/.whittle/report.json",
        ],
        &[],
        extra_caps,
    );
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    c.wait_port(80, Duration::from_secs(30))
        .expect("nginx listens under the sensor");
    let page = c.http_get(80, "/").expect("GET /");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("Welcome to nginx!"));
    assert_eq!(
        c.http_get(80, "/missing").expect("GET /missing").status,
        404
    );
    let exit = c.stop(Duration::from_secs(30)).expect("stop with SIGQUIT");
    assert_eq!(exit.code, 0, "stderr: {}", c.stderr());
    report_of(&c)
}

fn assert_nginx_paths(report: &Report) {
    let existing: Vec<&str> = report.existing_paths().collect();
    for want in [
        "/usr/sbin/nginx",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/mime.types",
        "/var/www/html/index.nginx-debian.html",
    ] {
        assert!(
            existing.contains(&want),
            "{want} missing from {existing:#?}"
        );
    }
    assert!(
        existing.iter().any(|p| p.contains("/libc.so.6")),
        "libc missing from {existing:#?}"
    );
    assert!(
        existing.iter().any(|p| p.contains("/libpcre2-8.so")),
        "pcre missing: {existing:#?}"
    );
    let own: Vec<_> = report
        .paths
        .keys()
        .chain(report.executables.keys())
        .filter(|p| p.starts_with("/.whittle"))
        .collect();
    assert!(own.is_empty(), "the sensor reported its own files: {own:?}");
    assert_eq!(report.exit_status, 0);
    assert_eq!(report.argv[0], "/usr/sbin/nginx");
}

#[test]
fn fanotify_mode_sees_nginx_serve_a_page() {
    let report = observe_nginx("fanotify", &["CAP_SYS_ADMIN"]);
    assert_eq!(report.mode, Mode::Fanotify);
    assert_nginx_paths(&report);
    assert_eq!(report.loss.fanotify_overflows, 0);
}

/// What both unprivileged monitors must see of nginx serving a page and a 404.
fn assert_unprivileged_nginx(report: &Report) {
    assert_nginx_paths(report);
    assert!(report.executables.contains_key("/usr/sbin/nginx"));
    // Probes for absent files are reported as absent, not as files to keep.
    let missing = &report.paths["/var/www/html/missing"];
    assert!(
        !missing.exists,
        "GET /missing probed a file that is not there"
    );
    // nginx makes its temp directories at start: created by the run, not part of the image.
    assert!(
        report
            .created_files
            .iter()
            .any(|p| p == "/var/lib/nginx/body"),
        "{:?}",
        report.created_files
    );
    // The workers drop to www-data before serving: their paths must still be read.
    assert_eq!(report.loss.ptrace_unresolved, 0, "{:?}", report.loss);
}

#[test]
fn ptrace_mode_needs_no_capability_and_sees_the_same() {
    let report = observe_nginx("ptrace", &[]);
    assert_eq!(report.mode, Mode::Ptrace);
    assert_unprivileged_nginx(&report);
}

#[test]
fn seccomp_mode_needs_no_capability_and_sees_the_same() {
    // auto picks seccomp user notification without CAP_SYS_ADMIN on Linux >= 5.5.
    let report = observe_nginx("auto", &[]);
    assert_eq!(report.mode, Mode::Seccomp);
    assert_unprivileged_nginx(&report);
}

/// The two unprivileged monitors report the same paths, with the same existence, for the
/// same work (counts may differ: nginx's timing does).
#[test]
fn seccomp_and_ptrace_reports_agree() {
    let script = "cd /etc/nginx && cat nginx.conf >/dev/null; test -e /etc/nope; \
                  ls conf.d >/dev/null; readlink /proc/self/exe >/dev/null; \
                  /bin/sh -c 'stat -c %n mime.types' >/dev/null";
    let reports: Vec<Report> = ["ptrace", "seccomp"]
        .iter()
        .map(|mode| {
            let args = ["--mode", mode, "--report-file", "/.whittle/report.json"];
            let (code, c) = run_to_exit(&args, &["sh", "-c", script]);
            assert_eq!(code, 0, "{mode}: {}", c.stderr());
            report_of(&c)
        })
        .collect();
    let view = |r: &Report| {
        r.paths
            .iter()
            .map(|(p, rec)| (p.clone(), rec.exists, rec.access.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&reports[0]), view(&reports[1]));
    assert_eq!(
        reports[0].executables.keys().collect::<Vec<_>>(),
        reports[1].executables.keys().collect::<Vec<_>>()
    );
    assert!(reports[1].paths.get("/etc/nope").is_some_and(|r| !r.exists));
    assert!(
        reports[1]
            .existing_paths()
            .any(|p| p == "/etc/nginx/mime.types")
    );
}

fn run_to_exit(args: &[&str], app: &[&str]) -> (i32, Container) {
    run_to_exit_with(args, app, &[])
}

fn run_to_exit_with(args: &[&str], app: &[&str], extra_caps: &[&str]) -> (i32, Container) {
    let bundle = instrumented(args, app, extra_caps);
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let exit = c.wait(Duration::from_secs(30)).expect("exit");
    (exit.code, c)
}

/// An app that lists a directory and opens nothing in it: every monitor must report the
/// directory (fanotify only does with FAN_ONDIR), or the hardened image would lack it.
#[test]
fn a_listed_directory_is_seen_in_every_mode() {
    for (mode, caps, expect) in [
        ("fanotify", &["CAP_SYS_ADMIN"][..], Mode::Fanotify),
        ("ptrace", &[][..], Mode::Ptrace),
        ("seccomp", &[][..], Mode::Seccomp),
        ("both", &["CAP_SYS_ADMIN"][..], Mode::Both),
    ] {
        let args = ["--mode", mode, "--report-file", "/.whittle/report.json"];
        let (code, c) = run_to_exit_with(&args, &["/bin/ls", "/etc/nginx/conf.d"], caps);
        assert_eq!(code, 0, "{mode}: {}", c.stderr());
        let report = report_of(&c);
        assert_eq!(report.mode, expect);
        assert!(
            report.existing_paths().any(|p| p == "/etc/nginx/conf.d"),
            "{mode}: {:?}",
            report.existing_paths().collect::<Vec<_>>()
        );
    }
}

/// fanotify alone cannot see stat() probes, so auto never runs it alone.
#[test]
fn auto_with_cap_sys_admin_runs_both_monitors() {
    let args = ["--mode", "auto", "--report-file", "/.whittle/report.json"];
    let (code, c) = run_to_exit_with(
        &args,
        &["sh", "-c", "test -e /etc/nginx/fastcgi_params"],
        &["CAP_SYS_ADMIN"],
    );
    assert_eq!(code, 0, "{}", c.stderr());
    let report = report_of(&c);
    assert_eq!(report.mode, Mode::Both);
    assert!(
        report
            .existing_paths()
            .any(|p| p == "/etc/nginx/fastcgi_params"),
        "the stat-only probe is recorded"
    );
}

#[test]
fn exit_status_is_the_apps() {
    for mode in ["ptrace", "seccomp"] {
        exit_status_is_the_apps_in(mode);
    }
}

fn exit_status_is_the_apps_in(mode: &str) {
    let file = ["--mode", mode, "--report-file", "/.whittle/report.json"];
    let (code, c) = run_to_exit(&file, &["sh", "-c", "exit 0"]);
    assert_eq!(code, 0, "{}", c.stderr());
    assert_eq!(report_of(&c).exit_status, 0);
    let (code, c) = run_to_exit(&file, &["sh", "-c", "cat /etc/hostname >/dev/null; exit 3"]);
    assert_eq!(code, 3, "{mode}: {}", c.stderr());
    // --report-file alone works with no network: the container has only loopback.
    let report = report_of(&c);
    assert_eq!(report.exit_status, 3);
    assert!(report.existing_paths().any(|p| p == "/etc/hostname"));
    let (code, c) = run_to_exit(&file, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(code, 128 + 15, "death by SIGTERM is 143");
    assert_eq!(report_of(&c).exit_status, 143);
}

#[test]
fn an_app_ignoring_sigterm_is_killed_after_the_grace_period() {
    for mode in ["ptrace", "seccomp"] {
        an_app_ignoring_sigterm_is_killed_in(mode);
    }
}

fn an_app_ignoring_sigterm_is_killed_in(mode: &str) {
    let bundle = instrumented(
        &[
            "--mode",
            mode,
            "--grace",
            "3",
            "--report-file",
            "/.whittle/report.json",
        ],
        &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
        &[],
    );
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    c.signal(Signal::SIGTERM).expect("SIGTERM");
    let exit = c.wait(Duration::from_secs(20)).expect("exit");
    let took = start.elapsed();
    assert_eq!(exit.code, 128 + 9, "{mode}: killed: {}", c.stderr());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(report_of(&c).exit_status, 137);
}

/// Zombie children of a host process, read from /proc.
fn zombie_children(pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("PPid:").as_deref() == Some(&pid.to_string())
            && field("State:").is_some_and(|s| s.starts_with('Z'))
        {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    for mode in ["ptrace", "seccomp"] {
        orphaned_grandchildren_are_reaped_in(mode);
    }
}

fn orphaned_grandchildren_are_reaped_in(mode: &str) {
    let bundle = instrumented(
        &["--mode", mode],
        &[
            "sh",
            "-c",
            "sh -c 'sleep 0.2 & sleep 0.3 & exit 0'; sleep 30",
        ],
        &[],
    );
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        zombie_children(c.pid()),
        Vec::<String>::new(),
        "the sensor left zombies"
    );
    c.signal(Signal::SIGTERM).expect("stop");
    assert_eq!(c.wait(Duration::from_secs(20)).expect("exit").code, 143);
}

/// Reads one HTTP request; returns (head, body).
fn read_request(stream: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    (head, body)
}

#[test]
fn the_report_is_posted_with_the_report_and_pod_tokens() {
    let mut bundle = instrumented(
        &[
            "--mode",
            "ptrace",
            "--report-url",
            "http://127.0.0.1:18080/v1/reports",
        ],
        &[
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.05; done; cat /etc/hostname",
        ],
        &[],
    );
    bundle.set_env("WHITTLE_REPORT_TOKEN", "s3cret");
    bundle.set_env("WHITTLE_POD_TOKEN_FILE", "/run/pod-token");
    std::fs::write(
        bundle.rootfs().join("run/pod-token"),
        "eyJhbGciOi.pod.token\n",
    )
    .expect("pod token");
    bundle.set_env("POD_NAME", "web-1");
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let listener = c
        .bind_in_netns(18080)
        .expect("listener in the container's netns");
    std::fs::write(c.bundle().rootfs().join("tmp/go"), "").expect("release the app");
    let (mut stream, _) = listener.accept().expect("the sensor connects");
    let (head, body) = read_request(&mut stream);
    stream
        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        .expect("reply");
    assert!(head.starts_with("POST /v1/reports HTTP/1.1"), "{head}");
    assert!(head.contains("Authorization: Bearer s3cret\r\n"), "{head}");
    assert!(
        head.contains("Whittle-Pod-Token: eyJhbGciOi.pod.token\r\n"),
        "{head}"
    );
    assert!(head.contains("Content-Encoding: gzip"), "{head}");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .expect("gzip body");
    let report = Report::from_json_slice(&json).expect("report");
    assert_eq!(report.identity.pod_name.as_deref(), Some("web-1"));
    assert!(report.existing_paths().any(|p| p == "/etc/hostname"));
    assert_eq!(
        c.wait(Duration::from_secs(20)).expect("exit").code,
        0,
        "{}",
        c.stderr()
    );
}

#[test]
fn a_dead_endpoint_does_not_hold_the_container_past_the_grace_period() {
    let bundle = instrumented(
        &[
            "--mode",
            "ptrace",
            "--grace",
            "2",
            "--report-url",
            "http://127.0.0.1:9/reports",
        ],
        &["sh", "-c", "sleep 30"],
        &[],
    );
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    c.signal(Signal::SIGTERM).expect("SIGTERM");
    let exit = c.wait(Duration::from_secs(20)).expect("exit");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?}; stderr: {}",
        c.stderr()
    );
    assert!(
        c.stderr()
            .contains("report delivery to http://127.0.0.1:9/reports failed"),
        "{}",
        c.stderr()
    );
    assert_eq!(exit.code, 143);
}

/// What the app may see of the sensor: its own environment and PID 1's.
const SHOW_ENVIRONS: &str = "printf 'self:'; tr '\\0' ' ' </proc/self/environ; echo; \
     if e=$(tr '\\0' ' ' </proc/1/environ 2>/dev/null); then echo \"pid1-readable:$e\"; \
     else echo pid1-unreadable; fi";

/// The variables the operator gives the sensor, which the app must not see.
const SENSOR_ENV: &[(&str, &str)] = &[
    ("WHITTLE_REPORT_TOKEN", "s3cret-report-token"),
    (
        "WHITTLE_POD_TOKEN_FILE",
        "/var/run/secrets/whittle.dev/report/token",
    ),
    ("WHITTLE_KEEP_SYS_ADMIN", "0"),
    ("WHITTLE_SENSOR_MODE", "auto"),
    ("WHITTLE_IMAGE", "registry.example/web:1"),
];

/// Runs SHOW_ENVIRONS under the sensor (as `user` when given: uid and gid, with no
/// capabilities but the bounding set, as a pod with runAsUser gets) and returns its stdout.
fn environs_seen_by_the_app(mode: &str, caps: &[&str], user: Option<u32>) -> String {
    let mut bundle = instrumented(&["--mode", mode], &["sh", "-c", SHOW_ENVIRONS], caps);
    for (k, v) in SENSOR_ENV {
        bundle.set_env(k, v);
    }
    bundle.set_env("POD_NAME", "web-1");
    bundle.set_env("APP_SETTING", "kept");
    if let Some(id) = user {
        let spec = bundle.spec_mut();
        spec["process"]["user"] = serde_json::json!({"uid": id, "gid": id});
        let all: Vec<&str> = DEFAULT_CAPABILITIES.iter().chain(caps).copied().collect();
        spec["process"]["capabilities"] = serde_json::json!({
            "bounding": all, "effective": [], "permitted": [], "inheritable": [], "ambient": [],
        });
    }
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let exit = c.wait(Duration::from_secs(30)).expect("exit");
    assert_eq!(exit.code, 0, "{mode} {user:?}: {}", c.stderr());
    c.stdout()
}

/// The app runs with the sensor's uid, so without more it could read the report token in its
/// own environment or in /proc/1/environ (the kernel keeps the sensor's initial environment
/// there, whatever the sensor does to its copy): the sensor starts the app without its
/// variables and makes itself non-dumpable.
#[test]
fn the_app_cannot_read_the_sensors_environment() {
    for (mode, caps, user) in [
        ("ptrace", &[][..], None),
        ("seccomp", &[][..], None),
        ("fanotify", &["CAP_SYS_ADMIN"][..], None),
        ("seccomp", &[][..], Some(1000)),
        ("ptrace", &[][..], Some(1000)),
        // An app that may ptrace anything reads /proc/1/environ, but the token's value is
        // overwritten there.
        ("seccomp", &["CAP_SYS_PTRACE"][..], None),
    ] {
        let out = environs_seen_by_the_app(mode, caps, user);
        let what = format!("{mode} as {user:?} with {caps:?}: {out}");
        assert!(
            out.contains("APP_SETTING=kept"),
            "the app's own env: {what}"
        );
        assert!(out.contains("POD_NAME=web-1"), "{what}");
        assert!(
            !out.contains("s3cret-report-token"),
            "the token leaked: {what}"
        );
        let (own, pid1) = out.split_once("pid1-").expect("both environs");
        for (k, v) in SENSOR_ENV {
            assert!(!own.contains(k) && !own.contains(v), "{k} leaked: {what}");
        }
        if caps.contains(&"CAP_SYS_PTRACE") {
            assert!(pid1.starts_with("readable:"), "{what}");
            assert!(pid1.contains("WHITTLE_REPORT_TOKEN= "), "{what}");
        } else {
            assert!(pid1.starts_with("unreadable"), "{what}");
        }
    }
}

/// The app's capability sets as /proc/self/status shows them to a program it executes.
fn app_capabilities(mode: &str, keep: Option<&str>) -> Vec<(String, u64)> {
    app_capabilities_with(mode, keep, &["CAP_SYS_ADMIN"], &[])
        .into_iter()
        .filter(|(k, _)| k.starts_with("Cap"))
        .collect()
}

/// Likewise with `NoNewPrivs`, in a container with `add` and without `remove`.
fn app_capabilities_with(
    mode: &str,
    keep: Option<&str>,
    add: &[&str],
    remove: &[&str],
) -> Vec<(String, u64)> {
    let mut bundle = instrumented(
        &["--mode", mode],
        &["sh", "-c", "grep -E '^(Cap|NoNewPrivs)' /proc/self/status"],
        add,
    );
    let caps: Vec<&str> = DEFAULT_CAPABILITIES
        .iter()
        .chain(add)
        .filter(|c| !remove.contains(c))
        .copied()
        .collect();
    bundle.set_capabilities(&caps);
    if let Some(v) = keep {
        bundle.set_env("WHITTLE_KEEP_SYS_ADMIN", v);
    }
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    let exit = c.wait(Duration::from_secs(30)).expect("exit");
    assert_eq!(exit.code, 0, "{mode}: {}", c.stderr());
    c.stdout()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;
const CAP_CHOWN_BIT: u64 = 1 << 0;

/// fanotify needs CAP_SYS_ADMIN in the sensor, not in the app: the sensor drops it from every
/// set of the app's, unless the original container had it (WHITTLE_KEEP_SYS_ADMIN=1).
#[test]
fn in_fanotify_mode_the_app_does_not_keep_cap_sys_admin() {
    for mode in ["fanotify", "both", "auto"] {
        let caps = app_capabilities(mode, None);
        assert_eq!(caps.len(), 5, "{mode}: {caps:?}");
        for (set, bits) in &caps {
            assert_eq!(bits & CAP_SYS_ADMIN_BIT, 0, "{mode}: {set} {bits:x}");
        }
        let eff = caps.iter().find(|(k, _)| k == "CapEff").expect("CapEff").1;
        assert_ne!(eff & CAP_CHOWN_BIT, 0, "{mode}: the rest stays: {eff:x}");
    }
    // Without CAP_SETPCAP the bounding set cannot change: no_new_privs keeps a root app from
    // getting the capability back at its next exec.
    let caps = app_capabilities_with("fanotify", None, &["CAP_SYS_ADMIN"], &["CAP_SETPCAP"]);
    for (set, bits) in &caps {
        if set != "CapBnd" && set != "NoNewPrivs" {
            assert_eq!(
                bits & CAP_SYS_ADMIN_BIT,
                0,
                "no CAP_SETPCAP: {set} {bits:x}"
            );
        }
    }
    assert!(caps.contains(&("NoNewPrivs".into(), 1)), "{caps:?}");
    for mode in ["fanotify", "both"] {
        let caps = app_capabilities(mode, Some("1"));
        for set in ["CapEff", "CapBnd", "CapPrm"] {
            let bits = caps.iter().find(|(k, _)| k == set).expect(set).1;
            assert_ne!(
                bits & CAP_SYS_ADMIN_BIT,
                0,
                "{mode} keeps it: {set} {bits:x}"
            );
        }
    }
}

#[test]
fn the_sensor_is_a_small_static_binary() {
    let bin = sensor_binary().expect("sensor binary");
    let size = std::fs::metadata(&bin).expect("metadata").len();
    assert!(size < 5 * 1024 * 1024, "{} is {size} bytes", bin.display());
    let out = std::process::Command::new("readelf")
        .arg("-lW")
        .arg(&bin)
        .output()
        .expect("readelf");
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(
        headers.contains("DYN (Position-Independent"),
        "a PIE: {headers}"
    );
    assert!(
        !headers.contains("INTERP"),
        "no dynamic loader needed: {headers}"
    );
}

/// What the runtime runs in the container beside the app (an exec probe, a hook: `runc exec`,
/// not a descendant of PID 1) is seen when wrapped in `whittle-sensor exec`, and joins PID 1's
/// report; unwrapped it is not (the monitors follow PID 1's descendants only). The wrapper
/// passes the command's exit status through and keeps the sensor's environment from it.
#[test]
fn exec_d_commands_join_the_report_when_wrapped() {
    for mode in ["ptrace", "seccomp"] {
        exec_d_commands_join_the_report_in(mode);
    }
}

fn exec_d_commands_join_the_report_in(mode: &str) {
    let mut bundle = instrumented(
        &["--mode", mode, "--report-file", "/.whittle/report.json"],
        &[],
        &[],
    );
    bundle.set_env("WHITTLE_REPORT_TOKEN", "v1.secret");
    let mut c = Container::start(bundle, RunOptions::default()).expect("start");
    c.wait_port(80, Duration::from_secs(30))
        .expect("nginx listens");
    let wrapped = |argv: &[&str]| {
        let mut all = vec!["/.whittle/sensor", "exec", "--mode", mode, "--"];
        all.extend(argv);
        c.exec(&all).expect("runc exec")
    };
    let (code, out, err) = wrapped(&["/usr/bin/md5sum", "/etc/debian_version"]);
    assert_eq!(code, 0, "{mode}: {out}{err}");
    let (code, _, err) = wrapped(&[
        "/bin/sh",
        "-c",
        "test -z \"$WHITTLE_REPORT_TOKEN\" && exit 3",
    ]);
    assert_eq!(
        code, 3,
        "{mode}: the command's status, without the token: {err}"
    );
    let (code, _, err) = c
        .exec(&["/usr/bin/sha1sum", "/etc/host.conf"])
        .expect("runc exec");
    assert_eq!(code, 0, "{err}");
    let exit = c.stop(Duration::from_secs(30)).expect("stop");
    assert_eq!(exit.code, 0, "stderr: {}", c.stderr());
    let report = report_of(&c);
    let existing: Vec<&str> = report.existing_paths().collect();
    for seen in ["/usr/bin/md5sum", "/etc/debian_version", "/bin/sh"] {
        let seen = existing.iter().any(|p| p.ends_with(seen));
        assert!(seen, "{mode}: {existing:#?}");
    }
    assert!(
        existing.contains(&"/usr/sbin/nginx"),
        "{mode}: the app's own paths stay"
    );
    for unseen in ["/usr/bin/sha1sum", "/etc/host.conf"] {
        assert!(
            !existing.contains(&unseen),
            "{mode}: {unseen} was not wrapped"
        );
    }
}
