//! Stream consumer groups, the reads: XPENDING and XINFO.
//!
//! XINFO STREAM's `radix-tree-keys` / `radix-tree-nodes` describe Redis'
//! own encoding (listpacks in a radix tree); the node answers what that
//! encoding would hold with its default node size (100 entries), not a
//! measurement of anything here.

use super::flags::*;
use super::stream_groups::{next_id, parse_interval, reply_entry};
use super::streams::{fmt_id, read};
use super::{Args, CommandSpec, Ctx, ERR_NOT_INTEGER};
use crate::node::groups::{Group, ENTRIES_READ_UNKNOWN};
use crate::node::resp::ReplyBuf;
use crate::node::store::{Stream, StreamId};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "xpending", arity: -3, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: xpending },
    CommandSpec { name: "xinfo", arity: -2, flags: READONLY, first_key: 2, last_key: 2, step: 1, handler: xinfo },
];

fn xpending(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = args.len();
    if n != 3 && !(6..=9).contains(&n) {
        return ctx.out.error(super::ERR_SYNTAX);
    }
    let (mut start, mut end, mut count, mut min_idle) =
        (StreamId::default(), StreamId::default(), 0i64, 0i64);
    let mut consumer = None;
    if n >= 6 {
        let mut at = 3;
        if args.is(3, "idle") {
            min_idle = try_reply!(ctx, args.int(4));
            if n < 8 {
                return ctx.out.error(super::ERR_SYNTAX);
            }
            at += 2;
        }
        count = try_reply!(ctx, args.int(at + 2)).max(0);
        let (s, ex) = try_reply!(ctx, parse_interval(args.get(at), 0, true));
        start = match (ex, next_id(s)) {
            (false, _) => s,
            (true, Some(s)) => s,
            (true, None) => return ctx.out.error("ERR invalid start ID for the interval"),
        };
        let (e, ex) = try_reply!(ctx, parse_interval(args.get(at + 1), u64::MAX, true));
        end = match (ex, prev_id(e)) {
            (false, _) => e,
            (true, Some(e)) => e,
            (true, None) => return ctx.out.error("ERR invalid end ID for the interval"),
        };
        if at + 3 < n {
            consumer = Some(args.get(at + 3));
        }
    }
    let (key, gname) = (args.get(1), args.get(2));
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let Some(g) = try_reply!(ctx, read(ctx.store, slot, key)).and_then(|s| s.groups.get(gname))
    else {
        return ctx.out.error(&format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        ));
    };
    if n == 3 {
        ctx.out.array(4);
        ctx.out.int(g.pel.len() as i64);
        match (g.pel.first_key_value(), g.pel.last_key_value()) {
            (Some((first, _)), Some((last, _))) => {
                ctx.out.bulk(fmt_id(*first).as_bytes());
                ctx.out.bulk(fmt_id(*last).as_bytes());
                let owners: Vec<_> = g
                    .consumers
                    .iter()
                    .filter(|(_, c)| !c.pel.is_empty())
                    .collect();
                ctx.out.array(owners.len());
                for (name, c) in owners {
                    ctx.out.array(2);
                    ctx.out.bulk(name);
                    ctx.out.bulk(c.pel.len().to_string().as_bytes());
                }
            }
            _ => {
                ctx.out.null();
                ctx.out.null();
                ctx.out.null_array();
            }
        }
        return;
    }
    let ids: Vec<StreamId> = match consumer {
        Some(name) => match g.consumers.get(name) {
            Some(c) if start <= end => c.pel.range(start..=end).copied().collect(),
            Some(_) => Vec::new(),
            None => return ctx.out.array(0),
        },
        None if start <= end => g.pel.range(start..=end).map(|(id, _)| *id).collect(),
        None => Vec::new(),
    };
    let rows: Vec<_> = ids
        .into_iter()
        .filter_map(|id| g.pel.get(&id).map(|p| (id, p)))
        .filter(|(_, p)| min_idle <= 0 || now as i64 - p.delivery_time as i64 >= min_idle)
        .take(count as usize)
        .collect();
    ctx.out.array(rows.len());
    for (id, p) in rows {
        ctx.out.array(4);
        ctx.out.bulk(fmt_id(id).as_bytes());
        ctx.out.bulk(&p.consumer);
        ctx.out.int((now as i64 - p.delivery_time as i64).max(0));
        ctx.out.int(p.delivery_count as i64);
    }
}

fn prev_id(id: StreamId) -> Option<StreamId> {
    if id.seq > 0 {
        Some(StreamId {
            seq: id.seq - 1,
            ..id
        })
    } else if id.ms > 0 {
        Some(StreamId {
            ms: id.ms - 1,
            seq: u64::MAX,
        })
    } else {
        None
    }
}

const XINFO_HELP: &[&str] = &[
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Print this help.",
];

