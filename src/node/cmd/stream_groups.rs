//! Stream consumer groups, the writes: XGROUP, XACK, XCLAIM, XAUTOCLAIM
//! (XREADGROUP is in `stream_read`).
//!
//! None of them is logged as received: delivery times, `$`, `>` and idle
//! filters depend on when and where they run. Each logs one TXSTREAM record
//! of the state it set (see `stream_log`), so replaying the log, a replica
//! and a slot migration set exactly the same state, and one command is one
//! record (atomic like the command).

use super::flags::*;
use super::stream_log::Ops;
use super::streams::{fmt_id, modify, parse_id, ERR_INVALID_ID};
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::groups::{Group, ENTRIES_READ_UNKNOWN};
use crate::node::notify;
use crate::node::resp::ReplyBuf;
use crate::node::store::{Bytes, StreamId, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "xgroup", arity: -2, flags: WRITE, first_key: 2, last_key: 2, step: 1, handler: xgroup },
    CommandSpec { name: "xack", arity: -4, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xack },
    CommandSpec { name: "xclaim", arity: -6, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xclaim },
    CommandSpec { name: "xautoclaim", arity: -6, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xautoclaim },
];

/// A read or claim created a consumer: Redis notifies it as XGROUP
/// CREATECONSUMER does.
pub(super) fn consumer_created(node: &crate::node::Node, replaying: bool, key: &[u8]) {
    if !replaying {
        let flags = node.notify.get();
        notify::publish(node, flags, notify::STREAM, "xgroup-createconsumer", key);
    }
}

pub(super) fn log(ctx: &mut Ctx<'_>, key: &[u8], ops: &Ops) {
    if let Some(args) = ops.command(key) {
        ctx.propagate_as(&args);
    }
}

/// An ID as XGROUP SETID, XPENDING and XAUTOCLAIM parse it: `-`, `+`, an
/// ID, or (with `exclusive_ok`) `(ID`; a missing sequence is `missing_seq`.
pub(super) fn parse_interval(
    b: &[u8],
    missing_seq: u64,
    exclusive_ok: bool,
) -> Result<(StreamId, bool), &'static str> {
    match b {
        b"-" => Ok((StreamId::default(), false)),
        b"+" => Ok((
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX,
            },
            false,
        )),
        _ if exclusive_ok && b.first() == Some(&b'(') => {
            Ok((parse_id(&b[1..], missing_seq).ok_or(ERR_INVALID_ID)?, true))
        }
        _ => Ok((parse_id(b, missing_seq).ok_or(ERR_INVALID_ID)?, false)),
    }
}

pub(super) fn next_id(id: StreamId) -> Option<StreamId> {
    if id.seq < u64::MAX {
        Some(StreamId {
            seq: id.seq + 1,
            ..id
        })
    } else if id.ms < u64::MAX {
        Some(StreamId {
            ms: id.ms + 1,
            seq: 0,
        })
    } else {
        None
    }
}

pub(super) fn nogroup(key: &[u8], group: &[u8]) -> String {
    format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    )
}

/// Writes one entry as `[id, [field, value, …]]` (`[id, nil]` when gone).
pub(super) fn reply_entry(out: &mut ReplyBuf, id: StreamId, fields: Option<&Vec<Bytes>>) {
    out.array(2);
    out.bulk(fmt_id(id).as_bytes());
    match fields {
        Some(f) => {
            out.array(f.len());
            for x in f {
                out.bulk(x);
            }
        }
        None => out.null_array(),
    }
}

// --------------------------------------------------------------- XGROUP

fn subcommand_error(ctx: &mut Ctx<'_>, sub: &[u8]) {
    ctx.out.error(&format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
        String::from_utf8_lossy(sub)
    ));
}

const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Print this help.",
];

