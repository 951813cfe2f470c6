//! Replication: one primary and N replicas per shard, log-shipped.
//!
//! The replica opens a connection to its primary's RESP port and sends
//! `TREPLICATE <shard> <epoch> <node-id> <last-lsn> <data-epoch>
//! [<truncate-floor>]`. The primary answers `+CONTINUE <lsn> <epoch>`
//! (partial resync: it still has every record after the replica's last
//! one), `+TRUNCATE <fork> <epoch>` (the replica cuts its diverged log at the
//! fork, then continues), `+FULLRESYNC <lsn> <fork> <last>` followed by a
//! snapshot stream, or `-AHEAD …` (the replica's log is past the primary's:
//! it keeps its data and is not fed). Then the connection carries frames from the
//! primary (`[type u8][len u32 LE][payload]`, see [`frame`]) and
//! `TACK <acked-lsn> <echo-ms>` lines from the replica.
//!
//! Records travel in the WAL's own encoding (CRC-checked on arrival), and a
//! replica writes them to its own log under the primary's LSNs: a replica's
//! log is a copy of its primary's, so a restarted replica resumes from its
//! own last LSN and a promoted replica continues the same LSN sequence.
//!
//! Acknowledgement rules, epochs, leases and rejoin: see docs/replication.md.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::cmd::{self, Args, Ctx, Effects};
use super::metrics::Histogram;
use super::resp::ReplyBuf;
use super::slots::{NodeAddr, SLOTS};
use super::store::{ExpireMode, Store};
use super::wal::{self, GLOBAL_SLOT};
use super::{Node, Role};

/// Frame types, primary → replica.
pub mod frame {
    /// Encoded WAL records, back to back.
    pub const RECORDS: u8 = b'R';
    /// epoch u64, primary's last LSN u64, primary's send time (ms) u64.
    pub const HEARTBEAT: u8 = b'H';
    /// A chunk of a snapshot file (full resync).
    pub const SNAPSHOT: u8 = b'S';
    /// End of the snapshot.
    pub const SNAPSHOT_END: u8 = b'E';
    /// The primary's epoch history (JSON).
    pub const HISTORY: u8 = b'Y';
}

/// A full resync's snapshot is received into `<data-dir>/<prefix><gen>.tsnap`.
const RESYNC_FILE_PREFIX: &str = "resync-";

/// Largest frame a replica accepts.
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// How often each side speaks when there is nothing else to say.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// Records read from disk per frame when a replica is behind the ring.
const DISK_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("epoch {offered} is older than the epoch {current} this node has seen")]
    StaleEpoch { offered: u64, current: u64 },
    #[error("failed to persist the replication state to {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to connect to the primary {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("replication link to {addr} failed: {source}")]
    Link {
        addr: String,
        source: std::io::Error,
    },
    #[error("the primary {addr} refused replication: {reply}")]
    Refused { addr: String, reply: String },
    #[error(
        "the primary {addr} is behind this replica ({reply}); keeping every local record \
         and retrying: the node with the most data should be promoted instead"
    )]
    Ahead { addr: String, reply: String },
    #[error("a newer follow call replaced this replication link")]
    Superseded,
    #[error(
        "this node's log diverged from the primary {addr}'s after LSN {fork}: \
         dropped {dropped} records and the local state, resyncing"
    )]
    Diverged {
        addr: String,
        fork: u64,
        dropped: u64,
    },
    #[error("protocol error on the replication link to {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("full resync from {addr} failed: {reason}")]
    Resync { addr: String, reason: String },
    #[error("a node cannot follow itself")]
    FollowSelf,
    #[error("replication needs persistence (the log); this node runs without it")]
    NoPersistence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Eventual,
    Quorum,
    Strong,
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "eventual" => Ok(Self::Eventual),
            "quorum" => Ok(Self::Quorum),
            "strong" => Ok(Self::Strong),
            _ => Err(format!(
                "unknown consistency {s:?} (eventual, quorum or strong)"
            )),
        }
    }
}

impl Consistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Eventual => "eventual",
            Self::Quorum => "quorum",
            Self::Strong => "strong",
        }
    }
}

/// Replication settings: node flags, overridden by the topology push.
#[derive(Debug, Clone)]
pub struct ReplConfig {
    pub consistency: Consistency,
    /// Replicas that must acknowledge in `quorum` (wins over the percentage).
    pub quorum_replicas: Option<usize>,
    /// Percentage of replicas that must acknowledge in `quorum`.
    pub quorum_percent: Option<u32>,
    /// Replicas the shard has, when no topology names them.
    pub replicas: Option<usize>,
    pub lease_ms: u64,
    pub ack_timeout_ms: u64,
    /// A replica lagging more than this redirects READONLY reads.
    pub max_staleness_ms: Option<u64>,
    /// Bytes of recent log kept in memory for replicas.
    pub ring_bytes: usize,
}

