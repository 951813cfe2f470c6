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
            // Redis turns an exclusive bound into the next (previous) ID,
            // which the last (first) possible ID does not have.
            let max = StreamId {
                ms: u64::MAX,
                seq: u64::MAX,
            };
            match (start, id) {
                (true, id) if id == max => Err("ERR invalid start ID for the interval"),
                (false, id) if id == StreamId::default() => {
                    Err("ERR invalid end ID for the interval")
                }
                _ => Ok(Bound::Excluded(id)),
            }
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

/// XADD's and XTRIM's options, parsed as Redis 7 parses them
/// (`streamParseAddOrTrimArgsOrReply`): NOMKSTREAM (XADD), MAXLEN|MINID
/// [=|~] threshold and LIMIT n, in any order, then (XADD) the ID.
struct TrimArgs {
    trim: Option<Trim>,
    approx: bool,
    /// LIMIT's value; 0 or absent: no limit.
    limit: Option<u64>,
    nomkstream: bool,
    /// XADD: the ID and its index (absent: the arguments ran out).
    id: Option<(AddId, usize)>,
}

/// Redis' default LIMIT for `~` trimming: 100 × stream-node-max-entries.
const DEFAULT_APPROX_LIMIT: u64 = 100 * 100;

fn parse_add_or_trim(args: &Args<'_>, xadd: bool) -> Result<TrimArgs, &'static str> {
    let mut t = TrimArgs {
        trim: None,
        approx: false,
        limit: None,
        nomkstream: false,
        id: None,
    };
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let maxlen = args.is(i, "maxlen");
        if (maxlen || args.is(i, "minid")) && more > 0 {
            if t.trim.is_some() {
                return Err(
                    "ERR syntax error, MAXLEN and MINID options at the same time are not compatible",
                );
            }
            t.approx = false;
            let next = args.get(i + 1);
            if more >= 2 && (next == b"~" || next == b"=") {
                t.approx = next == b"~";
                i += 1;
            }
            t.trim = Some(if maxlen {
                let n = args.int(i + 1)?;
                if n < 0 {
                    return Err("ERR The MAXLEN argument must be >= 0.");
                }
                Trim::MaxLen(n as usize)
            } else {
                Trim::MinId(parse_id(args.get(i + 1), 0).ok_or(ERR_INVALID_ID)?)
            });
            i += 2;
        } else if args.is(i, "limit") && more > 0 {
            let n = args.int(i + 1)?;
            if n < 0 {
                return Err("ERR The LIMIT argument must be >= 0.");
            }
            t.limit = Some(n as u64);
            i += 2;
        } else if xadd && args.is(i, "nomkstream") {
            t.nomkstream = true;
            i += 1;
        } else if xadd {
            t.id = Some((parse_add_id(args.get(i))?, i));
            break;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    if t.limit.is_some_and(|n| n > 0) && t.trim.is_none() {
        return Err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        );
    }
    if !xadd && t.trim.is_none() {
        return Err("ERR syntax error, XTRIM must be called with a trimming strategy");
    }
    if t.limit.is_some() && !t.approx {
        return Err("ERR syntax error, LIMIT cannot be used without the special ~ option");
    }
    Ok(t)
}

/// The most entries one trim may remove: `~` trims are capped by LIMIT
/// (Redis' default when absent), so one command's work stays bounded; an
/// exact trim is not.
fn trim_cap(t: &TrimArgs) -> usize {
    let cap = match (t.approx, t.limit) {
        (false, _) | (true, Some(0)) => u64::MAX,
        (true, Some(n)) => n,
        (true, None) => DEFAULT_APPROX_LIMIT,
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

fn apply_trim(s: &mut Stream, t: &Trim, cap: usize) -> usize {
    let mut removed = 0;
    while removed < cap {
        let Some((first, _)) = s.entries.first_key_value() else {
            break;
        };
        let trims = match t {
            Trim::MaxLen(n) => s.entries.len() > *n,
            Trim::MinId(min) => first < min,
        };
        if !trims {
            break;
        }
        s.entries.pop_first();
        removed += 1;
    }
    removed
}

/// The ID XADD was given: `*`, `<ms>-*` or a whole ID.
#[derive(Clone, Copy, PartialEq)]
enum AddId {
    Auto,
    Ms(u64),
    Exact(StreamId),
}

fn parse_add_id(arg: &[u8]) -> Result<AddId, &'static str> {
    if arg == b"*" {
        return Ok(AddId::Auto);
    }
    if let Some(ms) = arg.strip_suffix(b"-*") {
        return parse_id(ms, 0)
            .filter(|_| !ms.contains(&b'-'))
            .map(|i| AddId::Ms(i.ms))
            .ok_or(ERR_INVALID_ID);
    }
    parse_id(arg, 0).map(AddId::Exact).ok_or(ERR_INVALID_ID)
}

fn xadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis' order: each option's and the ID's own errors as parsed, the
    // LIMIT rules, the arity, then a 0-0 ID, then the key.
    let t = try_reply!(ctx, parse_add_or_trim(args, true));
    let Some((add_id, i)) = t.id.filter(|&(_, i)| {
        let fields = args.len().saturating_sub(i + 1);
        fields > 0 && fields % 2 == 0
    }) else {
        ctx.out
            .error("ERR wrong number of arguments for 'xadd' command");
        return;
    };
    if add_id == AddId::Exact(StreamId::default()) {
        ctx.out
            .error("ERR The ID specified in XADD must be greater than 0-0");
        return;
    }
    let nomkstream = t.nomkstream;
    let slot = ctx.slot();
    let key = args.get(1);
    let now = ctx.store.now_ms;
    let existing = try_reply!(ctx, read(ctx.store, slot, key)).map(|s| s.last_id);
    if existing.is_none() && nomkstream {
        ctx.out.null();
        return;
    }
    let last = existing.unwrap_or_default();
    if last.ms == u64::MAX && last.seq == u64::MAX {
        ctx.out
            .error("ERR The stream has exhausted the last possible ID, unable to add more items");
        return;
    }
    const TOP: &str =
        "ERR The ID specified in XADD is equal or smaller than the target stream top item";
    let id = match add_id {
        AddId::Auto if now > last.ms => StreamId { ms: now, seq: 0 },
        AddId::Auto if last.seq == u64::MAX => StreamId {
            ms: last.ms + 1,
            seq: 0,
        },
        AddId::Auto => StreamId {
            ms: last.ms,
            seq: last.seq + 1,
        },
        AddId::Ms(ms) => {
            if ms < last.ms || (ms == last.ms && last.seq == u64::MAX) {
                ctx.out.error(TOP);
                return;
            }
            let seq = if ms == last.ms { last.seq + 1 } else { 0 };
            let seq = if ms == 0 && seq == 0 { 1 } else { seq };
            StreamId { ms, seq }
        }
        AddId::Exact(id) => {
            if id <= last {
                ctx.out.error(TOP);
                return;
            }
            id
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
    let values: Vec<Bytes> = args.iter().skip(i + 1).map(Bytes::from).collect();
    s.entries.insert(id, values);
    s.last_id = id;
    s.entries_added += 1;
    if let Some(trim) = &t.trim {
        apply_trim(s, trim, trim_cap(&t));
    }
    // Logged with the concrete ID and, after a trim, the length it left:
    // an exact trim that does on a replica what this one did.
    let id_text = fmt_id(id);
    let mut log: Vec<&[u8]> = vec![b"XADD", key];
    let left = s.entries.len().to_string();
    if t.trim.is_some() {
        log.extend([&b"MAXLEN"[..], b"=", left.as_bytes()]);
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
    let mut i = 4;
    while i < args.len() {
        // As Redis: COUNT may repeat (the last wins).
        if !(args.is(i, "count") && i + 1 < args.len()) {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        count = try_reply!(ctx, args.int(i + 1)).max(0) as usize;
        i += 2;
    }
    let slot = ctx.slot();
    let Some(s) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        ctx.out.array(0);
        return;
    };
    if count == 0 {
        // Redis answers COUNT 0 (or less) on a stream with a null array.
        ctx.out.null_array();
        return;
    }
    let empty = match (start, end) {
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            x > y
                || (x == y
                    && (matches!(start, Bound::Excluded(_)) || matches!(end, Bound::Excluded(_))))
        }
        _ => false,
    };
    if empty {
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
    // Redis looks the key up before it checks the IDs: a missing key
    // answers 0 and another type WRONGTYPE, whatever the IDs.
    let slot = ctx.slot();
    if try_reply!(ctx, read(ctx.store, slot, args.get(1))).is_none() {
        ctx.out.int(0);
        return;
    }
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
    let t = try_reply!(ctx, parse_add_or_trim(args, false));
    let Some(trim) = &t.trim else {
        return ctx.out.error(ERR_SYNTAX);
    };
    let slot = ctx.slot();
    let key = args.get(1);
    let (removed, left) = match try_reply!(ctx, modify(ctx.store, slot, key)) {
        None => (0, 0),
        Some(s) => (apply_trim(s, trim, trim_cap(&t)), s.entries.len()),
    };
    if removed > 0 {
        // The length it left: what a capped or `~` trim did, exactly.
        let left = left.to_string();
        ctx.propagate_as(&[b"XTRIM", key, b"MAXLEN", b"=", left.as_bytes()]);
    }
    ctx.out.int(removed as i64);
}
