//! Sorted-set commands over several keys, and the remaining range forms:
//! ZUNION, ZINTER, ZDIFF and their STORE forms, ZINTERCARD, ZRANGESTORE,
//! ZLEXCOUNT, ZMPOP.

use super::flags::*;
use super::zsets::{
    lex_range_empty, modify, parse_lex_bound, read, reply_members, select_range, LexBound,
};
use super::{parse_f64, parse_i64, Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::store::{Value, ZSet, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "zunion", arity: -3, flags: READONLY | KEYCOUNT, first_key: 0, last_key: 0, step: 0, handler: zunion },
    CommandSpec { name: "zinter", arity: -3, flags: READONLY | KEYCOUNT, first_key: 0, last_key: 0, step: 0, handler: zinter },
    CommandSpec { name: "zdiff", arity: -3, flags: READONLY | KEYCOUNT, first_key: 0, last_key: 0, step: 0, handler: zdiff },
    CommandSpec { name: "zintercard", arity: -3, flags: READONLY | KEYCOUNT, first_key: 0, last_key: 0, step: 0, handler: zintercard },
    CommandSpec { name: "zunionstore", arity: -4, flags: WRITE | DENYOOM | DEST_NUMKEYS, first_key: 1, last_key: 1, step: 1, handler: zunionstore },
    CommandSpec { name: "zinterstore", arity: -4, flags: WRITE | DENYOOM | DEST_NUMKEYS, first_key: 1, last_key: 1, step: 1, handler: zinterstore },
    CommandSpec { name: "zdiffstore", arity: -4, flags: WRITE | DENYOOM | DEST_NUMKEYS, first_key: 1, last_key: 1, step: 1, handler: zdiffstore },
    CommandSpec { name: "zrangestore", arity: -5, flags: WRITE | DENYOOM, first_key: 1, last_key: 2, step: 1, handler: zrangestore },
    CommandSpec { name: "zlexcount", arity: 4, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zlexcount },
    CommandSpec { name: "zmpop", arity: -4, flags: WRITE | NUMKEYS, first_key: 0, last_key: 0, step: 0, handler: zmpop },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    /// Redis' rule: a sum that is NaN (inf + -inf) is 0.
    fn apply(self, target: &mut f64, v: f64) {
        match self {
            Aggregate::Sum => {
                *target += v;
                if target.is_nan() {
                    *target = 0.0;
                }
            }
            Aggregate::Min => {
                if v < *target {
                    *target = v;
                }
            }
            Aggregate::Max => {
                if v > *target {
                    *target = v;
                }
            }
        }
    }
}

/// One input: its members with scores (a set's members score 1), and the
/// weight they are multiplied by.
struct Input {
    members: Vec<(Vec<u8>, f64)>,
    weight: f64,
}

impl Input {
    fn find(&self, m: &[u8]) -> Option<f64> {
        self.members
            .iter()
            .find(|(x, _)| x.as_slice() == m)
            .map(|(_, s)| *s)
    }
}

/// What a ZUNION-form command asked for.
struct Request {
    inputs: Vec<Input>,
    aggregate: Aggregate,
    withscores: bool,
    limit: usize,
}

