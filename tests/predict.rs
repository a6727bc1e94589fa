//! What a hardening would remove at most (`mode: Report`, `whittle inspect --predict`), read
//! from the test bed's fixture images in a real registry.

use std::path::Path;
use std::process::Command;

use whittle::api::policy::Prediction;
use whittle::evidence::vulns::VulnDb;
use whittle::image::distribution::credentials::Credentials;
use whittle::image::distribution::registry::RegistryOptions;
use whittle::image::distribution::store::{Location, Store};
use whittle::image::predict::{Overrides, Predicted, predict_for};
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

fn store(registry: &Registry) -> Store {
    whittle::init_tls();
    Store::new(
        Credentials::anonymous(),
        RegistryOptions {
            insecure_registries: vec![registry.host()],
            ..Default::default()
        },
    )
}

fn predicted(registry: &Registry, image: &str) -> Predicted {
    predicted_for(registry, image, &Overrides::default())
}

fn predicted_for(registry: &Registry, image: &str, overrides: &Overrides) -> Predicted {
    let store = store(registry);
    let location = Location::parse(image).expect("reference");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(predict_for(&store, &location, overrides, None))
        .unwrap_or_else(|e| panic!("predicting {image}: {e}"))
}

#[test]
fn nginx_keeps_at_least_nginx_and_its_libraries() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::nginx()
        .expect("nginx fixture")
        .push(&registry, "predict/nginx:1")
        .expect("push");
    let mut p = predicted(&registry, &src);
    let summary = p.match_vulnerabilities(
        &VulnDb::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/bookworm-synthetic"),
        )
        .expect("osv records"),
    );
    let pr = &p.prediction;
    eprintln!(
        "nginx: minimal set {:?}\n{}% removable, {} of {} files kept ({} of {} bytes, {} compressed of {}), shells {:?}, package managers {:?}, setuid {:?}, packages {:?}, vulnerabilities {:?} ({} removable), entrypoint {:?}",
        p.minimal,
        pr.removable_percent,
        p.minimal_files,
        pr.files,
        p.minimal_file_bytes,
        p.file_bytes,
        p.kept_bytes_at_least,
        p.source_bytes,
        pr.shells,
        pr.package_managers,
        pr.setuid,
        pr.packages,
        pr.vulnerabilities,
        summary.removed.len(),
        p.entrypoint,
    );
    eprintln!(
        "remaining findings {:?}",
        summary
            .remaining
            .iter()
            .map(|f| &f.package)
            .collect::<Vec<_>>(),
    );

    assert!(pr.digest.contains("@sha256:"), "{}", pr.digest);
    assert!(
        pr.os.as_deref().is_some_and(|os| os.starts_with("Debian")),
        "{:?}",
        pr.os
    );
    assert!(pr.packages.is_some_and(|n| n > 50), "{:?}", pr.packages);
    assert!(pr.files > 1000, "{}", pr.files);
    assert_eq!(p.entrypoint, ["/usr/sbin/nginx"]);
    // bookworm's /bin is a link to usr/bin: the shells are listed where the files are.
    for shell in ["usr/bin/bash", "usr/bin/dash"] {
        assert!(pr.shells.iter().any(|s| s == shell), "{:?}", pr.shells);
    }
    assert!(
        pr.package_managers.iter().any(|m| m == "usr/bin/dpkg"),
        "{:?}",
        pr.package_managers
    );
    assert!(
        pr.setuid.iter().any(|s| s.ends_with("bin/su")),
        "{:?}",
        pr.setuid
    );
    assert!(pr.removable_percent >= 80, "{}", pr.removable_percent);
    assert!(p.kept_bytes_at_least > 0 && p.kept_bytes_at_least < p.source_bytes / 5);

    // The entrypoint and what the loader needs to start it.
    for needed in [
        "usr/sbin/nginx",
        "usr/lib64/ld-linux-x86-64.so.2",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
        "usr/lib/x86_64-linux-gnu/libz.so.1",
    ] {
        assert!(
            p.minimal.iter().any(|k| k.starts_with(needed)),
            "{needed} not in {:?}",
            p.minimal
        );
    }

    // tests/data/osv/SOURCES.md: dpkg, tar and glibc (libc6, libc-bin) are affected. dpkg's
    // and tar's go with everything else; libc6 stays, nginx needs it.
    assert_eq!(pr.vulnerabilities, Some(4));
    assert_eq!(pr.vulnerabilities_removable, Some(2), "dpkg's and tar's");
    let packages = |list: &[whittle::evidence::vulns::matching::Finding]| {
        list.iter().map(|f| f.package.clone()).collect::<Vec<_>>()
    };
    let removed = packages(&summary.removed);
    assert!(
        removed.contains(&"dpkg".to_string()) && removed.contains(&"tar".to_string()),
        "{removed:?}"
    );
    assert!(
        packages(&summary.remaining).contains(&"libc6".to_string()),
        "{:?}",
        summary.remaining
    );

    // A container that starts nginx through bash needs bash (and sh, dash stay removable).
    let through_bash = predicted_for(
        &registry,
        &src,
        &Overrides {
            command: Some(vec![
                "bash".into(),
                "-c".into(),
                "exec nginx -g 'daemon off;'".into(),
            ]),
            args: None,
        },
    );
    assert_eq!(
        through_bash.entrypoint,
        ["/usr/bin/bash", "/usr/sbin/nginx"]
    );
    assert_eq!(
        through_bash.prediction.shells,
        ["usr/bin/dash", "usr/bin/sh"]
    );
    assert!(through_bash.minimal_file_bytes > p.minimal_file_bytes);

    // The command line prints the same prediction as JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["inspect", &src, "--insecure", "--predict"])
        .env_remove("DOCKER_CONFIG")
        .env("HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run whittle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Prediction = serde_json::from_str(&stdout).expect("a Prediction");
    assert_eq!(
        printed,
        Prediction {
            vulnerabilities: None,
            vulnerabilities_removable: None,
            ..pr.clone()
        }
    );
    let extra: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(extra["sourceBytes"], p.source_bytes);
    assert_eq!(extra["keptBytesAtLeast"], p.kept_bytes_at_least);
}

#[test]
fn busybox_keeps_its_shell() {
    let registry = Registry::start().expect("registry");
    let src = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(&registry, "predict/busybox:1")
        .expect("push");
    let p = predicted(&registry, &src);
    let pr = &p.prediction;
    eprintln!(
        "busybox: {}% removable, {} of {} files kept ({} of {} bytes), shells {:?}, package managers {:?}, setuid {:?}, packages {:?}, entrypoint {:?}",
        pr.removable_percent,
        p.minimal_files,
        pr.files,
        p.minimal_file_bytes,
        p.file_bytes,
        pr.shells,
        pr.package_managers,
        pr.setuid,
        pr.packages,
        p.entrypoint,
    );
    // Cmd `/bin/sh` is a link to busybox: the command is the shell, nothing removes it.
    assert_eq!(p.entrypoint, ["/bin/sh"]);
    assert!(p.minimal.contains("bin/busybox"), "{:?}", p.minimal);
    assert!(
        !pr.shells
            .iter()
            .any(|s| s == "bin/busybox" || s == "bin/sh"),
        "{:?}",
        pr.shells
    );
    assert_eq!(pr.os, None);
    assert_eq!(pr.packages, None);
    // Besides busybox there are a few bytes of /etc and /www.
    assert!(pr.removable_percent < 5, "{}", pr.removable_percent);
}
