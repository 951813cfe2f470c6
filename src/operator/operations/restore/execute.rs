//! The restore's executor: creates what the planned step needs (the plan
//! Job, the data claims and restore Jobs), records `status.restore`, and
//! removes the Jobs once the cluster is restored.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Next, Outcome, RESTORED};
use crate::api::{DatabaseCluster, DatabaseClusterStatus};
use crate::operator::context::{now, Context, Error};
use crate::operator::observe::Observed;
use crate::operator::status::{
    status_differs, with_conditions, Cond, DEGRADED, PROGRESSING, READY,
};
use crate::operator::validate::ValidatedCluster;
use crate::operator::writer::{write_status, Precondition};
use crate::operator::{apply, build};

/// One step of a restore (`bootstrap.fromBackup`, see [`super`]):
/// create what the step needs, record the status, wait.
pub async fn step(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &Observed,
    prev: &DatabaseClusterStatus,
    o: Outcome,
) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = &v.namespace;
    let exists = |name: &str| {
        observed
            .jobs
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(name))
    };
    // Jobs are created once (their pod template is immutable).
    match &o.next {
        Next::Plan => {
            if !exists(&build::restore_plan_job_name(&v.name)) {
                if let Some(job) = build::build_restore_plan_job(v) {
                    apply::apply(client, ns, &job).await?;
                }
            }
        }
        Next::Restore {
            backup_id,
            target_time,
        } => {
            for shard in 0..v.shards {
                for ordinal in 0..v.replicas {
                    if exists(&build::restore_job_name(&v.name, shard, ordinal)) {
                        continue;
                    }
                    apply::apply(client, ns, &build::build_data_pvc(v, shard, ordinal)).await?;
                    if let Some(job) =
                        build::build_restore_job(v, shard, ordinal, backup_id, target_time)
                    {
                        apply::apply(client, ns, &job).await?;
                    }
                }
            }
        }
        Next::Stop | Next::Proceed => {}
    }
    let desired = v.shards * v.replicas;
    let (phase, reason) = if o.failed {
        ("Degraded", o.cond.reason.clone())
    } else {
        ("Restoring", o.cond.reason.clone())
    };
    let message = o.cond.message.clone();
    let next = DatabaseClusterStatus {
        phase: Some(phase.into()),
        reason: Some(reason.clone()),
        message: Some(message.clone()),
        ready: Some(format!("0/{desired}")),
        restore: Some(o.status.clone()),
        ..prev.clone()
    };
    let conds = [
        Cond::new(READY, false, reason.clone(), message.clone()),
        Cond::new(PROGRESSING, !o.failed, reason.clone(), message.clone()),
        if o.failed {
            Cond::new(DEGRADED, true, reason.clone(), message.clone())
        } else {
            Cond::new(DEGRADED, false, "AsExpected", "")
        },
        o.cond.clone(),
    ];
    let next = with_conditions(
        prev,
        next,
        dbc.metadata.generation.unwrap_or(0),
        &conds,
        now(),
    );
    if status_differs(prev, &next) {
        let was = prev
            .conditions
            .iter()
            .find(|c| c.type_ == RESTORED)
            .map(|c| (c.status.clone(), c.reason.clone()));
        if o.failed && was != Some(("False".into(), reason.clone())) {
            ctx.event(dbc, EventType::Warning, &reason, "Restore", message.clone())
                .await;
            tracing::warn!(cluster = %v.name, namespace = %ns, reason = %reason, message = %message, "restore failed");
        }
        write_status(ctx, dbc, &next, Precondition::None).await?;
    }
    Ok(if o.failed {
        // Only a change helps (a deleted Job, an edited spec): both wake us.
        Action::requeue(Duration::from_secs(60))
    } else {
        Action::requeue(Duration::from_secs(3))
    })
}

/// Reports the restore done (the status recording it is written by the
/// reconcile with the rest) and removes its Jobs.
pub async fn finish(ctx: &Context, dbc: &DatabaseCluster, v: &ValidatedCluster, o: &Outcome) {
    ctx.event(
        dbc,
        EventType::Normal,
        "Restored",
        "Restore",
        o.cond.message.clone(),
    )
    .await;
    tracing::info!(cluster = %v.name, namespace = %v.namespace, message = %o.cond.message, "restored from a backup");
    cleanup_jobs(ctx, v).await;
}

/// The restore Jobs did their work (the status records it); their pods
/// would only clutter the namespace.
pub async fn cleanup_jobs(ctx: &Context, v: &ValidatedCluster) {
    let mut names = vec![build::restore_plan_job_name(&v.name)];
    for shard in 0..v.shards {
        for ordinal in 0..v.replicas {
            names.push(build::restore_job_name(&v.name, shard, ordinal));
        }
    }
    for n in names {
        if let Err(e) = apply::delete_if_exists::<Job>(&ctx.client, &v.namespace, &n).await {
            tracing::warn!(job = %n, error = %e, "failed to delete a finished restore job");
        }
    }
}
