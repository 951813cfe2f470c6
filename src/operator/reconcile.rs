//! One reconcile of a `DatabaseCluster`, top to bottom: observe →
//! validate → next operation step → build and apply → status (record the
//! topology, then push it) → rolling changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::context::{now, Context, Error};
use super::observe::{self, Observed};
use super::operations::{self, reshard, restore};
use super::phase::{self, Summary};
use super::status::{status_differs, with_conditions, Cond, DEGRADED, PROGRESSING, READY};
use super::topology::{self, Decision};
use super::validate::{self, Existing, ValidatedCluster};
use super::writer::{write_status, Precondition};
use super::{apply, autoscale, backups, build, nodes, rollout};
use crate::api::{DatabaseCluster, DatabaseClusterStatus};

pub async fn reconcile_apply(
    dbc: Arc<DatabaseCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (ctx, dbc) = (ctx.as_ref(), dbc.as_ref());
    let prev = dbc.status.clone().unwrap_or_default();

    // The generated credentials first: observing calls the nodes with the
    // cluster's admin token.
    super::credentials::ensure(ctx, dbc).await?;

    // Observe.
    let ns = dbc.namespace().unwrap_or_default();
    let observed = observe::observe(&ctx.client, &ctx.nodes, &ns, &dbc.name_any()).await?;
    ctx.hosts
        .record(ObjectRef::from_obj(dbc), &observed.placement);

    // Validate.
    let v = match validated(ctx, dbc, &prev, &observed).await? {
        Ok(v) => v,
        Err(action) => return Ok(action),
    };
    // A restore bootstraps with the backup's shards; a different
    // spec.shards is reached by resharding once bootstrapped.
    let v = match prev.restore.as_ref().and_then(restore::bootstrap_shards) {
        Some(n) if prev.epoch == 0 => v.with_shards(n),
        _ => v,
    };
    if v.spec.paused {
        return pause(ctx, dbc, &prev).await;
    }
    report_refusals(ctx, dbc, &v, &prev).await;

    // The next step of an operation (failover, switchover, restore).
    let (restored, reshard) = match operations::next_step(ctx, dbc, &v, &prev, &observed).await? {
        operations::Next::Done(action) => return Ok(action),
        operations::Next::Continue { restored, reshard } => (restored, reshard),
    };

    // Build and apply.
    apply_children(ctx, dbc, &v, &observed).await?;
    reshard::remove::remove_extra_shards(ctx, dbc, &v, &observed).await?;
    operations::rebuild::rebuild_lost(ctx, dbc, &prev, &observed).await?;

    // Status: the topology is recorded first (the status is the topology
    // authority), then pushed. A resharding's flips change slot owners in
    // this same record.
    let departed = departed_replicas(ctx, dbc, &v, &prev, &observed);
    let no_flips = reshard::Outcome::default();
    let step = reshard.as_deref().unwrap_or(&no_flips);
    let decision = topology::plan_with(
        &dbc.name_any(),
        &prev,
        &observed.nodes,
        v.shards,
        v.replicas,
        &topology::Changes {
            flips: &step.flips,
            busy: &step.busy,
            departed: &departed,
        },
    );
    let (backup, new_backups) = backups::fold(
        prev.backup.as_ref(),
        backups::finished(&observed.jobs, &observed.job_pods),
    );
    let autoscaled = autoscale::evaluate(dbc, &prev, &observed.nodes);
    let summary = phase::summarize(
        phase::Inputs {
            prev: &prev,
            v: &v,
            nodes: &observed.nodes,
            decision: &decision,
            backup,
            restored: restored.as_deref(),
            resharding: reshard.as_ref().and_then(|r| r.status.clone()),
            autoscaling: autoscaled.as_ref(),
            placement: &observed.placement,
            generation: dbc.metadata.generation.unwrap_or(0),
        },
        now(),
    );
    if status_differs(&prev, &summary.next) {
        let pre = if summary.topology_changed {
            Precondition::Version
        } else {
            Precondition::None
        };
        write_status(ctx, dbc, &summary.next, pre).await?;
    }
    if summary.next.reason.as_deref() == Some("NodeLost") && prev.reason != summary.next.reason {
        ctx.event(
            dbc,
            EventType::Warning,
            "NodeLost",
            "Observe",
            summary.message.clone(),
        )
        .await;
    }
    if let Some(a) = &autoscaled {
        autoscale::act(ctx, dbc, a).await?;
    }
    backups::report(ctx, dbc, &new_backups, summary.next.backup.as_ref()).await;
    if let Some(o) = &restored {
        restore::execute::finish(ctx, dbc, &v, o).await;
    }
    push(
        ctx,
        dbc,
        &prev,
        &decision,
        &observed,
        summary.topology_changed,
    )
    .await?;

    // Rolling changes, once everything is Ready.
    let action = after_ready(ctx, dbc, &v, &observed, &prev, &summary).await?;
    Ok(match step.requeue() {
        Some(soon) => Action::requeue(soon),
        None => action,
    })
}

