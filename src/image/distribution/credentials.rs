//! Registry credentials from a docker config JSON: `~/.docker/config.json`, a file named with
//! `--registry-config` or `$DOCKER_CONFIG`, or the content of a Kubernetes
//! `kubernetes.io/dockerconfigjson` (or legacy `dockercfg`) Secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::image::error::{ImageError, Result};

/// One registry's credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token (`registrytoken`), sent as a bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    // Never print a secret, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// Credentials by registry host, and where they came from (for error messages).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    origin: String,
    by_registry: BTreeMap<String, Credential>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl Credentials {
    /// No credentials: every registry is accessed anonymously.
    pub fn anonymous() -> Credentials {
        Credentials {
            origin: "no docker config".into(),
            by_registry: BTreeMap::new(),
        }
    }

    /// Parses a docker config JSON: `{"auths": {"host": {"auth": "base64(user:pass)"}}}`, or the
    /// legacy `.dockercfg` shape without `auths`. `origin` names the source in errors.
    pub fn from_docker_config_json(bytes: &[u8], origin: &str) -> Result<Credentials> {
        let err = |reason: String| ImageError::Credentials {
            origin: origin.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
        let entries: BTreeMap<String, AuthEntry> = if value.get("auths").is_some() {
            let file: ConfigFile = serde_json::from_value(value)
                .map_err(|e| err(format!("unexpected \"auths\": {e}")))?;
            file.auths.unwrap_or_default()
        } else if value.is_object() && value.get("credsStore").is_none() {
            // A legacy .dockercfg maps hosts straight to entries; a modern file with only
            // credsStore/credHelpers has nothing whittle can use, and is read as empty.
            serde_json::from_value(value).unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let mut by_registry = BTreeMap::new();
        for (host, entry) in entries {
            let credential = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                Credential::Bearer(token)
            } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = BASE64
                    .decode(auth.trim())
                    .map_err(|e| err(format!("the auth for {host} is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| err(format!("the auth for {host} is not UTF-8")))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| err(format!("the auth for {host} is not user:password")))?;
                Credential::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credential::Basic { username, password }
            } else {
                continue;
            };
            by_registry.insert(normalize_host(&host), credential);
        }
        Ok(Credentials {
            origin: origin.to_string(),
            by_registry,
        })
    }

    /// Reads a docker config file; a directory means its `config.json`, as `DOCKER_CONFIG` does.
    pub fn from_file(path: &Path) -> Result<Credentials> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|e| ImageError::Credentials {
            origin: file.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::from_docker_config_json(&bytes, &file.display().to_string())
    }

    /// `explicit` (`--registry-config`) if given, else `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json` when it exists, else anonymous.
    pub fn discover(explicit: Option<&Path>) -> Result<Credentials> {
        if let Some(path) = explicit {
            return Self::from_file(path);
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Self::from_file(Path::new(&dir));
        }
        if let Some(home) = std::env::var_os("HOME") {
            let file = PathBuf::from(home).join(".docker/config.json");
            if file.is_file() {
                return Self::from_file(&file);
            }
        }
        Ok(Self::anonymous())
    }

    /// The credential for `registry` (as written in an image reference), if any.
    pub fn get(&self, registry: &str) -> Option<&Credential> {
        self.by_registry.get(&normalize_host(registry))
    }

    /// What oci-client sends to `registry`.
    pub fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.get(registry) {
            Some(Credential::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credential::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://127.0.0.1:5000/v2/` → `127.0.0.1:5000`.
fn normalize_host(host: &str) -> String {
    let host = host
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_in_every_shape() {
        let json = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}},
                "tok.example": {{"registrytoken": "t0k"}},
                "empty.example": {{}}
            }}, "credsStore": "desktop"}}"#,
            BASE64.encode("whittle:s3cr:et")
        );
        let c = Credentials::from_docker_config_json(json.as_bytes(), "test").unwrap();
        assert_eq!(
            c.get("127.0.0.1:5000"),
            Some(&Credential::Basic {
                username: "whittle".into(),
                password: "s3cr:et".into()
            })
        );
        assert!(
            matches!(c.get("docker.io"), Some(Credential::Basic { username, .. }) if username == "hub")
        );
        assert_eq!(
            c.get("tok.example"),
            Some(&Credential::Bearer("t0k".into()))
        );
        assert_eq!(c.get("empty.example"), None);
        assert!(matches!(c.auth_for("other:1"), RegistryAuth::Anonymous));
        assert!(!format!("{:?}", c).contains("s3cr"));
    }

    #[test]
    fn legacy_dockercfg_and_errors() {
        let legacy = format!(
            r#"{{"reg.example": {{"auth": "{}"}}}}"#,
            BASE64.encode("u:p")
        );
        let c =
            Credentials::from_docker_config_json(legacy.as_bytes(), "secret shop/pull").unwrap();
        assert!(c.get("reg.example").is_some());
        let e = Credentials::from_docker_config_json(b"{", "secret shop/pull").unwrap_err();
        assert!(e.to_string().contains("secret shop/pull"), "{e}");
        let e = Credentials::from_docker_config_json(br#"{"auths":{"r":{"auth":"!!"}}}"#, "f")
            .unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
    }
}
