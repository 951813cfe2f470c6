//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH; and the group record
//! that makes the writes of a transaction (or of a script) one unit in the
//! log.
//!
//! While a transaction or a script runs, [`Ctx::propagate_as`] collects the
//! records its commands would log instead of appending them; at the end
//! [`log_group`] appends them as ONE record,
//!
//! ```text
//! TEXEC part…     part = slot u16, argc u32, argc × { len u32, bytes }
//! ```
//!
//! (or as the plain record when there is only one). A record is written and
//! checksummed whole, so recovery, replicas and slot migrations apply all
//! of a transaction or none of it, and the client's reply waits for that one
//! LSN under the shard's acknowledgement rule like any write.

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;

use hashbrown::HashMap;

use super::flags::*;
use super::{key_positions, key_positions_of, Args, CommandSpec, ConnState, Ctx};
use crate::node::slots::key_slot;
use crate::node::wal::GLOBAL_SLOT;
use crate::node::Node;

/// First argument of a group record.
pub const GROUP: &[u8] = b"TEXEC";

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: FAST | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: multi,
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: exec,
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: FAST | LOADING_OK | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: discard,
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: FAST | NOSCRIPT,
        first_key: 1,
        last_key: -1,
        step: 1,
        handler: watch,
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: FAST | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: unwatch,
    },
    CommandSpec {
        name: "texec",
        arity: -2,
        flags: WRITE | ADMIN | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: texec,
    },
];

/// Commands that run at once inside MULTI instead of being queued (Redis').
const RUN_IN_MULTI: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];
/// Commands refused inside MULTI: they change what the connection is.
const NOT_IN_MULTI: &[&str] = &["treplicate", "texec", "tmigrate"];

/// The commands queued since MULTI.
#[derive(Default)]
pub struct Queue {
    cmds: Vec<Queued>,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    failed: bool,
}

struct Queued {
    idx: usize,
    buf: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

/// A connection's WATCHed keys.
#[derive(Default)]
pub struct WatchState {
    keys: Vec<Vec<u8>>,
    /// Set by any write to one of `keys` (shared with [`Watches`]).
    dirty: Rc<Cell<bool>>,
}

/// A watcher of a key: its connection and its dirty flag.
type Watcher = (u64, Rc<Cell<bool>>);

/// Every connection's WATCHed keys, by key.
#[derive(Default)]
pub struct Watches {
    keys: HashMap<Vec<u8>, Vec<Watcher>>,
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    fn touch(&self, key: &[u8]) {
        if let Some(ws) = self.keys.get(key) {
            for (_, dirty) in ws {
                dirty.set(true);
            }
        }
    }
    fn touch_all(&self) {
        for ws in self.keys.values() {
            for (_, dirty) in ws {
                dirty.set(true);
            }
        }
    }
    fn remove(&mut self, key: &[u8], id: u64) {
        if let Some(ws) = self.keys.get_mut(key) {
            ws.retain(|(c, _)| *c != id);
            if ws.is_empty() {
                self.keys.remove(key);
            }
        }
    }
}

/// Marks the watchers of the keys a logged command changed (a FLUSHALL:
/// every watcher, as Redis 7.0 does), and wakes the first client blocked
/// on each.
pub fn touch_watched(node: &Node, slot: u16, args: &[&[u8]]) {
    let w = node.watches.borrow();
    let mut blocked = node.blocked.borrow_mut();
    if (w.is_empty() && blocked.is_empty()) || args.is_empty() {
        return;
    }
    if slot == GLOBAL_SLOT {
        w.touch_all();
        return;
    }
    let Some(i) = node.commands.lookup(args[0]) else {
        return;
    };
    let spec = node.commands.spec(i);
    for p in key_positions_of(spec, args.len(), |i| args.get(i).copied()) {
        if let Some(k) = args.get(p) {
            w.touch(k);
            // A client blocked on the key tries again (BLPOP …).
            blocked.signal(k);
        }
    }
}

/// Forgets a connection's WATCHed keys (UNWATCH, EXEC, DISCARD, close).
pub fn unwatch_all(node: &Node, conn: &mut ConnState) {
    if !conn.watch.keys.is_empty() {
        let mut w = node.watches.borrow_mut();
        for k in conn.watch.keys.drain(..) {
            w.remove(&k, conn.id);
        }
    }
    conn.watch.dirty.set(false);
}

/// A command received inside MULTI: queued (`+QUEUED`) once it passes the
/// checks Redis makes at queue time (existence, arity, slot, refusals);
/// a refused one makes EXEC fail with EXECABORT.
pub(crate) fn queue(ctx: &mut Ctx<'_>, args: &Args<'_>) -> Option<usize> {
    let spec = ctx
        .node
        .commands
        .lookup(args.get(0))
        .map(|i| ctx.node.commands.spec(i));
    if spec.is_some_and(|s| RUN_IN_MULTI.contains(&s.name)) {
        return match super::prepare(ctx, args, false) {
            Ok(idx) => {
                super::run(ctx, args, idx);
                Some(idx)
            }
            Err(ran) => {
                if let Some(q) = ctx.conn.multi.as_mut() {
                    q.failed = true;
                }
                ran
            }
        };
    }
    let res = super::prepare(ctx, args, true);
    let Some(q) = ctx.conn.multi.as_mut() else {
        return res.ok();
    };
    match res {
        Ok(idx) if NOT_IN_MULTI.contains(&ctx.node.commands.spec(idx).name) => {
            q.failed = true;
            ctx.out
                .error("ERR Command not allowed inside a transaction");
            Some(idx)
        }
        Ok(idx) => {
            let mut buf = Vec::new();
            let mut ranges = Vec::with_capacity(args.len());
            for a in args.iter() {
                let start = buf.len();
                buf.extend_from_slice(a);
                ranges.push(start..buf.len());
            }
            q.cmds.push(Queued { idx, buf, ranges });
            ctx.out.simple("QUEUED");
            Some(idx)
        }
        Err(ran) => {
            q.failed = true;
            ran
        }
    }
}

fn multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    if ctx.conn.multi.is_some() {
        ctx.out.error("ERR MULTI calls can not be nested");
        return;
    }
    ctx.conn.multi = Some(Queue::default());
    ctx.out.ok();
}

