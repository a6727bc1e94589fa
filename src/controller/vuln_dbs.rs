//! The vulnerability databases workflows name: each one the operator's admin configured by
//! name, a URL downloaded or a path in the operator's pod read, again once it is an hour old
//! (`--vuln-db-refresh`), so that continuous hardening matches against new records.
//!
//! A workflow only names a database; it never makes the operator fetch a URL or open a path of
//! its choosing. Each database loads on its own (a slow download of one never holds up
//! workflows naming another), within a download deadline and size, a per-record size, and a
//! memory budget shared by all loaded databases.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::reason::Reason;
use crate::evidence::vulns::{DEFAULT_ENTRY_BYTES, LoadLimits, MemoryBudget, VulnDb, VulnDbError};
use crate::image::limits::{duration_text, size_text};

/// How long a loaded database is used before it is fetched (or read) again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// Where a database the admin configured comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VulnDbSource {
    /// Downloaded (`http://` or `https://`), again once it is [`VulnDbLimits::refresh`] old.
    Url(String),
    /// A zip, directory or record in the operator's pod (a mounted volume), read again once it
    /// is [`VulnDbLimits::refresh`] old (a volume another process keeps current).
    Path(PathBuf),
}

impl std::fmt::Display for VulnDbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VulnDbSource::Url(url) => f.write_str(url),
            VulnDbSource::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `NAME=URL` or `NAME=/PATH`, as `whittle operator --vuln-db` takes it. The name is what
/// `spec.vulnerabilities.db` says, so it has the form the CRD admits there.
pub fn parse_vuln_db(text: &str) -> std::result::Result<(String, VulnDbSource), String> {
    let (name, source) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=URL or NAME=/PATH"))?;
    if !is_label(name) {
        return Err(format!(
            "{name:?}: a database name is lowercase letters, digits and '-' (at most 63, starting and ending with a letter or digit), as spec.vulnerabilities.db admits"
        ));
    }
    let source = if source.starts_with("http://") || source.starts_with("https://") {
        VulnDbSource::Url(source.to_string())
    } else if Path::new(source).is_absolute() {
        VulnDbSource::Path(PathBuf::from(source))
    } else {
        return Err(format!(
            "{source:?}: a database is an http:// or https:// URL or an absolute path"
        ));
    };
    Ok((name.to_string(), source))
}

/// A DNS-1123 label: what [`crate::api::spec::VULN_DB_PATTERN`] matches.
fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(inner)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// What loading a database may cost the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VulnDbLimits {
    /// How long one download may take in all, headers to last byte.
    pub download_timeout: Duration,
    /// The largest download, on disk in $TMPDIR (the spool volume) while it is read.
    pub download_bytes: u64,
    /// The largest record (zip entry or file) once inflated.
    pub entry_bytes: u64,
    /// The memory all loaded databases may take together.
    pub memory_bytes: u64,
    /// How long a loaded database is used before it is loaded again.
    pub refresh: Duration,
}

/// osv.dev's Debian/all.zip is about 100 MiB; the chart's spool volume is 2Gi.
pub const DEFAULT_DOWNLOAD_BYTES: u64 = 512 << 20;
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Within the chart's 512Mi memory limit, beside the image reads.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;

impl Default for VulnDbLimits {
    fn default() -> Self {
        VulnDbLimits {
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
            download_bytes: DEFAULT_DOWNLOAD_BYTES,
            entry_bytes: DEFAULT_ENTRY_BYTES,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            refresh: DEFAULT_REFRESH,
        }
    }
}

