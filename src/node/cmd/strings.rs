//! String commands: GET, SET, GETDEL, GETEX, MGET, MSET, MSETNX, INCR family,
//! INCRBYFLOAT, APPEND, STRLEN, GETRANGE/SUBSTR, SETRANGE.

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::node::store::{Store, Value, WRONGTYPE};
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        arity: 2,
        flags: READONLY | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: get,
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: set,
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: setnx,
    },
    CommandSpec {
        name: "setex",
        arity: 4,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: setex,
    },
    CommandSpec {
        name: "psetex",
        arity: 4,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: psetex,
    },
    CommandSpec {
        name: "getdel",
        arity: 2,
        flags: WRITE | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getdel,
    },
    CommandSpec {
        name: "getset",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getset,
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: READONLY | FAST,
        first_key: 1,
        last_key: -1,
        step: 1,
        handler: mget,
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: -1,
        step: 2,
        handler: mset,
    },
    CommandSpec {
        name: "incr",
        arity: 2,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: incr,
    },
    CommandSpec {
        name: "decr",
        arity: 2,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: decr,
    },
    CommandSpec {
        name: "incrby",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: incrby,
    },
    CommandSpec {
        name: "decrby",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: decrby,
    },
    CommandSpec {
        name: "append",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: append,
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: READONLY | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: strlen,
    },
    CommandSpec {
        name: "getrange",
        arity: 4,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getrange,
    },
    CommandSpec {
        name: "substr",
        arity: 4,
        flags: READONLY,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getrange,
    },
    CommandSpec {
        name: "setrange",
        arity: 4,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: setrange,
    },
    CommandSpec {
        name: "incrbyfloat",
        arity: 3,
        flags: WRITE | DENYOOM | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: incrbyfloat,
    },
    CommandSpec {
        name: "getex",
        arity: -2,
        flags: WRITE | FAST,
        first_key: 1,
        last_key: 1,
        step: 1,
        handler: getex,
    },
    CommandSpec {
        name: "msetnx",
        arity: -3,
        flags: WRITE | DENYOOM,
        first_key: 1,
        last_key: -1,
        step: 2,
        handler: msetnx,
    },
];

/// The string at `key`: Ok(None) when absent, Err on another type.
fn read_str<'s>(
    store: &'s mut Store,
    slot: u16,
    key: &[u8],
) -> Result<Option<&'s [u8]>, &'static str> {
    match store.get(slot, key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Str(s) => Ok(Some(s)),
            _ => Err(WRONGTYPE),
        },
    }
}

fn get(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    match read_str(ctx.store, slot, args.get(1)) {
        Ok(Some(v)) => ctx.out.bulk(v),
        Ok(None) => ctx.out.null(),
        Err(e) => ctx.out.error(e),
    }
}

/// Milliseconds since the epoch for an expiry option.
fn deadline(now: u64, unit_ms: u64, relative: bool, n: i64) -> Result<u64, &'static str> {
    if n <= 0 {
        return Err("ERR invalid expire time in 'set' command");
    }
    let ms = (n as u64)
        .checked_mul(unit_ms)
        .ok_or("ERR invalid expire time in 'set' command")?;
    let at = if relative {
        now.checked_add(ms)
    } else {
        Some(ms)
    };
    at.filter(|&a| a < i64::MAX as u64)
        .ok_or("ERR invalid expire time in 'set' command")
}

