//! Sorted-set commands: ZADD, ZINCRBY, ZREM, ZSCORE, ZMSCORE, ZCARD, ZCOUNT,
//! ZRANGE (BYSCORE, BYLEX, REV, LIMIT), ZREVRANGE, ZRANGEBYSCORE,
//! ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX, ZRANK, ZREVRANK, ZPOPMIN,
//! ZPOPMAX.

use super::flags::*;
use super::{parse_f64, Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::resp::fmt_double;
use crate::node::store::{Store, Value, ZSet, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "zadd", arity: -4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: zadd },
    CommandSpec { name: "zincrby", arity: 4, flags: WRITE | DENYOOM | FAST, first_key: 1, last_key: 1, step: 1, handler: zincrby },
    CommandSpec { name: "zrem", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: zrem },
    CommandSpec { name: "zscore", arity: 3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zscore },
    CommandSpec { name: "zmscore", arity: -3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zmscore },
    CommandSpec { name: "zcard", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zcard },
    CommandSpec { name: "zcount", arity: 4, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zcount },
    CommandSpec { name: "zrange", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrange },
    CommandSpec { name: "zrevrange", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrevrange },
    CommandSpec { name: "zrangebyscore", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrangebyscore },
    CommandSpec { name: "zrevrangebyscore", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrevrangebyscore },
    CommandSpec { name: "zrangebylex", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrangebylex },
    CommandSpec { name: "zrevrangebylex", arity: -4, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: zrevrangebylex },
    CommandSpec { name: "zrank", arity: -3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zrank },
    CommandSpec { name: "zrevrank", arity: -3, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: zrevrank },
    CommandSpec { name: "zpopmin", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: zpopmin },
    CommandSpec { name: "zpopmax", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: zpopmax },
];

/// The sorted set at `key`: Ok(None) when absent, Err on another type.
pub(super) fn read<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s ZSet>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::ZSet(z) => Ok(Some(z)),
            _ => Err(WRONGTYPE),
        },
    }
}

pub(super) fn modify<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s mut ZSet>, &'static str> {
    match store.get_mut(slot, key) {
        None => Ok(None),
        Some(e) => match &mut e.value {
            Value::ZSet(z) => Ok(Some(z)),
            _ => Err(WRONGTYPE),
        },
    }
}

pub(super) fn write<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<&'s mut ZSet, &'static str> {
    match store.get_or_create(
        slot,
        key,
        |v| matches!(v, Value::ZSet(_)),
        || Value::ZSet(Default::default()),
    ) {
        Ok(Value::ZSet(z)) => Ok(z),
        _ => Err(WRONGTYPE),
    }
}

#[derive(Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// What ZADD did: members added, members whose score changed, and (INCR)
/// the resulting score when the update applied.
struct AddResult {
    added: usize,
    updated: usize,
    incr_score: Option<f64>,
}

fn zadd_generic(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: &AddFlags,
    pairs: &[(f64, &[u8])],
) -> Result<AddResult, &'static str> {
    let slot = ctx.slot();
    let mut r = AddResult {
        added: 0,
        updated: 0,
        incr_score: None,
    };
    if read(ctx.store, slot, key)?.is_none() && f.xx {
        return Ok(r);
    }
    // Check the INCR result before creating anything.
    if f.incr {
        let cur = read(ctx.store, slot, key)?.and_then(|z| z.score(pairs[0].1));
        if let Some(c) = cur {
            if (c + pairs[0].0).is_nan() {
                return Err("ERR resulting score is not a number (NaN)");
            }
        }
    }
    let z = write(ctx.store, slot, key)?;
    for &(score, member) in pairs {
        match z.score(member) {
            Some(cur) => {
                if f.nx {
                    continue;
                }
                let new = if f.incr { cur + score } else { score };
                if (f.gt && new <= cur) || (f.lt && new >= cur) {
                    continue;
                }
                if new != cur {
                    z.insert(member, new);
                    r.updated += 1;
                }
                r.incr_score = Some(new);
            }
            None => {
                if f.xx {
                    continue;
                }
                z.insert(member, score);
                r.added += 1;
                r.incr_score = Some(score);
            }
        }
    }
    ctx.store.remove_if_empty(slot, key);
    Ok(r)
}