/// The databases the admin configured, by name, loaded when a workflow first needs one and
/// shared by every workflow naming it.
pub struct VulnDbs {
    sources: BTreeMap<String, VulnDbSource>,
    limits: VulnDbLimits,
    budget: Arc<MemoryBudget>,
    http: reqwest::Client,
    slots: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

/// One database: its lock is held across its own download only, so other databases (and
/// workflows finding this one fresh) never wait for it.
#[derive(Default)]
struct Slot {
    loading: tokio::sync::Mutex<()>,
    loaded: std::sync::Mutex<Option<(Instant, Arc<VulnDb>)>>,
}

impl Slot {
    fn fresh(&self, max_age: Duration) -> Option<Arc<VulnDb>> {
        let loaded = self.loaded.lock().ok()?;
        loaded
            .as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, db)| db.clone())
    }

    fn set(&self, db: Option<Arc<VulnDb>>) {
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = db.map(|db| (Instant::now(), db));
        }
    }

    /// Drops the database when no workflow is using it, giving its memory back.
    fn evict_if_idle(&self) -> bool {
        let Ok(mut loaded) = self.loaded.lock() else {
            return false;
        };
        if loaded
            .as_ref()
            .is_some_and(|(_, db)| Arc::strong_count(db) == 1)
        {
            *loaded = None;
            return true;
        }
        false
    }
}

impl Default for VulnDbs {
    fn default() -> Self {
        VulnDbs::new(BTreeMap::new(), VulnDbLimits::default())
    }
}

fn invalid(name: &str, detail: impl std::fmt::Display) -> Error {
    Error::Failed {
        reason: Reason::InvalidVulnerabilityDatabase,
        message: format!("spec.vulnerabilities.db {name}: {detail}"),
    }
}

fn too_large(name: &str, detail: impl std::fmt::Display) -> Error {
    Error::Failed {
        reason: Reason::VulnerabilityDatabaseTooLarge,
        message: format!(
            "spec.vulnerabilities.db {name}: {detail} (a limit the operator's admin sets)"
        ),
    }
}

impl VulnDbs {
    pub fn new(sources: BTreeMap<String, VulnDbSource>, limits: VulnDbLimits) -> VulnDbs {
        VulnDbs {
            sources,
            budget: Arc::new(MemoryBudget::new(limits.memory_bytes)),
            limits,
            http: reqwest::Client::new(),
            slots: Default::default(),
        }
    }

    /// Refuses a name the admin did not configure, listing those they did (and nothing about
    /// the operator's files: the name is only looked up, never used as a path or URL).
    pub fn check(&self, name: &str) -> Result<&VulnDbSource> {
        self.sources.get(name).ok_or_else(|| {
            let configured = if self.sources.is_empty() {
                "none is configured".to_string()
            } else {
                let names: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                format!("the configured ones are {}", names.join(", "))
            };
            Error::Failed {
                reason: Reason::VulnerabilityDatabaseUnknown,
                message: format!(
                    "spec.vulnerabilities.db: the operator has no vulnerability database named {name:?}; {configured} (the operator's admin configures them)"
                ),
            }
        })
    }

    /// Memory the loaded databases take now.
    pub fn memory_used(&self) -> u64 {
        self.budget.used()
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(name.to_string()).or_default().clone()
    }

    /// The database `name` names, loaded (or downloaded) when it is not already.
    pub async fn get(&self, name: &str) -> Result<Arc<VulnDb>> {
        let source = self.check(name)?;
        let slot = self.slot(name);
        if let Some(db) = slot.fresh(self.limits.refresh) {
            return Ok(db);
        }
        let _loading = slot.loading.lock().await;
        if let Some(db) = slot.fresh(self.limits.refresh) {
            return Ok(db);
        }
        // A refresh must fit beside the other databases, not beside its own stale copy.
        slot.set(None);
        let db = Arc::new(self.load(name, source).await?);
        tracing::info!(
            db = name,
            records = db.len(),
            bytes = db.bytes(),
            "loaded the vulnerability database"
        );
        slot.set(Some(db.clone()));
        Ok(db)
    }

