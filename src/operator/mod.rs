//! The controller: one `DatabaseCluster` manifest in, a running sharded
//! cluster out.
//!
//! Each reconcile runs the same pipeline ([`reconcile`]): finalizer →
//! observe → validate → next operation step ([`operations`]) → build
//! (pure) → apply (server-side apply) → status (the one writer,
//! [`writer`]) → topology push → rolling changes. Only the replica holding
//! the Lease reconciles.

pub mod apply;
pub mod autoscale;
pub mod backups;
pub mod build;
pub mod cert_rotation;
pub mod certs;
pub mod context;
pub mod credentials;
pub mod detector;
pub mod jobs;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod operations;
pub mod phase;
pub mod placement;
pub mod reconcile;
pub mod rollout;
pub mod status;
pub mod topology;
pub mod validate;
pub mod writer;

pub use context::{Config, Context, Error};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};

use crate::api::DatabaseCluster;
use crate::client::NodeClient;
use build::LABEL_CLUSTER;
use detector::Detector;
use metrics::Metrics;
use operations::failover;
use reconcile::reconcile_apply;

pub const FINALIZER: &str = "tessera.dev/finalizer";

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
    // Terms, one after another: a replica that loses the Lease stops its
    // controller and stands by again in the same process. Exiting instead
    // would put it in CrashLoopBackOff after a few losses (a node frozen
    // and thawed each time), and then no stand-by is left to take over.
    loop {
        if !config.no_leader_election {
            tracing::info!(identity = %config.identity, lease = %config.lease_name, "waiting to become the leader");
            let mut stop = stop_rx.clone();
            let acquired = tokio::select! {
                t = elector.acquire() => t,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            tracing::info!(identity = %config.identity, "became the leader");
            let lost = term(
                &client,
                &config,
                &metrics,
                Some((&elector, acquired)),
                &stop_rx,
            )
            .await;
            metrics
                .leader
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if lost? {
                tracing::warn!(identity = %config.identity, "lost the leader lease; standing by");
                continue;
            }
            elector.release().await;
        } else {
            term(&client, &config, &metrics, None, &stop_rx).await?;
        }
        tracing::info!("operator stopped");
        return Ok(());
    }
}

/// One term as the leader: the health monitor and the controller, until a
/// stop is requested (`Ok(false)`) or the Lease is lost (`Ok(true)`; every
/// task of the term is stopped before this returns).
async fn term(
    client: &Client,
    config: &Config,
    metrics: &Arc<Metrics>,
    elected: Option<(&leader::LeaderElector, Instant)>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<bool, Error> {
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    let holder = elected.map(|(elector, acquired)| {
        let e = elector.clone();
        tokio::spawn(async move {
            e.hold(acquired).await;
            let _ = lost_tx.send(true);
        })
    });
    metrics
        .leader
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Primaries that hang or are cut off produce no pod event: poll them.
    let detector = Arc::new(Detector::default());
    credentials::warm(client).await;
    let monitor = tokio::spawn(failover::monitor::monitor(client.clone(), detector.clone()));
    let result = control(client, config, metrics, detector, stop_rx, &lost_rx).await;
    monitor.abort();
    if let Some(h) = holder {
        h.abort();
    }
    result?;
    let lost = *lost_rx.borrow();
    Ok(lost)
}

/// The controller of one term, until a stop or the loss of the Lease.
async fn control(
    client: &Client,
    config: &Config,
    metrics: &Arc<Metrics>,
    detector: Arc<Detector>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
    lost_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let reporter = Reporter {
        controller: "tessera-operator".into(),
        instance: Some(config.identity.clone()),
    };
    let hosts = Arc::new(placement::HostIndex::default());
    let ctx = Arc::new(Context {
        events: context::Events::new(client.clone(), reporter),
        client: client.clone(),
        config: config.clone(),
        nodes: NodeClient::default(),
        metrics: metrics.clone(),
        detector,
        failures: Mutex::new(HashMap::new()),
        hosts: hosts.clone(),
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
        // A cordon, a node that stops answering or an out-of-service taint
        // changes no pod: reconcile the clusters on that node.
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |node: Node| hosts.clusters_on(&node.name_any()),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
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
    crate::client::auth::forget_cluster(&dbc.namespace().unwrap_or_default(), &dbc.name_any());
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