/// The validated spec, or the action to return after recording why the
/// spec is invalid (`Degraded`; nothing but an edit fixes it).
async fn validated(
    ctx: &Context,
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Result<Result<ValidatedCluster, Action>, Error> {
    let existing = Existing {
        bootstrapped_shards: if prev.epoch > 0 {
            prev.shards.len() as u32
        } else {
            0
        },
        claim_sizes: observed.claim_sizes(),
    };
    let e = match validate::validate(dbc, &ctx.config.default_image, &existing) {
        Ok(v) => return Ok(Ok(v)),
        Err(e) => e,
    };
    let reason = e.reason();
    let message = e.to_string();
    let next = DatabaseClusterStatus {
        phase: Some("Degraded".into()),
        reason: Some(reason.into()),
        message: Some(message.clone()),
        ..prev.clone()
    };
    let next = with_conditions(
        prev,
        next,
        dbc.metadata.generation.unwrap_or(0),
        &[
            Cond::new(DEGRADED, true, reason, message.clone()),
            Cond::new(PROGRESSING, false, reason, "waiting for the spec to change"),
        ],
        now(),
    );
    if status_differs(prev, &next) {
        ctx.event(dbc, EventType::Warning, reason, "Validate", message)
            .await;
        write_status(ctx, dbc, &next, Precondition::None).await?;
    }
    // Nothing will fix this but an edit, which triggers a reconcile.
    Ok(Err(Action::await_change()))
}

/// `spec.paused`: children are left as they are.
async fn pause(
    ctx: &Context,
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
) -> Result<Action, Error> {
    let next = DatabaseClusterStatus {
        phase: Some("Paused".into()),
        reason: Some("Paused".into()),
        message: Some("spec.paused is true: children are left as they are".into()),
        ..prev.clone()
    };
    let next = with_conditions(
        prev,
        next,
        dbc.metadata.generation.unwrap_or(0),
        &[Cond::new(
            PROGRESSING,
            false,
            "Paused",
            "spec.paused is true",
        )],
        now(),
    );
    if status_differs(prev, &next) {
        ctx.event(
            dbc,
            EventType::Normal,
            "Paused",
            "Pause",
            "reconciliation paused".into(),
        )
        .await;
        write_status(ctx, dbc, &next, Precondition::None).await?;
    }
    Ok(Action::await_change())
}

/// A Warning Event per refused change not already reported as `Degraded`.
async fn report_refusals(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
) {
    for r in &v.refusals {
        let already = prev
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == r.reason && c.status == "True");
        if !already {
            ctx.event(
                dbc,
                EventType::Warning,
                r.reason,
                "Validate",
                r.message.clone(),
            )
            .await;
        }
    }
}

