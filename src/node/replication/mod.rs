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
//!
//! Here: the shared state ([`Repl`]), role changes, startup and status.
//! `primary.rs`: serving replicas, acks and the quorum wait; `replica.rs`:
//! following a primary and applying its stream (rejoin, full resync);
//! `frame.rs`: the stream's wire format; `settings.rs`: consistency and ack
//! settings.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::metrics::Histogram;
use super::slots::NodeAddr;
use super::store::{ExpireMode, Store};
use super::{Node, Role};
// The moved code names these as `super::…` (as it did in one file).
use super::{now_ms, server, snapshot};

pub mod frame;
mod primary;
mod replica;
mod settings;

pub use primary::{push_to_replicas, serve_replica, wait_command, wait_rule};
use replica::follow_loop;
pub(crate) use replica::{epoch_at, Applier};
pub use settings::{apply_settings_json, Consistency, ReplConfig};

/// A full resync's snapshot is received into `<data-dir>/<prefix><gen>.tsnap`.
const RESYNC_FILE_PREFIX: &str = "resync-";

/// How often each side speaks when there is nothing else to say.
const HEARTBEAT: Duration = Duration::from_millis(100);

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
    /// The shard's replica count, as the last promotion or topology push
    /// told it: a primary restarted in place acknowledges by the same rule
    /// before the next push (the operator passes no `--replicas`).
    #[serde(default)]
    pub replicas: Option<usize>,
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
    /// When the last heartbeat from a primary arrived. Acknowledgements echo
    /// the newest heartbeat's send time, so a primary's lease from this node
    /// cannot outlast this instant by more than the lease (the operator
    /// shortens its post-fence wait by the age; a role change does not reset
    /// it, and nothing updates it once the node is fenced).
    pub heartbeat_at: Option<Instant>,
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
        super::write_atomically(path, &body).map_err(err)
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

    /// Records the shard's replica count for a restart (persisted only
    /// when it changes: pushes repeat it).
    pub fn remember_shard_size(&self, n: usize) -> Result<(), ReplError> {
        if self.st.borrow().replicas == Some(n) {
            return Ok(());
        }
        self.st.borrow_mut().replicas = Some(n);
        self.persist()
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
                self.st.borrow().replicas.or(cfg.replicas).unwrap_or(t)
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

    pub(crate) fn count_acked(&self, lsn: u64) -> usize {
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
        node.repl.remember_shard_size(n)?;
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
    // Blocked clients run their command again: MOVED or READONLY now.
    node.blocked.borrow_mut().wake_all();
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
    // Slots may have moved: blocked clients run their command again (and
    // get MOVED for a slot served elsewhere now).
    node.blocked.borrow_mut().wake_all();
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

/// The replicas' in-memory log ring: the configured size, but at most an
/// eighth of `maxmemory`, so a small node keeps most of its memory for data
/// (a replica further behind reads the log files instead).
pub fn ring_capacity(configured: usize, maxmemory: u64) -> usize {
    if maxmemory == 0 {
        return configured;
    }
    configured.min((maxmemory / 8) as usize)
}

/// At startup, after recovery: resume the role the node had.
pub async fn start(node: &Rc<Node>) -> Result<(), ReplError> {
    let cap = ring_capacity(
        node.repl.cfg.borrow().ring_bytes,
        node.memory.maxmemory.get(),
    );
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
    /// On a non-primary: milliseconds since the last heartbeat from a
    /// primary (absent when none arrived since the process started).
    pub heartbeat_age_ms: Option<u64>,
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
        heartbeat_age_ms: if is_primary {
            None
        } else {
            f.heartbeat_at.map(|t| t.elapsed().as_millis() as u64)
        },
        primary_last_lsn: f.primary_last_lsn,
        full_resyncs: f.full_resyncs,
        partial_resyncs: f.partial_resyncs,
        last_error: f.last_error.clone(),
        resyncing: st.resyncing,
        fork: st.fork.clone(),
    }
}
