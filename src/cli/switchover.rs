//! `tessera switchover`: asks the operator for a planned primary change by
//! setting the `tessera.dev/switchover` annotation, and optionally waits
//! until the shard's `lastFailover` shows it done.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use kube::api::Api;
use kube::Client;

use crate::api::DatabaseCluster;
use crate::operator::operations::switchover::{parse_request, request, SWITCHOVER_ANNOTATION};

#[derive(clap::Args, Debug)]
pub struct SwitchoverArgs {
    /// Namespace of the cluster.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Name of the DatabaseCluster.
    pub name: String,
    /// Shard: an index (0, 1, …) or a shard name.
    #[arg(long, default_value = "0")]
    pub shard: String,
    /// Replica pod to promote (default: the replica with the highest LSN).
    #[arg(long)]
    pub to: Option<String>,
    /// Seconds to wait for the switchover to complete (0: do not wait).
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
}

pub fn run(a: SwitchoverArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        let client = Client::try_default()
            .await
            .context("no Kubernetes configuration (set KUBECONFIG)")?;
        let api: Api<DatabaseCluster> = Api::namespaced(client.clone(), &a.namespace);
        let dbc = api
            .get(&a.name)
            .await
            .with_context(|| format!("reading DatabaseCluster {}/{}", a.namespace, a.name))?;
        let shards = dbc.status.clone().unwrap_or_default().shards;
        let value = match &a.to {
            Some(t) => format!("{}:{t}", a.shard),
            None => a.shard.clone(),
        };
        // Refuse here what the operator would refuse, with the same words.
        let req = parse_request(&value, &shards).map_err(anyhow::Error::msg)?;
        let before = shards[req.shard].last_failover.clone();
        request(&client, &a.namespace, &a.name, &value)
            .await
            .context("setting the switchover annotation")?;
        println!(
            "requested a switchover of {} ({SWITCHOVER_ANNOTATION}={value})",
            shards[req.shard].name
        );
        if a.wait == 0 {
            return Ok(());
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(a.wait) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let d = api.get(&a.name).await?;
            let st = d.status.unwrap_or_default();
            let Some(s) = st.shards.get(req.shard) else {
                continue;
            };
            if s.failover.is_some() {
                continue;
            }
            if s.last_failover != before {
                if let Some(l) = &s.last_failover {
                    println!(
                        "{}: {} → {} at epoch {} in {} ms",
                        s.name, l.from, l.to, l.epoch, l.duration_ms
                    );
                    return Ok(());
                }
            }
            let pending = d
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|m| m.contains_key(SWITCHOVER_ANNOTATION));
            if !pending && start.elapsed() > Duration::from_secs(2) {
                bail!(
                    "the operator took the request but the primary did not change (refused or aborted): see `kubectl get events -n {} --field-selector involvedObject.name={}`",
                    a.namespace,
                    a.name
                );
            }
        }
        bail!("the switchover did not complete within {} s", a.wait)
    })
}
