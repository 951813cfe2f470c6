//! The status a reconcile records once the children are applied: the
//! topology decided, the phase, `ready`, the conditions. Pure: everything
//! comes from the previous status and what was observed.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::autoscale;
use super::backups;
use super::build::LABEL_CLUSTER;
use super::operations::reshard;
use super::operations::restore;
use super::placement::{self, Placement};
use super::status::{with_conditions, Cond, DEGRADED, HOT_SLOT, PROGRESSING, READY, RESHARDING};
use super::topology::{self, Decision, ObservedNode};
use super::validate::ValidatedCluster;
use crate::api::{BackupStatus, DatabaseClusterStatus, ReshardingStatus};

/// What [`summarize`] decided.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The status to record.
    pub next: DatabaseClusterStatus,
    /// Bootstrapped, every desired node ready, none extra, every push done.
    pub all_ready: bool,
    /// The phase message (the `Ready` Event's note).
    pub message: String,
    /// The topology epoch moves: record with the version precondition.
    pub topology_changed: bool,
}

/// Phase, reason and message of a cluster.
fn phase(
    v: &ValidatedCluster,
    nodes: &[ObservedNode],
    decision: &Decision,
    epoch: u64,
    pushes_pending: usize,
    lost: Option<&str>,
    in_topology: usize,
) -> (&'static str, &'static str, String) {
    let desired = (v.shards * v.replicas) as usize;
    let ready = ready_nodes(v, nodes);
    let extra = nodes.iter().filter(|n| n.ordinal >= v.replicas).count();
    let bootstrapped = epoch > 0;
    // A member out of the topology (departed, not back yet) is not ready
    // for the cluster even when its pod is: the short requeue brings it
    // back as soon as it answers.
    let all_ready = bootstrapped
        && ready == desired
        && extra == 0
        && pushes_pending == 0
        && in_topology >= desired;
    if !bootstrapped {
        return match decision {
            Decision::Wait {
                waiting_for,
                desired,
            } => (
                "Creating",
                "WaitingForNodes",
                format!(
                    "{} of {desired} nodes are up; the topology is assigned once all are",
                    desired - waiting_for
                ),
            ),
            Decision::Plan(_) => (
                "Bootstrapping",
                "AssigningSlots",
                "assigning slots and primaries".to_string(),
            ),
        };
    }
    if all_ready {
        return (
            "Ready",
            "AllNodesReady",
            format!("{ready}/{desired} nodes ready, topology epoch {epoch}"),
        );
    }
    // Members on a node that stopped answering: nothing here brings them
    // back; the message says what does.
    if let Some(why) = lost {
        return (
            "Degraded",
            "NodeLost",
            format!("{ready}/{desired} nodes ready; {why}"),
        );
    }
    let present = nodes.iter().filter(|n| n.ordinal < v.replicas).count();
    if extra > 0 || ready < desired && present < desired {
        (
            "Scaling",
            "ScalingReplicas",
            format!("{ready}/{desired} nodes ready"),
        )
    } else if pushes_pending > 0 {
        (
            "Updating",
            "PushingTopology",
            format!("topology epoch {epoch} reaching {pushes_pending} node(s)"),
        )
    } else if ready == desired && in_topology < desired {
        (
            "Degraded",
            "MembersOutOfTopology",
            format!(
                "{ready}/{desired} nodes ready, {in_topology} in the topology (a member that stopped answering rejoins once it answers)"
            ),
        )
    } else {
        (
            "Degraded",
            "NodesNotReady",
            format!("{ready}/{desired} nodes ready"),
        )
    }
}

fn ready_nodes(v: &ValidatedCluster, nodes: &[ObservedNode]) -> usize {
    nodes
        .iter()
        .filter(|n| n.shard < v.shards && n.ordinal < v.replicas && n.pod_ready)
        .count()
}

/// What a reconcile that applied the children knows.
pub struct Inputs<'a> {
    pub prev: &'a DatabaseClusterStatus,
    pub v: &'a ValidatedCluster,
    pub nodes: &'a [ObservedNode],
    pub decision: &'a Decision,
    /// `status.backup` with the finished backup Jobs folded in.
    pub backup: Option<BackupStatus>,
    /// A restore that completed in this reconcile.
    pub restored: Option<&'a restore::Outcome>,
    /// `status.resharding` after this reconcile's resharding step (None:
    /// no step, the recorded one stays).
    pub resharding: Option<ReshardingStatus>,
    /// The autoscaler's decision (with `spec.autoscaling`).
    pub autoscaling: Option<&'a autoscale::Outcome>,
    /// The Kubernetes Nodes under the members.
    pub placement: &'a Placement,
    pub generation: i64,
}