fn zadd(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut f = AddFlags::default();
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        let flag = match a.to_ascii_lowercase().as_slice() {
            b"nx" => &mut f.nx,
            b"xx" => &mut f.xx,
            b"gt" => &mut f.gt,
            b"lt" => &mut f.lt,
            b"ch" => &mut f.ch,
            b"incr" => &mut f.incr,
            _ => break,
        };
        *flag = true;
        i += 1;
    }
    let rest = args.len() - i;
    if rest == 0 || rest % 2 != 0 {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    if f.incr && rest > 2 {
        ctx.out
            .error("ERR INCR option supports a single increment-element pair");
        return;
    }
    if f.nx && f.xx {
        ctx.out
            .error("ERR XX and NX options at the same time are not compatible");
        return;
    }
    if [f.gt, f.lt, f.nx].iter().filter(|&&b| b).count() > 1 {
        ctx.out
            .error("ERR GT, LT, and/or NX options at the same time are not compatible");
        return;
    }
    let mut pairs = Vec::with_capacity(rest / 2);
    while i < args.len() {
        let score = try_reply!(ctx, args.float(i));
        pairs.push((score, args.get(i + 1)));
        i += 2;
    }
    let key = args.get(1);
    let r = try_reply!(ctx, zadd_generic(ctx, key, &f, &pairs));
    if f.incr {
        match r.incr_score {
            Some(s) => {
                if r.added + r.updated > 0 {
                    let text = fmt_double(s);
                    ctx.propagate_as(&[b"ZADD", key, text.as_bytes(), pairs[0].1]);
                }
                ctx.out.double(s);
            }
            None => ctx.out.null(),
        }
        return;
    }
    if r.added + r.updated > 0 {
        ctx.propagate(args);
    }
    ctx.out
        .int((if f.ch { r.added + r.updated } else { r.added }) as i64);
}

fn zincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let by = try_reply!(ctx, args.float(2));
    let key = args.get(1);
    let member = args.get(3);
    let f = AddFlags {
        incr: true,
        ..Default::default()
    };
    let r = try_reply!(ctx, zadd_generic(ctx, key, &f, &[(by, member)]));
    let s = r
        .incr_score
        .expect("an INCR without conditions always applies");
    if r.added + r.updated > 0 {
        let text = fmt_double(s);
        // Logged as the resulting score: replay never re-derives it.
        ctx.propagate_as(&[b"ZADD", key, text.as_bytes(), member]);
    }
    ctx.out.double(s);
}

fn zrem(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let key = args.get(1);
    let removed = match try_reply!(ctx, modify(ctx.store, slot, key)) {
        None => 0,
        Some(z) => args.iter().skip(2).filter(|m| z.remove(m)).count(),
    };
    if removed > 0 {
        ctx.store.remove_if_empty(slot, key);
        ctx.propagate(args);
    }
    ctx.out.int(removed as i64);
}

fn zscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    match z.and_then(|z| z.score(args.get(2))) {
        Some(s) => ctx.out.double(s),
        None => ctx.out.null(),
    }
}

fn zmscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.array(args.len() - 2);
    for m in args.iter().skip(2) {
        match z.and_then(|z| z.score(m)) {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
}

fn zcard(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    ctx.out.int(z.map_or(0, |z| z.len()) as i64);
}

/// One end of a score range.
#[derive(Clone, Copy)]
pub(super) struct ScoreBound {
    v: f64,
    excl: bool,
}

pub(super) fn parse_score_bound(b: &[u8]) -> Result<ScoreBound, &'static str> {
    const E: &str = "ERR min or max is not a float";
    match b.first() {
        Some(b'(') => Ok(ScoreBound {
            v: bound_f64(&b[1..]).ok_or(E)?,
            excl: true,
        }),
        _ => Ok(ScoreBound {
            v: bound_f64(b).ok_or(E)?,
            excl: false,
        }),
    }
}

