//! Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM.
//!
//! Trimming is always exact: `~` (approximate) lets Redis keep more entries
//! than asked, and keeping exactly as many is one of the allowed outcomes.

use std::ops::Bound;

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::store::{Bytes, Store, Stream, StreamId, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "xadd", arity: -5, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: xadd },
    CommandSpec { name: "xlen", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: xlen },
    CommandSpec { name: "xrange", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: xrange },
    CommandSpec { name: "xrevrange", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: xrevrange },
    CommandSpec { name: "xdel", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xdel },
    CommandSpec { name: "xtrim", arity: -4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: xtrim },
];

pub(super) const ERR_INVALID_ID: &str =
    "ERR Invalid stream ID specified as stream command argument";

pub(super) fn read<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s Stream>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Stream(s) => Ok(Some(s)),
            _ => Err(WRONGTYPE),
        },
    }
}

pub(super) fn modify<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s mut Stream>, &'static str> {
    match store.get_mut(slot, key) {
        None => Ok(None),
        Some(e) => match &mut e.value {
            Value::Stream(s) => Ok(Some(s)),
            _ => Err(WRONGTYPE),
        },
    }
}

pub fn fmt_id(id: StreamId) -> String {
    format!("{}-{}", id.ms, id.seq)
}

/// `ms-seq` or `ms` (seq = `missing_seq`); None when invalid.
pub(super) fn parse_id(b: &[u8], missing_seq: u64) -> Option<StreamId> {
    let s = std::str::from_utf8(b).ok()?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    match s.split_once('-') {
        Some((ms, seq)) if digits(ms) && digits(seq) => Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        }),
        None if digits(s) => Some(StreamId {
            ms: s.parse().ok()?,
            seq: missing_seq,
        }),
        _ => None,
    }
}

/// A range bound: `-`, `+`, an ID, or `(ID` (exclusive).
fn parse_bound(b: &[u8], start: bool) -> Result<Bound<StreamId>, &'static str> {
    match b {
        b"-" if start => Ok(Bound::Unbounded),
        b"+" if !start => Ok(Bound::Unbounded),
        b"-" => Ok(Bound::Included(StreamId::default())),
        b"+" => Ok(Bound::Included(StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        })),
        _ if b.first() == Some(&b'(') => {
            let id = parse_id(&b[1..], if start { 0 } else { u64::MAX }).ok_or(ERR_INVALID_ID)?;
            Ok(Bound::Excluded(id))
        }
        _ => {
            let id = parse_id(b, if start { 0 } else { u64::MAX }).ok_or(ERR_INVALID_ID)?;
            Ok(Bound::Included(id))
        }
    }
}

enum Trim {
    MaxLen(usize),
    MinId(StreamId),
}

