//! A small client for a node's admin HTTP port: status and topology push.
//!
//! Plain HTTP/1.1 over one short-lived TCP connection per call: the operator
//! makes a handful of calls per reconcile, so a pooled client buys nothing,
//! and every call is bounded by a timeout so one dead pod cannot stall a
//! reconcile.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    /// Highest shard epoch the node has seen (its fencing token).
    #[serde(default)]
    pub fencing_epoch: u64,
    #[serde(default)]
    pub uptime_seconds: u64,
    #[serde(default)]
    pub replication: ReplicationInfo,
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

    async fn call(
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

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    let mut sock = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let io = |source| ClientError::Io { addr, source };
    sock.write_all(head.as_bytes()).await.map_err(io)?;
    sock.write_all(body).await.map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    (&mut sock)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(io)?;
    let (status, payload) = parse_response(&buf).ok_or(ClientError::Malformed { addr })?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Status {
            addr,
            status,
            body: String::from_utf8_lossy(&payload).trim().to_string(),
        });
    }
    Ok(payload)
}

/// Splits an HTTP/1.1 response read to EOF into status and body, undoing
/// chunked transfer encoding when the server used it.
fn parse_response(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &buf[end + 4..];
    if !chunked {
        return Some((status, raw.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let nl = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&rest[..nl]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Some((status, out));
        }
        if rest.len() < size {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, b"ok".to_vec())));
        let chunked =
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((409, b"abcde".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
    }
}