fn set(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let key = args.get(1);
    let (mut nx, mut xx, mut get_old, mut keepttl) = (false, false, false, false);
    let mut expire_at = 0u64;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        let with_arg = |unit: u64, relative: bool| -> Result<u64, &'static str> {
            if i + 1 >= args.len() {
                return Err(ERR_SYNTAX);
            }
            let n = args.int(i + 1)?;
            deadline(ctx.store.now_ms, unit, relative, n)
        };
        if a.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if a.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if a.eq_ignore_ascii_case(b"get") {
            get_old = true;
        } else if a.eq_ignore_ascii_case(b"keepttl") {
            keepttl = true;
        } else if a.eq_ignore_ascii_case(b"ex")
            || a.eq_ignore_ascii_case(b"px")
            || a.eq_ignore_ascii_case(b"exat")
            || a.eq_ignore_ascii_case(b"pxat")
        {
            if expire_at != 0 {
                ctx.out.error(ERR_SYNTAX);
                return;
            }
            let unit = if a[0].eq_ignore_ascii_case(&b'e') {
                1000
            } else {
                1
            };
            let relative = a.len() == 2;
            expire_at = try_reply!(ctx, with_arg(unit, relative));
            i += 1;
        } else {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        i += 1;
    }
    if (nx && xx) || (keepttl && expire_at != 0) {
        ctx.out.error(ERR_SYNTAX);
        return;
    }
    let slot = ctx.slot();
    if !(nx || xx || get_old || keepttl) {
        // The common case: no condition, nothing to read first.
        ctx.store
            .set(slot, key, Value::Str(args.get(2).into()), expire_at);
        propagate_set(ctx, key, args.get(2), expire_at);
        ctx.out.ok();
        return;
    }
    let old: Option<Option<Vec<u8>>> = match ctx.store.get(slot, key) {
        None => None,
        Some(e) => match &e.value {
            Value::Str(s) => Some(Some(s.to_vec())),
            _ if get_old => {
                ctx.out.error(WRONGTYPE);
                return;
            }
            _ => Some(None),
        },
    };
    let exists = old.is_some();
    // NX: only when absent; XX: only when present.
    let applies = if exists { !nx } else { !xx };
    if applies {
        let ttl = if keepttl {
            ctx.store.get(slot, key).map_or(0, |e| e.expire_at())
        } else {
            expire_at
        };
        ctx.store
            .set(slot, key, Value::Str(args.get(2).into()), ttl);
        if ttl != 0 {
            let at = ttl.to_string();
            ctx.propagate_as(&[b"SET", key, args.get(2), b"PXAT", at.as_bytes()]);
        } else {
            ctx.propagate_as(&[b"SET", key, args.get(2)]);
        }
    }
    if get_old {
        match old.flatten() {
            Some(v) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        }
    } else if applies {
        ctx.out.ok();
    } else {
        ctx.out.null();
    }
}

/// Logs a SET with an absolute deadline, so replay never depends on time.
fn propagate_set(ctx: &mut Ctx<'_>, key: &[u8], value: &[u8], expire_at: u64) {
    if expire_at != 0 {
        let at = expire_at.to_string();
        ctx.propagate_as(&[b"SET", key, value, b"PXAT", at.as_bytes()]);
    } else {
        ctx.propagate_as(&[b"SET", key, value]);
    }
}

fn setnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    if ctx.store.contains(slot, args.get(1)) {
        ctx.out.int(0);
        return;
    }
    ctx.store
        .set(slot, args.get(1), Value::Str(args.get(2).into()), 0);
    ctx.propagate_as(&[b"SET", args.get(1), args.get(2)]);
    ctx.out.int(1);
}

fn set_with_ttl(ctx: &mut Ctx<'_>, args: &Args<'_>, unit: u64, name: &str) {
    let n = try_reply!(ctx, args.int(2));
    let at = match deadline(ctx.store.now_ms, unit, true, n) {
        Ok(at) => at,
        Err(_) => {
            ctx.out
                .error(&format!("ERR invalid expire time in '{name}' command"));
            return;
        }
    };
    let slot = ctx.slot();
    ctx.store
        .set(slot, args.get(1), Value::Str(args.get(3).into()), at);
    let at = at.to_string();
    ctx.propagate_as(&[b"SET", args.get(1), args.get(3), b"PXAT", at.as_bytes()]);
    ctx.out.ok();
}

