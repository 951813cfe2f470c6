//! Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SPOP,
//! SRANDMEMBER, SMOVE, SINTER, SUNION, SDIFF and their STORE forms,
//! SINTERCARD.

use hashbrown::HashSet;
use rand::seq::{IteratorRandom, SliceRandom};

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::store::{Bytes, Store, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "sadd", arity: -3, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: sadd },
    CommandSpec { name: "srem", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: srem },
    CommandSpec { name: "smembers", arity: 2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: smembers },
    CommandSpec { name: "sismember", arity: 3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: sismember },
    CommandSpec { name: "smismember", arity: -3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: smismember },
    CommandSpec { name: "scard", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: scard },
    CommandSpec { name: "spop", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: spop },
    CommandSpec { name: "srandmember", arity: -2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: srandmember },
    CommandSpec { name: "smove", arity: 4, flags: WRITE | FAST, first_key: 1, last_key: 2, step: 1, handler: smove },
    CommandSpec { name: "sinter", arity: -2, flags: READONLY, first_key: 1, last_key: -1, step: 1, handler: sinter },
    CommandSpec { name: "sunion", arity: -2, flags: READONLY, first_key: 1, last_key: -1, step: 1, handler: sunion },
    CommandSpec { name: "sdiff", arity: -2, flags: READONLY, first_key: 1, last_key: -1, step: 1, handler: sdiff },
    CommandSpec { name: "sinterstore", arity: -3, flags: WRITE | DENYOOM, first_key: 1, last_key: -1, step: 1, handler: sinterstore },
    CommandSpec { name: "sunionstore", arity: -3, flags: WRITE | DENYOOM, first_key: 1, last_key: -1, step: 1, handler: sunionstore },
    CommandSpec { name: "sintercard", arity: -3, flags: READONLY | KEYCOUNT, first_key: 0, last_key: 0, step: 0, handler: sintercard },
    CommandSpec { name: "sdiffstore", arity: -3, flags: WRITE | DENYOOM, first_key: 1, last_key: -1, step: 1, handler: sdiffstore },
];

type Set = HashSet<Bytes>;

/// The set at `key`: Ok(None) when absent, Err on another type.
fn read<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<Option<&'s Set>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Set(s) => Ok(Some(s)),
            _ => Err(WRONGTYPE),
        },
    }
}

fn modify<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s mut Set>, &'static str> {
    match store.get_mut(slot, key) {
        None => Ok(None),
        Some(e) => match &mut e.value {
            Value::Set(s) => Ok(Some(s)),
            _ => Err(WRONGTYPE),
        },
    }
}

fn write<'s>(store: &'s mut Store, slot: u16, key: &[u8]) -> Result<&'s mut Set, &'static str> {
    match store.get_or_create(
        slot,
        key,
        |v| matches!(v, Value::Set(_)),
        || Value::Set(Default::default()),
    ) {
        Ok(Value::Set(s)) => Ok(s),
        _ => Err(WRONGTYPE),
    }
}

fn sadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let set = try_reply!(ctx, write(ctx.store, slot, args.get(1)));
    let added = args
        .iter()
        .skip(2)
        .filter(|m| set.insert(Bytes::from(*m)))
        .count();
    if added > 0 {
        ctx.propagate(args);
    }
    ctx.out.int(added as i64);
}

fn srem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let key = args.get(1);
    let removed = match try_reply!(ctx, modify(ctx.store, slot, key)) {
        None => 0,
        Some(set) => args.iter().skip(2).filter(|m| set.remove(*m)).count(),
    };
    if removed > 0 {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}

fn reply_set<'a>(ctx: &mut Ctx<'_>, members: impl ExactSizeIterator<Item = &'a Bytes>) {
    ctx.out.set(members.len());
    for m in members {
        ctx.out.bulk(m);
    }
}

fn smembers(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    match try_reply!(ctx, read(ctx.store, slot, args.get(1))) {
        None => ctx.out.set(0),
        Some(set) => {
            ctx.out.set(set.len());
            for m in set.iter() {
                ctx.out.bulk(m);
            }
        }
    }
}

