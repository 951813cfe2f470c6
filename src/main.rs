use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use tessera::node::{self, wal::FsyncPolicy, NodeConfig};

#[global_allocator]
static GLOBAL: node::alloc::CountingAlloc = node::alloc::CountingAlloc;

/// `--maxmemory-samples`: 1 to 64, as Redis takes it.
fn parse_samples(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number between 1 and 64")),
    }
}

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
    Node(Box<NodeArgs>),
    /// Run the operator (in-cluster, or against KUBECONFIG).
    Operator(tessera::cli::OperatorArgs),
    /// Print the DatabaseCluster CustomResourceDefinition (YAML).
    Crd,
    /// Print a cluster's topology from its status, and how to connect.
    Status(tessera::cli::StatusArgs),
    /// Backups: run, archive, list, verify, prune, restore.
    Backup(tessera::backup::cli::BackupArgs),
    /// Planned change of a shard's primary, with no acknowledged write lost.
    Switchover(tessera::cli::switchover::SwitchoverArgs),
    /// Write-load generator of the benchmarks (`bench/replication.py`).
    #[command(hide = true)]
    Loadgen(tessera::cli::loadgen::LoadgenArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// RESP port (0: any free port).
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Admin HTTP port: /healthz, /readyz, /metrics, /v1/status, topology.
    #[arg(long, default_value_t = 9121)]
    admin_port: u16,
    /// A second, plain-HTTP port serving only /healthz, /readyz and
    /// /metrics, so that probes and scrapers need no access to the admin
    /// port (pods get 9122 from the operator). Unset: none.
    #[arg(long)]
    metrics_port: Option<u16>,
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
    /// Refuse writes with -OOM above this many bytes (0: no limit; by
    /// default three quarters of the cgroup's memory limit, none without one).
    #[arg(long)]
    maxmemory: Option<u64>,
    /// What a write above maxmemory does: noeviction (refuse it with -OOM),
    /// or evict keys: allkeys-lru, allkeys-lfu, allkeys-random,
    /// volatile-lru, volatile-lfu, volatile-random, volatile-ttl.
    #[arg(long, default_value = "noeviction")]
    maxmemory_policy: node::evict::Policy,
    /// Keys sampled per eviction (more: closer to exact LRU/LFU/TTL order).
    #[arg(long, default_value_t = node::evict::DEFAULT_SAMPLES, value_parser = parse_samples)]
    maxmemory_samples: usize,
    /// File holding the password clients must AUTH with.
    #[arg(long)]
    requirepass_file: Option<PathBuf>,
    /// File holding the bearer token every admin `/v1/*` call must carry
    /// (re-read when it changes). Without it those calls are open: fine on
    /// a laptop, never in a cluster (the operator always sets it).
    #[arg(long, env = "TESSERA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// An ACL user besides `default`: its name and Redis `ACL SETUSER`
    /// rules, e.g. "app on ~* +@read" (repeatable; docs/security.md).
    #[arg(long = "acl-user", value_name = "NAME RULES")]
    acl_users: Vec<String>,
    /// Directory with one file per ACL user, named after it, holding its
    /// password (kept out of the command line).
    #[arg(long)]
    acl_password_dir: Option<PathBuf>,
    /// TLS client port beside --port (as Redis' tls-port; 0: any free
    /// port). Needs --tls-cert-file and --tls-key-file.
    #[arg(long, requires_all = ["tls_cert_file", "tls_key_file"])]
    tls_port: Option<u16>,
    /// PEM certificate chain of this node (cert-manager's tls.crt).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of this node (tls.key).
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates peers (and, with --tls-auth-clients, clients)
    /// must chain to (ca.crt).
    #[arg(long)]
    tls_ca_cert_file: Option<PathBuf>,
    /// Replication and migration links connect to peers' TLS ports.
    #[arg(long, requires = "tls_port")]
    tls_replication: bool,
    /// The admin port speaks HTTPS (same certificate).
    #[arg(long, requires = "tls_port")]
    tls_admin: bool,
    /// Clients of the TLS port must present a certificate of the CA.
    #[arg(long, requires_all = ["tls_port", "tls_ca_cert_file"])]
    tls_auth_clients: bool,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Take a snapshot after this many bytes of log since the last one, or
    /// after as many as the last snapshot holds when that is more.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    snapshot_log_bytes: u64,
    /// Busy-poll this many microseconds after the last client read before
    /// sleeping: saves request/reply clients a wakeup per command, at the
    /// cost of up to this much CPU per quiet gap (0: off; docs/node.md).
    #[arg(long, default_value_t = 50)]
    idle_spin_us: u64,
    /// Close a client whose unparsed input exceeds this many bytes (Redis'
    /// client-query-buffer-limit). Default: 1 GiB, or an eighth of the
    /// cgroup's memory limit when that is less (at least 16 MiB).
    #[arg(long)]
    client_query_buffer_limit: Option<usize>,
    /// Close a client whose pending replies exceed this many bytes (Redis'
    /// client-output-buffer-limit for normal clients, hard limit). Default
    /// as --client-query-buffer-limit.
    #[arg(long)]
    client_output_buffer_limit: Option<usize>,
    /// A command whose reply would exceed this many bytes answers an error
    /// instead. Default as --client-query-buffer-limit.
    #[arg(long)]
    max_reply_bytes: Option<usize>,
    /// Node ID (40 hex characters); by default generated once and kept in the data directory.
    #[arg(long)]
    node_id: Option<String>,
    /// Log as JSON lines (the default in containers).
    #[arg(long, env = "TESSERA_LOG_JSON")]
    log_json: bool,
    /// When a write is acknowledged: eventual (the primary's log), quorum
    /// (also a quorum of replicas), strong (every replica). A topology push
    /// that carries a consistency wins.
    #[arg(long, default_value = "eventual")]
    consistency: node::replication::Consistency,
    /// quorum: replicas that must acknowledge (default: a majority of replicas).
    #[arg(long)]
    quorum_replicas: Option<usize>,
    /// quorum: percentage of replicas that must acknowledge (rounded up).
    #[arg(long)]
    quorum_percent: Option<u32>,
    /// Replicas the shard has, when no topology names them.
    #[arg(long)]
    replicas: Option<usize>,
    /// quorum/strong: the primary stops acknowledging when it has not heard
    /// from enough replicas for this long.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// How long a write waits for its replica acknowledgements.
    #[arg(long, default_value_t = 5000)]
    ack_timeout_ms: u64,
    /// A replica lagging more than this sends READONLY reads to its primary.
    #[arg(long)]
    max_staleness_ms: Option<u64>,
    /// Bytes of recent log a primary keeps in memory for its replicas.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    repl_ring_bytes: usize,
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

/// The `--acl-user` definitions, each with its password from
/// `--acl-password-dir` when that holds a file named after the user.
fn acl_users(defs: &[String], dir: Option<&std::path::Path>) -> Result<node::acl::Acl> {
    let mut acl = node::acl::Acl::default();
    for def in defs {
        acl.define(def)
            .with_context(|| format!("invalid --acl-user {def:?}"))?;
        let name = def.split_whitespace().next().unwrap_or_default();
        if let Some(dir) = dir {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(pw) => {
                    let pw = pw.trim_end_matches(['\r', '\n']);
                    if pw.is_empty() {
                        anyhow::bail!("the password file {} is empty", path.display());
                    }
                    acl.set_user(name, &[&format!(">{pw}")])
                        .with_context(|| format!("setting the password of {name}"))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("failed to read the password file {}", path.display())
                    })
                }
            }
        }
    }
    Ok(acl)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(a) => {
            init_tracing(a.log_json);
            if a.admin_token_file.is_none() {
                tracing::warn!("no --admin-token-file: the admin API's /v1 calls are open to anyone who reaches the admin port");
            }
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
                metrics_port: a.metrics_port,
                announce_host: a.announce_host,
                data_dir: a.data_dir,
                persistence: !a.no_persistence,
                fsync: a.fsync,
                maxmemory: a.maxmemory.unwrap_or_else(|| {
                    let derived = node::alloc::default_maxmemory();
                    if derived > 0 {
                        tracing::info!(
                            maxmemory = derived,
                            "maxmemory derived from the cgroup memory limit"
                        );
                    }
                    derived
                }),
                maxmemory_policy: a.maxmemory_policy,
                maxmemory_samples: a.maxmemory_samples,
                password,
                admin_token_file: a.admin_token_file,
                acl: acl_users(&a.acl_users, a.acl_password_dir.as_deref())?,
                tls: match (a.tls_port, a.tls_cert_file, a.tls_key_file) {
                    (Some(port), Some(cert_file), Some(key_file)) => Some(node::tls::TlsSettings {
                        port,
                        cert_file,
                        key_file,
                        ca_file: a.tls_ca_cert_file,
                        replication: a.tls_replication,
                        admin: a.tls_admin,
                        auth_clients: a.tls_auth_clients,
                    }),
                    _ => None,
                },
                max_clients: a.max_clients,
                snapshot_log_bytes: a.snapshot_log_bytes,
                idle_spin_us: a.idle_spin_us,
                limits: {
                    let d = node::ClientLimits::for_memory(node::alloc::cgroup_memory_limit());
                    node::ClientLimits {
                        query_buffer: a.client_query_buffer_limit.unwrap_or(d.query_buffer),
                        output_buffer: a.client_output_buffer_limit.unwrap_or(d.output_buffer),
                        max_reply: a.max_reply_bytes.unwrap_or(d.max_reply),
                    }
                },
                node_id: a.node_id,
                repl: node::replication::ReplConfig {
                    consistency: a.consistency,
                    quorum_replicas: a.quorum_replicas,
                    quorum_percent: a.quorum_percent,
                    replicas: a.replicas,
                    lease_ms: a.lease_ms,
                    ack_timeout_ms: a.ack_timeout_ms,
                    max_staleness_ms: a.max_staleness_ms,
                    ring_bytes: a.repl_ring_bytes,
                },
            };
            node::run(cfg).context("the node stopped with an error")?;
        }
        Command::Operator(a) => {
            init_tracing(a.log_json);
            tessera::cli::run_operator(a)?;
        }
        Command::Crd => print!("{}", tessera::api::crd_yaml()?),
        Command::Status(a) => tessera::cli::run_status(a)?,
        Command::Switchover(a) => tessera::cli::switchover::run(a)?,
        Command::Loadgen(a) => tessera::cli::loadgen::run(a)?,
        Command::Backup(a) => {
            init_tracing(a.log_json);
            tessera::backup::cli::run(a)?;
        }
    }
    Ok(())
}
