//! The storage node: a Redis-protocol server over an in-memory keyspace made
//! durable by a write-ahead log and snapshots.
//!
//! Threading: like Redis, one thread owns the keyspace. It runs a
//! single-threaded tokio runtime with every client connection, the admin
//! HTTP server and the periodic jobs as local tasks, so commands need no
//! locks. Disk syncs happen on a separate thread (see [`wal`]), which is what
//! lets many clients' writes share one fsync.

pub mod acl;
pub mod admin;
pub mod admin_token;
pub mod alloc;
pub mod blocking;
pub mod client_io;
pub mod clients;
pub mod cmd;
pub mod evict;
pub mod fuzzing;
pub mod groups;
pub mod idle_spin;
pub mod info;
pub mod load;
pub mod lua;
pub mod lua_functions;
pub mod lua_libs;
pub mod lua_msgpack;
pub mod metrics;
pub mod migration;
pub mod notify;
pub mod pubsub;
pub mod pubsub_forward;
pub mod rdb;
pub mod release;
pub mod replication;
pub mod resp;
pub mod saved_topology;
pub mod script_registry;
pub mod server;
pub mod slots;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod wal;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cmd::{CommandSpec, Commands, ConnState};
use metrics::Stats;
use slots::{NodeAddr, SlotMap, SlotOwner};
use store::Store;
use wal::{FsyncPolicy, Wal};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("failed to bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("failed to read the password file {path}: {source}")]
    ReadPassword {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to prepare the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Replication(#[from] replication::ReplError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("failed to start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("failed to lock the data directory {path} ({lock}): {source}")]
    LockDataDir {
        path: PathBuf,
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory {path} is in use by another process ({holder}, holding {lock}): \
         two nodes must never share a data directory; refusing to start"
    )]
    DataDirInUse {
        path: PathBuf,
        lock: PathBuf,
        /// "pid N" as the holder wrote it, or "pid unknown".
        holder: String,
    },
}

/// Everything `tessera node` is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub admin_port: u16,
    /// The probes-and-metrics port (plain HTTP, nothing under /v1), if any.
    pub metrics_port: Option<u16>,
    /// Host name or IP other nodes and clients use for this node (MOVED
    /// replies, CLUSTER SLOTS). Defaults to the bind address.
    pub announce_host: Option<String>,
    pub data_dir: PathBuf,
    /// false: memory only (no log, no snapshots), like Redis without
    /// persistence; for caches and benchmarks.
    pub persistence: bool,
    pub fsync: FsyncPolicy,
    /// 0 = no limit.
    pub maxmemory: u64,
    /// What a write above `maxmemory` does (refuse, or evict what).
    pub maxmemory_policy: evict::Policy,
    /// Keys sampled per eviction (Redis' maxmemory-samples).
    pub maxmemory_samples: usize,
    pub password: Option<String>,
    /// File holding the bearer token the admin API's `/v1/*` calls need
    /// (None: those calls are open; see `admin_token`).
    pub admin_token_file: Option<PathBuf>,
    /// ACL users besides `default` (`--acl-user`).
    pub acl: acl::Acl,
    /// TLS (None: plaintext only).
    pub tls: Option<tls::TlsSettings>,
    pub max_clients: usize,
    /// Take a snapshot after this many log bytes since the last one.
    pub snapshot_log_bytes: u64,
    /// Node ID; by default generated once and kept in the data directory.
    pub node_id: Option<String>,
    /// Consistency mode, quorum, lease, staleness (see docs/replication.md).
    pub repl: replication::ReplConfig,
    /// Busy-poll this long after the last client read before sleeping
    /// (0: never; see `idle_spin`).
    pub idle_spin_us: u64,
    /// What one client may make the node hold.
    pub limits: ClientLimits,
}

/// Per-client resource bounds (docs/node.md, "Resource bounds").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Unparsed input a client may have buffered (Redis'
    /// client-query-buffer-limit); past it the client is closed.
    pub query_buffer: usize,
    /// Replies pending for one client (Redis' client-output-buffer-limit
    /// for normal clients, hard limit); past it the client is closed.
    pub output_buffer: usize,
    /// The reply one command may build; past it the command answers an
    /// error instead.
    pub max_reply: usize,
}

impl ClientLimits {
    /// Redis' client-query-buffer-limit default.
    pub const DEFAULT_QUERY_BUFFER: usize = 1024 * 1024 * 1024;
    /// Redis sets no output limit for normal clients; one that never reads
    /// could then hold any amount. 1 GiB: room for replies of the largest
    /// values (512 MiB bulks) while bounding what one client costs.
    pub const DEFAULT_OUTPUT_BUFFER: usize = 1024 * 1024 * 1024;
    /// Twice the largest bulk string: one command may return the largest
    /// value with room to spare, but not the whole keyspace.
    pub const DEFAULT_MAX_REPLY: usize = 1024 * 1024 * 1024;
}

