//! Switchover: a planned change of a shard's primary with no acknowledged
//! write lost.
//!
//! Requested with the annotation `tessera.dev/switchover: "<shard>[:<pod>]"`
//! on the `DatabaseCluster` (`tessera switchover` sets it; the rolling update
//! sets it before restarting a primary). It runs as the same state machine
//! as a failover (`kind: Switchover`):
//!
//! 1. fence the old primary at the new epoch: it demotes at once, so writes
//!    pause (clients get `-READONLY`/`-MOVED` and retry) and its log ends at
//!    a known LSN `L`; no lease wait is needed, it acknowledges nothing more;
//! 2. read where the replicas' logs end (frozen now: nothing feeds them) and
//!    pick the target: the requested pod, or the replica whose log is the
//!    most up to date ([`LogEnd`]: the epoch of its last record, then LSN);
//! 3. check the target holds every acknowledged write ([`safe_target`]);
//! 4. promote it, push the topology (the others, the old primary included,
//!    follow it), move the role labels; writes resume.
//!
//! If step 3 fails, the old primary is promoted again at the new epoch (the
//! switchover is aborted with an Event; nothing is lost); if the old
//! primary does not answer in step 1, the switchover becomes a failover.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;

use super::failover::plan::{self, log_end, AckRule, LogEnd};
use super::failover::primary_view;
use super::shard::{self, admin, failover_client, Kind, Phase, ShardOp};
use crate::api::{ConsistencyLevel, DatabaseCluster, FailoverState, ShardStatus};
use crate::operator::context::{Context, Error};
use crate::operator::topology::ObservedNode;
use crate::operator::validate::ValidatedCluster;

pub const SWITCHOVER_ANNOTATION: &str = "tessera.dev/switchover";

/// Where a switchover request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// The `tessera.dev/switchover` annotation (cleared when it starts).
    Annotation(String),
    /// A primary on a cordoned node (`placement::drain_switchover`).
    Drain(String),
}

/// Removes the request annotation (with the version read: a newer request
/// conflicts and is read again).
async fn clear_annotation(ctx: &Context, dbc: &DatabaseCluster) -> Result<DatabaseCluster, Error> {
    let api: Api<DatabaseCluster> =
        Api::namespaced(ctx.client.clone(), &dbc.namespace().unwrap_or_default());
    let patch = json!({ "metadata": {
        "resourceVersion": dbc.resource_version(),
        "annotations": { SWITCHOVER_ANNOTATION: null } } });
    match api
        .patch(
            &dbc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(o),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict(kube::Error::Api(s))),
        Err(e) => Err(e.into()),
    }
}

/// A parsed request: shard index and an optional target pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub shard: usize,
    pub to: Option<String>,
}

/// Parses `<shard>[:<pod>]`, where `<shard>` is an index or a shard name.
pub fn parse_request(value: &str, shards: &[ShardStatus]) -> Result<Request, String> {
    let (shard, to) = match value.trim().split_once(':') {
        Some((s, p)) => (
            s.trim(),
            Some(p.trim().to_string()).filter(|p| !p.is_empty()),
        ),
        None => (value.trim(), None),
    };
    let index = match shard.parse::<usize>() {
        Ok(i) => i,
        Err(_) => shards
            .iter()
            .position(|s| s.name == shard)
            .ok_or_else(|| format!("no shard {shard:?} (use an index or a shard name)"))?,
    };
    let Some(s) = shards.get(index) else {
        return Err(format!(
            "shard {index} does not exist ({} shards)",
            shards.len()
        ));
    };
    if let Some(p) = &to {
        if !s.replicas.iter().any(|r| &r.pod == p) {
            return Err(format!("{p} is not a replica of {}", s.name));
        }
    }
    Ok(Request { shard: index, to })
}