/// The status to record after a reconcile that applied the children.
pub fn summarize(inputs: Inputs<'_>, now: Time) -> Summary {
    let Inputs {
        prev,
        v,
        nodes,
        decision,
        backup,
        restored,
        resharding,
        autoscaling,
        placement,
        generation,
    } = inputs;
    let lost = placement::lost_members(nodes, placement);
    let lost_pods: BTreeSet<&str> = lost.values().flatten().map(String::as_str).collect();
    let mut next = prev.clone();
    next.backup = backup;
    if resharding.is_some() {
        next.resharding = resharding;
    }
    next.autoscaling = autoscaling.map(|a| a.status.clone());
    next.selector = Some(format!("{}={}", LABEL_CLUSTER, v.name));
    if let Some(o) = restored {
        next.restore = Some(o.status.clone());
    }
    let mut pushes_pending = 0usize;
    let mut topology_changed = false;
    if let Decision::Plan(p) = decision {
        topology_changed = p.epoch != prev.epoch;
        next.epoch = p.epoch;
        next.shards = p.shards.clone();
        pushes_pending = nodes
            .iter()
            .filter(|n| topology::role_of(&p.shards, &n.pod).is_some())
            .filter(|n| n.info.as_ref().is_none_or(|i| i.epoch != p.epoch))
            // A member on a lost node gets the topology when it is back.
            .filter(|n| !lost_pods.contains(n.pod.as_str()))
            .count();
    }
    next.shard_count = Some(next.shards.len() as i32);
    let desired = (v.shards * v.replicas) as usize;
    let ready = ready_nodes(v, nodes);
    next.ready = Some(format!("{ready}/{desired}"));
    let lost_message = placement::lost_message(&lost, placement);
    let (phase, reason, message) = phase(
        v,
        nodes,
        decision,
        next.epoch,
        pushes_pending,
        lost_message.as_deref(),
        next.shards
            .iter()
            .map(|s| usize::from(s.primary.is_some()) + s.replicas.len())
            .sum(),
    );
    // A resharding in progress: serving, but not as specified yet.
    let running = next.resharding.as_ref().filter(|r| reshard::is_running(r));
    let (phase, reason, message) = match (phase, running) {
        ("Ready", Some(r)) => ("Resharding", "Resharding", resharding_message(r)),
        (p, _) => (p, reason, message),
    };
    let all_ready = phase == "Ready";
    // A refused change leaves the cluster serving but not as specified.
    let refused_scale_in = next
        .resharding
        .as_ref()
        .filter(|r| r.phase == reshard::REFUSED)
        .map(|r| r.last_error.clone().unwrap_or_default());
    let (phase, reason, message) = match (phase, v.refusals.first(), refused_scale_in) {
        ("Ready", Some(r), _) => ("Degraded", r.reason, r.message.clone()),
        ("Ready", None, Some(why)) => ("Degraded", "ScaleInRefused", why),
        (p, _, _) => (p, reason, message),
    };
    next.phase = Some(phase.into());
    next.reason = Some(reason.into());
    next.message = Some(message.clone());
    let mut conds = vec![
        Cond::new(READY, all_ready, reason, message.clone()),
        Cond::new(
            PROGRESSING,
            !all_ready && phase != "Degraded",
            reason,
            message.clone(),
        ),
    ];
    match v.refusals.first() {
        Some(r) => conds.push(Cond::new(DEGRADED, true, r.reason, r.message.clone())),
        None if phase == "Degraded" => {
            conds.push(Cond::new(DEGRADED, true, reason, message.clone()))
        }
        None => conds.push(Cond::new(DEGRADED, false, "AsExpected", "")),
    }
    if let Some(r) = &next.resharding {
        conds.push(resharding_condition(r));
        if r.phase == reshard::REFUSED && v.refusals.is_empty() {
            let why = r.last_error.clone().unwrap_or_default();
            conds.retain(|c| c.type_ != DEGRADED);
            conds.push(Cond::new(DEGRADED, true, "ScaleInRefused", why));
        }
    }
    if let Some(a) = autoscaling {
        conds.push(match a.hot {
            Some((shard, slot, share)) => Cond::new(
                HOT_SLOT,
                true,
                "HotSlot",
                format!(
                    "slot {slot} carries {:.0}% of shard {shard}'s commands: more shards cannot spread one slot; spread its keys (hash tags) or scale the shard up",
                    share * 100.0
                ),
            ),
            None => Cond::new(HOT_SLOT, false, "NoHotSlot", ""),
        });
    }
    conds.extend(backups::condition(next.backup.as_ref()));
    if let Some(o) = restored {
        conds.push(o.cond.clone());
    }
    Summary {
        next: with_conditions(prev, next, generation, &conds, now),
        all_ready,
        message,
        topology_changed,
    }
}

fn resharding_message(r: &ReshardingStatus) -> String {
    let mut m = format!(
        "resharding {} → {} shards ({}): {}/{} slots moved",
        r.from, r.to, r.phase, r.slots_moved, r.slots_total
    );
    if let Some(eta) = r.eta_seconds {
        m.push_str(&format!(", about {eta} s left"));
    }
    for mv in &r.moves {
        m.push_str(&format!(
            "; move {} shard {} → {} {} ({})",
            mv.id,
            mv.source,
            mv.target,
            mv.slots.join(","),
            mv.phase
        ));
    }
    m
}

