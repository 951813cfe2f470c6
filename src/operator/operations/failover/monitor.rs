//! The health monitor: primaries that hang or are cut off produce no pod
//! event, so the leader polls them and wakes the controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

use super::{lease_key, Detector};
use crate::api::DatabaseCluster;
use crate::operator::topology;

/// Annotation the health monitor bumps to wake the controller for a
/// cluster whose primary looks failed (pod events do not cover a hung or
/// cut-off process).
pub const NUDGE_ANNOTATION: &str = "tessera.dev/failover-check";

/// Polls every bootstrapped cluster's shard primaries once a second (one
/// `/v1/status` call each, 1 s timeout) and wakes the controller, by
/// bumping [`NUDGE_ANNOTATION`], when one looks failed and detection has not
/// started yet. Runs only on the leader, until the process ends.
pub async fn monitor(client: kube::Client, detector: Arc<Detector>) {
    let api: Api<DatabaseCluster> = Api::all(client.clone());
    let (reader, writer) = reflector::store::<DatabaseCluster>();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .applied_objects()
        .for_each(|_| futures::future::ready(()));
    // The watch lives inside this future (not a task of its own), so ending
    // the monitor at the end of a leader's term ends the watch too.
    tokio::select! {
        _ = stream => {}
        _ = poll(client, detector, reader) => {}
    }
}

/// The polling loop of [`monitor`], reading clusters from `reader`.
async fn poll(
    client: kube::Client,
    detector: Arc<Detector>,
    reader: reflector::Store<DatabaseCluster>,
) {
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
                    let already = detector
                        .suspect
                        .lock()
                        .map(|m| m.contains_key(&key))
                        .unwrap_or(true);
                    let p = s.primary.as_ref()?;
                    let addr = topology::admin_addr(&p.ip)?;
                    let lease_key = lease_key(&ns, &dbc.name_any(), s);
                    (!already).then(|| {
                        let nodes = nodes.clone();
                        let detector = detector.clone();
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
                                        && detector
                                            .lease_seen
                                            .lock()
                                            .map(|m| m.contains(&lease_key))
                                            .unwrap_or(false)
                                        && detector
                                            .lease_nudged
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
            if let Ok(mut m) = detector.suspect.lock() {
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
