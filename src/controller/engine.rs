//! I/O: the image engine, driven for a workflow. Registry credentials come from the workflow's
//! `registry.credentialsSecret` or, by default, the pod's imagePullSecrets, so the operator
//! pulls and pushes with what the workload itself is allowed to use.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::{Map, Value};

use super::error::{Error, Result};
use super::reason::Reason;
use crate::api::{Compression, HardeningWorkflow, Pack as ApiPack};
use crate::image::analysis::packs::Pack;
use crate::image::distribution::credentials::Credentials;
use crate::image::distribution::hints::Hints;
use crate::image::distribution::registry::RegistryOptions;
use crate::image::distribution::store::{Location, Store};
use crate::image::harden::{self, HardenOptions, Summary};
use crate::image::instrument::{self, Instrumented};
use crate::image::media::LayerCompression;
use whittle_sensor::report::Report;

const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// The Secrets whose credentials apply: the workflow's own, else the pod's pull secrets.
pub fn credential_secrets(workflow: &HardeningWorkflow, pull_secrets: &[String]) -> Vec<String> {
    match &workflow.spec.registry.credentials_secret {
        Some(name) => vec![name.clone()],
        None => pull_secrets.to_vec(),
    }
}

/// A store with the credentials of `secrets` (dockerconfigjson Secrets in `namespace`), merged
/// in order: the first Secret naming a registry wins.
pub async fn store(
    client: &Client,
    namespace: &str,
    secrets: &[String],
    insecure_registries: Vec<String>,
) -> Result<Store> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut auths = Map::new();
    for name in secrets {
        let secret = api.get_opt(name).await?.ok_or_else(|| Error::Failed {
            reason: Reason::CredentialsNotFound,
            message: format!("registry credentials Secret {namespace}/{name} does not exist"),
        })?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(DOCKER_CONFIG_KEY))
            .ok_or_else(|| Error::Failed {
                reason: Reason::CredentialsInvalid,
                message: format!(
                    "Secret {namespace}/{name} has no {DOCKER_CONFIG_KEY} key: it must be of type kubernetes.io/dockerconfigjson"
                ),
            })?;
        let config: Value = serde_json::from_slice(&bytes.0).map_err(|e| Error::Failed {
            reason: Reason::CredentialsInvalid,
            message: format!("Secret {namespace}/{name}: {DOCKER_CONFIG_KEY} is not JSON: {e}"),
        })?;
        if let Some(entries) = config.get("auths").and_then(Value::as_object) {
            for (registry, auth) in entries {
                auths
                    .entry(registry.clone())
                    .or_insert_with(|| auth.clone());
            }
        }
    }
    let credentials = if auths.is_empty() {
        Credentials::anonymous()
    } else {
        let merged = serde_json::to_vec(&serde_json::json!({"auths": auths})).unwrap_or_default();
        let origin = format!("Secrets {} in {namespace}", secrets.join(", "));
        Credentials::from_docker_config_json(&merged, &origin)?
    };
    Ok(Store::new(
        credentials,
        registry_options(insecure_registries),
    ))
}

/// The engine's registry options for a workflow: its messages name the workflow's fields
/// (`spec.registry.credentialsSecret`, `spec.registry.insecure`), not the CLI's flags.
fn registry_options(insecure_registries: Vec<String>) -> RegistryOptions {
    RegistryOptions {
        insecure_registries,
        hints: Hints::Workflow,
        ..Default::default()
    }
}

/// Where the instrumented and the hardened images go: the spec's names, else the source's
/// repository with `-whittle-instrumented` / `-whittle-hardened` tags. Without
/// `registry.credentialsSecret` a name outside the source's repository is refused.
pub struct Destinations {
    pub source: Location,
    pub instrumented: Location,
    pub hardened: Location,
}

