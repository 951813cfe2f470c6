//! XREADGROUP and XREAD: entries of one or more streams, for a consumer of
//! a group (new entries with `>`, or its pending history) or for anyone
//! (after an ID, `$`: what comes next); BLOCK waits like the blocking pops
//! (`node::blocking`, FIFO per key, no cost while idle).

use std::ops::Bound;

use super::flags::*;
use super::stream_groups::{consumer_created, log, next_id, nogroup, reply_entry};
use super::stream_log::Ops;
use super::streams::{modify, parse_id, ERR_INVALID_ID};
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::store::{Bytes, StreamId};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "xreadgroup", arity: -7, flags: WRITE | STREAMS_KEYS, first_key: 0, last_key: 0, step: 0, handler: xreadgroup },
    CommandSpec { name: "xread", arity: -4, flags: READONLY | STREAMS_KEYS, first_key: 0, last_key: 0, step: 0, handler: xread },
];

/// Where XREADGROUP's (and XREAD's) keys are: after `STREAMS`, half of the
/// remaining arguments (as Redis finds them; None when malformed).
pub fn streams_keys<'a>(
    argc: usize,
    arg: impl Fn(usize) -> Option<&'a [u8]>,
) -> Option<(usize, usize)> {
    let mut i = 1;
    while i < argc {
        let a = arg(i)?;
        if a.eq_ignore_ascii_case(b"block") || a.eq_ignore_ascii_case(b"count") {
            i += 2;
        } else if a.eq_ignore_ascii_case(b"group") {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"noack") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"streams") {
            let n = argc - i - 1;
            return (n > 0 && n % 2 == 0).then_some((i + 1, n / 2));
        } else {
            return None;
        }
    }
    None
}

struct ReadGroup<'a> {
    group: &'a [u8],
    consumer: &'a [u8],
    count: usize,
    noack: bool,
    timeout: Option<Option<std::time::Duration>>,
    keys_at: usize,
    nkeys: usize,
}

/// XREADGROUP's options (`group`), or XREAD's.
fn parse_readgroup<'a>(args: &Args<'a>, group: bool) -> Result<ReadGroup<'a>, String> {
    let mut r = ReadGroup {
        group: b"",
        consumer: b"",
        count: 0,
        noack: false,
        timeout: None,
        keys_at: 0,
        nkeys: 0,
    };
    let mut has_group = false;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        if args.is(i, "block") && more > 0 {
            i += 1;
            let ms = args
                .int(i)
                .map_err(|_| "ERR timeout is not an integer or out of range".to_string())?;
            if ms < 0 {
                return Err("ERR timeout is negative".into());
            }
            r.timeout = Some((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)));
        } else if args.is(i, "count") && more > 0 {
            i += 1;
            r.count = args.int(i).map_err(str::to_string)?.max(0) as usize;
        } else if args.is(i, "streams") && more > 0 {
            if more % 2 != 0 {
                return Err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.".into());
            }
            r.keys_at = i + 1;
            r.nkeys = more / 2;
            break;
        } else if args.is(i, "group") && more >= 2 {
            if !group {
                return Err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.".into());
            }
            r.group = args.get(i + 1);
            r.consumer = args.get(i + 2);
            has_group = true;
            i += 2;
        } else if args.is(i, "noack") {
            if !group {
                return Err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.".into());
            }
            r.noack = true;
        } else {
            return Err(ERR_SYNTAX.into());
        }
        i += 1;
    }
    if r.keys_at == 0 {
        return Err(ERR_SYNTAX.into());
    }
    if group && !has_group {
        return Err("ERR Missing GROUP option for XREADGROUP".into());
    }
    Ok(r)
}

/// What one stream of an XREADGROUP serves: new entries (`>`) or the
/// consumer's history after an ID.
enum Want {
    New,
    History(StreamId),
}

