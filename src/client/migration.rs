//! The operator's calls to a node's slot-migration API (docs/migration.md):
//! start a move on the source primary, read its progress, change its
//! throughput limit, cancel it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ClientError, NodeAddr, NodeClient};

/// Body of `POST /v1/migrations`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMigration {
    pub id: String,
    pub slots: Vec<(u16, u16)>,
    pub target: NodeAddr,
    pub max_bytes_per_sec: u64,
    pub write_pause_timeout_ms: u64,
}

/// An outgoing migration as the source reports it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outgoing {
    pub id: String,
    pub phase: String,
    /// `a-b,c` as the node formats ranges.
    #[serde(default)]
    pub slots: String,
    #[serde(default)]
    pub keys_sent: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub lag_bytes: u64,
    #[serde(default)]
    pub write_pause_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[serde(default)]
    pub max_bytes_per_sec: u64,
}

/// An incoming migration as the target reports it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incoming {
    pub id: String,
    pub phase: String,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct List {
    #[serde(default)]
    outgoing: Vec<Outgoing>,
    #[serde(default)]
    incoming: Vec<Incoming>,
}

/// What a node knows of one migration id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    pub outgoing: Option<Outgoing>,
    pub incoming: Option<Incoming>,
}

impl NodeClient {
    /// Starts a migration on the source primary. A migration with the same
    /// id that already exists there (a start whose answer was lost) is
    /// returned as if just started.
    pub async fn start_migration(
        &self,
        addr: SocketAddr,
        call: &StartMigration,
    ) -> Result<Outgoing, ClientError> {
        let body =
            serde_json::to_vec(call).map_err(|source| ClientError::Decode { addr, source })?;
        match self.call(addr, "POST", "/v1/migrations", Some(&body)).await {
            Ok(answer) => serde_json::from_slice(&answer)
                .map_err(|source| ClientError::Decode { addr, source }),
            Err(ClientError::Status { status: 409, .. })
                if self.migration(addr, &call.id).await?.outgoing.is_some() =>
            {
                self.migration(addr, &call.id)
                    .await?
                    .outgoing
                    .ok_or(ClientError::Malformed { addr })
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/migrations/{id}`; an unknown id is `Known::default()`.
    pub async fn migration(&self, addr: SocketAddr, id: &str) -> Result<Known, ClientError> {
        let path = format!("/v1/migrations/{id}");
        match self.call(addr, "GET", &path, None).await {
            Ok(answer) => {
                let l: List = serde_json::from_slice(&answer)
                    .map_err(|source| ClientError::Decode { addr, source })?;
                Ok(Known {
                    outgoing: l.outgoing.into_iter().next(),
                    incoming: l.incoming.into_iter().next(),
                })
            }
            Err(ClientError::Status { status: 404, .. }) => Ok(Known::default()),
            Err(e) => Err(e),
        }
    }

    /// Changes a running migration's throughput limit.
    pub async fn set_migration_rate(
        &self,
        addr: SocketAddr,
        id: &str,
        max_bytes_per_sec: u64,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "maxBytesPerSec": max_bytes_per_sec }).to_string();
        let path = format!("/v1/migrations/{id}");
        self.call(addr, "PATCH", &path, Some(body.as_bytes()))
            .await
            .map(|_| ())
    }

    /// Cancels a migration (on the source: it aborts at the target and
    /// keeps its data; on the target: the staging is dropped). Unknown or
    /// already finished ids are not an error.
    pub async fn cancel_migration(&self, addr: SocketAddr, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/migrations/{id}/cancel");
        match self.call(addr, "POST", &path, None).await {
            Ok(_) | Err(ClientError::Status { status: 404, .. }) => Ok(()),
            Err(ClientError::Status { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
