//! Online slot migration, the node's half (see docs/migration.md).
//!
//! A migration moves a set of hash slots from this shard's primary (the
//! *source*) to another shard's primary (the *target*):
//!
//! 1. the source encodes the moving slots one at a time (writes to that
//!    one slot wait meanwhile) as ordinary write commands, big collections
//!    in element chunks ([`encode`]); from the moment a slot is encoded,
//!    every write to it is captured with its LSN and streamed after the
//!    slot ([`source`]);
//! 2. the target applies what it receives to a *staging* keyspace of its
//!    own, invisible to every read until the flip, and logs it so its
//!    replicas and its recovery rebuild the same staging ([`target`]);
//! 3. at small lag the source blocks writes to the moving slots only, sends
//!    the rest and a seal; the target answers the seal once it is durable
//!    by its shard's acknowledgement rule;
//! 4. the operator pushes a topology that gives the slots to the target;
//!    the target merges its staging into its keyspace, the source answers
//!    MOVED, confirms the commit is durable at the target, and only then
//!    frees the slots' data.
//!
//! The node never decides ownership: the flip is the operator's topology.

pub mod admin;
pub mod digest;
pub mod encode;
pub mod source;
pub mod target;

use std::cell::{Cell, RefCell};
use std::fmt::Write;
use std::rc::Rc;

use serde::Serialize;
use tokio::sync::Notify;

use super::slots::{NodeAddr, SlotMap, SlotOwner, SLOTS};
use super::Node;

/// First argument of the log records a migration writes on the target
/// (with slot [`super::wal::MARKER_SLOT`]: no keyspace slot's watermark
/// applies to them, and the time-marker reader ignores them).
pub const RECORD: &[u8] = b"TMIGRATE";

/// Finished migrations kept for status, per direction.
const HISTORY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("invalid slot range {0}")]
    BadRange(String),
    #[error("migration {0} already exists")]
    Exists(String),
    #[error("no migration {0}")]
    Unknown(String),
    #[error("slot {slot} is not served by this node's shard")]
    NotOwned { slot: u16 },
    #[error("slot {slot} is already moving in migration {id}")]
    Busy { slot: u16, id: String },
    #[error("only a primary can {0}")]
    NotPrimary(&'static str),
    #[error("a migration needs persistence (the target logs what it stages)")]
    NoPersistence,
    #[error("link to {addr}: {reason}")]
    Link { addr: String, reason: String },
    #[error("the target refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Aborted(String),
}

/// A set of slots, as a bitmap.
#[derive(Clone)]
pub struct SlotSet(Vec<u64>);

impl SlotSet {
    pub fn from_ranges(ranges: &[(u16, u16)]) -> Result<Self, MigrationError> {
        let mut bits = vec![0u64; SLOTS / 64];
        if ranges.is_empty() {
            return Err(MigrationError::BadRange("(none)".into()));
        }
        for &(a, b) in ranges {
            if a > b || b as usize >= SLOTS {
                return Err(MigrationError::BadRange(format!("{a}-{b}")));
            }
            for s in a..=b {
                bits[s as usize / 64] |= 1 << (s % 64);
            }
        }
        Ok(Self(bits))
    }
    pub fn contains(&self, slot: u16) -> bool {
        (slot as usize) < SLOTS && self.0[slot as usize / 64] & (1 << (slot % 64)) != 0
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..SLOTS as u16).filter(|&s| self.contains(s))
    }
    pub fn overlaps(&self, other: &SlotSet) -> Option<u16> {
        self.iter().find(|&s| other.contains(s))
    }
}

/// Parses "a-b,c,d-e" (the link's and the digest's range syntax).
pub fn parse_ranges(text: &str) -> Result<Vec<(u16, u16)>, MigrationError> {
    let bad = || MigrationError::BadRange(text.to_string());
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a > b || b as usize >= SLOTS {
            return Err(bad());
        }
        out.push((a, b));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Sorted slots as inclusive ranges.
pub fn to_ranges(slots: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => out.push((s, s)),
        }
    }
    out
}

