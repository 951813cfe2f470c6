//! Autoscaling (`spec.autoscaling`): reads the primaries' figures the
//! reconcile already polled, decides with [`policy`], and changes
//! `spec.shards` — the same path as a manual change, so resharding does
//! the rest (docs/autoscaling.md). Its state is in `status.autoscaling`,
//! recorded by the reconcile's one status write.

pub mod policy;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;

use super::context::{now, Context, Error};
use super::operations::reshard;
use super::topology::ObservedNode;
use crate::api::{AutoscalingStatus, DatabaseCluster, DatabaseClusterStatus};
use policy::{Inputs, Primary, Verdict};

/// What this reconcile's autoscaler decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: AutoscalingStatus,
    pub verdict: Verdict,
    /// (shard, slot, share) of a hot slot to report.
    pub hot: Option<(u32, u16, f64)>,
}

fn since(t: &str) -> Option<Duration> {
    let t: k8s_openapi::jiff::Timestamp = t.parse().ok()?;
    Duration::try_from(now().0.duration_since(t)).ok()
}

/// Why the autoscaler must not act now, if anything runs.
fn busy(prev: &DatabaseClusterStatus, spec_shards: u32) -> Option<String> {
    if let Some(s) = prev.shards.iter().find(|s| s.failover.is_some()) {
        return Some(format!("a failover of {}", s.name));
    }
    if prev.resharding.as_ref().is_some_and(reshard::is_running) {
        return Some("a resharding".into());
    }
    if prev.shards.len() as u32 != spec_shards {
        return Some("the last shard count change".into());
    }
    if prev.phase.as_deref() != Some("Ready") {
        return Some(format!(
            "the cluster to be Ready (phase {})",
            prev.phase.as_deref().unwrap_or("unknown")
        ));
    }
    None
}

/// Runs the policy over the observed primaries; None without
/// `spec.autoscaling` or before the bootstrap.
pub fn evaluate(
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
    nodes: &[ObservedNode],
) -> Option<Outcome> {
    let spec = dbc.spec.autoscaling.as_ref()?;
    if prev.epoch == 0 {
        return None;
    }
    let primaries: Vec<Primary> = prev
        .shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let pod = &s.primary.as_ref()?.pod;
            let info = nodes.iter().find(|n| &n.pod == pod)?.info.as_ref()?;
            Some(Primary {
                shard: i as u32,
                data_memory: info.used_memory_dataset.unwrap_or(info.used_memory),
                maxmemory: info.maxmemory,
                ops_per_sec: info.ops_per_sec,
                hot_slot: info.hot_slot.as_ref().map(|h| (h.slot, h.share)),
            })
        })
        .collect();
    let last_resize = prev
        .resharding
        .as_ref()
        .and_then(|r| r.finished_at.as_deref())
        .or(prev
            .autoscaling
            .as_ref()
            .and_then(|a| a.last_scale_time.as_deref()))
        .and_then(since);
    let inputs = Inputs {
        spec,
        shards: prev.shards.len() as u32,
        primaries: &primaries,
        busy: busy(prev, dbc.spec.shards as u32),
        since_last_resize: last_resize,
    };
    let recorded = prev.autoscaling.clone().unwrap_or_default();
    let (verdict, status, hot) = policy::decide(&inputs, &recorded, &now().0.to_string(), since);
    Some(Outcome {
        status,
        verdict,
        hot,
    })
}

/// Changes `spec.shards` for a `Scale` verdict (after the status recorded
/// why), with an Event.
pub async fn act(ctx: &Context, dbc: &DatabaseCluster, o: &Outcome) -> Result<(), Error> {
    let Verdict::Scale { to, why } = &o.verdict else {
        return Ok(());
    };
    let ns = dbc.metadata.namespace.clone().unwrap_or_default();
    let name = dbc.metadata.name.clone().unwrap_or_default();
    let api: Api<DatabaseCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({ "spec": { "shards": to } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let from = dbc.spec.shards;
    ctx.event(
        dbc,
        EventType::Normal,
        "Autoscaled",
        "Autoscale",
        format!("shards {from} → {to}: {why}"),
    )
    .await;
    tracing::info!(cluster = %name, namespace = %ns, from, to, why = %why, "autoscaled");
    Ok(())
}
