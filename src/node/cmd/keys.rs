//! Generic key commands: DEL, UNLINK, EXISTS, the EXPIRE family, TTL family,
//! PERSIST, TYPE, SCAN, KEYS, RENAME, RENAMENX, RANDOMKEY, COPY, TOUCH.

use rand::Rng;

use super::flags::*;
use super::server::glob_match;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::slots::{key_slot, SLOTS};
use crate::node::store::{ExpireMode, Store};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "del", arity: -2, flags: WRITE, first_key: 1, last_key: -1, step: 1, handler: del },
    CommandSpec { name: "unlink", arity: -2, flags: WRITE | FAST, first_key: 1, last_key: -1, step: 1, handler: del },
    CommandSpec { name: "exists", arity: -2, flags: READONLY | FAST, first_key: 1, last_key: -1, step: 1, handler: exists },
    CommandSpec { name: "expire", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: expire },
    CommandSpec { name: "pexpire", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: pexpire },
    CommandSpec { name: "expireat", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: expireat },
    CommandSpec { name: "pexpireat", arity: -3, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: pexpireat },
    CommandSpec { name: "ttl", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: ttl },
    CommandSpec { name: "pttl", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: pttl },
    CommandSpec { name: "expiretime", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: expiretime },
    CommandSpec { name: "pexpiretime", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: pexpiretime },
    CommandSpec { name: "persist", arity: 2, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: persist },
    CommandSpec { name: "type", arity: 2, flags: READONLY | FAST, first_key: 1, last_key: 1, step: 1, handler: type_ },
    CommandSpec { name: "scan", arity: -2, flags: READONLY, first_key: 0, last_key: 0, step: 0, handler: scan },
    CommandSpec { name: "keys", arity: 2, flags: READONLY, first_key: 0, last_key: 0, step: 0, handler: keys },
    CommandSpec { name: "randomkey", arity: 1, flags: READONLY, first_key: 0, last_key: 0, step: 0, handler: randomkey },
    CommandSpec { name: "rename", arity: 3, flags: WRITE, first_key: 1, last_key: 2, step: 1, handler: rename },
    CommandSpec { name: "renamenx", arity: 3, flags: WRITE | FAST, first_key: 1, last_key: 2, step: 1, handler: renamenx },
    CommandSpec { name: "copy", arity: -3, flags: WRITE | DENYOOM, first_key: 1, last_key: 2, step: 1, handler: copy },
    CommandSpec { name: "touch", arity: -2, flags: READONLY | FAST, first_key: 1, last_key: -1, step: 1, handler: touch },
];

fn del(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let mut removed: Vec<&[u8]> = vec![b"DEL"];
    for key in args.iter().skip(1) {
        // `get` first so an expired key counts as missing.
        if ctx.store.get(slot, key).is_some() {
            ctx.store.remove(slot, key);
            removed.push(key);
        }
    }
    let n = removed.len() - 1;
    if n > 0 {
        ctx.propagate_as(&removed);
    }
    ctx.out.int(n as i64);
}

fn exists(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let n = args
        .iter()
        .skip(1)
        .filter(|k| ctx.store.get(slot, k).is_some())
        .count();
    ctx.out.int(n as i64);
}

/// NX, XX, GT, LT of the EXPIRE family.
#[derive(Default)]
struct Cond {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Cond {
    /// Whether the condition lets `when` replace the deadline `cur` (0 =
    /// persistent, which counts as an infinite TTL for GT and LT).
    fn allows(&self, cur: u64, when: i64) -> bool {
        if self.nx && cur != 0 {
            return false;
        }
        if self.xx && cur == 0 {
            return false;
        }
        if self.gt && (cur == 0 || when <= cur as i64) {
            return false;
        }
        if self.lt && cur != 0 && when >= cur as i64 {
            return false;
        }
        true
    }
}

fn parse_cond(args: &Args<'_>) -> Result<Cond, String> {
    let mut c = Cond::default();
    for a in args.iter().skip(3) {
        if a.eq_ignore_ascii_case(b"nx") {
            c.nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            c.xx = true;
        } else if a.eq_ignore_ascii_case(b"gt") {
            c.gt = true;
        } else if a.eq_ignore_ascii_case(b"lt") {
            c.lt = true;
        } else {
            return Err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(a)
            ));
        }
    }
    if c.nx && (c.xx || c.gt || c.lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if c.gt && c.lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    Ok(c)
}

