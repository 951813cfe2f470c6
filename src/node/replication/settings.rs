//! Replication settings: the consistency mode and the acknowledgement rules
//! (node flags, overridden by a topology push).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::node::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Eventual,
    Quorum,
    Strong,
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "eventual" => Ok(Self::Eventual),
            "quorum" => Ok(Self::Quorum),
            "strong" => Ok(Self::Strong),
            _ => Err(format!(
                "unknown consistency {s:?} (eventual, quorum or strong)"
            )),
        }
    }
}

impl Consistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Eventual => "eventual",
            Self::Quorum => "quorum",
            Self::Strong => "strong",
        }
    }
}

/// Replication settings: node flags, overridden by the topology push.
#[derive(Debug, Clone)]
pub struct ReplConfig {
    pub consistency: Consistency,
    /// Replicas that must acknowledge in `quorum` (wins over the percentage).
    pub quorum_replicas: Option<usize>,
    /// Percentage of replicas that must acknowledge in `quorum`.
    pub quorum_percent: Option<u32>,
    /// Replicas the shard has (`--replicas`), when neither a topology nor
    /// a promotion named them.
    pub replicas: Option<usize>,
    pub lease_ms: u64,
    pub ack_timeout_ms: u64,
    /// A replica lagging more than this redirects READONLY reads.
    pub max_staleness_ms: Option<u64>,
    /// Bytes of recent log kept in memory for replicas.
    pub ring_bytes: usize,
}

impl Default for ReplConfig {
    fn default() -> Self {
        Self {
            consistency: Consistency::Eventual,
            quorum_replicas: None,
            quorum_percent: None,
            replicas: None,
            lease_ms: 2000,
            ack_timeout_ms: 5000,
            max_staleness_ms: None,
            ring_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Settings a topology push may carry per shard (optional, camelCase):
/// `consistency`, `quorumPercent`, `quorumReplicas`, `maxStalenessMs`,
/// `leaseMs`, `ackTimeoutMs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShardSettings {
    name: String,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    quorum_percent: Option<u32>,
    #[serde(default)]
    quorum_replicas: Option<usize>,
    #[serde(default)]
    max_staleness_ms: Option<u64>,
    #[serde(default)]
    lease_ms: Option<u64>,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct SettingsDoc {
    #[serde(default)]
    shards: Vec<ShardSettings>,
}

/// Applies the replication settings of this node's shard from a topology
/// document (they win over the node flags).
pub fn apply_settings_json(node: &Node, body: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<SettingsDoc>(body) else {
        return;
    };
    let mine = node.slot_map.borrow().my_shard().name.clone();
    let Some(s) = doc.shards.into_iter().find(|s| s.name == mine) else {
        return;
    };
    let mut cfg = node.repl.cfg.borrow_mut();
    if let Some(c) = s.consistency.as_deref().and_then(|c| c.parse().ok()) {
        cfg.consistency = c;
    }
    if s.quorum_percent.is_some() {
        cfg.quorum_percent = s.quorum_percent;
    }
    if s.quorum_replicas.is_some() {
        cfg.quorum_replicas = s.quorum_replicas;
    }
    if s.max_staleness_ms.is_some() {
        cfg.max_staleness_ms = s.max_staleness_ms;
    }
    if let Some(l) = s.lease_ms {
        cfg.lease_ms = l;
    }
    if let Some(t) = s.ack_timeout_ms {
        cfg.ack_timeout_ms = t;
    }
}
