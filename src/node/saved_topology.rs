//! The last topology a node installed, kept as pushed in
//! `<data-dir>/topology.json`.
//!
//! A node whose process restarts in place (same volume and address) serves
//! before the operator's next push: cluster clients and replicas come
//! straight back to it. Without its last topology it would claim all 16384
//! slots (the standalone map) and a client refreshing its slot map from it
//! would send it other shards' keys, acknowledged here and invisible where
//! they belong once the push arrives. With it, the node routes as it did
//! before the restart; the next push replaces it as any push does.

use std::path::Path;
use std::rc::Rc;

use tracing::{info, warn};

use super::slots::{SlotMap, Topology};
use super::Node;

const FILE: &str = "topology.json";

/// Writes the pushed document atomically: a restart finds the old
/// document or the new one.
pub fn save(dir: &Path, body: &[u8]) -> std::io::Result<()> {
    super::write_atomically(&dir.join(FILE), body)
}

/// At startup, before anything is served: installs the saved topology
/// (and the replication settings it carries). A missing file is a node
/// never told; an unreadable or foreign one is logged and skipped (the
/// operator's next push brings the topology).
pub fn restore(node: &Rc<Node>) {
    if !node.cfg.persistence || node.slot_map.borrow().topology.epoch > 0 {
        return;
    }
    let path = node.cfg.data_dir.join(FILE);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the saved topology is unreadable; waiting for a push");
            return;
        }
    };
    let map = serde_json::from_slice::<Topology>(&body)
        .map_err(|e| e.to_string())
        .and_then(|t| SlotMap::build(as_announced(t, node), &node.id).map_err(|e| e.to_string()));
    let map = match map {
        Ok(m) if m.topology.epoch > 0 => m,
        Ok(_) => return,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the saved topology is not usable; waiting for a push");
            return;
        }
    };
    info!(epoch = map.topology.epoch, shard = %map.my_shard().name, "restored the last topology");
    node.forwarder.on_topology(&map.topology, &node.id);
    *node.slot_map.borrow_mut() = map;
    super::replication::apply_settings_json(node, &body);
}

/// The saved topology with this node's own entries at the address it
/// announces now: a pod recreated on its volume has a new IP, and clients
/// asking it for the slot map must be sent to that one.
fn as_announced(mut t: Topology, node: &Node) -> Topology {
    let me = node.me();
    for shard in &mut t.shards {
        for n in std::iter::once(&mut shard.primary).chain(shard.replicas.iter_mut()) {
            if n.id == me.id {
                *n = me.clone();
            }
        }
    }
    t
}
