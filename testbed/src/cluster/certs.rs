//! A throw-away PKI for the test cluster: a CA, the apiserver's serving certificate, an admin
//! client certificate in `system:masters`, the service-account signing key, and the node's
//! certificates (kubelet's client and serving certificates, the apiserver's client certificate
//! for kubelet's API).

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::cluster::namespace::{KUBERNETES_SERVICE_IP, NODE_IP};
use crate::error::{Error, Result};

/// The node's name (one node per cluster).
pub const NODE_NAME: &str = "whittle-node";

/// A PEM certificate and its key.
pub struct CertKey {
    pub cert: String,
    pub key: String,
}

/// PEM-encoded material.
pub struct Pki {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub sa_key: String,
    pub sa_pub: String,
    /// kubelet's client certificate: `system:node:<name>` in `system:nodes`, as the Node
    /// authorizer and NodeRestriction expect.
    pub kubelet_client: CertKey,
    /// kubelet's serving certificate, for the node IP.
    pub kubelet_serving: CertKey,
    /// The apiserver's client certificate for kubelet's API (logs, exec).
    pub apiserver_kubelet_client: CertKey,
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

        // Reached on loopback from the host, on the node IP from the node, and through the
        // `kubernetes` Service from pods.
        let server = sign(
            &issuer,
            "kube-apiserver",
            None,
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[Ipv4Addr::LOCALHOST, NODE_IP, KUBERNETES_SERVICE_IP],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = client(&issuer, "whittle-admin", "system:masters")?;
        let kubelet_client = client(&issuer, &format!("system:node:{NODE_NAME}"), "system:nodes")?;
        let kubelet_serving = sign(
            &issuer,
            NODE_NAME,
            None,
            &[NODE_NAME],
            &[NODE_IP, Ipv4Addr::LOCALHOST],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let apiserver_kubelet_client =
            client(&issuer, "kube-apiserver-kubelet-client", "system:masters")?;

        let sa = KeyPair::generate().map_err(err("the service-account key"))?;
        Ok(Pki {
            ca_cert: ca_cert.pem(),
            server_cert: server.cert,
            server_key: server.key,
            admin_cert: admin.cert,
            admin_key: admin.key,
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
            kubelet_client,
            kubelet_serving,
            apiserver_kubelet_client,
        })
    }
}

fn client(issuer: &Issuer<'_, KeyPair>, common: &str, organization: &str) -> Result<CertKey> {
    sign(
        issuer,
        common,
        Some(organization),
        &[],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

fn sign(
    issuer: &Issuer<'_, KeyPair>,
    common: &str,
    organization: Option<&str>,
    dns: &[&str],
    ips: &[Ipv4Addr],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertKey> {
    let what = format!("the certificate for {common}");
    let key = KeyPair::generate().map_err(err(&what))?;
    let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        .map_err(err(&what))?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(IpAddr::V4(*ip))));
    params.distinguished_name = name(common, organization);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).map_err(err(&what))?;
    Ok(CertKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn name(common: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}
