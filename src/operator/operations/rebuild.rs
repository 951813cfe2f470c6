//! Rebuilding members whose Kubernetes node is gone for good (see
//! `placement`): the claim and the pod are deleted, the StatefulSet creates
//! both anew on a node that takes pods, and the member resyncs from its
//! shard's primary as any new replica does.
//!
//! Only on the administrator's word that the node is gone (the
//! `node.kubernetes.io/out-of-service` taint, or the Node deleted): a node
//! that merely stopped answering may still run its pods, and its volume
//! may still hold the only copy of something.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;

use crate::api::{DatabaseCluster, DatabaseClusterStatus};
use crate::operator::build::LABEL_CLUSTER;
use crate::operator::context::{Context, Error};
use crate::operator::observe::Observed;
use crate::operator::placement::{self, Host};

/// Deletes the claims and pods of members pinned to a node gone for good.
/// Returns how many members it started rebuilding.
pub async fn rebuild_lost(
    ctx: &Context,
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Result<usize, Error> {
    let p = &observed.placement;
    // Cheap check first: a node of ours gone for good. A deleted Node is
    // missing from `hosts` although a pod names it.
    let any_gone = p
        .pod_host
        .values()
        .any(|h| p.hosts.get(h).is_none_or(|h: &Host| h.out_of_service));
    // The pods of a tainted node may already be deleted (pod GC) and their
    // replacements Pending, unscheduled: their claims still pin them.
    let unscheduled = observed
        .nodes
        .iter()
        .any(|n| !p.pod_host.contains_key(&n.pod));
    if !any_gone && !unscheduled {
        return Ok(0);
    }
    let ns = dbc.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", dbc.name_any()));
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut pinned = BTreeMap::new();
    let mut members = Vec::new();
    for c in claims.list(&lp).await?.items {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(name), Some(volume)) = (
            c.metadata.name.clone(),
            c.spec.as_ref().and_then(|s| s.volume_name.clone()),
        ) else {
            continue;
        };
        let Some(pod) = name.strip_prefix("data-") else {
            continue;
        };
        let Some(pv) = pvs.get_opt(&volume).await? else {
            continue;
        };
        if let Some(host) = placement::pinned_host(&pv) {
            pinned.insert(name.clone(), host);
            members.push((pod.to_string(), name));
        }
    }
    let mut hosts = p.clone();
    // Nodes that only the volumes name (their pods already deleted).
    let all: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
    for host in pinned.values() {
        if !hosts.hosts.contains_key(host) {
            if let Some(n) = all.get_opt(host).await? {
                hosts.hosts.insert(host.clone(), Host::from_node(&n));
            }
        }
    }
    let todo = placement::rebuilds(&prev.shards, &members, &hosts, &pinned);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for r in &todo {
        tracing::warn!(cluster = %dbc.name_any(), pod = %r.pod, node = %r.host, "rebuilding a member whose node is gone");
        ignore_missing(claims.delete(&r.claim, &DeleteParams::default()).await)?;
        // The node is gone by its administrator's word: nothing runs the
        // pod any more, so it need not wait for a kubelet's confirmation.
        ignore_missing(
            pods.delete(&r.pod, &DeleteParams::default().grace_period(0))
                .await,
        )?;
        ctx.event(
            dbc,
            EventType::Warning,
            "RebuildingMember",
            "Rebuild",
            format!(
                "{}: its node {} is gone (out of service or deleted) and its volume was bound there; its claim {} and pod are deleted, the StatefulSet makes both anew on another node and the member resyncs from its primary",
                r.pod, r.host, r.claim
            ),
        )
        .await;
    }
    Ok(todo.len())
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
