//! Slot assignment, primary choice and the versioned topology.
//!
//! The decision is a pure function of the previous status (the authority)
//! and what the nodes report; pushing it is separate. A new topology epoch
//! is chosen above both the recorded epoch and any epoch a node reports, so
//! an operator that died between pushing and recording still converges.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::api::{DatabaseClusterStatus, NodeStatus, ShardStatus, SLOTS};
use crate::client::{NodeAddr, NodeInfo, ShardTopology, Topology};

use super::build::REDIS_PORT;
use super::operations::reshard::plan::{self as reshard_plan, Move};
use super::validate::shard_name;

/// One pod of the cluster as observed in this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNode {
    pub pod: String,
    pub shard: u32,
    pub ordinal: u32,
    pub ip: Option<String>,
    /// The pod's Ready condition.
    pub pod_ready: bool,
    /// What the node's admin port answered (None: not reachable).
    pub info: Option<NodeInfo>,
    /// The pod's current labels (to move the role label).
    pub labels: BTreeMap<String, String>,
}

impl ObservedNode {
    fn known(&self) -> Option<(&str, &NodeInfo)> {
        match (&self.ip, &self.info) {
            (Some(ip), Some(info)) if !info.node_id.is_empty() => Some((ip.as_str(), info)),
            _ => None,
        }
    }

    fn as_status(&self) -> Option<NodeStatus> {
        let (ip, info) = self.known()?;
        Some(NodeStatus {
            pod: self.pod.clone(),
            node_id: info.node_id.clone(),
            ip: ip.to_string(),
            ready: self.pod_ready && info.ready,
            lsn: Some(info.lsn),
        })
    }
}

/// Inclusive slot ranges of `shards` shards, split as evenly as possible
/// (the same split `redis-cli --cluster create` makes).
pub fn slot_ranges(shards: u32) -> Vec<(u16, u16)> {
    let n = shards.clamp(1, SLOTS);
    let per = SLOTS as f64 / n as f64;
    let mut out = Vec::with_capacity(n as usize);
    let (mut first, mut cursor) = (0u32, 0f64);
    for i in 0..n {
        let mut last = (cursor + per - 1.0).round() as u32;
        if last > SLOTS - 1 || i == n - 1 {
            last = SLOTS - 1;
        }
        out.push((first as u16, last as u16));
        first = last + 1;
        cursor += per;
    }
    out
}

pub fn format_range((a, b): (u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

pub fn parse_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let v = s.trim().parse().ok()?;
            Some((v, v))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not every node is up yet; nothing to push.
    Wait {
        waiting_for: usize,
        desired: usize,
    },
    Plan(Plan),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub epoch: u64,
    pub shards: Vec<ShardStatus>,
    /// The membership differs from the recorded one (a new epoch).
    pub changed: bool,
    /// The first topology of this cluster.
    pub bootstrap: bool,
}

fn identity(n: &NodeStatus) -> (&str, &str, &str) {
    (n.pod.as_str(), n.node_id.as_str(), n.ip.as_str())
}

fn same_membership(a: &[ShardStatus], b: &[ShardStatus]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.slots == y.slots
                && x.epoch == y.epoch
                && x.primary.as_ref().map(identity) == y.primary.as_ref().map(identity)
                && x.replicas.len() == y.replicas.len()
                && x.replicas
                    .iter()
                    .zip(&y.replicas)
                    .all(|(r, s)| identity(r) == identity(s))
        })
}

/// Changes decided outside the planner: the slot ownership changes a
/// resharding makes, and the members that left.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes<'a> {
    /// Moves whose slots go to their target now.
    pub flips: &'a [Move],
    /// Shards in a move: kept even when they own no slot any more.
    pub busy: &'a [u32],
    /// Replicas that have not answered for the failure-detection window:
    /// they leave the topology (and the acknowledgement rule's `n` with
    /// them), so a lost member does not hold a `k = n` shard's writes; one
    /// that answers again is a member again.
    pub departed: &'a [String],
}

/// Decides the topology for `shards` × `replicas` from the last recorded
/// status and the observed nodes.
pub fn plan(
    cluster: &str,
    prev: &DatabaseClusterStatus,
    nodes: &[ObservedNode],
    shards: u32,
    replicas: u32,
) -> Decision {
    plan_with(cluster, prev, nodes, shards, replicas, &Changes::default())
}

