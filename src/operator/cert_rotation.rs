//! Renewal of the certificates the operator issues (`<cluster>-tls`),
//! before they expire and without a moment where two nodes, or the
//! operator and a node, do not trust each other.
//!
//! - The node certificate is issued again from the current CA when a third
//!   of its lifetime is left (or it lacks a name the cluster now needs).
//!   Nodes re-read their files, so new connections use it once the kubelet
//!   has updated the Secret volume; peers trust the CA, not the leaf.
//! - The CA is replaced in three steps a [`Policy::ca_overlap`] apart, when
//!   a third of its lifetime is left: (1) a new CA is added to `ca.crt`
//!   beside the old one (and becomes the signing CA, `ca.key`) while the
//!   node certificate stays the old CA's; (2) once every node has trusted
//!   both for the overlap, the node certificate is issued from the new CA;
//!   (3) after another overlap, the old CA leaves the bundle.
//!
//! [`plan`] decides from the Secret's contents and the time alone (no state
//! beyond the certificates), so a restarted operator carries on where it
//! was; [`apply`] makes the new contents.

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use super::certs::{issue_ca_at, issue_node_cert_at, CertError, Issued};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("ca.key belongs to none of the certificates in ca.crt")]
    KeyNotInBundle,
    #[error(transparent)]
    Issue(#[from] CertError),
}

/// The four keys of `<cluster>-tls`, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub tls_crt: String,
    pub tls_key: String,
    /// The CA bundle nodes and clients trust (one CA, two while rotating).
    pub ca_crt: String,
    /// The key of the CA that signs new node certificates.
    pub ca_key: String,
}

/// Lifetimes and the CA overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub node_days: i64,
    pub ca_days: i64,
    /// How long a new CA is trusted before anything presents a certificate
    /// of it, and how long the old one stays trusted after.
    pub ca_overlap: time::Duration,
}

impl Policy {
    pub fn new(node_days: Option<i32>) -> Self {
        Self {
            node_days: node_days
                .map(i64::from)
                .unwrap_or(super::certs::NODE_VALID_DAYS),
            ca_days: super::certs::CA_VALID_DAYS,
            ca_overlap: time::Duration::days(7),
        }
    }
}

/// Why the node certificate is issued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeReason {
    /// A third of its lifetime or less is left (or it has expired).
    Expiring,
    /// It lacks a name the cluster needs (a shard was added).
    NamesMissing,
    /// A new CA has been trusted for the overlap: switch to it.
    NewCa,
    /// It chains to no CA of the bundle (the Secret was edited).
    NotFromBundle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Keep,
    RenewNode(NodeReason),
    /// Step 1 of a CA rotation: a new CA beside the old.
    RotateCa,
    /// Step 3: CAs other than the signing one leave the bundle.
    DropOldCas,
}

/// What the planner reads from one certificate.
struct Cert {
    der: Vec<u8>,
    /// Its PEM block, as found (kept verbatim in a bundle).
    pem: String,
    not_before: i64,
    not_after: i64,
    dns: Vec<String>,
    spki: Vec<u8>,
}

impl Cert {
    /// Whether a third of its lifetime or less is left at `now`.
    fn renewal_due(&self, now: i64) -> bool {
        let life = self.not_after - self.not_before;
        self.not_after - now <= life / 3
    }
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

fn parse_all(pem: &str, what: &'static str) -> Result<Vec<Cert>, RotationError> {
    use rustls_pki_types::pem::PemObject;
    let err = |reason: String| RotationError::Parse { what, reason };
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    let blocks: Vec<String> = pem
        .split_inclusive(END)
        .filter_map(|b| b.find(BEGIN).map(|i| b[i..].to_string()))
        .collect();
    if ders.is_empty() || blocks.len() != ders.len() {
        return Err(err("no certificate, or blocks that do not parse".into()));
    }
    ders.into_iter()
        .zip(blocks)
        .map(|(der, pem)| {
            let (_, x) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| err(e.to_string()))?;
            let dns = match x.subject_alternative_name() {
                Ok(Some(san)) => san
                    .value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Cert {
                not_before: x.validity().not_before.timestamp(),
                not_after: x.validity().not_after.timestamp(),
                dns,
                spki: x.tbs_certificate.subject_pki.raw.to_vec(),
                der: der.to_vec(),
                pem: pem.trim().to_string() + "\n",
            })
        })
        .collect()
}

