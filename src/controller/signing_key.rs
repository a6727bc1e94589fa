//! The signing key a workflow names (`spec.sign.keySecret`): a Secret in its own namespace, as
//! `cosign generate-key-pair k8s://NS/NAME` writes it.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::error::{Error, Result};
use super::reason::Reason;
use crate::evidence::sign::SigningKey;

/// The Secret keys `cosign generate-key-pair k8s://NS/NAME` writes.
pub const KEY: &str = "cosign.key";
pub const PASSWORD: &str = "cosign.password";

/// The signing key in Secret `name` of `namespace` (`cosign.key`, and `cosign.password` for a
/// cosign-encrypted key).
pub async fn signing_key(client: &Client, namespace: &str, name: &str) -> Result<SigningKey> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(name).await?.ok_or_else(|| Error::Failed {
        reason: Reason::SigningKeyMissing,
        message: format!("spec.sign.keySecret: Secret {namespace}/{name} does not exist"),
    })?;
    let data = secret.data.unwrap_or_default();
    let key = data.get(KEY).ok_or_else(|| Error::Failed {
        reason: Reason::SigningKeyMissing,
        message: format!("spec.sign.keySecret: Secret {namespace}/{name} has no {KEY:?} key"),
    })?;
    let text = String::from_utf8_lossy(&key.0);
    let password = data.get(PASSWORD).map(|p| p.0.as_slice());
    SigningKey::from_pem(&text, &format!("Secret {namespace}/{name}"), password).map_err(|e| {
        Error::Failed {
            reason: Reason::InvalidSigningKey,
            message: e.to_string(),
        }
    })
}
