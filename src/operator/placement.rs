//! Where the members run: the Kubernetes Nodes under a cluster's pods, and
//! what the operator does about them.
//!
//! - A node that stops answering (NotReady / Unknown, or gone) keeps its pods
//!   `Running` or `Terminating` in the API, and a StatefulSet does not replace
//!   a pod until it is confirmed dead. Failover does not wait for any of that
//!   (it watches the nodes' own answers); what is left is the members
//!   stranded there, reported as `NodeLost` with what would release them.
//! - A node with the `node.kubernetes.io/out-of-service` taint, or whose Node
//!   object was deleted, is gone for good by its administrator's word: its
//!   members whose volume is bound to it are rebuilt elsewhere (claim and pod
//!   deleted; the StatefulSet makes both anew, the member resyncs from its
//!   primary). The operator never decides by itself that an unreachable node
//!   is dead — a cut-off node may still run its pods.
//! - A cordoned node (`kubectl drain` starts with a cordon) hosting a primary
//!   gets a planned switchover to a replica on a schedulable, ready node;
//!   the primaries' PodDisruptionBudget holds the eviction until then.
//!
//! Pure: [`Placement`] is read by `observe`, the decisions are functions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, Pod};
use kube::runtime::reflector::ObjectRef;

use super::topology::ObservedNode;
use crate::api::{DatabaseCluster, ShardStatus};

/// The taint an administrator puts on a node that is shut down for good
/// (Kubernetes' non-graceful node shutdown).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// What the operator needs to know about one Kubernetes Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// The Ready condition is True.
    pub ready: bool,
    /// Since when it is not (the condition's last transition), RFC 3339.
    pub not_ready_since: Option<String>,
    /// Cordoned (`spec.unschedulable`): being drained or in maintenance.
    pub unschedulable: bool,
    /// Tainted `node.kubernetes.io/out-of-service`.
    pub out_of_service: bool,
}

impl Host {
    pub fn from_node(n: &Node) -> Host {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        Host {
            ready: ready.is_some_and(|c| c.status == "True"),
            not_ready_since: ready
                .filter(|c| c.status != "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.to_string()),
            unschedulable: n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
            out_of_service: n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT)),
        }
    }

    /// Taken away for good by its administrator (or its Node deleted).
    fn gone(host: Option<&Host>) -> bool {
        host.is_none_or(|h| h.out_of_service)
    }
}

/// The cluster's pods' nodes: pod → node name, node name → state. A pod
/// not scheduled yet has no entry; a node missing from `hosts` was deleted.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub pod_host: BTreeMap<String, String>,
    pub hosts: BTreeMap<String, Host>,
}

impl Placement {
    /// From the cluster's member pods and every Node.
    pub fn new(pods: &[Pod], nodes: &[Node]) -> Placement {
        let pod_host: BTreeMap<String, String> = pods
            .iter()
            .filter_map(|p| {
                let host = p.spec.as_ref()?.node_name.clone()?;
                Some((p.metadata.name.clone()?, host))
            })
            .collect();
        let used: BTreeSet<&String> = pod_host.values().collect();
        let hosts = nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .filter(|(name, _)| used.contains(name))
            .map(|(name, n)| (name, Host::from_node(n)))
            .collect();
        Placement { pod_host, hosts }
    }

    pub fn host_of(&self, pod: &str) -> Option<(&str, Option<&Host>)> {
        let name = self.pod_host.get(pod)?;
        Some((name.as_str(), self.hosts.get(name)))
    }

    /// A member's node answers and takes pods (not cordoned, not lost).
    fn usable(&self, pod: &str) -> bool {
        matches!(self.host_of(pod), Some((_, Some(h))) if h.ready && !h.unschedulable && !h.out_of_service)
    }
}

/// Members stranded on nodes that do not answer (or are gone), by node.
pub fn lost_members(nodes: &[ObservedNode], p: &Placement) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        if let Some((host, state)) = p.host_of(&n.pod) {
            if state.is_none_or(|h| !h.ready) {
                out.entry(host.to_string()).or_default().push(n.pod.clone());
            }
        }
    }
    out
}

/// The `NodeLost` message: which members, on which node, since when, and
/// what releases them.
pub fn lost_message(lost: &BTreeMap<String, Vec<String>>, p: &Placement) -> Option<String> {
    if lost.is_empty() {
        return None;
    }
    let parts: Vec<String> = lost
        .iter()
        .map(|(host, pods)| {
            let state = match p.hosts.get(host) {
                None => "deleted".to_string(),
                Some(h) if h.out_of_service => "out of service".to_string(),
                Some(h) => match &h.not_ready_since {
                    Some(t) => format!("not ready since {t}"),
                    None => "not ready".to_string(),
                },
            };
            format!("{} on node {host} ({state})", pods.join(", "))
        })
        .collect();
    let waiting: Vec<&String> = lost
        .keys()
        .filter(|h| !Host::gone(p.hosts.get(*h)))
        .collect();
    let hint = match waiting.first() {
        Some(h) => format!(
            "; they rejoin when their node answers again. If {} is gone for good, run `kubectl taint nodes {h} {OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute` (or delete the Node) and the operator rebuilds them on other nodes from their primaries",
            if waiting.len() > 1 { "a node" } else { "it" }
        ),
        None => "; the operator rebuilds them on other nodes".to_string(),
    };
    Some(format!("unreachable: {}{hint}", parts.join("; ")))
}

