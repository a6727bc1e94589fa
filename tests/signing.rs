//! Signatures and SLSA provenance whittle pushes, checked by the real cosign (v2, classic
//! `.sig`/`.att` layout) against the real registry: what verifies must verify, and a moved tag,
//! a replayed signature, another key or another predicate type must not. On a real cluster, an
//! operator that finds `status.hardenedImage` changed between harden and signing signs nothing.
//!
//! cosign runs with no way out to the internet: `--trusted-root` names an empty trusted root (no
//! transparency log, no CA: only `--key` is trusted), so it never fetches Sigstore's TUF
//! repository, and a proxy on a closed loopback port catches anything else it might try; each
//! run asserts it tried nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use whittle::api::{HardeningWorkflow, Phase};
use whittle::evidence::provenance::{self, ProvenanceInput, SlsaVersion};
use whittle::evidence::sign::{self, SignError, SigningKey};
use whittle::image::distribution::credentials::Credentials;
use whittle::image::distribution::registry::RegistryOptions;
use whittle::image::distribution::store::{Location, Store};
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

mod support;
use support::cosign::Cosign;

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_success(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
}

/// Asserts cosign refused, and said `why`.
fn assert_refused(what: &str, out: &Output, why: &str) {
    assert!(!out.status.success(), "{what} should fail:\n{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(why),
        "{what} failed, but not with {why:?}:\n{}",
        text(out)
    );
}

/// A store that talks plain HTTP to the test registry, and to no other host.
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

async fn digest_of(store: &Store, reference: &str) -> String {
    let location = Location::parse(reference).expect("reference");
    store
        .resolve(&location)
        .await
        .expect("resolve")
        .manifest_digest
}

/// A fresh P-256 key written as PKCS#8 PEM and loaded back from the file, with its public key
/// beside it.
fn key_files(dir: &Path, name: &str) -> (SigningKey, PathBuf) {
    let generated = SigningKey::generate().expect("generate key");
    let key_path = dir.join(format!("{name}.pem"));
    std::fs::write(
        &key_path,
        generated.to_pkcs8_pem().expect("pkcs8").as_bytes(),
    )
    .expect("write key");
    let key = SigningKey::load(&key_path).expect("load key");
    let pub_path = dir.join(format!("{name}.pub"));
    std::fs::write(&pub_path, key.public_key_pem()).expect("write public key");
    (key, pub_path)
}