/// Parses `MAXLEN|MINID [=|~] threshold [LIMIT n]` at `i`; returns the
/// strategy and the index after it.
fn parse_trim(args: &Args<'_>, mut i: usize) -> Result<(Trim, usize), &'static str> {
    let maxlen = args.is(i, "maxlen");
    i += 1;
    let mut approx = false;
    if i < args.len() && (args.get(i) == b"~" || args.get(i) == b"=") {
        approx = args.get(i) == b"~";
        i += 1;
    }
    if i >= args.len() {
        return Err(ERR_SYNTAX);
    }
    let trim = if maxlen {
        let n = args.int(i)?;
        if n < 0 {
            return Err("ERR The MAXLEN argument must be >= 0.");
        }
        Trim::MaxLen(n as usize)
    } else {
        Trim::MinId(parse_id(args.get(i), 0).ok_or(ERR_INVALID_ID)?)
    };
    i += 1;
    if i + 1 < args.len() && args.is(i, "limit") {
        if !approx {
            return Err("ERR syntax error, LIMIT cannot be used without the special ~ option");
        }
        let n = args.int(i + 1)?;
        if n < 0 {
            return Err("ERR The LIMIT argument must be >= 0.");
        }
        i += 2;
    }
    Ok((trim, i))
}

fn apply_trim(s: &mut Stream, t: &Trim) -> usize {
    let mut removed = 0;
    match t {
        Trim::MaxLen(n) => {
            while s.entries.len() > *n {
                s.entries.pop_first();
                removed += 1;
            }
        }
        Trim::MinId(min) => {
            while s.entries.first_key_value().is_some_and(|(id, _)| id < min) {
                s.entries.pop_first();
                removed += 1;
            }
        }
    }
    removed
}

fn xadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut nomkstream = false;
    let mut trim = None;
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "nomkstream") {
            nomkstream = true;
            i += 1;
        } else if args.is(i, "maxlen") || args.is(i, "minid") {
            let (t, next) = try_reply!(ctx, parse_trim(args, i));
            trim = Some(t);
            i = next;
        } else {
            break;
        }
    }
    let fields = args.len().saturating_sub(i + 1);
    if i >= args.len() || fields == 0 || fields % 2 != 0 {
        ctx.out
            .error("ERR wrong number of arguments for 'xadd' command");
        return;
    }
    let id_arg = args.get(i);
    let slot = ctx.slot();
    let key = args.get(1);
    let now = ctx.store.now_ms;
    let existing = try_reply!(ctx, read(ctx.store, slot, key)).map(|s| s.last_id);
    if existing.is_none() && nomkstream {
        ctx.out.null();
        return;
    }
    let last = existing.unwrap_or_default();
    const TOP: &str =
        "ERR The ID specified in XADD is equal or smaller than the target stream top item";
    let id = if id_arg == b"*" {
        if now > last.ms {
            StreamId { ms: now, seq: 0 }
        } else if last.seq == u64::MAX {
            StreamId {
                ms: last.ms + 1,
                seq: 0,
            }
        } else {
            StreamId {
                ms: last.ms,
                seq: last.seq + 1,
            }
        }
    } else if let Some(ms) = id_arg.strip_suffix(b"-*") {
        let Some(ms) = parse_id(ms, 0)
            .filter(|_| !ms.contains(&b'-'))
            .map(|i| i.ms)
        else {
            ctx.out.error(ERR_INVALID_ID);
            return;
        };
        if ms < last.ms || (ms == last.ms && last.seq == u64::MAX) {
            ctx.out.error(TOP);
            return;
        }
        let seq = if ms == last.ms { last.seq + 1 } else { 0 };
        let seq = if ms == 0 && seq == 0 { 1 } else { seq };
        StreamId { ms, seq }
    } else {
        let Some(id) = parse_id(id_arg, 0) else {
            ctx.out.error(ERR_INVALID_ID);
            return;
        };
        if id == (StreamId { ms: 0, seq: 0 }) {
            ctx.out
                .error("ERR The ID specified in XADD must be greater than 0-0");
            return;
        }
        if id <= last {
            ctx.out.error(TOP);
            return;
        }
        id
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
    let values: Vec<Bytes> = args.iter().skip(i + 1).map(Bytes::from).collect();
    s.entries.insert(id, values);
    s.last_id = id;
    s.entries_added += 1;
    if let Some(t) = &trim {
        apply_trim(s, t);
    }
    // Logged with the concrete ID and an exact trim.
    let id_text = fmt_id(id);
    let mut log: Vec<&[u8]> = vec![b"XADD", key];
    let threshold = match &trim {
        Some(Trim::MaxLen(n)) => Some((&b"MAXLEN"[..], n.to_string())),
        Some(Trim::MinId(m)) => Some((&b"MINID"[..], fmt_id(*m))),
        None => None,
    };
    if let Some((word, t)) = &threshold {
        log.extend([*word, b"=", t.as_bytes()]);
    }
    log.push(id_text.as_bytes());
    log.extend(args.iter().skip(i + 1));
    ctx.propagate_as(&log);
    ctx.out.bulk(id_text.as_bytes());
}

fn xlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let s = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.int(s.map_or(0, |s| s.entries.len()) as i64);
}

fn range_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, rev: bool) {
    let (a, b) = if rev { (3, 2) } else { (2, 3) };
    let start = try_reply!(ctx, parse_bound(args.get(a), true));
    let end = try_reply!(ctx, parse_bound(args.get(b), false));
    let mut count = usize::MAX;
    match args.len() {
        4 => {}
        6 if args.is(4, "count") => {
            let n = try_reply!(ctx, args.int(5));
            count = n.max(0) as usize;
        }
        _ => {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    }
    let slot = ctx.slot();
    let Some(s) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        ctx.out.array(0);
        return;
    };
    let empty = match (start, end) {
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            x > y
                || (x == y
                    && (matches!(start, Bound::Excluded(_)) || matches!(end, Bound::Excluded(_))))
        }
        _ => false,
    };
    if empty || count == 0 {
        ctx.out.array(0);
        return;
    }
    let r = s.entries.range((start, end));
    let items: Vec<_> = if rev {
        r.rev().take(count).collect()
    } else {
        r.take(count).collect()
    };
    ctx.out.array(items.len());
    for (id, fields) in items {
        ctx.out.array(2);
        ctx.out.bulk(fmt_id(*id).as_bytes());
        ctx.out.array(fields.len());
        for f in fields {
            ctx.out.bulk(f);
        }
    }
}

fn xrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, false);
}
fn xrevrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, true);
}

fn xdel(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut ids = Vec::with_capacity(args.len() - 2);
    for a in args.iter().skip(2) {
        match parse_id(a, 0) {
            Some(id) => ids.push(id),
            None => {
                ctx.out.error(ERR_INVALID_ID);
                return;
            }
        }
    }
    let slot = ctx.slot();
    let removed = match try_reply!(ctx, modify(ctx.store, slot, args.get(1))) {
        None => 0,
        Some(s) => {
            let mut n = 0;
            for id in &ids {
                if s.entries.remove(id).is_some() {
                    n += 1;
                    s.max_deleted_id = s.max_deleted_id.max(*id);
                }
            }
            n
        }
    };
    if removed > 0 {
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}

fn xtrim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if !(args.is(2, "maxlen") || args.is(2, "minid")) {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    let (trim, next) = try_reply!(ctx, parse_trim(args, 2));
    if next != args.len() {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    let slot = ctx.slot();
    let removed = match try_reply!(ctx, modify(ctx.store, slot, args.get(1))) {
        None => 0,
        Some(s) => apply_trim(s, &trim),
    };
    if removed > 0 {
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}