    async fn load(&self, name: &str, source: &VulnDbSource) -> Result<VulnDb> {
        let (path, _file) = match source {
            VulnDbSource::Url(url) => {
                let file =
                    tokio::time::timeout(self.limits.download_timeout, self.download(name, url))
                        .await
                        .map_err(|_| Error::Transient {
                            what: format!("downloading the vulnerability database {name} ({url})"),
                            detail: format!(
                                "did not finish within {} (a limit the operator's admin sets)",
                                duration_text(self.limits.download_timeout)
                            ),
                        })??;
                (file.path().to_path_buf(), Some(file))
            }
            VulnDbSource::Path(path) => (path.clone(), None),
        };
        let limits = LoadLimits {
            entry_bytes: self.limits.entry_bytes,
            budget: Some(self.budget.clone()),
        };
        let mut evicted = false;
        loop {
            let (file, limits) = (path.clone(), limits.clone());
            let loaded = tokio::task::spawn_blocking(move || VulnDb::load_within(&file, &limits))
                .await
                .map_err(|e| invalid(name, format!("loading stopped: {e}")))?;
            let loaded = match source {
                VulnDbSource::Url(url) => loaded.map_err(|e| e.showing(&path, url)),
                VulnDbSource::Path(_) => loaded,
            };
            match loaded {
                Ok(db) => return Ok(db),
                Err(VulnDbError::OverBudget { .. }) if !evicted && self.evict_idle(name) => {
                    evicted = true;
                }
                // Alone in the budget, it will never fit.
                Err(e @ VulnDbError::OverBudget { .. }) if self.budget.used() == 0 => {
                    return Err(too_large(name, e));
                }
                Err(e @ VulnDbError::OverBudget { .. }) => {
                    return Err(Error::Transient {
                        what: format!("loading the vulnerability database {name}"),
                        detail: format!("{e}: waiting until the workflows using the others finish"),
                    });
                }
                Err(e @ VulnDbError::EntryTooLarge { .. }) => return Err(too_large(name, e)),
                Err(e) => return Err(invalid(name, e)),
            }
        }
    }

