//! Failover: detection of a failed primary and the fence-and-choose step.
//!
//! Decisions are pure ([`plan`], and [`super::shard::plan`] for the next
//! step); this module performs them. The state lives in
//! `status.shards[i].failover` (see [`super::shard`]):
//!
//! ```text
//!  healthy ──(primary failed for detectionSeconds)──▶ Fencing{epoch+1}
//!  Fencing ──fence every reachable member; wait 1.1 × lease──▶ choose
//!  choose ──rule holds──▶ Promoting{to} ──promote, push topology, labels──▶ healthy (+ lastFailover)
//!  choose ──rule fails──▶ Blocked (FailoverBlocked=True; retried every reconcile)
//!  Promoting, target gone ──▶ Fencing{epoch+1}
//! ```
//!
//! Every step is idempotent at its epoch (fence/promote at an epoch the node
//! has already seen are no-ops), so repeating a step after a crash is safe.

pub mod monitor;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::shard::{
    self, admin, blocked_condition, failover_client, members, next_epoch, Kind, Phase, ShardOp,
    FAILOVER_BLOCKED,
};
use crate::api::{
    DatabaseCluster, DatabaseClusterStatus, FailoverState, FailoverTiming, ShardStatus,
};
use crate::client::{ClientError, NodeInfo};
use crate::operator::context::{Context, Error};
pub use crate::operator::detector::Detector;
use crate::operator::topology::ObservedNode;
use crate::operator::validate::ValidatedCluster;
use plan::{log_end, AckRule, Candidate, Choice, PrimaryView};

/// Lease the nodes use when none reports one (the node's default).
const DEFAULT_LEASE_MS: u64 = 2000;

/// What the operator sees of a shard's primary (input of the detector).
pub fn primary_view(
    detector: &Detector,
    shard: &ShardStatus,
    by_pod: &BTreeMap<&str, &ObservedNode>,
    v: &ValidatedCluster,
) -> Option<PrimaryView> {
    let p = shard.primary.as_ref()?;
    let replicas_all_up = shard.replicas.iter().all(|r| {
        by_pod
            .get(r.pod.as_str())
            .and_then(|n| n.info.as_ref())
            .is_some_and(|i| i.ready && !i.replication.resyncing)
    });
    let mut view = PrimaryView {
        replicas_all_up,
        level: Some(v.spec.consistency.level),
        ..Default::default()
    };
    let Some(n) = by_pod.get(p.pod.as_str()) else {
        return Some(view);
    };
    view.pod_present = true;
    if let Some(i) = &n.info {
        view.reachable = true;
        view.ready = i.ready;
        view.same_node = i.node_id == p.node_id;
        view.is_primary = i.role == "primary";
        let replica_max = shard
            .replicas
            .iter()
            .filter_map(|r| by_pod.get(r.pod.as_str()).and_then(|n| n.info.as_ref()))
            .map(log_end)
            .max()
            .unwrap_or_default();
        // Only a recently restarted primary: a live one is observed a few
        // milliseconds before its replicas and may look briefly behind. A
        // replica with a longer log of an older epoch (a former primary not
        // yet cut at its fork) does not make it behind.
        view.behind = i.uptime_seconds < 60 && replica_max > log_end(i);
        // A primary whose lease was never seen held (just bootstrapped or
        // promoted, replicas still connecting) is not "cut off".
        let key = lease_key(&v.namespace, &v.name, shard);
        let mut seen = detector
            .lease_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if i.replication.lease_held {
            seen.insert(key.clone());
        }
        view.lease_held = i.replication.lease_held || !seen.contains(&key);
    }
    Some(view)
}

fn lease_key(ns: &str, cluster: &str, shard: &ShardStatus) -> String {
    format!(
        "{ns}/{cluster}/{}/{}/{}",
        shard.name,
        shard.primary.as_ref().map_or("", |p| p.pod.as_str()),
        shard.epoch
    )
}

/// A shard whose primary failed for at least `failover.detectionSeconds`.
struct Failed {
    i: usize,
    why: &'static str,
    failed_for: Duration,
    key: String,
}

