//! A throw-away PKI for the test control plane: a CA, the apiserver's serving certificate, an
//! admin client certificate in `system:masters`, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// PEM-encoded material.
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub sa_key: String,
    pub sa_pub: String,
}

fn err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("generating {what}: {e}"))
}

impl Pki {
    pub fn generate() -> Result<Pki> {
        let ca_key = KeyPair::generate().map_err(err("the CA key"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err("the CA"))?;
        ca.distinguished_name = name("whittle-testbed-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(err("the CA"))?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().map_err(err("the server key"))?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ])
        .map_err(err("the server certificate"))?;
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server.distinguished_name = name("kube-apiserver", None);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(err("the server certificate"))?;

        let admin_key = KeyPair::generate().map_err(err("the admin key"))?;
        let mut admin =
            CertificateParams::new(Vec::<String>::new()).map_err(err("the admin certificate"))?;
        admin.distinguished_name = name("whittle-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin
            .signed_by(&admin_key, &issuer)
            .map_err(err("the admin certificate"))?;

        let sa = KeyPair::generate().map_err(err("the service-account key"))?;
        Ok(Pki {
            ca_cert: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
        })
    }
}

fn name(common: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}