impl ClientLimits {
    /// The defaults under a memory limit (a pod's): each bound at most an
    /// eighth of it, so that one client or one request cannot take the
    /// node past its limit, but never below 16 MiB. Without a limit (or a
    /// large one), the fixed defaults.
    pub fn for_memory(limit: Option<u64>) -> Self {
        let Some(limit) = limit else {
            return Self::default();
        };
        let eighth = usize::try_from(limit / 8).unwrap_or(usize::MAX);
        let bound = |default: usize| eighth.clamp(16 * 1024 * 1024, default.max(16 * 1024 * 1024));
        Self {
            query_buffer: bound(Self::DEFAULT_QUERY_BUFFER),
            output_buffer: bound(Self::DEFAULT_OUTPUT_BUFFER),
            max_reply: bound(Self::DEFAULT_MAX_REPLY),
        }
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            query_buffer: Self::DEFAULT_QUERY_BUFFER,
            output_buffer: Self::DEFAULT_OUTPUT_BUFFER,
            max_reply: Self::DEFAULT_MAX_REPLY,
        }
    }
}

impl NodeConfig {
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            admin_port: 0,
            metrics_port: None,
            announce_host: None,
            data_dir,
            persistence: true,
            fsync: FsyncPolicy::EverySec,
            maxmemory: 0,
            maxmemory_policy: evict::Policy::NoEviction,
            maxmemory_samples: evict::DEFAULT_SAMPLES,
            password: None,
            admin_token_file: None,
            acl: acl::Acl::default(),
            tls: None,
            max_clients: 10_000,
            snapshot_log_bytes: 64 * 1024 * 1024,
            node_id: None,
            repl: replication::ReplConfig::default(),
            idle_spin_us: 0,
            limits: ClientLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// The state every task of the node shares (on the node's one thread).
pub struct Node {
    pub cfg: NodeConfig,
    pub id: String,
    pub commands: Commands,
    pub store: RefCell<Store>,
    pub slot_map: RefCell<SlotMap>,
    pub wal: Rc<Wal>,
    pub stats: Stats,
    pub role: Cell<Role>,
    pub ready: Cell<bool>,
    pub started: Instant,
    /// Actual RESP and admin ports (differ from the config when it said 0).
    pub port: Cell<u16>,
    pub admin_port: Cell<u16>,
    pub next_client_id: Cell<u64>,
    pub connected_clients: Cell<usize>,
    pub last_snapshot: RefCell<Option<snapshot::SnapshotInfo>>,
    pub snapshot_running: Cell<bool>,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Replication state: epoch, role details, replicas, the link.
    pub repl: replication::Repl,
    pub idle_spin: Option<Rc<idle_spin::IdleSpin>>,
    /// Slot migrations this node sends or receives.
    pub migrations: migration::Migrations,
    /// WATCHed keys of every connection (MULTI/EXEC).
    pub watches: RefCell<cmd::multi::Watches>,
    /// The Lua VM and its script cache (created at the first script).
    pub scripts: RefCell<Option<lua::Scripts>>,
    /// The script running now, shared with the VM's hook.
    pub script_running: Rc<lua::Running>,
    /// Clients blocked on keys (BLPOP …).
    pub blocked: RefCell<blocking::Blocked>,
    /// Pub/sub subscriptions of every connection.
    pub pubsub: RefCell<pubsub::PubSub>,
    /// Links that carry PUBLISH to the other nodes of the cluster.
    pub forwarder: pubsub_forward::Forwarder,
    /// Connected clients (CLIENT LIST, CLIENT KILL).
    pub clients: Rc<RefCell<clients::Clients>>,
    /// What CONFIG SET accepted (reported by CONFIG GET; see docs/node.md).
    pub config_set: RefCell<std::collections::BTreeMap<String, String>>,
    /// The event classes `notify-keyspace-events` turns on (`node::notify`).
    pub notify: std::cell::Cell<u32>,
    /// Command rates and per-slot counters (the autoscaler's signals).
    pub load: load::Load,
    /// What the admin API's `/v1/*` calls must present.
    pub admin_token: admin_token::AdminToken,
    /// ACL users (the configured ones, changed by `ACL SETUSER`).
    pub acl: RefCell<acl::Acl>,
    /// TLS state (certificates re-read when they change).
    pub tls: Option<tls::Tls>,
    /// Actual TLS client port.
    pub tls_port: Cell<u16>,
    /// `maxmemory` and what happens above it (CONFIG SET changes them).
    pub memory: evict::Memory,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// Whether a reply waits for another thread or process: an fsync under
    /// `--fsync always`, or replicas' acknowledgements.
    pub fn waits_on_others(&self) -> bool {
        (self.cfg.persistence
            && self.cfg.fsync == FsyncPolicy::Always
            && self.wal.durable_lsn() < self.wal.last_lsn())
            || self.repl.has_ack_waiters()
    }