fn discard(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    if ctx.conn.multi.take().is_none() {
        ctx.out.error("ERR DISCARD without MULTI");
        return;
    }
    unwatch_all(ctx.node, ctx.conn);
    ctx.out.ok();
}

fn watch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if ctx.conn.multi.is_some() {
        ctx.out.error("ERR WATCH inside MULTI is not allowed");
        return;
    }
    let mut w = ctx.node.watches.borrow_mut();
    for key in args.iter().skip(1) {
        if ctx.conn.watch.keys.iter().any(|k| k == key) {
            continue;
        }
        ctx.conn.watch.keys.push(key.to_vec());
        w.keys
            .entry(key.to_vec())
            .or_default()
            .push((ctx.conn.id, ctx.conn.watch.dirty.clone()));
    }
    ctx.out.ok();
}

fn unwatch(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    unwatch_all(ctx.node, ctx.conn);
    ctx.out.ok();
}

/// The one slot of the queued commands' keys (Ok(None): no keys), or
/// CROSSSLOT when they span slots, as Redis Cluster checks at EXEC.
fn queue_slot(node: &Node, q: &Queue) -> Result<(Option<u16>, Option<usize>), ()> {
    let (mut slot, mut first_write) = (None, None);
    for c in &q.cmds {
        let spec = node.commands.spec(c.idx);
        let args = Args {
            buf: &c.buf,
            ranges: &c.ranges,
        };
        for p in key_positions(spec, &args) {
            let s = key_slot(args.get(p));
            if slot.is_some_and(|prev| prev != s) {
                return Err(());
            }
            slot = Some(s);
        }
        if spec.is_write() && first_write.is_none() {
            first_write = Some(c.idx);
        }
    }
    Ok((slot, first_write))
}

