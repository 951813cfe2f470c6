//! The controller: one `DatabaseCluster` manifest in, a running sharded
//! cluster out.
//!
//! Each reconcile runs the same pipeline: finalizer → observe → validate →
//! build (pure) → apply (server-side apply) → topology → status. Only the
//! replica holding the Lease reconciles.

pub mod apply;
pub mod backups;
pub mod build;
pub mod failover;
pub mod jobs;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod restore;
pub mod rollout;
pub mod status;
pub mod switchover;
pub mod topology;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{DatabaseCluster, DatabaseClusterStatus};
use crate::client::NodeClient;
use build::{LABEL_CLUSTER, LABEL_MEMBER, LABEL_ROLE};
use metrics::{ErrorCategory, Metrics};
use status::{Cond, DEGRADED, PROGRESSING, READY};
use topology::Decision;
use validate::{Existing, ValidatedCluster};

pub const FINALIZER: &str = "tessera.dev/finalizer";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the status changed underneath (another writer): {0}")]
    Conflict(kube::Error),
    #[error("pushing the topology: {0}")]
    Node(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kube,
            Error::Conflict(_) => ErrorCategory::Conflict,
            Error::Node(_) => ErrorCategory::Node,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => ErrorCategory::Finalizer,
            },
            Error::Other(_) => ErrorCategory::Other,
        }
    }
}

/// Operator settings (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Image for nodes whose spec names none.
    pub default_image: String,
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub metrics_addr: SocketAddr,
    /// Skip leader election (a single replica, or local development).
    pub no_leader_election: bool,
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub nodes: NodeClient,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per cluster, for exponential back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    async fn event(
        &self,
        dbc: &DatabaseCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &dbc.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish an event");
        }
    }

    fn key(dbc: &DatabaseCluster) -> String {
        format!("{}/{}", dbc.namespace().unwrap_or_default(), dbc.name_any())
    }
}

