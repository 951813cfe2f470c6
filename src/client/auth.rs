//! Which bearer token an admin call carries, and whether it goes over
//! HTTPS verified against which CA.
//!
//! Each cluster has its own token (the operator's `<cluster>-internal`
//! Secret) and, with TLS, its own CA (`ca.crt` of its TLS Secret). The
//! operator serves many clusters, and its calls name only an address, so it
//! records which cluster a node IP belongs to when it observes a cluster's
//! pods ([`bind_ips`], [`bind_https_ips`]); a call to an address recorded
//! nowhere carries the process's defaults: the token from
//! `TESSERA_ADMIN_TOKEN_FILE` (the backup Job's mounted Secret),
//! `TESSERA_ADMIN_TOKEN`, or [`set_default_token`] (tests, the CLI), and
//! HTTPS when a CA is given by `TESSERA_ADMIN_CA_FILE` or [`set_default_ca`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Environment variable naming the token file (as the node's flag).
pub const TOKEN_FILE_ENV: &str = "TESSERA_ADMIN_TOKEN_FILE";
/// Environment variable holding the token itself (local use).
pub const TOKEN_ENV: &str = "TESSERA_ADMIN_TOKEN";
/// Environment variable naming the CA file (PEM) that nodes' admin
/// certificates must chain to: set, calls go over HTTPS.
pub const CA_FILE_ENV: &str = "TESSERA_ADMIN_CA_FILE";

#[derive(Default)]
struct Registry {
    /// `namespace/cluster` → token.
    clusters: HashMap<String, Arc<str>>,
    /// `namespace/cluster` → CA bundle (PEM) its nodes' certificates chain to.
    cas: HashMap<String, Arc<str>>,
    /// Node IP → `namespace/cluster`.
    ips: HashMap<IpAddr, String>,
    /// Node IPs whose admin port speaks HTTPS (the pod runs `--tls-admin`).
    https: std::collections::HashSet<IpAddr>,
}

fn registry() -> &'static RwLock<Registry> {
    static R: OnceLock<RwLock<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn default_slot() -> &'static Mutex<Option<Arc<str>>> {
    static D: OnceLock<Mutex<Option<Arc<str>>>> = OnceLock::new();
    D.get_or_init(Default::default)
}

/// Sets (or clears) the token sent to addresses no cluster claims.
pub fn set_default_token(token: Option<String>) {
    if let Ok(mut d) = default_slot().lock() {
        *d = token.map(Arc::from);
    }
}

/// The default token: set explicitly, else from the environment (the file
/// is read on every call, so a rotated Secret is picked up).
pub fn default_token() -> Option<Arc<str>> {
    if let Some(t) = default_slot().lock().ok().and_then(|d| d.clone()) {
        return Some(t);
    }
    if let Some(path) = std::env::var_os(TOKEN_FILE_ENV) {
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let t = s.trim_end_matches(['\r', '\n']);
                if !t.is_empty() {
                    return Some(Arc::from(t));
                }
            }
            Err(e) => {
                tracing::warn!(path = ?path, error = %e, "admin token file unreadable")
            }
        }
    }
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Arc::from)
}

fn cluster_key(namespace: &str, cluster: &str) -> String {
    format!("{namespace}/{cluster}")
}

/// Records a cluster's token (the operator, after reading its Secret).
pub fn set_cluster_token(namespace: &str, cluster: &str, token: &str) {
    if let Ok(mut r) = registry().write() {
        r.clusters
            .insert(cluster_key(namespace, cluster), Arc::from(token));
    }
}

/// Records (or, with None, forgets) the CA bundle a cluster's node
/// certificates chain to (the operator, from the cluster's TLS Secret).
pub fn set_cluster_ca(namespace: &str, cluster: &str, ca_pem: Option<&str>) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        match ca_pem {
            Some(ca) => r.cas.insert(key, Arc::from(ca)),
            None => r.cas.remove(&key),
        };
    }
}

/// Forgets a deleted cluster and the addresses bound to it.
pub fn forget_cluster(namespace: &str, cluster: &str) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        r.clusters.remove(&key);
        r.cas.remove(&key);
        let Registry { ips, https, .. } = &mut *r;
        ips.retain(|ip, c| {
            let keep = *c != key;
            if !keep {
                https.remove(ip);
            }
            keep
        });
    }
}

/// Binds node IPs to a cluster: calls to them carry its token. An IP moved
/// to another cluster's pod is rebound when that cluster is observed.
pub fn bind_ips(namespace: &str, cluster: &str, ips: impl IntoIterator<Item = IpAddr>) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        for ip in ips {
            r.ips.insert(ip, key.clone());
            r.https.remove(&ip);
        }
    }
}

/// As [`bind_ips`], for pods whose admin port speaks HTTPS: calls to them
/// go over HTTPS, verified against the cluster's CA (and fail while the
/// operator knows no CA for it, rather than fall back to plaintext).
pub fn bind_https_ips(namespace: &str, cluster: &str, ips: impl IntoIterator<Item = IpAddr>) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        for ip in ips {
            r.ips.insert(ip, key.clone());
            r.https.insert(ip);
        }
    }
}