/// A planned switchover for a drain: the first shard whose primary is on a
/// cordoned node and that has a ready replica on a usable node (the most
/// advanced such one). `<shard index>:<pod>`, the annotation's syntax.
pub fn drain_switchover(
    shards: &[ShardStatus],
    nodes: &[ObservedNode],
    p: &Placement,
) -> Option<String> {
    let info = |pod: &str| nodes.iter().find(|n| n.pod == pod);
    shards.iter().enumerate().find_map(|(i, s)| {
        let primary = s.primary.as_ref()?;
        let (_, host) = p.host_of(&primary.pod)?;
        if !host.is_some_and(|h| h.unschedulable && h.ready) {
            return None;
        }
        let target = s
            .replicas
            .iter()
            .filter(|r| p.usable(&r.pod))
            .filter_map(|r| {
                let n = info(&r.pod)?;
                let i = n.info.as_ref().filter(|i| i.ready && n.pod_ready)?;
                Some((i.lsn, &r.pod))
            })
            .max()?;
        Some(format!("{i}:{}", target.1))
    })
}

/// A member to rebuild on another node: its node is gone for good and its
/// volume cannot follow it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    pub pod: String,
    pub claim: String,
    pub host: String,
}

/// Members to rebuild: not the recorded primary of their shard (a failover
/// moves that first), on a node that is gone (out-of-service taint, or the
/// Node deleted), whose claim's volume is pinned to that node.
/// `pinned` maps a claim name to the node its volume is bound to.
pub fn rebuilds(
    shards: &[ShardStatus],
    members: &[(String, String)],
    p: &Placement,
    pinned: &BTreeMap<String, String>,
) -> Vec<Rebuild> {
    let primaries: BTreeSet<&str> = shards
        .iter()
        .filter_map(|s| s.primary.as_ref().map(|n| n.pod.as_str()))
        .collect();
    members
        .iter()
        .filter(|(pod, _)| !primaries.contains(pod.as_str()))
        .filter_map(|(pod, claim)| {
            let host = pinned.get(claim)?;
            // The pod may already be gone (the taint's pod GC) and its
            // replacement Pending on the pinned volume.
            if !Host::gone(p.hosts.get(host)) {
                return None;
            }
            Some(Rebuild {
                pod: pod.clone(),
                claim: claim.clone(),
                host: host.clone(),
            })
        })
        .collect()
}

/// The node a volume is bound to, from its required node affinity on
/// `kubernetes.io/hostname` (local volumes, local-path).
pub fn pinned_host(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_expressions
            .iter()
            .flatten()
            .chain(t.match_fields.iter().flatten())
            .find(|e| {
                (e.key == "kubernetes.io/hostname" || e.key == "metadata.name")
                    && e.operator == "In"
            })
            .and_then(|e| e.values.as_ref()?.first().cloned())
    })
}

/// Which clusters have members on which node, so a Node event reconciles
/// exactly those clusters (a cordon changes no pod).
#[derive(Default)]
pub struct HostIndex {
    by_host: Mutex<HashMap<String, HashSet<ObjectRef<DatabaseCluster>>>>,
}

impl HostIndex {
    /// Records the nodes cluster `r` runs on now.
    pub fn record(&self, r: ObjectRef<DatabaseCluster>, p: &Placement) {
        let hosts: HashSet<&String> = p.pod_host.values().collect();
        let mut g = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        for (host, set) in g.iter_mut() {
            if !hosts.contains(host) {
                set.remove(&r);
            }
        }
        for h in hosts {
            g.entry(h.clone()).or_default().insert(r.clone());
        }
        g.retain(|_, s| !s.is_empty());
    }