pub fn format_ranges(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

/// Where a migration stands. Source and target use the phases of their
/// side; `done` and `aborted` are final on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Source: opening the authenticated link to the target.
    Connecting,
    /// Source: sending the encoded slots (and the writes captured so far).
    Snapshot,
    /// Source: sending captured writes, waiting for the lag to be small.
    Streaming,
    /// Source: writes to the moving slots blocked; sending the rest and the
    /// seal.
    Paused,
    /// Source: sealed and durable at the target; writes still blocked; the
    /// operator may now push the topology that flips the slots.
    HandoffReady,
    /// Source: the topology flipped; confirming the commit at the target.
    Finishing,
    /// Source: freeing the moved slots' data in paced slices.
    Releasing,
    /// Target: receiving into staging.
    Importing,
    /// Target: sealed (everything durable by the shard's rule); waiting for
    /// the topology.
    Sealed,
    /// Target: the staging is now the keyspace's (final on the target).
    Committed,
    /// Source: moved and freed.
    Done,
    /// Cancelled or failed; the source kept everything, the target dropped
    /// its staging.
    Aborted,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Snapshot => "snapshot",
            Phase::Streaming => "streaming",
            Phase::Paused => "paused",
            Phase::HandoffReady => "handoff-ready",
            Phase::Finishing => "finishing",
            Phase::Releasing => "releasing",
            Phase::Importing => "importing",
            Phase::Sealed => "sealed",
            Phase::Committed => "committed",
            Phase::Done => "done",
            Phase::Aborted => "aborted",
        }
    }
    pub fn is_final(&self) -> bool {
        matches!(self, Phase::Done | Phase::Aborted | Phase::Committed)
    }
}

/// Settings of an outgoing migration the operator may change while it runs.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// 0: unlimited.
    pub max_bytes_per_sec: u64,
    /// Longest time writes to the moving slots may stay blocked before the
    /// migration aborts (when the target confirms it dropped the staging).
    pub write_pause_timeout_ms: u64,
    /// The write pause starts once no more than this many bytes of captured
    /// writes are waiting to be sent.
    pub handoff_max_lag_bytes: u64,
    /// Captured writes waiting beyond this fail the migration (the target
    /// does not keep up); bounds the source's memory.
    pub max_buffer_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes_per_sec: 0,
            write_pause_timeout_ms: 2_000,
            handoff_max_lag_bytes: 256 * 1024,
            max_buffer_bytes: 256 * 1024 * 1024,
        }
    }
}

/// One write to a moving slot, captured after the slot was cloned.
pub struct Captured {
    pub lsn: u64,
    pub args: Vec<Vec<u8>>,
}

/// An outgoing migration (this node is the source primary).
pub struct Outgoing {
    pub id: String,
    pub ranges: Vec<(u16, u16)>,
    pub slots: SlotSet,
    pub target: NodeAddr,
    pub limits: Cell<Limits>,
    pub phase: Cell<Phase>,
    /// Slots encoded so far: writes to them are captured from then on.
    cloned: RefCell<Vec<bool>>,
    pub captured: RefCell<std::collections::VecDeque<Captured>>,
    pub captured_bytes: Cell<u64>,
    pub last_captured_lsn: Cell<u64>,
    pub keys_sent: Cell<u64>,
    pub bytes_sent: Cell<u64>,
    pub write_pause_ms: Cell<u64>,
    pub pause_started: Cell<Option<std::time::Instant>>,
    pub last_error: RefCell<Option<String>>,
    pub started_ms: u64,
    pub finished_ms: Cell<u64>,
    /// Set by cancel; `force` also resumes writes when the target cannot
    /// confirm it dropped the staging (the operator promises not to flip).
    pub cancel: Cell<Option<bool>>,
    /// Topology pushed, cancel, limits changed, or a write captured.
    pub wake: Notify,
    /// A PAUSE record is in the log (a RESUME must follow).
    pub pause_logged: Cell<bool>,
    /// The slot being encoded: writes to it wait meanwhile (a short,
    /// per-slot pause that keeps the copy consistent without one long
    /// step of the event loop).
    pub encoding: Cell<Option<u16>>,
    /// Rebuilt from a PAUSE record (recovery, or a source replica).
    pub recovered: bool,
}

impl Outgoing {
    pub fn new(
        id: String,
        ranges: Vec<(u16, u16)>,
        slots: SlotSet,
        target: NodeAddr,
        limits: Limits,
        phase: Phase,
        recovered: bool,
    ) -> Self {
        Self {
            id,
            ranges,
            slots,
            target,
            limits: Cell::new(limits),
            phase: Cell::new(phase),
            cloned: RefCell::new(vec![false; SLOTS]),
            captured: Default::default(),
            captured_bytes: Default::default(),
            last_captured_lsn: Default::default(),
            keys_sent: Default::default(),
            bytes_sent: Default::default(),
            write_pause_ms: Default::default(),
            pause_started: Default::default(),
            last_error: Default::default(),
            started_ms: super::now_ms(),
            finished_ms: Default::default(),
            cancel: Default::default(),
            wake: Default::default(),
            pause_logged: Default::default(),
            encoding: Default::default(),
            recovered,
        }
    }