fn exec(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    let Some(q) = ctx.conn.multi.take() else {
        ctx.out.error("ERR EXEC without MULTI");
        return;
    };
    let node = ctx.node;
    if q.failed {
        ctx.out
            .error("EXECABORT Transaction discarded because of previous errors.");
        unwatch_all(node, ctx.conn);
        return;
    }
    if ctx.conn.watch.dirty.get() {
        ctx.out.null_array();
        unwatch_all(node, ctx.conn);
        return;
    }
    let Ok((slot, first_write)) = queue_slot(node, &q) else {
        ctx.out
            .error("CROSSSLOT Keys in request don't hash to the same slot");
        unwatch_all(node, ctx.conn);
        return;
    };
    if let Some(s) = slot {
        if let Some(err) = node.route(s, first_write.is_some(), ctx.conn) {
            ctx.out.error(&err);
            unwatch_all(node, ctx.conn);
            return;
        }
        if first_write.is_some() && node.migrations.write_blocked(s) {
            // Runs again, whole, once the migration's pause ends.
            ctx.effects.blocked = true;
            ctx.conn.multi = Some(q);
            return;
        }
    }
    let refusal = first_write.and_then(|i| node.write_refusal(node.commands.spec(i), ctx.store));
    ctx.log_expired();
    if let Some(err) = refusal {
        ctx.out.error(&format!(
            "EXECABORT Transaction discarded because of: {err}"
        ));
        unwatch_all(node, ctx.conn);
        return;
    }
    unwatch_all(node, ctx.conn);
    ctx.out.array(q.cmds.len());
    let outer = ctx.group.replace(Vec::new());
    for c in &q.cmds {
        let args = Args {
            buf: &c.buf,
            ranges: &c.ranges,
        };
        run_atomic(ctx, &args);
    }
    let parts = std::mem::replace(&mut ctx.group, outer).unwrap_or_default();
    ctx.slot = None;
    log_group(ctx, slot, parts);
}

/// Runs one command of a transaction or a script: its checks, its handler,
/// its statistics; a WAIT answers at once (as Redis does inside MULTI).
pub(crate) fn run_atomic(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if let Ok(idx) = super::prepare(ctx, args, false) {
        super::run(ctx, args, idx);
        let calls = &ctx.node.stats.calls[idx];
        calls.set(calls.get() + 1);
    }
    if ctx.effects.wait.take().is_some() {
        let acked = ctx.node.repl.count_acked(ctx.node.wal.last_lsn());
        ctx.out.int(acked as i64);
    }
}

/// Encodes one record of a group: slot, argc, arguments.
pub fn encode_part(slot: u16, args: &[&[u8]]) -> Vec<u8> {
    let len = 6 + args.iter().map(|a| 4 + a.len()).sum::<usize>();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&slot.to_le_bytes());
    b.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        b.extend_from_slice(&(a.len() as u32).to_le_bytes());
        b.extend_from_slice(a);
    }
    b
}

