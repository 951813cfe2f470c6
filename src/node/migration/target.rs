//! The target's side: `TMIGRATE`, the link command the source sends over
//! an ordinary (authenticated) client connection, and the staging keyspace.
//!
//! Staged data lives in a [`Store`] of its own per import, so no read path
//! (GET, KEYS, SCAN, DBSIZE, INFO keyspace, COUNTKEYSINSLOT, SLOTDIGEST)
//! can see it: invisibility holds by construction, not by filtering. Every
//! accepted step is logged as a `TMIGRATE …` record (slot `MARKER_SLOT`) so
//! the target's replicas and its own recovery rebuild the same staging, and
//! the commit is a record too: a replica merges when the primary did.
//!
//! | command | effect | reply |
//! |---|---|---|
//! | `TMIGRATE START id source ranges` | new import, empty staging | `+OK` once logged |
//! | `TMIGRATE APPLY id seq payload` | payload = RESP write commands for the slots, applied to staging in `seq` order | `+OK` (a `seq` already applied: answered from the last chunk's record); `-OUTOFORDER` for a `seq` ahead (nothing applied); any other failure aborts the import |
//! | `TMIGRATE SEAL id seq` | everything up to `seq` received (sent again: answered from the first seal's record) | `+OK` once durable by the shard's rule |
//! | `TMIGRATE ABORT id` | drop the staging | `+OK`, or `-COMMITTED` if it already flipped |
//! | `TMIGRATE FINISH id` | is the commit durable? | `+OK` once durable by the shard's rule, `-NOTYET`, `-ABORTED` |

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{format_ranges, parse_ranges, Phase, SlotSet, RECORD};
use crate::node::cmd::flags::*;
use crate::node::cmd::{self, Args, CommandSpec, Ctx, Effects};
use crate::node::resp::{parse_request, Parsed, ReplyBuf};
use crate::node::slots::{key_slot, SlotOwner};
use crate::node::store::{ExpireMode, Store};
use crate::node::wal::MARKER_SLOT;
use crate::node::{now_ms, Node, Role};

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "tmigrate",
    arity: -3,
    flags: ADMIN | NOSCRIPT,
    first_key: 0,
    last_key: 0,
    step: 0,
    handler: tmigrate,
}];

/// An import that saw nothing from its source for this long is aborted by
/// the primary (a source that died, or an import rebuilt by recovery).
pub const ORPHAN_AFTER: Duration = Duration::from_secs(30);

/// An incoming migration (this node's shard is the target).
pub struct Incoming {
    pub id: String,
    pub ranges: Vec<(u16, u16)>,
    pub slots: SlotSet,
    pub source: String,
    pub phase: Phase,
    /// None once committed or aborted.
    staging: Option<Store>,
    next_seq: u64,
    /// LSN of the last chunk's APPLY record: a resent last chunk (its reply
    /// was lost, or refused while the shard's rule could not be met) is
    /// answered from it without being applied twice.
    last_apply_lsn: u64,
    /// LSN of the SEAL record: a seal sent again is answered from it.
    seal_lsn: u64,
    pub bytes_received: u64,
    pub commands: u64,
    pub last_error: Option<String>,
    pub started_ms: u64,
    pub finished_ms: u64,
    last_activity: Instant,
    /// LSN of the commit record (0 until committed).
    pub commit_lsn: u64,
}

impl Incoming {
    pub fn holds_staging(&self) -> bool {
        self.staging.is_some()
    }
    pub fn staged_keys(&self) -> usize {
        self.staging.as_ref().map_or(0, |s| s.len())
    }
}

