//! I/O: the per-workflow Secret holding the sensors' report token. The pods read it through a
//! secretKeyRef; the report server compares against it. Owned by the workflow, so it goes when
//! the workflow goes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use super::error::{Error, Result};
use crate::api::HardeningWorkflow;
use crate::api::names::{TOKEN_KEY, token_secret_name, workflow_labels};

/// Creates the token Secret unless it exists; returns its name.
pub async fn ensure(client: &Client, workflow: &HardeningWorkflow) -> Result<String> {
    let namespace = workflow.namespace().unwrap_or_default();
    let name = token_secret_name(&workflow.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    if api.get_opt(&name).await?.is_some() {
        return Ok(name);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(workflow_labels(&workflow.name_any())),
            owner_references: workflow.owner_reference().map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(new_token()?.into_bytes()),
        )])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(name),
        // Another reconcile (or a restarted operator) made it first: use that one.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(client: &Client, workflow: &HardeningWorkflow) -> Result<()> {
    let api: Api<Secret> =
        Api::namespaced(client.clone(), &workflow.namespace().unwrap_or_default());
    match api
        .delete(
            &token_secret_name(&workflow.name_any()),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// 256 random bits from the kernel, hex-encoded.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Spec {
        reason: "NoRandomness",
        message: format!("the kernel gave no random bytes for the report token: {e}"),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