/// [`plan`] with a resharding's changes: flipped slots change owner; shards
/// beyond `shards` leave once they own nothing and no move involves them
/// (from the end, so a shard's index stays its number); new shards join,
/// owning nothing yet, once all their nodes answer.
pub fn plan_with(
    cluster: &str,
    prev: &DatabaseClusterStatus,
    nodes: &[ObservedNode],
    shards: u32,
    replicas: u32,
    changes: &Changes<'_>,
) -> Decision {
    let by_pod: BTreeMap<&str, &ObservedNode> = nodes.iter().map(|n| (n.pod.as_str(), n)).collect();
    let max_node_epoch = nodes
        .iter()
        .filter_map(|n| n.known().map(|(_, i)| i.epoch))
        .max()
        .unwrap_or(0);
    let pod_name = |shard: u32, ordinal: u32| format!("{}-{ordinal}", shard_name(cluster, shard));

    let bootstrapped = prev.epoch > 0 && !prev.shards.is_empty();
    if !bootstrapped {
        let desired = (shards * replicas) as usize;
        let up = (0..shards)
            .flat_map(|s| (0..replicas).map(move |o| (s, o)))
            .filter(|&(s, o)| {
                by_pod
                    .get(pod_name(s, o).as_str())
                    .and_then(|n| n.known())
                    .is_some()
            })
            .count();
        if up < desired {
            return Decision::Wait {
                waiting_for: desired - up,
                desired,
            };
        }
        let ranges = bootstrap_slots(prev, shards);
        let shards_status = (0..shards)
            .map(|s| {
                let members: Vec<NodeStatus> = (0..replicas)
                    .filter_map(|o| {
                        by_pod
                            .get(pod_name(s, o).as_str())
                            .and_then(|n| n.as_status())
                    })
                    .collect();
                let mut it = members.into_iter();
                ShardStatus {
                    name: shard_name(cluster, s),
                    slots: ranges[s as usize].clone(),
                    epoch: 1,
                    primary: it.next(),
                    replicas: it.collect(),
                    ..Default::default()
                }
            })
            .collect();
        return Decision::Plan(Plan {
            epoch: prev.epoch.max(max_node_epoch) + 1,
            shards: shards_status,
            changed: true,
            bootstrap: true,
        });
    }

    let mut next = Vec::with_capacity(prev.shards.len());
    for (s, old) in prev.shards.iter().enumerate() {
        let s = s as u32;
        let mut shard = old.clone();
        // The primary stays where it is (failover is a separate decision);
        // only its address and identity are refreshed.
        let primary_pod = old
            .primary
            .as_ref()
            .map(|p| p.pod.clone())
            .unwrap_or_else(|| pod_name(s, 0));
        let refreshed = by_pod.get(primary_pod.as_str()).and_then(|n| n.as_status());
        shard.primary = match (refreshed, &old.primary) {
            (Some(new), Some(old_p)) => {
                if new.node_id != old_p.node_id {
                    // A different node answers under the primary's name (its
                    // volume was replaced): a new fencing token.
                    shard.epoch += 1;
                }
                Some(new)
            }
            (Some(new), None) => {
                shard.epoch += 1;
                Some(new)
            }
            (None, Some(old_p)) => Some(NodeStatus {
                ready: false,
                ..old_p.clone()
            }),
            (None, None) => None,
        };
        shard.replicas = (0..replicas)
            .map(|o| pod_name(s, o))
            .filter(|p| *p != primary_pod)
            .filter(|p| !changes.departed.contains(p))
            .filter_map(|p| {
                by_pod
                    .get(p.as_str())
                    .and_then(|n| n.as_status())
                    .or_else(|| {
                        old.replicas
                            .iter()
                            .find(|r| r.pod == p)
                            .map(|r| NodeStatus {
                                ready: false,
                                ..r.clone()
                            })
                    })
            })
            .collect();
        next.push(shard);
    }
    reshape(&mut next, shards, changes);
    for s in prev.shards.len() as u32..shards {
        let members: Vec<NodeStatus> = (0..replicas)
            .filter_map(|o| {
                by_pod
                    .get(pod_name(s, o).as_str())
                    .and_then(|n| n.as_status())
            })
            .collect();
        if members.len() < replicas as usize || next.len() as u32 != s {
            break;
        }
        let mut it = members.into_iter();
        next.push(ShardStatus {
            name: shard_name(cluster, s),
            slots: Vec::new(),
            epoch: 1,
            primary: it.next(),
            replicas: it.collect(),
            ..Default::default()
        });
    }
    let changed = !same_membership(&prev.shards, &next);
    let epoch = if changed || max_node_epoch > prev.epoch {
        prev.epoch.max(max_node_epoch) + 1
    } else {
        prev.epoch
    };
    Decision::Plan(Plan {
        epoch,
        shards: next,
        changed,
        bootstrap: false,
    })
}