/// A bound's number as Redis reads it with `strtod`: leading spaces
/// skipped, nothing at all (`(` alone, or an empty argument) is 0, and a
/// number out of range is infinite (or 0), not an error.
fn bound_f64(b: &[u8]) -> Option<f64> {
    if b.is_empty() {
        return Some(0.0);
    }
    let start = b.iter().position(|c| !c.is_ascii_whitespace())?;
    let b = &b[start..];
    parse_f64(b).or_else(|| {
        let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
        (!v.is_nan()).then_some(v)
    })
}

impl ScoreBound {
    pub(super) fn above_min(&self, s: f64) -> bool {
        if self.excl {
            s > self.v
        } else {
            s >= self.v
        }
    }
    pub(super) fn below_max(&self, s: f64) -> bool {
        if self.excl {
            s < self.v
        } else {
            s <= self.v
        }
    }
}

/// One end of a lexicographic range.
pub(super) enum LexBound {
    NegInf,
    PosInf,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

pub(super) fn parse_lex_bound(b: &[u8]) -> Result<LexBound, &'static str> {
    match b.first() {
        Some(b'-') if b.len() == 1 => Ok(LexBound::NegInf),
        Some(b'+') if b.len() == 1 => Ok(LexBound::PosInf),
        Some(b'[') => Ok(LexBound::Incl(b[1..].to_vec())),
        Some(b'(') => Ok(LexBound::Excl(b[1..].to_vec())),
        _ => Err("ERR min or max not valid string range item"),
    }
}

/// Redis' early exit for a lexicographic range (`zzlIsInLexRange`): empty
/// when min is above max, when the last member is below min or the first
/// above max. With unequal scores members are not in lexicographic order,
/// so this can answer "empty" where a walk would find members.
pub(super) fn lex_range_empty(z: &ZSet, min: &LexBound, max: &LexBound) -> bool {
    let key = |b: &LexBound| -> (u8, Vec<u8>) {
        match b {
            LexBound::NegInf => (0, Vec::new()),
            LexBound::Incl(v) | LexBound::Excl(v) => (1, v.clone()),
            LexBound::PosInf => (2, Vec::new()),
        }
    };
    let excl = matches!(min, LexBound::Excl(_)) || matches!(max, LexBound::Excl(_));
    match key(min).cmp(&key(max)) {
        std::cmp::Ordering::Greater => return true,
        std::cmp::Ordering::Equal if excl => return true,
        _ => {}
    }
    let mut it = z.iter();
    let first = it.next();
    let last = it.next_back().or(first);
    match (first, last) {
        (Some((f, _)), Some((l, _))) => !min.above_min(l) || !max.below_max(f),
        _ => true,
    }
}

