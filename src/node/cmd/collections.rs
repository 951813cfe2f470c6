//! Commands over hashes, sets and sorted sets that iterate or sample them:
//! HSCAN, SSCAN, ZSCAN, HRANDFIELD, ZRANDMEMBER, and the sorted-set range
//! removals ZREMRANGEBYSCORE, ZREMRANGEBYRANK, ZREMRANGEBYLEX.

use rand::seq::{IteratorRandom, SliceRandom};

use super::flags::*;
use super::server::glob_match;
use super::zsets::{lex_range_empty, parse_lex_bound, parse_score_bound};
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::resp::{fmt_g17, ReplyBuf};
use crate::node::store::{Hash, Store, Value, ZSet, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "hscan", arity: -3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: hscan },
    CommandSpec { name: "sscan", arity: -3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: sscan },
    CommandSpec { name: "zscan", arity: -3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zscan },
    CommandSpec { name: "hrandfield", arity: -2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: hrandfield },
    CommandSpec { name: "zrandmember", arity: -2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrandmember },
    CommandSpec { name: "zremrangebyscore", arity: 4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: zremrangebyscore },
    CommandSpec { name: "zremrangebyrank", arity: 4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: zremrangebyrank },
    CommandSpec { name: "zremrangebylex", arity: 4, flags: WRITE, first_key: 1, last_key: 1, step: 1, handler: zremrangebylex },
];

/// Which aggregate a command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hash,
    Set,
    ZSet,
}

impl Kind {
    fn matches(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Kind::Hash, Value::Hash(_))
                | (Kind::Set, Value::Set(_))
                | (Kind::ZSet, Value::ZSet(_))
        )
    }
}

/// Looks the key up and checks its type: Ok(false) when absent.
fn exists_as(store: &mut Store, slot: u16, key: &[u8], kind: Kind) -> Result<bool, &'static str> {
    match store.get(slot, key) {
        None => Ok(false),
        Some(e) if kind.matches(&e.value) => Ok(true),
        Some(_) => Err(WRONGTYPE),
    }
}

/// The members (hash fields) of the aggregate at `key`, already checked.
fn members<'s>(store: &'s Store, slot: u16, key: &[u8]) -> Vec<&'s [u8]> {
    match store.peek(slot, key).map(|e| &e.value) {
        Some(Value::Hash(h)) => h.keys().collect(),
        Some(Value::Set(s)) => s.iter().map(|m| &**m).collect(),
        Some(Value::ZSet(z)) => z.members().collect(),
        _ => Vec::new(),
    }
}

/// A packed value's members in their order: Redis answers a scan of a
/// packed value whole, in one step.
fn packed_members(value: Option<&Value>) -> Option<Vec<&[u8]>> {
    match value? {
        Value::Hash(h @ Hash::Packed(_)) => Some(h.keys().collect()),
        Value::ZSet(z @ ZSet::Packed(_)) => Some(z.iter().map(|(m, _)| m).collect()),
        _ => None,
    }
}

