//! The certificates the operator issues for a cluster that brings none: a
//! CA per cluster and one node certificate signed by it (every node of the
//! cluster presents the same one; peers verify the CA, clients may verify
//! the names too), in cert-manager's Secret layout.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// PEM texts of a CA or a leaf and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// How long an issued CA is valid.
pub const CA_VALID_DAYS: i64 = 3650;
/// How long an issued node certificate is valid unless
/// `spec.tls.nodeCertificateDays` says otherwise.
pub const NODE_VALID_DAYS: i64 = 90;

fn validity(p: &mut CertificateParams, now: time::OffsetDateTime, days: i64) {
    // An hour back: clocks of the pods that verify it may be a little late.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

/// A self-signed CA named after the cluster, valid [`CA_VALID_DAYS`].
pub fn issue_ca(cluster: &str) -> Result<Issued, CertError> {
    issue_ca_at(cluster, time::OffsetDateTime::now_utc(), CA_VALID_DAYS)
}

/// A self-signed CA named after the cluster and the day it was made (a
/// rotated CA is told from the old one by name too), valid from `now`.
pub fn issue_ca_at(
    cluster: &str,
    now: time::OffsetDateTime,
    days: i64,
) -> Result<Issued, CertError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("tessera {cluster} CA {}", now.date()),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, now, days);
    let cert = p.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A node certificate valid [`NODE_VALID_DAYS`] from now.
pub fn issue_node_cert(
    ca: &Issued,
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> Result<Issued, CertError> {
    issue_node_cert_at(
        ca,
        dns,
        ips,
        time::OffsetDateTime::now_utc(),
        NODE_VALID_DAYS,
    )
}

/// A server-and-client certificate for the nodes, signed by `ca`, for the
/// DNS names and IP addresses given, valid `days` from `now`.
pub fn issue_node_cert_at(
    ca: &Issued,
    dns: &[String],
    ips: &[std::net::IpAddr],
    now: time::OffsetDateTime,
    days: i64,
) -> Result<Issued, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(dns.to_vec())?;
    p.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns.first()
            .cloned()
            .unwrap_or_else(|| "tessera-node".into()),
    );
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut p, now, days);
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The names a cluster's node certificate carries: the client Service,
/// every shard's headless and primary Services and their pods (wildcard).
pub fn node_dns_names(cluster: &str, namespace: &str, shards: u32) -> Vec<String> {
    let mut v = vec![
        format!("{cluster}.{namespace}.svc"),
        format!("{cluster}.{namespace}.svc.cluster.local"),
    ];
    for s in 0..shards {
        let sts = crate::operator::validate::shard_name(cluster, s);
        v.push(format!("*.{sts}.{namespace}.svc"));
        v.push(format!("*.{sts}.{namespace}.svc.cluster.local"));
        v.push(format!("{cluster}-shard-{s}-primary.{namespace}.svc"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_chains_to_its_cluster_ca_only() {
        use crate::node::tls::CaOnlyVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let ca = issue_ca("users").unwrap();
        let other = issue_ca("other").unwrap();
        let leaf = issue_node_cert(
            &ca,
            &node_dns_names("users", "prod", 2),
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from("198.18.0.7").unwrap();
        let ok = CaOnlyVerifier::from_pem(ca.cert_pem.as_bytes())
            .unwrap()
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now());
        assert!(ok.is_ok(), "{ok:?}");
        let bad = CaOnlyVerifier::from_pem(other.cert_pem.as_bytes())
            .unwrap()
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now());
        assert!(bad.is_err());
    }

    #[test]
    fn node_names_cover_services_and_pods_of_every_shard() {
        let n = node_dns_names("users", "prod", 2);
        assert!(n.contains(&"users.prod.svc".to_string()));
        assert!(n.contains(&"*.users-shard-1.prod.svc".to_string()));
        assert!(n.contains(&"users-shard-0-primary.prod.svc".to_string()));
    }
}
