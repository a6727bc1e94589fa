//! Image references as users write them (`registry/repo:tag`, `registry/repo@sha256:...`) and the
//! names whittle derives from them (`<repo>:<tag>-whittle-hardened`).

use std::fmt;

use oci_client::Reference;

use crate::image::error::{ImageError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef> {
        let inner: Reference = input.parse().map_err(|e| ImageError::Reference {
            input: input.to_string(),
            reason: format!("{e}"),
        })?;
        if inner.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ImageError::Reference {
                input: input.to_string(),
                reason: "repository names must be lowercase".into(),
            });
        }
        if let Some(d) = inner.digest()
            && !is_sha256_digest(d)
        {
            return Err(ImageError::Reference {
                input: input.to_string(),
                reason: format!("digest {d} is not sha256:<64 hex digits>"),
            });
        }
        Ok(ImageRef { inner })
    }

    pub fn oci(&self) -> &Reference {
        &self.inner
    }

    /// The registry as written in the reference (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The same repository at `digest`: `registry/repo@sha256:...`.
    pub fn at_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            inner: self.inner.clone_with_digest(digest.to_string()),
        }
    }

    /// The same repository at `tag`.
    pub fn at_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            inner: Reference::with_tag(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
            ),
        }
    }

    /// `<repo>:<tag>-<suffix>`: where whittle puts what it makes from this image unless told
    /// otherwise. An image named only by digest gets `sha256-<12 hex>-<suffix>`.
    pub fn derived(&self, suffix: &str) -> ImageRef {
        self.at_tag(&derived_tag(self.tag(), self.digest(), suffix))
    }

    /// True when both name the same repository of the same registry.
    pub fn same_repository(&self, other: &ImageRef) -> bool {
        self.inner.resolve_registry() == other.inner.resolve_registry()
            && self.repository() == other.repository()
    }

    pub fn same_registry(&self, other: &ImageRef) -> bool {
        self.inner.resolve_registry() == other.inner.resolve_registry()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// `<tag>-<suffix>` for an image named by `tag`, `sha256-<12 hex>-<suffix>` for one named only
/// by `digest`, at most 128 characters (the suffix, which says what the image is, is kept).
pub fn derived_tag(tag: Option<&str>, digest: Option<&str>, suffix: &str) -> String {
    let base = match (tag, digest) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(digest)) => {
            let hex = digest.trim_start_matches("sha256:");
            format!("sha256-{}", &hex[..hex.len().min(12)])
        }
        (None, None) => "latest".to_string(),
    };
    let room = 128usize.saturating_sub(suffix.len() + 1);
    let base: String = base.chars().take(room).collect();
    format!("{base}-{suffix}")
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_and_derived_names() {
        let r = ImageRef::parse("127.0.0.1:5000/shop/web:1.2").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "shop/web");
        assert_eq!(r.tag(), Some("1.2"));
        assert_eq!(
            r.derived("whittle-hardened").to_string(),
            "127.0.0.1:5000/shop/web:1.2-whittle-hardened"
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let pinned = r.at_digest(&d);
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/shop/web@{d}"));
        assert_eq!(
            pinned.derived("whittle-instrumented").tag(),
            Some("sha256-abababababab-whittle-instrumented")
        );
        assert!(r.same_repository(&pinned));
        assert!(!r.same_repository(&ImageRef::parse("127.0.0.1:5000/shop/other:1").unwrap()));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "UPPER/case:1", "a/b@sha256:1234", "a/b:bad tag"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