fn xgroup(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    let arity: i32 = match &sub[..] {
        b"create" | b"setid" => -5,
        b"destroy" => 4,
        b"createconsumer" | b"delconsumer" => 5,
        b"help" => 2,
        _ => {
            ctx.out.error(&format!(
                "ERR unknown subcommand '{}'. Try XGROUP HELP.",
                String::from_utf8_lossy(args.get(1))
            ));
            return;
        }
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for 'xgroup|{}' command",
            String::from_utf8_lossy(&sub)
        ));
        return;
    }
    if sub == b"help" {
        ctx.out.array(XGROUP_HELP.len());
        for l in XGROUP_HELP {
            ctx.out.simple(l);
        }
        return;
    }
    let (create, setid) = (sub == b"create", sub == b"setid");
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_UNKNOWN;
    let mut i = 5;
    while i < args.len() {
        if create && args.is(i, "mkstream") {
            mkstream = true;
            i += 1;
        } else if (create || setid) && args.is(i, "entriesread") && i + 1 < args.len() {
            entries_read = try_reply!(ctx, args.int(i + 1));
            if entries_read < 0 && entries_read != ENTRIES_READ_UNKNOWN {
                ctx.out
                    .error("ERR value for ENTRIESREAD must be positive or -1");
                return;
            }
            i += 2;
        } else {
            return subcommand_error(ctx, args.get(1));
        }
    }
    let (key, gname) = (args.get(2), args.get(3));
    let slot = ctx.slot();
    let exists = try_reply!(ctx, modify(ctx.store, slot, key)).is_some();
    if !exists && !mkstream {
        ctx.out.error("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.");
        return;
    }
    if exists && !create && sub != b"destroy" {
        let has =
            matches!(modify(ctx.store, slot, key), Ok(Some(s)) if s.groups.contains_key(gname));
        if !has {
            ctx.out.error(&format!(
                "NOGROUP No such consumer group '{}' for key name '{}'",
                String::from_utf8_lossy(gname),
                String::from_utf8_lossy(key)
            ));
            return;
        }
    }
    if create {
        if args.len() > 8 {
            return subcommand_error(ctx, args.get(1));
        }
        xgroup_create(ctx, args, entries_read);
        return;
    }
    if !exists {
        // MKSTREAM is CREATE's only: the other subcommands never get here.
        return subcommand_error(ctx, args.get(1));
    }
    let now = ctx.store.now_ms;
    let mut ops = Ops::default();
    let Ok(Some(s)) = modify(ctx.store, slot, key) else {
        return;
    };
    match &sub[..] {
        b"setid" => {
            if args.len() != 5 && args.len() != 7 {
                return subcommand_error(ctx, args.get(1));
            }
            let id = if args.get(4) == b"$" {
                s.last_id
            } else {
                try_reply!(ctx, parse_interval(args.get(4), 0, false)).0
            };
            if let Some(g) = s.groups.get_mut(gname) {
                g.last_id = id;
                g.entries_read = entries_read;
                ops.group(gname, g);
            }
            ctx.out.ok();
        }
        b"destroy" => {
            let gone = s.groups.remove(gname).is_some();
            if gone {
                ops.destroy(gname);
            }
            ctx.out.int(gone as i64);
        }
        b"createconsumer" => {
            let cname = args.get(4);
            let created = match s.groups.get_mut(gname) {
                Some(g) => {
                    let (c, created) = g.consumer(cname, now);
                    if created {
                        ops.consumer(gname, cname, c.seen_time);
                    }
                    created
                }
                None => false,
            };
            ctx.out.int(created as i64);
        }
        _ => {
            let cname = args.get(4);
            let pending = s
                .groups
                .get_mut(gname)
                .and_then(|g| g.delete_consumer(cname));
            if pending.is_some() {
                ops.del_consumer(gname, cname);
            }
            ctx.out.int(pending.unwrap_or(0) as i64);
        }
    }
    log(ctx, key, &ops);
}

fn xgroup_create(ctx: &mut Ctx<'_>, args: &Args<'_>, entries_read: i64) {
    let (key, gname) = (args.get(2), args.get(3));
    let slot = ctx.slot();
    let last = try_reply!(ctx, modify(ctx.store, slot, key)).map(|s| s.last_id);
    let id = if args.get(4) == b"$" {
        last.unwrap_or_default()
    } else {
        match parse_id(args.get(4), 0) {
            Some(id) => id,
            None => {
                ctx.out.error(ERR_INVALID_ID);
                return;
            }
        }
    };
    let s = match ctx.store.get_or_create(
        slot,
        key,
        |v| matches!(v, Value::Stream(_)),
        || Value::Stream(Default::default()),
    ) {
        Ok(Value::Stream(s)) => s,
        _ => {
            ctx.out.error(WRONGTYPE);
            return;
        }
    };
    if s.groups.contains_key(gname) {
        ctx.out
            .error("BUSYGROUP Consumer Group name already exists");
        return;
    }
    let g = Group::new(id, entries_read);
    let mut ops = Ops::default();
    if last.is_none() {
        ops.meta(s);
    }
    ops.group(gname, &g);
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
    ctx.out.ok();
}

