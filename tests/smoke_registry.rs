//! The test bed's registry is real: oci-client pulls the nginx fixture's manifest and a layer
//! from Debian's docker-registry, with and without auth, and a wrong password says so.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use whittle_testbed::images::fixtures;
use whittle_testbed::images::registry::Registry;

fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

async fn pull_manifest_and_first_layer(reference: &str, auth: &RegistryAuth) {
    let reference: Reference = reference.parse().expect("reference");
    let client = client();
    let (manifest, digest) = client
        .pull_image_manifest(&reference, auth)
        .await
        .expect("pull manifest");
    assert!(digest.starts_with("sha256:"));
    assert!(!manifest.layers.is_empty());
    let layer = &manifest.layers[0];
    let mut blob = Vec::new();
    client
        .pull_blob(&reference, layer, &mut blob)
        .await
        .expect("pull layer");
    assert_eq!(
        blob.len() as i64,
        layer.size,
        "layer size matches its descriptor"
    );
    let got = format!("sha256:{:x}", Sha256::digest(&blob));
    assert_eq!(got, layer.digest, "layer content matches its digest");
}

#[tokio::test]
async fn anonymous_registry_serves_the_nginx_fixture() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let registry = Registry::start().expect("registry");
    let reference = fixture.push(&registry, "smoke/nginx:1").expect("push");
    pull_manifest_and_first_layer(&reference, &RegistryAuth::Anonymous).await;
}

#[tokio::test]
async fn authenticated_registry_needs_the_right_password() {
    let fixture = fixtures::nginx().expect("nginx fixture");
    let registry = Registry::start_with_auth().expect("registry");
    let (user, password) = registry.credentials().expect("credentials");
    let reference = fixture.push(&registry, "smoke/nginx:1").expect("push");
    pull_manifest_and_first_layer(&reference, &RegistryAuth::Basic(user.clone(), password)).await;

    let parsed: Reference = reference.parse().expect("reference");
    let wrong = RegistryAuth::Basic(user, "not-the-password".into());
    let err = client()
        .pull_image_manifest(&parsed, &wrong)
        .await
        .expect_err("a wrong password must be refused");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("401") || text.contains("unauthorized") || text.contains("authentication"),
        "error should say the credentials were refused: {err:?}"
    );

    let err = client()
        .pull_image_manifest(&parsed, &RegistryAuth::Anonymous)
        .await
        .expect_err("anonymous access must be refused");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("401") || text.contains("unauthorized") || text.contains("auth"),
        "{err:?}"
    );
}
