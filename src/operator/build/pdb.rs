//! One PodDisruptionBudget per shard.

use super::*;

pub fn build_pdb(c: &ValidatedCluster, shard: u32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(c, c.shard_name(shard), shard_labels(c, shard)),
        spec: Some(PodDisruptionBudgetSpec {
            // One node of a shard at a time; a single-node shard can still be
            // drained (it has no redundancy to protect).
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(shard_selector(&c.name, shard)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