/// Failure detection over every shard: starts a failover for the first
/// shard whose primary failed for `failover.detectionSeconds`.
/// `Some(action)` means detection took the reconcile over (a failover ran,
/// or a suspected primary is being waited out).
pub async fn detect(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Option<Action>, Error> {
    let detection = Duration::from_secs(v.spec.failover.detection_seconds.max(1) as u64);
    let mut requeue: Option<Duration> = None;
    for (i, shard) in prev.shards.iter().enumerate() {
        let Some((why, failed_for, key)) = suspect(ctx, dbc, v, shard, by_pod).await else {
            continue;
        };
        if failed_for < detection {
            tracing::info!(cluster = %dbc.name_any(), shard = %shard.name, reason = why, failed_ms = failed_for.as_millis() as u64, "primary looks failed; waiting out failover.detectionSeconds");
            let left = (detection - failed_for).max(Duration::from_millis(200));
            requeue = Some(requeue.map_or(left, |r| r.min(left)));
            continue;
        }
        let f = Failed {
            i,
            why,
            failed_for,
            key,
        };
        return start(ctx, dbc, v, f, observed, by_pod).await.map(Some);
    }
    Ok(requeue.map(Action::requeue))
}

/// Whether the shard's primary looks failed, and since when (the first
/// sighting is remembered in the [`Detector`]; a healthy answer forgets it).
async fn suspect(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    shard: &ShardStatus,
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Option<(&'static str, Duration, String)> {
    if shard.replicas.is_empty() {
        return None;
    }
    let view = primary_view(&ctx.detector, shard, by_pod, v)?;
    let key = format!(
        "{}/{}/{}",
        dbc.namespace().unwrap_or_default(),
        dbc.name_any(),
        shard.name
    );
    let mut why = plan::primary_failure(&view);
    if why == Some("RestartedBehind") && !confirm_behind(shard, by_pod).await {
        why = None;
    }
    let first = {
        let mut m = ctx
            .detector
            .suspect
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match why {
            None => {
                m.remove(&key);
                return None;
            }
            Some(_) => *m.entry(key.clone()).or_insert_with(Instant::now),
        }
    };
    let failed_for = first.elapsed().max(replicas_silence(shard, by_pod));
    Some((why.unwrap_or("Failed"), failed_for, key))
}

/// How long every replica of the shard has heard no heartbeat from its
/// primary (sent every 100 ms), as they reported when observed: a closer
/// bound on when a hung or cut-off primary stopped than the operator's own
/// first failed probe (which comes a poll interval and a timeout later).
/// Zero unless every replica answered with an age.
fn replicas_silence(shard: &ShardStatus, by_pod: &BTreeMap<&str, &ObservedNode>) -> Duration {
    let ages: Option<Vec<u64>> = shard
        .replicas
        .iter()
        .map(|r| {
            by_pod
                .get(r.pod.as_str())
                .and_then(|n| n.info.as_ref())
                .and_then(|i| i.replication.heartbeat_age_ms)
        })
        .collect();
    Duration::from_millis(ages.and_then(|a| a.into_iter().min()).unwrap_or(0))
}

/// Records `Fencing` at a new epoch for a failed primary and runs the
/// first step.
async fn start(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    f: Failed,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Action, Error> {
    let Some(shard) = dbc.status.as_ref().and_then(|s| s.shards.get(f.i)).cloned() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let why = f.why;
    let from = shard
        .primary
        .as_ref()
        .map(|p| p.pod.clone())
        .unwrap_or_default();
    let started = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_millis(f.failed_for.as_millis() as i64);
    let epoch = next_epoch(&shard, by_pod);
    let state = FailoverState {
        phase: Phase::Fencing.as_str().into(),
        kind: Kind::Failover.as_str().into(),
        epoch,
        from: from.clone(),
        to: None,
        started_at: started.to_string(),
        reason: Some(format!(
            "primary {from} failed ({why}) for {} ms",
            f.failed_for.as_millis()
        )),
        timing: Some(FailoverTiming {
            detection_ms: f.failed_for.as_millis() as u64,
            ..Default::default()
        }),
    };
    tracing::warn!(cluster = %dbc.name_any(), shard = %shard.name, from = %from, reason = why, epoch, "starting failover");
    ctx.event(
        dbc,
        EventType::Warning,
        "FailoverStarted",
        "Failover",
        format!(
            "{}: primary {from} failed ({why}); fencing the shard at epoch {epoch}",
            shard.name
        ),
    )
    .await;
    let dbc = shard::write_state(ctx, dbc, f.i, Some(state.clone())).await?;
    if let Ok(mut m) = ctx.detector.suspect.lock() {
        m.remove(&f.key);
    }
    let op = ShardOp {
        ctx,
        v,
        i: f.i,
        shard,
        observed,
        by_pod,
    };
    fence_and_choose(&op, dbc, &state).await
}

/// A Warning Event `ReplicaRefusedAhead` when a member starts reporting
/// `linkState: refusedAhead`: its primary's log ends before its own (or in
/// an older epoch), so it does not replicate, keeps its data and retries.
pub async fn report_refused_ahead(ctx: &Context, dbc: &DatabaseCluster, observed: &[ObservedNode]) {
    let prefix = format!(
        "{}/{}/",
        dbc.namespace().unwrap_or_default(),
        dbc.name_any()
    );
    let fresh = {
        let mut seen = ctx
            .detector
            .refused_ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        newly_refused(&mut seen, &prefix, observed)
    };
    for (n, why) in fresh {
        tracing::warn!(cluster = %dbc.name_any(), pod = %n.pod, epoch = n.info.as_ref().map_or(0, |i| i.last_record_epoch()), lsn = n.info.as_ref().map_or(0, |i| i.lsn), reason = %why, "a member's primary refuses it: its log is ahead of the primary's");
        ctx.event(
            dbc,
            EventType::Warning,
            "ReplicaRefusedAhead",
            "Replication",
            format!(
                "{}: its primary refuses it because its log is ahead of the primary's; it keeps its data and does not replicate until the primary is replaced by the most up-to-date member ({why})",
                n.pod
            ),
        )
        .await;
    }
}

/// The members that report `refusedAhead` and were not seen doing so (with
/// their `followError`); `seen` forgets a member once it answers otherwise
/// (an unreachable member stays as it was).
fn newly_refused<'a>(
    seen: &mut HashSet<String>,
    prefix: &str,
    observed: &'a [ObservedNode],
) -> Vec<(&'a ObservedNode, String)> {
    observed
        .iter()
        .filter_map(|n| {
            let i = n.info.as_ref()?;
            let key = format!("{prefix}{}", n.pod);
            if i.replication.link_state != "refusedAhead" {
                seen.remove(&key);
                return None;
            }
            let why = i.replication.follow_error.clone().unwrap_or_default();
            seen.insert(key).then_some((n, why))
        })
        .collect()
}

/// Confirms a primary is behind a replica with ordered reads: the replicas
/// first, then the primary (a primary's LSN only grows, so reading it last
/// rules out the skew of concurrent status calls under write load).
async fn confirm_behind(shard: &ShardStatus, by_pod: &BTreeMap<&str, &ObservedNode>) -> bool {
    let fast = failover_client();
    let replicas: Vec<SocketAddr> = shard
        .replicas
        .iter()
        .filter_map(|r| by_pod.get(r.pod.as_str()).and_then(|n| admin(n)))
        .collect();
    let max = futures::future::join_all(replicas.iter().map(|a| fast.status(*a)))
        .await
        .into_iter()
        .filter_map(|r| r.ok())
        .map(|i| log_end(&i))
        .max()
        .unwrap_or_default();
    let Some(addr) = shard
        .primary
        .as_ref()
        .and_then(|p| by_pod.get(p.pod.as_str()))
        .and_then(|n| admin(n))
    else {
        return false;
    };
    fast.status(addr).await.is_ok_and(|i| log_end(&i) < max)
}

/// What fencing the members found.
enum Fenced {
    /// A member has seen a newer epoch: start over above it.
    Stale,
    Done {
        candidates: Vec<Candidate>,
        /// When the old primary's lease is surely over (promote after it).
        lease_over_at: tokio::time::Instant,
    },
}

/// How long to wait for the old primary's own fence answer past the
/// replicas' when no lease wait is left (a live but cut-off primary
/// answers in milliseconds and is demoted at once; a hung one would cost
/// the client's whole timeout, and the replicas already proved its lease
/// over).
const OLD_PRIMARY_GLANCE: Duration = Duration::from_millis(50);

/// Fences every member with an address, the failed primary included: if it
/// answers it is demoted at once and no lease wait is needed. Otherwise the
/// wait is what the replicas' heartbeat ages leave of the lease
/// ([`plan::lease_wait_after_fence`]), and the old primary's answer is
/// awaited only that long (at least [`OLD_PRIMARY_GLANCE`]).
async fn fence_members(op: &ShardOp<'_>, state: &FailoverState, cluster: &str) -> Fenced {
    let targets: Vec<(&ObservedNode, SocketAddr)> = members(&op.shard)
        .iter()
        .filter_map(|p| op.node(p))
        .filter_map(|n| admin(n).map(|a| (n, a)))
        .collect();
    let fast = failover_client();
    let (old, replicas): (Vec<_>, Vec<_>) = targets.iter().partition(|(n, _)| n.pod == state.from);
    let old_call = old.first().map(|(n, a)| (*n, fast.fence(*a, state.epoch)));
    let replica_results =
        futures::future::join_all(replicas.iter().map(|(_, a)| fast.fence(*a, state.epoch))).await;
    let mut candidates = Vec::new();
    let mut newly_fenced = false;
    let mut lease_ms = 0u64;
    let mut ages = Vec::new();
    for ((n, _), r) in replicas.iter().zip(replica_results) {
        let Some(info) = fenced_member(n, r, state, cluster) else {
            continue;
        };
        let Ok(info) = info else { return Fenced::Stale };
        newly_fenced |= n.info.as_ref().map_or(0, |i| i.fencing_epoch) < state.epoch;
        lease_ms = lease_ms.max(info.replication.lease_ms);
        ages.push(info.replication.heartbeat_age_ms);
        candidates.push(candidate(n, &info, false));
    }
    let rule = AckRule::new(
        op.v.spec.consistency.level,
        op.v.spec.consistency.quorum_percentage,
        op.shard.replicas.len(),
    );
    let lease = if lease_ms == 0 {
        DEFAULT_LEASE_MS
    } else {
        lease_ms
    };
    let unreachable = op.shard.replicas.len().saturating_sub(ages.len());
    let wait = plan::lease_wait_after_fence(lease, rule.k, unreachable, &ages);
    let now = tokio::time::Instant::now();
    let mut lease_over_at = now + Duration::from_millis(wait);
    if let Some((n, call)) = old_call {
        // Its answer saves the lease wait; with none left to save, a glance.
        let patience = if newly_fenced {
            Duration::from_millis(wait).max(OLD_PRIMARY_GLANCE)
        } else {
            OLD_PRIMARY_GLANCE
        };
        match tokio::time::timeout(patience, call).await {
            Ok(r) => match fenced_member(n, r, state, cluster) {
                Some(Ok(info)) => {
                    // Demoted: it acknowledges nothing from now on.
                    newly_fenced = true;
                    lease_over_at = now;
                    candidates.push(candidate(n, &info, true));
                }
                Some(Err(())) => return Fenced::Stale,
                None => {}
            },
            Err(_) => {
                tracing::info!(cluster = %cluster, pod = %n.pod, waited_ms = patience.as_millis() as u64, "old primary did not answer its fence in time (hung or cut off)");
            }
        }
    }
    // Every member answering was already fenced at this epoch (a resumed
    // step): the wait was served before.
    if !newly_fenced {
        lease_over_at = now;
    }
    tracing::info!(cluster = %cluster, shard = %op.shard.name, lease_wait_ms = wait, unreachable, "members fenced");
    Fenced::Done {
        candidates,
        lease_over_at,
    }
}

/// A fence call's result: `Some(Ok(info))` fenced, `Some(Err(()))` the
/// member has seen a newer epoch, `None` unreachable.
fn fenced_member(
    n: &ObservedNode,
    r: Result<NodeInfo, ClientError>,
    state: &FailoverState,
    cluster: &str,
) -> Option<Result<NodeInfo, ()>> {
    match r {
        Ok(info) => Some(Ok(info)),
        Err(e) if e.is_stale_epoch() => {
            // Someone fenced above our epoch (an older leader's run, or a
            // node that saw a newer one).
            tracing::warn!(cluster = %cluster, pod = %n.pod, epoch = state.epoch, error = %e, "a member has seen a newer epoch");
            Some(Err(()))
        }
        Err(e) => {
            tracing::info!(cluster = %cluster, pod = %n.pod, error = %e, "member not fenced (unreachable)");
            None
        }
    }
}

fn candidate(n: &ObservedNode, info: &NodeInfo, old_primary: bool) -> Candidate {
    Candidate {
        pod: n.pod.clone(),
        lsn: info.lsn,
        last_record_epoch: info.last_record_epoch(),
        old_primary,
        resyncing: info.replication.resyncing,
    }
}

/// The `Fencing` (and `Blocked`) step of a failover: fence, wait out the
/// lease, choose by the safety rule, then promote or record `Blocked`.
pub(crate) async fn fence_and_choose(
    op: &ShardOp<'_>,
    dbc: DatabaseCluster,
    state: &FailoverState,
) -> Result<Action, Error> {
    let name = dbc.name_any();
    let fence_started = tokio::time::Instant::now();
    let (candidates, lease_over_at) = match fence_members(op, state, &name).await {
        Fenced::Stale => return shard::restart(op, &dbc, state).await,
        Fenced::Done {
            candidates,
            lease_over_at,
        } => (candidates, lease_over_at),
    };
    let fenced = tokio::time::Instant::now();
    tokio::time::sleep_until(lease_over_at).await;
    let timing = state.timing.clone().map(|t| FailoverTiming {
        fence_ms: Some((fenced - fence_started).as_millis() as u64),
        lease_wait_ms: Some(fenced.elapsed().as_millis() as u64),
        ..t
    });
    let spec = &op.v.spec;
    let rule = AckRule::new(
        spec.consistency.level,
        spec.consistency.quorum_percentage,
        op.shard.replicas.len(),
    );
    let choice = plan::choose(
        &candidates,
        rule,
        spec.consistency.level,
        spec.failover.allow_data_loss,
    );
    match choice {
        Choice::Blocked(b) => {
            let message = format!("{}: {b}", op.shard.name);
            let already = Phase::parse(&state.phase) == Some(Phase::Blocked)
                && state.reason.as_deref() == Some(&message);
            if !already {
                block(op, &dbc, state, b.reason(), message).await?;
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Choice::Promote {
            pod,
            lsn,
            data_loss_possible,
        } => {
            tracing::info!(cluster = %name, shard = %op.shard.name, target = %pod, lsn, data_loss_possible, epoch = state.epoch, "promoting");
            let next = FailoverState {
                phase: Phase::Promoting.as_str().into(),
                to: Some(pod),
                timing,
                ..state.clone()
            };
            let dbc = shard::write_state(op.ctx, &dbc, op.i, Some(next.clone())).await?;
            shard::promote(op, dbc, &next, data_loss_possible).await
        }
    }
}

/// Records `Blocked` (the shard stays fenced), `FailoverBlocked=True` and
/// the Event.
async fn block(
    op: &ShardOp<'_>,
    dbc: &DatabaseCluster,
    state: &FailoverState,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    tracing::warn!(cluster = %dbc.name_any(), shard = %op.shard.name, reason, "failover blocked");
    op.ctx
        .event(
            dbc,
            EventType::Warning,
            FAILOVER_BLOCKED,
            "Failover",
            message.clone(),
        )
        .await;
    let next = FailoverState {
        phase: Phase::Blocked.as_str().into(),
        reason: Some(message.clone()),
        ..state.clone()
    };
    let cond = blocked_condition(true, reason, message);
    let i = op.i;
    shard::update(
        op.ctx,
        dbc,
        move |st| {
            if let Some(s) = st.shards.get_mut(i) {
                s.failover = Some(next);
            }
            st.phase = Some("Degraded".into());
            st.reason = Some(FAILOVER_BLOCKED.into());
        },
        Some(cond),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{NodeInfo, ReplicationInfo};
    use plan::LogEnd;

    fn node(pod: &str, info: Option<NodeInfo>) -> ObservedNode {
        ObservedNode {
            pod: pod.into(),
            shard: 0,
            ordinal: 0,
            ip: None,
            pod_ready: true,
            info,
            labels: BTreeMap::new(),
        }
    }

    fn info(link_state: &str, lsn: u64, history: Vec<(u64, u64)>) -> NodeInfo {
        NodeInfo {
            lsn,
            replication: ReplicationInfo {
                link_state: link_state.into(),
                follow_error: Some("AHEAD replica log ends at 9, past this primary's 7".into()),
                history,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_refused_member_is_reported_once_per_refusal() {
        let mut seen = HashSet::new();
        let refused = [
            node("c-0", Some(info("up", 7, vec![]))),
            node("c-1", Some(info("refusedAhead", 9, vec![]))),
        ];
        let got = newly_refused(&mut seen, "ns/c/", &refused);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.pod, "c-1");
        assert!(got[0].1.starts_with("AHEAD"));
        // Still refused: no second report; unreachable: nothing forgotten.
        assert!(newly_refused(&mut seen, "ns/c/", &refused).is_empty());
        assert!(newly_refused(&mut seen, "ns/c/", &[node("c-1", None)]).is_empty());
        assert!(newly_refused(&mut seen, "ns/c/", &refused).is_empty());
        // Linked again, then refused again: reported again.
        newly_refused(
            &mut seen,
            "ns/c/",
            &[node("c-1", Some(info("up", 9, vec![])))],
        );
        assert_eq!(newly_refused(&mut seen, "ns/c/", &refused).len(), 1);
        // Another cluster's pod of the same name is its own member.
        assert_eq!(newly_refused(&mut seen, "ns/d/", &refused).len(), 1);
    }

    #[test]
    fn the_last_record_epoch_comes_from_the_history_of_a_node_without_the_field() {
        // Promoted at epoch 3 after LSN 100: records up to 100 are epoch 2.
        let history = vec![(1, 0), (2, 40), (3, 100)];
        let mut i = info("up", 100, history.clone());
        assert_eq!(log_end(&i), LogEnd { epoch: 2, lsn: 100 });
        i.lsn = 101;
        assert_eq!(log_end(&i), LogEnd { epoch: 3, lsn: 101 });
        // The node's own field wins when present.
        i.replication.last_record_epoch = Some(7);
        assert_eq!(log_end(&i), LogEnd { epoch: 7, lsn: 101 });
        // Neither: 0.
        assert_eq!(log_end(&info("up", 5, vec![])).epoch, 0);
        // Parsed from a status document of either kind.
        let doc = |extra: &str| {
            format!(
                r#"{{"nodeId":"n","role":"replica","lsn":120,"replication":{{"history":[[1,0],[2,110]],"linkState":"refusedAhead"{extra}}}}}"#
            )
        };
        let old: NodeInfo = serde_json::from_str(&doc("")).expect("an old status parses");
        assert_eq!(log_end(&old), LogEnd { epoch: 2, lsn: 120 });
        assert_eq!(old.replication.link_state, "refusedAhead");
        let new: NodeInfo =
            serde_json::from_str(&doc(r#","lastRecordEpoch":2"#)).expect("a new status parses");
        assert_eq!(new.replication.last_record_epoch, Some(2));
    }
}
