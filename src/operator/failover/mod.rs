//! Failover and switchover: the per-shard state machine the operator drives.
//!
//! Decisions are pure ([`plan`]); this module performs them. The state lives
//! in `status.shards[i].failover`, written with the object's
//! `resourceVersion` as a precondition before each step, so a stale leader
//! loses with 409 and a restarted operator resumes from the recorded step:
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

pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;

use super::status::{self, Cond};
use super::topology::{self, ObservedNode};
use super::validate::ValidatedCluster;
use super::{Context, Error};
use crate::api::{
    DatabaseCluster, DatabaseClusterStatus, FailoverState, LastFailover, NodeStatus, ShardStatus,
};
use crate::client::NodeInfo;
use plan::{AckRule, Candidate, Choice, LogEnd, PrimaryView};

pub const FAILOVER_BLOCKED: &str = "FailoverBlocked";
pub const PHASE_FENCING: &str = "Fencing";
pub const PHASE_PROMOTING: &str = "Promoting";
pub const PHASE_BLOCKED: &str = "Blocked";
pub const KIND_FAILOVER: &str = "Failover";
pub const KIND_SWITCHOVER: &str = "Switchover";
/// Lease the nodes use when none reports one (the node's default).
const DEFAULT_LEASE_MS: u64 = 2000;

/// Calls made during a failover: a hung member must not hold the
/// procedure up for the reconcile's usual 3 s.
pub(crate) fn failover_client() -> crate::client::NodeClient {
    crate::client::NodeClient {
        timeout: Duration::from_secs(1),
    }
}

/// When each shard's primary was first seen failed (`ns/cluster/shard`).
/// In memory on purpose: after an operator restart detection starts over,
/// which only delays a failover, never causes a wrong one.
pub(crate) static SUSPECT: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn since_ms(rfc3339: &str) -> u64 {
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

/// Where a node's log ends, in the order logs are compared by
/// ([`LogEnd`]: the epoch of its last record, then its LSN).
pub(crate) fn log_end(i: &NodeInfo) -> LogEnd {
    LogEnd {
        epoch: i.last_record_epoch(),
        lsn: i.lsn,
    }
}

/// What the operator sees of a shard's primary (input of the detector).
pub fn primary_view(
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
        let mut seen = LEASE_SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if i.replication.lease_held {
            seen.insert(key.clone());
        }
        view.lease_held = i.replication.lease_held || !seen.contains(&key);
    }
    Some(view)
}

/// Primaries (per shard epoch) whose lease was seen held at least once.
static LEASE_SEEN: LazyLock<Mutex<std::collections::HashSet<String>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashSet::new()));

fn lease_key(ns: &str, cluster: &str, shard: &ShardStatus) -> String {
    format!(
        "{ns}/{cluster}/{}/{}/{}",
        shard.name,
        shard.primary.as_ref().map_or("", |p| p.pod.as_str()),
        shard.epoch
    )
}