/// The slot and argument ranges (into `b`) of an encoded part; None when
/// it is malformed.
pub fn decode_part(b: &[u8]) -> Option<(u16, Vec<Range<usize>>)> {
    let u32_at = |at: usize| -> Option<usize> {
        let s = b.get(at..at + 4)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let slot = u16::from_le_bytes([*b.first()?, *b.get(1)?]);
    if !crate::node::wal::is_record_slot(slot) {
        return None;
    }
    let argc = u32_at(2)?;
    let mut at = 6;
    let mut ranges = Vec::with_capacity(argc.min(b.len() / 4));
    for _ in 0..argc {
        let len = u32_at(at)?;
        let end = (at + 4).checked_add(len).filter(|&e| e <= b.len())?;
        ranges.push(at + 4..end);
        at = end;
    }
    (at == b.len() && argc > 0).then_some((slot, ranges))
}

/// Appends what a transaction or a script changed: one group record for
/// the parts of `slot` (and any FLUSHALL), so they are applied all or
/// none. Expiry DELs a keyless command (KEYS, SCAN) found in other slots
/// are not part of the unit: they are logged as they are, before it.
pub(crate) fn log_group(ctx: &mut Ctx<'_>, slot: Option<u16>, parts: Vec<Vec<u8>>) {
    if parts.is_empty() || ctx.replaying {
        return;
    }
    let part_slot = |p: &[u8]| u16::from_le_bytes([p[0], p[1]]);
    let in_unit = |p: &Vec<u8>| {
        let s = part_slot(p);
        s == GLOBAL_SLOT || Some(s) == slot
    };
    // Usually every part is in the unit: no need to split them.
    let (unit, loose): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if parts.iter().all(in_unit) {
        (parts, Vec::new())
    } else {
        parts.into_iter().partition(in_unit)
    };
    for p in loose {
        append_part(ctx, &p, false);
    }
    match unit.len() {
        0 => {}
        1 => append_part(ctx, &unit[0], true),
        _ => {
            let global = unit.iter().any(|p| part_slot(p) == GLOBAL_SLOT);
            let rec_slot = if global {
                GLOBAL_SLOT
            } else {
                slot.unwrap_or(GLOBAL_SLOT)
            };
            let mut args: Vec<&[u8]> = Vec::with_capacity(unit.len() + 1);
            args.push(GROUP);
            args.extend(unit.iter().map(Vec::as_slice));
            let lsn = ctx.node.wal.append(rec_slot, &args);
            ctx.node.migrations.capture(rec_slot, lsn, &args);
            ctx.effects.last_lsn = ctx.effects.last_lsn.max(lsn);
        }
    }
}

/// Appends one encoded part as a plain record (`wait`: the reply depends on
/// it; an expiry DEL is logged without being waited for).
fn append_part(ctx: &mut Ctx<'_>, part: &[u8], wait: bool) {
    let Some((slot, ranges)) = decode_part(part) else {
        return;
    };
    let args: Vec<&[u8]> = ranges.iter().map(|r| &part[r.clone()]).collect();
    let lsn = ctx.node.wal.append(slot, &args);
    ctx.node.migrations.capture(slot, lsn, &args);
    if wait {
        ctx.effects.last_lsn = ctx.effects.last_lsn.max(lsn);
    } else {
        ctx.effects.expired_lsn = ctx.effects.expired_lsn.max(lsn);
    }
}

/// A group record replayed outside the log applier (a slot migration's
/// captured writes): its parts, in order.
fn texec(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if !ctx.replaying {
        ctx.out
            .error("ERR TEXEC is the log's record of a transaction, not a client command");
        return;
    }
    for part in args.iter().skip(1) {
        let Some((slot, ranges)) = decode_part(part) else {
            continue;
        };
        if &part[ranges[0].clone()] == GROUP {
            continue;
        }
        let sub = Args {
            buf: part,
            ranges: &ranges,
        };
        ctx.logged_slot = (slot != GLOBAL_SLOT).then_some(slot);
        super::dispatch(ctx, &sub);
    }
    ctx.out.ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_decodes_to_what_was_encoded_and_a_damaged_one_to_nothing() {
        let args: [&[u8]; 3] = [b"SET", b"key", b""];
        let p = encode_part(42, &args);
        let (slot, ranges) = decode_part(&p).expect("decodes");
        assert_eq!(slot, 42);
        let got: Vec<&[u8]> = ranges.iter().map(|r| &p[r.clone()]).collect();
        assert_eq!(got, args);
        assert!(decode_part(&p[..p.len() - 1]).is_none());
        let mut longer = p.clone();
        longer.push(0);
        assert!(decode_part(&longer).is_none());
        assert!(decode_part(&[1]).is_none());
        assert!(decode_part(&encode_part(1, &[])).is_none());
    }

    #[test]
    fn watches_mark_only_the_connections_watching_a_key() {
        let mut w = Watches::default();
        let (a, b) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
        w.keys
            .entry(b"k".to_vec())
            .or_default()
            .push((1, a.clone()));
        w.keys
            .entry(b"j".to_vec())
            .or_default()
            .push((2, b.clone()));
        w.touch(b"k");
        assert!(a.get() && !b.get());
        w.remove(b"k", 1);
        assert!(!w.keys.contains_key(b"k".as_slice()));
        w.touch_all();
        assert!(b.get());
    }
}
