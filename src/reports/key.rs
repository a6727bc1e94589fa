//! The report token of a workflow: an HMAC of the workflow's namespace, name and uid under the
//! operator's key. The controller puts it in the instrumented pods' env; the report server
//! checks it without a single API call, so a stranger's request costs one hash and gets one
//! uniform 401. No Secret per workflow: the token is derived, and the uid in it makes a
//! workflow recreated under the same name a stranger to its predecessor's pods.
//!
//! The token only admits a request to the checks that follow; what binds a report to a pod is
//! the pod's own ServiceAccount token ([`crate::server::intake`]). The token is visible to
//! whoever reads the Deployment, which is why it is not more than a door.
//!
//! **Pure**, except [`ReportKey::load`], which reads or creates the operator's key Secret.

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The key in the operator's key Secret.
pub const KEY_FIELD: &str = "key";
/// Fewer bytes than this is not a key worth the name.
const MIN_KEY_BYTES: usize = 32;
/// A token's version prefix: a later format can be told apart.
const VERSION: &str = "v1";
/// The domain of seals, apart from tokens'.
const SEAL: &str = "seal";
/// Longest token read from a request (a uid is 36 characters, the MAC 64).
pub const MAX_TOKEN: usize = 128;

/// The operator's secret, shared by every replica.
#[derive(Clone)]
pub struct ReportKey(Vec<u8>);

impl std::fmt::Debug for ReportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the report key has {0} bytes; at least {MIN_KEY_BYTES} are needed")]
    Short(usize),
    #[error("cannot read the report key {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel gave no random bytes for the report key: {0}")]
    Random(String),
    #[error(
        "cannot read or create the report key Secret {namespace}/{name} (the operator needs get and create on it in its own namespace): {source}"
    )]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{name} has no {KEY_FIELD:?} key: delete it and let the operator make a new one"
    )]
    Empty { namespace: String, name: String },
}