fn xinfo(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    let arity: i32 = match &sub[..] {
        b"consumers" => 4,
        b"groups" => 3,
        b"stream" => -3,
        b"help" => 2,
        _ => {
            ctx.out.error(&format!(
                "ERR unknown subcommand '{}'. Try XINFO HELP.",
                String::from_utf8_lossy(args.get(1))
            ));
            return;
        }
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for 'xinfo|{}' command",
            String::from_utf8_lossy(&sub)
        ));
        return;
    }
    if sub == b"help" {
        ctx.out.array(XINFO_HELP.len());
        for l in XINFO_HELP {
            ctx.out.simple(l);
        }
        return;
    }
    let key = args.get(2);
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let Some(s) = try_reply!(ctx, read(ctx.store, slot, key)) else {
        return ctx.out.error("ERR no such key");
    };
    let out = &mut *ctx.out;
    match &sub[..] {
        b"consumers" => {
            let gname = args.get(3);
            let Some(g) = s.groups.get(gname) else {
                return out.error(&format!(
                    "NOGROUP No such consumer group '{}' for key name '{}'",
                    String::from_utf8_lossy(gname),
                    String::from_utf8_lossy(key)
                ));
            };
            out.array(g.consumers.len());
            for (name, c) in &g.consumers {
                out.map(3);
                out.bulk(b"name");
                out.bulk(name);
                out.bulk(b"pending");
                out.int(c.pel.len() as i64);
                out.bulk(b"idle");
                out.int((now as i64 - c.seen_time as i64).max(0));
            }
        }
        b"groups" => {
            out.array(s.groups.len());
            for (name, g) in s.groups.iter() {
                out.map(6);
                out.bulk(b"name");
                out.bulk(name);
                out.bulk(b"consumers");
                out.int(g.consumers.len() as i64);
                out.bulk(b"pending");
                out.int(g.pel.len() as i64);
                out.bulk(b"last-delivered-id");
                out.bulk(fmt_id(g.last_id).as_bytes());
                group_counters(out, s, g);
            }
        }
        _ => {
            let full = match args.len() {
                3 => None,
                4 if args.is(3, "full") => Some(10),
                6 if args.is(3, "full") && args.is(4, "count") => {
                    let c = match args.int(5) {
                        Ok(c) => c,
                        Err(_) => return out.error(ERR_NOT_INTEGER),
                    };
                    Some(if c < 0 { 10 } else { c as usize })
                }
                _ => {
                    out.error(&format!(
                        "ERR unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
                        String::from_utf8_lossy(args.get(1))
                    ));
                    return;
                }
            };
            match full {
                None => stream_summary(out, s),
                Some(count) => stream_full(out, s, if count == 0 { usize::MAX } else { count }),
            }
        }
    }
}

/// `entries-read` and `lag` of a group.
fn group_counters(out: &mut ReplyBuf, s: &Stream, g: &Group) {
    out.bulk(b"entries-read");
    if g.entries_read == ENTRIES_READ_UNKNOWN {
        out.null();
    } else {
        out.int(g.entries_read);
    }
    out.bulk(b"lag");
    match s.lag(g) {
        Some(l) => out.int(l),
        None => out.null(),
    }
}

/// The fields XINFO STREAM starts with, with or without FULL.
fn stream_head(out: &mut ReplyBuf, s: &Stream) {
    let keys = s.entries.len().div_ceil(100);
    out.bulk(b"length");
    out.int(s.entries.len() as i64);
    out.bulk(b"radix-tree-keys");
    out.int(keys as i64);
    out.bulk(b"radix-tree-nodes");
    out.int(keys as i64 + 1);
    out.bulk(b"last-generated-id");
    out.bulk(fmt_id(s.last_id).as_bytes());
    out.bulk(b"max-deleted-entry-id");
    out.bulk(fmt_id(s.max_deleted_id).as_bytes());
    out.bulk(b"entries-added");
    out.int(s.entries_added as i64);
    out.bulk(b"recorded-first-entry-id");
    out.bulk(fmt_id(s.first_id()).as_bytes());
}

fn stream_summary(out: &mut ReplyBuf, s: &Stream) {
    out.map(10);
    stream_head(out, s);
    out.bulk(b"groups");
    out.int(s.groups.len() as i64);
    out.bulk(b"first-entry");
    match s.entries.first_key_value() {
        Some((id, f)) => reply_entry(out, *id, Some(f)),
        None => out.null(),
    }
    out.bulk(b"last-entry");
    match s.entries.last_key_value() {
        Some((id, f)) => reply_entry(out, *id, Some(f)),
        None => out.null(),
    }
}

fn stream_full(out: &mut ReplyBuf, s: &Stream, count: usize) {
    out.map(9);
    stream_head(out, s);
    out.bulk(b"entries");
    let n = s.entries.len().min(count);
    out.array(n);
    for (id, f) in s.entries.iter().take(n) {
        reply_entry(out, *id, Some(f));
    }
    out.bulk(b"groups");
    out.array(s.groups.len());
    for (name, g) in &s.groups {
        out.map(7);
        out.bulk(b"name");
        out.bulk(name);
        out.bulk(b"last-delivered-id");
        out.bulk(fmt_id(g.last_id).as_bytes());
        group_counters(out, s, g);
        out.bulk(b"pel-count");
        out.int(g.pel.len() as i64);
        out.bulk(b"pending");
        let n = g.pel.len().min(count);
        out.array(n);
        for (id, p) in g.pel.iter().take(n) {
            out.array(4);
            out.bulk(fmt_id(*id).as_bytes());
            out.bulk(&p.consumer);
            out.int(p.delivery_time as i64);
            out.int(p.delivery_count as i64);
        }
        out.bulk(b"consumers");
        out.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            out.map(4);
            out.bulk(b"name");
            out.bulk(cname);
            out.bulk(b"seen-time");
            out.int(c.seen_time as i64);
            out.bulk(b"pel-count");
            out.int(c.pel.len() as i64);
            out.bulk(b"pending");
            let n = c.pel.len().min(count);
            out.array(n);
            for id in c.pel.iter().take(n) {
                let p = &g.pel[id];
                out.array(3);
                out.bulk(fmt_id(*id).as_bytes());
                out.int(p.delivery_time as i64);
                out.int(p.delivery_count as i64);
            }
        }
    }
}