/// Applies every child the spec calls for (server-side apply), with Events
/// for created and scaled shards; removes the backup CronJob with
/// `spec.backup`.
async fn apply_children(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &Observed,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = &v.namespace;
    apply::apply(client, ns, &build::build_config_map(v)).await?;
    let peer = build::OperatorPeer::chart(&ctx.config.operator_namespace);
    match build::build_network_policy(v, &peer) {
        Some(np) => {
            apply::apply(client, ns, &np).await?;
        }
        None => {
            let name = build::network_policy_name(&v.name);
            apply::delete_if_exists::<NetworkPolicy>(client, ns, &name).await?;
        }
    }
    apply::apply(client, ns, &build::build_client_service(v)).await?;
    for shard in 0..v.running_shards {
        apply::apply(client, ns, &build::build_headless_service(v, shard)).await?;
        apply::apply(client, ns, &build::build_primary_service(v, shard)).await?;
        for pdb in build::build_pdbs(v, shard) {
            apply::apply(client, ns, &pdb).await?;
        }
        let sts = build::build_statefulset(v, shard);
        let before = observed
            .statefulsets
            .iter()
            .find(|s| s.metadata.name == sts.metadata.name)
            .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas));
        apply::apply(client, ns, &sts).await?;
        match before {
            None => {
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "Created",
                    "CreateShard",
                    format!(
                        "created StatefulSet {} with {} node(s)",
                        v.shard_name(shard),
                        v.replicas
                    ),
                )
                .await
            }
            Some(n) if n != v.replicas as i32 => {
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "Scaled",
                    "ScaleShard",
                    format!(
                        "scaled {} from {n} to {} node(s)",
                        v.shard_name(shard),
                        v.replicas
                    ),
                )
                .await
            }
            _ => {}
        }
    }
    match (build::build_backup_pvc(v), build::build_backup_cronjob(v)) {
        (pvc, Some(cj)) => {
            if let Some(pvc) = pvc {
                apply::apply(client, ns, &pvc).await?;
            }
            apply::apply(client, ns, &cj).await?;
        }
        (_, None) => {
            if apply::delete_if_exists::<CronJob>(client, ns, &build::backup_name(&v.name)).await? {
                ctx.event(dbc, EventType::Normal, "BackupDisabled", "DeleteCronJob", "spec.backup removed: deleted the backup CronJob (backups and their volume are kept)".into()).await;
            }
        }
    }
    Ok(())
}

/// Pushes a recorded topology plan and moves the role labels (with an
/// Event when the epoch moved).
async fn push(
    ctx: &Context,
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
    decision: &Decision,
    observed: &Observed,
    topology_changed: bool,
) -> Result<(), Error> {
    let Decision::Plan(p) = decision else {
        return Ok(());
    };
    if topology_changed {
        let (why, kind) = if p.bootstrap {
            (
                format!(
                    "assigned {} slot ranges to {} shards, primaries {}",
                    p.shards.len(),
                    p.shards.len(),
                    p.shards
                        .iter()
                        .filter_map(|s| s.primary.as_ref().map(|n| n.pod.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "Bootstrapped",
            )
        } else {
            (
                format!(
                    "membership changed; topology epoch {} → {}",
                    prev.epoch, p.epoch
                ),
                "TopologyChanged",
            )
        };
        ctx.event(dbc, EventType::Normal, kind, "PushTopology", why)
            .await;
        tracing::info!(cluster = %dbc.name_any(), namespace = %dbc.namespace().unwrap_or_default(), epoch = p.epoch, reason = kind, "new topology");
    }
    nodes::push_topology(ctx, &observed.nodes, p).await?;
    let ns = dbc.namespace().unwrap_or_default();
    nodes::label_roles(ctx, &ns, &observed.nodes, &p.shards).await?;
    Ok(())
}

/// Rolling restarts and volume growth once everything is Ready, the `Ready`
/// Event on the transition, and when to look again.
async fn after_ready(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &Observed,
    prev: &DatabaseClusterStatus,
    summary: &Summary,
) -> Result<Action, Error> {
    let all_ready = summary.all_ready;
    let was_ready = prev
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    // True while a rolling restart waits for replicas to catch up.
    let mut rolling = false;
    if all_ready {
        rolling = rollout::roll_and_grow(ctx, dbc, v, observed, &summary.next.shards).await?;
    }
    if all_ready && !was_ready {
        ctx.event(
            dbc,
            EventType::Normal,
            "Ready",
            "Reconcile",
            summary.message.clone(),
        )
        .await;
    }
    Ok(if all_ready && !rolling {
        Action::requeue(Duration::from_secs(60))
    } else if rolling {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::requeue(Duration::from_secs(3))
    })
}

/// Replicas of the recorded topology silent for the failure-detection
/// window (a lost node, a cut-off or deleted pod): they leave the topology.
/// The primaries are failover's: never here.
fn departed_replicas(
    ctx: &Context,
    dbc: &crate::api::DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Vec<String> {
    let answering = |pod: &str| {
        observed
            .nodes
            .iter()
            .any(|n| n.pod == pod && n.info.is_some())
    };
    let replicas = prev
        .shards
        .iter()
        .flat_map(|s| s.replicas.iter())
        .map(|r| (r.pod.as_str(), answering(&r.pod)));
    let window = Duration::from_secs(v.spec.failover.detection_seconds.max(1) as u64);
    let cluster = format!("{}/{}", dbc.namespace().unwrap_or_default(), dbc.name_any());
    ctx.detector
        .departed(&cluster, replicas, window, std::time::Instant::now())
}