pub fn destinations(workflow: &HardeningWorkflow, container_image: &str) -> Result<Destinations> {
    let spec = &workflow.spec;
    let parse = |field: &'static str, value: &str| {
        Location::parse(value).map_err(|e| Error::Failed {
            reason: Reason::InvalidImage,
            message: format!("{field}: {e}"),
        })
    };
    let source = parse("image", spec.image.as_deref().unwrap_or(container_image))?;
    let instrumented = match &spec.instrumented_image {
        Some(i) => parse("instrumentedImage", i)?,
        None => source.derived("whittle-instrumented"),
    };
    let hardened = match &spec.hardened_image {
        Some(h) => parse("hardenedImage", h)?,
        None => source.derived("whittle-hardened"),
    };
    if spec.registry.credentials_secret.is_none() {
        for (field, named, dest) in [
            ("instrumentedImage", &spec.instrumented_image, &instrumented),
            ("hardenedImage", &spec.hardened_image, &hardened),
        ] {
            // The pull secrets are the workload's: they may carry its images to its own
            // repository, not copy them to wherever a workflow's creator points.
            if let Some(named) = named
                && !dest.same_place(&source)
            {
                return Err(Error::Failed {
                    reason: Reason::DestinationNotAllowed,
                    message: format!(
                        "spec.{field} names {named}, but without spec.registry.credentialsSecret images go only to the source's repository {}: name a tag there, or set spec.registry.credentialsSecret to a Secret with credentials for the destination",
                        source.repository()
                    ),
                });
            }
        }
    }
    let distinct: BTreeSet<String> = [&source, &instrumented, &hardened]
        .iter()
        .map(|l| l.to_string())
        .collect();
    if distinct.len() < 3 {
        return Err(Error::Failed {
            reason: Reason::InvalidImage,
            message: format!(
                "the source ({source}), instrumented ({instrumented}) and hardened ({hardened}) images must differ: whittle never overwrites an image"
            ),
        });
    }
    Ok(Destinations {
        source,
        instrumented,
        hardened,
    })
}

