//! What failover and switchover share: the typed phases of a shard's
//! primary change, the pure planner that picks the next step from the
//! recorded state, and the steps both end with (promote, finish, start
//! over at a newer epoch).
//!
//! The state lives in `status.shards[i].failover` ([`FailoverState`]),
//! written with the object's `resourceVersion` as a precondition before
//! each step, so a stale leader loses with 409 and a restarted operator
//! resumes from the recorded step. On the wire the phase and kind stay the
//! strings older operators wrote (`Fencing`, `Promoting`, `Blocked`;
//! `Failover`, `Switchover`): an operator upgraded mid-failover resumes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use crate::api::{
    DatabaseCluster, DatabaseClusterStatus, FailoverState, FailoverTiming, LastFailover,
    NodeStatus, ShardStatus,
};
use crate::client::NodeInfo;
use crate::operator::context::{now, Context, Error};
use crate::operator::nodes;
use crate::operator::status::{self, Cond};
use crate::operator::topology::{self, ObservedNode};
use crate::operator::validate::ValidatedCluster;
use crate::operator::writer::{self, Precondition};

/// Condition type set while a shard's failover cannot proceed safely.
pub const FAILOVER_BLOCKED: &str = "FailoverBlocked";

/// Where a shard's primary change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The new epoch is chosen; members are being fenced.
    Fencing,
    /// The target is chosen (recorded in `to`).
    Promoting,
    /// The safety rule does not hold; the shard stays fenced until enough
    /// replicas return (retried every reconcile).
    Blocked,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Fencing, Phase::Promoting, Phase::Blocked];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fencing => "Fencing",
            Phase::Promoting => "Promoting",
            Phase::Blocked => "Blocked",
        }
    }

    /// The recorded phase; `None` for a string no operator writes.
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Why a shard's primary changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The primary failed.
    Failover,
    /// Requested (annotation, rolling update).
    Switchover,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failover => "Failover",
            Kind::Switchover => "Switchover",
        }
    }

    /// Anything but `Switchover` runs as a failover (the safe procedure).
    pub fn parse(s: &str) -> Kind {
        if s == Kind::Switchover.as_str() {
            Kind::Switchover
        } else {
            Kind::Failover
        }
    }
}

/// The next step of a shard's primary change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Promote the recorded target, then record and push the topology.
    Promote,
    /// Switchover: fence the old primary alone, pick and check a target.
    FenceOldPrimary,
    /// Failover (and a blocked one, again): fence every member, wait out
    /// the lease, choose by the safety rule.
    FenceAndChoose,
}

/// The planner: the step to run from the recorded state alone (so a
/// restarted operator resumes where the last one stopped). Every step is
/// idempotent at its epoch, so repeating one after a crash is safe.
pub fn plan(state: &FailoverState) -> Step {
    match (Phase::parse(&state.phase), Kind::parse(&state.kind)) {
        (Some(Phase::Promoting), _) => Step::Promote,
        (Some(Phase::Fencing), Kind::Switchover) => Step::FenceOldPrimary,
        _ => Step::FenceAndChoose,
    }
}

/// What every step of a shard operation works with.
pub struct ShardOp<'a> {
    pub ctx: &'a Context,
    pub v: &'a ValidatedCluster,
    /// Index of the shard in `status.shards`.
    pub i: usize,
    /// The shard as recorded when the step began.
    pub shard: ShardStatus,
    pub observed: &'a [ObservedNode],
    pub by_pod: &'a BTreeMap<&'a str, &'a ObservedNode>,
}

impl ShardOp<'_> {
    pub fn node(&self, pod: &str) -> Option<&ObservedNode> {
        self.by_pod.get(pod).copied()
    }
}

/// Calls made during a failover: a hung member must not hold the
/// procedure up for the reconcile's usual 3 s.
pub(crate) fn failover_client() -> crate::client::NodeClient {
    crate::client::NodeClient {
        timeout: Duration::from_secs(1),
    }
}

pub(crate) fn since_ms(rfc3339: &str) -> u64 {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .and_then(|t| {
            let d = k8s_openapi::jiff::Timestamp::now().duration_since(t);
            u64::try_from(d.as_millis()).ok()
        })
        .unwrap_or(0)
}

pub(crate) fn admin(n: &ObservedNode) -> Option<SocketAddr> {
    n.ip.as_deref().and_then(topology::admin_addr)
}

pub(crate) fn members(shard: &ShardStatus) -> Vec<String> {
    let mut out: Vec<String> = shard.primary.iter().map(|p| p.pod.clone()).collect();
    out.extend(shard.replicas.iter().map(|r| r.pod.clone()));
    out
}

