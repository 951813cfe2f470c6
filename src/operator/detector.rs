//! The in-memory state of failure detection. A leaf module: the context
//! holds one, failover detection and the health monitor use it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// What failure detection remembers between reconciles, shared by the
/// reconcile and the health monitor (`operations::failover::monitor`). In memory on purpose: after an
/// operator restart detection starts over, which only delays a failover,
/// never causes a wrong one.
#[derive(Debug, Default)]
pub struct Detector {
    /// When each shard's primary was first seen failed (`ns/cluster/shard`).
    pub(crate) suspect: Mutex<HashMap<String, Instant>>,
    /// Primaries (per shard epoch) whose lease was seen held at least once.
    pub(crate) lease_seen: Mutex<HashSet<String>>,
    /// When the monitor last woke the controller for a lost lease.
    pub(crate) lease_nudged: Mutex<HashMap<String, Instant>>,
    /// Members last seen refused by their primary as ahead of it
    /// (`ns/cluster/pod`): the Event goes out once per refusal, not per
    /// reconcile.
    pub(crate) refused_ahead: Mutex<HashSet<String>>,
}