/// Copies manifest `from` of `repo` to tag `to` byte for byte, with curl (not whittle's code).
fn copy_manifest(registry: &Registry, repo: &str, from: &str, to: &str) {
    let base = format!("http://{}/v2/{repo}/manifests", registry.host());
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let got = Command::new("curl")
        .args(["-fsS", "-H", &format!("Accept: {oci}")])
        .arg(format!("{base}/{from}"))
        .output()
        .expect("curl");
    assert_success("curl GET manifest", &got);
    let mut put = Command::new("curl")
        .args(["-fsS", "-X", "PUT", "-H", &format!("Content-Type: {oci}")])
        .args(["--data-binary", "@-"])
        .arg(format!("{base}/{to}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    std::io::Write::write_all(&mut put.stdin.take().expect("stdin"), &got.stdout)
        .expect("write manifest");
    let out = put.wait_with_output().expect("curl PUT");
    assert_success("curl PUT manifest", &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_images_verify_with_cosign_and_moved_tags_or_replayed_signatures_do_not() {
    let cosign = Cosign::new();
    let registry = Registry::start().expect("registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(&registry);
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(&registry, "signed/busybox:1")
        .expect("push");
    let digest = digest_of(&store, &image).await;
    let (key, public) = key_files(dir.path(), "whittle");
    let (_, other_public) = key_files(dir.path(), "other");

    let location = Location::parse(&image).expect("reference");
    let signature = sign::sign_image(&store, &location, &digest, &key)
        .await
        .expect("sign");
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        signature.starts_with(&format!(
            "{}/signed/busybox:sha256-{hex}.sig@sha256:",
            registry.host()
        )),
        "{signature}"
    );

    // By tag and by digest; cosign prints the payloads it verified.
    let out = cosign.verify(&public, &image);
    assert_success("cosign verify", &out);
    let verified: Value = serde_json::from_slice(&out.stdout).expect("cosign prints JSON");
    assert_eq!(
        verified[0]["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        verified[0]["critical"]["identity"]["docker-reference"],
        format!("{}/signed/busybox", registry.host())
    );
    let pinned = format!("{}/signed/busybox@{digest}", registry.host());
    assert_success("cosign verify by digest", &cosign.verify(&public, &pinned));

    // Another key does not verify it.
    assert_refused(
        "cosign verify with another key",
        &cosign.verify(&other_public, &image),
        "no matching signatures",
    );

    // Another image pushed under the tag has no signature.
    fixtures::busybox(Some("SIGINT"))
        .expect("busybox SIGINT fixture")
        .push(&registry, "signed/busybox:1")
        .expect("push over the tag");
    let moved = digest_of(&store, &image).await;
    assert_ne!(moved, digest);
    assert_refused(
        "cosign verify of the moved tag",
        &cosign.verify(&public, &image),
        "no signatures found",
    );

    // The first image's signature copied to where the second's would be: the signature is
    // valid, but it is about another digest.
    let moved_hex = moved.trim_start_matches("sha256:");
    copy_manifest(
        &registry,
        "signed/busybox",
        &format!("sha256-{hex}.sig"),
        &format!("sha256-{moved_hex}.sig"),
    );
    assert_refused(
        "cosign verify of a replayed signature",
        &cosign.verify(&public, &image),
        "invalid or missing digest in claim",
    );
    // The original, by digest, still verifies.
    assert_success("cosign verify by digest", &cosign.verify(&public, &pinned));
}

fn provenance_input(registry: &Registry, digest: &str, source: &str) -> ProvenanceInput {
    ProvenanceInput {
        hardened_name: format!("{}/attested/busybox", registry.host()),
        hardened_digest: digest.to_string(),
        source_image: source.to_string(),
        source_digest: format!("sha256:{}", "5e".repeat(32)),
        reports: vec![("busybox-5d8f/report.json".into(), "7a".repeat(32))],
        include: vec!["/etc/ssl/**".into()],
        exclude: vec!["/tmp/**".into()],
        packs: vec![],
        started_on: Timestamp::from_second(1_780_000_000).expect("time"),
        finished_on: Timestamp::from_second(1_780_000_075).expect("time"),
    }
}

/// The in-toto statement inside the first DSSE envelope cosign printed.
fn attested_statement(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().expect("cosign printed an envelope");
    let envelope: Value = serde_json::from_str(line).expect("envelope JSON");
    assert_eq!(envelope["payloadType"], sign::IN_TOTO_PAYLOAD_TYPE);
    let payload = BASE64
        .decode(envelope["payload"].as_str().expect("payload"))
        .expect("base64");
    serde_json::from_slice(&payload).expect("statement JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_verifies_with_cosign_for_its_slsa_predicate_type_and_key() {
    let cosign = Cosign::new();
    let registry = Registry::start().expect("registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(&registry);
    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(&registry, "attested/busybox:1-whittle-hardened")
        .expect("push");
    let digest = digest_of(&store, &image).await;
    let location = Location::parse(&image).expect("reference");
    let (key, public) = key_files(dir.path(), "whittle");
    let (_, other_public) = key_files(dir.path(), "other");
    let input = provenance_input(&registry, &digest, "127.0.0.1:1/shop/busybox:1");

    // SLSA v0.2: what `--type slsaprovenance` means.
    let attestation =
        provenance::attest_provenance(&store, &location, &input, SlsaVersion::V0_2, &key)
            .await
            .expect("attest");
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        attestation.contains(&format!(":sha256-{hex}.att@sha256:")),
        "{attestation}"
    );
    let out = cosign.verify_attestation(&public, "slsaprovenance", &image);
    assert_success("cosign verify-attestation --type slsaprovenance", &out);
    let statement = attested_statement(&out);
    assert_eq!(
        statement,
        provenance::statement(&input, SlsaVersion::V0_2).expect("statement")
    );
    assert_eq!(
        statement["predicate"]["builder"]["id"],
        provenance::builder_id()
    );
    assert_refused(
        "cosign verify-attestation with another key",
        &cosign.verify_attestation(&other_public, "slsaprovenance", &image),
        "no matching attestations",
    );
    assert_refused(
        "cosign verify-attestation --type slsaprovenance1 of a v0.2 attestation",
        &cosign.verify_attestation(&public, "slsaprovenance1", &image),
        "none of the attestations matched the predicate type",
    );

    // SLSA v1 (`--type slsaprovenance1`); it replaces the v0.2 attestation.
    provenance::attest_provenance(&store, &location, &input, SlsaVersion::V1, &key)
        .await
        .expect("attest v1");
    let out = cosign.verify_attestation(&public, "slsaprovenance1", &image);
    assert_success("cosign verify-attestation --type slsaprovenance1", &out);
    let statement = attested_statement(&out);
    assert_eq!(
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"],
        "5e".repeat(32)
    );

    // A statement about another image is refused before anything is pushed.
    let mut elsewhere = input.clone();
    elsewhere.hardened_digest = format!("sha256:{}", "00".repeat(32));
    let statement = provenance::statement(&elsewhere, SlsaVersion::V0_2).expect("statement");
    let err = sign::attest(
        &store,
        &location,
        &digest,
        &statement,
        SlsaVersion::V0_2.predicate_type(),
        &key,
    )
    .await
    .expect_err("a statement about another digest");
    assert!(matches!(err, SignError::Subject { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_cosign_generate_key_pair_sign_what_cosign_verifies() {
    let cosign = Cosign::new();
    let registry = Registry::start().expect("registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(&registry);
    let (key_path, pub_path) = cosign.generate_key_pair(dir.path(), "correct horse");
    let cosign_pub = std::fs::read_to_string(&pub_path).expect("read cosign.pub");

    let err = SigningKey::load_with_password(&key_path, None).expect_err("needs a password");
    assert_eq!(
        err.to_string(),
        format!(
            "signing key {}: encrypted cosign key needs COSIGN_PASSWORD",
            key_path.display()
        )
    );
    let err = SigningKey::load_with_password(&key_path, Some(b"wrong")).expect_err("wrong");
    assert!(matches!(err, SignError::Decrypt { .. }), "{err}");
    let key = SigningKey::load_with_password(&key_path, Some(b"correct horse")).expect("load");
    assert_eq!(key.public_key_pem(), cosign_pub);

    let image = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(&registry, "cosignkey/busybox:1")
        .expect("push");
    let digest = digest_of(&store, &image).await;
    let location = Location::parse(&image).expect("reference");
    sign::sign_image(&store, &location, &digest, &key)
        .await
        .expect("sign");
    assert_success(
        "cosign verify with cosign.pub",
        &cosign.verify(&pub_path, &image),
    );
}

/// Anyone who may patch a workflow's status subresource could otherwise get any digest signed
/// with the workflow's key: the operator is stopped while the hardened image is being verified,
/// `status.hardenedImage` is set to the unhardened source (and the verification to Passed, so
/// that the next step is signing), and the operator started again. It must refuse with
/// StatusTampered and sign neither digest.
#[tokio::test(flavor = "multi_thread")]
async fn a_hardened_image_edited_in_the_status_is_not_signed() {
    let cosign = Cosign::new();
    let cluster = support::cluster_with_crd().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let busybox = fixtures::busybox(None)
        .expect("busybox fixture")
        .push(cluster.registry(), "shop/busybox:1")
        .expect("push busybox");
    let mut operator = support::Operator::start(&cluster);
    let (client, ns) = support::namespace(&cluster, "tamper", &[]).await;
    let (key, public) = key_files(dir.path(), "whittle");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cosign-key"},
        "stringData": {"cosign.key": key.to_pkcs8_pem().expect("pem").to_string()},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the key Secret");
    support::deploy_busybox_web(&client, &ns, &busybox, 1).await;
    support::apply_workflow(
        &client,
        &ns,
        json!({"target": {"name": "web"}, "registry": {"insecure": true},
               "observe": {"duration": "2s", "collectTimeout": "1m"},
               "sign": {"keySecret": "cosign-key"}}),
    )
    .await;

    // Verifying: harden has written status.hardenedImage and its seal; signing comes once the
    // hardened pods are ready, seconds later.
    let workflows: Api<HardeningWorkflow> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    loop {
        let status = support::status(&client, &ns, "web").await;
        assert!(
            !matches!(status.phase(), Phase::Failed | Phase::Succeeded),
            "{:?} before the operator could be stopped: {:?}",
            status.phase(),
            status.message
        );
        if status.phase() == Phase::Verifying {
            break;
        }
        assert!(start.elapsed() < support::WAIT, "not Verifying: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.kill();
    let status = support::status(&client, &ns, "web").await;
    assert_eq!(
        status.phase(),
        Phase::Verifying,
        "the operator was stopped too late: {:?}",
        status.message
    );
    assert!(status.signature.is_none(), "{status:?}");
    let hardened = status.hardened_image.clone().expect("status.hardenedImage");
    let source = status.source_image.clone().expect("status.sourceImage");
    assert!(
        source.contains("@sha256:") && source != hardened,
        "{source}"
    );
    workflows
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "hardenedImage": source,
                "verification": {"result": "Passed", "reason": "Passed",
                                 "message": "edited by hand"},
            }})),
        )
        .await
        .expect("patch the status subresource");
    operator.restart();

    let failed = support::wait_failed(&client, &ns, "web").await;
    let ready = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    let message = failed.message.clone().unwrap_or_default();
    assert_eq!(ready.reason, "StatusTampered", "{message}");
    assert!(message.contains(&source), "{message}");
    assert!(
        failed.signature.is_none() && failed.provenance.is_none(),
        "{failed:?}"
    );
    for (what, image) in [
        ("the edited digest", &source),
        ("the hardened image", &hardened),
    ] {
        assert_refused(
            &format!("cosign verify of {what}"),
            &cosign.verify(&public, image),
            "no signatures found",
        );
    }
    drop(operator);
}