/// Runs the operator until SIGTERM / Ctrl-C (or until leadership is lost).
pub async fn run(config: Config) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    metrics::serve(config.metrics_addr, metrics.clone())
        .await
        .map_err(|e| Error::Other(format!("binding {}: {e}", config.metrics_addr)))?;
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let elector = leader::LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        config.identity.clone(),
    );
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    if !config.no_leader_election {
        tracing::info!(identity = %config.identity, lease = %config.lease_name, "waiting to become the leader");
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!(identity = %config.identity, "became the leader");
        let e = elector.clone();
        tokio::spawn(async move {
            e.hold().await;
            let _ = lost_tx.send(true);
        });
    }
    metrics
        .leader
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Primaries that hang or are cut off produce no pod event: poll them.
    tokio::spawn(failover::monitor(client.clone()));

    let reporter = Reporter {
        controller: "tessera-operator".into(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        config: config.clone(),
        nodes: NodeClient::default(),
        metrics,
        failures: Mutex::new(HashMap::new()),
    });

    let clusters: Api<DatabaseCluster> = Api::all(client.clone());
    if let Err(e) = clusters
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        return Err(Error::Other(format!(
            "the DatabaseCluster CRD is not installed or not readable ({e}); install it with `tessera crd | kubectl apply -f -` or the Helm chart"
        )));
    }
    let managed = watcher::Config::default().labels(LABEL_CLUSTER);
    let mut stop = stop_rx.clone();
    let mut lost = lost_rx.clone();
    let shutdown = async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = lost.wait_for(|l| *l) => {}
        }
    };
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), managed.clone())
        .owns(Api::<Service>::all(client.clone()), managed.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            managed.clone(),
        )
        .owns(Api::<CronJob>::all(client.clone()), managed.clone())
        // Backup Jobs belong to the CronJob (restore Jobs to the cluster):
        // map every labelled Job to its cluster, so a finished backup is
        // read into the status at once.
        .watches(
            Api::<Job>::all(client.clone()),
            managed.clone(),
            |job: Job| {
                let cluster = job.labels().get(LABEL_CLUSTER).cloned();
                let ns = job.namespace();
                cluster
                    .zip(ns)
                    .map(|(c, ns)| ObjectRef::<DatabaseCluster>::new(&c).within(&ns))
            },
        )
        // Pods are the StatefulSets' children; a restart (new IP) must
        // trigger a topology push promptly, so watch them directly.
        .watches(Api::<Pod>::all(client.clone()), managed, |pod: Pod| {
            let cluster = pod.labels().get(LABEL_CLUSTER).cloned();
            let ns = pod.namespace();
            cluster
                .zip(ns)
                .map(|(c, ns)| ObjectRef::<DatabaseCluster>::new(&c).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;

    if *lost_rx.borrow() {
        return Err(Error::Other(
            "lost the leader lease; exiting so a new term starts clean".into(),
        ));
    }
    if !config.no_leader_election {
        elector.release().await;
    }
    tracing::info!("operator stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn reconcile(dbc: Arc<DatabaseCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = dbc.namespace().unwrap_or_default();
    let api: Api<DatabaseCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let c = ctx.clone();
    let res = finalizer(&api, FINALIZER, dbc.clone(), |ev| async move {
        match ev {
            FinalizerEvent::Apply(d) => reconcile_apply(d, c).await,
            FinalizerEvent::Cleanup(d) => cleanup(d, c).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let took = start.elapsed();
    ctx.metrics
        .reconciled(took, res.as_ref().err().map(Error::category));
    if res.is_ok() {
        if let Ok(mut f) = ctx.failures.lock() {
            f.remove(&Context::key(&dbc));
        }
    }
    tracing::debug!(cluster = %dbc.name_any(), namespace = %ns, took_ms = took.as_millis() as u64, ok = res.is_ok(), "reconciled");
    res
}

fn error_policy(dbc: Arc<DatabaseCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(Context::key(&dbc)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    // 1 s, 2 s, 4 s … capped at 5 minutes; conflicts retry at once.
    let wait = match err {
        Error::Conflict(_) => Duration::from_millis(200),
        _ => Duration::from_secs(1u64 << n.min(8).saturating_sub(1)).min(Duration::from_secs(300)),
    };
    tracing::warn!(cluster = %dbc.name_any(), error = %err, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    Action::requeue(wait)
}

async fn cleanup(dbc: Arc<DatabaseCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .forget_cluster(&dbc.namespace().unwrap_or_default(), &dbc.name_any());
    let policy = dbc.spec.storage.delete_policy.as_str();
    ctx.event(
        &dbc,
        EventType::Normal,
        "Deleting",
        "Delete",
        format!("deleting the cluster; children go with it through owner references, volumes per storage.deletePolicy={policy}"),
    )
    .await;
    Ok(Action::await_change())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes the status subresource. With `expect_version`, the write fails
/// (409) if the object changed since it was read: topology decisions must
/// be made on the latest recorded topology.
async fn write_status(
    ctx: &Context,
    dbc: &DatabaseCluster,
    status: &DatabaseClusterStatus,
    expect_version: bool,
) -> Result<(), Error> {
    let ns = dbc.namespace().unwrap_or_default();
    let api: Api<DatabaseCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let mut body = json!({ "status": status });
    if expect_version {
        body["metadata"] = json!({ "resourceVersion": dbc.resource_version() });
    }
    match api
        .patch_status(
            &dbc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict(kube::Error::Api(s))),
        Err(e) => Err(e.into()),
    }
}

fn with_conditions(
    prev: &DatabaseClusterStatus,
    mut next: DatabaseClusterStatus,
    generation: i64,
    conds: &[Cond],
) -> DatabaseClusterStatus {
    next.conditions = status::merge_conditions(&prev.conditions, conds, generation, now());
    next.observed_generation = Some(generation);
    next
}

fn status_differs(a: &DatabaseClusterStatus, b: &DatabaseClusterStatus) -> bool {
    let strip = |s: &DatabaseClusterStatus| DatabaseClusterStatus {
        conditions: vec![],
        ..s.clone()
    };
    strip(a) != strip(b) || !status::same_conditions(&a.conditions, &b.conditions)
}

async fn reconcile_apply(dbc: Arc<DatabaseCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = dbc.namespace().unwrap_or_default();
    let name = dbc.name_any();
    let generation = dbc.metadata.generation.unwrap_or(0);
    let prev = dbc.status.clone().unwrap_or_default();

    // Observe.
    let observed = observe::observe(&ctx.client, &ctx.nodes, &ns, &name).await?;
    let existing = Existing {
        bootstrapped_shards: if prev.epoch > 0 {
            prev.shards.len() as u32
        } else {
            0
        },
        claim_sizes: observed.claim_sizes(),
    };

    // Validate.
    let v = match validate::validate(&dbc, &ctx.config.default_image, &existing) {
        Ok(v) => v,
        Err(e) => {
            let reason = e.reason();
            let message = e.to_string();
            let next = DatabaseClusterStatus {
                phase: Some("Degraded".into()),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                ..prev.clone()
            };
            let next = with_conditions(
                &prev,
                next,
                generation,
                &[
                    Cond::new(DEGRADED, true, reason, message.clone()),
                    Cond::new(PROGRESSING, false, reason, "waiting for the spec to change"),
                ],
            );
            if status_differs(&prev, &next) {
                ctx.event(&dbc, EventType::Warning, reason, "Validate", message)
                    .await;
                write_status(&ctx, &dbc, &next, false).await?;
            }
            // Nothing will fix this but an edit, which triggers a reconcile.
            return Ok(Action::await_change());
        }
    };

    if v.spec.paused {
        let next = DatabaseClusterStatus {
            phase: Some("Paused".into()),
            reason: Some("Paused".into()),
            message: Some("spec.paused is true: children are left as they are".into()),
            ..prev.clone()
        };
        let next = with_conditions(
            &prev,
            next,
            generation,
            &[Cond::new(
                PROGRESSING,
                false,
                "Paused",
                "spec.paused is true",
            )],
        );
        if status_differs(&prev, &next) {
            ctx.event(
                &dbc,
                EventType::Normal,
                "Paused",
                "Pause",
                "reconciliation paused".into(),
            )
            .await;
            write_status(&ctx, &dbc, &next, false).await?;
        }
        return Ok(Action::await_change());
    }

    for r in &v.refusals {
        let already = prev
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == r.reason && c.status == "True");
        if !already {
            ctx.event(
                &dbc,
                EventType::Warning,
                r.reason,
                "Validate",
                r.message.clone(),
            )
            .await;
        }
    }

    // Failover first: a failed primary is replaced before anything else,
    // and no topology is pushed for a shard in the middle of one.
    if let Some(action) = failover::reconcile(&ctx, &dbc, &v, &prev, &observed.nodes).await? {
        return Ok(action);
    }

    // A cluster bootstrapping from a backup: nothing runs until every node's
    // volume holds the restored data.
    let mut restored_now: Option<restore::Outcome> = None;
    if let Some(o) = restore::decide(
        &v,
        prev.epoch > 0,
        prev.restore.as_ref(),
        &observed.jobs,
        &observed.job_pods,
    ) {
        if o.next != restore::Next::Proceed {
            return restore_step(&ctx, &dbc, &v, &observed, &prev, o).await;
        }
        restored_now = Some(o);
    }

    // Build and apply.
    apply_children(&ctx, &dbc, &v, &observed).await?;

    // Topology.
    let decision = topology::plan(&name, &prev, &observed.nodes, v.shards, v.replicas);
    let mut next = DatabaseClusterStatus {
        conditions: prev.conditions.clone(),
        ..prev.clone()
    };
    // Backup results (finished backup Jobs) not recorded yet.
    let (backup_status, new_backups) = backups::fold(
        prev.backup.as_ref(),
        backups::finished(&observed.jobs, &observed.job_pods),
    );
    next.backup = backup_status;
    if let Some(o) = &restored_now {
        next.restore = Some(o.status.clone());
    }
    let mut pushes_pending = 0usize;
    let mut topology_changed = false;
    let mut bootstrap = false;
    if let Decision::Plan(p) = &decision {
        topology_changed = p.epoch != prev.epoch;
        bootstrap = p.bootstrap;
        next.epoch = p.epoch;
        next.shards = p.shards.clone();
        pushes_pending = observed
            .nodes
            .iter()
            .filter(|n| topology::role_of(&p.shards, &n.pod).is_some())
            .filter(|n| n.info.as_ref().is_none_or(|i| i.epoch != p.epoch))
            .count();
    }

    // Conditions and phase.
    let desired = (v.shards * v.replicas) as usize;
    let ready = observed
        .nodes
        .iter()
        .filter(|n| n.shard < v.shards && n.ordinal < v.replicas && n.pod_ready)
        .count();
    let extra = observed
        .nodes
        .iter()
        .filter(|n| n.ordinal >= v.replicas)
        .count();
    next.ready = Some(format!("{ready}/{desired}"));
    let bootstrapped = next.epoch > 0;
    let all_ready = bootstrapped && ready == desired && extra == 0 && pushes_pending == 0;
    let (phase, reason, message) = if !bootstrapped {
        match &decision {
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
        }
    } else if all_ready {
        (
            "Ready",
            "AllNodesReady",
            format!(
                "{ready}/{desired} nodes ready, topology epoch {}",
                next.epoch
            ),
        )
    } else if extra > 0
        || ready < desired
            && observed
                .nodes
                .iter()
                .filter(|n| n.ordinal < v.replicas)
                .count()
                < desired
    {
        (
            "Scaling",
            "ScalingReplicas",
            format!("{ready}/{desired} nodes ready"),
        )
    } else if pushes_pending > 0 {
        (
            "Updating",
            "PushingTopology",
            format!(
                "topology epoch {} reaching {pushes_pending} node(s)",
                next.epoch
            ),
        )
    } else {
        (
            "Degraded",
            "NodesNotReady",
            format!("{ready}/{desired} nodes ready"),
        )
    };
    // A refused change leaves the cluster serving but not as specified.
    let (phase, reason, message) = match (phase, v.refusals.first()) {
        ("Ready", Some(r)) => ("Degraded", r.reason, r.message.clone()),
        (p, _) => (p, reason, message),
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
    conds.extend(backups::condition(next.backup.as_ref()));
    if let Some(o) = &restored_now {
        conds.push(o.cond.clone());
    }
    let next = with_conditions(&prev, next, generation, &conds);

    // Record first (the status is the topology authority), then push.
    if status_differs(&prev, &next) {
        write_status(&ctx, &dbc, &next, topology_changed).await?;
    }
    report_backups(&ctx, &dbc, &new_backups, next.backup.as_ref()).await;
    if let Some(o) = &restored_now {
        ctx.event(
            &dbc,
            EventType::Normal,
            "Restored",
            "Restore",
            o.cond.message.clone(),
        )
        .await;
        tracing::info!(cluster = %name, namespace = %ns, message = %o.cond.message, "restored from a backup");
        cleanup_restore_jobs(&ctx, &v).await;
    }
    if let Decision::Plan(p) = &decision {
        if topology_changed {
            let (why, kind) = if bootstrap {
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
            ctx.event(&dbc, EventType::Normal, kind, "PushTopology", why)
                .await;
            tracing::info!(cluster = %name, namespace = %ns, epoch = p.epoch, reason = kind, "new topology");
        }
        push_topology(&ctx, &observed.nodes, p).await?;
        label_roles(&ctx, &ns, &observed.nodes, &p.shards).await?;
    }
    let was_ready = prev
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    // True while a rolling restart waits for replicas to catch up.
    let mut rolling = false;
    if all_ready {
        rolling = roll_and_grow(&ctx, &dbc, &v, &observed, &next.shards).await?;
    }
    if all_ready && !was_ready {
        ctx.event(&dbc, EventType::Normal, "Ready", "Reconcile", message)
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

/// One step of a restore (`bootstrap.fromBackup`, see `restore.rs`):
/// create what the step needs, record the status, wait.
async fn restore_step(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &observe::Observed,
    prev: &DatabaseClusterStatus,
    o: restore::Outcome,
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
        restore::Next::Plan => {
            if !exists(&build::restore_plan_job_name(&v.name)) {
                if let Some(job) = build::build_restore_plan_job(v) {
                    apply::apply(client, ns, &job).await?;
                }
            }
        }
        restore::Next::Restore {
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
        restore::Next::Stop | restore::Next::Proceed => {}
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
    let next = with_conditions(prev, next, dbc.metadata.generation.unwrap_or(0), &conds);
    if status_differs(prev, &next) {
        let was = prev
            .conditions
            .iter()
            .find(|c| c.type_ == restore::RESTORED)
            .map(|c| (c.status.clone(), c.reason.clone()));
        if o.failed && was != Some(("False".into(), reason.clone())) {
            ctx.event(dbc, EventType::Warning, &reason, "Restore", message.clone())
                .await;
            tracing::warn!(cluster = %v.name, namespace = %ns, reason = %reason, message = %message, "restore failed");
        }
        write_status(ctx, dbc, &next, false).await?;
    }
    Ok(if o.failed {
        // Only a change helps (a deleted Job, an edited spec): both wake us.
        Action::requeue(Duration::from_secs(60))
    } else {
        Action::requeue(Duration::from_secs(3))
    })
}

/// The restore Jobs did their work (the status records it); their pods
/// would only clutter the namespace.
async fn cleanup_restore_jobs(ctx: &Context, v: &ValidatedCluster) {
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

/// Events, logs and metrics for backup Jobs that finished since the last
/// reconcile.
async fn report_backups(
    ctx: &Context,
    dbc: &DatabaseCluster,
    new: &[backups::Finished],
    st: Option<&crate::api::BackupStatus>,
) {
    let ns = dbc.namespace().unwrap_or_default();
    let name = dbc.name_any();
    for f in new {
        ctx.metrics.backup_finished(&ns, &name, f.succeeded);
        let s = &f.summary;
        if f.succeeded {
            let note = format!(
                "backup {} finished: {} bytes, {} shard(s) in {} ms, consistent at {} (job {})",
                s.id.as_deref().unwrap_or("?"),
                s.bytes.unwrap_or(0),
                s.shards.unwrap_or(0),
                s.duration_ms.unwrap_or(0),
                s.consistent_at.as_deref().unwrap_or("?"),
                f.job
            );
            tracing::info!(cluster = %name, namespace = %ns, job = %f.job, id = ?s.id, bytes = ?s.bytes, "backup succeeded");
            ctx.event(dbc, EventType::Normal, "BackupSucceeded", "Backup", note)
                .await;
            if let Some(p) = backups::pruned_note(s) {
                tracing::info!(cluster = %name, namespace = %ns, job = %f.job, pruned = %p, "retention pruned");
                ctx.event(dbc, EventType::Normal, "BackupsPruned", "Retention", p)
                    .await;
            }
        } else {
            let why = s.error.clone().unwrap_or_else(|| "failed".into());
            tracing::warn!(cluster = %name, namespace = %ns, job = %f.job, error = %why, "backup failed");
            ctx.event(
                dbc,
                EventType::Warning,
                "BackupFailed",
                "Backup",
                format!("backup job {} failed: {why}", f.job),
            )
            .await;
        }
    }
    if let Some(st) = st {
        ctx.metrics.backup_status(&ns, &name, st);
    }
}

async fn apply_children(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &observe::Observed,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = &v.namespace;
    apply::apply(client, ns, &build::build_config_map(v)).await?;
    apply::apply(client, ns, &build::build_client_service(v)).await?;
    for shard in 0..v.shards {
        apply::apply(client, ns, &build::build_headless_service(v, shard)).await?;
        apply::apply(client, ns, &build::build_primary_service(v, shard)).await?;
        apply::apply(client, ns, &build::build_pdb(v, shard)).await?;
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

async fn push_topology(
    ctx: &Context,
    nodes: &[topology::ObservedNode],
    plan: &topology::Plan,
) -> Result<(), Error> {
    let doc = topology::to_topology(plan.epoch, &plan.shards);
    let targets: Vec<_> = nodes
        .iter()
        .filter(|n| topology::role_of(&plan.shards, &n.pod).is_some())
        .filter(|n| n.info.as_ref().is_some_and(|i| i.epoch != plan.epoch))
        .filter_map(|n| {
            n.ip.as_deref()
                .and_then(topology::admin_addr)
                .map(|a| (n.pod.clone(), a))
        })
        .collect();
    let results = futures::future::join_all(
        targets
            .iter()
            .map(|(_, a)| ctx.nodes.put_topology(*a, &doc)),
    )
    .await;
    let mut failed = Vec::new();
    for ((pod, _), r) in targets.iter().zip(results) {
        match r {
            Ok(()) => ctx.metrics.topology_pushed(),
            // The node has seen a newer epoch: the next plan goes above it.
            Err(e) if e.is_stale_epoch() => failed.push(format!("{pod}: {e}")),
            Err(e) => failed.push(format!("{pod}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Node(failed.join("; ")))
    }
}

async fn label_roles(
    ctx: &Context,
    ns: &str,
    nodes: &[topology::ObservedNode],
    shards: &[crate::api::ShardStatus],
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for n in nodes {
        let role = topology::role_of(shards, &n.pod);
        let member = role.map(|_| "true");
        if n.labels.get(LABEL_ROLE).map(String::as_str) == role
            && n.labels.get(LABEL_MEMBER).map(String::as_str) == member
        {
            continue;
        }
        let patch = json!({ "metadata": { "labels": { LABEL_ROLE: role, LABEL_MEMBER: member } } });
        match pods
            .patch(&n.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// With everything Ready: restart one outdated pod (StatefulSets use
/// `OnDelete`), and grow volumes the spec made larger.
async fn roll_and_grow(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &observe::Observed,
    shards: &[crate::api::ShardStatus],
) -> Result<bool, Error> {
    let ns = &v.namespace;
    let revisions: std::collections::BTreeMap<u32, String> = observed
        .statefulsets
        .iter()
        .filter_map(|s| {
            let shard = s
                .metadata
                .labels
                .as_ref()?
                .get(build::LABEL_SHARD)?
                .parse()
                .ok()?;
            let st = s.status.as_ref()?;
            // The controller has not caught up with the last apply yet.
            if st.observed_generation != s.metadata.generation {
                return None;
            }
            Some((shard, st.update_revision.clone()?))
        })
        .collect();
    if let Some(n) = rollout::next_restart(&observed.nodes, &revisions, |p| {
        topology::role_of(shards, p)
    }) {
        // Replicas restart only once every replica has caught up (within
        // 2 s of its primary by the heartbeats, not resyncing), one at a time.
        let lagging = observed.nodes.iter().any(|m| {
            topology::role_of(shards, &m.pod) == Some("replica")
                && m.info.as_ref().is_none_or(|i| {
                    i.replication.resyncing || i.replication.lag_ms.is_none_or(|l| l > 2000)
                })
        });
        if lagging {
            return Ok(true);
        }
        // A primary is never restarted while it leads: a switchover hands
        // its role to an (already updated) replica first, and the next
        // reconcile restarts it as a replica.
        if topology::role_of(shards, &n.pod) == Some("primary") && v.replicas > 1 {
            switchover::request(&ctx.client, ns, &v.name, &n.shard.to_string()).await?;
            ctx.event(
                dbc,
                EventType::Normal,
                "RollingSwitchover",
                "Switchover",
                format!(
                    "{} is outdated and primary: switching over before restarting it",
                    n.pod
                ),
            )
            .await;
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        pods.delete(&n.pod, &Default::default()).await?;
        ctx.event(
            dbc,
            EventType::Normal,
            "RollingRestart",
            "RestartNode",
            format!("restarted {} to apply its StatefulSet's new template (replicas first, the primary last)", n.pod),
        )
        .await;
        return Ok(false);
    }
    let want = &v.spec.storage.size;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", v.name));
    for pvc in pvcs.list(&lp).await?.items {
        let name = pvc.name_any();
        if !name.starts_with("data-") {
            continue;
        }
        let have = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        if !rollout::grows(&have, want) {
            continue;
        }
        let patch = json!({ "spec": { "resources": { "requests": { "storage": want } } } });
        match pvcs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "VolumeExpanded",
                    "ExpandVolume",
                    format!("{name}: {have} → {want}"),
                )
                .await
            }
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                ctx.event(
                    dbc,
                    EventType::Warning,
                    "VolumeNotExpandable",
                    "ExpandVolume",
                    format!(
                        "{name} stays {have}: {} (use a StorageClass with allowVolumeExpansion)",
                        s.message
                    ),
                )
                .await;
                // Do not retry every minute: the class will not change.
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}