impl LexBound {
    pub(super) fn above_min(&self, m: &[u8]) -> bool {
        match self {
            LexBound::NegInf => true,
            LexBound::PosInf => false,
            LexBound::Incl(v) => m >= v.as_slice(),
            LexBound::Excl(v) => m > v.as_slice(),
        }
    }
    pub(super) fn below_max(&self, m: &[u8]) -> bool {
        match self {
            LexBound::NegInf => false,
            LexBound::PosInf => true,
            LexBound::Incl(v) => m <= v.as_slice(),
            LexBound::Excl(v) => m < v.as_slice(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Rank,
    Score,
    Lex,
}

/// Members with their scores, as a reply: RESP2 flattens the scores into
/// bulk strings, RESP3 nests [member, double] pairs.
pub(super) fn reply_members(ctx: &mut Ctx<'_>, items: &[(&[u8], f64)], withscores: bool) {
    if !withscores {
        ctx.out.array(items.len());
        for (m, _) in items {
            ctx.out.bulk(m);
        }
    } else if ctx.out.resp3 {
        ctx.out.array(items.len());
        for (m, s) in items {
            ctx.out.array(2);
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
    } else {
        ctx.out.array(items.len() * 2);
        for (m, s) in items {
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
    }
}

/// `try_reply!` for [`select_range`], which returns None once it answered.
macro_rules! try_some {
    ($ctx:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(msg) => {
                $ctx.out.error(msg);
                return None;
            }
        }
    };
}

/// ZRANGE and its older forms. `fixed` is Some((mode, rev)) for the older
/// commands, which take no BYSCORE/BYLEX/REV.
fn range_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, fixed: Option<(Mode, bool)>) {
    if let Some((items, withscores)) = select_range(ctx, args, 1, fixed) {
        let refs: Vec<(&[u8], f64)> = items.iter().map(|(m, s)| (&m[..], *s)).collect();
        reply_members(ctx, &refs, withscores);
    }
}

/// Members with their scores, owned.
pub(super) type Scored = Vec<(Vec<u8>, f64)>;

/// What a ZRANGE-form command selects, and whether WITHSCORES was given:
/// the source key at `base` (2 for ZRANGESTORE, which takes no
/// WITHSCORES), the bounds after it, then the options. None once an error
/// was answered.
pub(super) fn select_range(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    base: usize,
    fixed: Option<(Mode, bool)>,
) -> Option<(Scored, bool)> {
    let (mut mode, mut rev) = fixed.unwrap_or((Mode::Rank, false));
    let store = base > 1;
    let mut withscores = false;
    let mut limit: Option<(i64, i64)> = None;
    let mut i = base + 3;
    while i < args.len() {
        if !store && args.is(i, "withscores") {
            withscores = true;
        } else if args.is(i, "limit") && i + 2 < args.len() {
            let off = try_some!(ctx, args.int(i + 1));
            let cnt = try_some!(ctx, args.int(i + 2));
            limit = Some((off, cnt));
            i += 2;
        } else if fixed.is_none() && args.is(i, "byscore") {
            mode = Mode::Score;
        } else if fixed.is_none() && args.is(i, "bylex") {
            mode = Mode::Lex;
        } else if fixed.is_none() && args.is(i, "rev") {
            rev = true;
        } else {
            ctx.out.error(ERR_SYNTAX);
            return None;
        }
        i += 1;
    }
    if limit.is_some() && mode == Mode::Rank {
        ctx.out.error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return None;
    }
    if withscores && mode == Mode::Lex {
        ctx.out
            .error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return None;
    }
    // In reverse the first bound is the maximum.
    let (lo, hi) = if rev && mode != Mode::Rank {
        (args.get(base + 2), args.get(base + 1))
    } else {
        (args.get(base + 1), args.get(base + 2))
    };
    enum Bounds {
        Rank(i64, i64),
        Score(ScoreBound, ScoreBound),
        Lex(LexBound, LexBound),
    }
    let bounds = match mode {
        Mode::Rank => Bounds::Rank(
            try_some!(ctx, args.int(base + 1)),
            try_some!(ctx, args.int(base + 2)),
        ),
        Mode::Score => Bounds::Score(
            try_some!(ctx, parse_score_bound(lo)),
            try_some!(ctx, parse_score_bound(hi)),
        ),
        Mode::Lex => Bounds::Lex(
            try_some!(ctx, parse_lex_bound(lo)),
            try_some!(ctx, parse_lex_bound(hi)),
        ),
    };
    let slot = ctx.slot();
    let Some(z) = try_some!(ctx, read(ctx.store, slot, args.get(base))) else {
        return Some((Vec::new(), withscores));
    };
    if let Bounds::Lex(min, max) = &bounds {
        if lex_range_empty(z, min, max) {
            return Some((Vec::new(), withscores));
        }
    }
    let items: Vec<(Vec<u8>, f64)> = {
        let iter: Box<dyn Iterator<Item = (&[u8], f64)>> = if rev {
            Box::new(z.iter().rev())
        } else {
            Box::new(z.iter())
        };
        let (offset, count) = match limit {
            Some((o, _)) if o < 0 => return Some((Vec::new(), withscores)),
            Some((o, c)) => (o as usize, if c < 0 { usize::MAX } else { c as usize }),
            None => (0, usize::MAX),
        };
        let items: Vec<(&[u8], f64)> = match &bounds {
            Bounds::Rank(start, stop) => {
                let len = z.len() as i64;
                let start = if *start < 0 {
                    (len + start).max(0)
                } else {
                    *start
                };
                let stop = if *stop < 0 {
                    len + stop
                } else {
                    (*stop).min(len - 1)
                };
                if start > stop || start >= len {
                    Vec::new()
                } else {
                    iter.skip(start as usize)
                        .take((stop - start + 1) as usize)
                        .collect()
                }
            }
            Bounds::Score(min, max) => iter
                .skip_while(|(_, s)| {
                    if rev {
                        !max.below_max(*s)
                    } else {
                        !min.above_min(*s)
                    }
                })
                .take_while(|(_, s)| {
                    if rev {
                        min.above_min(*s)
                    } else {
                        max.below_max(*s)
                    }
                })
                .skip(offset)
                .take(count)
                .collect(),
            Bounds::Lex(min, max) => iter
                .skip_while(|(m, _)| {
                    if rev {
                        !max.below_max(m)
                    } else {
                        !min.above_min(m)
                    }
                })
                .take_while(|(m, _)| {
                    if rev {
                        min.above_min(m)
                    } else {
                        max.below_max(m)
                    }
                })
                .skip(offset)
                .take(count)
                .collect(),
        };
        items.into_iter().map(|(m, s)| (m.to_vec(), s)).collect()
    };
    Some((items, withscores))
}

fn zrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, None);
}
fn zrevrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, Some((Mode::Rank, true)));
}
fn zrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, Some((Mode::Score, false)));
}
fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, Some((Mode::Score, true)));
}
fn zrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, Some((Mode::Lex, false)));
}
fn zrevrangebylex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    range_generic(ctx, args, Some((Mode::Lex, true)));
}

