//! Reads what is running: the cluster's StatefulSets and pods, and every
//! node's own view from its admin port (concurrently, each call bounded;
//! the replicas before the primaries).

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::Client;

use super::build::{LABEL_CLUSTER, LABEL_ROLE, LABEL_SHARD};
use super::placement::Placement;
use super::topology::{admin_addr, ObservedNode};
use crate::client::NodeClient;

#[derive(Debug, Default)]
pub struct Observed {
    pub statefulsets: Vec<StatefulSet>,
    pub nodes: Vec<ObservedNode>,
    /// The cluster's Jobs (backups, restores), by the cluster label.
    pub jobs: Vec<Job>,
    /// Pods of those Jobs (cluster label, no shard label): their
    /// termination messages carry the jobs' JSON results.
    pub job_pods: Vec<Pod>,
    /// The Kubernetes Nodes under the member pods.
    pub placement: Placement,
}

impl Observed {
    /// Claim template size of each existing shard StatefulSet.
    pub fn claim_sizes(&self) -> BTreeMap<u32, String> {
        self.statefulsets
            .iter()
            .filter_map(|s| {
                let shard = s.metadata.labels.as_ref()?.get(LABEL_SHARD)?.parse().ok()?;
                let claim = s.spec.as_ref()?.volume_claim_templates.as_ref()?.first()?;
                let size = claim
                    .spec
                    .as_ref()?
                    .resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")?;
                Some((shard, size.0.clone()))
            })
            .collect()
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ordinal at the end of a StatefulSet pod's name.
fn ordinal(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// Binds node pods' IPs to their cluster for admin calls: its token, and
/// HTTPS verified against its CA for pods that run with `--tls-admin`.
pub fn bind_pods(namespace: &str, cluster: &str, pods: &[Pod]) {
    let ip = |p: &Pod| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok();
    let (https, plain): (Vec<&Pod>, Vec<&Pod>) = pods
        .iter()
        .partition(|p| crate::operator::build::pod_admin_https(p));
    crate::client::auth::bind_ips(namespace, cluster, plain.into_iter().filter_map(ip));
    crate::client::auth::bind_https_ips(namespace, cluster, https.into_iter().filter_map(ip));
}

/// A status call answers in milliseconds; a hung node would hold every
/// reconcile of its cluster (and so its failover) for the client's whole
/// timeout. The same bound as the health monitor's probes.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn observe(
    client: &Client,
    nodes: &NodeClient,
    namespace: &str,
    cluster: &str,
) -> Result<Observed, kube::Error> {
    let lp = ListParams::default().labels(&format!("{LABEL_CLUSTER}={cluster}"));
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let hosts: Api<Node> = Api::all(client.clone());
    let all = ListParams::default();
    let (statefulsets, pods, jobs, hosts) = futures::try_join!(
        sts.list(&lp),
        pods.list(&lp),
        jobs.list(&lp),
        hosts.list(&all)
    )?;
    let (node_pods, job_pods): (Vec<Pod>, Vec<Pod>) = pods.items.into_iter().partition(|p| {
        p.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_SHARD))
    });
    // Calls to these pods carry this cluster's admin token, over HTTPS to
    // the pods that serve it.
    bind_pods(namespace, cluster, &node_pods);
    let placement = Placement::new(&node_pods, &hosts.items);
    let candidates: Vec<(Pod, u32, u32)> = node_pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let shard = p.metadata.labels.as_ref()?.get(LABEL_SHARD)?.parse().ok()?;
            let ord = ordinal(p.metadata.name.as_deref()?)?;
            Some((p, shard, ord))
        })
        .collect();
    // Replicas first, then the pods labelled primary, shard by shard: a
    // live primary's log then ends at or after every replica's as observed.
    // Observed all at once, a primary under writes that answered a few
    // milliseconds before its replicas could look behind them, like a
    // restarted primary that lost its tail (the planner's RestartedBehind),
    // and a switchover was refused for it.
    let is_primary = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ROLE))
            .is_some_and(|r| r == "primary")
    };
    let status = |p: &Pod| {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        async move {
            let addr = admin_addr(ip.as_deref()?)?;
            match tokio::time::timeout(STATUS_TIMEOUT, nodes.status(addr)).await {
                Ok(Ok(i)) => Some((i, std::time::Instant::now())),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "node status unavailable");
                    None
                }
                Err(_) => {
                    tracing::debug!(%addr, "node status not answered within 1 s");
                    None
                }
            }
        }
    };
    // Per shard: a hung member of one shard (a frozen Kubernetes node holds
    // members of several) must not hold another shard's observation for a
    // second timeout.
    let shards: std::collections::BTreeSet<u32> = candidates.iter().map(|c| c.1).collect();
    let per_shard = join_all(shards.into_iter().map(|shard| {
        let (primaries, replicas): (Vec<usize>, Vec<usize>) = (0..candidates.len())
            .filter(|&i| candidates[i].1 == shard)
            .partition(|&i| is_primary(&candidates[i].0));
        let candidates = &candidates;
        async move {
            let r = join_all(replicas.iter().map(|&i| status(&candidates[i].0))).await;
            let p = join_all(primaries.iter().map(|&i| status(&candidates[i].0))).await;
            replicas
                .into_iter()
                .zip(r)
                .chain(primaries.into_iter().zip(p))
                .collect::<Vec<_>>()
        }
    }))
    .await;
    let mut answers: Vec<Option<_>> = (0..candidates.len()).map(|_| None).collect();
    for (i, a) in per_shard.into_iter().flatten() {
        answers[i] = a;
    }
    let infos: Vec<_> = answers
        .into_iter()
        .map(|next| {
            // A replica's heartbeat age is as of its answer; the primaries
            // are asked after the replicas (and a hung one holds the
            // observation for the whole timeout): age it to now.
            next.map(|(mut i, answered): (_, std::time::Instant)| {
                if let Some(age) = i.replication.heartbeat_age_ms.as_mut() {
                    *age += answered.elapsed().as_millis() as u64;
                }
                i
            })
        })
        .collect();
    let nodes = candidates
        .into_iter()
        .zip(infos)
        .map(|((p, shard, ordinal), info)| ObservedNode {
            pod: p.metadata.name.clone().unwrap_or_default(),
            shard,
            ordinal,
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            pod_ready: pod_ready(&p),
            info,
            labels: p.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    Ok(Observed {
        statefulsets: statefulsets.items,
        nodes,
        jobs: jobs.items,
        job_pods,
        placement,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordinal_parses_the_suffix() {
        assert_eq!(super::ordinal("users-shard-2-10"), Some(10));
        assert_eq!(super::ordinal("nodash"), None);
    }
}
