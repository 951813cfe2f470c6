//! Which bearer token an admin call carries.
//!
//! Each cluster has its own token (the operator's `<cluster>-internal`
//! Secret). The operator serves many clusters, and its calls name only an
//! address, so it records which token belongs to which node IP when it
//! observes a cluster's pods ([`bind_ips`]); a call to an address recorded
//! nowhere carries the process's default token: `TESSERA_ADMIN_TOKEN_FILE`
//! (the backup Job's mounted Secret), `TESSERA_ADMIN_TOKEN`, or one set with
//! [`set_default_token`] (tests, the CLI).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Environment variable naming the token file (as the node's flag).
pub const TOKEN_FILE_ENV: &str = "TESSERA_ADMIN_TOKEN_FILE";
/// Environment variable holding the token itself (local use).
pub const TOKEN_ENV: &str = "TESSERA_ADMIN_TOKEN";

#[derive(Default)]
struct Registry {
    /// `namespace/cluster` → token.
    clusters: HashMap<String, Arc<str>>,
    /// Node IP → `namespace/cluster`.
    ips: HashMap<IpAddr, String>,
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

/// Forgets a deleted cluster and the addresses bound to it.
pub fn forget_cluster(namespace: &str, cluster: &str) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        r.clusters.remove(&key);
        r.ips.retain(|_, c| *c != key);
    }
}

/// Binds node IPs to a cluster: calls to them carry its token. An IP moved
/// to another cluster's pod is rebound when that cluster is observed.
pub fn bind_ips(namespace: &str, cluster: &str, ips: impl IntoIterator<Item = IpAddr>) {
    let key = cluster_key(namespace, cluster);
    if let Ok(mut r) = registry().write() {
        for ip in ips {
            r.ips.insert(ip, key.clone());
        }
    }
}

/// The token a call to `ip` carries.
pub fn token_for(ip: IpAddr) -> Option<Arc<str>> {
    let bound = registry().read().ok().and_then(|r| {
        let key = r.ips.get(&ip)?;
        r.clusters.get(key).cloned()
    });
    bound.or_else(default_token)
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
    fn generated_tokens_are_64_hex_characters_and_differ() {
        let (x, y) = (generate_token(), generate_token());
        assert_eq!(x.len(), 64);
        assert!(x.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(x, y);
    }
}