/// `Resharding`: True while slots move; False with why it stopped.
fn resharding_condition(r: &ReshardingStatus) -> Cond {
    match r.phase.as_str() {
        reshard::COMPLETED => Cond::new(
            RESHARDING,
            false,
            "Completed",
            format!(
                "{} → {} shards: {} slots moved",
                r.from, r.to, r.slots_moved
            ),
        ),
        reshard::CANCELLED => Cond::new(
            RESHARDING,
            false,
            "Cancelled",
            format!("shards set back to {} before anything moved", r.from),
        ),
        reshard::REFUSED => Cond::new(
            RESHARDING,
            false,
            "ScaleInRefused",
            r.last_error.clone().unwrap_or_default(),
        ),
        phase => Cond::new(RESHARDING, true, phase.to_string(), resharding_message(r)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{DatabaseCluster, DatabaseClusterSpec};
    use crate::operator::validate::{validate, Existing};

    fn cluster() -> ValidatedCluster {
        let spec: DatabaseClusterSpec =
            serde_json::from_str(r#"{"shards":1,"replicas":2}"#).expect("spec");
        let mut d = DatabaseCluster::new("c", spec);
        d.metadata.namespace = Some("ns".into());
        d.metadata.uid = Some("u-1".into());
        validate(&d, "tessera:test", &Existing::default()).expect("valid")
    }

    fn node(ordinal: u32, ready: bool) -> ObservedNode {
        ObservedNode {
            pod: format!("c-shard-0-{ordinal}"),
            shard: 0,
            ordinal,
            ip: None,
            pod_ready: ready,
            info: None,
            labels: BTreeMap::new(),
        }
    }

    fn member(pod: &str) -> crate::api::NodeStatus {
        crate::api::NodeStatus {
            pod: pod.into(),
            node_id: "a".repeat(40),
            ip: "198.18.0.9".into(),
            ready: true,
            lsn: None,
        }
    }

    /// A recorded topology of shard 0 with `replicas` of its replica.
    fn run_with(
        epoch: u64,
        nodes: &[ObservedNode],
        decision: &Decision,
        replicas: usize,
    ) -> Summary {
        let prev = DatabaseClusterStatus {
            epoch,
            shards: vec![crate::api::ShardStatus {
                name: "c-shard-0".into(),
                primary: Some(member("c-shard-0-0")),
                replicas: (1..=replicas)
                    .map(|o| member(&format!("c-shard-0-{o}")))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = cluster();
        let inputs = Inputs {
            prev: &prev,
            v: &v,
            nodes,
            decision,
            backup: None,
            restored: None,
            resharding: None,
            autoscaling: None,
            placement: &Placement::default(),
            generation: 2,
        };
        summarize(inputs, crate::operator::context::now())
    }

    fn run(epoch: u64, nodes: &[ObservedNode], decision: &Decision) -> Summary {
        run_with(epoch, nodes, decision, 1)
    }

    fn cond<'a>(s: &'a Summary, type_: &str) -> (&'a str, &'a str) {
        s.next
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
            .unwrap_or(("", ""))
    }

    #[test]
    fn phases_from_what_was_observed() {
        let wait = Decision::Wait {
            waiting_for: 1,
            desired: 2,
        };
        let s = run(0, &[node(0, true)], &wait);
        assert_eq!(s.next.phase.as_deref(), Some("Creating"));
        assert_eq!(s.next.ready.as_deref(), Some("1/2"));
        assert_eq!(
            s.message,
            "1 of 2 nodes are up; the topology is assigned once all are"
        );
        assert_eq!(cond(&s, READY), ("False", "WaitingForNodes"));
        assert_eq!(cond(&s, PROGRESSING), ("True", "WaitingForNodes"));

        let s = run(3, &[node(0, true), node(1, true)], &wait);
        assert!(s.all_ready);
        assert_eq!(s.next.phase.as_deref(), Some("Ready"));
        assert_eq!(s.message, "2/2 nodes ready, topology epoch 3");
        assert_eq!(cond(&s, DEGRADED), ("False", "AsExpected"));
        assert_eq!(s.next.observed_generation, Some(2));

        // Every pod ready, one member out of the recorded topology (it
        // departed and answers again): not Ready until it is back.
        let s = run_with(3, &[node(0, true), node(1, true)], &wait, 0);
        assert!(!s.all_ready);
        assert_eq!(cond(&s, DEGRADED), ("True", "MembersOutOfTopology"));

        let s = run(3, &[node(0, true), node(1, false)], &wait);
        assert_eq!(s.next.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, DEGRADED), ("True", "NodesNotReady"));
        assert_eq!(cond(&s, PROGRESSING), ("False", "NodesNotReady"));

        let s = run(3, &[node(0, true), node(1, true), node(2, true)], &wait);
        assert_eq!(s.next.phase.as_deref(), Some("Scaling"));
    }
}
