//! Signing keys are ECDSA P-256 (what `cosign generate-key-pair` makes): PKCS#8 or SEC1 PEM, or
//! cosign's own encrypted PEM (scrypt + nacl secretbox), opened with `COSIGN_PASSWORD` as cosign
//! does.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::der::pem;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding, ObjectIdentifier};
use serde::Deserialize;

use super::SignError;

/// Where the password of an encrypted cosign key comes from, as for cosign itself.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// An ECDSA P-256 private key, as cosign uses them.
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    /// Where the key came from, for error messages.
    origin: String,
}

impl fmt::Debug for SigningKey {
    // Never the secret: only where it came from and its public half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("origin", &self.origin)
            .field("public_key", &self.public_key_pem())
            .finish()
    }
}

impl SigningKey {
    /// Loads a PEM key file; an encrypted cosign key is opened with `COSIGN_PASSWORD` (an empty
    /// value is a valid, empty password, as for cosign).
    pub fn load(path: &Path) -> Result<SigningKey, SignError> {
        let password = std::env::var_os(PASSWORD_ENV).map(|p| p.into_encoded_bytes());
        SigningKey::load_with_password(path, password.as_deref())
    }

    /// Loads a PEM key file with the password given here (for callers that keep it elsewhere
    /// than the environment, e.g. in a Kubernetes Secret).
    pub fn load_with_password(
        path: &Path,
        password: Option<&[u8]>,
    ) -> Result<SigningKey, SignError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = Zeroizing::new(text);
        SigningKey::from_pem(&text, &path.display().to_string(), password)
    }

    /// Reads the first private key of a PEM text. `origin` names it in errors.
    pub fn from_pem(
        text: &str,
        origin: &str,
        password: Option<&[u8]>,
    ) -> Result<SigningKey, SignError> {
        let origin = origin.to_string();
        let blocks = pem_blocks(text);
        // The first private key: `openssl ecparam -genkey` writes an EC PARAMETERS block before
        // it, and bundles put certificates next to it.
        let Some((label, block)) = blocks
            .iter()
            .find(|(l, _)| l.ends_with("PRIVATE KEY"))
            .or(blocks.first())
            .copied()
        else {
            return Err(SignError::NoPem { origin });
        };
        let malformed = |detail: String| SignError::Malformed {
            origin: origin.clone(),
            detail,
        };
        let (_, der) = pem::decode_vec(block.as_bytes())
            .map_err(|e| malformed(format!("the {label} PEM block does not decode: {e}")))?;
        let der = Zeroizing::new(der);
        let secret = match label {
            "PRIVATE KEY" => pkcs8_key(&der, &origin)?,
            "EC PRIVATE KEY" => sec1_key(&der, &origin)?,
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let Some(password) = password else {
                    return Err(SignError::NeedsPassword { origin });
                };
                let plain = open_cosign_key(&der, password, &origin)?;
                pkcs8_key(&plain, &origin)?
            }
            "RSA PRIVATE KEY" => {
                return Err(SignError::WrongKind {
                    origin,
                    found: "RSA".into(),
                });
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(SignError::WrongKind {
                    origin,
                    found: "an OpenSSH key".into(),
                });
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(malformed(
                    "a password-protected PKCS#8 key (ENCRYPTED PRIVATE KEY); decrypt it with `openssl pkey` or use a cosign key with COSIGN_PASSWORD".into(),
                ));
            }
            other => {
                return Err(SignError::Label {
                    origin,
                    label: other.to_string(),
                });
            }
        };
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(secret),
            origin,
        })
    }

    /// A fresh key from the system's random number generator.
    pub fn generate() -> Result<SigningKey, SignError> {
        let secret =
            p256::SecretKey::try_generate().map_err(|e| SignError::Random(e.to_string()))?;
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(secret),
            origin: "generated".into(),
        })
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), what [`SigningKey::load`]
    /// and `cosign import-key-pair` read.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SignError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SignError::Encode {
                what: "private key",
                detail: e.to_string(),
            })
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`): what `cosign verify --key`
    /// takes.
    pub fn public_key_pem(&self) -> String {
        // Encoding a valid P-256 point into SPKI cannot fail; an empty string would make any
        // verifier reject it loudly rather than accept something wrong.
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Where the key came from (its file, or `generated`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// ECDSA-P256-SHA256 signature of `message`, ASN.1 DER encoded (what cosign's verifier,
    /// Go's `ecdsa.VerifyASN1`, reads).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

/// The `-----BEGIN X-----` … `-----END X-----` blocks of a text, in order, with their labels.
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        blocks.push((label, &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// A P-256 key from PKCS#8 DER, or an error naming the kind of key it holds.
fn pkcs8_key(der: &[u8], origin: &str) -> Result<p256::SecretKey, SignError> {
    use p256::pkcs8::DecodePrivateKey;
    let info = p256::pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|e| SignError::Malformed {
        origin: origin.to_string(),
        detail: format!("not a PKCS#8 private key: {e}"),
    })?;
    let algorithm = info.algorithm.oid;
    if algorithm != OID_EC_PUBLIC_KEY {
        return Err(SignError::WrongKind {
            origin: origin.to_string(),
            found: algorithm_name(algorithm),
        });
    }
    let curve = info.algorithm.parameters_oid().ok();
    if curve != Some(OID_P256) {
        return Err(SignError::WrongKind {
            origin: origin.to_string(),
            found: curve.map_or_else(|| "EC, curve not named".into(), curve_name),
        });
    }
    p256::SecretKey::from_pkcs8_der(der).map_err(|e| SignError::Malformed {
        origin: origin.to_string(),
        detail: format!("the P-256 key does not decode: {e}"),
    })
}

/// A P-256 key from SEC1 `ECPrivateKey` DER.
fn sec1_key(der: &[u8], origin: &str) -> Result<p256::SecretKey, SignError> {
    p256::SecretKey::from_sec1_der(der).map_err(|e| {
        // The curve's OID is in the key's parameters; naming it is only for the message, so
        // finding its encoding in the bytes is enough.
        let other_curve = [
            ("EC P-384", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22][..]),
            ("EC P-521", &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23][..]),
            (
                "EC secp256k1",
                &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a][..],
            ),
        ]
        .into_iter()
        .find(|(_, oid)| der.windows(oid.len()).any(|w| w == *oid));
        match other_curve {
            Some((name, _)) => SignError::WrongKind {
                origin: origin.to_string(),
                found: name.to_string(),
            },
            None => SignError::Malformed {
                origin: origin.to_string(),
                detail: format!("not a SEC1 P-256 private key: {e}"),
            },
        }
    })
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => format!("algorithm {other}"),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.34" => "EC P-384".into(),
        "1.3.132.0.35" => "EC P-521".into(),
        "1.3.132.0.10" => "EC secp256k1".into(),
        other => format!("EC curve {other}"),
    }
}

/// The JSON inside cosign's encrypted PEM (go-securesystemslib's `encrypted` package).
#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    /// base64, as Go marshals `[]byte`.
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Decrypts cosign's encrypted key format to the PKCS#8 DER inside.
fn open_cosign_key(
    json: &[u8],
    password: &[u8],
    origin: &str,
) -> Result<Zeroizing<Vec<u8>>, SignError> {
    let malformed = |detail: String| SignError::Malformed {
        origin: origin.to_string(),
        detail,
    };
    let data: EncryptedKey = serde_json::from_slice(json)
        .map_err(|e| malformed(format!("the encrypted cosign key is not its JSON: {e}")))?;
    if data.kdf.name != "scrypt" {
        return Err(malformed(format!(
            "encrypted with key derivation {:?}; cosign keys use scrypt",
            data.kdf.name
        )));
    }
    if data.cipher.name != "nacl/secretbox" {
        return Err(malformed(format!(
            "encrypted with cipher {:?}; cosign keys use nacl/secretbox",
            data.cipher.name
        )));
    }
    // The parameter sets go-securesystemslib writes (legacy, standard, OWASP); anything else
    // is refused as it does, which also bounds the memory a hostile file can make scrypt take.
    let KdfParams { n, r, p } = data.kdf.params;
    let log_n = match (n, r, p) {
        (32768, 8, 1) => 15,
        (65536, 8, 1) => 16,
        (131072, 8, 1) => 17,
        _ => {
            return Err(malformed(format!(
                "unsupported scrypt parameters N={n} r={r} p={p} (cosign writes N=32768, 65536 or 131072 with r=8, p=1)"
            )));
        }
    };
    let decode = |what: &str, s: &str| {
        BASE64
            .decode(s)
            .map_err(|e| malformed(format!("the {what} is not base64: {e}")))
    };
    let salt = decode("salt", &data.kdf.salt)?;
    let nonce = decode("nonce", &data.cipher.nonce)?;
    let ciphertext = decode("ciphertext", &data.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| malformed("the secretbox nonce is not 24 bytes".into()))?;
    let params = scrypt::Params::new(log_n, r, p)
        .map_err(|e| malformed(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, key.as_mut())
        .map_err(|e| malformed(format!("scrypt: {e}")))?;
    let cipher = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(key.as_ref()));
    let plain = cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            ciphertext.as_slice(),
        )
        .map_err(|_| SignError::Decrypt {
            origin: origin.to_string(),
        })?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_public_key() {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let key = SigningKey::generate().unwrap();
        let pem = key.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let public = p256::ecdsa::VerifyingKey::from_public_key_pem(&pem).unwrap();
        let der = key.sign(b"payload");
        let signature = p256::ecdsa::Signature::from_der(&der).unwrap();
        public.verify(b"payload", &signature).unwrap();
        assert!(public.verify(b"other", &signature).is_err());
    }

    #[test]
    fn pkcs8_and_sec1_keys_load() {
        let key = SigningKey::generate().unwrap();
        let pkcs8 = key.to_pkcs8_pem().unwrap();
        let loaded = SigningKey::from_pem(&pkcs8, "k.pem", None).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());

        let sec1 = p256::SecretKey::from(key.key.as_nonzero_scalar())
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        // As `openssl ecparam -genkey` writes it: parameters first.
        let text = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        let loaded = SigningKey::from_pem(&text, "k.pem", None).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());
    }

    // Throwaway keys made for these tests: `openssl genpkey` (RSA 512, P-384), `openssl ecparam
    // -genkey` (P-384 SEC1), and `cosign generate-key-pair` v2.6.5 with COSIGN_PASSWORD
    // `whittle-unit-test`.
    const RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEArCkT+fs+BxPdV50p\nN9Fxlt/WeyuOsxKkepG2RuLZbZoEbUtqcyPJieWDxjfzcat67IcymZ0ntH/Ps5pv\n7Jy03QIDAQABAkA4uG/0dGpDOrA6JXVnBoI+CxFHE1q4dPPrzgYX5LVt/j3nbTm3\nk39LZ7O9kflQV/7MTTcmfUahZTYMOCw7zT0BAiEA3G6jpY3RSFoHDQPe9Svb8fzO\nNs8RmUb7R0qZ2yJqQ8UCIQDH8HxQdT4gEttYD2SUA2Zzi1LiU9XbpsLzYkn9XLkG\nOQIhAMrOvJ/QKDJCKmSOIC9ASB+Pcgc5Yr68cOp5t67HLi/lAiBFnBub44XSot4N\nBabtxVVJCwu7UpbVV3TuSZ0bAcpFOQIgREUxmvvpnnqc/UinVP0HXUEb4FigktQ4\nxmmaBSMW6co=\n-----END PRIVATE KEY-----\n";
    const P384_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAs56iH0vDMJHHCU0Vk\nYURAdp20UIn/2j+0R3jSQKz6aw8Nz/5dz9CpO18t7CU4OnahZANiAASKP1ut2ddt\nh+piAkf4fL/FiuMiMIzPO12hyP3v1Mm9Pg1iVYPXw9AJCdjfmLu23dHHeg/e3GSt\nF1quK2E/NllAQxXfA1uUvaPaZYPQEqirRyZTlEHwnHQK9BYZBApearw=\n-----END PRIVATE KEY-----\n";
    const P384_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMIGkAgEBBDATT/n7xSRNs4aQJh69VFWPCSh1gue5j2bfOrMg3ISr7fv8cx5DTIAt\ncu25TUovlHmgBwYFK4EEACKhZANiAASW8dWg+mlQtfIewBxSElvjWCbhtYHyimMV\n+Ff81QQTGr8OPgE3Nj16SD8mn3ILlOf4FAlU+EqgcE7z1evu4oLQqYsXHH0OZ3R1\nMx7b63F61brpA7dWp+VV5ZVT/xLlKRs=\n-----END EC PRIVATE KEY-----\n";
    const ED25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const COSIGN_KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6\nOCwicCI6MX0sInNhbHQiOiJkanFIaGhvOHBRR0lldW16WWd6OWJZN3dpSCs1cnQ0\nc3YzbzhZeHNMNVpvPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94\nIiwibm9uY2UiOiIraFRyRHQyZmxtQnJab0RLU3pTWncvL0VmcEN3cVB1ZyJ9LCJj\naXBoZXJ0ZXh0IjoiNlB4eHM4VUVIUXFMZ2VlSUVDUzBoNnFlejlub0Jvc2tZRDha\nMVg4SFF5S1hTRWhrZlBKRVEzQXlxa0o5WWc5ZDAxUlJ3RTgvVU4vcFRySkdCeFhU\neFo5bk5HUER5QkZSTHFla0JYd1k2WjMyTzBVaWRTNktrVytGdlQvd1VqMENvZ1Nt\naHBjRFFraEliOEt2Sml1RE1RT1N4RmVwdTdJaEo4SVJaOHhEMHJjRURPZWlZSGxC\nUVFYYnNRa2FVdmxnZmtWbWFWUTdkU0paYUE9PSJ9\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMqc89dUxxaxs3OE/ovGd50UuD7GN\nUv4IaxgdcjxOsUsYZZB8c9OBWCm6c3VS3CcJ91AAQG2gaZdN4f9zDNTL4A==\n-----END PUBLIC KEY-----\n";

    fn refusal(text: &str) -> String {
        let err = SigningKey::from_pem(text, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::WrongKind { .. }), "{err}");
        err.to_string().split(';').next().unwrap().to_string()
    }

    #[test]
    fn other_keys_are_refused_with_what_they_are() {
        let not = "signing key /k.pem: not an EC P-256 key";
        assert_eq!(refusal(RSA_PKCS8), format!("{not} (found RSA)"));
        assert_eq!(refusal(P384_PKCS8), format!("{not} (found EC P-384)"));
        assert_eq!(refusal(P384_SEC1), format!("{not} (found EC P-384)"));
        assert_eq!(refusal(ED25519_PKCS8), format!("{not} (found Ed25519)"));
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(refusal(pkcs1), format!("{not} (found RSA)"));
        let err = SigningKey::from_pem("hello", "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::NoPem { .. }), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let err = SigningKey::from_pem(cert, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::Label { .. }), "{err}");
        let err = SigningKey::from_pem(COSIGN_PUB, "/k.pub", None).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("give the private key (cosign.key)"),
            "{err}"
        );
        // A certificate before the key, as in a bundle.
        let bundle = format!("{cert}{P384_SEC1}");
        assert_eq!(refusal(&bundle), format!("{not} (found EC P-384)"));
    }

    #[test]
    fn encrypted_cosign_keys_open_with_the_password() {
        let err = SigningKey::from_pem(COSIGN_KEY, "/k.pem", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signing key /k.pem: encrypted cosign key needs COSIGN_PASSWORD"
        );
        // cosign's older label holds the same format.
        let old = COSIGN_KEY.replace("SIGSTORE", "COSIGN");
        let err = SigningKey::from_pem(&old, "/k.pem", None).unwrap_err();
        assert!(matches!(err, SignError::NeedsPassword { .. }), "{err}");
        // One scrypt derivation only: unoptimised (test profile) it takes seconds. The wrong
        // password is tried in tests/signing.rs.
        let key = SigningKey::from_pem(COSIGN_KEY, "/k.pem", Some(b"whittle-unit-test")).unwrap();
        assert_eq!(key.public_key_pem(), COSIGN_PUB);
    }
}
