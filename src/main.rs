use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use tessera::node::{self, wal::FsyncPolicy, NodeConfig};

#[global_allocator]
static GLOBAL: node::alloc::CountingAlloc = node::alloc::CountingAlloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Sharded, replicated, Redis-protocol key-value clusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node: the RESP server plus the admin/metrics HTTP port.
    Node(NodeArgs),
    /// Run the operator (in-cluster, or against KUBECONFIG).
    Operator(tessera::cli::OperatorArgs),
    /// Print the DatabaseCluster CustomResourceDefinition (YAML).
    Crd,
    /// Print a cluster's topology from its status, and how to connect.
    Status(tessera::cli::StatusArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// RESP port (0: any free port).
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Admin HTTP port: /healthz, /readyz, /metrics, /v1/status, topology.
    #[arg(long, default_value_t = 9121)]
    admin_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Host or IP clients are told to use for this node (MOVED, CLUSTER SLOTS).
    #[arg(long, env = "TESSERA_ANNOUNCE_HOST")]
    announce_host: Option<String>,
    /// Directory for the write-ahead log, snapshots and the node ID.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// When to fsync the log: always (before every acknowledgement), everysec, no.
    #[arg(long, default_value = "everysec")]
    fsync: FsyncPolicy,
    /// Memory only: no log, no snapshots (a cache, or benchmarks).
    #[arg(long)]
    no_persistence: bool,
    /// Refuse writes with -OOM above this many bytes (0: no limit).
    #[arg(long, default_value_t = 0)]
    maxmemory: u64,
    /// File holding the password clients must AUTH with.
    #[arg(long)]
    requirepass_file: Option<PathBuf>,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Take a snapshot after this many bytes of log since the last one.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    snapshot_log_bytes: u64,
    /// Node ID (40 hex characters); by default generated once and kept in the data directory.
    #[arg(long)]
    node_id: Option<String>,
    /// Log as JSON lines (the default in containers).
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(a) => {
            init_tracing(a.log_json);
            let password = match &a.requirepass_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| {
                            format!("failed to read the password file {}", p.display())
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ),
                None => None,
            };
            let cfg = NodeConfig {
                bind: a.bind,
                port: a.port,
                admin_port: a.admin_port,
                announce_host: a.announce_host,
                data_dir: a.data_dir,
                persistence: !a.no_persistence,
                fsync: a.fsync,
                maxmemory: a.maxmemory,
                password,
                max_clients: a.max_clients,
                snapshot_log_bytes: a.snapshot_log_bytes,
                node_id: a.node_id,
            };
            node::run(cfg).context("the node stopped with an error")?;
        }
        Command::Operator(a) => {
            init_tracing(a.log_json);
            tessera::cli::run_operator(a)?;
        }
        Command::Crd => print!("{}", tessera::api::crd_yaml()?),
        Command::Status(a) => tessera::cli::run_status(a)?,
    }
    Ok(())
}