    pub fn is_cloned(&self, slot: u16) -> bool {
        self.cloned.borrow()[slot as usize]
    }
    pub fn mark_cloned(&self, slot: u16) {
        self.cloned.borrow_mut()[slot as usize] = true;
    }
    /// Writes to the moving slots wait while this is true.
    pub fn blocks_writes(&self) -> bool {
        matches!(self.phase.get(), Phase::Paused | Phase::HandoffReady)
    }
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        tracing::warn!(migration = %self.id, error = %why, "slot migration failed");
        *self.last_error.borrow_mut() = Some(why);
    }
}

/// Counters across all migrations (Prometheus).
#[derive(Default)]
pub struct Totals {
    pub bytes_out: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub keys_out: Cell<u64>,
    pub write_pause_ms: Cell<u64>,
    pub done: Cell<u64>,
    pub aborted: Cell<u64>,
    pub committed: Cell<u64>,
}

/// Every migration this node takes part in.
#[derive(Default)]
pub struct Migrations {
    pub outgoing: RefCell<Vec<Rc<Outgoing>>>,
    pub incoming: RefCell<Vec<target::Incoming>>,
    /// Any outgoing migration is live (the write path's one cheap check).
    live_out: Cell<bool>,
    /// Any outgoing migration blocks writes now.
    blocking: Cell<bool>,
    /// Woken whenever writes may be unblocked.
    pub unblocked: Notify,
    pub totals: Totals,
    /// The import watchdog task runs.
    watchdog: Cell<bool>,
    /// The node itself, for the tasks a command or a record starts.
    me: RefCell<std::rc::Weak<Node>>,
}

impl Migrations {
    pub fn set_node(&self, node: &Rc<Node>) {
        *self.me.borrow_mut() = Rc::downgrade(node);
    }
    pub fn node(&self) -> Option<Rc<Node>> {
        self.me.borrow().upgrade()
    }

    /// Resolves when writes may run again (or after a short while: the
    /// caller re-checks by parsing the command again).
    pub async fn wait_unblocked(&self) {
        let n = self.unblocked.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if !self.blocking.get() {
            return;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), n).await;
    }
    /// Recomputes the write path's flags after a phase change.
    pub fn refresh(&self) {
        let out = self.outgoing.borrow();
        self.live_out
            .set(out.iter().any(|m| !m.phase.get().is_final()));
        let blocking = out
            .iter()
            .any(|m| m.blocks_writes() || m.encoding.get().is_some());
        if self.blocking.replace(blocking) && !blocking {
            self.unblocked.notify_waiters();
        }
    }

    /// Whether a write to `slot` must wait (the source's write pause).
    pub fn write_blocked(&self, slot: u16) -> bool {
        self.blocking.get()
            && self.outgoing.borrow().iter().any(|m| {
                (m.blocks_writes() && m.slots.contains(slot)) || m.encoding.get() == Some(slot)
            })
    }

    /// Called with every record the write path logs: writes to a slot that
    /// an outgoing migration has cloned are kept for the target. A record
    /// for every slot (FLUSHALL) fails the live migrations: the target's
    /// staging cannot follow it.
    pub fn capture(&self, slot: u16, lsn: u64, args: &[&[u8]]) {
        if !self.live_out.get() {
            return;
        }
        for m in self.outgoing.borrow().iter() {
            if m.phase.get().is_final() {
                continue;
            }
            if slot == super::wal::GLOBAL_SLOT {
                m.fail("the keyspace was flushed during the migration");
                m.cancel.set(Some(false));
                m.wake.notify_one();
                continue;
            }
            if !m.slots.contains(slot) || !m.is_cloned(slot) {
                continue;
            }
            let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
            let bytes: u64 = args.iter().map(|a| a.len() as u64 + 16).sum();
            m.captured_bytes.set(m.captured_bytes.get() + bytes);
            m.last_captured_lsn.set(lsn);
            m.captured.borrow_mut().push_back(Captured { lsn, args });
            m.wake.notify_one();
        }
    }

    /// Whether snapshots must wait: staging lives outside the keyspace a
    /// snapshot writes, so a snapshot (and the log truncation after it)
    /// taken while staging exists would lose the staged records from
    /// recovery. Snapshots resume once every import committed or aborted.
    /// The same holds for a source's logged write pause: a snapshot above
    /// its PAUSE record would let a restart forget the pause.
    pub fn defer_snapshots(&self) -> bool {
        self.incoming.borrow().iter().any(|m| m.holds_staging())
            || self.outgoing.borrow().iter().any(|m| m.pause_logged.get())
    }

    pub fn add_outgoing(&self, m: Rc<Outgoing>) {
        let mut out = self.outgoing.borrow_mut();
        out.push(m);
        trim_history(&mut out, |m| m.phase.get().is_final());
        drop(out);
        self.refresh();
    }

    pub fn find_outgoing(&self, id: &str) -> Option<Rc<Outgoing>> {
        self.outgoing
            .borrow()
            .iter()
            .rev()
            .find(|m| m.id == id)
            .cloned()
    }
}

