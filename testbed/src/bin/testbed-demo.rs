//! `make demo` until `whittle local` exists: builds the nginx fixture (debootstrap + umoci,
//! cached), starts a registry on loopback, pushes the image there, reads it back through the
//! registry API with oci-client and prints its reference, layers and size.

use std::process::ExitCode;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use whittle_testbed::fixtures;
use whittle_testbed::registry::Registry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    eprintln!("demo: building the nginx fixture (cached after the first run)...");
    let fixture = fixtures::nginx()?;
    let registry = Registry::start()?;
    let pushed = fixture.push(&registry, "demo/nginx:bookworm")?;
    let reference: Reference = pushed.parse()?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let (manifest, digest) = client
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await?;
    let config = fixture.config()?;
    println!("image      {pushed}");
    println!("digest     {digest}");
    println!(
        "entrypoint {}",
        serde_json::to_string(&config["config"]["Entrypoint"])?
    );
    println!("layers     {}", manifest.layers.len());
    for layer in &manifest.layers {
        println!(
            "  {}  {:>12} bytes  {}",
            layer.digest, layer.size, layer.media_type
        );
    }
    let total: i64 = manifest.layers.iter().map(|l| l.size).sum();
    println!(
        "size       {total} bytes compressed ({:.1} MB)",
        total as f64 / 1e6
    );
    println!(
        "(the registry on {} stops when the demo exits)",
        registry.host()
    );
    Ok(())
}
