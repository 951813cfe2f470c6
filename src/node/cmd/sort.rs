//! SORT and SORT_RO: a list, set or sorted set's elements sorted
//! numerically or (ALPHA) bytewise, by themselves or by the keys a BY
//! pattern forms, with LIMIT, GET patterns and STORE — Redis 7.0's rules,
//! ties and errors included.
//!
//! As in Redis Cluster, a BY or GET pattern that reads keys must hash (by
//! its hash tag) to the sorted key's slot. STORE is logged as its effect
//! (the destination deleted and pushed again, one record), so a replica
//! never sorts, whatever order it keeps a set in.

use std::cmp::Ordering;

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::slots::key_slot;
use crate::node::store::{Bytes, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "sort", arity: -2, flags: WRITE | DENYOOM | SORT_KEYS, first_key: 1, last_key: 1, step: 1, handler: sort },
    CommandSpec { name: "sort_ro", arity: -2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: sort_ro },
];

/// SORT's keys: the sorted key and the last STORE destination (Redis'
/// `sortGetKeys`), as a range with a step that visits exactly those two.
pub fn sort_keys<'a>(argc: usize, arg: impl Fn(usize) -> Option<&'a [u8]>) -> (usize, usize) {
    let mut store = None;
    let mut i = 2;
    while i < argc {
        let a = arg(i).unwrap_or_default();
        if a.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"store") && i + 1 < argc {
            store = Some(i + 1);
        }
        i += 1;
    }
    match store {
        Some(p) => (p, p - 1),
        None => (1, 1),
    }
}

/// The slot a pattern's keys hash to when its hash tag fixes it (Redis'
/// `patternHashSlot`); None when a wildcard comes first or there is none.
fn pattern_slot(p: &[u8]) -> Option<u16> {
    let mut open = None;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' | b'?' | b'[' => return None,
            b'\\' => i += 1,
            b'{' if open.is_none() => open = Some(i),
            b'}' if open.is_some() => {
                let s = open.unwrap_or_default();
                return (i > s + 1).then(|| key_slot(&p[s + 1..i]));
            }
            _ => {}
        }
        i += 1;
    }
    None
}

struct Opts<'a> {
    desc: bool,
    alpha: bool,
    limit: Option<(i64, i64)>,
    by: Option<&'a [u8]>,
    dont_sort: bool,
    gets: Vec<&'a [u8]>,
    store: Option<&'a [u8]>,
}

fn parse<'a>(args: &Args<'a>, readonly: bool, slot: u16) -> Result<Opts<'a>, &'static str> {
    let mut o = Opts {
        desc: false,
        alpha: false,
        limit: None,
        by: None,
        dont_sort: false,
        gets: Vec::new(),
        store: None,
    };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        if args.is(j, "asc") {
            o.desc = false;
        } else if args.is(j, "desc") {
            o.desc = true;
        } else if args.is(j, "alpha") {
            o.alpha = true;
        } else if args.is(j, "limit") && left >= 2 {
            let (s, c) = (args.int(j + 1), args.int(j + 2));
            match (s, c) {
                (Ok(s), Ok(c)) => o.limit = Some((s, c)),
                (Err(e), _) | (_, Err(e)) => return Err(e),
            }
            j += 2;
        } else if !readonly && args.is(j, "store") && left >= 1 {
            o.store = Some(args.get(j + 1));
            j += 1;
        } else if args.is(j, "by") && left >= 1 {
            let p = args.get(j + 1);
            o.by = Some(p);
            if !p.contains(&b'*') {
                o.dont_sort = true;
            } else if pattern_slot(p) != Some(slot) {
                return Err("ERR BY option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots.");
            }
            j += 1;
        } else if args.is(j, "get") && left >= 1 {
            let p = args.get(j + 1);
            if p.contains(&b'*') && pattern_slot(p) != Some(slot) {
                return Err("ERR GET option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots.");
            }
            o.gets.push(p);
            j += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        j += 1;
    }
    Ok(o)
}

/// What a pattern names for element `elem`: `#` is the element; `*` is
/// replaced by it; `key->field` reads a hash field (None: no such value).
fn lookup(ctx: &mut Ctx<'_>, pattern: &[u8], elem: &[u8]) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(Bytes::from(elem));
    }
    let star = pattern.iter().position(|&c| c == b'*')?;
    let rest = &pattern[star + 1..];
    let arrow = rest
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&a| a + 2 < rest.len());
    let (post, field) = match arrow {
        Some(a) => (&rest[..a], Some(&rest[a + 2..])),
        None => (rest, None),
    };
    let mut key = pattern[..star].to_vec();
    key.extend_from_slice(elem);
    key.extend_from_slice(post);
    let e = ctx.store.get(key_slot(&key), &key)?;
    match (&e.value, field) {
        (Value::Str(s), None) => Some(s.clone()),
        (Value::Hash(h), Some(f)) => h.get(f).map(Bytes::from),
        _ => None,
    }
}