fn new_import(id: &str, source: &str, ranges: Vec<(u16, u16)>) -> Result<Incoming, String> {
    let slots = SlotSet::from_ranges(&ranges).map_err(|e| e.to_string())?;
    let mut staging = Store::new();
    // The source's log decides expiry; staged keys never expire here.
    staging.mode = ExpireMode::Passive;
    Ok(Incoming {
        id: id.to_string(),
        ranges,
        slots,
        source: source.to_string(),
        phase: Phase::Importing,
        staging: Some(staging),
        next_seq: 0,
        last_apply_lsn: 0,
        seal_lsn: 0,
        bytes_received: 0,
        commands: 0,
        last_error: None,
        started_ms: now_ms(),
        finished_ms: 0,
        last_activity: Instant::now(),
        commit_lsn: 0,
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmigrate(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let node = ctx.node;
    if node.role.get() != Role::Primary {
        return ctx
            .out
            .error("READONLY a slot migration is received by the target shard's primary");
    }
    if !node.cfg.persistence {
        return ctx
            .out
            .error("ERR a slot migration needs persistence on the target");
    }
    if let Some(e) = node.repl.lease_error(node) {
        return ctx.out.error(&e);
    }
    let sub = args.get(1).to_ascii_lowercase();
    let id = text(args.get(2));
    let res = match (sub.as_slice(), args.len()) {
        (b"start", 5) => start(node, &id, &text(args.get(3)), &text(args.get(4))),
        (b"apply", 5) => match std::str::from_utf8(args.get(3))
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(seq) => apply(node, &id, seq, args.get(4)),
            None => Err("ERR invalid sequence number".into()),
        },
        (b"seal", 4) => match std::str::from_utf8(args.get(3))
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(seq) => seal(node, &id, seq),
            None => Err("ERR invalid sequence number".into()),
        },
        (b"abort", 3) => abort_live(node, &id),
        (b"finish", 3) => finish(node, &id),
        _ => Err("ERR unknown TMIGRATE subcommand or wrong number of arguments".into()),
    };
    match res {
        Ok(lsn) => {
            // The reply waits for the log and the shard's rule on `lsn`
            // (server.rs), like a write's.
            ctx.effects.last_lsn = ctx.effects.last_lsn.max(lsn);
            ctx.out.ok();
        }
        Err(e) => ctx.out.error(&e),
    }
}

fn log(node: &Node, args: &[&[u8]]) -> u64 {
    node.wal.append(MARKER_SLOT, args)
}

fn start(node: &Node, id: &str, source: &str, ranges: &str) -> Result<u64, String> {
    let ranges = parse_ranges(ranges).map_err(|e| format!("ERR {e}"))?;
    let imp = new_import(id, source, ranges.clone())?;
    {
        let map = node.slot_map.borrow();
        if let Some(s) = imp.slots.iter().find(|&s| map.owner(s) == SlotOwner::Local) {
            return Err(format!("ERR slot {s} is already served by this shard"));
        }
    }
    let mut incoming = node.migrations.incoming.borrow_mut();
    if incoming.iter().any(|m| m.id == id) {
        return Err(format!("ERR migration {id} already exists"));
    }
    for m in incoming.iter().filter(|m| m.holds_staging()) {
        if let Some(s) = m.slots.overlaps(&imp.slots) {
            return Err(format!(
                "ERR slot {s} is already being imported by {}",
                m.id
            ));
        }
    }
    let r = format_ranges(&ranges);
    let lsn = log(
        node,
        &[
            RECORD,
            b"START",
            id.as_bytes(),
            source.as_bytes(),
            r.as_bytes(),
        ],
    );
    tracing::info!(migration = %id, source = %source, slots = %r, lsn, "slot import started");
    incoming.push(imp);
    super::trim_history(&mut incoming, |m| m.phase.is_final());
    drop(incoming);
    spawn_watchdog(node);
    Ok(lsn)
}

/// Applies a payload of RESP write commands to an import's staging. Every
/// command must be a known write whose keys are all in the import's slots,
/// and must succeed: the first failure fails the whole payload.
fn apply_payload(node: &Node, imp: &mut Incoming, payload: &[u8]) -> Result<u64, String> {
    let Some(staging) = imp.staging.as_mut() else {
        return Err("the import holds no staging".into());
    };
    crate::node::alloc::small_pages(true);
    staging.now_ms = now_ms();
    let mut conn = node.new_conn("slot-migration".into());
    conn.authenticated = true;
    let mut out = ReplyBuf::new();
    let mut effects = Effects::default();
    let mut ranges = Vec::new();
    let mut at = 0;
    let mut n = 0u64;
    while at < payload.len() {
        let used = match parse_request(&payload[at..], &mut ranges) {
            Ok(Parsed::Command(used)) => used,
            Ok(Parsed::Empty(used)) => {
                at += used;
                continue;
            }
            Ok(Parsed::Incomplete) => return Err("a command is cut short".into()),
            Err(e) => return Err(format!("malformed command: {e}")),
        };
        let args = Args {
            buf: &payload[at..],
            ranges: &ranges,
        };
        let Some(i) = node.commands.lookup(args.get(0)) else {
            return Err(format!("unknown command {}", text(args.get(0))));
        };
        let spec = node.commands.spec(i);
        let mut keys = cmd::key_positions(spec, &args).peekable();
        if !spec.is_write() || keys.peek().is_none() {
            return Err(format!("{} is not a keyed write", spec.name));
        }
        if let Some(p) = keys.find(|&p| !imp.slots.contains(key_slot(args.get(p)))) {
            return Err(format!(
                "key {} is outside the migrating slots",
                text(args.get(p))
            ));
        }
        out.buf.clear();
        let mut ctx = Ctx::new(node, staging, &mut out, &mut conn, &mut effects);
        ctx.replaying = true;
        cmd::dispatch(&mut ctx, &args);
        if out.buf.first() == Some(&b'-') {
            let msg = String::from_utf8_lossy(&out.buf[1..])
                .trim_end()
                .to_string();
            return Err(format!("{} failed: {msg}", spec.name));
        }
        n += 1;
        at += used;
    }
    Ok(n)
}

/// The import `id`, if it still takes chunks (not sealed, committed or aborted).
fn importing<'a>(incoming: &'a mut [Incoming], id: &str) -> Result<&'a mut Incoming, String> {
    let Some(imp) = incoming.iter_mut().find(|m| m.id == id) else {
        return Err(format!("ERR no migration {id}"));
    };
    if imp.phase != Phase::Importing {
        return Err(format!("ERR migration {id} is {}", imp.phase.as_str()));
    }
    Ok(imp)
}