/// Drops the oldest finished entries beyond [`HISTORY`].
fn trim_history<T>(v: &mut Vec<T>, finished: impl Fn(&T) -> bool) {
    while v.iter().filter(|m| finished(m)).count() > HISTORY {
        match v.iter().position(&finished) {
            Some(i) => {
                v.remove(i);
            }
            None => break,
        }
    }
}

/// Checks a topology before it is installed on a primary. For each slot
/// that would change hands here, the newest migration of that slot
/// decides: a source gives a slot away only once that migration is sealed
/// at the target (handoff-ready or later), a target takes one only once
/// its import is sealed. An aborted migration refuses the flip too: its
/// source resumed writes, so the target's copy is stale. Slots no
/// migration touched move freely (the operator's plain assignments).
pub fn check_topology(node: &Node, map: &SlotMap) -> Result<(), String> {
    if node.role.get() != super::Role::Primary {
        return Ok(());
    }
    let current = node.slot_map.borrow();
    let out = node.migrations.outgoing.borrow();
    let inc = node.migrations.incoming.borrow();
    for slot in 0..SLOTS as u16 {
        let was = current.owner(slot) == SlotOwner::Local;
        let will = map.owner(slot) == SlotOwner::Local;
        if was && !will {
            if let Some(m) = out.iter().rev().find(|m| m.slots.contains(slot)) {
                let p = m.phase.get();
                let ok = matches!(
                    p,
                    Phase::HandoffReady | Phase::Finishing | Phase::Releasing | Phase::Done
                );
                if !ok {
                    return Err(format!(
                        "slot {slot} belongs to migration {} which is {}: it may leave this shard only once the migration reports handoff-ready",
                        m.id,
                        p.as_str()
                    ));
                }
            }
        }
        if !was && will {
            if let Some(m) = inc.iter().rev().find(|m| m.slots.contains(slot)) {
                if matches!(m.phase, Phase::Importing | Phase::Aborted) {
                    return Err(format!(
                        "slot {slot} belongs to import {} which is {}: this shard may take it only once the import is sealed",
                        m.id,
                        m.phase.as_str()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// After a topology is installed: a target commits the sealed imports it
/// now owns; a source learns that its slots flipped.
pub fn on_topology(node: &Rc<Node>) {
    target::commit_owned(node);
    for m in node.migrations.outgoing.borrow().iter() {
        m.wake.notify_one();
    }
    node.migrations.refresh();
    node.migrations.unblocked.notify_waiters();
}

/// The `# Migration` lines of INFO (in the cluster section).
pub fn info_fields(node: &Node, out: &mut String) {
    let t = &node.migrations.totals;
    let out_live = node
        .migrations
        .outgoing
        .borrow()
        .iter()
        .filter(|m| !m.phase.get().is_final())
        .count();
    let in_live = node
        .migrations
        .incoming
        .borrow()
        .iter()
        .filter(|m| !m.phase.is_final())
        .count();
    let _ = write!(
        out,
        "slot_migrations_out_active:{out_live}\r\nslot_migrations_in_active:{in_live}\r\nslot_migration_bytes_sent:{}\r\nslot_migration_bytes_received:{}\r\nslot_migration_keys_sent:{}\r\nslot_migration_write_pause_ms_total:{}\r\nslot_migrations_done:{}\r\nslot_migrations_aborted:{}\r\n",
        t.bytes_out.get(),
        t.bytes_in.get(),
        t.keys_out.get(),
        t.write_pause_ms.get(),
        t.done.get() + t.committed.get(),
        t.aborted.get()
    );
    for m in node.migrations.outgoing.borrow().iter() {
        let _ = write!(
            out,
            "slot_migration:id={},direction=out,phase={},slots={},keys_sent={},bytes_sent={},lag_bytes={},write_pause_ms={}\r\n",
            m.id,
            m.phase.get().as_str(),
            format_ranges(&m.ranges),
            m.keys_sent.get(),
            m.bytes_sent.get(),
            m.captured_bytes.get(),
            m.write_pause_ms.get()
        );
    }
    for m in node.migrations.incoming.borrow().iter() {
        let _ = write!(
            out,
            "slot_migration:id={},direction=in,phase={},slots={},bytes_received={}\r\n",
            m.id,
            m.phase.as_str(),
            format_ranges(&m.ranges),
            m.bytes_received
        );
    }
}

/// `CLUSTER GETSLOTMIGRATIONS` (Valkey's name): one map per migration this
/// node sends (`EXPORT`) or receives (`IMPORT`), newest last.
pub fn getslotmigrations(ctx: &mut super::cmd::Ctx<'_>) {
    let mut rows: Vec<Vec<(&'static str, String)>> = Vec::new();
    for m in ctx.node.migrations.outgoing.borrow().iter() {
        rows.push(vec![
            ("name", m.id.clone()),
            ("operation", "EXPORT".into()),
            ("slot_ranges", format_ranges(&m.ranges)),
            ("node", m.target.id.clone()),
            ("state", m.phase.get().as_str().into()),
            ("message", m.last_error.borrow().clone().unwrap_or_default()),
            ("keys_sent", m.keys_sent.get().to_string()),
            ("bytes", m.bytes_sent.get().to_string()),
            ("lag_bytes", m.captured_bytes.get().to_string()),
            ("write_pause_ms", m.write_pause_ms.get().to_string()),
        ]);
    }
    for m in ctx.node.migrations.incoming.borrow().iter() {
        rows.push(vec![
            ("name", m.id.clone()),
            ("operation", "IMPORT".into()),
            ("slot_ranges", format_ranges(&m.ranges)),
            ("node", m.source.clone()),
            ("state", m.phase.as_str().into()),
            ("message", m.last_error.clone().unwrap_or_default()),
            ("staged_keys", m.staged_keys().to_string()),
            ("bytes", m.bytes_received.to_string()),
        ]);
    }
    ctx.out.array(rows.len());
    for row in rows {
        ctx.out.map(row.len());
        for (k, v) in row {
            ctx.out.bulk(k.as_bytes());
            ctx.out.bulk(v.as_bytes());
        }
    }
}

/// Prometheus lines (bounded labels: direction only).
pub fn render_metrics(node: &Node, out: &mut String) {
    let t = &node.migrations.totals;
    let mut counter = |name: &str, help: &str, lines: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    counter(
        "tessera_slot_migration_bytes_total",
        "Bytes of slot data and captured writes sent or received by slot migrations.",
        &[
            ("{direction=\"out\"}", t.bytes_out.get()),
            ("{direction=\"in\"}", t.bytes_in.get()),
        ],
    );
    counter(
        "tessera_slot_migration_keys_total",
        "Keys sent by slot migrations (snapshot part).",
        &[("{direction=\"out\"}", t.keys_out.get())],
    );
    counter(
        "tessera_slot_migrations_total",
        "Slot migrations finished, by result.",
        &[
            ("{result=\"done\"}", t.done.get()),
            ("{result=\"committed\"}", t.committed.get()),
            ("{result=\"aborted\"}", t.aborted.get()),
        ],
    );
    let _ = writeln!(
        out,
        "# HELP tessera_slot_migration_write_pause_seconds Time writes to moving slots were blocked, summed over migrations.\n# TYPE tessera_slot_migration_write_pause_seconds counter\ntessera_slot_migration_write_pause_seconds {}",
        t.write_pause_ms.get() as f64 / 1000.0
    );
    let live = node
        .migrations
        .outgoing
        .borrow()
        .iter()
        .filter(|m| !m.phase.get().is_final())
        .map(|m| m.captured_bytes.get())
        .sum::<u64>();
    let _ = writeln!(
        out,
        "# HELP tessera_slot_migration_lag_bytes Captured writes not yet sent by live outgoing migrations.\n# TYPE tessera_slot_migration_lag_bytes gauge\ntessera_slot_migration_lag_bytes {live}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_format() {
        let r = parse_ranges("0-10,12,100-200").expect("valid");
        assert_eq!(r, vec![(0, 10), (12, 12), (100, 200)]);
        assert_eq!(format_ranges(&r), "0-10,12,100-200");
        assert!(parse_ranges("10-5").is_err());
        assert!(parse_ranges("16384").is_err());
        assert!(parse_ranges("").is_err());
        let s = SlotSet::from_ranges(&r).expect("valid");
        assert!(s.contains(12) && s.contains(150) && !s.contains(11));
        assert_eq!(s.iter().count(), 11 + 1 + 101);
    }
}
