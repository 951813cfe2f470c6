//! PodDisruptionBudgets per shard: one for its replicas, one for its primary.
//!
//! Voluntary evictions (`kubectl drain`, cluster autoscalers) take one
//! replica of a shard at a time, and never the primary: a drain cordons the
//! node first, the operator switches the primary away (see `placement`),
//! the pod's role label turns `replica` and the replicas' budget lets it go.
//! Two budgets because the eviction API refuses a pod that two select.

use super::*;

fn budget(
    c: &ValidatedCluster,
    name: String,
    shard: u32,
    role: &str,
    max_unavailable: i32,
) -> PodDisruptionBudget {
    let mut selector = shard_selector(&c.name, shard);
    selector.insert(LABEL_ROLE.into(), role.into());
    PodDisruptionBudget {
        metadata: meta(c, name, shard_labels(c, shard)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            // A member that is not Ready protects nothing by staying: a
            // drain of a broken node must not wait on it.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The name of a shard's primary budget.
pub fn primary_pdb_name(c: &ValidatedCluster, shard: u32) -> String {
    format!("{}-primary", c.shard_name(shard))
}

pub fn build_pdbs(c: &ValidatedCluster, shard: u32) -> [PodDisruptionBudget; 2] {
    // A single-node shard has no replica to switch to: it can be drained
    // (it has no redundancy to protect).
    let primary_max = if c.replicas > 1 { 0 } else { 1 };
    [
        budget(c, c.shard_name(shard), shard, "replica", 1),
        budget(c, primary_pdb_name(c, shard), shard, "primary", primary_max),
    ]
}
