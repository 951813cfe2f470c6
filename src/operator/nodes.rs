//! What the operator tells the nodes and their pods once a topology is
//! recorded: the topology itself (admin API) and the role labels the
//! Services select on. Used by the reconcile and by every operation that
//! changes a primary.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::build::{LABEL_MEMBER, LABEL_ROLE};
use super::context::{Context, Error};
use super::topology;
use crate::api::ShardStatus;

/// Pushes `plan` to every member whose epoch differs (concurrently).
pub async fn push_topology(
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

/// Moves the `role`/`member` labels to match `shards`.
pub async fn label_roles(
    ctx: &Context,
    ns: &str,
    nodes: &[topology::ObservedNode],
    shards: &[ShardStatus],
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    // Demotions first: two pods labelled primary at once would let the
    // primary budget count two healthy primaries and allow evicting the new
    // one (the disruption controller's status can lag the labels).
    let demoted = |n: &&topology::ObservedNode| {
        n.labels.get(LABEL_ROLE).map(String::as_str) == Some("primary")
            && topology::role_of(shards, &n.pod) != Some("primary")
    };
    let (first, rest): (Vec<_>, Vec<_>) = nodes.iter().partition(demoted);
    for n in first.into_iter().chain(rest) {
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