/// SCAN's options after the cursor: COUNT and MATCH (no TYPE here).
fn parse_scan_opts<'a>(args: &Args<'a>) -> Result<(usize, Option<&'a [u8]>), &'static str> {
    let (mut count, mut pattern) = (10usize, None);
    let mut i = 3;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(ERR_SYNTAX);
        }
        if args.is(i, "count") {
            let n = args.int(i + 1)?;
            if n < 1 {
                return Err(ERR_SYNTAX);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args.is(i, "match") {
            pattern = Some(args.get(i + 1)).filter(|p| *p != b"*");
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 2;
    }
    Ok((count, pattern))
}

/// One step of a scan over an aggregate. As the keyspace's SCAN, members
/// are visited in the order of their CRC-32C, and the cursor is the next
/// hash plus one (0: done): a member present for the whole iteration is
/// returned exactly once, whatever changes meanwhile. A step costs O(N) in
/// the aggregate's size (each member is hashed), whatever COUNT is.
fn scan_step<'m>(
    all: Vec<(u32, &'m [u8])>,
    cursor: u64,
    count: usize,
    pattern: Option<&[u8]>,
) -> (u64, Vec<&'m [u8]>) {
    let Some(from) = cursor.checked_sub(1) else {
        return scan_from(all, 0, count, pattern);
    };
    if from > u32::MAX as u64 {
        return (0, Vec::new());
    }
    scan_from(all, from as u32, count, pattern)
}

fn scan_from<'m>(
    mut all: Vec<(u32, &'m [u8])>,
    from: u32,
    count: usize,
    pattern: Option<&[u8]>,
) -> (u64, Vec<&'m [u8]>) {
    all.retain(|(h, _)| *h >= from);
    // The first hash not returned now: linear selection, not a sort.
    let next = if all.len() > count {
        all.select_nth_unstable_by_key(count, |c| c.0);
        let pivot = all[count].0;
        if all[..count].iter().any(|c| c.0 < pivot) {
            Some(pivot)
        } else {
            // The first `count` all share the pivot's hash: members sharing
            // a hash go together (the cursor never splits them).
            all.iter().map(|c| c.0).filter(|&h| h > pivot).min()
        }
    } else {
        None
    };
    let out = all
        .iter()
        .filter(|c| next.is_none_or(|n| c.0 < n))
        .map(|c| c.1)
        .filter(|m| pattern.is_none_or(|p| glob_match(p, m)))
        .collect();
    (next.map_or(0, |n| n as u64 + 1), out)
}

fn scan_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind) {
    let Some(cursor) = std::str::from_utf8(args.get(2))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        ctx.out.error("ERR invalid cursor");
        return;
    };
    let (slot, key) = (ctx.slot(), args.get(1));
    // Redis answers a missing key before it reads the options.
    if !try_reply!(ctx, exists_as(ctx.store, slot, key, kind)) {
        ctx.out.array(2);
        ctx.out.bulk(b"0");
        ctx.out.array(0);
        return;
    }
    let (count, pattern) = try_reply!(ctx, parse_scan_opts(args));
    let store = &*ctx.store;
    let value = store.peek(slot, key).map(|e| &e.value);
    let (next, found) = match packed_members(value) {
        Some(all) => {
            let all = all.into_iter();
            (
                0,
                all.filter(|m| pattern.is_none_or(|p| glob_match(p, m)))
                    .collect(),
            )
        }
        None => {
            let all = members(store, slot, key)
                .into_iter()
                .map(|m| (crc32c::crc32c(m), m))
                .collect();
            scan_step(all, cursor, count, pattern)
        }
    };
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    let per = if kind == Kind::Set { 1 } else { 2 };
    ctx.out.array(found.len() * per);
    for m in found {
        ctx.out.bulk(m);
        match value {
            Some(Value::Hash(h)) => ctx.out.bulk(h.get(m).unwrap_or_default()),
            // SCAN replies carry scores as strings, in RESP3 too.
            Some(Value::ZSet(z)) => {
                let s = z.score(m).unwrap_or(0.0);
                ctx.out.bulk(fmt_g17(s).as_bytes());
            }
            _ => {}
        }
        if ctx.out.full() {
            break;
        }
    }
}

fn hscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    scan_generic(ctx, args, Kind::Hash);
}
fn sscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    scan_generic(ctx, args, Kind::Set);
}
fn zscan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    scan_generic(ctx, args, Kind::ZSet);
}

/// The random-count range (Redis: -LONG_MAX..=LONG_MAX).
const ERR_COUNT_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// Replies with one member and, if asked, its value (hash) or score.
fn reply_pick(out: &mut ReplyBuf, value: &Value, m: &[u8], with: bool) {
    if !with {
        out.bulk(m);
        return;
    }
    if out.resp3 {
        out.array(2);
    }
    out.bulk(m);
    match value {
        Value::Hash(h) => out.bulk(h.get(m).unwrap_or_default()),
        Value::ZSet(z) => out.double(z.score(m).unwrap_or(0.0)),
        _ => {}
    }
}

/// HRANDFIELD and ZRANDMEMBER: `word` is WITHVALUES or WITHSCORES.
fn random_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind, word: &str) {
    let (slot, key) = (ctx.slot(), args.get(1));
    if args.len() == 2 {
        if !try_reply!(ctx, exists_as(ctx.store, slot, key, kind)) {
            ctx.out.null();
            return;
        }
        let all = members(ctx.store, slot, key);
        match all.choose(&mut rand::thread_rng()) {
            Some(m) => ctx.out.bulk(m),
            None => ctx.out.null(),
        }
        return;
    }
    let count = match try_reply!(ctx, args.int(2)) {
        i64::MIN => {
            ctx.out.error(ERR_COUNT_RANGE);
            return;
        }
        n => n,
    };
    if args.len() > 4 || (args.len() == 4 && !args.is(3, word)) {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    let with = args.len() == 4;
    if !try_reply!(ctx, exists_as(ctx.store, slot, key, kind)) || count == 0 {
        ctx.out.array(0);
        return;
    }
    let store = &*ctx.store;
    let Some(value) = store.peek(slot, key).map(|e| &e.value) else {
        ctx.out.array(0);
        return;
    };
    let all = members(store, slot, key);
    let out = &mut *ctx.out;
    let mut rng = rand::thread_rng();
    // Pairs are flat in RESP2 (two elements each), nested in RESP3.
    let per = if with && !out.resp3 { 2 } else { 1 };
    if count > 0 {
        // Distinct members: never more than the aggregate holds.
        let n = usize::try_from(count).unwrap_or(usize::MAX).min(all.len());
        let chosen = all.iter().choose_multiple(&mut rng, n);
        out.array(chosen.len() * per);
        for m in chosen {
            reply_pick(out, value, m, with);
        }
        return;
    }
    // Repeats allowed: the reply is as long as asked, so the reply bound
    // ends a huge count (the loop stops there, nothing is sized by it).
    let n = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
    out.array(n.saturating_mul(per));
    for _ in 0..n {
        let Some(m) = all.choose(&mut rng) else { break };
        reply_pick(out, value, m, with);
        if out.full() {
            break;
        }
    }
}

fn hrandfield(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    random_generic(ctx, args, Kind::Hash, "withvalues");
}
fn zrandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    random_generic(ctx, args, Kind::ZSet, "withscores");
}