// ----------------------------------------------------------------- XACK

fn xack(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, gname) = (args.get(1), args.get(2));
    let slot = ctx.slot();
    // Redis answers 0 for a missing key or group before it checks the IDs.
    let has_group =
        try_reply!(ctx, modify(ctx.store, slot, key)).is_some_and(|s| s.groups.contains_key(gname));
    if !has_group {
        ctx.out.int(0);
        return;
    }
    let mut ids = Vec::with_capacity(args.len() - 3);
    for a in args.iter().skip(3) {
        ids.push(try_reply!(ctx, parse_id(a, 0).ok_or(ERR_INVALID_ID)));
    }
    let mut ops = Ops::default();
    let mut acked = 0;
    if let Some(g) =
        try_reply!(ctx, modify(ctx.store, slot, key)).and_then(|s| s.groups.get_mut(gname))
    {
        for id in ids {
            if g.ack(id) {
                acked += 1;
                ops.ack(gname, id);
            }
        }
    }
    log(ctx, key, &ops);
    ctx.out.int(acked);
}

// --------------------------------------------------------------- XCLAIM

struct Claim {
    min_idle: u64,
    ids: Vec<StreamId>,
    time: Option<u64>,
    retry: Option<u64>,
    force: bool,
    justid: bool,
    last_id: StreamId,
}

fn parse_claim(args: &Args<'_>, now: u64) -> Result<Claim, String> {
    let min_idle = args
        .int(4)
        .map_err(|_| "ERR Invalid min-idle-time argument for XCLAIM".to_string())?;
    let mut c = Claim {
        min_idle: min_idle.max(0) as u64,
        ids: Vec::new(),
        time: None,
        retry: None,
        force: false,
        justid: false,
        last_id: StreamId::default(),
    };
    let mut j = 5;
    while j < args.len() {
        match parse_id(args.get(j), 0) {
            Some(id) => c.ids.push(id),
            None => break,
        }
        j += 1;
    }
    let mut time: Option<i64> = None;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let int = |j: usize, what: &str| {
            args.int(j)
                .map_err(|_| format!("ERR Invalid {what} option argument for XCLAIM"))
        };
        if args.is(j, "force") {
            c.force = true;
        } else if args.is(j, "justid") {
            c.justid = true;
        } else if args.is(j, "idle") && more > 0 {
            j += 1;
            time = Some((now as i64).saturating_sub(int(j, "IDLE")?));
        } else if args.is(j, "time") && more > 0 {
            j += 1;
            time = Some(int(j, "TIME")?);
        } else if args.is(j, "retrycount") && more > 0 {
            j += 1;
            // Negative: as if not given (the count goes up by one).
            c.retry = u64::try_from(int(j, "RETRYCOUNT")?).ok();
        } else if args.is(j, "lastid") && more > 0 {
            j += 1;
            c.last_id = parse_id(args.get(j), 0).ok_or(ERR_INVALID_ID)?;
        } else {
            return Err(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(args.get(j))
            ));
        }
        j += 1;
    }
    // A bogus time (negative, in the future) is now, as Redis has it.
    c.time = time.map(|t| {
        if t < 0 || t as u64 > now {
            now
        } else {
            t as u64
        }
    });
    Ok(c)
}