/// Whether promoting a replica whose log ends at `target` keeps every
/// acknowledged write, once the old primary's log ended at `old` and the
/// most up-to-date replica log ends at `max_replica` (logs compared as
/// [`LogEnd`]s: the epoch of the last record, then the LSN).
///
/// - `k = n` (`strong`, or `quorum` whose rule names every replica): every
///   acknowledged write is on every replica; records past the target are
///   unacknowledged (their clients got an error when the primary demoted).
/// - `1 ≤ k < n`: an acknowledged write is on `k ≥ 1` replicas, so on the
///   most up-to-date replica: the target must be at least there.
/// - `eventual`: the primary acknowledged everything in its log: the target
///   must have all of it.
pub fn safe_target(
    level: ConsistencyLevel,
    rule: AckRule,
    old: LogEnd,
    target: LogEnd,
    max_replica: LogEnd,
) -> Result<(), String> {
    let need = if level == ConsistencyLevel::Eventual || rule.k == 0 {
        old
    } else if rule.k >= rule.n {
        LogEnd::default()
    } else {
        max_replica
    };
    if target >= need {
        Ok(())
    } else if target.epoch == need.epoch {
        Err(format!(
            "the target is at LSN {}, {} record(s) short of LSN {} that may hold acknowledged writes",
            target.lsn,
            need.lsn - target.lsn,
            need.lsn
        ))
    } else {
        Err(format!(
            "the target's log ends at {target}, before a log ending at {need} that may hold acknowledged writes"
        ))
    }
}

/// The requested pod, or the ready replica whose log is the most up to
/// date (ties: the lowest pod name).
pub fn pick_target(requested: Option<&str>, replicas: &[(String, LogEnd, bool)]) -> Option<String> {
    if let Some(r) = requested {
        return replicas
            .iter()
            .any(|(p, _, ok)| p == r && *ok)
            .then(|| r.to_string());
    }
    replicas
        .iter()
        .filter(|(_, _, ok)| *ok)
        .max_by_key(|(p, end, _)| (*end, std::cmp::Reverse(p.clone())))
        .map(|(p, _, _)| p.clone())
}

