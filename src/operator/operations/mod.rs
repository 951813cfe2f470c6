//! Operations: the multi-step procedures the operator runs on a cluster
//! (failover, switchover, restore, resharding). Each
//! has typed phases, a pure planner from the observed cluster and the
//! recorded operation state to the next step, and an executor for that
//! step. The state lives in the status (`status.shards[i].failover`,
//! `status.restore`), written through the one status writer
//! ([`crate::operator::writer`]), so a restarted operator resumes where the
//! last one stopped.
//!
//! [`schedule`] is the one place that decides which operation runs: at
//! most one shard operation at a time (an operation in progress resumes
//! first, one shard per reconcile; a requested switchover starts only when
//! none runs; failure detection only then), and none before the cluster is
//! bootstrapped, when only the restore can run. Resharding, the one
//! cluster-wide operation, takes a step when no failover runs or starts;
//! a requested switchover waits while slot moves are in progress.

pub mod failover;
pub mod rebuild;
pub mod reshard;
pub mod restore;
pub mod shard;
pub mod switchover;

use std::collections::BTreeMap;

use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::context::{Context, Error};
use super::observe::Observed;
use super::placement;
use super::topology::ObservedNode;
use super::validate::ValidatedCluster;
use crate::api::{DatabaseCluster, DatabaseClusterStatus};
use shard::{ShardOp, Step};

/// Which operation the reconcile runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduled {
    /// Not bootstrapped: no shard operation can run; a restore may.
    Bootstrap,
    /// Shard `shard` has an operation in progress: resume it at `step`.
    Resume { shard: usize, step: Step },
    /// A switchover was requested (annotation) and nothing else runs.
    StartSwitchover { request: String },
    /// Nothing runs: look for failed primaries.
    Detect,
}

/// The scheduler, a pure function of the recorded status and the pending
/// switchover request.
pub fn schedule(prev: &DatabaseClusterStatus, switchover_request: Option<&str>) -> Scheduled {
    if prev.epoch == 0 || prev.shards.is_empty() {
        return Scheduled::Bootstrap;
    }
    // An operation in progress goes first, one shard per reconcile.
    let running = prev
        .shards
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.failover.as_ref().map(|f| (i, f)));
    if let Some((shard, state)) = running {
        return Scheduled::Resume {
            shard,
            step: shard::plan(state),
        };
    }
    match switchover_request.filter(|_| !reshard::in_progress(prev)) {
        Some(r) => Scheduled::StartSwitchover {
            request: r.to_string(),
        },
        None => Scheduled::Detect,
    }
}

/// What the rest of the reconcile does after the operations had their turn.
#[derive(Debug)]
pub enum Next {
    /// An operation took the reconcile over: return this.
    Done(Action),
    /// Build, apply and record as usual; `restored` is a restore that
    /// completed in this reconcile (recorded with the rest of the status).
    Continue {
        restored: Option<Box<restore::Outcome>>,
        /// The resharding step taken in this reconcile.
        reshard: Option<Box<reshard::Outcome>>,
    },
}