fn xclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let has = match try_reply!(ctx, modify(ctx.store, slot, key)) {
        Some(s) => s.groups.contains_key(gname),
        None => false,
    };
    if !has {
        return ctx.out.error(&nogroup(key, gname));
    }
    let c = match parse_claim(args, now) {
        Ok(c) => c,
        Err(e) => return ctx.out.error(&e),
    };
    let Ok(Some(s)) = modify(ctx.store, slot, key) else {
        return;
    };
    let Some(mut g) = s.groups.remove(gname) else {
        return;
    };
    let mut ops = Ops::default();
    if c.last_id > g.last_id {
        g.last_id = c.last_id;
        ops.group(gname, &g);
    }
    let time = c.time.unwrap_or(now);
    let mut claimed = Vec::new();
    for id in c.ids {
        if !s.entries.contains_key(&id) {
            // Gone from the stream: gone from the PEL too.
            if g.ack(id) {
                ops.ack(gname, id);
            }
            continue;
        }
        // A FORCE-created entry starts at one delivery, like Redis' NACK.
        let (base, idle) = match g.pel.get(&id) {
            Some(p) => (p.delivery_count, Some(now.saturating_sub(p.delivery_time))),
            None if c.force => (1, None),
            None => continue,
        };
        if idle.is_some_and(|idle| c.min_idle > 0 && idle < c.min_idle) {
            continue;
        }
        let count = c.retry.unwrap_or(if c.justid { base } else { base + 1 });
        let (consumer, created) = g.consumer(cname, now);
        consumer.seen_time = now;
        if created {
            consumer_created(ctx.node, ctx.replaying, key);
        }
        g.set_pending(id, cname, time, count);
        ops.consumer(gname, cname, now);
        ops.pending(gname, id, &g.pel[&id]);
        claimed.push(id);
    }
    ctx.out.array(claimed.len());
    for id in claimed {
        if c.justid {
            ctx.out.bulk(fmt_id(id).as_bytes());
        } else {
            reply_entry(ctx.out, id, s.entries.get(&id));
        }
    }
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
}

fn xautoclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let min_idle = match args.int(4) {
        Ok(n) => n.max(0) as u64,
        Err(_) => {
            return ctx
                .out
                .error("ERR Invalid min-idle-time argument for XAUTOCLAIM")
        }
    };
    let (mut start, ex) = try_reply!(ctx, parse_interval(args.get(5), 0, true));
    if ex {
        match next_id(start) {
            Some(n) => start = n,
            None => return ctx.out.error("ERR invalid start ID for the interval"),
        }
    }
    let (mut count, mut justid) = (100u64, false);
    let mut j = 6;
    while j < args.len() {
        if args.is(j, "count") && j + 1 < args.len() {
            let max = (i64::MAX / 16) as u64;
            count = match args.int(j + 1) {
                Ok(n) if n >= 1 && n as u64 <= max => n as u64,
                _ => return ctx.out.error("ERR COUNT must be > 0"),
            };
            j += 1;
        } else if args.is(j, "justid") {
            justid = true;
        } else {
            return ctx.out.error(ERR_SYNTAX);
        }
        j += 1;
    }
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let Some(s) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        return ctx.out.error(&nogroup(key, gname));
    };
    let Some(mut g) = s.groups.remove(gname) else {
        return ctx.out.error(&nogroup(key, gname));
    };
    let mut ops = Ops::default();
    let mut attempts = count.saturating_mul(10);
    let (mut claimed, mut deleted) = (Vec::new(), Vec::new());
    let mut last_seen: Option<StreamId> = None;
    let candidates: Vec<StreamId> = g.pel.range(start..).map(|(id, _)| *id).collect();
    for id in candidates {
        if attempts == 0 || count == 0 {
            break;
        }
        attempts -= 1;
        last_seen = Some(id);
        if !s.entries.contains_key(&id) {
            g.ack(id);
            ops.ack(gname, id);
            deleted.push(id);
            count -= 1;
            continue;
        }
        let p = &g.pel[&id];
        if min_idle > 0 && now.saturating_sub(p.delivery_time) < min_idle {
            continue;
        }
        let n = p.delivery_count + u64::from(!justid);
        let (consumer, created) = g.consumer(cname, now);
        consumer.seen_time = now;
        if created {
            consumer_created(ctx.node, ctx.replaying, key);
        }
        g.set_pending(id, cname, now, n);
        ops.consumer(gname, cname, now);
        ops.pending(gname, id, &g.pel[&id]);
        claimed.push(id);
        count -= 1;
    }
    let next = last_seen
        .and_then(next_id)
        .and_then(|from| g.pel.range(from..).next().map(|(id, _)| *id))
        .unwrap_or_default();
    ctx.out.array(3);
    ctx.out.bulk(fmt_id(next).as_bytes());
    ctx.out.array(claimed.len());
    for id in claimed {
        if justid {
            ctx.out.bulk(fmt_id(id).as_bytes());
        } else {
            reply_entry(ctx.out, id, s.entries.get(&id));
        }
    }
    ctx.out.array(deleted.len());
    for id in deleted {
        ctx.out.bulk(fmt_id(id).as_bytes());
    }
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
}