/// A value as `strtod` reads a whole string (leading spaces, nothing after).
fn score_of(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if t.is_empty() {
        return (s.is_empty()).then_some(0.0);
    }
    let v: f64 = t.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

fn sort(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    sort_generic(ctx, args, false);
}
fn sort_ro(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    sort_generic(ctx, args, true);
}

/// The elements to sort, as stored (a sorted set by score).
fn elements(v: &Value) -> Result<(Vec<Bytes>, bool), &'static str> {
    Ok(match v {
        Value::List(l) => (l.iter().cloned().collect(), false),
        Value::Set(s) => (s.iter().cloned().collect(), true),
        Value::ZSet(z) => (z.iter().map(|(m, _)| Bytes::from(m)).collect(), false),
        _ => return Err(WRONGTYPE),
    })
}

fn sort_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, readonly: bool) {
    let slot = ctx.slot();
    let mut o = try_reply!(ctx, parse(args, readonly, slot));
    let (mut elems, is_set) = match ctx.store.get(slot, args.get(1)) {
        None => (Vec::new(), false),
        Some(e) => try_reply!(ctx, elements(&e.value)),
    };
    // A set has no order of its own: what is stored is sorted, so that a
    // replica or a script sees the same.
    if o.dont_sort && is_set && o.store.is_some() {
        o.dont_sort = false;
        o.alpha = true;
        o.by = None;
    }
    let len = elems.len() as i64;
    let (start, count) = o.limit.unwrap_or((0, -1));
    let mut start = start.max(0);
    let mut end = if count < 0 {
        len - 1
    } else {
        start.saturating_add(count - 1)
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    end = end.min(len - 1);
    if o.dont_sort {
        if o.desc {
            elems.reverse();
        }
    } else {
        let mut keyed = Vec::with_capacity(elems.len());
        let mut bad = false;
        for e in elems {
            let by = match o.by {
                Some(p) => lookup(ctx, p, &e),
                None => Some(e.clone()),
            };
            let score = if o.alpha {
                0.0
            } else {
                match by.as_deref().map(score_of) {
                    Some(Some(s)) => s,
                    Some(None) => {
                        bad = true;
                        0.0
                    }
                    None => 0.0,
                }
            };
            keyed.push((e, by, score));
        }
        if bad {
            return ctx
                .out
                .error("ERR One or more scores can't be converted into double");
        }
        let by_pattern = o.by.is_some();
        keyed.sort_by(|a, b| {
            let c = if !o.alpha {
                a.2.partial_cmp(&b.2)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| a.0.cmp(&b.0))
            } else if by_pattern {
                match (&a.1, &b.1) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (None, None) => Ordering::Equal,
                    (None, _) => Ordering::Less,
                    (_, None) => Ordering::Greater,
                }
            } else {
                a.0.cmp(&b.0)
            };
            if o.desc {
                c.reverse()
            } else {
                c
            }
        });
        elems = keyed.into_iter().map(|k| k.0).collect();
    }
    let picked: Vec<Bytes> = if end >= start && start >= 0 {
        elems[start as usize..=end as usize].to_vec()
    } else {
        Vec::new()
    };
    let mut rows: Vec<Option<Bytes>> = Vec::new();
    for e in &picked {
        if o.gets.is_empty() {
            rows.push(Some(e.clone()));
        }
        for g in &o.gets {
            let v = lookup(ctx, g, e);
            rows.push(v);
        }
    }
    match o.store {
        None => {
            ctx.out.array(rows.len());
            for r in &rows {
                match r {
                    Some(v) => ctx.out.bulk(v),
                    None => ctx.out.null(),
                }
            }
        }
        Some(dst) => store(ctx, slot, dst, rows),
    }
}

/// STORE: the destination becomes the list (deleted when empty), logged as
/// DEL + RPUSH in one record.
fn store(ctx: &mut Ctx<'_>, slot: u16, dst: &[u8], rows: Vec<Option<Bytes>>) {
    let n = rows.len();
    let items: std::collections::VecDeque<Bytes> = rows
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Bytes::from(&b""[..])))
        .collect();
    let existed = ctx.store.get(slot, dst).is_some();
    let mut push: Vec<&[u8]> = vec![b"RPUSH", dst];
    push.extend(items.iter().map(|i| &i[..]));
    let outer = ctx.group.is_some();
    if !outer {
        ctx.group = Some(Vec::new());
    }
    if n > 0 {
        let list = Value::List(Box::new(items.clone()));
        ctx.store.set(slot, dst, list, 0);
        ctx.propagate_as(&[b"DEL", dst]);
        ctx.propagate_as(&push);
    } else if existed {
        ctx.store.remove(slot, dst);
        // An empty result deletes: notified as DEL is.
        ctx.running = "del";
        ctx.propagate_as(&[b"DEL", dst]);
    }
    if !outer {
        let parts = ctx.group.take().unwrap_or_default();
        super::multi::log_group(ctx, Some(slot), parts);
    }
    ctx.out.int(n as i64);
}