impl Default for ReplConfig {
    fn default() -> Self {
        Self {
            consistency: Consistency::Eventual,
            quorum_replicas: None,
            quorum_percent: None,
            replicas: None,
            lease_ms: 2000,
            ack_timeout_ms: 5000,
            max_staleness_ms: None,
            ring_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a node remembers across restarts (`<data-dir>/replication.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    /// Highest epoch seen: older topology and replication traffic is refused.
    pub epoch: u64,
    /// "primary", "replica" or "" (never told).
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub primary: Option<NodeAddr>,
    /// The epoch of the primary whose records the log ends with.
    #[serde(default)]
    pub data_epoch: u64,
    /// (epoch, LSN after which that epoch's records start), oldest first.
    #[serde(default)]
    pub history: Vec<(u64, u64)>,
    /// A full resync began and has not yet been snapshotted locally: the
    /// local state is incomplete, so a restart must start over.
    #[serde(default)]
    pub resyncing: bool,
    #[serde(default)]
    pub fork: Option<ForkInfo>,
}

/// Where a rejoining node's log diverged from its new primary's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForkInfo {
    pub fork_lsn: u64,
    pub dropped_records: u64,
    pub at_ms: u64,
    /// "truncate" (the log cut at the fork, then a partial resync) or
    /// "fullResync" (state discarded, snapshot streamed).
    #[serde(default)]
    pub resolved_by: String,
}

/// A replica as its primary sees it.
#[derive(Debug, Clone)]
pub struct ReplicaLink {
    pub addr: String,
    pub acked_lsn: u64,
    pub connected: bool,
    /// The primary's clock (ms since start) when it sent the heartbeat the
    /// replica's latest acknowledgement echoed: the lease runs from there.
    pub lease_from_ms: u64,
    /// Last time the replica had everything the primary had logged.
    pub caught_up_at: Instant,
    pub conn: u64,
}

/// Where a replica's link to its primary stands (`linkState` in the status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkState {
    /// Not following a primary.
    #[default]
    Idle,
    /// Connecting or in the handshake (including a full resync's transfer).
    Connecting,
    /// Streaming from the primary.
    Up,
    /// The link failed; retrying with backoff.
    Down,
    /// The primary's log ends before this replica's: it refuses the replica,
    /// which keeps all its data and retries with backoff.
    RefusedAhead,
}

/// The replica side's view of its link. Written only by the follow loop of
/// the current generation ([`Repl::set_link`]) and by role changes.
#[derive(Debug, Default)]
pub struct Follower {
    pub link_state: LinkState,
    /// Why the primary refuses to feed this replica (a refusal that retrying
    /// alone will not fix), until a handshake succeeds.
    pub follow_error: Option<String>,
    pub link_up: bool,
    pub primary_last_lsn: u64,
    pub caught_up_at: Option<Instant>,
    pub last_error: Option<String>,
    pub full_resyncs: u64,
    pub partial_resyncs: u64,
}

/// A full resync whose snapshot is loaded but whose local snapshot is not
/// yet taken: how to go on applying records after a reconnect.
#[derive(Debug, Clone)]
pub struct PendingResync {
    /// Per-slot LSNs the loaded snapshot reflects.
    pub watermarks: Vec<u64>,
    /// Records up to here are needed before the state is complete.
    pub end_lsn: u64,
}

pub struct Repl {
    pub cfg: RefCell<ReplConfig>,
    pub st: RefCell<Persisted>,
    path: Option<PathBuf>,
    pub replicas: RefCell<BTreeMap<String, ReplicaLink>>,
    /// Signalled when a replica acknowledges.
    pub acked: Notify,
    /// Bumped on every role change: tasks of an older generation stop.
    pub gen: Cell<u64>,
    pub follower: RefCell<Follower>,
    /// Set while the keyspace is a loaded snapshot still short of its end
    /// LSN or of a local snapshot (`resyncing`); lives with the keyspace,
    /// not with one link, so a reconnect resumes the resync correctly.
    pub resync: RefCell<Option<PendingResync>>,
    pub ack_latency: Histogram,
    started: Instant,
    next_conn: Cell<u64>,
    /// The clock of the batch of commands being run (see `set_batch_clock`).
    batch_clock: Cell<Option<Instant>>,
    /// Connections waiting for the acknowledgement rule: (LSN, task).
    ack_waiters: RefCell<Vec<(u64, std::task::Waker)>>,
    /// The replicas being streamed to, for `push_to_replicas`.
    push_links: RefCell<Vec<Rc<PushLink>>>,
}

/// A replica's stream as `push_to_replicas` sees it. The streaming task owns
/// the socket; the push writes to the same descriptor only when the task has
/// nothing in flight (`busy` false), so bytes never interleave.
pub struct PushLink {
    fd: std::os::fd::RawFd,
    /// Last LSN handed to the socket.
    next: Cell<u64>,
    /// The task is writing (or has queued) bytes: the push keeps out.
    busy: Cell<bool>,
    /// Bytes a push could not write; the task sends them before anything.
    backlog: RefCell<Vec<u8>>,
    wake: Notify,
}

/// Hands a primary's freshly written records to its replicas' sockets at
/// once, from the connection that wrote them, instead of in the streaming
/// tasks, which run only after every other ready connection: the replicas
/// then apply a batch while the primary parses the next one rather than all
/// waiting for the whole round (a quarter of both cores sat idle in
/// `quorum`). Non-blocking writes only; whatever does not fit is left to
/// the task.
pub fn push_to_replicas(node: &Node) {
    let links = node.repl.push_links.borrow();
    if links.is_empty() {
        return;
    }
    let written = node.wal.written_lsn();
    let mut out = Vec::new();
    for link in links.iter() {
        if link.busy.get() || link.next.get() >= written {
            continue;
        }
        let Some(chunks) = node.wal.ring_after(link.next.get()) else {
            continue;
        };
        out.clear();
        for c in &chunks {
            let skip = wal::skip_records_through(c, link.next.get());
            if skip < c.len() {
                encode_frame(&mut out, frame::RECORDS, &c[skip..]);
            }
        }
        if out.is_empty() {
            continue;
        }
        // SAFETY: `fd` is the streaming task's open socket (the link is
        // unregistered before the socket closes) and `out` is valid memory.
        let n = unsafe { libc::write(link.fd, out.as_ptr().cast(), out.len()) };
        if n < 0 {
            // Full or failing: the task sends (and sees any error).
            continue;
        }
        link.next.set(written);
        if (n as usize) < out.len() {
            link.backlog
                .borrow_mut()
                .extend_from_slice(&out[n as usize..]);
            link.busy.set(true);
            link.wake.notify_one();
        }
    }
}

/// Unregisters a push link when its streaming task ends.
struct PushGuard<'a> {
    node: &'a Node,
    link: Rc<PushLink>,
}

impl Drop for PushGuard<'_> {
    fn drop(&mut self) {
        self.node
            .repl
            .push_links
            .borrow_mut()
            .retain(|l| !Rc::ptr_eq(l, &self.link));
    }
}

impl Repl {
    pub fn new(cfg: ReplConfig, data_dir: Option<&Path>) -> Self {
        Self {
            cfg: RefCell::new(cfg),
            st: RefCell::new(Persisted::default()),
            path: data_dir.map(|d| d.join("replication.json")),
            replicas: RefCell::new(BTreeMap::new()),
            acked: Notify::new(),
            gen: Cell::new(0),
            follower: RefCell::new(Follower::default()),
            resync: RefCell::new(None),
            ack_latency: Histogram::default(),
            started: Instant::now(),
            batch_clock: Cell::new(None),
            ack_waiters: RefCell::new(Vec::new()),
            push_links: RefCell::new(Vec::new()),
            next_conn: Cell::new(1),
        }
    }

    /// Milliseconds on this node's monotonic clock (the batch's clock while
    /// a connection runs a batch of commands).
    pub fn mono_ms(&self) -> u64 {
        let now = self.batch_clock.get().unwrap_or_else(Instant::now);
        now.duration_since(self.started).as_millis() as u64
    }

    /// Sets the time a batch of commands runs at (None: read the clock).
    /// Set only around synchronous work: a batch runs in microseconds, so
    /// its lease checks see the time to well within the lease's margins.
    pub fn set_batch_clock(&self, at: Option<Instant>) {
        self.batch_clock.set(at);
    }

    pub fn epoch(&self) -> u64 {
        self.st.borrow().epoch
    }

    /// Writes the state atomically (temp file, fsync, rename, fsync dir)
    /// before the caller acts on it.
    fn persist(&self) -> Result<(), ReplError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| ReplError::Persist {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(&*self.st.borrow())
            .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&body).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }

    fn load(&self) -> Persisted {
        let Some(path) = &self.path else {
            return Persisted::default();
        };
        match std::fs::read(path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(p) => p,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable replication state; starting without it");
                    Persisted::default()
                }
            },
            Err(_) => Persisted::default(),
        }
    }

    /// (required acknowledgements, replicas) under the current rule.
    pub fn required(&self, node: &Node) -> (usize, usize) {
        let cfg = self.cfg.borrow();
        let n = {
            let map = node.slot_map.borrow();
            let t = map.my_shard().replicas.len();
            if map.topology.epoch > 0 && t > 0 {
                t
            } else {
                cfg.replicas.unwrap_or(t)
            }
        };
        let k = match cfg.consistency {
            Consistency::Eventual => 0,
            Consistency::Strong => n,
            Consistency::Quorum => {
                if let Some(k) = cfg.quorum_replicas {
                    k.min(n)
                } else if let Some(p) = cfg.quorum_percent {
                    ((p as usize * n).div_ceil(100)).clamp(1.min(n), n)
                } else {
                    n / 2 + 1
                }
            }
        };
        (k.min(n), n)
    }

    /// The highest LSN the acknowledgement rule holds for: the k-th highest
    /// acknowledged LSN among the replicas (0 when fewer than k).
    fn rule_lsn(&self, k: usize) -> u64 {
        if k == 0 {
            return u64::MAX;
        }
        let mut acked: Vec<u64> = self
            .replicas
            .borrow()
            .values()
            .map(|r| r.acked_lsn)
            .collect();
        if acked.len() < k {
            return 0;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked[k - 1]
    }

    /// After an acknowledgement: wakes the connections whose writes the
    /// rule now covers, and only those (waking every waiting connection on
    /// every acknowledgement cost a primary more than the writes did), and
    /// the `WAIT` commands.
    fn acks_progressed(&self, node: &Node) {
        let (k, _) = self.required(node);
        let covered = self.rule_lsn(k);
        let mut waiters = self.ack_waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= covered {
                waiters.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
        drop(waiters);
        self.acked.notify_waiters();
    }

    /// Whether a connection waits for replicas' acknowledgements.
    pub fn has_ack_waiters(&self) -> bool {
        !self.ack_waiters.borrow().is_empty()
    }

    /// Whether any replica is being streamed to.
    pub fn streaming(&self) -> bool {
        !self.push_links.borrow().is_empty()
    }

    /// Wakes every connection waiting for acknowledgements (the role
    /// changed: they re-check and fail).
    fn wake_all_ack_waiters(&self) {
        for (_, w) in self.ack_waiters.borrow_mut().drain(..) {
            w.wake();
        }
        self.acked.notify_waiters();
    }

    /// Resolves once the acknowledgement rule covers `lsn` or this node is
    /// no longer the primary (the caller re-checks which).
    fn rule_covers<'a>(
        &'a self,
        node: &'a Node,
        lsn: u64,
    ) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            let (k, _) = self.required(node);
            if node.role.get() != Role::Primary || self.rule_lsn(k) >= lsn {
                return std::task::Poll::Ready(());
            }
            self.ack_waiters
                .borrow_mut()
                .push((lsn, cx.waker().clone()));
            std::task::Poll::Pending
        })
    }

    fn count_acked(&self, lsn: u64) -> usize {
        self.replicas
            .borrow()
            .values()
            .filter(|r| r.acked_lsn >= lsn)
            .count()
    }

    /// Replicas heard from within the lease.
    fn lease_holders(&self) -> usize {
        let now = self.mono_ms();
        let lease = self.cfg.borrow().lease_ms;
        self.replicas
            .borrow()
            .values()
            .filter(|r| r.connected && r.lease_from_ms + lease > now)
            .count()
    }

    /// The error a primary answers with when its lease has run out.
    pub fn lease_error(&self, node: &Node) -> Option<String> {
        if node.role.get() != Role::Primary {
            return None;
        }
        let (k, _) = self.required(node);
        if k == 0 {
            return None;
        }
        let held = self.lease_holders();
        if held >= k {
            return None;
        }
        Some(format!(
            "NOQUORUM primary lease expired: heard from {held} of {k} required replicas in the last {} ms",
            self.cfg.borrow().lease_ms
        ))
    }

    /// Strong mode: reads need the lease too (linearizable reads).
    pub fn read_refusal(&self, node: &Node) -> Option<String> {
        if self.cfg.borrow().consistency != Consistency::Strong {
            return None;
        }
        self.lease_error(node)
    }

    /// Milliseconds since this replica last had everything its primary had.
    pub fn staleness_ms(&self) -> u64 {
        let f = self.follower.borrow();
        match (f.link_up, f.caught_up_at) {
            (_, None) => u64::MAX,
            (_, Some(t)) => t.elapsed().as_millis() as u64,
        }
    }

    /// Where a replica sends clients: the primary it follows.
    pub fn primary_addr(&self) -> Option<NodeAddr> {
        self.st.borrow().primary.clone()
    }

    /// Updates the link state on behalf of the follow loop of generation
    /// `gen`; a loop that a newer role change superseded changes nothing.
    fn set_link(&self, gen: u64, f: impl FnOnce(&mut Follower)) -> bool {
        if self.gen.get() != gen {
            return false;
        }
        f(&mut self.follower.borrow_mut());
        true
    }

    /// `Err(Superseded)` once a role change replaced generation `gen`: the
    /// follow loop checks this after every wait, before touching any state.
    fn current(&self, gen: u64) -> Result<(), ReplError> {
        if self.gen.get() == gen {
            Ok(())
        } else {
            Err(ReplError::Superseded)
        }
    }
}

// ---------------------------------------------------------------------------
// Role changes: one code path for admin calls, RESP commands and topology.
// ---------------------------------------------------------------------------

fn check_epoch(node: &Node, epoch: u64) -> Result<(), ReplError> {
    let current = node.repl.epoch();
    if epoch < current {
        return Err(ReplError::StaleEpoch {
            offered: epoch,
            current,
        });
    }
    Ok(())
}

/// Becomes the primary at `epoch`; stops following.
pub fn promote(node: &Rc<Node>, epoch: u64, replicas: Option<usize>) -> Result<(), ReplError> {
    check_epoch(node, epoch)?;
    if let Some(n) = replicas {
        node.repl.cfg.borrow_mut().replicas = Some(n);
    }
    let was = node.role.get();
    {
        let mut st = node.repl.st.borrow_mut();
        if was == Role::Primary && st.epoch == epoch && st.role == "primary" {
            return Ok(());
        }
        let lsn = node.wal.last_lsn();
        st.epoch = epoch;
        st.role = "primary".into();
        st.primary = None;
        st.data_epoch = epoch;
        if st.history.last().is_none_or(|&(e, _)| e < epoch) {
            st.history.push((epoch, lsn));
        }
    }
    node.repl.persist()?;
    node.repl.gen.set(node.repl.gen.get() + 1);
    node.repl.replicas.borrow_mut().clear();
    {
        let mut f = node.repl.follower.borrow_mut();
        f.link_up = false;
        f.link_state = LinkState::Idle;
        f.follow_error = None;
    }
    node.store.borrow_mut().mode = ExpireMode::Active;
    node.role.set(Role::Primary);
    info!(epoch, lsn = node.wal.last_lsn(), "promoted to primary");
    Ok(())
}

/// Follows `primary` at `epoch` (a primary receiving this demotes at once).
pub fn follow(node: &Rc<Node>, epoch: u64, primary: NodeAddr) -> Result<(), ReplError> {
    check_epoch(node, epoch)?;
    if primary.id == node.id {
        return Err(ReplError::FollowSelf);
    }
    if !node.wal.enabled() {
        return Err(ReplError::NoPersistence);
    }
    {
        let st = node.repl.st.borrow();
        if node.role.get() == Role::Replica
            && st.epoch == epoch
            && st.primary.as_ref() == Some(&primary)
        {
            return Ok(());
        }
    }
    {
        let mut st = node.repl.st.borrow_mut();
        st.epoch = epoch;
        st.role = "replica".into();
        st.primary = Some(primary.clone());
    }
    node.repl.persist()?;
    start_following(node);
    info!(epoch, primary = %format!("{}:{}", primary.host, primary.port), primary_id = %primary.id, "following");
    Ok(())
}

/// Records `epoch`; a primary below it stops being one, a replica stops
/// taking replication traffic from a primary of an older epoch.
pub fn fence(node: &Rc<Node>, epoch: u64) -> Result<(), ReplError> {
    check_epoch(node, epoch)?;
    {
        let mut st = node.repl.st.borrow_mut();
        if epoch == st.epoch && st.role == "fenced" {
            return Ok(());
        }
        st.epoch = epoch;
        st.role = "fenced".into();
    }
    node.repl.persist()?;
    demote(node);
    info!(epoch, lsn = node.wal.last_lsn(), "fenced");
    Ok(())
}

/// Stops serving writes and stops every replication task.
fn demote(node: &Rc<Node>) {
    // Tasks of older generations stop and may no longer write any state.
    node.repl.gen.set(node.repl.gen.get() + 1);
    node.repl.replicas.borrow_mut().clear();
    {
        let mut f = node.repl.follower.borrow_mut();
        f.link_up = false;
        f.link_state = LinkState::Idle;
        f.follow_error = None;
        f.primary_last_lsn = 0;
    }
    node.store.borrow_mut().mode = ExpireMode::Passive;
    node.role.set(Role::Replica);
    // Waiters re-check the role and fail.
    node.repl.wake_all_ack_waiters();
}

fn start_following(node: &Rc<Node>) {
    demote(node);
    let gen = node.repl.gen.get();
    node.repl
        .set_link(gen, |f| f.link_state = LinkState::Connecting);
    tokio::task::spawn_local(follow_loop(node.clone(), gen));
}

/// The topology push: the shard's epoch and primary decide the role.
pub fn apply_topology_role(
    node: &Rc<Node>,
    epoch: u64,
    primary: &NodeAddr,
) -> Result<(), ReplError> {
    if epoch == 0 && node.repl.epoch() == 0 {
        // No epochs in use: the old behaviour, no replication tasks.
        node.role.set(if primary.id == node.id {
            Role::Primary
        } else {
            Role::Replica
        });
        return Ok(());
    }
    if primary.id == node.id {
        promote(node, epoch, None)
    } else {
        follow(node, epoch, primary.clone())
    }
}

/// Settings a topology push may carry per shard (optional, camelCase):
/// `consistency`, `quorumPercent`, `quorumReplicas`, `maxStalenessMs`,
/// `leaseMs`, `ackTimeoutMs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShardSettings {
    name: String,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    quorum_percent: Option<u32>,
    #[serde(default)]
    quorum_replicas: Option<usize>,
    #[serde(default)]
    max_staleness_ms: Option<u64>,
    #[serde(default)]
    lease_ms: Option<u64>,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct SettingsDoc {
    #[serde(default)]
    shards: Vec<ShardSettings>,
}

/// Applies the replication settings of this node's shard from a topology
/// document (they win over the node flags).
pub fn apply_settings_json(node: &Node, body: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<SettingsDoc>(body) else {
        return;
    };
    let mine = node.slot_map.borrow().my_shard().name.clone();
    let Some(s) = doc.shards.into_iter().find(|s| s.name == mine) else {
        return;
    };
    let mut cfg = node.repl.cfg.borrow_mut();
    if let Some(c) = s.consistency.as_deref().and_then(|c| c.parse().ok()) {
        cfg.consistency = c;
    }
    if s.quorum_percent.is_some() {
        cfg.quorum_percent = s.quorum_percent;
    }
    if s.quorum_replicas.is_some() {
        cfg.quorum_replicas = s.quorum_replicas;
    }
    if s.max_staleness_ms.is_some() {
        cfg.max_staleness_ms = s.max_staleness_ms;
    }
    if let Some(l) = s.lease_ms {
        cfg.lease_ms = l;
    }
    if let Some(t) = s.ack_timeout_ms {
        cfg.ack_timeout_ms = t;
    }
}

/// At startup, after recovery: resume the role the node had.
pub async fn start(node: &Rc<Node>) -> Result<(), ReplError> {
    let cap = node.repl.cfg.borrow().ring_bytes;
    node.wal.set_ring_capacity(cap);
    // Snapshots of full resyncs a previous process did not finish receiving.
    if let Ok(rd) = std::fs::read_dir(&node.cfg.data_dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(RESYNC_FILE_PREFIX) && name.ends_with(".tsnap") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let st = node.repl.load();
    if st.resyncing {
        // A full resync was cut short: what is on disk is a partial copy.
        warn!("an interrupted full resync left partial data; discarding it");
        discard_local_state(node)
            .await
            .map_err(|reason| ReplError::Resync {
                addr: "(restart)".into(),
                reason,
            })?;
    }
    let role = st.role.clone();
    let primary = st.primary.clone();
    *node.repl.st.borrow_mut() = st;
    match (role.as_str(), primary) {
        ("replica", Some(_)) => {
            start_following(node);
        }
        ("fenced", _) | ("replica", None) => demote(node),
        _ => {}
    }
    Ok(())
}

/// Keeps snapshots from starting while held (released when dropped).
struct SnapshotsHeld<'a>(&'a Node);

impl Drop for SnapshotsHeld<'_> {
    fn drop(&mut self) {
        self.0.snapshot_running.set(false);
    }
}

/// Waits until no snapshot is being written, then keeps new ones from
/// starting: a snapshot reads the keyspace and the log across awaits, so
/// neither may be replaced under it.
async fn hold_snapshots(node: &Node) -> SnapshotsHeld<'_> {
    while node.snapshot_running.replace(true) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    SnapshotsHeld(node)
}

/// Empties the keyspace, the log and the snapshots (full resync).
async fn discard_local_state(node: &Rc<Node>) -> Result<(), String> {
    let held = hold_snapshots(node).await;
    discard_held(node, &held).await
}

/// [`discard_local_state`] for a caller that already holds snapshots off.
async fn discard_held(node: &Rc<Node>, _held: &SnapshotsHeld<'_>) -> Result<(), String> {
    // Outstanding fsyncs of the old log must finish before it is discarded,
    // or the durable LSN could move past the reset point afterwards.
    let last = node.wal.last_lsn();
    node.wal
        .sync_through(last)
        .await
        .map_err(|e| e.to_string())?;
    {
        let mut st = node.repl.st.borrow_mut();
        st.resyncing = true;
    }
    node.repl.persist().map_err(|e| e.to_string())?;
    *node.repl.resync.borrow_mut() = None;
    let dir = node.cfg.data_dir.join("snapshots");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    *node.last_snapshot.borrow_mut() = None;
    // The primary's snapshot brings whatever its imports committed.
    super::migration::target::discard_all(node);
    node.wal.reset(0).map_err(|e| e.to_string())?;
    let mut store = Store::new();
    store.mode = ExpireMode::Passive;
    *node.store.borrow_mut() = store;
    Ok(())
}

// ---------------------------------------------------------------------------
// The primary's side.
// ---------------------------------------------------------------------------

/// The LSN after which the log of a node whose records end in `data_epoch`
/// may differ from this primary's (None: it cannot).
fn fork_point(history: &[(u64, u64)], data_epoch: u64) -> Option<u64> {
    history
        .iter()
        .find(|(e, _)| *e > data_epoch)
        .map(|&(_, lsn)| lsn)
}

fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

fn heartbeat_frame(node: &Node, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&node.repl.epoch().to_le_bytes());
    p.extend_from_slice(&node.wal.last_lsn().to_le_bytes());
    p.extend_from_slice(&node.repl.mono_ms().to_le_bytes());
    encode_frame(out, frame::HEARTBEAT, &p);
}

/// Handles `TREPLICATE`: takes over the connection and streams to the
/// replica until it disconnects or this node stops being primary.
pub async fn serve_replica(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    args: Vec<Vec<u8>>,
) -> std::io::Result<()> {
    let text = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .unwrap_or_default()
    };
    let num = |i: usize| text(i).parse::<u64>().ok();
    let (Some(epoch), Some(last), Some(data_epoch)) = (num(2), num(4), num(5)) else {
        sock.write_all(
            b"-ERR syntax: TREPLICATE <shard> <epoch> <node-id> <last-lsn> <data-epoch>\r\n",
        )
        .await?;
        return Ok(());
    };
    let replica_id = text(3);
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let my_epoch = node.repl.epoch();
    if epoch > my_epoch {
        // Someone has moved on: this primary is stale and steps down now.
        warn!(offered = epoch, current = my_epoch, replica = %replica_id, "a replica knows a newer epoch; demoting");
        if let Err(e) = fence(node, epoch) {
            warn!(error = %e, "failed to fence after seeing a newer epoch");
        }
    }
    if node.role.get() != Role::Primary {
        sock.write_all(b"-NOTPRIMARY this node is not a primary\r\n")
            .await?;
        return Ok(());
    }
    if epoch < my_epoch {
        sock.write_all(
            format!("-STALEEPOCH replica epoch {epoch} is older than {my_epoch}\r\n").as_bytes(),
        )
        .await?;
        return Ok(());
    }
    if !node.wal.enabled() {
        sock.write_all(b"-ERR replication needs persistence on the primary\r\n")
            .await?;
        return Ok(());
    }
    let history = node.repl.st.borrow().history.clone();
    let fork = fork_point(&history, data_epoch).filter(|&f| last > f);
    let my_last = node.wal.last_lsn();
    if fork.is_none() && last > my_last {
        // The replica holds records this primary never had and nothing
        // proves them divergent: they may be acknowledged writes (this
        // node may run on an old copy of a data directory). A resync would
        // destroy them, so refuse; the operator promotes the node with the
        // most data instead.
        warn!(replica = %replica_id, peer = %peer, replica_lsn = last, lsn = my_last, data_epoch, "a replica's log is ahead of this primary's: refusing it");
        sock.write_all(
            format!(
                "-AHEAD replica log ends at {last}, past this primary's {my_last}: it must not follow this primary\r\n"
            )
            .as_bytes(),
        )
        .await?;
        return Ok(());
    }
    // Records appended but not yet flushed count: before a primary's first
    // flush it has no segment, and a fresh replica must not get a full
    // resync for that (seen as a flaky full resync at LSN 0 in tests).
    let first = node.wal.first_sendable_lsn();
    let retained = last == my_last || (first > 0 && first <= last + 1);
    let partial = fork.is_none() && last <= my_last && retained;
    // A diverged replica that can rebuild its state at any LSN from `floor`
    // on (a local snapshot at or below it, and its log after that) cuts its
    // log at the fork and continues from there when this primary still has
    // every record after the fork.
    let floor = num(6);
    let truncate_at = fork.filter(|&f| {
        floor.is_some_and(|fl| fl <= f) && (f == my_last || (first > 0 && first <= f + 1))
    });

    let gen = node.repl.gen.get();
    let conn_id = node.repl.next_conn.get();
    node.repl.next_conn.set(conn_id + 1);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut next; // last LSN sent
    if partial {
        out.extend_from_slice(format!("+CONTINUE {last} {my_epoch}\r\n").as_bytes());
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        next = last;
        info!(replica = %replica_id, peer = %peer, from_lsn = last, "partial resync");
    } else if let Some(f) = truncate_at {
        out.extend_from_slice(format!("+TRUNCATE {f} {my_epoch}\r\n").as_bytes());
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        next = f;
        info!(replica = %replica_id, peer = %peer, replica_lsn = last, fork_lsn = f, "the replica cuts its log at the fork point; partial resync from there");
    } else {
        info!(replica = %replica_id, peer = %peer, replica_lsn = last, fork = ?fork, "full resync");
        let info = loop {
            match super::server::run_snapshot(node).await {
                Ok(Some(i)) => break i,
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    sock.write_all(
                        format!("-ERR full resync: snapshot failed: {e}\r\n").as_bytes(),
                    )
                    .await?;
                    return Ok(());
                }
            }
        };
        out.extend_from_slice(
            format!(
                "+FULLRESYNC {} {} {my_last}\r\n",
                info.start_lsn,
                fork.unwrap_or(0)
            )
            .as_bytes(),
        );
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        let mut f = tokio::fs::File::open(&info.path).await?;
        let mut chunk = vec![0u8; 1024 * 1024];
        loop {
            let n = f.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            encode_frame(&mut out, frame::SNAPSHOT, &chunk[..n]);
            sock.write_all(&out).await?;
            out.clear();
        }
        encode_frame(&mut out, frame::SNAPSHOT_END, &info.start_lsn.to_le_bytes());
        sock.write_all(&out).await?;
        out.clear();
        next = info.start_lsn;
    }
    node.repl.replicas.borrow_mut().insert(
        replica_id.clone(),
        ReplicaLink {
            addr: peer.clone(),
            acked_lsn: if partial {
                last
            } else {
                truncate_at.unwrap_or(0)
            },
            connected: true,
            lease_from_ms: 0,
            caught_up_at: Instant::now(),
            conn: conn_id,
        },
    );
    let res = stream_to_replica(node, sock, leftover, &replica_id, gen, conn_id, &mut next).await;
    if let Some(r) = node.repl.replicas.borrow_mut().get_mut(&replica_id) {
        if r.conn == conn_id {
            r.connected = false;
        }
    }
    info!(replica = %replica_id, peer = %peer, sent_lsn = next, result = ?res.as_ref().err().map(|e| e.to_string()), "replica disconnected");
    res
}

