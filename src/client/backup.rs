//! The backup's calls to nodes' admin ports: status, snapshots, log
//! segments, the archive hold.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;

use crate::backup::BackupError;

/// A node as `/v1/status` describes it (the fields the backup needs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: String,
    pub role: String,
    pub ready: bool,
    pub shard: String,
    pub shard_epoch: u64,
    pub lsn: u64,
    pub slots: Vec<(u16, u16)>,
    #[serde(default)]
    pub replication: ReplStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplStatus {
    #[serde(default)]
    pub link_up: bool,
}

/// `POST /v1/snapshot`'s answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDone {
    pub path: String,
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub keys: u64,
    pub bytes: u64,
    pub finished_at_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentList {
    pub node_id: String,
    pub role: String,
    pub shard: String,
    pub shard_epoch: u64,
    pub captured_at_ms: u64,
    /// The node keeps every record above this LSN (None: no backup yet).
    #[serde(default)]
    pub archive_hold: Option<u64>,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub name: String,
    pub first_lsn: u64,
    pub last_lsn: u64,
    pub closed: bool,
    pub bytes: u64,
}

/// A node's admin endpoint (`host:port` or `http://host:port`).
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub base: String,
    http: reqwest::Client,
}

impl NodeClient {
    pub fn new(addr: &str) -> Result<Self, BackupError> {
        crate::backup::init_crypto();
        // With a CA (TESSERA_ADMIN_CA_FILE: the cluster's TLS Secret in the
        // Job) the nodes are called over HTTPS and verified against it.
        let ca = super::auth::default_ca();
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else if ca.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        // Every call carries the cluster's admin token (the Job's mounted
        // Secret, TESSERA_ADMIN_TOKEN_FILE), read once per client.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = super::auth::default_token() {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| BackupError::NodeCall {
                    url: base.clone(),
                    reason: format!("the admin token is not a valid header value: {e}"),
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers);
        if let (Some(ca), true) = (&ca, base.starts_with("https://")) {
            let tls = super::admin_tls_config(ca).map_err(|reason| BackupError::NodeCall {
                url: base.clone(),
                reason: format!("the admin CA ({}): {reason}", super::auth::CA_FILE_ENV),
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder.build().map_err(|e| BackupError::NodeCall {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self { base, http })
    }

    fn err(&self, path: &str, reason: impl std::fmt::Display) -> BackupError {
        BackupError::NodeCall {
            url: format!("{}{path}", self.base),
            reason: reason.to_string(),
        }
    }

    async fn check(
        &self,
        path: &str,
        r: reqwest::Response,
    ) -> Result<reqwest::Response, BackupError> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        Err(self.err(path, format!("HTTP {status}: {}", body.trim())))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, BackupError> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.err(path, e))?;
        let r = self.check(path, r).await?;
        r.json().await.map_err(|e| self.err(path, e))
    }

    pub async fn status(&self) -> Result<NodeStatus, BackupError> {
        self.get_json("/v1/status").await
    }

    /// Takes a snapshot now (waiting for a running one to finish first),
    /// or, with `reuse_within_ms` > 0, gets the node's newest snapshot if
    /// it finished less than that long ago (the node checks it is still on
    /// disk with its log after it).
    pub async fn snapshot(&self, reuse_within_ms: u64) -> Result<SnapshotDone, BackupError> {
        let path = if reuse_within_ms > 0 {
            format!("/v1/snapshot?reuse_within_ms={reuse_within_ms}")
        } else {
            "/v1/snapshot".to_string()
        };
        let path = path.as_str();
        for _ in 0..600 {
            let r = self
                .http
                .post(format!("{}{path}", self.base))
                .send()
                .await
                .map_err(|e| self.err(path, e))?;
            if r.status() == reqwest::StatusCode::CONFLICT {
                // The node's own snapshot is running: ours must start after
                // it (it may have begun before the backup).
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let r = self.check(path, r).await?;
            return r.json().await.map_err(|e| self.err(path, e));
        }
        Err(self.err(path, "a snapshot kept running for 2 minutes"))
    }

    pub async fn segments(&self) -> Result<SegmentList, BackupError> {
        self.get_json("/v1/wal/segments").await
    }

    /// Streams a file: `/v1/backup/snapshot?name=…` or
    /// `/v1/wal/segments/<name>?bytes=N`.
    pub async fn stream(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin, BackupError> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.err(path, e))?;
        let r = self.check(path, r).await?;
        Ok(Box::pin(r.bytes_stream()))
    }

    /// Tells the node its log is archived through `lsn`: it may drop
    /// segments up to there, and must keep everything after.
    pub async fn archived(&self, lsn: u64) -> Result<(), BackupError> {
        let path = "/v1/wal/archived";
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&serde_json::json!({ "lsn": lsn }))
            .send()
            .await
            .map_err(|e| self.err(path, e))?;
        self.check(path, r).await?;
        Ok(())
    }
}