fn expire_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, unit_ms: i64, relative: bool, name: &str) {
    // Options are checked before the time (Redis' order).
    let cond = match parse_cond(args) {
        Ok(c) => c,
        Err(e) => {
            ctx.out.error(&e);
            return;
        }
    };
    let n = try_reply!(ctx, args.int(2));
    let now = ctx.store.now_ms as i64;
    let invalid = format!("ERR invalid expire time in '{name}' command");
    let Some(mut when) = n.checked_mul(unit_ms) else {
        ctx.out.error(&invalid);
        return;
    };
    if relative {
        match when.checked_add(now) {
            Some(w) => when = w,
            None => {
                ctx.out.error(&invalid);
                return;
            }
        }
    }
    let slot = ctx.slot();
    let key = args.get(1);
    let Some(e) = ctx.store.get(slot, key) else {
        ctx.out.int(0);
        return;
    };
    let cur = e.expire_at();
    if !cond.allows(cur, when) {
        ctx.out.int(0);
        return;
    }
    if when <= now && !ctx.replaying {
        ctx.store.remove(slot, key);
        ctx.propagate_as(&[b"DEL", key]);
    } else {
        // A time before the epoch while replaying: the earliest deadline.
        let at = when.max(1) as u64;
        ctx.store.set_expire(slot, key, at);
        let s = at.to_string();
        ctx.propagate_as(&[b"PEXPIREAT", key, s.as_bytes()]);
    }
    ctx.out.int(1);
}

fn expire(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, 1000, true, "expire");
}
fn pexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, 1, true, "pexpire");
}
fn expireat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, 1000, false, "expireat");
}
fn pexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    expire_generic(ctx, args, 1, false, "pexpireat");
}

fn ttl_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, ms: bool, absolute: bool) {
    let slot = ctx.slot();
    let now = ctx.store.now_ms as i64;
    let Some(e) = ctx.store.get(slot, args.get(1)) else {
        ctx.out.int(-2);
        return;
    };
    let at = e.expire_at();
    if at == 0 {
        ctx.out.int(-1);
        return;
    }
    let t = if absolute {
        at as i64
    } else {
        (at as i64 - now).max(0)
    };
    ctx.out.int(if ms { t } else { (t + 500) / 1000 });
}

fn ttl(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, false, false);
}
fn pttl(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, true, false);
}
fn expiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, false, true);
}
fn pexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ttl_generic(ctx, args, true, true);
}

fn persist(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let key = args.get(1);
    let had_ttl = ctx.store.get(slot, key).is_some_and(|e| e.expire_at() != 0);
    if had_ttl {
        ctx.store.set_expire(slot, key, 0);
        ctx.propagate(args);
    }
    ctx.out.bool_int(had_ttl);
}

fn type_(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let name = ctx
        .store
        .get(slot, args.get(1))
        .map_or("none", |e| e.value.type_name());
    ctx.out.simple(name);
}

fn scan(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let cursor: u64 = match std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(c) => c,
        None => {
            ctx.out.error("ERR invalid cursor");
            return;
        }
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut type_filter: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        if args.is(i, "count") {
            let n = try_reply!(ctx, args.int(i + 1));
            if n < 1 {
                ctx.out.error(ERR_SYNTAX);
                return;
            }
            count = n as usize;
        } else if args.is(i, "match") {
            pattern = Some(args.get(i + 1)).filter(|p| *p != b"*");
        } else if args.is(i, "type") {
            type_filter = Some(args.get(i + 1));
        } else {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        i += 2;
    }
    let (next, keys) = ctx.store.scan(cursor, count, |k, v| {
        pattern.is_none_or(|p| glob_match(p, k))
            && type_filter.is_none_or(|t| t.eq_ignore_ascii_case(v.type_name().as_bytes()))
    });
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k);
    }
}

/// KEYS streams its reply from the keyspace: two passes (the count goes
/// first) instead of a copy of every matching key, and the second stops
/// once the reply passes its bound.
fn keys(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let pattern = args.get(1);
    ctx.out.array(matching_keys(ctx.store, pattern).count());
    for k in matching_keys(ctx.store, pattern) {
        ctx.out.bulk(k);
        if ctx.out.full() {
            break;
        }
    }
}

