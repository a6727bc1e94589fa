//! Credentials never go in cleartext to a host that was not declared insecure. A registry
//! answers `/v2/` with a challenge naming its token service, the realm, and oci-client sends
//! the registry's user and password there, whatever the realm's scheme and host. So before
//! oci-client gets basic credentials for a registry, whittle reads that challenge itself, with
//! the parser oci-client uses, and refuses a realm reached over plain HTTP at a host that was
//! not declared insecure.

use http_auth::ChallengeParser;
use reqwest::Url;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

/// Every Bearer realm the challenges in `headers` name. oci-client follows the first; all are
/// checked, so no parse it might make differently escapes the check.
pub fn realms(headers: &HeaderMap) -> Vec<String> {
    let mut found = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        for challenge in ChallengeParser::new(text).flatten() {
            if !challenge.scheme.eq_ignore_ascii_case("Bearer") {
                continue;
            }
            for (key, value) in &challenge.params {
                if key.eq_ignore_ascii_case("realm") {
                    found.push(value.to_unescaped());
                }
            }
        }
    }
    found
}

/// The `host[:port]` a realm names when it is reached over plain HTTP; None when it is HTTPS
/// or no URL (a request to it fails before anything is sent).
pub fn cleartext_host(realm: &str) -> Option<String> {
    let url = Url::parse(realm).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn every_bearer_realm_is_found() {
        let h = headers(&[
            r#"Basic realm="registry""#,
            r#"Bearer realm="https://auth.example/token",service="registry.example""#,
            r#"bearer service="x", REALM="http://10.0.0.1:8080/t""#,
        ]);
        assert_eq!(
            realms(&h),
            ["https://auth.example/token", "http://10.0.0.1:8080/t"]
        );
        assert!(realms(&headers(&[r#"Basic realm="r""#])).is_empty());
    }

    #[test]
    fn only_plain_http_realms_name_a_host() {
        assert_eq!(cleartext_host("https://auth.example/token"), None);
        assert_eq!(
            cleartext_host("http://10.0.0.1:8080/token").as_deref(),
            Some("10.0.0.1:8080")
        );
        assert_eq!(
            cleartext_host("HTTP://Auth.Example/token").as_deref(),
            Some("auth.example")
        );
        assert_eq!(cleartext_host("/token"), None);
    }
}
