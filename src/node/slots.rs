//! Hash slots (Redis Cluster's 16384), CRC16-XMODEM, `{hash tags}` and the
//! topology the operator pushes.
//!
//! Nodes never gossip: the slot map, the primary of every shard and the epoch
//! come from one versioned [`Topology`] document. A node refuses a topology
//! whose epoch is older than the newest it has seen.

use serde::{Deserialize, Serialize};

/// Number of hash slots, fixed by the Redis Cluster protocol clients speak.
pub const SLOTS: usize = 16384;

/// CRC16-XMODEM (poly 0x1021, init 0), the checksum Redis Cluster uses.
const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC16: [u16; 256] = crc16_table();

pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc = (crc << 8) ^ CRC16[(((crc >> 8) as u8) ^ b) as usize];
    }
    crc
}

/// The part of a key that is hashed: the content of the first `{...}` when it
/// is non-empty, otherwise the whole key (Redis Cluster's hash tag rule).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// One node as the topology names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddr {
    /// 40 hex characters, as CLUSTER MYID prints.
    pub id: String,
    /// Address clients use (a pod IP or a host name).
    pub host: String,
    pub port: u16,
    /// The node's TLS client port, when it has one: links of TLS clusters
    /// (replication, migration) go there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
}

/// A shard: a primary, its replicas, and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardTopology {
    pub name: String,
    /// Inclusive ranges `[start, end]`.
    pub slots: Vec<(u16, u16)>,
    pub primary: NodeAddr,
    #[serde(default)]
    pub replicas: Vec<NodeAddr>,
    /// The shard's fencing token; only ever grows.
    #[serde(default)]
    pub epoch: u64,
}

/// The whole cluster layout, pushed by the operator to every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// Version of the document; a node refuses one older than what it has.
    pub epoch: u64,
    pub shards: Vec<ShardTopology>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("topology epoch {offered} is older than the current epoch {current}")]
    StaleEpoch { offered: u64, current: u64 },
    #[error("slot range {start}-{end} is invalid (slots are 0-16383, start <= end)")]
    InvalidRange { start: u16, end: u16 },
    #[error("slot {slot} is assigned to both shard {first} and shard {second}")]
    SlotAssignedTwice {
        slot: u16,
        first: String,
        second: String,
    },
    #[error("this node ({id}) is not part of the topology")]
    NotAMember { id: String },
    #[error("{0}")]
    Migration(String),
    #[error("failed to record the topology on disk: {0}")]
    Persist(String),
}

/// Where a slot lives, from this node's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOwner {
    /// Served by this node's shard.
    Local,
    /// Served by another shard (index into `Topology::shards`).
    Remote(usize),
    /// Nobody serves it.
    Unassigned,
}

const UNASSIGNED: u16 = u16::MAX;

/// A topology plus the per-slot index derived from it.
#[derive(Debug, Clone)]
pub struct SlotMap {
    pub topology: Topology,
    /// Index of this node's shard in `topology.shards`.
    pub my_shard: usize,
    owner: Vec<u16>,
}

impl SlotMap {
    /// A standalone node: one shard, this node its primary, every slot.
    pub fn standalone(me: NodeAddr) -> Self {
        let topology = Topology {
            epoch: 0,
            shards: vec![ShardTopology {
                name: "standalone".into(),
                slots: vec![(0, (SLOTS - 1) as u16)],
                primary: me.clone(),
                replicas: vec![],
                epoch: 0,
            }],
        };
        Self::build(topology, &me.id).expect("a standalone topology is always valid")
    }

    /// Validates a topology and indexes it for `my_id`.
    pub fn build(topology: Topology, my_id: &str) -> Result<Self, TopologyError> {
        let mut owner = vec![UNASSIGNED; SLOTS];
        let mut my_shard = None;
        for (i, shard) in topology.shards.iter().enumerate() {
            if shard.primary.id == my_id || shard.replicas.iter().any(|r| r.id == my_id) {
                my_shard = Some(i);
            }
            for &(start, end) in &shard.slots {
                if start > end || end as usize >= SLOTS {
                    return Err(TopologyError::InvalidRange { start, end });
                }
                for slot in start..=end {
                    let cur = owner[slot as usize];
                    if cur != UNASSIGNED {
                        return Err(TopologyError::SlotAssignedTwice {
                            slot,
                            first: topology.shards[cur as usize].name.clone(),
                            second: shard.name.clone(),
                        });
                    }
                    owner[slot as usize] = i as u16;
                }
            }
        }
        let my_shard = my_shard.ok_or_else(|| TopologyError::NotAMember {
            id: my_id.to_string(),
        })?;
        Ok(Self {
            topology,
            my_shard,
            owner,
        })
    }

    pub fn owner(&self, slot: u16) -> SlotOwner {
        match self.owner[slot as usize] {
            UNASSIGNED => SlotOwner::Unassigned,
            s if s as usize == self.my_shard => SlotOwner::Local,
            s => SlotOwner::Remote(s as usize),
        }
    }

    pub fn my_shard(&self) -> &ShardTopology {
        &self.topology.shards[self.my_shard]
    }

    /// Number of slots with an owner.
    pub fn assigned_slots(&self) -> usize {
        self.owner.iter().filter(|&&o| o != UNASSIGNED).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis_reference_vector() {
        // The reference value from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn key_slots_match_redis() {
        // Values printed by `redis-cli cluster keyslot` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
    }

    fn node(id: &str) -> NodeAddr {
        NodeAddr {
            id: id.into(),
            host: "127.0.0.1".into(),
            port: 7000,
            tls_port: None,
        }
    }

    #[test]
    fn build_rejects_overlap_and_indexes_owner() {
        let t = Topology {
            epoch: 3,
            shards: vec![
                ShardTopology {
                    name: "a".into(),
                    slots: vec![(0, 100)],
                    primary: node("a"),
                    replicas: vec![node("a2")],
                    epoch: 1,
                },
                ShardTopology {
                    name: "b".into(),
                    slots: vec![(100, 200)],
                    primary: node("b"),
                    replicas: vec![],
                    epoch: 1,
                },
            ],
        };
        let err = SlotMap::build(t.clone(), "a").unwrap_err();
        assert_eq!(
            err,
            TopologyError::SlotAssignedTwice {
                slot: 100,
                first: "a".into(),
                second: "b".into()
            }
        );
        let mut ok = t;
        ok.shards[1].slots = vec![(101, 200)];
        let map = SlotMap::build(ok, "a2").unwrap();
        assert_eq!(map.owner(5), SlotOwner::Local);
        assert_eq!(map.owner(150), SlotOwner::Remote(1));
        assert_eq!(map.owner(201), SlotOwner::Unassigned);
        assert_eq!(map.assigned_slots(), 201);
    }
}
