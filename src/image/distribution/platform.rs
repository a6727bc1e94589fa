//! Which image of an index: the `os/arch[/variant]` wanted ([`Platform`]) and the choice among
//! what an image index offers, whose error names what was available.

use std::str::FromStr;

use serde_json::Value;

use super::hints::Hints;
use crate::image::error::{ImageError, Result};

/// An `os/arch[/variant]` platform, `linux/amd64` unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(ImageError::Platform(s.to_string())),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The digest of the `want` image in an image index; the error lists what the index offers.
pub fn choose_platform(
    reference: &str,
    index: &Value,
    want: &Platform,
    hints: Hints,
) -> Result<String> {
    let mut available = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let p = &entry["platform"];
        let (Some(os), Some(arch)) = (p["os"].as_str(), p["architecture"].as_str()) else {
            continue;
        };
        let variant = p["variant"].as_str();
        if os == "unknown" {
            // Attestations and signatures, not images.
            continue;
        }
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        let variant_ok = match &want.variant {
            Some(w) => variant == Some(w.as_str()),
            None => true,
        };
        if os == want.os
            && arch == want.architecture
            && variant_ok
            && let Some(d) = entry["digest"].as_str()
        {
            return Ok(d.to_string());
        }
    }
    Err(ImageError::NoPlatform {
        reference: reference.to_string(),
        wanted: want.to_string(),
        available: if available.is_empty() {
            "no platforms".into()
        } else {
            available.join(", ")
        },
        hint: hints.platform(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::distribution::reference::ImageRef;
    use crate::image::media::is_index;
    use oci_client::manifest as mt;

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn index_choice_names_what_is_available() {
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        let index = serde_json::json!({
            "mediaType": mt::OCI_IMAGE_INDEX_MEDIA_TYPE,
            "manifests": [
                {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
                {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        });
        assert!(is_index(&index));
        let r = r.to_string();
        assert_eq!(
            choose_platform(&r, &index, &Platform::default(), Hints::CommandLine).unwrap(),
            "sha256:amd"
        );
        let s390x: Platform = "linux/s390x".parse().unwrap();
        let e = choose_platform(&r, &index, &s390x, Hints::CommandLine)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm64/v8, linux/amd64"),
            "{e}"
        );
    }
}