    /// Drops every loaded database but `name` that no workflow is using.
    fn evict_idle(&self, name: &str) -> bool {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(slots) => slots
                .iter()
                .filter(|(n, _)| n.as_str() != name)
                .map(|(_, s)| s.clone())
                .collect(),
            Err(_) => return false,
        };
        let mut any = false;
        for slot in slots {
            any |= slot.evict_if_idle();
        }
        any
    }

    /// Downloads `url` into a temporary file, refusing more than the size limit (before the
    /// body when the server announces its length). A 4xx is the user's to fix; anything else
    /// is retried.
    async fn download(&self, name: &str, url: &str) -> Result<tempfile::NamedTempFile> {
        use std::io::Write;
        let transient = |detail: String| Error::Transient {
            what: format!("downloading the vulnerability database {name} ({url})"),
            detail,
        };
        let limit = self.limits.download_bytes;
        let over = || too_large(name, format!("{url} is larger than {}", size_text(limit)));
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transient(e.to_string()))?;
        let status = response.status();
        if status.is_client_error() {
            return Err(invalid(
                name,
                format!("{url}: the server answered {status}"),
            ));
        }
        if !status.is_success() {
            return Err(transient(format!("the server answered {status}")));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(over());
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
            if size > limit {
                return Err(over());
            }
            file.write_all(&chunk)
                .map_err(|e| transient(format!("writing {}: {e}", file.path().display())))?;
        }
        Ok(file)
    }
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
        serve("/Debian/all.zip", bytes).await
    }

    /// `bytes` served at `path` over HTTP on loopback; the server's base URL.
    async fn serve(path: &'static str, bytes: Vec<u8>) -> String {
        let app = axum::Router::new().route(
            path,
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

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv/real/debian")
    }

    fn dbs(sources: &[(&str, VulnDbSource)], limits: VulnDbLimits) -> VulnDbs {
        let sources = sources
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        VulnDbs::new(sources, limits)
    }

    fn url(u: String) -> VulnDbSource {
        VulnDbSource::Url(u)
    }

    /// A loopback server that answers every request with `head` and then, every `pace`, one
    /// more byte of body, forever.
    async fn trickling_server(head: &'static str, pace: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut request = [0u8; 4096];
                    let _ = conn.read(&mut request).await;
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    loop {
                        tokio::time::sleep(pace).await;
                        if conn.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/all.zip")
    }

    /// A server that sends `size` bytes of body without announcing its length.
    async fn unannounced_server(size: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut request = [0u8; 4096];
                    let _ = conn.read(&mut request).await;
                    let head = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n";
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&vec![b'z'; size]).await;
                });
            }
        });
        format!("http://{addr}/all.zip")
    }

    #[test]
    fn databases_are_configured_as_name_equals_url_or_absolute_path() {
        assert_eq!(
            parse_vuln_db("debian=https://osv.example/Debian/all.zip"),
            Ok((
                "debian".into(),
                url("https://osv.example/Debian/all.zip".into())
            ))
        );
        assert_eq!(
            parse_vuln_db("alpine-3=/var/lib/whittle/osv/Alpine.zip"),
            Ok((
                "alpine-3".into(),
                VulnDbSource::Path("/var/lib/whittle/osv/Alpine.zip".into())
            ))
        );
        for bad in [
            "debian",
            "Debian=https://x/all.zip",
            "-x=/a",
            "debian=osv/all.zip",
            "debian=ftp://x/all.zip",
            "=/a",
        ] {
            assert!(parse_vuln_db(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_path_is_read_again_once_it_is_older_than_the_refresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(fixture_dir()).expect("fixture") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
        let limits = VulnDbLimits {
            refresh: Duration::from_millis(300),
            ..VulnDbLimits::default()
        };
        let dbs = dbs(&[("local", VulnDbSource::Path(dir.path().into()))], limits);
        let first = dbs.get("local").await.expect("loaded");
        assert_eq!(first.len(), 4);
        let extra = std::fs::read_dir(fixture_dir())
            .expect("fixture")
            .next()
            .expect("a record")
            .expect("entry")
            .path();
        let record = std::fs::read_to_string(extra).expect("record");
        let id = serde_json::from_str::<serde_json::Value>(&record).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let renamed = record.replace(&id, "WHITTLE-TEST-NEW");
        std::fs::write(dir.path().join("new.json"), renamed).expect("write");
        let cached = dbs.get("local").await.expect("cached");
        assert!(
            Arc::ptr_eq(&first, &cached),
            "not read again before the refresh"
        );
        drop((first, cached));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let again = dbs.get("local").await.expect("read again");
        assert_eq!(again.len(), 5, "the new record is in");
    }

    #[tokio::test]
    async fn an_unknown_name_lists_the_configured_ones_and_touches_nothing() {
        let dbs = dbs(
            &[
                ("debian", VulnDbSource::Path(fixture_dir())),
                ("alpine", url("http://127.0.0.1:9/all.zip".into())),
            ],
            VulnDbLimits::default(),
        );
        for name in ["etc-shadow", "nope"] {
            let Err(e) = dbs.get(name).await else {
                panic!("{name} gave a database")
            };
            assert_eq!(
                e.permanent_reason().map(Reason::as_str),
                Some("VulnerabilityDatabaseUnknown"),
                "{e}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "spec.vulnerabilities.db: the operator has no vulnerability database named {name:?}; the configured ones are alpine, debian (the operator's admin configures them)"
                )
            );
        }
        let none = VulnDbs::default();
        let Err(e) = none.check("debian") else {
            panic!("no database is configured")
        };
        assert!(e.to_string().contains("none is configured"), "{e}");
        assert_eq!(
            dbs.get("debian").await.expect("the configured path").len(),
            4
        );
    }

    #[tokio::test]
    async fn a_hanging_download_blocks_no_other_database_and_times_out() {
        let hanging = trickling_server(
            "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n",
            Duration::from_secs(3600),
        )
        .await;
        let base = serve_zip().await;
        let limits = VulnDbLimits {
            download_timeout: Duration::from_secs(3),
            ..VulnDbLimits::default()
        };
        let dbs = Arc::new(dbs(
            &[
                ("slow", url(hanging)),
                ("debian", url(format!("{base}/Debian/all.zip"))),
                ("local", VulnDbSource::Path(fixture_dir())),
            ],
            limits,
        ));
        let local = dbs.get("local").await.expect("loaded");
        let started = Instant::now();
        let slow = tokio::spawn({
            let dbs = dbs.clone();
            async move { dbs.get("slow").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Another database loads, and a loaded one is there, while "slow" still downloads.
        let other = tokio::time::timeout(Duration::from_secs(2), dbs.get("debian"))
            .await
            .expect("loading another database waited for the hanging download")
            .expect("downloaded");
        assert_eq!(other.len(), 4);
        let again = tokio::time::timeout(Duration::from_millis(500), dbs.get("local"))
            .await
            .expect("a loaded database waited for the hanging download")
            .expect("cached");
        assert!(Arc::ptr_eq(&local, &again));
        assert!(!slow.is_finished(), "the hanging download is still going");
        let Err(e) = slow.await.expect("joined") else {
            panic!("a hanging download gave a database")
        };
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        assert_eq!(e.permanent_reason(), None, "retried: {e}");
        assert!(e.to_string().contains("did not finish within 3s"), "{e}");
    }

    #[tokio::test]
    async fn a_trickling_download_is_stopped_by_the_whole_download_deadline() {
        // A byte every 100 ms: never idle long enough for an idle timeout to fire.
        let trickle = trickling_server(
            "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n",
            Duration::from_millis(100),
        )
        .await;
        let limits = VulnDbLimits {
            download_timeout: Duration::from_secs(2),
            ..VulnDbLimits::default()
        };
        let dbs = dbs(&[("trickle", url(trickle))], limits);
        let started = Instant::now();
        let Err(e) = dbs.get("trickle").await else {
            panic!("a trickle gave a database")
        };
        assert!(started.elapsed() < Duration::from_secs(4), "{e}");
        assert!(e.to_string().contains("did not finish within 2s"), "{e}");
    }

    #[tokio::test]
    async fn a_download_over_the_size_limit_is_refused() {
        let announced = trickling_server(
            "HTTP/1.1 200 OK\r\ncontent-length: 10485760\r\n\r\n",
            Duration::from_secs(3600),
        )
        .await;
        let unannounced = unannounced_server(3 << 20).await;
        let limits = VulnDbLimits {
            download_bytes: 1 << 20,
            download_timeout: Duration::from_secs(20),
            ..VulnDbLimits::default()
        };
        let dbs = dbs(
            &[
                ("announced", url(announced)),
                ("streamed", url(unannounced)),
            ],
            limits,
        );
        // Refused on its Content-Length, without waiting for a body that never comes.
        let started = Instant::now();
        for name in ["announced", "streamed"] {
            let Err(e) = dbs.get(name).await else {
                panic!("{name}: a download over the limit gave a database")
            };
            assert_eq!(
                e.permanent_reason().map(Reason::as_str),
                Some("VulnerabilityDatabaseTooLarge"),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("is larger than 1 MiB, 1048576 bytes"),
                "{e}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_served_zip_bomb_fails_naming_its_url_and_entry() {
        let mut bomb = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut bomb));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file("bomb.json", options).expect("zip entry");
            for _ in 0..8 {
                zip.write_all(&[b' '; 1 << 20]).expect("zip write");
            }
            zip.finish().expect("zip");
        }
        let bomb_url = format!("{}/all.zip", serve("/all.zip", bomb).await);
        let limits = VulnDbLimits {
            entry_bytes: 1 << 20,
            ..VulnDbLimits::default()
        };
        let dbs = dbs(&[("bomb", url(bomb_url.clone()))], limits);
        let Err(e) = dbs.get("bomb").await else {
            panic!("a zip bomb gave a database")
        };
        assert_eq!(
            e.permanent_reason().map(Reason::as_str),
            Some("VulnerabilityDatabaseTooLarge"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "spec.vulnerabilities.db bomb: vulnerability database {bomb_url}: entry bomb.json is larger than 1048576 bytes once inflated, more than any OSV record; not loaded (a limit the operator's admin sets)"
            )
        );
        assert_eq!(dbs.memory_used(), 0);
    }

    #[tokio::test]
    async fn loaded_databases_keep_within_the_memory_budget() {
        let size = VulnDb::load(&fixture_dir()).expect("fixture").bytes();
        let limits = VulnDbLimits {
            memory_bytes: size * 3 / 2,
            ..VulnDbLimits::default()
        };
        let dbs = dbs(
            &[
                ("one", VulnDbSource::Path(fixture_dir())),
                ("two", VulnDbSource::Path(fixture_dir())),
            ],
            limits,
        );
        let one = dbs.get("one").await.expect("fits");
        assert_eq!(dbs.memory_used(), size);
        // "one" is in use: "two" must wait, and is retried.
        let Err(e) = dbs.get("two").await else {
            panic!("two databases over the budget were loaded")
        };
        assert_eq!(e.permanent_reason(), None, "{e}");
        assert!(e.to_string().contains("memory budget"), "{e}");
        assert_eq!(dbs.memory_used(), size);
        // Once idle, "one" makes room for "two".
        drop(one);
        let two = dbs.get("two").await.expect("fits once one is idle");
        assert_eq!(two.len(), 4);
        assert_eq!(dbs.memory_used(), size);
        // One that does not fit even alone fails for good.
        let tiny = VulnDbs::new(
            [("one".to_string(), VulnDbSource::Path(fixture_dir()))].into(),
            VulnDbLimits {
                memory_bytes: size / 2,
                ..VulnDbLimits::default()
            },
        );
        let Err(e) = tiny.get("one").await else {
            panic!("a database over the whole budget was loaded")
        };
        assert_eq!(
            e.permanent_reason().map(Reason::as_str),
            Some("VulnerabilityDatabaseTooLarge"),
            "{e}"
        );
        assert_eq!(tiny.memory_used(), 0);
    }

    #[tokio::test]
    async fn a_database_url_is_downloaded_once_and_a_missing_one_is_the_users_to_fix() {
        let base = serve_zip().await;
        let dbs = dbs(
            &[
                ("debian", url(format!("{base}/Debian/all.zip"))),
                ("nope", url(format!("{base}/Nope/all.zip"))),
                ("gone", VulnDbSource::Path("/no/such/osv.zip".into())),
            ],
            VulnDbLimits::default(),
        );
        let db = dbs.get("debian").await.expect("downloaded");
        assert_eq!(db.len(), 4, "the four real Debian records");
        let again = dbs.get("debian").await.expect("cached");
        assert!(Arc::ptr_eq(&db, &again), "kept, not fetched again");
        let missing = dbs.get("nope").await;
        let Err(e) = missing else {
            panic!("a 404 gave a database")
        };
        assert_eq!(
            e.permanent_reason().map(Reason::as_str),
            Some("InvalidVulnerabilityDatabase"),
            "{e}"
        );
        assert!(e.to_string().contains("404"), "{e}");
        let Err(e) = dbs.get("gone").await else {
            panic!("a missing path gave a database")
        };
        assert_eq!(
            e.permanent_reason().map(Reason::as_str),
            Some("InvalidVulnerabilityDatabase"),
            "{e}"
        );
    }
}
