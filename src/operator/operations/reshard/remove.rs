//! The last step of a scale-in: the children of a shard that left the
//! topology (it owns no slot and no move involves it) are deleted — its
//! StatefulSet, Services, PodDisruptionBudget and volumes.
//!
//! The volumes go whatever `storage.deletePolicy` says: that policy is
//! about deleting the cluster, and a drained shard's volume only holds
//! data whose slots now live elsewhere. Kept, it would come back under the
//! same name on a later scale-out and serve stale keys.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::EventType;

use super::super::super::apply::delete_if_exists;
use super::super::super::build::{primary_service_name, shard_selector, LABEL_SHARD};
use super::super::super::context::{Context, Error};
use super::super::super::observe::Observed;
use super::super::super::validate::{shard_name, ValidatedCluster};
use crate::api::DatabaseCluster;

/// Deletes every shard StatefulSet (and what goes with it) numbered
/// `v.running_shards` or above.
pub async fn remove_extra_shards(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &Observed,
) -> Result<(), Error> {
    let extra: Vec<u32> = observed
        .statefulsets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| s.metadata.labels.as_ref()?.get(LABEL_SHARD)?.parse().ok())
        .filter(|&i| i >= v.running_shards)
        .collect();
    for shard in extra {
        remove(ctx, v, shard).await?;
        ctx.event(
            dbc,
            EventType::Normal,
            "ShardRemoved",
            "Reshard",
            format!(
                "shard {shard} owns no slots any more: deleted StatefulSet {} with its Services and volumes",
                shard_name(&v.name, shard)
            ),
        )
        .await;
    }
    Ok(())
}

async fn remove(ctx: &Context, v: &ValidatedCluster, shard: u32) -> Result<(), Error> {
    let (client, ns) = (&ctx.client, v.namespace.as_str());
    let name = shard_name(&v.name, shard);
    delete_if_exists::<StatefulSet>(client, ns, &name).await?;
    delete_if_exists::<Service>(client, ns, &name).await?;
    delete_if_exists::<Service>(client, ns, &primary_service_name(&v.name, shard)).await?;
    delete_if_exists::<PodDisruptionBudget>(client, ns, &name).await?;
    delete_if_exists::<PodDisruptionBudget>(client, ns, &format!("{name}-primary")).await?;
    let selector = shard_selector(&v.name, shard)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for c in claims
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        if let Some(n) = c.metadata.name {
            match claims.delete(&n, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    tracing::info!(cluster = %v.name, namespace = %ns, shard, "removed a drained shard");
    Ok(())
}