/// The first topology's slots: a restored backup's layout when it lists
/// one per shard (a backup of a resharded cluster is not evenly split),
/// else the even split.
fn bootstrap_slots(prev: &DatabaseClusterStatus, shards: u32) -> Vec<Vec<String>> {
    let restored = prev
        .restore
        .as_ref()
        .map(|r| r.shard_slots.clone())
        .filter(|s| s.len() == shards as usize && s.iter().all(|r| !r.is_empty()));
    match restored {
        Some(s) => s
            .iter()
            .map(|r| r.split(',').map(str::to_string).collect())
            .collect(),
        None => slot_ranges(shards)
            .into_iter()
            .map(|r| vec![format_range(r)])
            .collect(),
    }
}

/// Applies the flips to `next` and drops empty, idle shards beyond
/// `shards` from the end.
fn reshape(next: &mut Vec<ShardStatus>, shards: u32, changes: &Changes<'_>) {
    if !changes.flips.is_empty() {
        let slots: Vec<Vec<String>> = next.iter().map(|s| s.slots.clone()).collect();
        let mut owned = reshard_plan::parse_owned(&slots);
        for f in changes.flips {
            reshard_plan::apply(&mut owned, f);
        }
        for (shard, r) in next.iter_mut().zip(owned) {
            shard.slots = reshard_plan::format_ranges(&r);
        }
    }
    while let Some(last) = next.last() {
        let i = next.len() as u32 - 1;
        if i < shards || !last.slots.is_empty() || changes.busy.contains(&i) {
            break;
        }
        next.pop();
    }
}

fn addr(n: &NodeStatus) -> NodeAddr {
    NodeAddr {
        id: n.node_id.clone(),
        host: n.ip.clone(),
        port: REDIS_PORT as u16,
        tls_port: None,
    }
}

/// The document pushed to every node.
pub fn to_topology(epoch: u64, shards: &[ShardStatus]) -> Topology {
    Topology {
        epoch,
        shards: shards
            .iter()
            .filter_map(|s| {
                let primary = s.primary.as_ref()?;
                Some(ShardTopology {
                    name: s.name.clone(),
                    slots: s.slots.iter().filter_map(|r| parse_range(r)).collect(),
                    primary: addr(primary),
                    replicas: s.replicas.iter().map(addr).collect(),
                    epoch: s.epoch,
                })
            })
            .collect(),
    }
}

/// Role of a pod in the topology: `Some("primary" | "replica")` for members.
pub fn role_of(shards: &[ShardStatus], pod: &str) -> Option<&'static str> {
    for s in shards {
        if s.primary.as_ref().is_some_and(|p| p.pod == pod) {
            return Some("primary");
        }
        if s.replicas.iter().any(|r| r.pod == pod) {
            return Some("replica");
        }
    }
    None
}

