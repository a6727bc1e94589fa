//! The version orderings of the OSV ecosystems whittle matches: Debian's (the `debversion`
//! crate) and Alpine's (`apk.rs`).

mod apk;

/// A version ordering an OSV ecosystem defines.
pub(super) trait Scheme {
    type Version: Ord;
    fn parse(text: &str) -> Result<Self::Version, String>;
}

pub(super) struct DebianScheme;

impl Scheme for DebianScheme {
    type Version = debversion::Version;
    fn parse(text: &str) -> Result<Self::Version, String> {
        text.parse::<debversion::Version>()
            .map_err(|err| format!("{text:?}: {err}"))
    }
}

pub(super) struct AlpineScheme;

impl Scheme for AlpineScheme {
    type Version = apk::Version;
    fn parse(text: &str) -> Result<Self::Version, String> {
        apk::Version::parse(text).map_err(|err| format!("{text:?}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use crate::evidence::vulns::testing::{db_of, deb12, hit, hits};

    #[test]
    fn debian_ordering_epochs_tildes_and_security_updates() {
        let db = db_of(&[
            &deb12(
                "EPOCH",
                "epoch",
                r#"{"introduced": "0"}, {"fixed": "1:2.0"}"#,
                "",
            ),
            &deb12(
                "TILDE",
                "tilde",
                r#"{"introduced": "0"}, {"fixed": "1.0"}"#,
                "",
            ),
            &deb12(
                "DEB12U",
                "glibc",
                r#"{"introduced": "0"}, {"fixed": "2.36-9+deb12u3"}"#,
                "",
            ),
        ]);
        // An epoch outranks any upstream version: 3.0 is older than 1:2.0.
        assert_eq!(hits(&db, "epoch", "3.0"), hit("EPOCH", Some("1:2.0")));
        assert!(hits(&db, "epoch", "1:2.0").is_empty());
        assert!(hits(&db, "epoch", "1:2.0.1").is_empty());
        // A tilde sorts before the release it precedes.
        assert_eq!(hits(&db, "tilde", "1.0~rc1"), hit("TILDE", Some("1.0")));
        assert!(hits(&db, "tilde", "1.0").is_empty());
        assert!(hits(&db, "tilde", "1.0+dfsg").is_empty());
        // Security updates count numerically: u10 comes after u3, though "u10" < "u3" as text.
        assert_eq!(
            hits(&db, "glibc", "2.36-9"),
            hit("DEB12U", Some("2.36-9+deb12u3"))
        );
        assert_eq!(
            hits(&db, "glibc", "2.36-9+deb12u2"),
            hit("DEB12U", Some("2.36-9+deb12u3"))
        );
        assert!(hits(&db, "glibc", "2.36-9+deb12u3").is_empty());
        assert!(hits(&db, "glibc", "2.36-9+deb12u10").is_empty());
    }
}