fn xreadgroup(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let r = match parse_readgroup(args, true) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let Some(slot) = ctx.slot else {
        return ctx.out.error(ERR_SYNTAX);
    };
    // Run again after blocking: a key or group gone since gets Redis'
    // unblocking errors.
    let rerun = ctx.conn.block.is_some();
    let mut wants = Vec::with_capacity(r.nkeys);
    for k in 0..r.nkeys {
        let key = args.get(r.keys_at + k);
        let has = match try_reply!(ctx, modify(ctx.store, slot, key)) {
            Some(s) => Some(s.groups.contains_key(r.group)),
            None => None,
        };
        match has {
            None if rerun => return ctx.out.error("UNBLOCKED the stream key no longer exists"),
            Some(false) if rerun => {
                return ctx.out.error(
                    "NOGROUP the consumer group this client was blocked on no longer exists",
                )
            }
            _ => {}
        }
        if has != Some(true) {
            return ctx.out.error(&format!(
                "{} in XREADGROUP with GROUP option",
                nogroup(key, r.group)
            ));
        }
        let id = args.get(r.keys_at + r.nkeys + k);
        wants.push(match id {
            b"$" => return ctx.out.error("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."),
            b">" => Want::New,
            _ => Want::History(try_reply!(ctx, parse_id(id, 0).ok_or(ERR_INVALID_ID))),
        });
    }
    // Which streams have something to serve (history reads always answer).
    let mut serve = Vec::new();
    for (k, want) in wants.iter().enumerate() {
        let key = args.get(r.keys_at + k);
        let Ok(Some(s)) = modify(ctx.store, slot, key) else {
            continue;
        };
        let ready = match want {
            Want::History(_) => true,
            Want::New => s.groups.get(r.group).is_some_and(|g| {
                s.entries
                    .range((Bound::Excluded(g.last_id), Bound::Unbounded))
                    .next()
                    .is_some()
            }),
        };
        if ready {
            serve.push(k);
        }
    }
    if serve.is_empty() {
        if let Some(timeout) = r.timeout {
            let keys: Vec<&[u8]> = (0..r.nkeys).map(|k| args.get(r.keys_at + k)).collect();
            return super::blocking::block_or_nil(ctx, &keys, timeout);
        }
        return ctx.out.null_array();
    }
    reply_streams(ctx, serve.len());
    let resp3 = ctx.out.resp3;
    for k in serve {
        let key = args.get(r.keys_at + k);
        if !resp3 {
            ctx.out.array(2);
        }
        ctx.out.bulk(key);
        read_one(ctx, slot, key, &r, &wants[k]);
    }
}

/// Serves one stream of an XREADGROUP and logs what it changed.
fn read_one(ctx: &mut Ctx<'_>, slot: u16, key: &[u8], r: &ReadGroup<'_>, want: &Want) {
    let now = ctx.store.now_ms;
    let (node, replaying) = (ctx.node, ctx.replaying);
    let limit = if r.count == 0 { usize::MAX } else { r.count };
    let Ok(Some(s)) = modify(ctx.store, slot, key) else {
        return ctx.out.array(0);
    };
    let Some(mut g) = s.groups.remove(r.group) else {
        return ctx.out.array(0);
    };
    let mut ops = Ops::default();
    let (c, created) = g.consumer(r.consumer, now);
    c.seen_time = now;
    if created {
        consumer_created(node, replaying, key);
    }
    ops.consumer(r.group, r.consumer, now);
    let mut items: Vec<(StreamId, bool)> = Vec::new();
    match want {
        Want::New => {
            let ids: Vec<StreamId> = s
                .entries
                .range((Bound::Excluded(g.last_id), Bound::Unbounded))
                .take(limit)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                s.advance_group(&mut g, id);
                if !r.noack {
                    g.set_pending(id, r.consumer, now, 1);
                    ops.pending(r.group, id, &g.pel[&id]);
                }
                items.push((id, true));
            }
            ops.group(r.group, &g);
        }
        Want::History(after) => {
            let ids: Vec<StreamId> = match (g.consumers.get(r.consumer), next_id(*after)) {
                (Some(c), Some(from)) => c.pel.range(from..).take(limit).copied().collect(),
                _ => Vec::new(),
            };
            for id in ids {
                let exists = s.entries.contains_key(&id);
                if exists {
                    if let Some(p) = g.pel.get_mut(&id) {
                        p.delivery_time = now;
                        p.delivery_count += 1;
                        ops.pending(r.group, id, p);
                    }
                }
                items.push((id, exists));
            }
        }
    }
    ctx.out.array(items.len());
    for (id, exists) in items {
        let fields = if exists { s.entries.get(&id) } else { None };
        reply_entry(ctx.out, id, fields);
    }
    s.groups.insert(Bytes::from(r.group), g);
    log(ctx, key, &ops);
}