    pub fn new(cfg: NodeConfig, id: String, wal: Rc<Wal>, store: Store) -> Self {
        let me = NodeAddr {
            id: id.clone(),
            host: cfg
                .announce_host
                .clone()
                .unwrap_or_else(|| cfg.bind.to_string()),
            port: cfg.port,
            tls_port: cfg.tls.as_ref().map(|t| t.port),
        };
        let commands = Commands::new();
        let stats = Stats::new(commands.len());
        let load = load::Load::new(&commands);
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let repl = replication::Repl::new(
            cfg.repl.clone(),
            cfg.persistence.then_some(cfg.data_dir.as_path()),
        );
        Self {
            admin_token: admin_token::AdminToken::new(cfg.admin_token_file.clone()),
            acl: RefCell::new(cfg.acl.clone()),
            tls: cfg.tls.clone().and_then(|s| match tls::Tls::new(s) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "TLS settings unusable: TLS is off");
                    None
                }
            }),
            tls_port: Cell::new(cfg.tls.as_ref().map_or(0, |t| t.port)),
            memory: evict::Memory::new(cfg.maxmemory, cfg.maxmemory_policy, cfg.maxmemory_samples),
            repl,
            idle_spin: idle_spin::IdleSpin::new(cfg.idle_spin_us),
            port: Cell::new(cfg.port),
            admin_port: Cell::new(cfg.admin_port),
            cfg,
            id,
            commands,
            store: RefCell::new(store),
            slot_map: RefCell::new(SlotMap::standalone(me)),
            wal,
            stats,
            role: Cell::new(Role::Primary),
            ready: Cell::new(false),
            started: Instant::now(),
            next_client_id: Cell::new(1),
            connected_clients: Cell::new(0),
            last_snapshot: RefCell::new(None),
            snapshot_running: Cell::new(false),
            shutdown,
            migrations: Default::default(),
            watches: Default::default(),
            scripts: RefCell::new(None),
            script_running: Default::default(),
            blocked: Default::default(),
            pubsub: Default::default(),
            forwarder: Default::default(),
            clients: Default::default(),
            config_set: Default::default(),
            notify: Default::default(),
            load,
        }
    }

    /// This node's address as clients should use it.
    pub fn me(&self) -> NodeAddr {
        NodeAddr {
            id: self.id.clone(),
            host: self
                .cfg
                .announce_host
                .clone()
                .unwrap_or_else(|| self.cfg.bind.to_string()),
            port: self.port.get(),
            tls_port: self.tls.as_ref().map(|_| self.tls_port.get()),
        }
    }

    /// Once the real port is known, a standalone node's topology names it.
    pub fn set_port(&self, port: u16) {
        self.port.set(port);
        let mut map = self.slot_map.borrow_mut();
        if map.topology.epoch == 0 {
            *map = SlotMap::standalone(self.me());
        }
    }

    pub fn new_conn(&self, addr: String) -> ConnState {
        let id = self.next_client_id.get();
        self.next_client_id.set(id + 1);
        ConnState {
            id,
            name: None,
            lib_name: None,
            lib_ver: None,
            authenticated: self.cfg.password.is_none(),
            user: None,
            readonly: false,
            asking: false,
            close_after_reply: false,
            addr,
            resp3: false,
            multi: None,
            watch: Default::default(),
            block: None,
            sub: None,
            idle: Default::default(),
        }
    }

    /// Releases what a closed connection held (its WATCHed keys).
    pub fn conn_closed(&self, conn: &mut ConnState) {
        cmd::multi::unwatch_all(self, conn);
        self.clients.borrow_mut().remove(conn.id);
        if let Some(sub) = conn.sub.take() {
            self.pubsub.borrow_mut().remove_all(&sub);
        }
    }

    /// Whether this node may serve a command on `slot`; the error otherwise.
    pub fn route(&self, slot: u16, write: bool, conn: &ConnState) -> Option<String> {
        let map = self.slot_map.borrow();
        match map.owner(slot) {
            SlotOwner::Local => {
                if self.role.get() == Role::Replica {
                    // The primary this node follows (admin calls) is newer
                    // than the pushed topology's.
                    let primary = self
                        .repl
                        .primary_addr()
                        .unwrap_or_else(|| map.my_shard().primary.clone());
                    let moved = || Some(format!("MOVED {slot} {}:{}", primary.host, primary.port));
                    if primary.id == self.id {
                        // Demoted or fenced, no primary known yet: writes get
                        // -READONLY from write_refusal.
                        if write || conn.readonly {
                            return None;
                        }
                        return Some(
                            "TRYAGAIN this node is not a primary and follows none yet".into(),
                        );
                    }
                    if write || !conn.readonly {
                        return moved();
                    }
                    if let Some(max) = self.repl.cfg.borrow().max_staleness_ms {
                        if self.repl.staleness_ms() > max {
                            return moved();
                        }
                    }
                    return None;
                }
                if !write {
                    return self.repl.read_refusal(self);
                }
                None
            }
            SlotOwner::Remote(i) => {
                let p = &map.topology.shards[i].primary;
                Some(format!("MOVED {slot} {}:{}", p.host, p.port))
            }
            SlotOwner::Unassigned => Some("CLUSTERDOWN Hash slot not served".into()),
        }
    }

    /// Why a write command may not run now (memory, role, lease), if it may
    /// not. Above `maxmemory` an evicting policy first deletes keys from
    /// `store` (queued for the log: the caller logs them).
    pub fn write_refusal(&self, spec: &CommandSpec, store: &mut Store) -> Option<String> {
        if self.role.get() == Role::Replica {
            return Some("READONLY You can't write against a read only replica.".into());
        }
        if let Some(e) = self.repl.lease_error(self) {
            return Some(e);
        }
        if self.memory.over() && !self.memory.free(store) && spec.flags & cmd::flags::DENYOOM != 0 {
            return Some("OOM command not allowed when used memory > 'maxmemory'.".into());
        }
        None
    }
}