/// Whether `leaf` chains to `ca` and is valid at `now`.
fn chains_to(leaf: &Cert, ca: &Cert, now: i64) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    let Ok(v) = crate::node::tls::CaOnlyVerifier::from_pem(ca.pem.as_bytes()) else {
        return false;
    };
    let Ok(name) = ServerName::try_from("tessera.invalid") else {
        return false;
    };
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
    v.verify_server_cert(
        &CertificateDer::from(leaf.der.as_slice()),
        &[],
        &name,
        &[],
        at,
    )
    .is_ok()
}

struct Parsed {
    leaf: Cert,
    bundle: Vec<Cert>,
    /// Index in `bundle` of the CA whose key is `ca.key`.
    signing: usize,
}

fn parse(files: &TlsFiles) -> Result<Parsed, RotationError> {
    let leaf = parse_all(&files.tls_crt, "tls.crt")?.remove(0);
    let bundle = parse_all(&files.ca_crt, "ca.crt")?;
    let key = rcgen::KeyPair::from_pem(&files.ca_key).map_err(|e| RotationError::Parse {
        what: "ca.key",
        reason: e.to_string(),
    })?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let signing = bundle
        .iter()
        .position(|c| c.spki == spki)
        .ok_or(RotationError::KeyNotInBundle)?;
    Ok(Parsed {
        leaf,
        bundle,
        signing,
    })
}

/// What to do with `<cluster>-tls` at `now`, for a cluster whose node
/// certificate must carry `names`.
pub fn plan(
    files: &TlsFiles,
    names: &[String],
    now: OffsetDateTime,
    policy: &Policy,
) -> Result<Plan, RotationError> {
    let p = parse(files)?;
    let now = now.unix_timestamp();
    let overlap = policy.ca_overlap.whole_seconds();
    let signing = &p.bundle[p.signing];
    if p.leaf.not_after <= now || p.leaf.renewal_due(now) {
        return Ok(Plan::RenewNode(NodeReason::Expiring));
    }
    // A CA due for renewal that is still the newest: start a rotation.
    if signing.renewal_due(now) {
        return Ok(Plan::RotateCa);
    }
    if !chains_to(&p.leaf, signing, now) {
        let from_older = p.bundle.iter().any(|c| chains_to(&p.leaf, c, now));
        if !from_older {
            return Ok(Plan::RenewNode(NodeReason::NotFromBundle));
        }
        // Step 2, once the new CA has been trusted everywhere long enough.
        return Ok(if now >= signing.not_before + overlap {
            Plan::RenewNode(NodeReason::NewCa)
        } else {
            Plan::Keep
        });
    }
    if names.iter().any(|n| !p.leaf.dns.contains(n)) {
        return Ok(Plan::RenewNode(NodeReason::NamesMissing));
    }
    let others = p.bundle.len() > 1;
    let expired_other = p
        .bundle
        .iter()
        .enumerate()
        .any(|(i, c)| i != p.signing && c.not_after <= now);
    if others && (expired_other || now >= p.leaf.not_before + overlap) {
        return Ok(Plan::DropOldCas);
    }
    Ok(Plan::Keep)
}