/// Sets the annotation (what `tessera switchover` and the rolling update do).
pub async fn request(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    value: &str,
) -> Result<(), kube::Error> {
    let api: Api<DatabaseCluster> = Api::namespaced(client.clone(), namespace);
    let patch = json!({ "metadata": { "annotations": { SWITCHOVER_ANNOTATION: value } } });
    api.patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Starts the switchover the annotation asks for (the annotation is removed
/// first: a crash before the state is recorded drops the request rather
/// than running it twice).
pub async fn start_requested(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
    request: &Requested,
) -> Result<Option<Action>, Error> {
    let (value, reason) = match request {
        Requested::Annotation(value) => (value.clone(), format!("requested: {value:?}")),
        Requested::Drain(value) => (
            value.clone(),
            format!("drain: the primary's node is cordoned ({value})"),
        ),
    };
    let dbc = match request {
        Requested::Annotation(_) => clear_annotation(ctx, dbc).await?,
        Requested::Drain(_) => dbc.clone(),
    };
    let st = dbc.status.clone().unwrap_or_default();
    let req = match parse_request(&value, &st.shards) {
        Ok(r) => r,
        Err(e) => return refuse(ctx, &dbc, &value, e).await,
    };
    let Some(shard) = st.shards.get(req.shard) else {
        return refuse(ctx, &dbc, &value, "no such shard".into()).await;
    };
    if shard.replicas.is_empty() {
        return refuse(ctx, &dbc, &value, format!("{} has no replica", shard.name)).await;
    }
    let failure = match primary_view(&ctx.detector, shard, by_pod, v) {
        Some(view) => plan::primary_failure(&view),
        None => Some("NoPrimary"),
    };
    if let Some(reason) = failure {
        let why = format!(
            "the primary of {} is not healthy ({reason}); failover handles it",
            shard.name
        );
        return refuse(ctx, &dbc, &value, why).await;
    }
    let from = shard
        .primary
        .as_ref()
        .map(|p| p.pod.clone())
        .unwrap_or_default();
    let state = FailoverState {
        phase: Phase::Fencing.as_str().into(),
        kind: Kind::Switchover.as_str().into(),
        epoch: shard::next_epoch(shard, by_pod),
        from: from.clone(),
        to: req.to.clone(),
        started_at: k8s_openapi::jiff::Timestamp::now().to_string(),
        reason: Some(reason),
        timing: None,
    };
    tracing::info!(cluster = %dbc.name_any(), shard = %shard.name, from = %from, to = ?req.to, epoch = state.epoch, "starting switchover");
    ctx.event(
        &dbc,
        EventType::Normal,
        "SwitchoverStarted",
        "Switchover",
        format!(
            "{}: switching over from {from}{} at epoch {}",
            shard.name,
            req.to
                .as_deref()
                .map(|t| format!(" to {t}"))
                .unwrap_or_default(),
            state.epoch
        ),
    )
    .await;
    let shard = shard.clone();
    let dbc = shard::write_state(ctx, &dbc, req.shard, Some(state.clone())).await?;
    let op = ShardOp {
        ctx,
        v,
        i: req.shard,
        shard,
        observed,
        by_pod,
    };
    fence_old_primary(&op, dbc, &state).await.map(Some)
}

async fn refuse(
    ctx: &Context,
    dbc: &DatabaseCluster,
    value: &str,
    why: String,
) -> Result<Option<Action>, Error> {
    tracing::warn!(cluster = %dbc.name_any(), request = %value, reason = %why, "switchover refused");
    ctx.event(
        dbc,
        EventType::Warning,
        "SwitchoverRefused",
        "Switchover",
        format!("switchover {value:?} refused: {why}"),
    )
    .await;
    Ok(Some(Action::requeue(Duration::from_millis(100))))
}

/// The `Fencing` step of a switchover: fence the old primary alone, read
/// where the replicas' logs end, pick and check the target, promote.
pub async fn fence_old_primary(
    op: &ShardOp<'_>,
    dbc: DatabaseCluster,
    state: &FailoverState,
) -> Result<Action, Error> {
    let name = dbc.name_any();
    let fenced = match op.node(&state.from).and_then(admin) {
        Some(addr) => failover_client().fence(addr, state.epoch).await,
        None => {
            return as_failover(op, &dbc, state, "the old primary has no address").await;
        }
    };
    let old = match fenced {
        Ok(info) => log_end(&info),
        Err(e) if e.is_stale_epoch() => {
            return shard::restart(op, &dbc, state).await;
        }
        Err(e) => {
            let why = format!("the old primary did not answer: {e}");
            return as_failover(op, &dbc, state, &why).await;
        }
    };
    // Records already on the wire reach the replicas; nothing new follows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = replica_ends(op).await;
    let max_end = seen.iter().map(|s| s.1).max().unwrap_or_default();
    let spec = &op.v.spec;
    let rule = AckRule::new(
        spec.consistency.level,
        spec.consistency.quorum_percentage,
        op.shard.replicas.len(),
    );
    let target = pick_target(state.to.as_deref(), &seen);
    let verdict = match &target {
        None => Err("no ready replica answered".to_string()),
        Some(t) => {
            let end = seen
                .iter()
                .find(|(p, _, _)| p == t)
                .map_or(LogEnd::default(), |s| s.1);
            safe_target(spec.consistency.level, rule, old, end, max_end)
        }
    };
    let next = match (target, verdict) {
        (Some(t), Ok(())) => {
            tracing::info!(cluster = %name, shard = %op.shard.name, target = %t, old_lsn = old.lsn, old_last_record_epoch = old.epoch, epoch = state.epoch, "switchover: promoting");
            FailoverState {
                phase: Phase::Promoting.as_str().into(),
                to: Some(t),
                ..state.clone()
            }
        }
        (_, verdict) => {
            let why = verdict.err().unwrap_or_else(|| "no target".into());
            tracing::warn!(cluster = %name, shard = %op.shard.name, reason = %why, "switchover not safe; the old primary stays");
            FailoverState {
                phase: Phase::Promoting.as_str().into(),
                to: Some(state.from.clone()),
                reason: Some(why),
                ..state.clone()
            }
        }
    };
    let dbc = shard::write_state(op.ctx, &dbc, op.i, Some(next.clone())).await?;
    shard::promote(op, dbc, &next, false).await
}

/// Where each answering replica's log ends, and whether it may be
/// promoted (ready, not resyncing).
async fn replica_ends(op: &ShardOp<'_>) -> Vec<(String, LogEnd, bool)> {
    let replicas: Vec<&ObservedNode> = op
        .shard
        .replicas
        .iter()
        .filter_map(|r| op.node(&r.pod))
        .collect();
    let answers = futures::future::join_all(replicas.iter().map(|n| async move {
        match admin(n) {
            Some(a) => failover_client().status(a).await.ok(),
            None => None,
        }
    }))
    .await;
    replicas
        .iter()
        .zip(answers)
        .filter_map(|(n, a)| {
            a.map(|i| {
                let ok = i.ready && !i.replication.resyncing;
                (n.pod.clone(), log_end(&i), ok)
            })
        })
        .collect()
}

/// The old primary is gone: continue as a failover (fence everyone, wait
/// out the lease, apply the safety rule).
async fn as_failover(
    op: &ShardOp<'_>,
    dbc: &DatabaseCluster,
    state: &FailoverState,
    why: &str,
) -> Result<Action, Error> {
    let next = FailoverState {
        kind: Kind::Failover.as_str().into(),
        reason: Some(format!("switchover became a failover: {why}")),
        ..state.clone()
    };
    shard::write_state(op.ctx, dbc, op.i, Some(next)).await?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;
    use ConsistencyLevel::*;

    fn shard() -> Vec<ShardStatus> {
        let n = |p: &str| NodeStatus {
            pod: p.into(),
            ..Default::default()
        };
        vec![ShardStatus {
            name: "c-shard-0".into(),
            primary: Some(n("c-shard-0-0")),
            replicas: vec![n("c-shard-0-1"), n("c-shard-0-2")],
            ..Default::default()
        }]
    }

    #[test]
    fn requests_parse() {
        let s = shard();
        assert_eq!(parse_request("0", &s), Ok(Request { shard: 0, to: None }));
        assert_eq!(
            parse_request("c-shard-0:c-shard-0-2", &s),
            Ok(Request {
                shard: 0,
                to: Some("c-shard-0-2".into())
            })
        );
        assert!(parse_request("3", &s).is_err());
        assert!(parse_request("0:c-shard-0-0", &s)
            .unwrap_err()
            .contains("not a replica"));
        assert!(parse_request("nope", &s).is_err());
    }

    fn at(epoch: u64, lsn: u64) -> LogEnd {
        LogEnd { epoch, lsn }
    }

    #[test]
    fn target_safety() {
        let e = |lsn| at(3, lsn);
        // 3 nodes quorum: k = n = 2, any replica holds every acknowledged write.
        let all = AckRule::new(Quorum, None, 2);
        assert!(safe_target(Quorum, all, e(100), e(99), e(99)).is_ok());
        // n = 4, k = 3: the target must be the most advanced replica.
        let most = AckRule::new(Quorum, None, 4);
        assert!(safe_target(Quorum, most, e(100), e(98), e(99)).is_err());
        assert!(safe_target(Quorum, most, e(100), e(99), e(99)).is_ok());
        // Eventual: everything in the old primary's log was acknowledged.
        let ev = AckRule::new(Eventual, None, 2);
        assert!(safe_target(Eventual, ev, e(100), e(99), e(99))
            .unwrap_err()
            .contains("1 record(s) short"));
        assert!(safe_target(Eventual, ev, e(100), e(100), e(100)).is_ok());
    }

    #[test]
    fn target_safety_compares_the_epoch_of_the_last_record_first() {
        let most = AckRule::new(Quorum, None, 4);
        // The most up-to-date replica ends in epoch 3 at LSN 90; a target
        // with a longer log of epoch 2 lacks its epoch-3 records.
        let err = safe_target(Quorum, most, at(3, 95), at(2, 150), at(3, 90)).unwrap_err();
        assert!(
            err.contains("LSN 150 (epoch 2)") && err.contains("LSN 90 (epoch 3)"),
            "{err}"
        );
        assert!(safe_target(Quorum, most, at(3, 95), at(3, 90), at(3, 90)).is_ok());
        let ev = AckRule::new(Eventual, None, 2);
        assert!(safe_target(Eventual, ev, at(3, 95), at(2, 200), at(2, 200)).is_err());
    }

    #[test]
    fn targets() {
        let r = vec![
            ("a".to_string(), at(1, 5), true),
            ("b".to_string(), at(1, 9), true),
            ("c".to_string(), at(1, 12), false),
        ];
        assert_eq!(pick_target(None, &r).as_deref(), Some("b"));
        assert_eq!(pick_target(Some("a"), &r).as_deref(), Some("a"));
        assert_eq!(pick_target(Some("c"), &r), None);
        // A newer epoch beats a longer log of an older one; ties: lowest name.
        let r = vec![
            ("a".to_string(), at(1, 50), true),
            ("b".to_string(), at(2, 9), true),
            ("c".to_string(), at(2, 9), true),
        ];
        assert_eq!(pick_target(None, &r).as_deref(), Some("b"));
    }
}
