//! The supply-chain evidence a workflow asks for: its vulnerability database (a path in the
//! operator's pod or a URL, downloaded once an hour at most) and its signing key (a Secret).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::Mutex;

use super::error::{Error, Result};
use crate::evidence::sign::SigningKey;
use crate::evidence::vulns::VulnDb;

/// How long a downloaded database is used before it is fetched again.
const DB_MAX_AGE: Duration = Duration::from_secs(3600);
/// Databases larger than this are refused rather than filling the operator's disk.
const DB_MAX_BYTES: u64 = 2 << 30;

/// The Secret keys `cosign generate-key-pair k8s://NS/NAME` writes.
pub const KEY: &str = "cosign.key";
pub const PASSWORD: &str = "cosign.password";

/// Databases by `spec.vulnerabilities.db`, shared by every workflow naming the same one.
#[derive(Default)]
pub struct VulnDbs {
    loaded: Mutex<HashMap<String, (Instant, Arc<VulnDb>)>>,
}

fn invalid(db: &str, detail: impl std::fmt::Display) -> Error {
    Error::Spec {
        reason: "InvalidVulnerabilityDatabase",
        message: format!("spec.vulnerabilities.db {db}: {detail}"),
    }
}

impl VulnDbs {
    /// The database `db` names, loaded (or downloaded) when it is not already.
    pub async fn get(&self, db: &str) -> Result<Arc<VulnDb>> {
        let mut loaded = self.loaded.lock().await;
        if let Some((at, d)) = loaded.get(db)
            && at.elapsed() < DB_MAX_AGE
        {
            return Ok(d.clone());
        }
        let d = Arc::new(load(db).await?);
        tracing::info!(db, records = d.len(), "loaded the vulnerability database");
        loaded.insert(db.to_string(), (Instant::now(), d.clone()));
        Ok(d)
    }
}

async fn load(db: &str) -> Result<VulnDb> {
    if db.starts_with("http://") || db.starts_with("https://") {
        let file = download(db).await?;
        let path = file.path().to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || VulnDb::load(&path))
            .await
            .map_err(|e| invalid(db, format!("loading stopped: {e}")))?;
        drop(file);
        return loaded.map_err(|e| invalid(db, e));
    }
    let path = Path::new(db).to_path_buf();
    tokio::task::spawn_blocking(move || VulnDb::load(&path))
        .await
        .map_err(|e| invalid(db, format!("loading stopped: {e}")))?
        .map_err(|e| invalid(db, e))
}

/// Downloads `url` into a temporary file. A 4xx is the user's to fix; anything else is retried.
async fn download(url: &str) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let transient = |detail: String| Error::Transient {
        what: format!("downloading the vulnerability database {url}"),
        detail,
    };
    let mut response = reqwest::get(url)
        .await
        .map_err(|e| transient(e.to_string()))?;
    let status = response.status();
    if status.is_client_error() {
        return Err(invalid(url, format!("the server answered {status}")));
    }
    if !status.is_success() {
        return Err(transient(format!("the server answered {status}")));
    }
    let mut file = tempfile::Builder::new()
        .prefix("whittle-osv-")
        .suffix(".zip")
        .tempfile()
        .map_err(|e| transient(format!("creating a temporary file: {e}")))?;
    let mut size = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transient(e.to_string()))?
    {
        size += chunk.len() as u64;
        if size > DB_MAX_BYTES {
            return Err(invalid(url, format!("larger than {DB_MAX_BYTES} bytes")));
        }
        file.write_all(&chunk)
            .map_err(|e| transient(format!("writing {}: {e}", file.path().display())))?;
    }
    Ok(file)
}

/// The signing key in Secret `name` of `namespace` (`cosign.key`, and `cosign.password` for a
/// cosign-encrypted key).
pub async fn signing_key(client: &Client, namespace: &str, name: &str) -> Result<SigningKey> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(name).await?.ok_or_else(|| Error::Spec {
        reason: "SigningKeyMissing",
        message: format!("spec.sign.keySecret: Secret {namespace}/{name} does not exist"),
    })?;
    let data = secret.data.unwrap_or_default();
    let key = data.get(KEY).ok_or_else(|| Error::Spec {
        reason: "SigningKeyMissing",
        message: format!("spec.sign.keySecret: Secret {namespace}/{name} has no {KEY:?} key"),
    })?;
    let text = String::from_utf8_lossy(&key.0);
    let password = data.get(PASSWORD).map(|p| p.0.as_slice());
    SigningKey::from_pem(&text, &format!("Secret {namespace}/{name}"), password).map_err(|e| {
        Error::Spec {
            reason: "InvalidSigningKey",
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A zip of the real OSV records, served over HTTP on loopback as osv.dev serves all.zip.
    async fn serve_zip() -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/real/debian");
        let mut bytes = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bytes));
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .expect("fixture")
                .map(|e| e.expect("entry").path())
                .collect();
            names.sort();
            for path in names {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                zip.start_file(name, zip::write::SimpleFileOptions::default())
                    .expect("zip entry");
                zip.write_all(&std::fs::read(&path).expect("record"))
                    .expect("zip write");
            }
            zip.finish().expect("zip");
        }
        let app = axum::Router::new().route(
            "/Debian/all.zip",
            axum::routing::get(move || {
                let bytes = bytes.clone();
                async move { bytes }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_database_url_is_downloaded_once_and_a_missing_one_is_the_users_to_fix() {
        let base = serve_zip().await;
        let dbs = VulnDbs::default();
        let url = format!("{base}/Debian/all.zip");
        let db = dbs.get(&url).await.expect("downloaded");
        assert_eq!(db.len(), 4, "the four real Debian records");
        let again = dbs.get(&url).await.expect("cached");
        assert!(Arc::ptr_eq(&db, &again), "kept, not fetched again");
        let missing = dbs.get(&format!("{base}/Nope/all.zip")).await;
        let Err(e) = missing else {
            panic!("a 404 gave a database")
        };
        assert_eq!(
            e.permanent_reason(),
            Some("InvalidVulnerabilityDatabase"),
            "{e}"
        );
        assert!(e.to_string().contains("404"), "{e}");
        let Err(e) = dbs.get("/no/such/osv.zip").await else {
            panic!("a missing path gave a database")
        };
        assert_eq!(
            e.permanent_reason(),
            Some("InvalidVulnerabilityDatabase"),
            "{e}"
        );
    }
}
