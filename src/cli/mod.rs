//! Operator-facing subcommands (`tessera operator`, `tessera status`,
//! `tessera switchover`) and the benchmarks' load generator.

pub mod loadgen;
pub mod switchover;

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use kube::api::Api;
use kube::Client;

use crate::api::DatabaseCluster;
use crate::operator;

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Image for nodes whose DatabaseCluster names none.
    #[arg(long, env = "TESSERA_DEFAULT_IMAGE", default_value = "")]
    pub default_image: String,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "TESSERA_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tessera-system")]
    pub lease_namespace: String,
    #[arg(long, default_value = "tessera-operator-leader")]
    pub lease_name: String,
    /// The namespace the operator's pods run in (admitted to the nodes'
    /// admin port by each cluster's NetworkPolicy).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tessera-system")]
    pub operator_namespace: String,
    /// This replica's identity in the Lease (default: the pod name); a
    /// random suffix is added per process.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconcile without a Lease (one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Log as JSON lines (the default in containers).
    #[arg(long, env = "TESSERA_LOG_JSON")]
    pub log_json: bool,
}

pub fn run_operator(a: OperatorArgs) -> Result<()> {
    // Unique per process: a restarted container must not inherit the term
    // of the process that died (it waits for the lease like any stand-by).
    let base = a
        .identity
        .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "tessera".into()));
    let identity = format!("{base}_{:08x}", rand::random::<u32>());
    let config = operator::Config {
        default_image: a.default_image,
        lease_namespace: a.lease_namespace,
        operator_namespace: a.operator_namespace,
        lease_name: a.lease_name,
        identity,
        metrics_addr: a.metrics_addr,
        no_leader_election: a.no_leader_election,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(operator::run(config))
        .context("the operator stopped with an error")
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Namespace of the cluster.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Name of the DatabaseCluster.
    pub name: String,
    /// Print the status as JSON instead.
    #[arg(long)]
    pub json: bool,
}

pub fn run_status(a: StatusArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        let client = Client::try_default()
            .await
            .context("no Kubernetes configuration (set KUBECONFIG)")?;
        let api: Api<DatabaseCluster> = Api::namespaced(client, &a.namespace);
        let dbc = api
            .get(&a.name)
            .await
            .with_context(|| format!("reading DatabaseCluster {}/{}", a.namespace, a.name))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&dbc.status)?);
        } else {
            print!("{}", render_status(&dbc));
        }
        Ok(())
    })
}

/// The human view of a cluster's topology (from its status).
pub fn render_status(dbc: &DatabaseCluster) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let s = dbc.status.clone().unwrap_or_default();
    let name = dbc.metadata.name.clone().unwrap_or_default();
    let ns = dbc.metadata.namespace.clone().unwrap_or_default();
    let _ = writeln!(
        o,
        "cluster {ns}/{name}: phase {} ({}), ready {}, topology epoch {}",
        s.phase.as_deref().unwrap_or("Pending"),
        s.reason.as_deref().unwrap_or("-"),
        s.ready.as_deref().unwrap_or("0/0"),
        s.epoch
    );
    let _ = writeln!(
        o,
        "spec: {} shards x {} replicas, consistency {}{}",
        dbc.spec.shards,
        dbc.spec.replicas,
        dbc.spec.consistency.level.as_str(),
        dbc.spec
            .sharding_key
            .as_deref()
            .map(|k| format!(", sharding key {k} (keys look like obj:{{<{k}>}}:field)"))
            .unwrap_or_default()
    );
    if let Some(m) = &s.message {
        let _ = writeln!(o, "message: {m}");
    }
    let _ = writeln!(
        o,
        "{:<22} {:<14} {:>6}  {:<28} ROLE / IP / NODE ID",
        "SHARD", "SLOTS", "EPOCH", "POD"
    );
    for sh in &s.shards {
        let slots = sh.slots.join(",");
        let mut first = true;
        for (role, n) in sh
            .primary
            .iter()
            .map(|p| ("primary", p))
            .chain(sh.replicas.iter().map(|r| ("replica", r)))
        {
            let (a, b, c) = if first {
                (sh.name.as_str(), slots.as_str(), sh.epoch.to_string())
            } else {
                ("", "", String::new())
            };
            first = false;
            let _ = writeln!(
                o,
                "{a:<22} {b:<14} {c:>6}  {:<28} {role} {} {}{}",
                n.pod,
                n.ip,
                &n.node_id[..n.node_id.len().min(12)],
                if n.ready { "" } else { " (not ready)" }
            );
        }
    }
    let seed = s
        .shards
        .iter()
        .filter_map(|sh| sh.primary.as_ref())
        .find(|p| p.ready)
        .or_else(|| s.shards.iter().filter_map(|sh| sh.primary.as_ref()).next());
    match seed {
        Some(p) => {
            // Every cluster has a password: the user's Secret or the
            // generated `<cluster>-auth`.
            let (secret, key) = match dbc
                .spec
                .auth
                .as_ref()
                .and_then(|a| Some((a.secret_name.clone()?, a.key.clone())))
            {
                Some(sk) => sk,
                None => (
                    crate::operator::build::generated_auth_secret_name(&name),
                    crate::operator::build::AUTH_PASSWORD_KEY.to_string(),
                ),
            };
            let _ = writeln!(
                o,
                "password: PASSWORD=$(kubectl get secret -n {ns} {secret} -o jsonpath='{{.data.{key}}}' | base64 -d)"
            );
            let auth = " -a \"$PASSWORD\"";
            let _ = writeln!(o, "connect: redis-cli -c -h {} -p 6379{auth}", p.ip);
            let _ = writeln!(
                o,
                "in-cluster: redis-cli -c -h {name}.{ns}.svc -p 6379{auth}"
            );
        }
        None => {
            let _ = writeln!(o, "connect: not bootstrapped yet");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use crate::api::{DatabaseCluster, DatabaseClusterStatus, NodeStatus, ShardStatus};

    fn with_primary(spec: &str) -> DatabaseCluster {
        let mut d = DatabaseCluster::new("demo", serde_json::from_str(spec).expect("spec"));
        d.metadata.namespace = Some("default".into());
        d.status = Some(DatabaseClusterStatus {
            shards: vec![ShardStatus {
                name: "demo-shard-0".into(),
                primary: Some(NodeStatus {
                    pod: "demo-shard-0-0".into(),
                    ip: "198.18.0.9".into(),
                    node_id: "abc".into(),
                    ready: true,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        d
    }

    #[test]
    fn status_shows_how_to_read_the_generated_or_given_password() {
        let out = super::render_status(&with_primary("{}"));
        assert!(
            out.contains("kubectl get secret -n default demo-auth -o jsonpath='{.data.password}' | base64 -d"),
            "{out}"
        );
        assert!(out.contains("connect: redis-cli -c -h 198.18.0.9 -p 6379 -a \"$PASSWORD\""));
        let out = super::render_status(&with_primary(
            r#"{"auth":{"secretName":"mine","key":"pw"}}"#,
        ));
        assert!(
            out.contains("secret -n default mine -o jsonpath='{.data.pw}'"),
            "{out}"
        );
    }
}