fn node_status(n: &ObservedNode, info: &NodeInfo) -> Option<NodeStatus> {
    Some(NodeStatus {
        pod: n.pod.clone(),
        node_id: info.node_id.clone(),
        ip: n.ip.clone()?,
        ready: n.pod_ready && info.ready,
        lsn: Some(info.lsn),
    })
}

/// Above the recorded shard epoch and any fencing epoch a member reports.
pub(crate) fn next_epoch(shard: &ShardStatus, by_pod: &BTreeMap<&str, &ObservedNode>) -> u64 {
    members(shard)
        .iter()
        .filter_map(|p| by_pod.get(p.as_str()).and_then(|n| n.info.as_ref()))
        .map(|i| i.fencing_epoch)
        .chain([shard.epoch, shard.failover.as_ref().map_or(0, |f| f.epoch)])
        .max()
        .unwrap_or(0)
        + 1
}

pub(crate) fn blocked_condition(blocked: bool, reason: &str, message: String) -> Cond {
    Cond::new(FAILOVER_BLOCKED, blocked, reason, message)
}

/// Changes the recorded status (and optionally one condition) through the
/// status writer, with the object's resourceVersion as a precondition;
/// returns the updated object.
pub(crate) async fn update(
    ctx: &Context,
    dbc: &DatabaseCluster,
    f: impl FnOnce(&mut DatabaseClusterStatus) + Send,
    cond: Option<Cond>,
) -> Result<DatabaseCluster, Error> {
    let mut st = dbc.status.clone().unwrap_or_default();
    f(&mut st);
    if let Some(c) = cond {
        st.conditions = status::merge_conditions(
            &st.conditions,
            &[c],
            dbc.metadata.generation.unwrap_or(0),
            now(),
        );
    }
    writer::write_status(ctx, dbc, &st, Precondition::StatusUnchanged).await
}

/// Sets shard `i`'s operation state.
pub(crate) async fn write_state(
    ctx: &Context,
    dbc: &DatabaseCluster,
    i: usize,
    state: Option<FailoverState>,
) -> Result<DatabaseCluster, Error> {
    update(
        ctx,
        dbc,
        move |st| {
            if let Some(s) = st.shards.get_mut(i) {
                s.failover = state;
            }
        },
        None,
    )
    .await
}