/// The Secret's new contents for `plan` (None for [`Plan::Keep`]).
pub fn apply(
    plan: Plan,
    files: &TlsFiles,
    cluster: &str,
    names: &[String],
    now: OffsetDateTime,
    policy: &Policy,
) -> Result<Option<TlsFiles>, RotationError> {
    let p = parse(files)?;
    let signing = &p.bundle[p.signing];
    let unix = now.unix_timestamp();
    Ok(match plan {
        Plan::Keep => None,
        Plan::RenewNode(_) => {
            let ca = Issued {
                cert_pem: signing.pem.clone(),
                key_pem: files.ca_key.clone(),
            };
            // Never past the CA's own end.
            let days = policy
                .node_days
                .min((signing.not_after - unix) / 86_400)
                .max(1);
            let leaf = issue_node_cert_at(&ca, names, &[], now, days)?;
            Some(TlsFiles {
                tls_crt: leaf.cert_pem,
                tls_key: leaf.key_pem,
                ..files.clone()
            })
        }
        Plan::RotateCa => {
            let new = issue_ca_at(cluster, now, policy.ca_days)?;
            let mut bundle = new.cert_pem.trim().to_string() + "\n";
            for c in p.bundle.iter().filter(|c| c.not_after > unix) {
                bundle.push_str(&c.pem);
            }
            Some(TlsFiles {
                ca_crt: bundle,
                ca_key: new.key_pem,
                ..files.clone()
            })
        }
        Plan::DropOldCas => Some(TlsFiles {
            ca_crt: signing.pem.clone(),
            ..files.clone()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
    }

    fn names() -> Vec<String> {
        super::super::certs::node_dns_names("users", "prod", 2)
    }

    /// A Secret as the operator first writes it, at `at`.
    fn fresh(at: OffsetDateTime, node_days: i64) -> TlsFiles {
        let ca = issue_ca_at("users", at, 3650).unwrap();
        let leaf = issue_node_cert_at(&ca, &names(), &[], at, node_days).unwrap();
        TlsFiles {
            tls_crt: leaf.cert_pem,
            tls_key: leaf.key_pem,
            ca_crt: ca.cert_pem,
            ca_key: ca.key_pem,
        }
    }

    fn step(files: &TlsFiles, now: OffsetDateTime, policy: &Policy) -> (Plan, TlsFiles) {
        let plan = plan(files, &names(), now, policy).unwrap();
        let next = apply(plan, files, "users", &names(), now, policy)
            .unwrap()
            .unwrap_or_else(|| files.clone());
        (plan, next)
    }

    fn bundle_len(f: &TlsFiles) -> usize {
        f.ca_crt.matches(BEGIN).count()
    }

    #[test]
    fn a_fresh_secret_is_kept() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        assert_eq!(plan(&f, &names(), t0(), &policy).unwrap(), Plan::Keep);
        assert_eq!(
            plan(&f, &names(), t0() + Duration::days(59), &policy).unwrap(),
            Plan::Keep
        );
    }

    #[test]
    fn the_node_certificate_is_renewed_in_the_last_third_of_its_life_from_the_same_ca() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        let now = t0() + Duration::days(61);
        let (p, next) = step(&f, now, &policy);
        assert_eq!(p, Plan::RenewNode(NodeReason::Expiring));
        assert_ne!(next.tls_crt, f.tls_crt);
        assert_ne!(next.tls_key, f.tls_key);
        assert_eq!(next.ca_crt, f.ca_crt, "the CA stays");
        assert_eq!(next.ca_key, f.ca_key);
        let parsed = parse(&next).unwrap();
        assert!(chains_to(
            &parsed.leaf,
            &parsed.bundle[0],
            now.unix_timestamp()
        ));
        // ~90 days from now, and then nothing more to do.
        let days = (parsed.leaf.not_after - now.unix_timestamp()) / 86_400;
        assert_eq!(days, 90);
        assert_eq!(plan(&next, &names(), now, &policy).unwrap(), Plan::Keep);
    }

    #[test]
    fn an_expired_node_certificate_is_renewed() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        let p = plan(&f, &names(), t0() + Duration::days(200), &policy).unwrap();
        assert_eq!(p, Plan::RenewNode(NodeReason::Expiring));
    }

    #[test]
    fn the_configured_lifetime_is_used() {
        let policy = Policy::new(Some(30));
        let f = fresh(t0(), 30);
        assert_eq!(
            plan(&f, &names(), t0() + Duration::days(19), &policy).unwrap(),
            Plan::Keep
        );
        let (p, next) = step(&f, t0() + Duration::days(21), &policy);
        assert_eq!(p, Plan::RenewNode(NodeReason::Expiring));
        let leaf = parse(&next).unwrap().leaf;
        assert_eq!(leaf.not_after - leaf.not_before, 30 * 86_400 + 3600);
    }

    #[test]
    fn a_missing_name_gets_a_new_certificate() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        let more = super::super::certs::node_dns_names("users", "prod", 3);
        let p = plan(&f, &more, t0() + Duration::days(1), &policy).unwrap();
        assert_eq!(p, Plan::RenewNode(NodeReason::NamesMissing));
    }

    #[test]
    fn a_ca_rotation_trusts_both_then_switches_the_leaf_then_drops_the_old_ca() {
        let policy = Policy::new(None);
        // A CA of which a third is left, and a leaf renewed just now.
        let old_start = t0() - Duration::days(2500);
        let mut f = fresh(old_start, 90);
        let now = t0();
        let renewed = apply(
            Plan::RenewNode(NodeReason::Expiring),
            &f,
            "users",
            &names(),
            now,
            &policy,
        )
        .unwrap()
        .unwrap();
        f = renewed;
        let old_ca = f.ca_crt.clone();
        let old_leaf = f.tls_crt.clone();

        // Step 1: a new CA beside the old; the leaf is untouched.
        let (p, f1) = step(&f, now, &policy);
        assert_eq!(p, Plan::RotateCa);
        assert_eq!(bundle_len(&f1), 2);
        assert!(f1.ca_crt.contains(old_ca.trim()));
        assert_ne!(f1.ca_key, f.ca_key);
        assert_eq!(f1.tls_crt, old_leaf);
        // Within the overlap nothing moves.
        let (p, f1b) = step(&f1, now + Duration::days(6), &policy);
        assert_eq!((p, &f1b), (Plan::Keep, &f1));

        // Step 2: after the overlap, the leaf comes from the new CA; both
        // CAs stay trusted.
        let at2 = now + Duration::days(8);
        let (p, f2) = step(&f1, at2, &policy);
        assert_eq!(p, Plan::RenewNode(NodeReason::NewCa));
        assert_ne!(f2.tls_crt, old_leaf);
        assert_eq!(f2.ca_crt, f1.ca_crt);
        let parsed = parse(&f2).unwrap();
        assert!(chains_to(
            &parsed.leaf,
            &parsed.bundle[parsed.signing],
            at2.unix_timestamp()
        ));
        let (p, _) = step(&f2, at2 + Duration::days(1), &policy);
        assert_eq!(p, Plan::Keep);

        // Step 3: another overlap later the old CA leaves the bundle.
        let at3 = at2 + Duration::days(8);
        let (p, f3) = step(&f2, at3, &policy);
        assert_eq!(p, Plan::DropOldCas);
        assert_eq!(bundle_len(&f3), 1);
        assert!(!f3.ca_crt.contains(old_ca.trim()));
        assert_eq!(f3.tls_crt, f2.tls_crt);
        let (p, _) = step(&f3, at3, &policy);
        assert_eq!(p, Plan::Keep);
    }

    #[test]
    fn a_leaf_of_no_ca_in_the_bundle_is_replaced_at_once() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        let stranger = fresh(t0(), 90);
        let edited = TlsFiles {
            tls_crt: stranger.tls_crt,
            tls_key: stranger.tls_key,
            ..f
        };
        let p = plan(&edited, &names(), t0() + Duration::days(1), &policy).unwrap();
        assert_eq!(p, Plan::RenewNode(NodeReason::NotFromBundle));
    }

    #[test]
    fn a_key_that_matches_no_ca_is_an_error() {
        let policy = Policy::new(None);
        let f = fresh(t0(), 90);
        let other = fresh(t0(), 90);
        let broken = TlsFiles {
            ca_key: other.ca_key,
            ..f
        };
        assert!(matches!(
            plan(&broken, &names(), t0(), &policy),
            Err(RotationError::KeyNotInBundle)
        ));
    }
}