/// Removes the members `pick` selects (from the ordered members) and
/// replies with how many; logged as received (deterministic).
fn zrem_where(ctx: &mut Ctx<'_>, args: &Args<'_>, pick: impl FnOnce(&ZSet) -> Vec<Vec<u8>>) {
    let (slot, key) = (ctx.slot(), args.get(1));
    let z = match ctx.store.get_mut(slot, key).map(|e| &mut e.value) {
        None => {
            ctx.out.int(0);
            return;
        }
        Some(Value::ZSet(z)) => z,
        Some(_) => {
            ctx.out.error(WRONGTYPE);
            return;
        }
    };
    let gone = pick(z);
    for m in &gone {
        z.remove(m);
    }
    if !gone.is_empty() {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.int(gone.len() as i64);
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let min = try_reply!(ctx, parse_score_bound(args.get(2)));
    let max = try_reply!(ctx, parse_score_bound(args.get(3)));
    zrem_where(ctx, args, |z| {
        z.iter()
            .skip_while(|&(_, s)| !min.above_min(s))
            .take_while(|&(_, s)| max.below_max(s))
            .map(|(m, _)| m.to_vec())
            .collect()
    });
}

fn zremrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let min = try_reply!(ctx, parse_lex_bound(args.get(2)));
    let max = try_reply!(ctx, parse_lex_bound(args.get(3)));
    zrem_where(ctx, args, |z| {
        if lex_range_empty(z, &min, &max) {
            return Vec::new();
        }
        z.iter()
            .skip_while(|(m, _)| !min.above_min(m))
            .take_while(|(m, _)| max.below_max(m))
            .map(|(m, _)| m.to_vec())
            .collect()
    });
}

fn zremrangebyrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let start = try_reply!(ctx, args.int(2));
    let end = try_reply!(ctx, args.int(3));
    zrem_where(ctx, args, |z| {
        // Redis' sanitising: negative from the end, start clamped at 0,
        // end at the last rank.
        let len = z.len() as i64;
        let start = if start < 0 {
            start.saturating_add(len)
        } else {
            start
        }
        .max(0);
        let end = if end < 0 {
            end.saturating_add(len)
        } else {
            end
        };
        if start > end || start >= len {
            return Vec::new();
        }
        let end = end.min(len - 1);
        z.iter()
            .skip(start as usize)
            .take((end - start + 1) as usize)
            .map(|(m, _)| m.to_vec())
            .collect()
    });
}

#[cfg(test)]
mod tests {
    use super::scan_from;
    use crate::node::store::Bytes;

    #[test]
    fn a_scan_step_never_splits_members_sharing_a_hash() {
        let names: Vec<Bytes> = (0..8).map(|i| vec![b'a' + i].into_boxed_slice()).collect();
        // Five members collide on hash 7, three on hash 9; COUNT 2.
        let all = |from| {
            names
                .iter()
                .enumerate()
                .map(|(i, m)| (if i < 5 { 7 } else { 9 }, &m[..]))
                .filter(|(h, _)| *h >= from)
                .collect::<Vec<_>>()
        };
        let (next, first) = scan_from(all(0), 0, 2, None);
        assert_eq!((next, first.len()), (10, 5));
        let (next, rest) = scan_from(all(9), 9, 2, None);
        assert_eq!((next, rest.len()), (0, 3));
        // Distinct hashes: COUNT members a step, the cursor one past them.
        let spread: Vec<(u32, &[u8])> = names.iter().zip(10..).map(|(m, h)| (h, &m[..])).collect();
        let (next, step) = scan_from(spread.clone(), 0, 3, None);
        assert_eq!((next, step.len()), (14, 3));
        let (next, step) = scan_from(spread, 13, 10, Some(b"h"));
        assert_eq!((next, step.len()), (0, 1));
    }
}