/// Parses a ZUNION-form command whose key count is at `at`, reading its
/// inputs (sets or sorted sets), in Redis' order: count, types, options.
fn parse(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    at: usize,
    op: Op,
    store: bool,
    card: bool,
) -> Result<Request, String> {
    let numkeys = parse_i64(args.get(at)).ok_or(super::ERR_NOT_INTEGER)?;
    if numkeys < 1 {
        return Err(format!(
            "ERR at least 1 input key is needed for '{}' command",
            String::from_utf8_lossy(args.get(0)).to_ascii_lowercase()
        ));
    }
    if numkeys as u64 > (args.len() - at - 1) as u64 {
        return Err(ERR_SYNTAX.into());
    }
    let numkeys = numkeys as usize;
    let slot = ctx.slot();
    let mut inputs = Vec::with_capacity(numkeys);
    for key in args.iter().skip(at + 1).take(numkeys) {
        let members = match ctx.store.get(slot, key).map(|e| &e.value) {
            None => Vec::new(),
            Some(Value::ZSet(z)) => z.iter().map(|(m, s)| (m.to_vec(), s)).collect(),
            Some(Value::Set(s)) => s.iter().map(|m| (m.to_vec(), 1.0)).collect(),
            Some(_) => return Err(WRONGTYPE.into()),
        };
        inputs.push(Input {
            members,
            weight: 1.0,
        });
    }
    let mut req = Request {
        inputs,
        aggregate: Aggregate::Sum,
        withscores: false,
        limit: 0,
    };
    let mut j = at + 1 + numkeys;
    while j < args.len() {
        let remaining = args.len() - j;
        if op != Op::Diff && !card && remaining > numkeys && args.is(j, "weights") {
            for (i, input) in req.inputs.iter_mut().enumerate() {
                input.weight =
                    parse_f64(args.get(j + 1 + i)).ok_or("ERR weight value is not a float")?;
            }
            j += 1 + numkeys;
        } else if op != Op::Diff && !card && remaining >= 2 && args.is(j, "aggregate") {
            req.aggregate = match args.get(j + 1).to_ascii_lowercase().as_slice() {
                b"sum" => Aggregate::Sum,
                b"min" => Aggregate::Min,
                b"max" => Aggregate::Max,
                _ => return Err(ERR_SYNTAX.into()),
            };
            j += 2;
        } else if !store && !card && args.is(j, "withscores") {
            req.withscores = true;
            j += 1;
        } else if card && remaining >= 2 && args.is(j, "limit") {
            req.limit = match parse_i64(args.get(j + 1)) {
                Some(n) if n >= 0 => n as usize,
                _ => return Err("ERR LIMIT can't be negative".into()),
            };
            j += 2;
        } else {
            return Err(ERR_SYNTAX.into());
        }
    }
    Ok(req)
}

/// The result, in (score, member) order.
fn compute(mut req: Request, op: Op) -> Vec<(Vec<u8>, f64)> {
    let agg = req.aggregate;
    let weighted = |w: f64, s: f64| {
        let v = w * s;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let mut out: Vec<(Vec<u8>, f64)> = match op {
        Op::Union => {
            // Smallest inputs first, as Redis: the order sums are made in.
            req.inputs.sort_by_key(|i| i.members.len());
            let mut acc: Vec<(Vec<u8>, f64)> = Vec::new();
            let mut at: hashbrown::HashMap<Vec<u8>, usize> = hashbrown::HashMap::new();
            for input in &req.inputs {
                for (m, s) in &input.members {
                    let v = weighted(input.weight, *s);
                    match at.get(m) {
                        Some(&i) => agg.apply(&mut acc[i].1, v),
                        None => {
                            at.insert(m.clone(), acc.len());
                            acc.push((m.clone(), v));
                        }
                    }
                }
            }
            acc
        }
        Op::Inter => {
            req.inputs.sort_by_key(|i| i.members.len());
            let Some((first, rest)) = req.inputs.split_first() else {
                return Vec::new();
            };
            let sets: Vec<hashbrown::HashMap<&[u8], f64>> = rest
                .iter()
                .map(|i| i.members.iter().map(|(m, s)| (&m[..], *s)).collect())
                .collect();
            first
                .members
                .iter()
                .filter_map(|(m, s)| {
                    let mut score = weighted(first.weight, *s);
                    for (input, set) in rest.iter().zip(&sets) {
                        let v = set.get(&m[..])?;
                        agg.apply(&mut score, v * input.weight);
                    }
                    Some((m.clone(), score))
                })
                .collect()
        }
        Op::Diff => {
            let Some((first, rest)) = req.inputs.split_first() else {
                return Vec::new();
            };
            first
                .members
                .iter()
                .filter(|(m, _)| rest.iter().all(|i| i.find(m).is_none()))
                .cloned()
                .collect()
        }
    };
    // -0 and 0 are one score: order them by member, as a sorted set does.
    out.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    out
}

fn reply_op(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) {
    let req = match parse(ctx, args, 1, op, false, false) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let withscores = req.withscores;
    let items = compute(req, op);
    let refs: Vec<(&[u8], f64)> = items.iter().map(|(m, s)| (&m[..], *s)).collect();
    reply_members(ctx, &refs, withscores);
}

/// Replaces `dst` with `items` (deletes it when empty) and answers the count.
fn store_result(ctx: &mut Ctx<'_>, args: &Args<'_>, dst: &[u8], items: &[(Vec<u8>, f64)]) {
    let slot = ctx.slot();
    let existed = ctx.store.get(slot, dst).is_some();
    if items.is_empty() {
        ctx.store.remove(slot, dst);
    } else {
        let mut z = ZSet::with_capacity(items.len());
        for (m, s) in items {
            z.insert(m, *s);
        }
        ctx.store.set(slot, dst, Value::ZSet(z), 0);
    }
    if !items.is_empty() || existed {
        // The inputs are in the same slot: replay computes the same result.
        ctx.propagate(args);
    }
    ctx.out.int(items.len() as i64);
}

fn store_op(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) {
    let req = match parse(ctx, args, 2, op, true, false) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let items = compute(req, op);
    store_result(ctx, args, args.get(1), &items);
}

fn zunion(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    reply_op(ctx, args, Op::Union);
}
fn zinter(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    reply_op(ctx, args, Op::Inter);
}
fn zdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    reply_op(ctx, args, Op::Diff);
}
fn zunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    store_op(ctx, args, Op::Union);
}
fn zinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    store_op(ctx, args, Op::Inter);
}
fn zdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    store_op(ctx, args, Op::Diff);
}