/// Admin address of a member node.
pub fn admin_addr(ip: &str) -> Option<SocketAddr> {
    let ip: IpAddr = ip.parse().ok()?;
    Some(SocketAddr::new(ip, crate::client::ADMIN_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(shard: u32, ordinal: u32, epoch: u64) -> ObservedNode {
        ObservedNode {
            pod: format!("c-shard-{shard}-{ordinal}"),
            shard,
            ordinal,
            ip: Some(format!("198.18.{shard}.{}", ordinal + 10)),
            pod_ready: true,
            info: Some(NodeInfo {
                node_id: format!("{:040x}", shard * 100 + ordinal + 1),
                role: "primary".into(),
                ready: true,
                epoch,
                shard: String::new(),
                lsn: 0,
                durable_lsn: 0,
                keys: 0,
                ..Default::default()
            }),
            labels: BTreeMap::new(),
        }
    }

    fn all(shards: u32, replicas: u32, epoch: u64) -> Vec<ObservedNode> {
        (0..shards)
            .flat_map(|s| (0..replicas).map(move |o| node(s, o, epoch)))
            .collect()
    }

    fn plan_of(d: Decision) -> Plan {
        match d {
            Decision::Plan(p) => p,
            Decision::Wait { .. } => panic!("expected a plan"),
        }
    }

    #[test]
    fn slots_cover_everything_evenly() {
        for n in [1u32, 2, 3, 4, 7, 16384] {
            let r = slot_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[r.len() - 1].1, 16383);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
            let sizes: Vec<u32> = r.iter().map(|&(a, b)| (b - a) as u32 + 1).collect();
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1);
        }
        assert_eq!(
            slot_ranges(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
        assert_eq!(parse_range("5461-10922"), Some((5461, 10922)));
        assert_eq!(parse_range("7"), Some((7, 7)));
    }

    #[test]
    fn bootstrap_waits_for_every_node() {
        let mut nodes = all(3, 3, 0);
        nodes[4].info = None;
        let d = plan("c", &DatabaseClusterStatus::default(), &nodes, 3, 3);
        assert_eq!(
            d,
            Decision::Wait {
                waiting_for: 1,
                desired: 9
            }
        );
    }

    #[test]
    fn bootstrap_picks_ordinal_zero_and_epoch_one() {
        let p = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(3, 3, 0),
            3,
            3,
        ));
        assert!(p.bootstrap && p.changed);
        assert_eq!(p.epoch, 1);
        assert_eq!(
            p.shards[1].primary.as_ref().map(|n| n.pod.as_str()),
            Some("c-shard-1-0")
        );
        assert_eq!(p.shards[1].replicas.len(), 2);
        assert_eq!(p.shards[2].slots, vec!["10923-16383"]);
        let t = to_topology(p.epoch, &p.shards);
        assert_eq!(t.shards.len(), 3);
        assert_eq!(t.shards[0].slots, vec![(0, 5460)]);
        assert_eq!(role_of(&p.shards, "c-shard-0-2"), Some("replica"));
        assert_eq!(role_of(&p.shards, "c-shard-0-0"), Some("primary"));
        assert_eq!(role_of(&p.shards, "c-shard-0-9"), None);
    }

    fn recorded(p: &Plan) -> DatabaseClusterStatus {
        DatabaseClusterStatus {
            epoch: p.epoch,
            shards: p.shards.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn steady_state_keeps_the_epoch() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(2, 2, 0),
            2,
            2,
        ));
        let again = plan_of(plan("c", &recorded(&first), &all(2, 2, 1), 2, 2));
        assert!(!again.changed);
        assert_eq!(again.epoch, 1);
    }

    #[test]
    fn a_departed_replica_leaves_the_topology_and_comes_back_when_it_answers() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(1, 3, 0),
            1,
            3,
        ));
        let mut nodes = all(1, 3, 1);
        let gone = nodes[2].pod.clone();
        nodes[2].info = None;
        // Silent, but not yet for the window: kept (not ready).
        let kept = plan_of(plan("c", &recorded(&first), &nodes, 1, 3));
        assert_eq!(kept.shards[0].replicas.len(), 2);
        let departed = [gone.clone()];
        let changes = Changes {
            departed: &departed,
            ..Default::default()
        };
        let left = plan_of(plan_with("c", &recorded(&kept), &nodes, 1, 3, &changes));
        assert!(left.changed && left.epoch > kept.epoch);
        assert_eq!(left.shards[0].replicas.len(), 1);
        assert!(left.shards[0].replicas.iter().all(|r| r.pod != gone));
        // Answering again (so no longer departed): a member again.
        let back = plan_of(plan("c", &recorded(&left), &all(1, 3, left.epoch), 1, 3));
        assert!(back.shards[0].replicas.iter().any(|r| r.pod == gone));
    }

    #[test]
    fn new_pod_ip_bumps_the_epoch_but_not_the_shard_epoch() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(2, 2, 0),
            2,
            2,
        ));
        let mut nodes = all(2, 2, 1);
        nodes[0].ip = Some("198.18.9.9".into());
        if let Some(i) = nodes[0].info.as_mut() {
            i.epoch = 0;
        }
        let p = plan_of(plan("c", &recorded(&first), &nodes, 2, 2));
        assert!(p.changed);
        assert_eq!(p.epoch, 2);
        assert_eq!(p.shards[0].epoch, 1);
        assert_eq!(
            p.shards[0].primary.as_ref().map(|n| n.ip.as_str()),
            Some("198.18.9.9")
        );
    }

    #[test]
    fn a_node_ahead_of_the_status_forces_a_higher_epoch() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(1, 2, 0),
            1,
            2,
        ));
        // The operator pushed epoch 5 and died before recording it.
        let p = plan_of(plan("c", &recorded(&first), &all(1, 2, 5), 1, 2));
        assert_eq!(p.epoch, 6);
    }

    #[test]
    fn scaling_replicas_keeps_the_primary() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(1, 3, 0),
            1,
            3,
        ));
        let down = plan_of(plan("c", &recorded(&first), &all(1, 2, 1), 1, 2));
        assert!(down.changed);
        assert_eq!(down.shards[0].replicas.len(), 1);
        assert_eq!(
            down.shards[0].primary.as_ref().map(|n| n.pod.as_str()),
            Some("c-shard-0-0")
        );
        // Scaling up: the new pod joins once it answers.
        let mut nodes = all(1, 3, 2);
        nodes[2].info = None;
        let waiting = plan_of(plan("c", &recorded(&down), &nodes, 1, 3));
        assert!(!waiting.changed);
        let up = plan_of(plan("c", &recorded(&down), &all(1, 3, 2), 1, 3));
        assert!(up.changed);
        assert_eq!(up.shards[0].replicas.len(), 2);
    }

    #[test]
    fn an_unreachable_member_stays_in_the_topology() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(1, 3, 0),
            1,
            3,
        ));
        let mut nodes = all(1, 3, 1);
        nodes[1].info = None;
        nodes[0].info = None;
        let p = plan_of(plan("c", &recorded(&first), &nodes, 1, 3));
        assert!(!p.changed);
        assert_eq!(p.shards[0].replicas.len(), 2);
        assert!(!p.shards[0].primary.as_ref().is_some_and(|n| n.ready));
    }

    #[test]
    fn resharding_adds_flips_and_drops_shards_in_the_recorded_topology() {
        let first = plan_of(plan(
            "c",
            &DatabaseClusterStatus::default(),
            &all(3, 2, 0),
            3,
            2,
        ));
        // 3 → 4: the new shard joins owning nothing once its nodes answer.
        let mut nodes = all(4, 2, 1);
        nodes[7].info = None;
        let waiting = plan_of(plan("c", &recorded(&first), &nodes, 4, 2));
        assert_eq!(waiting.shards.len(), 3);
        let grown = plan_of(plan("c", &recorded(&first), &all(4, 2, 1), 4, 2));
        assert!(grown.changed);
        assert_eq!(grown.shards.len(), 4);
        assert!(grown.shards[3].slots.is_empty());
        assert_eq!(
            grown.shards[3].primary.as_ref().map(|n| n.pod.as_str()),
            Some("c-shard-3-0")
        );
        // A flip moves the slots in the same record, with a new epoch.
        let flip = Move {
            source: 2,
            target: 3,
            slots: vec![(15019, 16383)],
        };
        let flipped = plan_of(plan_with(
            "c",
            &recorded(&grown),
            &all(4, 2, grown.epoch),
            4,
            2,
            &Changes {
                flips: std::slice::from_ref(&flip),
                busy: &[2, 3],
                ..Default::default()
            },
        ));
        assert!(flipped.changed && flipped.epoch > grown.epoch);
        assert_eq!(flipped.shards[2].slots, vec!["10923-15018"]);
        assert_eq!(flipped.shards[3].slots, vec!["15019-16383"]);
        // 4 → 3 after shard 3 was drained back: it leaves unless busy.
        let back = Move {
            source: 3,
            target: 2,
            slots: vec![(15019, 16383)],
        };
        let busy = plan_of(plan_with(
            "c",
            &recorded(&flipped),
            &all(4, 2, flipped.epoch),
            3,
            2,
            &Changes {
                flips: std::slice::from_ref(&back),
                busy: &[3],
                ..Default::default()
            },
        ));
        assert_eq!(busy.shards.len(), 4);
        let gone = plan_of(plan("c", &recorded(&busy), &all(4, 2, busy.epoch), 3, 2));
        assert_eq!(gone.shards.len(), 3);
        assert_eq!(gone.shards[2].slots, vec!["10923-16383"]);
        // A shard still owning slots never leaves.
        let kept = plan_of(plan("c", &recorded(&flipped), &all(4, 2, 9), 3, 2));
        assert_eq!(kept.shards.len(), 4);
    }
}