/// Runs detection and any failover in progress. `Some(action)` means this
/// module took the reconcile over (the rest of the pipeline must not push a
/// topology for a shard mid-failover).
pub async fn reconcile(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &[ObservedNode],
) -> Result<Option<Action>, Error> {
    if prev.epoch == 0 || prev.shards.is_empty() {
        return Ok(None);
    }
    let by_pod: BTreeMap<&str, &ObservedNode> =
        observed.iter().map(|n| (n.pod.as_str(), n)).collect();
    report_refused_ahead(ctx, dbc, observed).await;
    // A failover in progress goes first, one shard per reconcile.
    if let Some(i) = prev.shards.iter().position(|s| s.failover.is_some()) {
        return drive(ctx, dbc.clone(), v, i, observed, &by_pod)
            .await
            .map(Some);
    }
    // A requested switchover (annotation) starts when nothing else runs.
    if let Some(action) = super::switchover::start_requested(ctx, dbc, v, observed, &by_pod).await?
    {
        return Ok(Some(action));
    }
    let key_of = |s: &ShardStatus| {
        format!(
            "{}/{}/{}",
            dbc.namespace().unwrap_or_default(),
            dbc.name_any(),
            s.name
        )
    };
    let detection = Duration::from_secs(v.spec.failover.detection_seconds.max(1) as u64);
    let mut requeue: Option<Duration> = None;
    for (i, shard) in prev.shards.iter().enumerate() {
        if shard.replicas.is_empty() {
            continue;
        }
        let Some(view) = primary_view(shard, &by_pod, v) else {
            continue;
        };
        let key = key_of(shard);
        let mut why = plan::primary_failure(&view);
        if why == Some("RestartedBehind") && !confirm_behind(shard, &by_pod).await {
            why = None;
        }
        let first = {
            let mut m = SUSPECT.lock().unwrap_or_else(|e| e.into_inner());
            match why {
                None => {
                    m.remove(&key);
                    continue;
                }
                Some(_) => *m.entry(key.clone()).or_insert_with(Instant::now),
            }
        };
        let why = why.unwrap_or("Failed");
        let failed_for = first.elapsed();
        if failed_for < detection {
            tracing::info!(cluster = %dbc.name_any(), shard = %shard.name, reason = why, failed_ms = failed_for.as_millis() as u64, "primary looks failed; waiting out failover.detectionSeconds");
            let left = (detection - failed_for).max(Duration::from_millis(200));
            requeue = Some(requeue.map_or(left, |r| r.min(left)));
            continue;
        }
        let from = shard
            .primary
            .as_ref()
            .map(|p| p.pod.clone())
            .unwrap_or_default();
        let started = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_millis(failed_for.as_millis() as i64);
        let epoch = next_epoch(shard, &by_pod);
        let state = FailoverState {
            phase: PHASE_FENCING.into(),
            kind: KIND_FAILOVER.into(),
            epoch,
            from: from.clone(),
            to: None,
            started_at: started.to_string(),
            reason: Some(format!(
                "primary {from} failed ({why}) for {} ms",
                failed_for.as_millis()
            )),
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
        let dbc = write_state(ctx, dbc, i, Some(state)).await?;
        if let Ok(mut m) = SUSPECT.lock() {
            m.remove(&key);
        }
        return drive(ctx, dbc, v, i, observed, &by_pod).await.map(Some);
    }
    Ok(requeue.map(Action::requeue))
}

/// Members last seen refused by their primary as ahead of it
/// (`ns/cluster/pod`): the Event goes out once per refusal, not per reconcile.
static REFUSED_AHEAD: LazyLock<Mutex<std::collections::HashSet<String>>> =
    LazyLock::new(|| Mutex::new(std::collections::HashSet::new()));

/// A Warning Event `ReplicaRefusedAhead` when a member starts reporting
/// `linkState: refusedAhead`: its primary's log ends before its own (or in
/// an older epoch), so it does not replicate, keeps its data and retries.
async fn report_refused_ahead(ctx: &Context, dbc: &DatabaseCluster, observed: &[ObservedNode]) {
    let prefix = format!(
        "{}/{}/",
        dbc.namespace().unwrap_or_default(),
        dbc.name_any()
    );
    let fresh = {
        let mut seen = REFUSED_AHEAD.lock().unwrap_or_else(|e| e.into_inner());
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
    seen: &mut std::collections::HashSet<String>,
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

/// Changes the status (and optionally one condition) with the object's
/// resourceVersion as a precondition; returns the updated object.
pub(crate) async fn write_status(
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
            super::now(),
        );
    }
    let api: Api<DatabaseCluster> =
        Api::namespaced(ctx.client.clone(), &dbc.namespace().unwrap_or_default());
    let mut version = dbc.resource_version();
    for attempt in 0..3 {
        let body = json!({
            "metadata": { "resourceVersion": version },
            "status": st,
        });
        match api
            .patch_status(
                &dbc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Metadata changes (annotations, the health monitor's
                // nudge) do not invalidate a decision made on the status;
                // a changed status does (another writer).
                let latest = api.get(&dbc.name_any()).await?;
                if latest.status != dbc.status || attempt == 2 {
                    return Err(Error::Conflict(kube::Error::Api(s)));
                }
                version = latest.resource_version();
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other("status write retries exhausted".into()))
}

/// Sets shard `i`'s failover state.
pub(crate) async fn write_state(
    ctx: &Context,
    dbc: &DatabaseCluster,
    i: usize,
    state: Option<FailoverState>,
) -> Result<DatabaseCluster, Error> {
    write_status(
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

fn blocked_condition(blocked: bool, reason: &str, message: String) -> Cond {
    Cond::new(FAILOVER_BLOCKED, blocked, reason, message)
}

/// One step (or several, when nothing is in the way) of the state machine
/// of shard `i`.
async fn drive(
    ctx: &Context,
    dbc: DatabaseCluster,
    v: &ValidatedCluster,
    i: usize,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Action, Error> {
    let cur = dbc.status.clone().unwrap_or_default();
    let Some(shard) = cur.shards.get(i).cloned() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let Some(state) = shard.failover.clone() else {
        return Ok(Action::requeue(Duration::from_millis(100)));
    };
    let name = dbc.name_any();
    match state.phase.as_str() {
        PHASE_PROMOTING => {
            let target = state.to.clone().unwrap_or_default();
            match by_pod.get(target.as_str()).and_then(|n| admin(n)) {
                Some(addr) => match failover_client()
                    .promote(addr, state.epoch, shard.replicas.len().max(1))
                    .await
                {
                    Ok(info) => {
                        let n = by_pod.get(target.as_str()).copied();
                        finish(ctx, dbc.clone(), v, i, &state, n, &info, observed, false).await
                    }
                    Err(e) => {
                        tracing::warn!(cluster = %name, shard = %shard.name, target = %target, error = %e, "promotion failed; starting over at a newer epoch");
                        restart(ctx, &dbc, i, &shard, &state, by_pod).await
                    }
                },
                None => restart(ctx, &dbc, i, &shard, &state, by_pod).await,
            }
        }
        PHASE_FENCING if state.kind == KIND_SWITCHOVER => {
            super::switchover::step(ctx, dbc.clone(), v, i, &shard, &state, observed, by_pod).await
        }
        // Fencing and Blocked: (re)fence, wait out the lease, choose.
        _ => fence_and_choose(ctx, dbc.clone(), v, i, &shard, &state, observed, by_pod).await,
    }
}

/// The promotion target went away before it was promoted (or the promotion
/// failed): fence again at a newer epoch, so a half-promoted node cannot
/// share an epoch with the next choice.
pub(crate) async fn restart(
    ctx: &Context,
    dbc: &DatabaseCluster,
    i: usize,
    shard: &ShardStatus,
    state: &FailoverState,
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Action, Error> {
    let epoch = next_epoch(shard, by_pod).max(state.epoch + 1);
    let next = FailoverState {
        phase: PHASE_FENCING.into(),
        epoch,
        to: None,
        ..state.clone()
    };
    write_state(ctx, dbc, i, Some(next)).await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn fence_and_choose(
    ctx: &Context,
    dbc: DatabaseCluster,
    v: &ValidatedCluster,
    i: usize,
    shard: &ShardStatus,
    state: &FailoverState,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Action, Error> {
    let name = dbc.name_any();
    let started = Instant::now();
    // Fence every member with an address, the failed primary included (if
    // it answers, it is demoted at once and holds every acknowledged write).
    let targets: Vec<(&ObservedNode, SocketAddr)> = members(shard)
        .iter()
        .filter_map(|p| by_pod.get(p.as_str()).copied())
        .filter_map(|n| admin(n).map(|a| (n, a)))
        .collect();
    let fast = failover_client();
    let results =
        futures::future::join_all(targets.iter().map(|(_, a)| fast.fence(*a, state.epoch))).await;
    let mut candidates = Vec::new();
    let mut newly_fenced = false;
    let mut old_primary_fenced = false;
    let mut lease_ms = 0u64;
    for ((n, _), r) in targets.iter().zip(results) {
        match r {
            Ok(info) => {
                let was = n.info.as_ref().map_or(0, |i| i.fencing_epoch);
                newly_fenced |= was < state.epoch;
                lease_ms = lease_ms.max(info.replication.lease_ms);
                let old = n.pod == state.from;
                old_primary_fenced |= old;
                candidates.push(Candidate {
                    pod: n.pod.clone(),
                    lsn: info.lsn,
                    last_record_epoch: info.last_record_epoch(),
                    old_primary: old,
                    resyncing: info.replication.resyncing,
                });
            }
            Err(e) if e.is_stale_epoch() => {
                // Someone fenced above our epoch (an older leader's run, or a
                // node that saw a newer one): start over above it.
                tracing::warn!(cluster = %name, pod = %n.pod, error = %e, "a member has seen a newer epoch");
                return restart(ctx, &dbc, i, shard, state, by_pod).await;
            }
            Err(e) => {
                tracing::info!(cluster = %name, pod = %n.pod, error = %e, "member not fenced (unreachable)");
            }
        }
    }
    // Wait out the old primary's lease, unless it was fenced itself (then it
    // is demoted and acknowledges nothing) or every member answering was
    // already fenced at this epoch before (a resumed step).
    let wait_ms = if old_primary_fenced || !newly_fenced {
        0
    } else {
        plan::lease_wait_ms(if lease_ms == 0 {
            DEFAULT_LEASE_MS
        } else {
            lease_ms
        })
    };
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms).saturating_sub(started.elapsed())).await;
    }
    let rule = AckRule::new(
        v.spec.consistency.level,
        v.spec.consistency.quorum_percentage,
        shard.replicas.len(),
    );
    let choice = plan::choose(
        &candidates,
        rule,
        v.spec.consistency.level,
        v.spec.failover.allow_data_loss,
    );
    match choice {
        Choice::Blocked(b) => {
            let message = format!("{}: {b}", shard.name);
            let already = state.phase == PHASE_BLOCKED && state.reason.as_deref() == Some(&message);
            if !already {
                tracing::warn!(cluster = %name, shard = %shard.name, reason = b.reason(), "failover blocked");
                ctx.event(
                    &dbc,
                    EventType::Warning,
                    FAILOVER_BLOCKED,
                    "Failover",
                    message.clone(),
                )
                .await;
                let next = FailoverState {
                    phase: PHASE_BLOCKED.into(),
                    reason: Some(message.clone()),
                    ..state.clone()
                };
                let cond = blocked_condition(true, b.reason(), message);
                write_status(
                    ctx,
                    &dbc,
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
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Choice::Promote {
            pod,
            lsn,
            data_loss_possible,
        } => {
            tracing::info!(cluster = %name, shard = %shard.name, target = %pod, lsn, data_loss_possible, epoch = state.epoch, "promoting");
            let next = FailoverState {
                phase: PHASE_PROMOTING.into(),
                to: Some(pod.clone()),
                ..state.clone()
            };
            let dbc = write_state(ctx, &dbc, i, Some(next.clone())).await?;
            let Some(n) = by_pod.get(pod.as_str()).copied() else {
                return restart(ctx, &dbc, i, shard, &next, by_pod).await;
            };
            let Some(addr) = admin(n) else {
                return restart(ctx, &dbc, i, shard, &next, by_pod).await;
            };
            match failover_client()
                .promote(addr, next.epoch, shard.replicas.len().max(1))
                .await
            {
                Ok(info) => {
                    finish(
                        ctx,
                        dbc,
                        v,
                        i,
                        &next,
                        Some(n),
                        &info,
                        observed,
                        data_loss_possible,
                    )
                    .await
                }
                Err(e) => {
                    tracing::warn!(cluster = %name, target = %pod, error = %e, "promotion failed");
                    restart(ctx, &dbc, i, shard, &next, by_pod).await
                }
            }
        }
    }
}

/// Records the new primary, pushes the topology, moves the role labels.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    ctx: &Context,
    dbc: DatabaseCluster,
    _v: &ValidatedCluster,
    i: usize,
    state: &FailoverState,
    target: Option<&ObservedNode>,
    info: &NodeInfo,
    observed: &[ObservedNode],
    data_loss_possible: bool,
) -> Result<Action, Error> {
    let name = dbc.name_any();
    let ns = dbc.namespace().unwrap_or_default();
    let cur = dbc.status.clone().unwrap_or_default();
    let Some(old) = cur.shards.get(i).cloned() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let Some(primary) = target.and_then(|n| node_status(n, info)) else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    // The replicas are the members that answer. Those that do not (the
    // failed primary, replicas that are down) leave the topology, and so the
    // acknowledgement set, until they answer again: the reconcile's
    // topology plan adds a pod back as soon as it answers (as on scale-up),
    // it then follows the new primary and the old primary drops its
    // unacknowledged suffix. Keeping them would leave `k = n` shards (a
    // 3-node quorum, strong) unable to acknowledge anything until the
    // failed node returns, which would make the failover pointless. The
    // next failover's rule is computed on the same, smaller topology, which
    // is what the nodes acknowledge by, so the proof still holds.
    let mut replicas: Vec<NodeStatus> = old
        .primary
        .iter()
        .chain(old.replicas.iter())
        .filter(|r| r.pod != primary.pod)
        .filter_map(|r| {
            observed
                .iter()
                .find(|n| n.pod == r.pod)
                .and_then(|n| n.info.as_ref().and_then(|i| node_status(n, i)))
        })
        .collect();
    replicas.sort_by(|a, b| a.pod.cmp(&b.pod));
    // A switchover that could not be made safe gives the shard back to its
    // old primary (at the new epoch) and records nothing as done.
    let aborted = primary.pod == state.from;
    let duration_ms = since_ms(&state.started_at);
    let last = LastFailover {
        kind: state.kind.clone(),
        from: state.from.clone(),
        to: primary.pod.clone(),
        epoch: state.epoch,
        started_at: state.started_at.clone(),
        duration_ms,
        data_loss_possible,
    };
    let max_node_epoch = observed
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
            s.last_failover = Some(last.clone());
        }
    }
    let still_blocked = shards.iter().any(|s| {
        s.failover
            .as_ref()
            .is_some_and(|f| f.phase == PHASE_BLOCKED)
    });
    let cond = (!still_blocked).then(|| blocked_condition(false, "AsExpected", String::new()));
    let shards_for_status = shards.clone();
    let dbc = write_status(
        ctx,
        &dbc,
        move |st| {
            st.epoch = topo_epoch;
            st.shards = shards_for_status;
        },
        cond,
    )
    .await?;
    let note = format!(
        "{}: {} {} → {} at epoch {} in {} ms{}",
        old.name,
        state.kind.to_lowercase(),
        state.from,
        primary.pod,
        state.epoch,
        duration_ms,
        if data_loss_possible {
            " (the safety rule did not hold: writes the old primary acknowledged after the new primary's position may be lost)"
        } else {
            ""
        }
    );
    tracing::info!(cluster = %name, namespace = %ns, shard = %old.name, from = %state.from, to = %primary.pod, epoch = state.epoch, duration_ms, data_loss_possible, kind = %state.kind, "failover complete");
    let note = if aborted {
        format!(
            "{}: switchover aborted, {} stays primary at epoch {}: {}",
            old.name,
            state.from,
            state.epoch,
            state.reason.as_deref().unwrap_or("")
        )
    } else {
        note
    };
    ctx.event(
        &dbc,
        if data_loss_possible || aborted {
            EventType::Warning
        } else {
            EventType::Normal
        },
        if aborted {
            "SwitchoverAborted"
        } else if state.kind == KIND_SWITCHOVER {
            "SwitchedOver"
        } else {
            "FailedOver"
        },
        &state.kind,
        note,
    )
    .await;
    let p = topology::Plan {
        epoch: topo_epoch,
        shards,
        changed: true,
        bootstrap: false,
    };
    // The promoted node already serves writes; the push makes the others
    // follow it and tells clients (CLUSTER SLOTS) where the slots went.
    let pushed = super::push_topology(ctx, observed, &p).await;
    super::label_roles(ctx, &ns, observed, &p.shards).await?;
    if let Err(e) = pushed {
        tracing::warn!(cluster = %name, error = %e, "topology push after failover incomplete; the next reconcile retries");
    }
    Ok(Action::requeue(Duration::from_millis(500)))
}

/// When the monitor last woke the controller for a lost lease.
static LEASE_NUDGED: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Annotation the health monitor bumps to wake the controller for a
/// cluster whose primary looks failed (pod events do not cover a hung or
/// cut-off process).
pub const NUDGE_ANNOTATION: &str = "tessera.dev/failover-check";

/// Polls every bootstrapped cluster's shard primaries once a second (one
/// `/v1/status` call each, 1 s timeout) and wakes the controller, by
/// bumping [`NUDGE_ANNOTATION`], when one looks failed and detection has not
/// started yet. Runs only on the leader, until the process ends.
pub async fn monitor(client: kube::Client) {
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    let api: Api<DatabaseCluster> = Api::all(client.clone());
    let (reader, writer) = reflector::store::<DatabaseCluster>();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .applied_objects()
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    let nodes = crate::client::NodeClient {
        timeout: Duration::from_secs(1),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for dbc in reader.state() {
            let Some(st) = dbc.status.as_ref() else {
                continue;
            };
            if st.epoch == 0 || dbc.spec.paused || st.shards.iter().any(|s| s.failover.is_some()) {
                continue;
            }
            let ns = dbc.namespace().unwrap_or_default();
            let checks = st
                .shards
                .iter()
                .filter(|s| !s.replicas.is_empty())
                .filter_map(|s| {
                    let key = format!("{ns}/{}/{}", dbc.name_any(), s.name);
                    let already = SUSPECT.lock().map(|m| m.contains_key(&key)).unwrap_or(true);
                    let p = s.primary.as_ref()?;
                    let addr = topology::admin_addr(&p.ip)?;
                    let lease_key = lease_key(&ns, &dbc.name_any(), s);
                    (!already).then(|| {
                        let nodes = nodes.clone();
                        let id = p.node_id.clone();
                        async move {
                            let failed = match nodes.status(addr).await {
                                Ok(i) if !(i.ready && i.role == "primary" && i.node_id == id) => {
                                    true
                                }
                                // A lost lease only wakes the reconcile (which
                                // sees the replicas too and judges it), once
                                // the lease was seen held, and at most every
                                // 10 s: replicas that stay down keep it lost.
                                Ok(i) => {
                                    i.replication.consistency != "eventual"
                                        && !i.replication.lease_held
                                        && LEASE_SEEN
                                            .lock()
                                            .map(|m| m.contains(&lease_key))
                                            .unwrap_or(false)
                                        && LEASE_NUDGED
                                            .lock()
                                            .map(|mut m| {
                                                let due = m.get(&lease_key).is_none_or(|t| {
                                                    t.elapsed() > Duration::from_secs(10)
                                                });
                                                if due {
                                                    m.insert(lease_key.clone(), Instant::now());
                                                }
                                                due
                                            })
                                            .unwrap_or(false)
                                }
                                Err(_) => true,
                            };
                            failed.then_some(key)
                        }
                    })
                });
            let failed: Vec<String> = futures::future::join_all(checks)
                .await
                .into_iter()
                .flatten()
                .collect();
            if failed.is_empty() {
                continue;
            }
            // Detection counts from here: the reconcile's own status calls
            // wait up to their timeout on a hung node.
            if let Ok(mut m) = SUSPECT.lock() {
                for key in failed {
                    m.entry(key).or_insert_with(Instant::now);
                }
            }
            let api: Api<DatabaseCluster> = Api::namespaced(client.clone(), &ns);
            let patch = json!({ "metadata": { "annotations": { NUDGE_ANNOTATION: k8s_openapi::jiff::Timestamp::now().to_string() } } });
            match api
                .patch(
                    &dbc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(cluster = %dbc.name_any(), namespace = %ns, "a primary looks failed; waking the controller")
                }
                Err(e) => {
                    tracing::warn!(cluster = %dbc.name_any(), error = %e, "could not wake the controller")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ReplicationInfo;

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
        let mut seen = std::collections::HashSet::new();
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