impl Destinations {
    /// The registries this workflow names (source and destinations): with
    /// `spec.registry.insecure`, these alone are reached over plain HTTP.
    pub fn registries(&self) -> Vec<String> {
        let mut hosts: Vec<String> = [&self.source, &self.instrumented, &self.hardened]
            .iter()
            .filter_map(|l| l.registry_host())
            .map(str::to_string)
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// Pushes the instrumented image. Deterministic: a second run (after an operator restart)
/// pushes the same digest.
pub async fn instrument(store: &Store, dest: &Destinations, sensor: &Path) -> Result<Instrumented> {
    Ok(instrument::instrument(store, &dest.source, Some(&dest.instrumented), sensor).await?)
}

/// Builds and pushes the hardened image from the pinned source and the reports.
pub async fn harden(
    store: &Store,
    source_pinned: &str,
    dest: &Destinations,
    reports: Vec<Report>,
    workflow: &HardeningWorkflow,
) -> Result<Summary> {
    let source = Location::parse(source_pinned)?;
    let options = HardenOptions {
        reports,
        dst: Some(dest.hardened.clone()),
        include: workflow.spec.harden.include.clone(),
        exclude: workflow.spec.harden.exclude.clone(),
        packs: workflow
            .spec
            .harden
            .packs
            .iter()
            .map(|p| pack(*p))
            .collect(),
        compression: match workflow.spec.harden.compression {
            Compression::Gzip => LayerCompression::Gzip,
            Compression::Zstd => LayerCompression::Zstd,
        },
        progress: None,
    };
    Ok(harden::harden(store, &source, options).await?)
}

/// The engine's pack for `spec.harden.packs` (the API does not import the engine).
pub(crate) fn pack(p: ApiPack) -> Pack {
    match p {
        ApiPack::CaCertificates => Pack::CaCertificates,
        ApiPack::Nss => Pack::Nss,
        ApiPack::Tzdata => Pack::Tzdata,
        ApiPack::Locale => Pack::Locale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pack_of_the_spec_is_the_engines_pack_of_the_same_name() {
        for api in [
            ApiPack::CaCertificates,
            ApiPack::Nss,
            ApiPack::Tzdata,
            ApiPack::Locale,
        ] {
            let name = serde_json::to_value(api).unwrap();
            assert_eq!(name, pack(api).name(), "{api:?}");
        }
        assert_eq!(
            crate::image::analysis::packs::ALL.len(),
            4,
            "a new engine pack needs its spec.harden.packs value"
        );
    }

    fn workflow(spec: Value) -> HardeningWorkflow {
        HardeningWorkflow::new("w", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn destinations_default_to_tags_beside_the_source() {
        let w = workflow(serde_json::json!({"target": {"name": "web"}}));
        let d = destinations(&w, "127.0.0.1:5000/shop/web:1").unwrap();
        assert_eq!(d.registries(), ["127.0.0.1:5000"]);
        assert_eq!(
            d.instrumented.to_string(),
            "127.0.0.1:5000/shop/web:1-whittle-instrumented"
        );
        assert_eq!(
            d.hardened.to_string(),
            "127.0.0.1:5000/shop/web:1-whittle-hardened"
        );
    }

    #[test]
    fn a_resolved_source_equal_to_the_hardened_image_is_refused() {
        let w = workflow(serde_json::json!({"target": {"name": "web"},
            "hardenedImage": "127.0.0.1:5000/shop/web:1"}));
        let Err(Error::Failed { message, .. }) = destinations(&w, "127.0.0.1:5000/shop/web:1")
        else {
            panic!("accepted an overwrite of the source");
        };
        assert!(message.contains("must differ"), "{message}");
    }

    #[test]
    fn without_a_credentials_secret_destinations_stay_in_the_sources_repository() {
        for (field, other) in [
            ("hardenedImage", "registry.example/other:1"),
            ("instrumentedImage", "127.0.0.1:5000/shop/other:1"),
            ("hardenedImage", "127.0.0.1:5001/shop/web:slim"),
        ] {
            let w = workflow(serde_json::json!({"target": {"name": "web"}, field: other}));
            let Err(Error::Failed { reason, message }) =
                destinations(&w, "127.0.0.1:5000/shop/web:1")
            else {
                panic!("{field}: {other} accepted without spec.registry.credentialsSecret");
            };
            assert_eq!(reason, "DestinationNotAllowed");
            for part in [
                format!("spec.{field}"),
                other.to_string(),
                "spec.registry.credentialsSecret".into(),
                "127.0.0.1:5000/shop/web".into(),
            ] {
                assert!(message.contains(&part), "{part} not in {message}");
            }
        }
        // Another tag in the source's repository is the workload's own place.
        let w = workflow(serde_json::json!({"target": {"name": "web"},
            "hardenedImage": "127.0.0.1:5000/shop/web:slim",
            "instrumentedImage": "127.0.0.1:5000/shop/web:observe"}));
        destinations(&w, "127.0.0.1:5000/shop/web:1").expect("same repository");
        // With the workflow's own credentials, the destination is the creator's to choose.
        let w = workflow(serde_json::json!({"target": {"name": "web"},
            "registry": {"credentialsSecret": "push"},
            "hardenedImage": "registry.example/other:1"}));
        let d = destinations(&w, "127.0.0.1:5000/shop/web:1").expect("credentialsSecret set");
        assert_eq!(d.registries(), ["127.0.0.1:5000", "registry.example"]);
    }

    /// A registry on loopback answering every request with 401.
    fn refusing_registry() -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        host
    }

    async fn refusal(credentials: Credentials, options: RegistryOptions, image: &str) -> String {
        let store = Store::new(credentials, options);
        let location = Location::parse(image).unwrap();
        match store.resolve(&location).await {
            Ok(_) => panic!("{image} resolved"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn registry_errors_name_the_workflows_fields_not_the_clis_flags() {
        let host = refusing_registry();
        let image = format!("{host}/shop/web:1");
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "u:p");
        let config = serde_json::json!({"auths": {&host: {"auth": auth}}}).to_string();
        let with_credentials = Credentials::from_docker_config_json(config.as_bytes(), "test");
        let cases = [
            (
                Credentials::anonymous(),
                image.clone(),
                "spec.registry.credentialsSecret",
            ),
            (
                with_credentials.unwrap(),
                image.clone(),
                "spec.registry.credentialsSecret",
            ),
            // Nothing listens there; not declared insecure, so the hint is about plain HTTP.
            (
                Credentials::anonymous(),
                "127.0.0.1:1/shop/web:1".into(),
                "spec.registry.insecure",
            ),
        ];
        for (credentials, image, field) in cases {
            let operator = refusal(credentials, registry_options(vec![host.clone()]), &image).await;
            assert!(operator.contains(field), "{field} not in {operator}");
            assert!(!operator.contains("--"), "a CLI flag in {operator}");
        }
        // The command line keeps its flags.
        let cli = RegistryOptions {
            insecure_registries: vec![host.clone()],
            ..Default::default()
        };
        let e = refusal(Credentials::anonymous(), cli, &image).await;
        assert!(e.contains("--registry-config"), "{e}");
    }

    #[test]
    fn the_workflows_secret_wins_over_pull_secrets() {
        let pull = vec!["pull".to_string()];
        let w = workflow(serde_json::json!({"target": {"name": "web"}}));
        assert_eq!(credential_secrets(&w, &pull), pull);
        let w = workflow(serde_json::json!({"target": {"name": "web"},
            "registry": {"credentialsSecret": "push"}}));
        assert_eq!(credential_secrets(&w, &pull), ["push"]);
    }
}
