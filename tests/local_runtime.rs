//! `whittle local`'s runtime runs a real image with runc: the nginx fixture's root filesystem
//! (unpacked by umoci, independently of whittle) and its image config become a bundle, the app
//! is reachable through a host loopback port, exercises run against it, and the image's stop
//! signal ends it with status 0.

use std::time::Duration;

use whittle::local::bundle::{RunConfig, write_spec};
use whittle::local::container::{Container, parse_signal};
use whittle::local::{exercise, forward::Forward};
use whittle_testbed::images::fixtures;
use whittle_testbed::runc::Bundle;

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_nginx_reachable_from_the_host_and_stops_it_gracefully() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let unpacked = Bundle::from_layout(&fixture.layout, &fixture.tag).expect("unpack");
    let config = &unpacked.image_config()["config"];
    let run = RunConfig {
        args: [strings(&config["Entrypoint"]), strings(&config["Cmd"])].concat(),
        env: strings(&config["Env"]),
        cwd: config["WorkingDir"].as_str().unwrap_or_default().into(),
        user: config["User"].as_str().unwrap_or_default().into(),
        extra_capabilities: vec![],
    };
    let bundle = tempfile::tempdir().expect("bundle dir");
    write_spec(bundle.path(), &unpacked.rootfs(), &run).expect("spec");

    let mut container = Container::start(bundle.path()).await.expect("start");
    container
        .wait_ready(80, None, "", Duration::from_secs(30))
        .await
        .expect("nginx accepts connections");
    let forward = Forward::start(container.netns(), 80)
        .await
        .expect("forward");
    let target = forward.addr().to_string();

    let ok = exercise::run(
        "curl -fsS http://$WHITTLE_TARGET/ | grep -q 'Welcome to nginx'",
        &target,
        Duration::from_secs(30),
    )
    .await
    .expect("exercise");
    assert!(ok.passed, "{ok:?}");
    let missing = exercise::run(
        "curl -fsS http://$WHITTLE_TARGET/missing",
        &target,
        Duration::from_secs(30),
    )
    .await
    .expect("exercise");
    assert!(
        !missing.passed && missing.exit_code == Some(22),
        "curl -f fails on 404: {missing:?}"
    );

    let signal = parse_signal(config["StopSignal"].as_str().unwrap_or_default()).expect("signal");
    let code = container
        .stop(signal, Duration::from_secs(20))
        .await
        .expect("stop");
    assert_eq!(code, 0, "stderr: {}", container.stderr_tail(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_app_is_reported_with_its_stderr() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let unpacked = Bundle::from_layout(&fixture.layout, &fixture.tag).expect("unpack");
    let run = RunConfig {
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo broken config >&2; exit 4".into(),
        ],
        env: vec!["PATH=/usr/bin:/bin".into()],
        ..Default::default()
    };
    let bundle = tempfile::tempdir().expect("bundle dir");
    write_spec(bundle.path(), &unpacked.rootfs(), &run).expect("spec");
    let err = match Container::start(bundle.path()).await {
        Ok(mut c) => c
            .wait_ready(80, None, "", Duration::from_secs(20))
            .await
            .expect_err("never ready"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.contains("broken config"), "{text}");
}

/// An app that ignores the stop signal (a shell as PID 1 has no SIGTERM handler, and the kernel
/// drops unhandled signals for PID 1) is killed after the stop timeout, as `docker stop` does.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_ignores_the_stop_signal_is_killed_after_the_timeout() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let unpacked = Bundle::from_layout(&fixture.layout, &fixture.tag).expect("unpack");
    let run = RunConfig {
        args: vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        ..Default::default()
    };
    let bundle = tempfile::tempdir().expect("bundle dir");
    write_spec(bundle.path(), &unpacked.rootfs(), &run).expect("spec");
    let mut container = Container::start(bundle.path()).await.expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let code = container
        .stop(
            parse_signal("SIGTERM").expect("signal"),
            Duration::from_secs(2),
        )
        .await
        .expect("stopped, by SIGKILL if need be");
    assert_eq!(code, 128 + 9, "ended by SIGKILL");
}
