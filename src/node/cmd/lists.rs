//! List commands: LPUSH, RPUSH, LPUSHX, RPUSHX, LPOP, RPOP, LRANGE, LLEN,
//! LINDEX, LSET, LREM, LTRIM.

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
    let i = try_reply!(ctx, args.int(2));
    let slot = ctx.slot();
    let list = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    match list.and_then(|l| index(i, l.len()).map(|i| &l[i])) {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
}

fn lset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let i = try_reply!(ctx, args.int(2));
    let slot = ctx.slot();
    let Some(list) = try_reply!(ctx, modify(ctx.store, slot, args.get(1))) else {
        ctx.out.error("ERR no such key");
        return;
    };
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
