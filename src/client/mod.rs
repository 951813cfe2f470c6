//! The client of a node's admin HTTP port, for the operator (status,
//! topology push, role calls: [`NodeClient`]) and for backups (snapshots,
//! log segments, the archive hold: [`backup::NodeClient`]).
//!
//! Both go over reqwest. The operator's calls use one short-lived
//! connection each: the operator makes a handful of calls per reconcile, so
//! a pooled client buys nothing, and every call is bounded by a timeout so
//! one dead pod cannot stall a reconcile.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

pub mod auth;
pub mod backup;
pub mod migration;

pub use crate::node::slots::{NodeAddr, ShardTopology, Topology};

/// Default admin port of a node.
pub const ADMIN_PORT: u16 = 9121;
/// Largest response accepted (a status or a topology echo).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr} sent a malformed HTTP response")]
    Malformed { addr: SocketAddr },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("decoding the answer of {addr}: {source}")]
    Decode {
        addr: SocketAddr,
        source: serde_json::Error,
    },
    #[error("HTTPS to {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
}

impl ClientError {
    /// True when the node refused a topology older than the one it has.
    pub fn is_stale_epoch(&self) -> bool {
        matches!(self, ClientError::Status { status: 409, .. })
    }
}

/// The part of a node's `/v1/status` the operator uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub node_id: String,
    pub role: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub shard: String,
    #[serde(default)]
    pub lsn: u64,
    #[serde(default)]
    pub durable_lsn: u64,
    #[serde(default)]
    pub keys: u64,
    /// Bytes the node's data takes, and its limit (0: none).
    #[serde(default)]
    pub used_memory: u64,
    /// `used_memory` less the replicas' log ring (absent from older nodes).
    #[serde(default)]
    pub used_memory_dataset: Option<u64>,
    #[serde(default)]
    pub maxmemory: u64,
    /// Commands per second over the last second or two.
    #[serde(default)]
    pub ops_per_sec: f64,
    /// The slot with most keyed commands lately, when there were enough.
    #[serde(default)]
    pub hot_slot: Option<HotSlot>,
    /// Highest shard epoch the node has seen (its fencing token).
    #[serde(default)]
    pub fencing_epoch: u64,
    #[serde(default)]
    pub uptime_seconds: u64,
    #[serde(default)]
    pub replication: ReplicationInfo,
}

/// A node's busiest slot over its last window.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HotSlot {
    pub slot: u16,
    /// Its share of the node's keyed commands (0–1).
    pub share: f64,
    #[serde(default)]
    pub ops_per_sec: f64,
}

/// The part of `/v1/status`'s `replication` object failover reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationInfo {
    #[serde(default)]
    pub consistency: String,
    #[serde(default)]
    pub required_acks: usize,
    #[serde(default)]
    pub replicas_expected: usize,
    #[serde(default)]
    pub lease_ms: u64,
    #[serde(default)]
    pub lease_held: bool,
    #[serde(default)]
    pub link_up: bool,
    /// On a replica: milliseconds since it was last caught up with its
    /// primary (by the primary's heartbeats).
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// On a replica: milliseconds since the last heartbeat from its primary
    /// (bounds how long that primary's lease from this replica can last).
    #[serde(default)]
    pub heartbeat_age_ms: Option<u64>,
    /// A full resync is under way: the node's data is a partial copy.
    #[serde(default)]
    pub resyncing: bool,
    /// The epoch of the record at `lsn` (absent from nodes that predate it:
    /// see [`NodeInfo::last_record_epoch`]).
    #[serde(default)]
    pub last_record_epoch: Option<u64>,
    /// The node's epoch history: `(epoch, LSN after which its records start)`.
    #[serde(default)]
    pub history: Vec<(u64, u64)>,
    /// On a replica: `idle`, `connecting`, `up`, `down` or `refusedAhead`.
    #[serde(default)]
    pub link_state: String,
    /// Why the primary refuses to feed this replica (e.g. `AHEAD …`).
    #[serde(default)]
    pub follow_error: Option<String>,
}

impl NodeInfo {
    /// The epoch of the node's last record. A node that predates
    /// `lastRecordEpoch` gets it from its epoch history by the node's own
    /// rule (every replicating node reports one), so mixed versions during
    /// a rolling update still compare alike; no history at all gives 0.
    pub fn last_record_epoch(&self) -> u64 {
        self.replication.last_record_epoch.unwrap_or_else(|| {
            crate::node::replication::epoch_at(&self.replication.history, self.lsn)
        })
    }
}

#[derive(Debug, Clone)]
pub struct NodeClient {
    pub timeout: Duration,
}

impl Default for NodeClient {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
        }
    }
}