fn sismember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let set = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let b = set.is_some_and(|s| s.contains(args.get(2)));
    ctx.out.bool_int(b);
}

fn smismember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let set = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.array(args.len() - 2);
    for m in args.iter().skip(2) {
        ctx.out.bool_int(set.is_some_and(|s| s.contains(m)));
    }
}

fn scard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let set = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.int(set.map_or(0, |s| s.len()) as i64);
}

fn spop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        ctx.out.error(super::ERR_SYNTAX);
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
    let Some(set) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        match count {
            Some(_) => ctx.out.set(0),
            None => ctx.out.null(),
        }
        return;
    };
    let n = count.unwrap_or(1);
    let popped: Vec<Bytes> = if n >= set.len() {
        set.drain().collect()
    } else {
        let chosen: Vec<Bytes> = set
            .iter()
            .choose_multiple(&mut rand::thread_rng(), n)
            .into_iter()
            .cloned()
            .collect();
        for m in &chosen {
            set.remove(m);
        }
        chosen
    };
    if !popped.is_empty() {
        let emptied = set.is_empty();
        // Random choices are logged explicitly.
        if emptied {
            ctx.store.remove(slot, key);
            ctx.propagate_as(&[b"DEL", key]);
        } else {
            let mut log: Vec<&[u8]> = vec![b"SREM", key];
            log.extend(popped.iter().map(|m| &**m));
            ctx.propagate_as(&log);
        }
    }
    match count {
        None => ctx.out.bulk(&popped[0]),
        Some(_) => reply_set(ctx, popped.iter()),
    }
}

/// SRANDMEMBER's count range (Redis: -LONG_MAX..=LONG_MAX, so that the
/// count's magnitude is representable).
const ERR_COUNT_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

fn srandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() > 3 {
        ctx.out.error(super::ERR_SYNTAX);
        return;
    }
    let count = if args.len() == 3 {
        match try_reply!(ctx, args.int(2)) {
            i64::MIN => {
                ctx.out.error(ERR_COUNT_RANGE);
                return;
            }
            n => Some(n),
        }
    } else {
        None
    };
    let slot = ctx.slot();
    let set = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let mut rng = rand::thread_rng();
    match (set, count) {
        (None, None) => ctx.out.null(),
        (None, Some(_)) => ctx.out.array(0),
        (Some(s), None) => match s.iter().choose(&mut rng) {
            Some(m) => ctx.out.bulk(m),
            None => ctx.out.null(),
        },
        (Some(s), Some(n)) if n >= 0 => {
            // Never more than the set holds: the sample is sized by it.
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(s.len());
            let chosen = s.iter().choose_multiple(&mut rng, n);
            ctx.out.array(chosen.len());
            for m in chosen {
                ctx.out.bulk(m);
            }
        }
        (Some(s), Some(n)) => {
            // Repeats allowed: the reply is as long as asked, so it is the
            // reply limit that ends a huge count (the loop stops there).
            let all: Vec<&Bytes> = s.iter().collect();
            let n = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
            ctx.out.array(n);
            for _ in 0..n {
                let Some(m) = all.choose(&mut rng) else { break };
                ctx.out.bulk(m);
                if ctx.out.full() {
                    break;
                }
            }
        }
    }
}