/// Starts the reply for `n` streams: RESP3 a map of key → entries, RESP2
/// a list of `[key, entries]` pairs.
fn reply_streams(ctx: &mut Ctx<'_>, n: usize) {
    if ctx.out.resp3 {
        ctx.out.map(n);
    } else {
        ctx.out.array(n);
    }
}

fn xread(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let r = match parse_readgroup(args, false) {
        Ok(r) => r,
        Err(e) => return ctx.out.error(&e),
    };
    let Some(slot) = ctx.slot else {
        return ctx.out.error(ERR_SYNTAX);
    };
    // `$` means "after the last entry when the command first ran": a
    // blocked XREAD runs again with the IDs it resolved then.
    let stashed = ctx.conn.block.as_ref().and_then(|b| b.stream_ids.clone());
    let mut after = Vec::with_capacity(r.nkeys);
    for k in 0..r.nkeys {
        let key = args.get(r.keys_at + k);
        let last = try_reply!(ctx, super::streams::read(ctx.store, slot, key)).map(|s| s.last_id);
        after.push(match args.get(r.keys_at + r.nkeys + k) {
            b"$" => last.unwrap_or_default(),
            b">" => return ctx.out.error("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."),
            id => try_reply!(ctx, parse_id(id, 0).ok_or(ERR_INVALID_ID)),
        });
    }
    if let Some(ids) = stashed.filter(|ids| ids.len() == after.len()) {
        after = ids;
    }
    let limit = if r.count == 0 { usize::MAX } else { r.count };
    // The streams with an entry after their ID.
    let mut found = Vec::new();
    for (k, from) in after.iter().enumerate() {
        let key = args.get(r.keys_at + k);
        if let Ok(Some(s)) = super::streams::read(ctx.store, slot, key) {
            if s.entries
                .range((Bound::Excluded(*from), Bound::Unbounded))
                .next()
                .is_some()
            {
                found.push(k);
            }
        }
    }
    if found.is_empty() {
        if let Some(timeout) = r.timeout {
            let keys: Vec<&[u8]> = (0..r.nkeys).map(|k| args.get(r.keys_at + k)).collect();
            super::blocking::block_or_nil(ctx, &keys, timeout);
            if let Some(b) = ctx.conn.block.as_mut() {
                b.stream_ids.get_or_insert(after);
            }
            return;
        }
        return ctx.out.null_array();
    }
    reply_streams(ctx, found.len());
    let resp3 = ctx.out.resp3;
    for k in found {
        let key = args.get(r.keys_at + k);
        if !resp3 {
            ctx.out.array(2);
        }
        ctx.out.bulk(key);
        let Ok(Some(s)) = super::streams::read(ctx.store, slot, key) else {
            ctx.out.array(0);
            continue;
        };
        let items = s
            .entries
            .range((Bound::Excluded(after[k]), Bound::Unbounded))
            .take(limit);
        ctx.out.array(items.clone().count());
        for (id, f) in items {
            reply_entry(ctx.out, *id, Some(f));
        }
    }
}