impl NodeClient {
    pub async fn status(&self, addr: SocketAddr) -> Result<NodeInfo, ClientError> {
        let body = self.call(addr, "GET", "/v1/status", None).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { addr, source })
    }

    pub async fn put_topology(
        &self,
        addr: SocketAddr,
        topology: &Topology,
    ) -> Result<(), ClientError> {
        let body =
            serde_json::to_vec(topology).map_err(|source| ClientError::Decode { addr, source })?;
        self.call(addr, "PUT", "/v1/topology", Some(&body)).await?;
        Ok(())
    }

    /// `POST /v1/fence`: records `epoch`; a primary stops being one.
    pub async fn fence(&self, addr: SocketAddr, epoch: u64) -> Result<NodeInfo, ClientError> {
        self.role_call(addr, "/v1/fence", serde_json::json!({ "epoch": epoch }))
            .await
    }

    /// `POST /v1/promote`: becomes the primary at `epoch`.
    pub async fn promote(
        &self,
        addr: SocketAddr,
        epoch: u64,
        replicas: usize,
    ) -> Result<NodeInfo, ClientError> {
        self.role_call(
            addr,
            "/v1/promote",
            serde_json::json!({ "epoch": epoch, "replicas": replicas }),
        )
        .await
    }

    /// `POST /v1/follow`: becomes a replica of `primary` at `epoch`.
    pub async fn follow(
        &self,
        addr: SocketAddr,
        epoch: u64,
        primary: &NodeAddr,
    ) -> Result<NodeInfo, ClientError> {
        self.role_call(
            addr,
            "/v1/follow",
            serde_json::json!({ "epoch": epoch, "primary": primary }),
        )
        .await
    }

    async fn role_call(
        &self,
        addr: SocketAddr,
        path: &str,
        body: serde_json::Value,
    ) -> Result<NodeInfo, ClientError> {
        let body = body.to_string();
        let answer = self.call(addr, "POST", path, Some(body.as_bytes())).await?;
        serde_json::from_slice(&answer).map_err(|source| ClientError::Decode { addr, source })
    }

    pub(crate) async fn call(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, exchange(addr, method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { addr, timeout }),
        }
    }
}

/// The HTTP client every plaintext admin call goes through (reqwest, as
/// the backup's calls in [`backup`] use): no connection is kept between
/// calls (each call is its own connection, as the operator makes only a
/// handful) and no proxy (nodes are reached directly).
fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        crate::backup::init_crypto();
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("building the admin HTTP client")
    })
}

/// The rustls configuration of HTTPS admin calls: the node's certificate
/// must chain to `ca_pem` (a bundle: during a CA rotation it holds the old
/// CA and the new). Names are not checked: nodes are reached by pod IP,
/// which their certificate cannot name, and holding a certificate of the
/// cluster's CA is what makes a node one of the cluster's.
pub fn admin_tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, String> {
    crate::backup::init_crypto();
    let verifier =
        crate::node::tls::CaOnlyVerifier::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    crate::node::tls::client_config(verifier, None).map_err(|e| e.to_string())
}

/// The HTTPS client for nodes of the CA `ca_pem` (built once per CA
/// bundle; a renewed bundle gets a new client).
fn https(addr: SocketAddr, ca_pem: &std::sync::Arc<str>) -> Result<reqwest::Client, ClientError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static CLIENTS: OnceLock<Mutex<HashMap<Arc<str>, reqwest::Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(c) = clients.lock().ok().and_then(|m| m.get(ca_pem).cloned()) {
        return Ok(c);
    }
    let tls = admin_tls_config(ca_pem).map_err(|reason| ClientError::Tls { addr, reason })?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| ClientError::Tls {
            addr,
            reason: e.to_string(),
        })?;
    if let Ok(mut m) = clients.lock() {
        // Old bundles are dropped wholesale: a handful of clusters, and a
        // bundle changes only on a CA rotation.
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(ca_pem.clone(), client.clone());
    }
    Ok(client)
}

/// The I/O error under a reqwest error (connection refused, reset…), or the
/// error itself as one.
fn io_error(e: reqwest::Error) -> std::io::Error {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return std::io::Error::new(io.kind(), io.to_string());
        }
        source = s.source();
    }
    std::io::Error::other(e)
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| ClientError::Malformed { addr })?;
    let body = body.unwrap_or_default().to_vec();
    let target = auth::target_for(addr.ip());
    let (client, scheme) = match &target.scheme {
        auth::AdminScheme::Http => (http().clone(), "http"),
        auth::AdminScheme::Https(ca) => (https(addr, ca)?, "https"),
        auth::AdminScheme::HttpsWithoutCa => {
            return Err(ClientError::Tls {
                addr,
                reason: "the node's admin port speaks HTTPS and its cluster's CA is not known"
                    .into(),
            })
        }
    };
    let mut req = client
        .request(method, format!("{scheme}://{addr}{path}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(token) = target.token {
        req = req.bearer_auth(token);
    }
    let mut r = req.body(body).send().await.map_err(|e| {
        if e.is_connect() {
            ClientError::Connect {
                addr,
                source: io_error(e),
            }
        } else {
            ClientError::Io {
                addr,
                source: io_error(e),
            }
        }
    })?;
    let status = r.status().as_u16();
    let mut payload = Vec::with_capacity(4096);
    while let Some(chunk) = r.chunk().await.map_err(|e| ClientError::Io {
        addr,
        source: io_error(e),
    })? {
        let room = MAX_RESPONSE - payload.len();
        payload.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if payload.len() >= MAX_RESPONSE {
            break;
        }
    }
    if !(200..300).contains(&status) {
        return Err(ClientError::Status {
            addr,
            status,
            body: String::from_utf8_lossy(&payload).trim().to_string(),
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request on a local port with `response`.
    async fn one_answer(response: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            sock.write_all(response).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn reads_plain_and_chunked_responses() {
        let c = NodeClient::default();
        let plain =
            one_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        assert_eq!(
            c.call(plain, "GET", "/v1/status", None).await.unwrap(),
            b"ok"
        );
        let chunked = one_answer(
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let err = c
            .call(chunked, "PUT", "/v1/topology", Some(b"{}"))
            .await
            .unwrap_err();
        assert!(err.is_stale_epoch());
        assert_eq!(err.to_string(), format!("{chunked} answered 409: abcde"));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = NodeClient::default().status(addr).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("connecting to {addr}: ")),
            "{err}"
        );
    }
}