/// How a call to a node's admin port is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub token: Option<Arc<str>>,
    pub scheme: AdminScheme,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AdminScheme {
    #[default]
    Http,
    /// HTTPS, the node's certificate verified against this CA bundle (PEM).
    Https(Arc<str>),
    /// HTTPS is required but no CA is known: the call must not be made.
    HttpsWithoutCa,
}

/// Where and how a call to `ip` goes.
pub fn target_for(ip: IpAddr) -> Target {
    let bound = registry().read().ok().and_then(|r| {
        let key = r.ips.get(&ip)?;
        let scheme = if r.https.contains(&ip) {
            r.cas
                .get(key)
                .map(|ca| AdminScheme::Https(ca.clone()))
                .unwrap_or(AdminScheme::HttpsWithoutCa)
        } else {
            AdminScheme::Http
        };
        Some((r.clusters.get(key).cloned(), scheme))
    });
    match bound {
        Some((token, scheme)) => Target {
            token: token.or_else(default_token),
            scheme,
        },
        None => Target {
            token: default_token(),
            scheme: default_ca()
                .map(AdminScheme::Https)
                .unwrap_or(AdminScheme::Http),
        },
    }
}

fn default_ca_slot() -> &'static Mutex<Option<Arc<str>>> {
    static D: OnceLock<Mutex<Option<Arc<str>>>> = OnceLock::new();
    D.get_or_init(Default::default)
}

/// Sets (or clears) the CA for addresses no cluster claims: calls to them
/// go over HTTPS when one is set.
pub fn set_default_ca(ca_pem: Option<String>) {
    if let Ok(mut d) = default_ca_slot().lock() {
        *d = ca_pem.map(Arc::from);
    }
}

/// The default CA: set explicitly, else the file `TESSERA_ADMIN_CA_FILE`
/// names (read on every call: a renewed bundle is picked up).
pub fn default_ca() -> Option<Arc<str>> {
    if let Some(c) = default_ca_slot().lock().ok().and_then(|d| d.clone()) {
        return Some(c);
    }
    let path = std::env::var_os(CA_FILE_ENV)?;
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Some(Arc::from(s)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(path = ?path, error = %e, "admin CA file unreadable");
            None
        }
    }
}

/// The token a call to `ip` carries.
pub fn token_for(ip: IpAddr) -> Option<Arc<str>> {
    target_for(ip).token
}

/// A fresh random token: 32 bytes from the OS generator, hex-encoded.
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_ip_gets_its_clusters_token_and_others_the_default() {
        let a: IpAddr = "198.18.7.1".parse().unwrap();
        let b: IpAddr = "198.18.7.2".parse().unwrap();
        set_cluster_token("ns1", "one", "token-one");
        set_cluster_token("ns2", "two", "token-two");
        bind_ips("ns1", "one", [a]);
        bind_ips("ns2", "two", [b]);
        assert_eq!(token_for(a).as_deref(), Some("token-one"));
        assert_eq!(token_for(b).as_deref(), Some("token-two"));
        // The IP reused by the other cluster's pod.
        bind_ips("ns2", "two", [a]);
        assert_eq!(token_for(a).as_deref(), Some("token-two"));
        forget_cluster("ns2", "two");
        assert_eq!(token_for(a), default_token());
    }

    #[test]
    fn https_pods_get_their_clusters_ca_and_never_plaintext() {
        let a: IpAddr = "198.18.8.1".parse().unwrap();
        let b: IpAddr = "198.18.8.2".parse().unwrap();
        set_cluster_token("ns3", "three", "token-three");
        bind_https_ips("ns3", "three", [a]);
        bind_ips("ns3", "three", [b]);
        // No CA known yet: the call is not to be made in the clear.
        assert_eq!(target_for(a).scheme, AdminScheme::HttpsWithoutCa);
        set_cluster_ca("ns3", "three", Some("CA-PEM"));
        assert_eq!(
            target_for(a).scheme,
            AdminScheme::Https(Arc::from("CA-PEM"))
        );
        assert_eq!(target_for(a).token.as_deref(), Some("token-three"));
        // A pod that does not run HTTPS admin (yet: a rolling update).
        assert_eq!(target_for(b).scheme, AdminScheme::Http);
        // Rebound as plain (the pod was replaced by one without HTTPS).
        bind_ips("ns3", "three", [a]);
        assert_eq!(target_for(a).scheme, AdminScheme::Http);
        forget_cluster("ns3", "three");
        assert_eq!(target_for(b).token, default_token());
    }

    #[test]
    fn generated_tokens_are_64_hex_characters_and_differ() {
        let (x, y) = (generate_token(), generate_token());
        assert_eq!(x.len(), 64);
        assert!(x.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(x, y);
    }
}