fn apply(node: &Node, id: &str, seq: u64, payload: &[u8]) -> Result<u64, String> {
    let mut incoming = node.migrations.incoming.borrow_mut();
    let imp = importing(&mut incoming, id)?;
    if seq < imp.next_seq && imp.last_apply_lsn > 0 {
        // Applied and logged already (a resend after a refused reply): the
        // reply waits for the last chunk's record, which covers this one.
        imp.last_activity = Instant::now();
        return Ok(imp.last_apply_lsn);
    }
    if seq != imp.next_seq {
        // A chunk sent behind one that was refused unapplied (the source
        // keeps two on the wire): nothing is applied, so nothing is
        // missing; the source resends from the one expected.
        return Err(format!(
            "OUTOFORDER migration {id} expects chunk {} (got {seq})",
            imp.next_seq
        ));
    }
    imp.last_activity = Instant::now();
    let max = node.memory.maxmemory.get();
    let res = if max > 0 && crate::node::alloc::allocated() as u64 > max {
        // Staging counts against maxmemory like any write (target OOM).
        Err(format!("OOM used memory exceeds maxmemory ({max} bytes)"))
    } else {
        apply_payload(node, imp, payload)
    };
    match res {
        Ok(n) => {
            imp.next_seq += 1;
            imp.commands += n;
            imp.bytes_received += payload.len() as u64;
            let t = &node.migrations.totals.bytes_in;
            t.set(t.get() + payload.len() as u64);
            let s = seq.to_string();
            // Logged only once applied: a replica or a recovery replays
            // exactly what the primary accepted.
            imp.last_apply_lsn = log(
                node,
                &[RECORD, b"APPLY", id.as_bytes(), s.as_bytes(), payload],
            );
            Ok(imp.last_apply_lsn)
        }
        Err(why) => {
            drop(incoming);
            // Never acknowledge what was not applied: the import fails and
            // the source keeps its data.
            abort(node, id, &why, true);
            Err(format!("ERR migration {id} aborted: {why}"))
        }
    }
}

fn seal(node: &Node, id: &str, seq: u64) -> Result<u64, String> {
    let mut incoming = node.migrations.incoming.borrow_mut();
    // Sealed already at this chunk: the seal was sent again (its reply was
    // lost, or refused while the shard could not meet its rule). The reply
    // waits for the first seal's record.
    if let Some(imp) = incoming
        .iter_mut()
        .find(|m| m.id == id && m.phase == Phase::Sealed && m.next_seq == seq && m.seal_lsn > 0)
    {
        imp.last_activity = Instant::now();
        return Ok(imp.seal_lsn);
    }
    let imp = importing(&mut incoming, id)?;
    if seq != imp.next_seq {
        return Err(format!(
            "ERR migration {id}: sealed at chunk {seq} but {} received",
            imp.next_seq
        ));
    }
    imp.phase = Phase::Sealed;
    imp.last_activity = Instant::now();
    let lsn = log(node, &[RECORD, b"SEAL", id.as_bytes()]);
    imp.seal_lsn = lsn;
    tracing::info!(migration = %id, lsn, staged_keys = imp.staged_keys(), "slot import sealed; waiting for the topology");
    Ok(lsn)
}

