//! Hash commands: HSET, HSETNX, HGET, HMGET, HMSET, HGETALL, HDEL, HEXISTS,
//! HLEN, HKEYS, HVALS, HINCRBY, HINCRBYFLOAT, HSTRLEN.

use super::flags::*;
use super::{parse_f64, parse_i64, Args, CommandSpec, Ctx};
use crate::node::resp::fmt_double;
use crate::node::store::{Hash, Store, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "hset", arity: -4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: hset },
    CommandSpec { name: "hmset", arity: -4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: hmset },
    CommandSpec { name: "hsetnx", arity: 4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: hsetnx },
    CommandSpec { name: "hget", arity: 3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: hget },
    CommandSpec { name: "hmget", arity: -3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: hmget },
    CommandSpec { name: "hgetall", arity: 2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: hgetall },
    CommandSpec { name: "hdel", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: hdel },
    CommandSpec { name: "hexists", arity: 3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: hexists },
    CommandSpec { name: "hlen", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: hlen },
    CommandSpec { name: "hkeys", arity: 2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: hkeys },
    CommandSpec { name: "hvals", arity: 2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: hvals },
    CommandSpec { name: "hincrby", arity: 4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: hincrby },
    CommandSpec { name: "hincrbyfloat", arity: 4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: hincrbyfloat },
    CommandSpec { name: "hstrlen", arity: 3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: hstrlen },
];

/// The hash at `key`: Ok(None) when absent, Err on another type.
fn read<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<Option<&'s Hash>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Hash(h) => Ok(Some(h)),
            _ => Err(WRONGTYPE),
        },
    }
}

/// The hash at `key`, created empty when absent.
fn write<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<&'s mut Hash, &'static str> {
    match store.get_or_create(
        slot,
        key,
        |v| matches!(v, Value::Hash(_)),
        || Value::Hash(Default::default()),
    ) {
        Ok(Value::Hash(h)) => Ok(h),
        _ => Err(WRONGTYPE),
    }
}

/// Sets the field/value pairs from argument 2 on; the number of new fields.
fn set_pairs(ctx: &mut Ctx<'_>, args: &Args<'_>, name: &str) -> Option<usize> {
    if args.len() % 2 != 0 {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return None;
    }
    let slot = ctx.slot();
    let h = match write(ctx.store, slot, args.get(1)) {
        Ok(h) => h,
        Err(e) => {
            ctx.out.error(e);
            return None;
        }
    };
    let pairs: Vec<(&[u8], &[u8])> = (2..args.len())
        .step_by(2)
        .map(|i| (args.get(i), args.get(i + 1)))
        .collect();
    let added = h.insert_all(&pairs);
    ctx.propagate(args);
    Some(added)
}

fn hset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if let Some(n) = set_pairs(ctx, args, "hset") {
        ctx.out.int(n as i64);
    }
}

fn hmset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if set_pairs(ctx, args, "hmset").is_some() {
        ctx.out.ok();
    }
}

fn hsetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, write(ctx.store, slot, args.get(1)));
    if h.contains_key(args.get(2)) {
        ctx.out.int(0);
        return;
    }
    h.insert(args.get(2), args.get(3));
    ctx.propagate_as(&[b"HSET", args.get(1), args.get(2), args.get(3)]);
    ctx.out.int(1);
}

fn hget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    match try_reply!(ctx, read(ctx.store, slot, args.get(1))).and_then(|h| h.get(args.get(2))) {
        Some(v) => ctx.out.bulk(v),
        None => ctx.out.null(),
    }
}

fn hmget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.array(args.len() - 2);
    for f in args.iter().skip(2) {
        match h.and_then(|h| h.get(f)) {
            Some(v) => ctx.out.bulk(v),
            None => ctx.out.null(),
        }
    }
}

fn hgetall(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    match try_reply!(ctx, read(ctx.store, slot, args.get(1))) {
        None => ctx.out.map(0),
        Some(h) => {
            ctx.out.map(h.len());
            for (f, v) in h.iter() {
                ctx.out.bulk(f);
                ctx.out.bulk(v);
            }
        }
    }
}

fn hkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.array(h.map_or(0, |h| h.len()));
    for f in h.into_iter().flat_map(|h| h.keys()) {
        ctx.out.bulk(f);
    }
}

fn hvals(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.array(h.map_or(0, |h| h.len()));
    for v in h.into_iter().flat_map(|h| h.values()) {
        ctx.out.bulk(v);
    }
}

fn hdel(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let key = args.get(1);
    let removed = match ctx.store.get_mut(slot, key).map(|e| &mut e.value) {
        None => 0,
        Some(Value::Hash(h)) => args.iter().skip(2).filter(|f| h.remove(f)).count(),
        Some(_) => {
            ctx.out.error(WRONGTYPE);
            return;
        }
    };
    if removed > 0 {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}

fn hexists(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let b = h.is_some_and(|h| h.contains_key(args.get(2)));
    ctx.out.bool_int(b);
}

fn hlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.int(h.map_or(0, |h| h.len()) as i64);
}

fn hstrlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let h = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let n = h.and_then(|h| h.get(args.get(2))).map_or(0, |v| v.len());
    ctx.out.int(n as i64);
}

/// The current value of a field, type-checked, without creating the key.
fn current<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
    field: &[u8],
) -> Result<Option<&'s [u8]>, &'static str> {
    Ok(read(store, slot, key)?.and_then(|h| h.get(field)))
}

fn hincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let delta = try_reply!(ctx, args.int(3));
    let slot = ctx.slot();
    let (key, field) = (args.get(1), args.get(2));
    let cur = match try_reply!(ctx, current(ctx.store, slot, key, field)) {
        None => 0,
        Some(v) => match parse_i64(v) {
            Some(n) => n,
            None => {
                ctx.out.error("ERR hash value is not an integer");
                return;
            }
        },
    };
    let Some(next) = cur.checked_add(delta) else {
        ctx.out.error("ERR increment or decrement would overflow");
        return;
    };
    let text = next.to_string();
    let h = try_reply!(ctx, write(ctx.store, slot, key));
    h.insert(field, text.as_bytes());
    ctx.propagate_as(&[b"HSET", key, field, text.as_bytes()]);
    ctx.out.int(next);
}

fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let delta = try_reply!(ctx, args.float(3));
    if !delta.is_finite() {
        ctx.out.error("ERR value is NaN or Infinity");
        return;
    }
    let slot = ctx.slot();
    let (key, field) = (args.get(1), args.get(2));
    // A stored "inf" is a float: adding to it gives the NaN/Infinity error.
    let cur = match try_reply!(ctx, current(ctx.store, slot, key, field)) {
        None => 0.0,
        Some(v) => match parse_f64(v) {
            Some(n) => n,
            None => {
                ctx.out.error("ERR hash value is not a float");
                return;
            }
        },
    };
    let next = cur + delta;
    if !next.is_finite() {
        ctx.out.error("ERR increment would produce NaN or Infinity");
        return;
    }
    let text = fmt_double(next);
    let h = try_reply!(ctx, write(ctx.store, slot, key));
    h.insert(field, text.as_bytes());
    // Logged as the resulting value: replay never re-derives it.
    ctx.propagate_as(&[b"HSET", key, field, text.as_bytes()]);
    ctx.out.bulk(text.as_bytes());
}