/// Runs the step of the operation [`schedule`] picks. Failover goes first:
/// a failed primary is replaced before anything else, and no topology is
/// pushed for a shard in the middle of one.
pub async fn next_step(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Result<Next, Error> {
    // An explicit request first; else a primary on a cordoned node (a
    // drain) is moved before its eviction (its PodDisruptionBudget holds
    // the eviction until then).
    let request = match dbc.annotations().get(switchover::SWITCHOVER_ANNOTATION) {
        Some(a) => Some(switchover::Requested::Annotation(a.clone())),
        None => placement::drain_switchover(&prev.shards, &observed.nodes, &observed.placement)
            .map(switchover::Requested::Drain),
    };
    let value = request.as_ref().map(|r| match r {
        switchover::Requested::Annotation(v) | switchover::Requested::Drain(v) => v.as_str(),
    });
    let scheduled = schedule(prev, value);
    if scheduled == Scheduled::Bootstrap {
        return bootstrap_step(ctx, dbc, v, prev, observed).await;
    }
    let nodes = &observed.nodes;
    let by_pod: BTreeMap<&str, &ObservedNode> = nodes.iter().map(|n| (n.pod.as_str(), n)).collect();
    failover::report_refused_ahead(ctx, dbc, nodes).await;
    let action = match scheduled {
        Scheduled::Bootstrap => None,
        Scheduled::Resume { shard, step } => {
            Some(resume(ctx, dbc.clone(), v, shard, step, nodes, &by_pod).await?)
        }
        Scheduled::StartSwitchover { .. } => match &request {
            Some(r) => switchover::start_requested(ctx, dbc, v, nodes, &by_pod, r).await?,
            None => None,
        },
        Scheduled::Detect => failover::detect(ctx, dbc, v, prev, nodes, &by_pod).await?,
    };
    if let Some(a) = action {
        return Ok(Next::Done(a));
    }
    // No failover runs or starts: resharding takes its step.
    let step = match scheduled {
        Scheduled::Detect => reshard::step(ctx, dbc, v, prev, observed)
            .await?
            .map(Box::new),
        _ => None,
    };
    // Bootstrapped: a restore has nothing left to do.
    Ok(match bootstrap_step(ctx, dbc, v, prev, observed).await? {
        Next::Continue { restored, .. } => Next::Continue {
            restored,
            reshard: step,
        },
        done => done,
    })
}

/// Runs the recorded step of shard `i`'s operation.
async fn resume(
    ctx: &Context,
    dbc: DatabaseCluster,
    v: &ValidatedCluster,
    i: usize,
    step: Step,
    observed: &[ObservedNode],
    by_pod: &BTreeMap<&str, &ObservedNode>,
) -> Result<Action, Error> {
    let cur = dbc.status.clone().unwrap_or_default();
    let Some(shard) = cur.shards.get(i).cloned() else {
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    };
    let Some(state) = shard.failover.clone() else {
        return Ok(Action::requeue(std::time::Duration::from_millis(100)));
    };
    let op = ShardOp {
        ctx,
        v,
        i,
        shard,
        observed,
        by_pod,
    };
    match step {
        Step::Promote => shard::promote(&op, dbc, &state, false).await,
        Step::FenceOldPrimary => switchover::fence_old_primary(&op, dbc, &state).await,
        Step::FenceAndChoose => failover::fence_and_choose(&op, dbc, &state).await,
    }
}

/// A cluster bootstrapping from a backup: nothing runs until every node's
/// volume holds the restored data.
async fn bootstrap_step(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Result<Next, Error> {
    let Some(o) = restore::decide(
        v,
        prev.epoch > 0,
        prev.restore.as_ref(),
        &observed.jobs,
        &observed.job_pods,
    ) else {
        return Ok(Next::Continue {
            restored: None,
            reshard: None,
        });
    };
    if o.next != restore::Next::Proceed {
        // Claims and Jobs for the backup's shards (resharding to the
        // spec's count comes after the bootstrap).
        let v =
            &restore::bootstrap_shards(&o.status).map_or_else(|| v.clone(), |n| v.with_shards(n));
        return restore::execute::step(ctx, dbc, v, observed, prev, o)
            .await
            .map(Next::Done);
    }
    Ok(Next::Continue {
        restored: Some(Box::new(o)),
        reshard: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FailoverState, ShardStatus};

    fn status(failover: &[Option<(&str, &str)>]) -> DatabaseClusterStatus {
        DatabaseClusterStatus {
            epoch: 3,
            shards: failover
                .iter()
                .enumerate()
                .map(|(i, f)| ShardStatus {
                    name: format!("c-shard-{i}"),
                    failover: f.map(|(phase, kind)| FailoverState {
                        phase: phase.into(),
                        kind: kind.into(),
                        epoch: 5,
                        from: format!("c-shard-{i}-0"),
                        to: None,
                        started_at: "2026-01-01T00:00:00Z".into(),
                        reason: None,
                        timing: None,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_runs_on_shards_before_the_bootstrap() {
        assert_eq!(
            schedule(&DatabaseClusterStatus::default(), Some("0")),
            Scheduled::Bootstrap
        );
        let mut s = status(&[None]);
        s.epoch = 0;
        assert_eq!(schedule(&s, None), Scheduled::Bootstrap);
    }

    #[test]
    fn an_operation_in_progress_excludes_any_other() {
        let s = status(&[
            None,
            Some(("Promoting", "Failover")),
            Some(("Fencing", "Failover")),
        ]);
        // One shard at a time, the first in progress; a requested switchover
        // waits (its annotation stays until nothing runs).
        assert_eq!(
            schedule(&s, Some("0")),
            Scheduled::Resume {
                shard: 1,
                step: Step::Promote
            }
        );
        let idle = status(&[None, None]);
        assert_eq!(
            schedule(&idle, Some("1")),
            Scheduled::StartSwitchover {
                request: "1".into()
            }
        );
        assert_eq!(schedule(&idle, None), Scheduled::Detect);
    }

    /// A restarted operator has only the recorded status: in every phase of
    /// either kind it resumes the operation (the same shard, the same step)
    /// rather than starting another.
    #[test]
    fn an_operator_restarted_in_every_phase_resumes_correctly() {
        for (phase, kind, step) in [
            ("Fencing", "Failover", Step::FenceAndChoose),
            ("Fencing", "Switchover", Step::FenceOldPrimary),
            ("Promoting", "Failover", Step::Promote),
            ("Promoting", "Switchover", Step::Promote),
            ("Blocked", "Failover", Step::FenceAndChoose),
            ("Blocked", "Switchover", Step::FenceAndChoose),
        ] {
            let recorded = status(&[None, None, Some((phase, kind))]);
            let json = serde_json::to_string(&recorded).expect("serializes");
            let read: DatabaseClusterStatus = serde_json::from_str(&json).expect("parses");
            for request in [None, Some("0")] {
                assert_eq!(
                    schedule(&read, request),
                    Scheduled::Resume { shard: 2, step },
                    "{phase}/{kind}, request {request:?}"
                );
            }
        }
    }

    /// Slot moves in progress hold a requested switchover back (its
    /// annotation stays); a failover still goes first.
    #[test]
    fn a_switchover_waits_for_slot_moves() {
        use crate::api::{ReshardingStatus, SlotMove};
        let mut s = status(&[None, None]);
        s.resharding = Some(ReshardingStatus {
            phase: "Moving".into(),
            moves: vec![SlotMove {
                id: "reshard-1-0".into(),
                phase: "Copying".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(schedule(&s, Some("0")), Scheduled::Detect);
        s.shards[1] = status(&[None, Some(("Promoting", "Failover"))]).shards[1].clone();
        assert_eq!(
            schedule(&s, Some("0")),
            Scheduled::Resume {
                shard: 1,
                step: Step::Promote
            }
        );
        if let Some(r) = s.resharding.as_mut() {
            r.moves.clear();
        }
        s.shards[1].failover = None;
        assert_eq!(
            schedule(&s, Some("0")),
            Scheduled::StartSwitchover {
                request: "0".into()
            }
        );
    }
}