/// Live keys matching a glob pattern, in slot order.
fn matching_keys<'s>(store: &'s Store, pattern: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
    let now = store.now_ms;
    let active = store.mode == ExpireMode::Active;
    let all = pattern == b"*";
    (0..SLOTS as u16).flat_map(move |slot| {
        store
            .slot_entries(slot)
            .filter(move |(k, e)| {
                let expired = active && e.expire_at() != 0 && e.expire_at() <= now;
                !expired && (all || glob_match(pattern, k))
            })
            .map(|(k, _)| k)
    })
}

fn randomkey(ctx: &mut Ctx<'_>, _args: &Args<'_>) {
    if ctx.store.is_empty() {
        ctx.out.null();
        return;
    }
    let slot: u64 = rand::thread_rng().gen_range(0..SLOTS as u64);
    let h: u64 = rand::thread_rng().gen_range(0..=u32::MAX as u64);
    let mut found = ctx.store.scan((slot << 32) | h, 1, |_, _| true).1;
    if found.is_empty() {
        found = ctx.store.scan(0, 1, |_, _| true).1;
    }
    match found.first() {
        Some(k) => {
            let k = k.clone();
            // Lazily expire it if its time has come (scan skips expired keys).
            let _ = ctx.store.get(key_slot(&k), &k);
            ctx.out.bulk(&k)
        }
        None => ctx.out.null(),
    }
}

/// Moves `src` to `dst` (same slot), keeping the TTL. Ok(false) when `nx`
/// and `dst` exists.
fn rename_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, nx: bool) -> Result<bool, &'static str> {
    let slot = ctx.slot();
    let (src, dst) = (args.get(1), args.get(2));
    if ctx.store.get(slot, src).is_none() {
        return Err("ERR no such key");
    }
    if src == dst {
        return Ok(!nx);
    }
    if nx && ctx.store.get(slot, dst).is_some() {
        return Ok(false);
    }
    let e = ctx
        .store
        .remove(slot, src)
        .expect("the source key was found just above");
    let at = e.expire_at();
    ctx.store.set(slot, dst, e.value, at);
    ctx.propagate(args);
    Ok(true)
}

fn rename(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    try_reply!(ctx, rename_generic(ctx, args, false));
    ctx.out.ok();
}

fn renamenx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let done = try_reply!(ctx, rename_generic(ctx, args, true));
    ctx.out.bool_int(done);
}

/// COPY's options: REPLACE, and DB (only 0 in cluster mode).
fn parse_copy(args: &Args<'_>) -> Result<bool, &'static str> {
    let (mut replace, mut db) = (false, 0i64);
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "replace") {
            replace = true;
        } else if args.is(i, "db") && i + 1 < args.len() {
            // Redis' getIntFromObject: a long, then the int range.
            db = args.int(i + 1)?;
            if i32::try_from(db).is_err() {
                return Err(
                    "ERR value is out of range, value must between -2147483648 and 2147483647",
                );
            }
            i += 1;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    if db != 0 {
        return Err("ERR Copying to another database is not allowed in cluster mode");
    }
    Ok(replace)
}

fn copy(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let replace = try_reply!(ctx, parse_copy(args));
    let (slot, src, dst) = (ctx.slot(), args.get(1), args.get(2));
    if src == dst {
        ctx.out
            .error("ERR source and destination objects are the same");
        return;
    }
    let Some((value, at)) = ctx
        .store
        .get(slot, src)
        .map(|e| (e.value.clone(), e.expire_at()))
    else {
        ctx.out.int(0);
        return;
    };
    if !replace && ctx.store.get(slot, dst).is_some() {
        ctx.out.int(0);
        return;
    }
    // The copy keeps the source's absolute deadline.
    ctx.store.set(slot, dst, value, at);
    // Deterministic given the same keys: logged as received.
    ctx.propagate(args);
    ctx.out.int(1);
}

/// TOUCH: how many of the keys exist (an access time is not kept).
fn touch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let n = args
        .iter()
        .skip(1)
        .filter(|k| ctx.store.get(slot, k).is_some())
        .count();
    ctx.out.int(n as i64);
}