fn setex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_with_ttl(ctx, args, 1000, "setex");
}
fn psetex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    set_with_ttl(ctx, args, 1, "psetex");
}

fn getdel(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let v = match try_reply!(ctx, read_str(ctx.store, slot, args.get(1))) {
        Some(v) => v.to_vec(),
        None => {
            ctx.out.null();
            return;
        }
    };
    ctx.store.remove(slot, args.get(1));
    ctx.propagate_as(&[b"DEL", args.get(1)]);
    ctx.out.bulk(&v);
}

fn getset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let old = try_reply!(ctx, read_str(ctx.store, slot, args.get(1))).map(|v| v.to_vec());
    ctx.store
        .set(slot, args.get(1), Value::Str(args.get(2).into()), 0);
    ctx.propagate_as(&[b"SET", args.get(1), args.get(2)]);
    match old {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.null(),
    }
}

fn mget(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    ctx.out.array(args.len() - 1);
    for key in args.iter().skip(1) {
        match ctx.store.get(slot, key).map(|e| &e.value) {
            Some(Value::Str(s)) => ctx.out.bulk(s),
            _ => ctx.out.null(),
        }
    }
}

fn mset(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() % 2 == 0 {
        ctx.out
            .error("ERR wrong number of arguments for 'mset' command");
        return;
    }
    let slot = ctx.slot();
    let mut i = 1;
    while i + 1 < args.len() {
        ctx.store
            .set(slot, args.get(i), Value::Str(args.get(i + 1).into()), 0);
        i += 2;
    }
    ctx.propagate(args);
    ctx.out.ok();
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) {
    let slot = ctx.slot();
    let (cur, ttl) = match ctx.store.get(slot, key) {
        None => (0, 0),
        Some(e) => match &e.value {
            Value::Str(s) => match super::parse_i64(s) {
                Some(n) => (n, e.expire_at()),
                None => {
                    ctx.out.error(ERR_NOT_INTEGER);
                    return;
                }
            },
            _ => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        },
    };
    let Some(next) = cur.checked_add(delta) else {
        ctx.out.error("ERR increment or decrement would overflow");
        return;
    };
    let text = next.to_string();
    ctx.store
        .set(slot, key, Value::Str(text.as_bytes().into()), ttl);
    // Logged as the resulting value: replay never re-derives it.
    if ttl != 0 {
        let at = ttl.to_string();
        ctx.propagate_as(&[b"SET", key, text.as_bytes(), b"PXAT", at.as_bytes()]);
    } else {
        ctx.propagate_as(&[b"SET", key, text.as_bytes()]);
    }
    ctx.out.int(next);
}

fn incr(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    incr_by(ctx, args.get(1), 1);
}
fn decr(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    incr_by(ctx, args.get(1), -1);
}
fn incrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = try_reply!(ctx, args.int(2));
    incr_by(ctx, args.get(1), n);
}
fn decrby(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = try_reply!(ctx, args.int(2));
    let Some(n) = n.checked_neg() else {
        ctx.out.error("ERR decrement would overflow");
        return;
    };
    incr_by(ctx, args.get(1), n);
}

fn append(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let key = args.get(1);
    let len = match ctx.store.get_mut(slot, key) {
        None => {
            ctx.store.set(slot, key, Value::Str(args.get(2).into()), 0);
            args.get(2).len()
        }
        Some(e) => match &mut e.value {
            // Redis' checkStringLength: no string grows past the largest
            // bulk a client may send (the log replays what was accepted).
            Value::Str(s)
                if !ctx.replaying
                    && s.len().saturating_add(args.get(2).len()) > crate::node::resp::MAX_BULK =>
            {
                ctx.out
                    .error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
                return;
            }
            Value::Str(s) => {
                let mut v = std::mem::take(s).into_vec();
                v.extend_from_slice(args.get(2));
                let n = v.len();
                *s = v.into_boxed_slice();
                n
            }
            _ => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        },
    };
    ctx.propagate(args);
    ctx.out.int(len as i64);
}