/// The steady state: records as they are written, heartbeats, acks.
async fn stream_to_replica(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    replica_id: &str,
    gen: u64,
    conn_id: u64,
    next: &mut u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let link = Rc::new(PushLink {
        fd: sock.as_raw_fd(),
        next: Cell::new(*next),
        busy: Cell::new(false),
        backlog: RefCell::new(Vec::new()),
        wake: Notify::new(),
    });
    node.repl.push_links.borrow_mut().push(link.clone());
    let _guard = PushGuard {
        node,
        link: link.clone(),
    };
    let res = stream_loop(node, sock, leftover, replica_id, gen, conn_id, &link).await;
    *next = link.next.get();
    res
}

async fn stream_loop(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    replica_id: &str,
    gen: u64,
    conn_id: u64,
    link: &PushLink,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = sock.split();
    let mut inbuf = leftover;
    let mut rbuf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut shutdown = node.shutdown.subscribe();
    loop {
        if node.repl.gen.get() != gen || node.role.get() != Role::Primary {
            return Ok(());
        }
        link.busy.set(true);
        // What a push could not write goes first.
        let backlog = std::mem::take(&mut *link.backlog.borrow_mut());
        if !backlog.is_empty() {
            wr.write_all(&backlog).await?;
        }
        // Everything written since the last send.
        out.clear();
        let mut budget = DISK_BATCH_BYTES * 4;
        while link.next.get() < node.wal.written_lsn() && budget > 0 {
            let next = link.next.get();
            match node.wal.ring_after(next) {
                Some(chunks) => {
                    for c in chunks {
                        let skip = wal::skip_records_through(&c, next);
                        let body = &c[skip..];
                        if body.is_empty() {
                            continue;
                        }
                        encode_frame(&mut out, frame::RECORDS, body);
                        budget = budget.saturating_sub(body.len());
                    }
                    link.next.set(node.wal.written_lsn());
                }
                None => {
                    // Behind the ring: read the segments.
                    let written = node.wal.written_lsn();
                    let mut batch = Vec::new();
                    let reader = node.wal.read_from(next).map_err(std::io::Error::other)?;
                    let mut last = next;
                    for rec in reader {
                        let rec = rec.map_err(std::io::Error::other)?;
                        if rec.lsn > written {
                            break;
                        }
                        let args: Vec<&[u8]> = rec.args.iter().map(|a| a.as_slice()).collect();
                        wal::encode_record(&mut batch, rec.lsn, rec.slot, &args);
                        last = rec.lsn;
                        if batch.len() >= DISK_BATCH_BYTES {
                            break;
                        }
                    }
                    if last == next {
                        return Err(std::io::Error::other(format!(
                            "record {} is neither in memory nor on disk any more",
                            next + 1
                        )));
                    }
                    budget = budget.saturating_sub(batch.len());
                    encode_frame(&mut out, frame::RECORDS, &batch);
                    link.next.set(last);
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
        link.busy.set(false);
        let ring = node.wal.ring_changed().notified();
        let pushed = link.wake.notified();
        tokio::pin!(ring, pushed);
        ring.as_mut().enable();
        pushed.as_mut().enable();
        if link.next.get() < node.wal.written_lsn() || !link.backlog.borrow().is_empty() {
            continue;
        }
        tokio::select! {
            _ = &mut ring => {}
            _ = &mut pushed => {}
            _ = tick.tick() => {
                out.clear();
                heartbeat_frame(node, &mut out);
                link.busy.set(true);
                wr.write_all(&out).await?;
                link.busy.set(false);
            }
            r = rd.read(&mut rbuf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                inbuf.extend_from_slice(&rbuf[..n]);
                handle_acks(node, &mut inbuf, replica_id, conn_id)?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
        if !inbuf.is_empty() {
            handle_acks(node, &mut inbuf, replica_id, conn_id)?;
        }
    }
}

/// Parses `TACK <lsn> <echo-ms>` lines.
fn handle_acks(
    node: &Rc<Node>,
    inbuf: &mut Vec<u8>,
    replica_id: &str,
    conn_id: u64,
) -> std::io::Result<()> {
    let mut consumed = 0;
    while let Some(pos) = inbuf[consumed..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&inbuf[consumed..consumed + pos]).to_string();
        consumed += pos + 1;
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(c), Some(lsn), Some(echo)) if c.eq_ignore_ascii_case("TACK") => {
                let (Ok(lsn), Ok(echo)) = (lsn.parse::<u64>(), echo.parse::<u64>()) else {
                    return Err(std::io::Error::other(format!("malformed ack {line:?}")));
                };
                let last = node.wal.last_lsn();
                let mut reps = node.repl.replicas.borrow_mut();
                if let Some(r) = reps.get_mut(replica_id) {
                    if r.conn == conn_id {
                        r.acked_lsn = r.acked_lsn.max(lsn);
                        r.lease_from_ms = r.lease_from_ms.max(echo);
                        if r.acked_lsn >= last {
                            r.caught_up_at = Instant::now();
                        }
                    }
                }
                drop(reps);
                node.repl.acks_progressed(node);
            }
            (Some(c), Some(epoch), _) if c.eq_ignore_ascii_case("TFENCED") => {
                let epoch = epoch.parse::<u64>().unwrap_or(0);
                if epoch > node.repl.epoch() {
                    warn!(replica = %replica_id, epoch, "a replica moved to a newer epoch; demoting");
                    if let Err(e) = fence(node, epoch) {
                        warn!(error = %e, "failed to fence after seeing a newer epoch");
                    }
                }
                return Err(std::io::Error::other(format!(
                    "the replica left at epoch {epoch}"
                )));
            }
            _ if line.trim().is_empty() => {}
            _ => return Err(std::io::Error::other(format!("unexpected line {line:?}"))),
        }
    }
    inbuf.drain(..consumed);
    Ok(())
}

/// Waits until the acknowledgement rule holds for `lsn` (the local log has
/// already taken it). The error replaces the replies of the batch's writes.
pub async fn wait_rule(node: &Node, lsn: u64) -> Result<(), String> {
    let (k, _n) = node.repl.required(node);
    if k == 0 {
        return Ok(());
    }
    if node.role.get() != Role::Primary {
        return Err(
            "READONLY this node stopped being the primary before the write was acknowledged".into(),
        );
    }
    let start = Instant::now();
    let timeout = node.repl.cfg.borrow().ack_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    loop {
        if node.role.get() != Role::Primary {
            return Err(
                "READONLY this node stopped being the primary before the write was acknowledged"
                    .into(),
            );
        }
        let got = node.repl.count_acked(lsn);
        if got >= k {
            node.repl.ack_latency.observe(start.elapsed().as_secs_f64());
            return Ok(());
        }
        if let Some(e) = node.repl.lease_error(node) {
            return Err(e);
        }
        tokio::select! {
            _ = node.repl.rule_covers(node, lsn) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let got = node.repl.count_acked(lsn);
                if got >= k {
                    return Ok(());
                }
                return Err(format!(
                    "NOREPLICAS Not enough replicas acknowledged the write: {got} of {k} required (timeout {timeout} ms)"
                ));
            }
            // The lease can run out while nothing is acknowledged.
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// `WAIT numreplicas timeout`: replicas that acknowledged everything logged
/// so far, waiting up to `timeout_ms` (0: forever) for `want` of them.
pub async fn wait_command(node: &Node, want: usize, timeout_ms: u64) -> i64 {
    let lsn = node.wal.last_lsn();
    // A deadline past what the clock can represent is no deadline.
    let deadline = (timeout_ms > 0)
        .then(|| tokio::time::Instant::now().checked_add(Duration::from_millis(timeout_ms)))
        .flatten();
    loop {
        let notified = node.repl.acked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let got = node.repl.count_acked(lsn);
        if got >= want || node.role.get() != Role::Primary {
            return got as i64;
        }
        match deadline {
            Some(d) => tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(d) => return node.repl.count_acked(lsn) as i64,
            },
            None => notified.await,
        }
    }
}

// ---------------------------------------------------------------------------
// The replica's side.
// ---------------------------------------------------------------------------

async fn follow_loop(node: Rc<Node>, gen: u64) {
    let mut backoff = Duration::from_millis(100);
    // Offer to cut the log at a fork point (TREPLICATE's optional last
    // argument) until a primary that predates it refuses the argument.
    let mut offer_truncation = true;
    loop {
        if node.repl.gen.get() != gen {
            return;
        }
        let started = Instant::now();
        let res = follow_once(&node, gen, offer_truncation).await;
        // A superseded loop stops here without touching the link state.
        if node.repl.gen.get() != gen {
            return;
        }
        match res {
            Err(ReplError::Refused { reply, .. })
                if offer_truncation && reply.contains("wrong number of arguments") =>
            {
                info!("the primary does not take a truncation floor; asking without it");
                offer_truncation = false;
                continue;
            }
            Ok(()) => {
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::Down;
                });
            }
            Err(ReplError::Ahead { addr, reply }) => {
                let e = ReplError::Ahead {
                    addr,
                    reply: reply.clone(),
                };
                warn!(error = %e, lsn = node.wal.last_lsn(), retry_in_ms = backoff.as_millis() as u64, "the primary refused this replica: its log is ahead of the primary's");
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::RefusedAhead;
                    f.follow_error = Some(reply);
                    f.last_error = Some(e.to_string());
                });
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "replication link down");
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::Down;
                    f.last_error = Some(e.to_string());
                });
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A received record applied to the keyspace, as recovery applies it.
/// Applies logged records to the keyspace: a replica's received frames, and
/// recovery's log replay (with the loaded snapshot's watermarks).
pub(crate) struct Applier {
    conn: cmd::ConnState,
    out: ReplyBuf,
    effects: Effects,
    buf: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    /// A received frame's records, decoded in place (reused per frame).
    views: Vec<wal::RecordView>,
    view_ranges: Vec<std::ops::Range<usize>>,
    /// After a full resync: per-slot LSNs the loaded snapshot reflects.
    watermarks: Option<Vec<u64>>,
}

