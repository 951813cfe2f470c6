//! List commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LRANGE, LLEN,
//! LINDEX, LSET, LREM, LTRIM, LPOS, LINSERT, LMOVE, RPOPLPUSH, LMPOP.

use std::collections::VecDeque;

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::store::{Bytes, Store, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "lpush", arity: -3, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: lpush },
    CommandSpec { name: "rpush", arity: -3, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: rpush },
    CommandSpec { name: "lpushx", arity: -3, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: lpushx },
    CommandSpec { name: "rpushx", arity: -3, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: rpushx },
    CommandSpec { name: "lpop", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: lpop },
    CommandSpec { name: "rpop", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: rpop },
    CommandSpec { name: "lrange", arity: 4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: lrange },
    CommandSpec { name: "llen", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: llen },
    CommandSpec { name: "lindex", arity: 3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: lindex },
    CommandSpec { name: "lset", arity: 4, flags: WRITE | DENYOOM, first_key: 1, last_key: 1, step: 1, handler: lset },
    CommandSpec { name: "lrem", arity: 4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: lrem },
    CommandSpec { name: "ltrim", arity: 4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: ltrim },
    CommandSpec { name: "lpos", arity: -3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: lpos },
    CommandSpec { name: "linsert", arity: 5, flags: WRITE | DENYOOM, first_key: 1, last_key: 1, step: 1, handler: linsert },
    CommandSpec { name: "lmove", arity: 5, flags: WRITE | DENYOOM, first_key: 1, last_key: 2, step: 1, handler: lmove },
    CommandSpec { name: "rpoplpush", arity: 3, flags: WRITE | DENYOOM, first_key: 1, last_key: 2, step: 1, handler: rpoplpush },
    CommandSpec { name: "lmpop", arity: -4, flags: WRITE | NUMKEYS, first_key: 0, last_key: 0, step: 0, handler: lmpop },
];

type List = VecDeque<Bytes>;

/// The list at `key`: Ok(None) when absent, Err on another type.
fn read<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<Option<&'s List>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::List(l) => Ok(Some(l)),
            _ => Err(WRONGTYPE),
        },
    }
}

/// The existing list at `key`, mutably.
fn modify<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s mut List>, &'static str> {
    match store.get_mut(slot, key) {
        None => Ok(None),
        Some(e) => match &mut e.value {
            Value::List(l) => Ok(Some(l)),
            _ => Err(WRONGTYPE),
        },
    }
}

fn push(ctx: &mut Ctx<'_>, args: &Args<'_>, left: bool, only_existing: bool) {
    let slot = ctx.slot();
    let key = args.get(1);
    let list = if only_existing {
        match try_reply!(ctx, modify(ctx.store, slot, key)) {
            Some(l) => l,
            None => {
                ctx.out.int(0);
                return;
            }
        }
    } else {
        match ctx.store.get_or_create(
            slot,
            key,
            |v| matches!(v, Value::List(_)),
            || Value::List(Default::default()),
        ) {
            Ok(Value::List(l)) => l,
            _ => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        }
    };
    for v in args.iter().skip(2) {
        if left {
            list.push_front(v.into());
        } else {
            list.push_back(v.into());
        }
    }
    let n = list.len();
    ctx.propagate(args);
    ctx.out.int(n as i64);
}

fn lpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push(ctx, args, true, false);
}
fn rpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push(ctx, args, false, false);
}
fn lpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push(ctx, args, true, true);
}
fn rpushx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    push(ctx, args, false, true);
}

