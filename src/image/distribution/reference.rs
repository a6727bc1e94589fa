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
        let inner = grammar::parse(input).map_err(|reason| ImageError::Reference {
            input: input.to_string(),
            reason: reason.to_string(),
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

/// The distribution reference grammar, parsed by hand. oci-spec's `Reference::from_str` does
/// the same with one regular expression whose Unicode classes take 30 ms and 15 MiB to compile
/// in every process that parses a reference (a third of a harden's memory); the results are
/// the same (the unit test compares the two on a corpus).
mod grammar {
    use oci_client::Reference;

    const DOCKER_HUB: &str = "docker.io";
    const DOCKER_HUB_LEGACY: &str = "index.docker.io";
    const NAME_MAX: usize = 255;
    const TAG_MAX: usize = 128;

    pub fn parse(input: &str) -> Result<Reference, &'static str> {
        if input.is_empty() {
            return Err("repository name must have at least one component");
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if !is_name(name) || !tag.is_none_or(is_tag) || !digest.is_none_or(is_digest_form) {
            return Err("invalid reference format");
        }
        let (registry, repository) = split_domain(name);
        if repository.len() > NAME_MAX {
            return Err("repository name must not be more than 255 characters");
        }
        if let Some(digest) = digest {
            let want = match digest.split_once(':') {
                Some(("sha256", _)) => 64,
                Some(("sha384", _)) => 96,
                Some(("sha512", _)) => 128,
                _ => return Err("unsupported digest algorithm"),
            };
            if digest.len() - digest.find(':').map_or(0, |i| i + 1) != want {
                return Err("invalid checksum digest length");
            }
        }
        let tag = tag.map(str::to_string);
        Ok(match (tag, digest.map(str::to_string)) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
            (None, Some(d)) => Reference::with_digest(registry, repository, d),
            (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest".into())),
        })
    }

    /// `[domain/]component(/component)*`.
    fn is_name(name: &str) -> bool {
        let all_components = |s: &str| s.split('/').all(is_path_component);
        all_components(name)
            || name
                .split_once('/')
                .is_some_and(|(domain, rest)| is_domain(domain) && all_components(rest))
    }

    /// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
    fn is_path_component(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
                return false;
            }
        }
        true
    }

    /// `label(.label)*[:port]`, a label being letters, digits and inner dashes.
    fn is_domain(d: &str) -> bool {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let label = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        };
        host.split('.').all(label)
            && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
    }

    /// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    fn is_tag(t: &str) -> bool {
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= TAG_MAX
            && word(b[0])
            && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
    }

    /// `algorithm:hex`, hex of 32 digits or more; the algorithm's components are a letter and
    /// letters or digits, joined by `-`, `_`, `+` or `.`.
    fn is_digest_form(d: &str) -> bool {
        let Some((algorithm, hex)) = d.split_once(':') else {
            return false;
        };
        let component = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        };
        algorithm.split(['-', '_', '+', '.']).all(component)
            && hex.len() >= 32
            && hex.bytes().all(|x| x.is_ascii_hexdigit())
    }

    /// Docker's `splitDomain`: a first component that looks like a host (a dot, a port, or
    /// `localhost`) is the registry; otherwise Docker Hub, where one-component names are
    /// official images (`library/`).
    fn split_domain(name: &str) -> (String, String) {
        let (mut domain, mut rest) = match name.split_once('/') {
            Some((left, right))
                if left.contains('.') || left.contains(':') || left == "localhost" =>
            {
                (left.to_string(), right.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if domain == DOCKER_HUB_LEGACY {
            domain = DOCKER_HUB.to_string();
        }
        if domain == DOCKER_HUB && !rest.contains('/') {
            rest = format!("library/{rest}");
        }
        (domain, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written grammar gives what oci-spec's regular expression gives, for good and
    /// bad references alike.
    #[test]
    fn same_as_oci_spec_on_a_corpus() {
        let hex = "ab".repeat(32);
        let corpus = [
            "busybox".to_string(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            format!("test:5000/repo@sha256:{hex}"),
            format!("test:5000/repo:tag@sha256:{hex}"),
            "lowercase:Uppercase".into(),
            "sub-dom1.foo.com/bar/baz/quux".into(),
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            "foo_bar.com:8080".into(),
            "foo/foo_bar.com:8080".into(),
            "127.0.0.1:5000/shop/web:1.2".into(),
            "localhost/a/b".into(),
            "localhost:5000/a".into(),
            "index.docker.io/nginx".into(),
            "docker.io/library/nginx:1".into(),
            "a__b/c-----d/e.f_g:t".into(),
            format!("a/b@sha512:{}", "cd".repeat(64)),
            format!("a/b@sha384:{}", "cd".repeat(48)),
            format!("a/b@md5:{}", "cd".repeat(16)),
            format!("a/b@sha256:{}", "AB".repeat(32)),
            format!("a/b@sha256+b64.x:{}", "ab".repeat(16)),
            "".into(),
            ":justtag".into(),
            "@sha256:ffffffff".into(),
            "validname@invaliddigest:ffffffffffffffffffffffffffffffff".into(),
            "Uppercase:tag".into(),
            "UPPER/case:1".into(),
            "test:5000/Uppercase/lowercase:tag".into(),
            "aa/asdf$$^/aa".into(),
            "a/b:bad tag".into(),
            "a/b@sha256:1234".into(),
            "a..b/c".into(),
            "a___b/c".into(),
            "-a/b".into(),
            "a-/b".into(),
            "a/b/".into(),
            "/a/b".into(),
            "a//b".into(),
            "host:/a".into(),
            "ho_st.com/a".into(),
            "-host.com/a".into(),
            "a/b:".into(),
            format!("a/b:{}", "t".repeat(128)),
            format!("a/b:{}", "t".repeat(129)),
            format!("a/{}", "c".repeat(260)),
            "a/b:.tag".into(),
            "a/b:_tag".into(),
            "a/b@sha256:".into(),
            "a:b:c".into(),
            "a@b@c".into(),
            "x.y:80/a:1@sha256:zz".into(),
        ];
        let mut valid = 0;
        for input in &corpus {
            let theirs = input.parse::<Reference>().ok();
            let ours = grammar::parse(input).ok();
            assert_eq!(ours, theirs, "{input:?}");
            valid += usize::from(ours.is_some());
        }
        assert!(
            valid > 20 && corpus.len() - valid > 20,
            "{valid} of {} valid: the corpus has both kinds",
            corpus.len()
        );
    }

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
