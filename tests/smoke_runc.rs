//! The test bed's containers are real: runc runs the nginx fixture, `GET /` returns Debian's
//! nginx welcome page, and the image's stop signal (SIGQUIT) stops it.

use std::io::Read;
use std::time::Duration;

use whittle_testbed::images::fixtures;
use whittle_testbed::runc::{Bundle, Container, RunOptions};

#[test]
fn nginx_fixture_serves_the_welcome_page_and_stops_on_sigquit() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let config = fixture.config().expect("config");
    assert_eq!(config["config"]["StopSignal"], "SIGQUIT");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/sbin/nginx", "-g", "daemon off;"])
    );

    let bundle = Bundle::from_layout(&fixture.layout, &fixture.tag).expect("unpack");
    assert_eq!(bundle.exposed_port(), Some(80));
    let mut container = Container::start(bundle, RunOptions::default()).expect("start");
    container
        .wait_port(80, Duration::from_secs(20))
        .expect("nginx listens");

    let page = container.http_get(80, "/").expect("GET /");
    assert_eq!(page.status, 200);
    let body = String::from_utf8_lossy(&page.body);
    assert!(body.contains("Welcome to nginx!"), "{body}");
    assert_eq!(
        container
            .http_get(80, "/missing")
            .expect("GET /missing")
            .status,
        404
    );

    // The forward makes the container reachable from the host's loopback too.
    let forward = container.forward(80).expect("forward");
    let mut stream = std::net::TcpStream::connect(forward.addr()).expect("connect forward");
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let exit = container.stop(Duration::from_secs(20)).expect("stop");
    assert_eq!(
        exit.code,
        0,
        "nginx exits cleanly on SIGQUIT; stderr: {}",
        container.stderr()
    );
}