    pub fn clusters_on(&self, host: &str) -> Vec<ObjectRef<DatabaseCluster>> {
        let g = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        g.get(host)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;
    use crate::client::NodeInfo;

    fn host(ready: bool, unschedulable: bool, oos: bool) -> Host {
        Host {
            ready,
            not_ready_since: (!ready).then(|| "2026-12-06T09:31:00Z".into()),
            unschedulable,
            out_of_service: oos,
        }
    }

    fn member(pod: &str, lsn: u64, ready: bool) -> ObservedNode {
        ObservedNode {
            pod: pod.into(),
            shard: 0,
            ordinal: 0,
            ip: Some("198.18.0.9".into()),
            pod_ready: ready,
            info: Some(NodeInfo {
                node_id: "a".repeat(40),
                ready,
                lsn,
                ..Default::default()
            }),
            labels: BTreeMap::new(),
        }
    }

    fn status(pod: &str) -> NodeStatus {
        NodeStatus {
            pod: pod.into(),
            node_id: "a".repeat(40),
            ip: "198.18.0.9".into(),
            ready: true,
            lsn: None,
        }
    }

    fn shard(primary: &str, replicas: &[&str]) -> ShardStatus {
        ShardStatus {
            name: "c-0".into(),
            primary: Some(status(primary)),
            replicas: replicas.iter().map(|r| status(r)).collect(),
            ..Default::default()
        }
    }

    fn placement(pods: &[(&str, &str)], hosts: &[(&str, Host)]) -> Placement {
        Placement {
            pod_host: pods
                .iter()
                .map(|(p, h)| (p.to_string(), h.to_string()))
                .collect(),
            hosts: hosts
                .iter()
                .map(|(n, h)| (n.to_string(), h.clone()))
                .collect(),
        }
    }

    #[test]
    fn members_on_a_node_that_stopped_answering_are_lost_and_the_message_says_what_releases_them() {
        let p = placement(
            &[("c-0-0", "n1"), ("c-0-1", "n2"), ("c-0-2", "n3")],
            &[
                ("n1", host(true, false, false)),
                ("n2", host(false, false, false)),
            ],
        );
        let nodes = [
            member("c-0-0", 1, true),
            member("c-0-1", 1, false),
            member("c-0-2", 1, false),
        ];
        let lost = lost_members(&nodes, &p);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert_eq!(lost["n2"], vec!["c-0-1".to_string()]);
        // n3 has no Node object: deleted.
        assert_eq!(lost["n3"], vec!["c-0-2".to_string()]);
        let m = lost_message(&lost, &p).unwrap_or_default();
        assert!(
            m.contains("c-0-1 on node n2 (not ready since 2026-12-06T09:31:00Z)"),
            "{m}"
        );
        assert!(m.contains("c-0-2 on node n3 (deleted)"), "{m}");
        assert!(
            m.contains("kubectl taint nodes n2 node.kubernetes.io/out-of-service"),
            "{m}"
        );
        assert!(lost_message(&BTreeMap::new(), &p).is_none());
    }

    #[test]
    fn a_cordoned_primary_is_switched_to_the_most_advanced_ready_replica_on_a_usable_node() {
        let p = placement(
            &[
                ("c-0-0", "n1"),
                ("c-0-1", "n2"),
                ("c-0-2", "n3"),
                ("c-0-3", "n4"),
            ],
            &[
                ("n1", host(true, true, false)),
                ("n2", host(true, false, false)),
                ("n3", host(true, false, false)),
                ("n4", host(true, true, false)),
            ],
        );
        let shards = [shard("c-0-0", &["c-0-1", "c-0-2", "c-0-3"])];
        let nodes = [
            member("c-0-0", 10, true),
            member("c-0-1", 8, true),
            member("c-0-2", 9, true),
            // Further ahead, but on a cordoned node itself.
            member("c-0-3", 10, true),
        ];
        assert_eq!(
            drain_switchover(&shards, &nodes, &p),
            Some("0:c-0-2".into())
        );
        // Nothing cordoned under a primary: nothing to do.
        let calm = placement(
            &[("c-0-0", "n2"), ("c-0-1", "n2")],
            &[("n2", host(true, false, false))],
        );
        assert_eq!(drain_switchover(&shards, &nodes, &calm), None);
        // No ready replica elsewhere: the drain waits (the PDB holds it).
        let nodes = [
            member("c-0-0", 10, true),
            member("c-0-1", 8, false),
            member("c-0-2", 9, false),
        ];
        assert_eq!(drain_switchover(&shards, &nodes, &p), None);
    }

    #[test]
    fn only_replicas_pinned_to_a_node_gone_for_good_are_rebuilt() {
        let p = placement(
            &[("c-0-0", "n1"), ("c-0-1", "n2"), ("c-0-2", "n3")],
            &[
                ("n1", host(false, false, true)),
                ("n2", host(false, false, false)),
            ],
        );
        let members: Vec<(String, String)> = ["c-0-0", "c-0-1", "c-0-2", "c-0-3"]
            .iter()
            .map(|m| (m.to_string(), format!("data-{m}")))
            .collect();
        let pinned: BTreeMap<String, String> = [
            ("data-c-0-0", "n1"),
            ("data-c-0-1", "n2"),
            ("data-c-0-2", "n3"),
            ("data-c-0-3", "n1"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        // c-0-3 is the primary (a failover moved it... onto n1 in this
        // picture): never rebuilt. c-0-1's node is only unreachable.
        let shards = [shard("c-0-3", &["c-0-0", "c-0-1", "c-0-2"])];
        let r = rebuilds(&shards, &members, &p, &pinned);
        let pods: Vec<&str> = r.iter().map(|r| r.pod.as_str()).collect();
        assert_eq!(pods, vec!["c-0-0", "c-0-2"], "{r:?}");
        assert_eq!(r[1].host, "n3");
    }

    #[test]
    fn the_pinned_host_comes_from_the_volume_node_affinity() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}
            ]}}}
        }))
        .unwrap_or_default();
        assert_eq!(pinned_host(&pv), Some("n2".into()));
        assert_eq!(pinned_host(&PersistentVolume::default()), None);
    }
}
