//! The real cosign (v2, from its Go module) with no way out to the internet: `--trusted-root`
//! names an empty trusted root (no transparency log, no CA: only `--key` is trusted), so it never
//! fetches Sigstore's TUF repository, and a proxy on a closed loopback port catches anything else
//! it might try; each run asserts it tried nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use whittle_testbed::tools::cosign_binary;

/// The real cosign with a private HOME and an empty trusted root.
pub struct Cosign {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Cosign {
    pub fn new() -> Cosign {
        let bin = cosign_binary().expect("cosign");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("trusted_root.json"),
            r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
        )
        .expect("write trusted root");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        Cosign { bin, dir }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        // Port 9 on loopback: nothing listens, so a request that would leave the machine fails
        // at once (Go never proxies loopback, so the registry is reached directly).
        let trap = "http://127.0.0.1:9";
        cmd.env("HOME", self.dir.path().join("home"))
            .env("TUF_ROOT", self.dir.path().join("tuf"))
            .env("HTTPS_PROXY", trap)
            .env("HTTP_PROXY", trap)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("COSIGN_PASSWORD")
            .env_remove("DOCKER_CONFIG")
            .env_remove("COSIGN_REPOSITORY")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, cmd: &mut Command) -> Output {
        let out = cmd.output().expect("run cosign");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for sign_of_network in ["proxyconnect", "tuf-repo", "TUF", "rekor.sigstore.dev"] {
            assert!(
                !stderr.contains(sign_of_network),
                "cosign tried to reach the internet ({sign_of_network}):\n{stderr}"
            );
        }
        out
    }

    /// `cosign verify --key <pub> <image>`, offline.
    pub fn verify(&self, public_key: &Path, image: &str) -> Output {
        let mut cmd = self.command();
        cmd.arg("verify")
            .args(self.offline_key_flags(public_key))
            .arg(image);
        self.run(&mut cmd)
    }

    /// `cosign verify-attestation --type <type> --key <pub> <image>`, offline.
    pub fn verify_attestation(&self, public_key: &Path, predicate: &str, image: &str) -> Output {
        let mut cmd = self.command();
        cmd.args(["verify-attestation", "--type", predicate])
            .args(self.offline_key_flags(public_key))
            .arg(image);
        self.run(&mut cmd)
    }

    pub fn offline_key_flags(&self, public_key: &Path) -> Vec<String> {
        vec![
            "--key".into(),
            public_key.display().to_string(),
            // No transparency log entry to check: whittle does not upload to Rekor.
            "--insecure-ignore-tlog=true".into(),
            "--offline=true".into(),
            "--trusted-root".into(),
            self.dir
                .path()
                .join("trusted_root.json")
                .display()
                .to_string(),
            // The test registry speaks plain HTTP.
            "--allow-http-registry".into(),
        ]
    }

    /// `cosign generate-key-pair` with `password`: `<dir>/cosign.key` and `<dir>/cosign.pub`.
    pub fn generate_key_pair(&self, dir: &Path, password: &str) -> (PathBuf, PathBuf) {
        let prefix = dir.join("cosign");
        let mut cmd = self.command();
        cmd.args(["generate-key-pair", "--output-key-prefix"])
            .arg(&prefix)
            .env("COSIGN_PASSWORD", password);
        let out = self.run(&mut cmd);
        assert!(
            out.status.success(),
            "cosign generate-key-pair: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir.join("cosign.key"), dir.join("cosign.pub"))
    }
}