impl Applier {
    pub(crate) fn new(node: &Node) -> Self {
        let mut conn = node.new_conn("replication".into());
        conn.authenticated = true;
        Self {
            conn,
            out: ReplyBuf::new(),
            effects: Effects::default(),
            buf: Vec::new(),
            ranges: Vec::new(),
            views: Vec::new(),
            view_ranges: Vec::new(),
            watermarks: None,
        }
    }

    /// Applies a decoded record (copies its arguments into one buffer).
    /// Recovery: records at or below a slot's watermark are already in the
    /// loaded snapshot.
    pub(crate) fn with_watermarks(node: &Node, watermarks: Option<Vec<u64>>) -> Self {
        Self {
            watermarks,
            ..Self::new(node)
        }
    }

    pub(crate) fn apply(&mut self, node: &Node, rec: &wal::Record) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut ranges = std::mem::take(&mut self.ranges);
        buf.clear();
        ranges.clear();
        for a in &rec.args {
            let start = buf.len();
            buf.extend_from_slice(a);
            ranges.push(start..buf.len());
        }
        self.apply_args(node, rec.lsn, rec.slot, &buf, &ranges);
        self.buf = buf;
        self.ranges = ranges;
    }

    /// Applies a record whose arguments are `ranges` into `buf` (for a
    /// received frame: the frame itself, no copy).
    fn apply_args(
        &mut self,
        node: &Node,
        lsn: u64,
        slot: u16,
        buf: &[u8],
        ranges: &[std::ops::Range<usize>],
    ) {
        if slot == wal::MARKER_SLOT {
            // A time marker (for point-in-time restores), not a command; or
            // a slot migration's record (staging lives outside the store).
            if ranges.first().map(|r| &buf[r.clone()]) == Some(super::migration::RECORD) {
                let args: Vec<&[u8]> = ranges.iter().map(|r| &buf[r.clone()]).collect();
                super::migration::target::apply_record(node, lsn, &args);
            }
            return;
        }
        let wm = &self.watermarks;
        let applies = |slot: u16| wm.as_ref().is_none_or(|w| lsn > w[slot as usize]);
        if slot == GLOBAL_SLOT {
            let mut store = node.store.borrow_mut();
            for slot in 0..SLOTS as u16 {
                if applies(slot) {
                    store.flush_slot(slot);
                }
            }
            return;
        }
        if !applies(slot) {
            return;
        }
        let args = Args { buf, ranges };
        let mut store = node.store.borrow_mut();
        // Per record: the coarse clock (a replica never expires by clock; the
        // logged DELs decide), a precise read here cost ~10% of a replica.
        store.now_ms = wal::coarse_now_ms();
        let mut ctx = Ctx::new(
            node,
            &mut store,
            &mut self.out,
            &mut self.conn,
            &mut self.effects,
        );
        ctx.replaying = true;
        ctx.logged_slot = Some(slot);
        cmd::dispatch(&mut ctx, &args);
        self.out.buf.clear();
    }
}

