//! The cluster's ConfigMap (`cluster.json`).

use super::*;

/// Settings the nodes and tools read (consistency, failover, sharding key).
pub fn build_config_map(c: &ValidatedCluster) -> ConfigMap {
    let s = &c.spec;
    let doc = serde_json::json!({
        "cluster": c.name,
        "shards": c.shards,
        "replicas": c.replicas,
        "shardingKey": s.sharding_key,
        "consistency": {
            "level": s.consistency.level.as_str(),
            "quorumPercentage": s.consistency.quorum_percentage,
            "maxStaleness": s.consistency.max_staleness,
        },
        "failover": {
            "detectionSeconds": s.failover.detection_seconds,
            "allowDataLoss": s.failover.allow_data_loss,
        },
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    ConfigMap {
        metadata: meta(c, config_map_name(&c.name), labels(c)),
        data: Some([("cluster.json".to_string(), text)].into()),
        ..Default::default()
    }
}