fn abort_live(node: &Node, id: &str) -> Result<u64, String> {
    let phase = node
        .migrations
        .incoming
        .borrow()
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.phase);
    match phase {
        Some(Phase::Committed) => Err(format!(
            "COMMITTED migration {id} already flipped to this shard"
        )),
        Some(Phase::Importing | Phase::Sealed) => {
            Ok(abort(node, id, "cancelled by the source", true))
        }
        // Unknown (never started, or forgotten) or already aborted.
        _ => Ok(node.wal.last_lsn()),
    }
}

/// Back to huge pages once no import stages data (see
/// [`crate::node::alloc::small_pages`]).
fn pages_after_staging(incoming: &[Incoming]) {
    if !incoming.iter().any(|m| m.holds_staging()) {
        crate::node::alloc::small_pages(false);
    }
}

/// Drops an import's staging; on the primary (`log`) also logs it.
pub fn abort(node: &Node, id: &str, why: &str, log_it: bool) -> u64 {
    let mut incoming = node.migrations.incoming.borrow_mut();
    let Some(imp) = incoming.iter_mut().find(|m| m.id == id) else {
        return node.wal.last_lsn();
    };
    if imp.phase.is_final() {
        return node.wal.last_lsn();
    }
    imp.phase = Phase::Aborted;
    imp.finished_ms = now_ms();
    imp.last_error = Some(why.to_string());
    let dropped = imp.staging.take().map_or(0, |s| s.len());
    pages_after_staging(&incoming);
    let t = &node.migrations.totals.aborted;
    t.set(t.get() + 1);
    tracing::warn!(migration = %id, reason = %why, dropped_keys = dropped, "slot import aborted; staging dropped");
    if log_it {
        log(node, &[RECORD, b"ABORT", id.as_bytes(), why.as_bytes()])
    } else {
        node.wal.last_lsn()
    }
}

fn finish(node: &Node, id: &str) -> Result<u64, String> {
    let incoming = node.migrations.incoming.borrow();
    match incoming.iter().find(|m| m.id == id) {
        Some(m) if m.phase == Phase::Committed => Ok(m.commit_lsn),
        Some(m) if m.phase == Phase::Sealed => Err(format!(
            "NOTYET migration {id} is sealed; this shard does not own its slots yet"
        )),
        Some(m) => Err(format!("ABORTED migration {id} is {}", m.phase.as_str())),
        None => Err(format!("ABORTED no migration {id}")),
    }
}

/// Moves an import's staged slots into the keyspace.
fn merge(node: &Node, imp: &mut Incoming) -> usize {
    let Some(mut staging) = imp.staging.take() else {
        return 0;
    };
    let mut store = node.store.borrow_mut();
    let mut keys = 0;
    for slot in imp.slots.iter() {
        let data = staging.take_slot(slot);
        keys += data.len();
        store.put_slot(slot, data);
    }
    imp.phase = Phase::Committed;
    imp.finished_ms = now_ms();
    let t = &node.migrations.totals.committed;
    t.set(t.get() + 1);
    keys
}

/// A primary commits every sealed import whose slots the topology now
/// gives to its shard (all of them: a partial flip commits nothing).
pub fn commit_owned(node: &Node) {
    if node.role.get() != Role::Primary {
        return;
    }
    let map = node.slot_map.borrow().clone();
    let mut incoming = node.migrations.incoming.borrow_mut();
    for imp in incoming.iter_mut().filter(|m| m.phase == Phase::Sealed) {
        let owned = imp
            .slots
            .iter()
            .filter(|&s| map.owner(s) == SlotOwner::Local)
            .count();
        if owned == 0 {
            continue;
        }
        if owned != imp.slots.iter().count() {
            tracing::error!(migration = %imp.id, owned, "the topology gives this shard only part of a sealed import's slots; not committing");
            continue;
        }
        let keys = merge(node, imp);
        imp.commit_lsn = log(node, &[RECORD, b"COMMIT", imp.id.as_bytes()]);
        tracing::info!(migration = %imp.id, keys, lsn = imp.commit_lsn, epoch = map.topology.epoch, "slot import committed: the slots are this shard's");
    }
    pages_after_staging(&incoming);
}