fn strlen(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let n = try_reply!(ctx, read_str(ctx.store, slot, args.get(1))).map_or(0, |v| v.len());
    ctx.out.int(n as i64);
}

const ERR_TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Redis' getrangeCommand: indexes parsed before the key is looked up, a
/// missing key is an empty string.
fn getrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let start = try_reply!(ctx, args.int(2));
    let end = try_reply!(ctx, args.int(3));
    let slot = ctx.slot();
    let s = try_reply!(ctx, read_str(ctx.store, slot, args.get(1))).unwrap_or(&[]);
    match clamp_range(start, end, s.len() as i64) {
        Some((a, b)) => ctx.out.bulk(&s[a..=b]),
        None => ctx.out.bulk(b""),
    }
}

/// Redis' range rule for GETRANGE (and, in bytes or bits, BITCOUNT and
/// BITPOS): negative indexes count from the end, then both are clamped.
/// None: the range is empty.
pub(super) fn clamp_range(start: i64, end: i64, len: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    clamp_indexes(start, end, len)
}

/// [`clamp_range`] without its shortcut for two negative indexes.
pub(super) fn clamp_indexes(mut start: i64, mut end: i64, len: i64) -> Option<(usize, usize)> {
    if start < 0 {
        start = start.saturating_add(len);
    }
    if end < 0 {
        end = end.saturating_add(len);
    }
    let start = start.max(0);
    let end = end.max(0).min(len - 1);
    if start > end || len == 0 {
        return None;
    }
    Some((start as usize, end as usize))
}

fn setrange(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let offset = try_reply!(ctx, args.int(2));
    if offset < 0 {
        ctx.out.error("ERR offset is out of range");
        return;
    }
    let (slot, key, value) = (ctx.slot(), args.get(1), args.get(3));
    let cur_len = try_reply!(ctx, read_str(ctx.store, slot, key)).map(|s| s.len());
    // An empty value changes nothing (and creates nothing): Redis answers
    // the current length before any size check.
    if value.is_empty() {
        ctx.out.int(cur_len.unwrap_or(0) as i64);
        return;
    }
    // Redis' checkStringLength, before anything is allocated.
    let offset = offset as u64;
    if offset.saturating_add(value.len() as u64) > crate::node::resp::MAX_BULK as u64 {
        ctx.out.error(ERR_TOO_BIG);
        return;
    }
    let offset = offset as usize;
    let new_len = match ctx.store.get_mut(slot, key).map(|e| &mut e.value) {
        Some(Value::Str(s)) => {
            let mut v = std::mem::take(s).into_vec();
            if v.len() < offset + value.len() {
                v.resize(offset + value.len(), 0);
            }
            v[offset..offset + value.len()].copy_from_slice(value);
            let n = v.len();
            *s = v.into_boxed_slice();
            n
        }
        _ => {
            let mut v = vec![0u8; offset + value.len()];
            v[offset..].copy_from_slice(value);
            let n = v.len();
            ctx.store
                .set(slot, key, Value::Str(v.into_boxed_slice()), 0);
            n
        }
    };
    // Deterministic: logged as received.
    ctx.propagate(args);
    ctx.out.int(new_len as i64);
}

/// Formats an INCRBYFLOAT result the way Redis prints it (no exponent, no
/// trailing zeros): the shortest decimal that reads back as the same f64.
fn fmt_float(v: f64) -> String {
    format!("{v}")
}