fn smove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let (src, dst, member) = (args.get(1), args.get(2), args.get(3));
    // A missing source answers 0 before the destination's type is checked
    // (Redis' order).
    let in_src = match try_reply!(ctx, read(ctx.store, slot, src)) {
        None => {
            ctx.out.int(0);
            return;
        }
        Some(s) => s.contains(member),
    };
    try_reply!(ctx, read(ctx.store, slot, dst));
    if !in_src {
        ctx.out.int(0);
        return;
    }
    if src != dst {
        if let Ok(Some(s)) = modify(ctx.store, slot, src) {
            s.remove(member);
        }
        ctx.store.remove_if_empty(slot, src);
        try_reply!(ctx, write(ctx.store, slot, dst)).insert(member.into());
        ctx.propagate(args);
    }
    ctx.out.int(1);
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// The result of an operation over the sets at `keys` (missing = empty).
/// Only the result is built: the sets are read in place, not copied.
fn compute<'k>(
    ctx: &mut Ctx<'_>,
    keys: impl Iterator<Item = &'k [u8]>,
    op: Op,
) -> Result<Set, &'static str> {
    let slot = ctx.slot();
    let keys: Vec<&[u8]> = keys.collect();
    // Expire lazily and check types first; then borrow every set at once.
    for k in &keys {
        read(ctx.store, slot, k)?;
    }
    let store = &*ctx.store;
    let empty = Set::new();
    let sets: Vec<&Set> = keys
        .iter()
        .map(|k| match store.peek(slot, k).map(|e| &e.value) {
            Some(Value::Set(s)) => &**s,
            _ => &empty,
        })
        .collect();
    let Some((first, rest)) = sets.split_first() else {
        return Ok(Set::new());
    };
    Ok(match op {
        Op::Inter => first
            .iter()
            .filter(|m| rest.iter().all(|s| s.contains(*m)))
            .cloned()
            .collect(),
        Op::Union => sets.iter().flat_map(|s| s.iter()).cloned().collect(),
        Op::Diff => first
            .iter()
            .filter(|m| !rest.iter().any(|s| s.contains(*m)))
            .cloned()
            .collect(),
    })
}

fn set_op(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) {
    let r = try_reply!(ctx, compute(ctx, args.iter().skip(1), op));
    reply_set(ctx, r.iter());
}

fn set_op_store(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) {
    let r = try_reply!(ctx, compute(ctx, args.iter().skip(2), op));
    let slot = ctx.slot();
    let dst = args.get(1);
    let n = r.len();
    let existed = ctx.store.get(slot, dst).is_some();
    if n == 0 {
        ctx.store.remove(slot, dst);
    } else {
        ctx.store.set(slot, dst, Value::Set(Box::new(r)), 0);
    }
    if n > 0 || existed {
        ctx.propagate(args);
    }
    ctx.out.int(n as i64);
}

/// SINTERCARD numkeys key… [LIMIT n]: the size of the intersection, at
/// most `n` when it is not 0.
fn sintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // As Redis' getRangeLong with a message: the message answers a value
    // that is not an integer as well as one out of range.
    let numkeys = match super::parse_i64(args.get(1)) {
        Some(n) if n >= 1 => n as u64,
        _ => return ctx.out.error("ERR numkeys should be greater than 0"),
    };
    if numkeys > (args.len() - 2) as u64 {
        return ctx
            .out
            .error("ERR Number of keys can't be greater than number of args");
    }
    let numkeys = numkeys as usize;
    let mut limit = 0;
    let mut j = 2 + numkeys;
    while j < args.len() {
        if args.is(j, "limit") && j + 1 < args.len() {
            limit = match super::parse_i64(args.get(j + 1)) {
                Some(n) if n >= 0 => n as usize,
                _ => return ctx.out.error("ERR LIMIT can't be negative"),
            };
            j += 2;
        } else {
            return ctx.out.error(super::ERR_SYNTAX);
        }
    }
    let r = try_reply!(
        ctx,
        compute(ctx, args.iter().skip(2).take(numkeys), Op::Inter)
    );
    let n = r.len();
    ctx.out.int(if limit > 0 { n.min(limit) } else { n } as i64);
}

fn sinter(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op(ctx, args, Op::Inter);
}
fn sunion(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op(ctx, args, Op::Union);
}
fn sdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op(ctx, args, Op::Diff);
}
fn sinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op_store(ctx, args, Op::Inter);
}
fn sunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op_store(ctx, args, Op::Union);
}
fn sdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_op_store(ctx, args, Op::Diff);
}