/// Loads or creates the node's ID (40 hex characters, like Redis').
pub fn load_node_id(cfg: &NodeConfig) -> Result<String, NodeError> {
    if let Some(id) = &cfg.node_id {
        return Ok(id.clone());
    }
    let fresh = || {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..40)
            .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
            .collect::<String>()
    };
    if !cfg.persistence {
        return Ok(fresh());
    }
    let path = cfg.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() == 40 => Ok(s.trim().to_string()),
        _ => {
            let id = fresh();
            let err = |source| NodeError::DataDir {
                path: path.clone(),
                source,
            };
            std::fs::write(&path, &id).map_err(err)?;
            Ok(id)
        }
    }
}

/// Replaces `path` with `body` so that a crash leaves the old content or
/// the new one: a temporary file beside it, fsynced, renamed over it, then
/// the directory fsynced (the rename itself must survive a crash).
pub fn write_atomically(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// An exclusive `flock` on `<data-dir>/LOCK`, released when dropped (or by
/// the kernel when the process dies, even by SIGKILL).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory for this process: two processes recovering from
/// and appending to the same log would silently lose acknowledged writes (a
/// force-deleted pod's replacement starting while the old process still
/// runs). Non-blocking: a held lock is an error naming the holder's PID.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<DataDirLock, NodeError> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let lock = dir.join("LOCK");
    let err = |source| NodeError::LockDataDir {
        path: dir.to_path_buf(),
        lock: lock.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir {
        path: dir.to_path_buf(),
        source,
    })?;
    // No truncation before the lock is ours: the holder's PID stays readable.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(err)?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(err(e));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let holder = match text.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            Err(_) => "pid unknown".to_string(),
        };
        return Err(NodeError::DataDirInUse {
            path: dir.to_path_buf(),
            lock,
            holder,
        });
    }
    file.set_len(0).map_err(err)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(err)?;
    Ok(DataDirLock { _file: file })
}

/// Runs a node until it is told to stop (SIGTERM/SIGINT or SHUTDOWN).
pub fn run(cfg: NodeConfig) -> Result<(), NodeError> {
    // Held until the node stops (the process exits right after).
    // Unusable certificates stop the node before it serves anything.
    if let Some(t) = &cfg.tls {
        tls::Tls::new(t.clone())?;
    }
    let _lock = if cfg.persistence {
        Some(lock_data_dir(&cfg.data_dir)?)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, server::serve(cfg, None))
}

#[cfg(test)]
mod tests {
    use super::ClientLimits;

    #[test]
    fn client_limits_scale_down_to_a_memory_limit_and_no_further() {
        assert_eq!(ClientLimits::for_memory(None), ClientLimits::default());
        // A 64 GiB pod keeps the fixed 1 GiB bounds.
        assert_eq!(
            ClientLimits::for_memory(Some(64 << 30)),
            ClientLimits::default()
        );
        // A 2 GiB pod: an eighth each.
        let two = ClientLimits::for_memory(Some(2 << 30));
        assert_eq!(two.max_reply, 256 << 20);
        assert_eq!(two.output_buffer, 256 << 20);
        assert_eq!(two.query_buffer, 256 << 20);
        // A tiny pod still allows 16 MiB.
        assert_eq!(ClientLimits::for_memory(Some(64 << 20)).max_reply, 16 << 20);
    }
}
