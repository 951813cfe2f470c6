//! PodDisruptionBudgets per shard: one for its replicas, one for its primary.
//!
//! Voluntary evictions (`kubectl drain`, cluster autoscalers) take one
//! replica of a shard at a time, and never the primary: a drain cordons the
//! node first, the operator switches the primary away (see `placement`),
//! the pod's role label turns `replica` and the replicas' budget lets it go.
//! Two budgets because the eviction API refuses a pod that two select, and
//! both as `minAvailable`: with `maxUnavailable` the disruption controller
//! counts the StatefulSet's whole scale as expected pods, so a budget that
//! selects only some of them would never allow anything.

use super::*;

fn budget(
    c: &ValidatedCluster,
    name: String,
    shard: u32,
    role: &str,
    min_available: i32,
) -> PodDisruptionBudget {
    let mut selector = shard_selector(&c.name, shard);
    selector.insert(LABEL_ROLE.into(), role.into());
    PodDisruptionBudget {
        metadata: meta(c, name, shard_labels(c, shard)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
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
    // All replicas but one stay; the primary stays while it has a replica
    // to switch to (a single-node shard has no redundancy to protect).
    let replicas = c.replicas as i32 - 1;
    [
        budget(
            c,
            c.shard_name(shard),
            shard,
            "replica",
            (replicas - 1).max(0),
        ),
        budget(
            c,
            primary_pdb_name(c, shard),
            shard,
            "primary",
            replicas.min(1),
        ),
    ]
}
