//! Changes that the StatefulSets' `OnDelete` strategy leaves to the
//! operator: restarting pods on an outdated template (replicas first, the
//! primary last, one at a time) and growing volumes. Decisions are pure
//! ([`next_restart`], [`grows`]); [`roll_and_grow`] performs them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;

use super::build::{LABEL_CLUSTER, LABEL_SHARD};
use super::context::{Context, Error};
use super::observe::Observed;
use super::operations::switchover;
use super::topology::{self, ObservedNode};
use super::validate::ValidatedCluster;
use crate::api::{DatabaseCluster, ShardStatus};

const REVISION_LABEL: &str = "controller-revision-hash";

/// Bytes in a Kubernetes quantity (`1Gi`, `500M`, `1.5Gi`, `1024`).
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    Some(n * mult)
}

/// True when `want` is larger than `have` (both quantities).
pub fn grows(have: &str, want: &str) -> bool {
    matches!((quantity_bytes(have), quantity_bytes(want)), (Some(h), Some(w)) if w > h)
}

/// The next pod to restart so it picks up its StatefulSet's current
/// template: outdated replicas first, then the primary. `None` when every
/// pod is current or one is already missing (wait for it).
pub fn next_restart<'a>(
    nodes: &'a [ObservedNode],
    update_revision: &BTreeMap<u32, String>,
    roles: impl Fn(&str) -> Option<&'static str>,
) -> Option<&'a ObservedNode> {
    let outdated = |n: &&ObservedNode| {
        let want = update_revision.get(&n.shard);
        let have = n.labels.get(REVISION_LABEL);
        matches!((want, have), (Some(w), Some(h)) if w != h)
    };
    let mut candidates: Vec<&ObservedNode> = nodes.iter().filter(outdated).collect();
    candidates.sort_by_key(|n| (roles(&n.pod) == Some("primary"), n.shard, n.ordinal));
    candidates.into_iter().next()
}

/// With everything Ready: restart one outdated pod (StatefulSets use
/// `OnDelete`), and grow volumes the spec made larger.
pub async fn roll_and_grow(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    observed: &Observed,
    shards: &[ShardStatus],
) -> Result<bool, Error> {
    let ns = &v.namespace;
    let revisions: std::collections::BTreeMap<u32, String> = observed
        .statefulsets
        .iter()
        .filter_map(|s| {
            let shard = s.metadata.labels.as_ref()?.get(LABEL_SHARD)?.parse().ok()?;
            let st = s.status.as_ref()?;
            // The controller has not caught up with the last apply yet.
            if st.observed_generation != s.metadata.generation {
                return None;
            }
            Some((shard, st.update_revision.clone()?))
        })
        .collect();
    if let Some(n) = next_restart(&observed.nodes, &revisions, |p| {
        topology::role_of(shards, p)
    }) {
        // Replicas restart only once every replica has caught up (within
        // 2 s of its primary by the heartbeats, not resyncing), one at a time.
        let lagging = observed.nodes.iter().any(|m| {
            topology::role_of(shards, &m.pod) == Some("replica")
                && m.info.as_ref().is_none_or(|i| {
                    i.replication.resyncing || i.replication.lag_ms.is_none_or(|l| l > 2000)
                })
        });
        if lagging {
            return Ok(true);
        }
        // A primary is never restarted while it leads: a switchover hands
        // its role to an (already updated) replica first, and the next
        // reconcile restarts it as a replica.
        if topology::role_of(shards, &n.pod) == Some("primary") && v.replicas > 1 {
            switchover::request(&ctx.client, ns, &v.name, &n.shard.to_string()).await?;
            ctx.event(
                dbc,
                EventType::Normal,
                "RollingSwitchover",
                "Switchover",
                format!(
                    "{} is outdated and primary: switching over before restarting it",
                    n.pod
                ),
            )
            .await;
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        pods.delete(&n.pod, &Default::default()).await?;
        ctx.event(
            dbc,
            EventType::Normal,
            "RollingRestart",
            "RestartNode",
            format!("restarted {} to apply its StatefulSet's new template (replicas first, the primary last)", n.pod),
        )
        .await;
        return Ok(false);
    }
    grow_volumes(ctx, dbc, v).await?;
    Ok(false)
}

/// Grows the data volumes the spec made larger (once per claim; a class
/// that cannot expand is reported once).
async fn grow_volumes(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
) -> Result<(), Error> {
    let ns = &v.namespace;
    let want = &v.spec.storage.size;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", v.name));
    for pvc in pvcs.list(&lp).await?.items {
        let name = pvc.name_any();
        if !name.starts_with("data-") {
            continue;
        }
        let have = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        if !grows(&have, want) {
            continue;
        }
        let patch = json!({ "spec": { "resources": { "requests": { "storage": want } } } });
        match pvcs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "VolumeExpanded",
                    "ExpandVolume",
                    format!("{name}: {have} → {want}"),
                )
                .await
            }
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                ctx.event(
                    dbc,
                    EventType::Warning,
                    "VolumeNotExpandable",
                    "ExpandVolume",
                    format!(
                        "{name} stays {have}: {} (use a StorageClass with allowVolumeExpansion)",
                        s.message
                    ),
                )
                .await;
                // Do not retry every minute: the class will not change.
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(shard: u32, ordinal: u32, rev: &str) -> ObservedNode {
        ObservedNode {
            pod: format!("c-shard-{shard}-{ordinal}"),
            shard,
            ordinal,
            ip: None,
            pod_ready: true,
            info: None,
            labels: [(REVISION_LABEL.to_string(), rev.to_string())].into(),
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536.0));
        assert_eq!(quantity_bytes("12"), Some(12.0));
        assert_eq!(quantity_bytes("lots"), None);
        assert!(grows("1Gi", "2Gi"));
        assert!(!grows("1Gi", "1024Mi"));
        assert!(!grows("2Gi", "1Gi"));
    }

    #[test]
    fn replicas_restart_before_the_primary() {
        let revs: BTreeMap<u32, String> = [(0, "new".to_string())].into();
        let role = |p: &str| {
            if p.ends_with("-0") {
                Some("primary")
            } else {
                Some("replica")
            }
        };
        let nodes = vec![pod(0, 0, "old"), pod(0, 1, "old"), pod(0, 2, "new")];
        assert_eq!(
            next_restart(&nodes, &revs, role).map(|n| n.pod.as_str()),
            Some("c-shard-0-1")
        );
        let nodes = vec![pod(0, 0, "old"), pod(0, 1, "new"), pod(0, 2, "new")];
        assert_eq!(
            next_restart(&nodes, &revs, role).map(|n| n.pod.as_str()),
            Some("c-shard-0-0")
        );
        let nodes = vec![pod(0, 0, "new"), pod(0, 1, "new")];
        assert!(next_restart(&nodes, &revs, role).is_none());
    }
}