fn pop(ctx: &mut Ctx<'_>, args: &Args<'_>, left: bool) {
    if args.len() > 3 {
        let name = if left { "lpop" } else { "rpop" };
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return;
    }
    let count = if args.len() == 3 {
        match args.int(2) {
            Ok(n) if n >= 0 => Some(n as usize),
            _ => {
                ctx.out.error("ERR value is out of range, must be positive");
                return;
            }
        }
    } else {
        None
    };
    let slot = ctx.slot();
    let key = args.get(1);
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        match count {
            Some(_) => ctx.out.null_array(),
            None => ctx.out.null(),
        }
        return;
    };
    let n = count.unwrap_or(1).min(list.len());
    let mut popped = Vec::with_capacity(n);
    for _ in 0..n {
        let v = if left {
            list.pop_front()
        } else {
            list.pop_back()
        };
        popped.extend(v);
    }
    if n > 0 {
        ctx.store.remove_if_empty(slot, key);
        let name: &[u8] = if left { b"LPOP" } else { b"RPOP" };
        let ns = n.to_string();
        ctx.propagate_as(&[name, key, ns.as_bytes()]);
    }
    match count {
        None => ctx.out.bulk(&popped[0]),
        Some(_) => {
            ctx.out.array(popped.len());
            for v in &popped {
                ctx.out.bulk(v);
            }
        }
    }
}

fn lpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop(ctx, args, true);
}
fn rpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop(ctx, args, false);
}

/// Redis' start/stop normalisation: the inclusive index range, or None when
/// empty.
fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        None
    } else {
        Some((start as usize, stop as usize))
    }
}

fn lrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let start = try_reply!(ctx, args.int(2));
    let stop = try_reply!(ctx, args.int(3));
    let slot = ctx.slot();
    let list = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    match list.and_then(|l| range(start, stop, l.len()).map(|r| (l, r))) {
        None => ctx.out.array(0),
        Some((l, (a, b))) => {
            ctx.out.array(b - a + 1);
            for v in l.range(a..=b) {
                ctx.out.bulk(v);
            }
        }
    }
}

fn llen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let list = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.int(list.map_or(0, |l| l.len()) as i64);
}

fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    // The key is looked up before the index is parsed (Redis' order): a
    // missing key answers nil whatever the index.
    let Some(list) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        ctx.out.null();
        return;
    };
    let i = try_reply!(ctx, args.int(2));
    match index(i, list.len()).map(|i| &list[i]) {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
}

fn lset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    // Key, then type, then index (Redis' order).
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, args.get(1))) else {
        ctx.out.error("ERR no such key");
        return;
    };
    let i = try_reply!(ctx, args.int(2));
    let Some(i) = index(i, list.len()) else {
        ctx.out.error("ERR index out of range");
        return;
    };
    list[i] = args.get(3).into();
    ctx.propagate(args);
    ctx.out.ok();
}