fn zintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let req = match parse(ctx, args, 1, Op::Inter, false, true) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let limit = req.limit;
    let n = compute(req, Op::Inter).len();
    ctx.out.int(if limit > 0 { n.min(limit) } else { n } as i64);
}

fn zrangestore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if let Some((items, _)) = select_range(ctx, args, 2, None) {
        store_result(ctx, args, args.get(1), &items);
    }
}

fn zlexcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let min: LexBound = try_reply!(ctx, parse_lex_bound(args.get(2)));
    let max: LexBound = try_reply!(ctx, parse_lex_bound(args.get(3)));
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    // As ZRANGE BYLEX walks: from the first member above the minimum, while
    // below the maximum (meaningful when all scores are equal).
    let n = z.map_or(0, |z| {
        if lex_range_empty(z, &min, &max) {
            return 0;
        }
        z.iter()
            .skip_while(|(m, _)| !min.above_min(m))
            .take_while(|(m, _)| max.below_max(m))
            .count()
    });
    ctx.out.int(n as i64);
}

/// ZMPOP's (and BZMPOP's, `at` = 2) key count, direction (true: MAX) and
/// count, checked as Redis checks them.
pub(super) fn parse_zmpop(args: &Args<'_>, at: usize) -> Result<(usize, bool, u64), &'static str> {
    // As Redis' getRangeLong with a message: the message answers a value
    // that is not an integer as well as one out of range.
    let numkeys = match parse_i64(args.get(at)) {
        Some(n) if n >= 1 => n as u64,
        _ => return Err("ERR numkeys should be greater than 0"),
    };
    let where_at = numkeys.saturating_add(at as u64 + 1);
    if where_at >= args.len() as u64 {
        return Err(ERR_SYNTAX);
    }
    let where_at = where_at as usize;
    let max = if args.is(where_at, "max") {
        true
    } else if args.is(where_at, "min") {
        false
    } else {
        return Err(ERR_SYNTAX);
    };
    let mut count = None;
    let mut i = where_at + 1;
    while i < args.len() {
        if count.is_none() && args.is(i, "count") && i + 1 < args.len() {
            count = match parse_i64(args.get(i + 1)) {
                Some(n) if n >= 1 => Some(n as u64),
                _ => return Err("ERR count should be greater than 0"),
            };
            i += 2;
        } else {
            return Err(ERR_SYNTAX);
        }
    }
    Ok((numkeys as usize, max, count.unwrap_or(1)))
}

/// ZMPOP numkeys key… MIN|MAX [COUNT n]: pops from the first non-empty
/// sorted set.
fn zmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (numkeys, max, count) = try_reply!(ctx, parse_zmpop(args, 1));
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let slot = ctx.slot();
    for key in args.iter().skip(2).take(numkeys) {
        let Some(z) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
            continue;
        };
        if z.is_empty() {
            continue;
        }
        let n = count.min(z.len());
        let popped: Vec<(Vec<u8>, f64)> = if max {
            z.iter()
                .rev()
                .take(n)
                .map(|(m, s)| (m.to_vec(), s))
                .collect()
        } else {
            z.iter().take(n).map(|(m, s)| (m.to_vec(), s)).collect()
        };
        for (m, _) in &popped {
            z.remove(m);
        }
        ctx.store.remove_if_empty(slot, key);
        // Logged as the single-key pop it was.
        let name: &[u8] = if max { b"ZPOPMAX" } else { b"ZPOPMIN" };
        let ns = n.to_string();
        ctx.propagate_as(&[name, key, ns.as_bytes()]);
        ctx.out.array(2);
        ctx.out.bulk(key);
        ctx.out.array(popped.len());
        for (m, s) in &popped {
            ctx.out.array(2);
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
        return;
    }
    ctx.out.null_array();
}