async fn read_line(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<String> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..pos]).trim_end().to_string();
            buf.advance(pos + 1);
            return Ok(line);
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("handshake reply too long"));
        }
        let mut tmp = [0u8; 4096];
        let n = rd.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Reads one frame: (type, payload). Cancel-safe: partial input stays in
/// `buf`. The payload is split off the buffer without copying, and the
/// frames behind it stay where they are (no shift of the rest per frame).
async fn read_frame(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<(u8, Bytes)> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_FRAME {
                return Err(std::io::Error::other(format!("frame of {len} bytes")));
            }
            if buf.len() >= 5 + len {
                let kind = buf[0];
                let mut frame = buf.split_to(5 + len);
                frame.advance(5);
                return Ok((kind, frame.freeze()));
            }
        }
        buf.reserve(64 * 1024);
        let n = rd.read_buf(buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if b.len() >= at + 8 {
        a.copy_from_slice(&b[at..at + 8]);
    }
    u64::from_le_bytes(a)
}

async fn follow_once(node: &Rc<Node>, gen: u64, offer_truncation: bool) -> Result<(), ReplError> {
    let Some(primary) = node.repl.primary_addr() else {
        return Ok(());
    };
    let addr = format!("{}:{}", primary.host, primary.port);
    let link_err = |source| ReplError::Link {
        addr: addr.clone(),
        source,
    };
    let proto = |reason: String| ReplError::Protocol {
        addr: addr.clone(),
        reason,
    };
    let sock = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr))
        .await
        .map_err(|_| ReplError::Connect {
            addr: addr.clone(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| ReplError::Connect {
            addr: addr.clone(),
            source,
        })?;
    node.repl.current(gen)?;
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let (epoch, data_epoch) = {
        let st = node.repl.st.borrow();
        (st.epoch, st.data_epoch)
    };
    let shard = node.slot_map.borrow().my_shard().name.clone();
    let last = node.wal.last_lsn();
    let mut hello = Vec::new();
    if let Some(pw) = &node.cfg.password {
        hello.extend_from_slice(&resp_command(&["AUTH", pw]));
    }
    let floor = if offer_truncation {
        truncation_floor(node)
    } else {
        None
    };
    let mut treplicate = vec![
        "TREPLICATE".to_string(),
        shard,
        epoch.to_string(),
        node.id.clone(),
        last.to_string(),
        data_epoch.to_string(),
    ];
    treplicate.extend(floor.map(|f| f.to_string()));
    let treplicate: Vec<&str> = treplicate.iter().map(String::as_str).collect();
    hello.extend_from_slice(&resp_command(&treplicate));
    wr.write_all(&hello).await.map_err(link_err)?;
    let mut buf = BytesMut::new();
    if node.cfg.password.is_some() {
        let line = read_line(&mut rd, &mut buf).await.map_err(link_err)?;
        if !line.starts_with('+') {
            return Err(ReplError::Refused { addr, reply: line });
        }
    }
    let line = read_line(&mut rd, &mut buf).await.map_err(link_err)?;
    node.repl.current(gen)?;
    // Nothing may have been appended while waiting (only this loop writes
    // a replica's log), but the decisions below rest on it.
    if node.wal.last_lsn() != last {
        return Err(proto(format!(
            "the local log moved from {last} to {} during the handshake",
            node.wal.last_lsn()
        )));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let mut truncate_at = None;
    let full = match words.first().copied() {
        Some("+CONTINUE") => false,
        Some("+FULLRESYNC") => true,
        Some("+TRUNCATE") => {
            // TRUNCATE <fork> <epoch>: cut the log after <fork>, then the
            // stream continues from there.
            match (num(1), floor) {
                (Some(f), Some(fl)) if fl <= f && f < last => truncate_at = Some(f),
                _ => {
                    return Err(proto(format!(
                        "unexpected truncation offer {line:?} (log ends at {last}, floor {floor:?})"
                    )))
                }
            }
            false
        }
        Some("-AHEAD") => {
            return Err(ReplError::Ahead {
                addr,
                reply: line.trim_start_matches('-').to_string(),
            })
        }
        _ => return Err(ReplError::Refused { addr, reply: line }),
    };
    // FULLRESYNC <start> <fork> <primary-last>
    let (start, primary_fork) = (num(1).unwrap_or(0), num(2).unwrap_or(0));
    let theirs = read_history(node, gen, &mut rd, &mut buf, &addr).await?;
    // Local records are dropped only when a fork point proves that the
    // records past it were never on this primary, or when this log is
    // behind the primary's (the primary no longer has the records after
    // it). A primary behind this log would make it lose records that may be
    // acknowledged writes: refuse. The epoch histories tell where the two
    // logs part (the primary judges by this node's data epoch alone, which
    // misses a log that ends in an epoch the primary never had).
    let mine = node.repl.st.borrow().history.clone();
    let split = common_prefix(&mine, &theirs).filter(|&l| l < last);
    if let Some(l) = split {
        let (my_epoch, their_epoch) = (epoch_at(&mine, l + 1), epoch_at(&theirs, l + 1));
        if my_epoch > their_epoch {
            // This node's records after `l` come from a newer primary than
            // the primary's own there: the primary is the stale one.
            return Err(ReplError::Ahead {
                addr,
                reply: format!(
                    "this replica's records after LSN {l} are of epoch {my_epoch}, newer than the primary's there (epoch {their_epoch}): it must not follow this primary"
                ),
            });
        }
    } else if full && !(primary_fork > 0 && primary_fork < last) {
        if let Some(primary_last) = num(3) {
            if last > primary_last {
                return Err(ReplError::Ahead {
                    addr,
                    reply: format!(
                        "the primary offered a full resync but its log ends at {primary_last}, before this replica's {last}"
                    ),
                });
            }
        }
    }
    let mut applier = Applier::new(node);
    // After a full resync: snapshot locally once caught up past this LSN.
    let mut snapshot_after: Option<u64> = None;
    if !full {
        // (A truncation at or before the histories' split point drops every
        // divergent record already.)
        if let Some(fork) = split.filter(|&l| truncate_at.is_none_or(|f| l < f)) {
            // The primary offered to continue a log that diverged from its
            // own: drop this node's state (its records past the fork were
            // never on the primary) and resync from scratch.
            let dropped = last - fork;
            warn!(fork_lsn = fork, dropped_records = dropped, local_lsn = last, primary = %addr, "this node's log diverged from the primary's (epoch histories): dropping the records past the fork point and resyncing");
            node.repl.st.borrow_mut().fork = Some(ForkInfo {
                fork_lsn: fork,
                dropped_records: dropped,
                at_ms: super::now_ms(),
                resolved_by: "fullResync".into(),
            });
            discard_local_state(node)
                .await
                .map_err(|reason| ReplError::Resync {
                    addr: addr.clone(),
                    reason,
                })?;
            return Err(ReplError::Diverged {
                addr,
                fork,
                dropped,
            });
        }
        if let Some(fork) = truncate_at {
            rejoin_by_truncation(node, gen, fork, last, theirs, &addr).await?;
        } else {
            install_history(node, theirs)?;
        }
        if truncate_at.is_some() {
            // The log and keyspace now end at the fork: a plain partial resync.
        } else if node.repl.st.borrow().resyncing {
            // A full resync of this process was cut short: go on with
            // its watermarks (records its snapshot already reflects are
            // skipped), or, when nothing was loaded, from the empty
            // state the log rebuilds; snapshot locally once complete.
            let pending = node.repl.resync.borrow().clone();
            let end = pending.as_ref().map_or(0, |p| p.end_lsn);
            applier.watermarks = pending.map(|p| p.watermarks);
            snapshot_after = Some(end);
            info!(primary = %addr, from_lsn = last, end_lsn = end, "resuming an interrupted full resync");
        }
        node.repl.set_link(gen, |f| f.partial_resyncs += 1);
        info!(primary = %addr, from_lsn = last, "partial resync");
    } else {
        let fork = match (primary_fork > 0 && primary_fork < last, split) {
            (true, Some(l)) => Some(primary_fork.min(l)),
            (true, None) => Some(primary_fork),
            (false, l) => l,
        };
        let fork = fork.map(|f| ForkInfo {
            fork_lsn: f,
            dropped_records: last - f,
            at_ms: super::now_ms(),
            resolved_by: "fullResync".into(),
        });
        let resync = Resync {
            start,
            history: theirs,
            fork,
            local_lsn: last,
        };
        let (wm, end) = full_resync(node, gen, &mut rd, &mut buf, &addr, resync).await?;
        applier.watermarks = Some(wm);
        snapshot_after = Some(end);
        node.repl.set_link(gen, |f| f.full_resyncs += 1);
    }
    node.repl.set_link(gen, |f| {
        f.link_up = true;
        f.link_state = LinkState::Up;
        f.last_error = None;
        f.follow_error = None;
    });

    // Acknowledgements go out from their own task so that reading records
    // never waits for the local log.
    let received = Rc::new(Cell::new(node.wal.last_lsn()));
    let echo = Rc::new(Cell::new(0u64));
    let wake = Rc::new(Notify::new());
    let acker = {
        let (node, received, echo, wake) =
            (node.clone(), received.clone(), echo.clone(), wake.clone());
        tokio::task::spawn_local(async move {
            let mut sent = 0u64;
            let mut last_sent = Instant::now();
            loop {
                let woke = wake.notified();
                tokio::pin!(woke);
                woke.as_mut().enable();
                if node.repl.gen.get() != gen {
                    // Tell the old primary it has been left behind.
                    let line = format!("TFENCED {}\r\n", node.repl.epoch());
                    let _ = wr.write_all(line.as_bytes()).await;
                    return;
                }
                let target = received.get();
                if node.wal.acked_lsn() < target {
                    // Local durability per this node's fsync policy.
                    let _ = tokio::time::timeout(HEARTBEAT, node.wal.wait(target)).await;
                }
                let acked = node.wal.acked_lsn().min(received.get());
                if acked > sent || last_sent.elapsed() >= HEARTBEAT {
                    let line = format!("TACK {acked} {}\r\n", echo.get());
                    if wr.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    sent = acked;
                    last_sent = Instant::now();
                }
                if received.get() <= node.wal.acked_lsn().min(received.get()) {
                    let _ = tokio::time::timeout(HEARTBEAT, &mut woke).await;
                }
            }
        })
    };
    let res = follow_stream(
        node,
        gen,
        &mut rd,
        &mut buf,
        &addr,
        &mut applier,
        &received,
        &echo,
        &wake,
        &mut snapshot_after,
    )
    .await;
    if node.repl.gen.get() != gen {
        wake.notify_one();
        if tokio::time::timeout(Duration::from_millis(300), acker)
            .await
            .is_err()
        {
            warn!("the acknowledgement task did not stop in time");
        }
    } else {
        acker.abort();
    }
    res.map_err(|e| match e {
        StreamErr::Io(source) => link_err(source),
        StreamErr::Proto(r) => proto(r),
    })
}

enum StreamErr {
    Io(std::io::Error),
    Proto(String),
}

#[allow(clippy::too_many_arguments)]
async fn follow_stream(
    node: &Rc<Node>,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    applier: &mut Applier,
    received: &Cell<u64>,
    echo: &Cell<u64>,
    wake: &Notify,
    snapshot_after: &mut Option<u64>,
) -> Result<(), StreamErr> {
    let mut shutdown = node.shutdown.subscribe();
    let mut check = tokio::time::interval(HEARTBEAT);
    loop {
        let (kind, payload) = tokio::select! {
            r = read_frame(rd, buf) => r.map_err(StreamErr::Io)?,
            _ = check.tick() => {
                if node.repl.gen.get() != gen {
                    return Ok(());
                }
                continue;
            }
            _ = shutdown.changed() => return Ok(()),
        };
        if node.repl.gen.get() != gen {
            return Ok(());
        }
        match kind {
            frame::RECORDS => {
                // Decoded in place and applied from the frame: a replica
                // copies each record once, into its own log.
                let mut views = std::mem::take(&mut applier.views);
                let mut ranges = std::mem::take(&mut applier.view_ranges);
                views.clear();
                ranges.clear();
                wal::decode_records_in_place(&payload, &mut views, &mut ranges)
                    .map_err(StreamErr::Proto)?;
                let (Some(first), Some(last)) = (views.first(), views.last()) else {
                    continue;
                };
                let (first, last) = (first.lsn, last.lsn);
                node.wal
                    .append_encoded(first, last, &payload)
                    .map_err(StreamErr::Proto)?;
                for v in &views {
                    applier.apply_args(node, v.lsn, v.slot, &payload, &ranges[v.args.clone()]);
                }
                applier.views = views;
                applier.view_ranges = ranges;
                received.set(last);
                wake.notify_one();
                let primary_last = node.repl.follower.borrow().primary_last_lsn;
                if last >= primary_last {
                    node.repl
                        .set_link(gen, |f| f.caught_up_at = Some(Instant::now()));
                }
                if let Some(end) = *snapshot_after {
                    if last >= end {
                        applier.watermarks = None;
                        *snapshot_after = None;
                        finish_resync(node, gen).await;
                    }
                }
            }
            frame::HEARTBEAT => {
                let epoch = u64_at(&payload, 0);
                let primary_last = u64_at(&payload, 8);
                let sent_ms = u64_at(&payload, 16);
                if epoch < node.repl.epoch() {
                    return Err(StreamErr::Proto(format!(
                        "the primary {addr} is at epoch {epoch}, older than {}",
                        node.repl.epoch()
                    )));
                }
                echo.set(sent_ms);
                let mine = node.wal.last_lsn();
                node.repl.set_link(gen, |f| {
                    f.primary_last_lsn = primary_last;
                    if mine >= primary_last {
                        f.caught_up_at = Some(Instant::now());
                    }
                });
                if let Some(end) = *snapshot_after {
                    if mine >= end {
                        applier.watermarks = None;
                        *snapshot_after = None;
                        finish_resync(node, gen).await;
                    }
                }
                wake.notify_one();
            }
            other => {
                return Err(StreamErr::Proto(format!(
                    "unexpected frame type {other} while streaming"
                )))
            }
        }
    }
}

async fn read_history(
    node: &Node,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
) -> Result<Vec<(u64, u64)>, ReplError> {
    let (kind, payload) = read_frame(rd, buf)
        .await
        .map_err(|source| ReplError::Link {
            addr: addr.to_string(),
            source,
        })?;
    node.repl.current(gen)?;
    if kind != frame::HISTORY {
        return Err(ReplError::Protocol {
            addr: addr.to_string(),
            reason: format!("expected the epoch history, got frame type {kind}"),
        });
    }
    serde_json::from_slice(&payload).map_err(|e| ReplError::Protocol {
        addr: addr.to_string(),
        reason: format!("bad epoch history: {e}"),
    })
}

/// Takes the primary's epoch history as this node's. Only once the local
/// log is a prefix of the primary's (partial resync) or empty (full resync,
/// after the discard): the history describes the log it goes with.
fn install_history(node: &Node, history: Vec<(u64, u64)>) -> Result<(), ReplError> {
    {
        let mut st = node.repl.st.borrow_mut();
        st.data_epoch = st.epoch;
        st.history = history;
    }
    // Persisted before any record of this primary enters the log.
    node.repl.persist()
}

/// The epoch of the record at `lsn` in a log described by `history`
/// (0 before the first entry).
pub(crate) fn epoch_at(history: &[(u64, u64)], lsn: u64) -> u64 {
    history
        .iter()
        .rev()
        .find(|&&(_, start)| start < lsn)
        .map_or(0, |&(e, _)| e)
}

/// The last LSN up to which logs described by these two epoch histories
/// hold records of the same epochs (so the same records: one epoch has one
/// primary); None when they never differ.
fn common_prefix(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<u64> {
    let mut bounds: Vec<u64> = a.iter().chain(b).map(|&(_, start)| start).collect();
    bounds.push(0);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .into_iter()
        .find(|&at| epoch_at(a, at + 1) != epoch_at(b, at + 1))
}

/// A state this node can rebuild without its primary: a local snapshot (or
/// the empty keyspace) plus its own log after the snapshot's start.
struct Base {
    start: u64,
    end: u64,
    snapshot: Option<PathBuf>,
}

/// The bases whose records the local log still holds, oldest first.
fn rebuild_bases(node: &Node) -> Vec<Base> {
    let first = node.wal.first_retained_lsn();
    let reaches = |start: u64| first > 0 && first <= start + 1;
    let mut bases = Vec::new();
    if reaches(0) {
        bases.push(Base {
            start: 0,
            end: 0,
            snapshot: None,
        });
    }
    for (start, end, path) in super::snapshot::list_bounds(&node.cfg.data_dir.join("snapshots")) {
        if reaches(start) && end <= node.wal.last_lsn() {
            bases.push(Base {
                start,
                end,
                snapshot: Some(path),
            });
        }
    }
    bases
}

/// The lowest LSN this node could cut its log back to (rebuilding its
/// keyspace from a base and its own log), offered in the handshake.
fn truncation_floor(node: &Node) -> Option<u64> {
    if node.wal.last_lsn() == 0 || node.repl.st.borrow().resyncing {
        return None;
    }
    rebuild_bases(node).iter().map(|b| b.end).min()
}

/// A rejoining node whose log diverged after `fork` cuts it there instead of
/// a full resync: rebuilds its keyspace from the newest local base at or
/// below the fork plus its own records up to the fork, rewrites its log to
/// end at the fork, and records the fork. Marked `resyncing` throughout, so
/// a crash in between discards the state at restart (as for a full resync).
async fn rejoin_by_truncation(
    node: &Rc<Node>,
    gen: u64,
    fork: u64,
    local_last: u64,
    history: Vec<(u64, u64)>,
    addr: &str,
) -> Result<(), ReplError> {
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason: format!("cutting the log at the fork point {fork}: {reason}"),
    };
    let base = rebuild_bases(node)
        .into_iter()
        .filter(|b| b.end <= fork)
        .max_by_key(|b| b.end)
        .ok_or_else(|| fail("no local snapshot at or below it any more".into()))?;
    // Load the base off the loop; nothing local changes yet.
    let (store, loaded) = match &base.snapshot {
        Some(path) => {
            let path = path.clone();
            let (store, loaded) = tokio::task::spawn_blocking(move || {
                let mut store = Store::new();
                let loaded = super::snapshot::load_file(&path, &mut store);
                (store, loaded)
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
            let loaded = loaded.map_err(|e| fail(e.to_string()))?;
            (store, Some(loaded))
        }
        None => (Store::new(), None),
    };
    let held = hold_snapshots(node).await;
    // The old log's outstanding fsyncs finish before it is rewritten.
    node.wal
        .sync_through(node.wal.last_lsn())
        .await
        .map_err(|e| fail(e.to_string()))?;
    node.repl.current(gen)?;
    if node.wal.last_lsn() != local_last {
        return Err(fail("the local log moved".into()));
    }
    node.repl.st.borrow_mut().resyncing = true;
    if let Err(e) = node.repl.persist() {
        node.repl.st.borrow_mut().resyncing = false;
        return Err(e);
    }
    // From here to the log rewrite nothing awaits: no other task sees a
    // half-rebuilt keyspace or log.
    let rebuilt = rebuild_at(node, &base, fork, store, loaded);
    drop(held);
    match rebuilt {
        Ok(()) => {}
        Err(reason) => {
            // The keyspace may be half rebuilt: start over from nothing.
            warn!(error = %reason, "cutting the log at the fork point failed; discarding the local state");
            discard_local_state(node).await.map_err(&fail)?;
            return Err(fail(reason));
        }
    }
    let dropped = local_last - fork;
    warn!(fork_lsn = fork, dropped_records = dropped, local_lsn = local_last, primary = %addr, base_end_lsn = base.end, "this node's log diverged from the primary's: cut at the fork point, continuing from there");
    node.repl.st.borrow_mut().fork = Some(ForkInfo {
        fork_lsn: fork,
        dropped_records: dropped,
        at_ms: super::now_ms(),
        resolved_by: "truncate".into(),
    });
    // The rewritten log is durable before the mark goes.
    node.wal
        .sync_through(fork)
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Superseded meanwhile: the mark stays, and the next partial resync
    // (which resumes with a complete keyspace) or a restart clears it.
    node.repl.current(gen)?;
    node.repl.st.borrow_mut().resyncing = false;
    install_history(node, history)
}

/// The synchronous part of [`rejoin_by_truncation`]: snapshots past the
/// fork go, the keyspace becomes the base plus the records up to the fork,
/// and the log is rewritten to end at the fork.
fn rebuild_at(
    node: &Rc<Node>,
    base: &Base,
    fork: u64,
    store: Store,
    loaded: Option<super::snapshot::Loaded>,
) -> Result<(), String> {
    let snapshots = node.cfg.data_dir.join("snapshots");
    for (_, end, path) in super::snapshot::list_bounds(&snapshots) {
        if end > fork {
            // It reflects records that were never on the primary.
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut store = store;
    store.mode = ExpireMode::Passive;
    *node.store.borrow_mut() = store;
    let mut applier = Applier::new(node);
    applier.watermarks = loaded.as_ref().map(|l| l.watermarks.clone());
    let mut encoded = Vec::new();
    let mut expect = base.start + 1;
    for rec in node.wal.read_from(base.start).map_err(|e| e.to_string())? {
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.lsn > fork {
            break;
        }
        if rec.lsn != expect {
            return Err(format!("record {expect} is missing from the local log"));
        }
        expect += 1;
        applier.apply(node, &rec);
        let args: Vec<&[u8]> = rec.args.iter().map(|a| a.as_slice()).collect();
        wal::encode_record(&mut encoded, rec.lsn, rec.slot, &args);
    }
    if expect != fork + 1 {
        return Err(format!(
            "the local log ends at {} before the fork point",
            expect - 1
        ));
    }
    node.wal.reset(base.start).map_err(|e| e.to_string())?;
    if fork > base.start {
        node.wal.append_encoded(base.start + 1, fork, &encoded)?;
    }
    *node.last_snapshot.borrow_mut() = loaded.map(|l| l.info);
    Ok(())
}

/// What a full resync replaces the local state with.
struct Resync {
    /// The snapshot's start LSN (the log continues after it).
    start: u64,
    /// The primary's epoch history, installed once the local state is gone.
    history: Vec<(u64, u64)>,
    /// Where this node's log left the primary's, if it did.
    fork: Option<ForkInfo>,
    local_lsn: u64,
}

/// Receives a snapshot, loads it, and sets the log to continue after its
/// start LSN. Returns the per-slot watermarks and the end LSN.
async fn full_resync(
    node: &Rc<Node>,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    resync: Resync,
) -> Result<(Vec<u64>, u64), ReplError> {
    let start = resync.start;
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason,
    };
    // The whole snapshot is received before anything local is discarded:
    // a transfer cut short leaves this node with all its data. One file per
    // generation: a superseded loop never writes into the current one's.
    let tmp = node
        .cfg
        .data_dir
        .join(format!("{RESYNC_FILE_PREFIX}{gen}.tsnap"));
    let received = receive_snapshot(node, gen, rd, buf, addr, &tmp).await;
    let bytes = match received {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = node.repl.current(gen) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(fork) = &resync.fork {
        warn!(fork_lsn = fork.fork_lsn, dropped_records = fork.dropped_records, local_lsn = resync.local_lsn, primary = %addr, "this node's log diverged from the primary's: dropping the records past the fork point");
        node.repl.st.borrow_mut().fork = Some(fork.clone());
    }
    // Snapshots stay off until the received one is the keyspace.
    let held = hold_snapshots(node).await;
    if let Err(e) = discard_held(node, &held).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    if let Err(e) = install_history(node, resync.history) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let path = tmp.clone();
    let loading = tokio::task::spawn_blocking(move || {
        let mut store = Store::new();
        let loaded = super::snapshot::load_file(&path, &mut store);
        (store, loaded)
    })
    .await;
    let _ = std::fs::remove_file(&tmp);
    let (store, loaded) = loading.map_err(|e| fail(e.to_string()))?;
    // Superseded while loading: the state stays discarded and marked
    // `resyncing`, so the current loop (or a restart) starts over.
    node.repl.current(gen)?;
    let loaded = loaded.map_err(|e| fail(e.to_string()))?;
    if loaded.info.start_lsn != start {
        return Err(fail(format!(
            "the snapshot starts at {} but the primary announced {start}",
            loaded.info.start_lsn
        )));
    }
    let mut store = store;
    store.mode = ExpireMode::Passive;
    *node.store.borrow_mut() = store;
    node.wal.reset(start).map_err(|e| fail(e.to_string()))?;
    *node.repl.resync.borrow_mut() = Some(PendingResync {
        watermarks: loaded.watermarks.clone(),
        end_lsn: loaded.info.end_lsn,
    });
    info!(primary = %addr, bytes, keys = loaded.info.keys, start_lsn = start, end_lsn = loaded.info.end_lsn, "snapshot received and loaded");
    Ok((loaded.watermarks, loaded.info.end_lsn))
}

/// Writes the streamed snapshot to `tmp`; returns its size.
async fn receive_snapshot(
    node: &Node,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    tmp: &Path,
) -> Result<u64, ReplError> {
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason,
    };
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
    let mut bytes = 0u64;
    loop {
        let (kind, payload) = read_frame(rd, buf)
            .await
            .map_err(|source| ReplError::Link {
                addr: addr.to_string(),
                source,
            })?;
        // A superseded transfer stops at once.
        node.repl.current(gen)?;
        match kind {
            frame::SNAPSHOT => {
                file.write_all(&payload)
                    .await
                    .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
                bytes += payload.len() as u64;
            }
            frame::SNAPSHOT_END => break,
            frame::HEARTBEAT => {}
            other => return Err(fail(format!("unexpected frame type {other} in a snapshot"))),
        }
    }
    file.flush().await.map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// Once a resynced replica has the records its snapshot needed, a local
/// snapshot makes its state restartable; until then a restart starts over.
async fn finish_resync(node: &Rc<Node>, gen: u64) {
    let res = loop {
        match super::server::run_snapshot(node).await {
            // Another snapshot is running (it may predate the resync).
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            res => break res,
        }
        if node.repl.gen.get() != gen {
            return;
        }
    };
    if node.repl.gen.get() != gen {
        // A newer follow call may have begun its own resync: its mark stays
        // (the current loop finishes, or a restart starts over).
        return;
    }
    match res {
        Ok(Some(_)) => {
            *node.repl.resync.borrow_mut() = None;
            node.repl.st.borrow_mut().resyncing = false;
            if let Err(e) = node.repl.persist() {
                warn!(error = %e, "failed to record the end of the full resync");
            }
            info!(lsn = node.wal.last_lsn(), "full resync complete");
        }
        Ok(None) => {}
        Err(e) => {
            *node.repl.resync.borrow_mut() = None;
            warn!(error = %e, "snapshot after the full resync failed; a restart will resync again")
        }
    }
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        b.extend_from_slice(a.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b
}

// ---------------------------------------------------------------------------
// Status.
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub id: String,
    pub addr: String,
    pub connected: bool,
    pub acked_lsn: u64,
    pub lag_ops: u64,
    pub lag_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationStatus {
    pub consistency: &'static str,
    pub required_acks: usize,
    pub replicas_expected: usize,
    pub lease_ms: u64,
    pub lease_held: bool,
    /// The epoch of the primary whose history this log follows (it can be
    /// newer than the last record: a replica installs its primary's history
    /// before the records reach it).
    pub data_epoch: u64,
    /// The epoch of the record at `lsn` (0 before the first): with `lsn`,
    /// the order in which logs are more up to date (a newer epoch first,
    /// then the longer log), which the operator promotes by.
    pub last_record_epoch: u64,
    pub history: Vec<(u64, u64)>,
    pub replicas: Vec<ReplicaStatus>,
    pub primary: Option<NodeAddr>,
    pub link_state: LinkState,
    pub link_up: bool,
    /// Why the primary refuses to feed this replica (e.g. `AHEAD …`).
    pub follow_error: Option<String>,
    pub lag_ms: Option<u64>,
    pub primary_last_lsn: u64,
    pub full_resyncs: u64,
    pub partial_resyncs: u64,
    pub last_error: Option<String>,
    pub resyncing: bool,
    pub fork: Option<ForkInfo>,
}

pub fn status(node: &Node) -> ReplicationStatus {
    let repl = &node.repl;
    let (k, n) = repl.required(node);
    let cfg = repl.cfg.borrow();
    let st = repl.st.borrow();
    let f = repl.follower.borrow();
    let last = node.wal.last_lsn();
    let replicas = repl
        .replicas
        .borrow()
        .iter()
        .map(|(id, r)| ReplicaStatus {
            id: id.clone(),
            addr: r.addr.clone(),
            connected: r.connected,
            acked_lsn: r.acked_lsn,
            lag_ops: last.saturating_sub(r.acked_lsn),
            lag_ms: if r.acked_lsn >= last {
                0
            } else {
                r.caught_up_at.elapsed().as_millis() as u64
            },
        })
        .collect();
    let is_primary = node.role.get() == Role::Primary;
    ReplicationStatus {
        consistency: cfg.consistency.as_str(),
        required_acks: k,
        replicas_expected: n,
        lease_ms: cfg.lease_ms,
        lease_held: is_primary && (k == 0 || repl.lease_holders() >= k),
        data_epoch: st.data_epoch,
        last_record_epoch: epoch_at(&st.history, last),
        history: st.history.clone(),
        replicas,
        primary: st.primary.clone(),
        link_state: f.link_state,
        link_up: f.link_up,
        follow_error: f.follow_error.clone(),
        lag_ms: (!is_primary).then(|| {
            f.caught_up_at
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(u64::MAX)
        }),
        primary_last_lsn: f.primary_last_lsn,
        full_resyncs: f.full_resyncs,
        partial_resyncs: f.partial_resyncs,
        last_error: f.last_error.clone(),
        resyncing: st.resyncing,
        fork: st.fork.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::{common_prefix, epoch_at};

    #[test]
    fn epoch_at_reads_the_entry_a_record_falls_under() {
        let h = [(1, 0), (2, 50), (4, 120)];
        assert_eq!(epoch_at(&h, 1), 1);
        assert_eq!(epoch_at(&h, 50), 1);
        assert_eq!(epoch_at(&h, 51), 2);
        assert_eq!(epoch_at(&h, 121), 4);
        assert_eq!(epoch_at(&[], 7), 0);
        // Promoted twice without writing in between: the later epoch.
        assert_eq!(epoch_at(&[(1, 0), (2, 10), (3, 10)], 11), 3);
    }

    #[test]
    fn common_prefix_is_where_the_epochs_of_two_logs_part() {
        // An old primary rejoining: its epoch-1 suffix after 51.
        assert_eq!(common_prefix(&[(1, 0)], &[(1, 0), (2, 51)]), Some(51));
        // The same lineage, one history longer.
        assert_eq!(
            common_prefix(&[(1, 0), (2, 50)], &[(1, 0), (2, 50), (4, 120)]),
            Some(120)
        );
        assert_eq!(common_prefix(&[(1, 0), (2, 50)], &[(1, 0), (2, 50)]), None);
        // No history (a node that never followed) against a shard's.
        assert_eq!(common_prefix(&[], &[(1, 0)]), Some(0));
        assert_eq!(common_prefix(&[], &[(5, 80)]), Some(80));
        // A replica whose log ends in epoch 3, which the primary never had.
        let mine = [(1, 0), (2, 50), (3, 100)];
        let theirs = [(1, 0), (2, 50), (4, 200)];
        assert_eq!(common_prefix(&mine, &theirs), Some(100));
        assert_eq!(epoch_at(&mine, 101), 3);
        assert_eq!(epoch_at(&theirs, 101), 2);
        // Symmetric.
        assert_eq!(common_prefix(&theirs, &mine), Some(100));
    }
}