fn incrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (slot, key) = (ctx.slot(), args.get(1));
    let (cur, ttl) = match ctx.store.get(slot, key) {
        None => (0.0, 0),
        Some(e) => match &e.value {
            Value::Str(s) => match super::parse_f64(s) {
                Some(n) => (n, e.expire_at()),
                None => {
                    ctx.out.error(super::ERR_NOT_FLOAT);
                    return;
                }
            },
            _ => {
                ctx.out.error(WRONGTYPE);
                return;
            }
        },
    };
    let incr = try_reply!(ctx, args.float(2));
    let next = cur + incr;
    if !next.is_finite() {
        ctx.out.error("ERR increment would produce NaN or Infinity");
        return;
    }
    let text = fmt_float(next);
    ctx.store
        .set(slot, key, Value::Str(text.as_bytes().into()), ttl);
    // Logged as the resulting value, as Redis does: float arithmetic is
    // never redone on replay.
    propagate_set(ctx, key, text.as_bytes(), ttl);
    ctx.out.bulk(text.as_bytes());
}

/// GETEX's expiry option.
enum ExOpt {
    Keep,
    Persist,
    /// Unit in ms, relative, the argument's index.
    Expire(u64, bool, usize),
}

fn parse_getex(args: &Args<'_>) -> Result<ExOpt, &'static str> {
    let mut opt = ExOpt::Keep;
    let mut i = 2;
    while i < args.len() {
        let a = args.get(i);
        let has_next = i + 1 < args.len();
        let timed = [&b"ex"[..], b"px", b"exat", b"pxat"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w));
        // One option at most, as Redis' parser allows.
        if timed && has_next && matches!(opt, ExOpt::Keep) {
            let unit = if a[0].eq_ignore_ascii_case(&b'e') {
                1000
            } else {
                1
            };
            opt = ExOpt::Expire(unit, a.len() == 2, i + 1);
            i += 1;
        } else if a.eq_ignore_ascii_case(b"persist") && matches!(opt, ExOpt::Keep) {
            opt = ExOpt::Persist;
        } else {
            return Err(ERR_SYNTAX);
        }
        i += 1;
    }
    Ok(opt)
}

fn getex(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let opt = try_reply!(ctx, parse_getex(args));
    let (slot, key) = (ctx.slot(), args.get(1));
    // Redis checks the key and its type before the expiry's value.
    let Some(v) = try_reply!(ctx, read_str(ctx.store, slot, key)).map(|v| v.to_vec()) else {
        ctx.out.null();
        return;
    };
    match opt {
        ExOpt::Keep => {}
        ExOpt::Persist => {
            if ctx.store.get(slot, key).is_some_and(|e| e.expire_at() != 0) {
                ctx.store.set_expire(slot, key, 0);
                ctx.propagate_as(&[b"PERSIST", key]);
            }
        }
        ExOpt::Expire(unit, relative, i) => {
            let n = try_reply!(ctx, args.int(i));
            let Ok(at) = deadline(ctx.store.now_ms, unit, relative, n) else {
                ctx.out.error("ERR invalid expire time in 'getex' command");
                return;
            };
            // An absolute time already past deletes the key (the value is
            // still the reply), logged as the DEL it is.
            if at <= ctx.store.now_ms {
                ctx.store.remove(slot, key);
                ctx.propagate_as(&[b"DEL", key]);
            } else {
                ctx.store.set_expire(slot, key, at);
                let s = at.to_string();
                ctx.propagate_as(&[b"PEXPIREAT", key, s.as_bytes()]);
            }
        }
    }
    ctx.out.bulk(&v);
}

fn msetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.len() % 2 == 0 {
        ctx.out
            .error("ERR wrong number of arguments for 'msetnx' command");
        return;
    }
    let slot = ctx.slot();
    let mut i = 1;
    while i < args.len() {
        if ctx.store.contains(slot, args.get(i)) {
            ctx.out.int(0);
            return;
        }
        i += 2;
    }
    let mut i = 1;
    while i + 1 < args.len() {
        ctx.store
            .set(slot, args.get(i), Value::Str(args.get(i + 1).into()), 0);
        i += 2;
    }
    // Replayed as the MSET it became: the log never re-checks existence.
    let mut log: Vec<&[u8]> = args.iter().collect();
    log[0] = b"MSET";
    ctx.propagate_as(&log);
    ctx.out.int(1);
}