fn lrem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let count = try_reply!(ctx, args.int(2));
    let slot = ctx.slot();
    let key = args.get(1);
    let elem = args.get(3);
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        ctx.out.int(0);
        return;
    };
    let limit = if count == 0 {
        usize::MAX
    } else {
        count.unsigned_abs() as usize
    };
    let mut removed = 0usize;
    if count >= 0 {
        let mut i = 0;
        while i < list.len() && removed < limit {
            if &*list[i] == elem {
                list.remove(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
    } else {
        let mut i = list.len();
        while i > 0 && removed < limit {
            i -= 1;
            if &*list[i] == elem {
                list.remove(i);
                removed += 1;
            }
        }
    }
    if removed > 0 {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}

fn ltrim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let start = try_reply!(ctx, args.int(2));
    let stop = try_reply!(ctx, args.int(3));
    let slot = ctx.slot();
    let key = args.get(1);
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        ctx.out.ok();
        return;
    };
    let before = list.len();
    match range(start, stop, list.len()) {
        None => list.clear(),
        Some((a, b)) => {
            list.truncate(b + 1);
            list.drain(..a);
        }
    }
    if list.len() != before {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.ok();
}

/// LPOS' options: rank (never 0), count (None: a single answer), maxlen
/// (0: the whole list).
struct LposOpts {
    rank: i64,
    count: Option<u64>,
    maxlen: u64,
}

fn parse_lpos(args: &Args<'_>) -> Result<LposOpts, &'static str> {
    let mut o = LposOpts {
        rank: 1,
        count: None,
        maxlen: 0,
    };
    // Redis' getPositiveLong with a message: the message answers a value
    // that is not an integer too.
    let positive = |i: usize, msg: &'static str| match super::parse_i64(args.get(i)) {
        Some(n) if n >= 0 => Ok(n as u64),
        _ => Err(msg),
    };
    let mut i = 3;
    while i < args.len() {
        let more = i + 1 < args.len();
        if args.is(i, "rank") && more {
            o.rank = match args.int(i + 1)? {
                // Redis 7.0 negates the rank in a long: LONG_MIN stays
                // negative and then acts as -1 (7.2 refuses it instead).
                i64::MIN => -1,
                0 => return Err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"),
                n => n,
            };
        } else if args.is(i, "count") && more {
            o.count = Some(positive(i + 1, "ERR COUNT can't be negative")?);
        } else if args.is(i, "maxlen") && more {
            o.maxlen = positive(i + 1, "ERR MAXLEN can't be negative")?;
        } else {
            return Err(super::ERR_SYNTAX);
        }
        i += 2;
    }
    Ok(o)
}

fn lpos(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let o = try_reply!(ctx, parse_lpos(args));
    let slot = ctx.slot();
    let Some(list) = try_reply!(ctx, read(ctx.store, slot, args.get(1))) else {
        match o.count {
            Some(_) => ctx.out.array(0),
            None => ctx.out.null(),
        }
        return;
    };
    let (elem, len) = (args.get(2), list.len());
    let scan = if o.maxlen == 0 {
        len
    } else {
        usize::try_from(o.maxlen).unwrap_or(usize::MAX).min(len)
    };
    // A negative rank scans from the tail; indexes stay head-based.
    let positions: Box<dyn Iterator<Item = usize>> = if o.rank < 0 {
        Box::new((0..len).rev().take(scan))
    } else {
        Box::new((0..len).take(scan))
    };
    let mut skip = o.rank.unsigned_abs() - 1;
    // COUNT 0: every match. The matches are positions in the list, so the
    // vector is bounded by the list, not by the client's count.
    let want = match o.count {
        None => 1,
        Some(0) => u64::MAX,
        Some(n) => n,
    };
    let mut found = Vec::new();
    for i in positions {
        if *list[i] != *elem {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        found.push(i as i64);
        if found.len() as u64 >= want {
            break;
        }
    }
    match o.count {
        None => match found.first() {
            Some(&i) => ctx.out.int(i),
            None => ctx.out.null(),
        },
        Some(_) => {
            ctx.out.array(found.len());
            for i in found {
                ctx.out.int(i);
                if ctx.out.full() {
                    break;
                }
            }
        }
    }
}

fn linsert(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let after = if args.is(2, "after") {
        true
    } else if args.is(2, "before") {
        false
    } else {
        ctx.out.error(super::ERR_SYNTAX);
        return;
    };
    let slot = ctx.slot();
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, args.get(1))) else {
        ctx.out.int(0);
        return;
    };
    let Some(at) = list.iter().position(|v| **v == *args.get(3)) else {
        ctx.out.int(-1);
        return;
    };
    list.insert(at + after as usize, args.get(4).into());
    let n = list.len();
    // Deterministic (the first pivot): logged as received.
    ctx.propagate(args);
    ctx.out.int(n as i64);
}

/// LEFT (true) or RIGHT (false).
pub(super) fn side(args: &Args<'_>, i: usize) -> Result<bool, &'static str> {
    if args.is(i, "left") {
        Ok(true)
    } else if args.is(i, "right") {
        Ok(false)
    } else {
        Err(super::ERR_SYNTAX)
    }
}

/// Pops from `src` and pushes onto `dst` (both in the command's slot);
/// replies with the element moved. The caller logs the command.
fn move_element(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from_left: bool, to_left: bool) -> bool {
    let slot = ctx.slot();
    // As Redis: a missing source answers nil whatever the destination is;
    // otherwise the destination's type is checked before anything is popped.
    let checked =
        read(ctx.store, slot, src)
            .map(|l| l.is_some())
            .and_then(|present| match present {
                true => read(ctx.store, slot, dst).map(|_| true),
                false => Ok(false),
            });
    match checked {
        Ok(true) => {}
        Ok(false) => {
            ctx.out.null();
            return false;
        }
        Err(e) => {
            ctx.out.error(e);
            return false;
        }
    }
    let popped = match modify(ctx.store, slot, src) {
        Ok(Some(l)) if from_left => l.pop_front(),
        Ok(Some(l)) => l.pop_back(),
        _ => None,
    };
    let Some(v) = popped else {
        ctx.out.null();
        return false;
    };
    ctx.store.remove_if_empty(slot, src);
    match ctx.store.get_or_create(
        slot,
        dst,
        |v| matches!(v, Value::List(_)),
        || Value::List(Default::default()),
    ) {
        Ok(Value::List(l)) if to_left => l.push_front(v.clone()),
        Ok(Value::List(l)) => l.push_back(v.clone()),
        // Checked above: dst is absent or a list.
        _ => {}
    }
    ctx.out.bulk(&v);
    true
}

fn lmove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let from_left = try_reply!(ctx, side(args, 3));
    let to_left = try_reply!(ctx, side(args, 4));
    if move_element(ctx, args.get(1), args.get(2), from_left, to_left) {
        ctx.propagate(args);
    }
}

fn rpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if move_element(ctx, args.get(1), args.get(2), false, true) {
        ctx.propagate(args);
    }
}