/// Applies a logged `TMIGRATE` record (a replica's stream, or recovery).
pub fn apply_record(node: &Node, lsn: u64, args: &[&[u8]]) {
    let sub = args.get(1).copied().unwrap_or_default();
    let id = text(args.get(2).copied().unwrap_or_default());
    let res: Result<(), String> = match sub {
        b"START" if args.len() == 5 => parse_ranges(&text(args[4]))
            .map_err(|e| e.to_string())
            .and_then(|r| new_import(&id, &text(args[3]), r))
            .map(|imp| {
                let mut incoming = node.migrations.incoming.borrow_mut();
                incoming.retain(|m| m.id != id);
                incoming.push(imp);
                super::trim_history(&mut incoming, |m| m.phase.is_final());
                drop(incoming);
                spawn_watchdog(node);
            }),
        b"APPLY" if args.len() == 5 => {
            let mut incoming = node.migrations.incoming.borrow_mut();
            match incoming
                .iter_mut()
                .find(|m| m.id == id && m.holds_staging())
            {
                Some(imp) => {
                    imp.last_activity = Instant::now();
                    imp.bytes_received += args[4].len() as u64;
                    imp.next_seq += 1;
                    imp.last_apply_lsn = lsn;
                    apply_payload(node, imp, args[4]).map(|_| ())
                }
                None => Err("no such import (its start is not in this log)".into()),
            }
        }
        b"SEAL" => {
            let mut incoming = node.migrations.incoming.borrow_mut();
            if let Some(imp) = incoming
                .iter_mut()
                .find(|m| m.id == id && m.holds_staging())
            {
                imp.phase = Phase::Sealed;
                imp.seal_lsn = lsn;
                imp.last_activity = Instant::now();
            }
            Ok(())
        }
        b"ABORT" => {
            abort(node, &id, "aborted by the primary", false);
            Ok(())
        }
        // The source's write pause (see source.rs).
        b"PAUSE" => super::source::recovered_pause(node, args),
        b"RESUME" => {
            super::source::end_recovered(node, &id, Phase::Aborted);
            Ok(())
        }
        // The source primary freed slots that moved away.
        b"RELEASE" if args.len() == 4 => parse_ranges(&text(args[3]))
            .map_err(|e| e.to_string())
            .map(|ranges| {
                super::source::end_recovered(node, &id, Phase::Done);
                let mut store = node.store.borrow_mut();
                for (a, b) in ranges {
                    for s in a..=b {
                        drop(store.take_slot(s));
                    }
                }
            }),
        b"COMMIT" => {
            let mut incoming = node.migrations.incoming.borrow_mut();
            match incoming
                .iter_mut()
                .find(|m| m.id == id && m.holds_staging())
            {
                Some(imp) => {
                    let keys = merge(node, imp);
                    imp.commit_lsn = lsn;
                    tracing::info!(migration = %id, keys, lsn, "slot import committed (from the log)");
                    pages_after_staging(&incoming);
                    Ok(())
                }
                None => Err("commit of an import this log does not hold".into()),
            }
        }
        _ => Err("unknown record".into()),
    };
    if let Err(e) = res {
        tracing::error!(migration = %id, lsn, error = %e, "a slot migration record could not be applied");
    }
}

/// One task per node aborts imports whose source went silent (on the
/// primary; a replica follows the primary's records).
fn spawn_watchdog(node: &Node) {
    if node.migrations.watchdog.replace(true) {
        return;
    }
    let Some(node) = node.migrations.node() else {
        node.migrations.watchdog.set(false);
        return;
    };
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut live = false;
            let mut orphans = Vec::new();
            for m in node.migrations.incoming.borrow().iter() {
                if m.phase == Phase::Importing {
                    live = true;
                    if m.last_activity.elapsed() > ORPHAN_AFTER {
                        orphans.push(m.id.clone());
                    }
                }
            }
            if node.role.get() == Role::Primary && node.ready.get() {
                for id in orphans {
                    abort(&node, &id, "nothing from the source for 30 s", true);
                }
            }
            if !live {
                node.migrations.watchdog.set(false);
                return;
            }
        }
    });
}

/// Cancel from the operator on the target: drops the staging unless the
/// import already committed.
pub fn cancel(node: &Rc<Node>, id: &str) -> Result<(), String> {
    let phase = node
        .migrations
        .incoming
        .borrow()
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.phase);
    match phase {
        None => Err(format!("no migration {id}")),
        Some(Phase::Committed) => Err(format!("migration {id} already committed")),
        Some(_) => {
            if node.role.get() == Role::Primary {
                abort(node, id, "cancelled by the operator", true);
            } else {
                return Err("cancel an import on its shard's primary".into());
            }
            Ok(())
        }
    }
}

/// Drops every import's staging (a replica's full resync: the primary's
/// snapshot holds whatever its imports committed).
pub fn discard_all(node: &Node) {
    for m in node.migrations.incoming.borrow_mut().iter_mut() {
        if !m.phase.is_final() {
            m.phase = Phase::Aborted;
            m.last_error = Some("dropped by a full resync".into());
        }
        m.staging = None;
    }
    crate::node::alloc::small_pages(false);
}