fn zcount(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let min = try_reply!(ctx, parse_score_bound(args.get(2)));
    let max = try_reply!(ctx, parse_score_bound(args.get(3)));
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let n = z.map_or(0, |z| {
        z.iter()
            .skip_while(|&(_, s)| !min.above_min(s))
            .take_while(|&(_, s)| max.below_max(s))
            .count()
    });
    ctx.out.int(n as i64);
}

fn rank_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, rev: bool) {
    let withscore = match args.len() {
        3 => false,
        4 if args.is(3, "withscore") => true,
        _ => {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
    };
    let slot = ctx.slot();
    let z = try_reply!(ctx, read(ctx.store, slot, args.get(1)));
    let member = args.get(2);
    let found = z.and_then(|z| {
        let (below, score) = z.rank(member)?;
        Some((if rev { z.len() - 1 - below } else { below }, score))
    });
    match found {
        None if withscore => ctx.out.null_array(),
        None => ctx.out.null(),
        Some((r, s)) if withscore => {
            ctx.out.array(2);
            ctx.out.int(r as i64);
            ctx.out.double(s);
        }
        Some((r, _)) => ctx.out.int(r as i64),
    }
}

fn zrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rank_generic(ctx, args, false);
}
fn zrevrank(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    rank_generic(ctx, args, true);
}

fn pop_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, max: bool) {
    if args.len() > 3 {
        ctx.out.error(ERR_SYNTAX);
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
    let Some(z) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        ctx.out.array(0);
        return;
    };
    let n = count.unwrap_or(1).min(z.len());
    let mut popped: Vec<(Vec<u8>, f64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut it = z.iter();
        let end = if max { it.next_back() } else { it.next() };
        let Some((m, s)) = end.map(|(m, s)| (m.to_vec(), s)) else {
            break;
        };
        z.remove(&m);
        popped.push((m, s));
    }
    if !popped.is_empty() {
        ctx.store.remove_if_empty(slot, key);
        let mut log: Vec<&[u8]> = vec![b"ZREM", key];
        log.extend(popped.iter().map(|(m, _)| &**m));
        ctx.propagate_as(&log);
    }
    let refs: Vec<(&[u8], f64)> = popped.iter().map(|(m, s)| (&m[..], *s)).collect();
    if count.is_none() && ctx.out.resp3 {
        // Without a count RESP3 gets a flat [member, score].
        ctx.out.array(refs.len() * 2);
        for (m, s) in &refs {
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
    } else {
        reply_members(ctx, &refs, true);
    }
}

fn zpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, false);
}
fn zpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_generic(ctx, args, true);
}