impl ReportKey {
    pub fn new(bytes: Vec<u8>) -> Result<ReportKey, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short(bytes.len()));
        }
        Ok(ReportKey(bytes))
    }

    /// A fresh key from the kernel's randomness.
    pub fn generate() -> Result<ReportKey, KeyError> {
        let mut bytes = vec![0u8; MIN_KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        ReportKey::new(bytes)
    }

    /// The key in `path` (raw bytes, surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<ReportKey, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::File {
            path: path.display().to_string(),
            source,
        })?;
        ReportKey::new(bytes.trim_ascii().to_vec())
    }

    /// The key in Secret `namespace/name`, made (with a random key) when there is none, so
    /// every replica and every restart uses the same one. Two replicas starting at once both
    /// try to create it; the loser reads the winner's.
    pub async fn load(client: &Client, namespace: &str, name: &str) -> Result<ReportKey, KeyError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let err = |source| KeyError::Api {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        };
        if let Some(secret) = api.get_opt(name).await.map_err(err)? {
            return Self::from_secret(&secret, namespace, name);
        }
        let fresh = ReportKey::generate()?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([(
                    crate::api::names::MANAGED_BY_LABEL.to_string(),
                    crate::api::names::MANAGED_BY.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                KEY_FIELD.to_string(),
                ByteString(fresh.0.clone()),
            )])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(fresh),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let secret = api.get(name).await.map_err(err)?;
                Self::from_secret(&secret, namespace, name)
            }
            Err(e) => Err(err(e)),
        }
    }

    fn from_secret(secret: &Secret, namespace: &str, name: &str) -> Result<ReportKey, KeyError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_FIELD))
            .map(|b| b.0.clone())
            .ok_or_else(|| KeyError::Empty {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })?;
        ReportKey::new(bytes)
    }

    /// The token of workflow `namespace/name` with `uid`: `v1.<uid>.<hex HMAC-SHA256>`.
    pub fn token(&self, namespace: &str, name: &str, uid: &str) -> String {
        let mac = self.mac(namespace, name, uid);
        format!("{VERSION}.{uid}.{}", hex(&mac))
    }

    /// The workflow uid `presented` was made for, when it is this key's token for
    /// `namespace/name`; `None` for anything else (compared in constant time).
    pub fn verify(&self, namespace: &str, name: &str, presented: &str) -> Option<String> {
        if presented.len() > MAX_TOKEN {
            return None;
        }
        let rest = presented.strip_prefix(VERSION)?.strip_prefix('.')?;
        let (uid, mac) = rest.rsplit_once('.')?;
        let expected = hex(&self.mac(namespace, name, uid));
        bool::from(expected.as_bytes().ct_eq(mac.as_bytes())).then(|| uid.to_string())
    }

    /// A seal over `parts` (what harden produced): only this key makes it, so a status field
    /// changed by hand no longer matches.
    pub fn seal(&self, parts: &[&str]) -> String {
        hex(&self.mac_of(SEAL, parts))
    }

    /// Whether `seal` is this key's seal over `parts` (compared in constant time).
    pub fn opens(&self, parts: &[&str], seal: &str) -> bool {
        bool::from(self.seal(parts).as_bytes().ct_eq(seal.as_bytes()))
    }

    fn mac(&self, namespace: &str, name: &str, uid: &str) -> Vec<u8> {
        // Any key length is valid for HMAC; new() has checked it is long enough to matter.
        self.mac_of(VERSION, &[namespace, name, uid])
    }

    /// HMAC-SHA256 of `domain` and `parts`, each followed by a NUL: no two different lists give
    /// the same message, and a token is never a seal.
    fn mac_of(&self, domain: &str, parts: &[&str]) -> Vec<u8> {
        // Any key length is valid for HMAC; new() has checked it is long enough to matter.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        for part in std::iter::once(domain).chain(parts.iter().copied()) {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().to_vec()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ReportKey {
        ReportKey::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn a_token_opens_only_its_own_workflow() {
        let k = key(1);
        let t = k.token("shop", "web", "uid-1");
        assert_eq!(k.verify("shop", "web", &t).as_deref(), Some("uid-1"));
        assert_eq!(k.verify("shop", "api", &t), None, "another workflow");
        assert_eq!(k.verify("bank", "web", &t), None, "another namespace");
        assert_eq!(key(2).verify("shop", "web", &t), None, "another operator");
        let other_uid = t.replace("uid-1", "uid-2");
        assert_eq!(
            k.verify("shop", "web", &other_uid),
            None,
            "a recreated namesake"
        );
    }

    #[test]
    fn anything_but_a_token_is_refused() {
        let k = key(1);
        for bad in [
            "",
            "v1",
            "v1.",
            "v1..",
            "v2.uid.00",
            "guess",
            &"v1.a.".repeat(40),
        ] {
            assert_eq!(k.verify("shop", "web", bad), None, "{bad}");
        }
        let t = k.token("shop", "web", "uid-1");
        let flipped = format!("{}0", &t[..t.len() - 1]);
        let flipped = if flipped == t {
            format!("{}1", &t[..t.len() - 1])
        } else {
            flipped
        };
        assert_eq!(k.verify("shop", "web", &flipped), None);
    }

    #[test]
    fn separators_keep_fields_apart() {
        let k = key(1);
        assert_ne!(k.mac("a", "bc", "u"), k.mac("ab", "c", "u"));
    }

    #[test]
    fn a_seal_holds_only_for_what_was_sealed() {
        let k = key(1);
        let parts = ["uid-1", "r/web@sha256:aa", "r/web@sha256:bb"];
        let seal = k.seal(&parts);
        assert!(k.opens(&parts, &seal));
        assert!(!k.opens(&["uid-1", "r/web@sha256:aa", "r/web@sha256:cc"], &seal));
        assert!(!key(2).opens(&parts, &seal), "another operator's key");
        let token = k.token("uid-1", "r/web@sha256:aa", "r/web@sha256:bb");
        assert!(!token.ends_with(&seal), "a token is never a seal");
    }

    #[test]
    fn short_keys_are_refused_and_not_printed() {
        assert!(matches!(
            ReportKey::new(vec![0; 8]),
            Err(KeyError::Short(8))
        ));
        assert_eq!(format!("{:?}", key(7)), "ReportKey(..)");
        assert_ne!(
            ReportKey::generate().unwrap().0,
            ReportKey::generate().unwrap().0
        );
    }
}