/// The promotion target went away before it was promoted (or the promotion
/// failed): fence again at a newer epoch, so a half-promoted node cannot
/// share an epoch with the next choice.
pub(crate) async fn restart(
    op: &ShardOp<'_>,
    dbc: &DatabaseCluster,
    state: &FailoverState,
) -> Result<Action, Error> {
    let epoch = next_epoch(&op.shard, op.by_pod).max(state.epoch + 1);
    let next = FailoverState {
        phase: Phase::Fencing.as_str().into(),
        epoch,
        to: None,
        ..state.clone()
    };
    write_state(op.ctx, dbc, op.i, Some(next)).await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// The `Promoting` step: promote the recorded target and finish, or start
/// over at a newer epoch when it is gone or refuses.
pub(crate) async fn promote(
    op: &ShardOp<'_>,
    dbc: DatabaseCluster,
    state: &FailoverState,
    data_loss_possible: bool,
) -> Result<Action, Error> {
    let target = state.to.clone().unwrap_or_default();
    let n = op.node(&target);
    let Some(addr) = n.and_then(admin) else {
        return restart(op, &dbc, state).await;
    };
    match failover_client()
        .promote(addr, state.epoch, op.shard.replicas.len().max(1))
        .await
    {
        Ok(info) => finish(op, dbc, state, n, &info, data_loss_possible).await,
        Err(e) => {
            tracing::warn!(cluster = %dbc.name_any(), shard = %op.shard.name, target = %target, kind = %state.kind, error = %e, "promotion failed; starting over at a newer epoch");
            restart(op, &dbc, state).await
        }
    }
}

/// The members that stay replicas after `primary` is promoted: those that
/// answer. Those that do not (the failed primary, replicas that are down)
/// leave the topology, and so the acknowledgement set, until they answer
/// again: the reconcile's topology plan adds a pod back as soon as it
/// answers (as on scale-up), it then follows the new primary and the old
/// primary drops its unacknowledged suffix. Keeping them would leave
/// `k = n` shards (a 3-node quorum, strong) unable to acknowledge anything
/// until the failed node returns, which would make the failover pointless.
/// The next failover's rule is computed on the same, smaller topology,
/// which is what the nodes acknowledge by, so the proof still holds.
fn answering_replicas(
    old: &ShardStatus,
    primary: &str,
    observed: &[ObservedNode],
) -> Vec<NodeStatus> {
    let mut replicas: Vec<NodeStatus> = old
        .primary
        .iter()
        .chain(old.replicas.iter())
        .filter(|r| r.pod != primary)
        .filter_map(|r| {
            observed
                .iter()
                .find(|n| n.pod == r.pod)
                .and_then(|n| n.info.as_ref().and_then(|i| node_status(n, i)))
        })
        .collect();
    replicas.sort_by(|a, b| a.pod.cmp(&b.pod));
    replicas
}

/// The Event that ends a primary change: type, reason, note.
fn outcome_event(
    shard: &str,
    state: &FailoverState,
    to: &str,
    duration_ms: u64,
    data_loss_possible: bool,
) -> (EventType, &'static str, String) {
    // A switchover that could not be made safe gives the shard back to its
    // old primary (at the new epoch) and records nothing as done.
    let aborted = to == state.from;
    let type_ = if data_loss_possible || aborted {
        EventType::Warning
    } else {
        EventType::Normal
    };
    if aborted {
        let note = format!(
            "{shard}: switchover aborted, {} stays primary at epoch {}: {}",
            state.from,
            state.epoch,
            state.reason.as_deref().unwrap_or("")
        );
        return (type_, "SwitchoverAborted", note);
    }
    let note = format!(
        "{shard}: {} {} → {to} at epoch {} in {duration_ms} ms{}",
        state.kind.to_lowercase(),
        state.from,
        state.epoch,
        if data_loss_possible {
            " (the safety rule did not hold: writes the old primary acknowledged after the new primary's position may be lost)"
        } else {
            ""
        }
    );
    let reason = match Kind::parse(&state.kind) {
        Kind::Switchover => "SwitchedOver",
        Kind::Failover => "FailedOver",
    };
    (type_, reason, note)
}

/// Records the new primary, pushes the topology, moves the role labels.
pub(crate) async fn finish(
    op: &ShardOp<'_>,
    dbc: DatabaseCluster,
    state: &FailoverState,
    target: Option<&ObservedNode>,
    info: &NodeInfo,
    data_loss_possible: bool,
) -> Result<Action, Error> {
    let (ctx, i) = (op.ctx, op.i);
    let name = dbc.name_any();
    let ns = dbc.namespace().unwrap_or_default();
    let cur = dbc.status.clone().unwrap_or_default();
    let Some(old) = cur.shards.get(i).cloned() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let Some(primary) = target.and_then(|n| node_status(n, info)) else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let replicas = answering_replicas(&old, &primary.pod, op.observed);
    let aborted = primary.pod == state.from;
    let duration_ms = since_ms(&state.started_at);
    let timing = state.timing.clone().map(|t| FailoverTiming {
        promote_ms: Some(duration_ms.saturating_sub(
            t.detection_ms + t.fence_ms.unwrap_or(0) + t.lease_wait_ms.unwrap_or(0),
        )),
        ..t
    });
    let last = LastFailover {
        kind: state.kind.clone(),
        from: state.from.clone(),
        to: primary.pod.clone(),
        epoch: state.epoch,
        started_at: state.started_at.clone(),
        duration_ms,
        data_loss_possible,
        timing: timing.clone(),
    };
    let max_node_epoch = op
        .observed
        .iter()
        .filter_map(|n| n.info.as_ref().map(|i| i.epoch))
        .max()
        .unwrap_or(0);
    let topo_epoch = cur.epoch.max(max_node_epoch) + 1;
    let mut shards = cur.shards.clone();
    if let Some(s) = shards.get_mut(i) {
        s.epoch = state.epoch;
        s.primary = Some(primary.clone());
        s.replicas = replicas;
        s.failover = None;
        if !aborted {
            s.last_failover = Some(last);
        }
    }
    let still_blocked = shards.iter().any(|s| {
        s.failover
            .as_ref()
            .is_some_and(|f| Phase::parse(&f.phase) == Some(Phase::Blocked))
    });
    let cond = (!still_blocked).then(|| blocked_condition(false, "AsExpected", String::new()));
    let shards_for_status = shards.clone();
    let dbc = update(
        ctx,
        &dbc,
        move |st| {
            st.epoch = topo_epoch;
            st.shards = shards_for_status;
        },
        cond,
    )
    .await?;
    tracing::info!(cluster = %name, namespace = %ns, shard = %old.name, from = %state.from, to = %primary.pod, epoch = state.epoch, duration_ms, data_loss_possible, kind = %state.kind, "failover complete");
    let (type_, reason, mut note) = outcome_event(
        &old.name,
        state,
        &primary.pod,
        duration_ms,
        data_loss_possible,
    );
    if let Some(t) = &timing {
        note.push_str(&format!(
            " (detection {} ms, fencing {} ms, lease wait {} ms, promotion {} ms)",
            t.detection_ms,
            t.fence_ms.unwrap_or(0),
            t.lease_wait_ms.unwrap_or(0),
            t.promote_ms.unwrap_or(0)
        ));
    }
    ctx.event(&dbc, type_, reason, &state.kind, note).await;
    let p = topology::Plan {
        epoch: topo_epoch,
        shards,
        changed: true,
        bootstrap: false,
    };
    // The promoted node already serves writes; the push makes the others
    // follow it and tells clients (CLUSTER SLOTS) where the slots went.
    // The labels move alongside, not after the push: until they do, the
    // disruption budgets still see the new primary as a replica, and a
    // drain could evict it.
    let (pushed, labelled) = tokio::join!(
        nodes::push_topology(ctx, op.observed, &p),
        nodes::label_roles(ctx, &ns, op.observed, &p.shards)
    );
    labelled?;
    if let Err(e) = pushed {
        tracing::warn!(cluster = %name, error = %e, "topology push after failover incomplete; the next reconcile retries");
    }
    Ok(Action::requeue(Duration::from_millis(500)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn state(phase: &str, kind: &str) -> FailoverState {
        FailoverState {
            phase: phase.into(),
            kind: kind.into(),
            epoch: 4,
            from: "c-shard-0-0".into(),
            to: (phase == "Promoting").then(|| "c-shard-0-1".into()),
            started_at: "2026-01-01T00:00:00Z".into(),
            reason: None,
            timing: None,
        }
    }

    #[test]
    fn phases_and_kinds_keep_their_wire_strings() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::Fencing.as_str(), "Fencing");
        assert_eq!(Phase::Promoting.as_str(), "Promoting");
        assert_eq!(Phase::Blocked.as_str(), "Blocked");
        assert_eq!(Phase::parse("Elsewhere"), None);
        assert_eq!(Kind::parse("Failover"), Kind::Failover);
        assert_eq!(Kind::parse("Switchover"), Kind::Switchover);
        assert_eq!(Kind::parse(""), Kind::Failover);
    }

    /// An operator restarted in every phase (it has only the recorded
    /// status) resumes with the step the previous one would have run.
    #[test]
    fn an_operator_restarted_in_every_phase_resumes_correctly() {
        let cases = [
            ("Fencing", "Failover", Step::FenceAndChoose),
            ("Fencing", "Switchover", Step::FenceOldPrimary),
            ("Promoting", "Failover", Step::Promote),
            ("Promoting", "Switchover", Step::Promote),
            ("Blocked", "Failover", Step::FenceAndChoose),
            ("Blocked", "Switchover", Step::FenceAndChoose),
            // Not written by any operator: the safe procedure.
            ("", "Failover", Step::FenceAndChoose),
        ];
        for (phase, kind, want) in cases {
            // Through the wire format, as a restarted operator reads it.
            let json = serde_json::to_string(&state(phase, kind)).expect("serializes");
            let read: FailoverState = serde_json::from_str(&json).expect("parses");
            assert_eq!(plan(&read), want, "{phase}/{kind}");
        }
        // A status written by an older operator (before the typed phases).
        let old: FailoverState = serde_json::from_str(
            r#"{"phase":"Promoting","kind":"Switchover","epoch":7,"from":"a","to":"b","startedAt":"2026-01-01T00:00:00Z"}"#,
        )
        .expect("an old status parses");
        assert_eq!(plan(&old), Step::Promote);
    }

    #[test]
    fn the_outcome_event_names_the_kind_and_an_abort() {
        let s = state("Promoting", "Switchover");
        let (t, r, note) = outcome_event("c-shard-0", &s, "c-shard-0-1", 12, false);
        assert_eq!((t, r), (EventType::Normal, "SwitchedOver"));
        assert_eq!(
            note,
            "c-shard-0: switchover c-shard-0-0 → c-shard-0-1 at epoch 4 in 12 ms"
        );
        let (t, r, _) = outcome_event("c-shard-0", &s, "c-shard-0-0", 12, false);
        assert_eq!((t, r), (EventType::Warning, "SwitchoverAborted"));
        let f = state("Promoting", "Failover");
        let (t, r, note) = outcome_event("c-shard-0", &f, "c-shard-0-1", 5, true);
        assert_eq!((t, r), (EventType::Warning, "FailedOver"));
        assert!(note.contains("may be lost"), "{note}");
    }
}