/// LMPOP's key count (at `at`: 1 for LMPOP, 2 for BLMPOP) and options
/// after the keys: (key count, pop from the left, count).
pub(super) fn parse_lmpop(args: &Args<'_>, at: usize) -> Result<(usize, bool, u64), &'static str> {
    // As Redis' getRangeLong with a message: the message answers a value
    // that is not an integer as well as one out of range.
    let numkeys = match super::parse_i64(args.get(at)) {
        Some(n) if n >= 1 => n as u64,
        _ => return Err("ERR numkeys should be greater than 0"),
    };
    let where_at = numkeys.saturating_add(at as u64 + 1);
    if where_at >= args.len() as u64 {
        return Err(super::ERR_SYNTAX);
    }
    let where_at = where_at as usize;
    let left = side(args, where_at)?;
    let mut count = None;
    let mut i = where_at + 1;
    while i < args.len() {
        if count.is_none() && args.is(i, "count") && i + 1 < args.len() {
            count = match super::parse_i64(args.get(i + 1)) {
                Some(n) if n >= 1 => Some(n as u64),
                _ => return Err("ERR count should be greater than 0"),
            };
            i += 2;
        } else {
            return Err(super::ERR_SYNTAX);
        }
    }
    Ok((numkeys as usize, left, count.unwrap_or(1)))
}

/// LMPOP (the non-blocking form): pops from the first non-empty list.
fn lmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (numkeys, left, count) = try_reply!(ctx, parse_lmpop(args, 1));
    // Valid options mean dispatch found the keys and their common slot.
    let slot = ctx.slot();
    for key in args.iter().skip(2).take(numkeys) {
        let Some(list) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
            continue;
        };
        if list.is_empty() {
            continue;
        }
        let n = usize::try_from(count).unwrap_or(usize::MAX).min(list.len());
        let popped: Vec<Bytes> = if left {
            list.drain(..n).collect()
        } else {
            list.drain(list.len() - n..).rev().collect()
        };
        ctx.store.remove_if_empty(slot, key);
        // Logged as the single-key pop it was.
        let name: &[u8] = if left { b"LPOP" } else { b"RPOP" };
        let ns = n.to_string();
        ctx.propagate_as(&[name, key, ns.as_bytes()]);
        ctx.out.array(2);
        ctx.out.bulk(key);
        ctx.out.array(popped.len());
        for v in &popped {
            ctx.out.bulk(v);
        }
        return;
    }
    ctx.out.null_array();
}
