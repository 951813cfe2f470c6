//! Stream consumer groups, the writes: XGROUP, XREADGROUP, XACK, XCLAIM,
//! XAUTOCLAIM, and TXSTREAM (internal: how they reach the log).
//!
//! None of them is logged as received: delivery times, `$`, `>` and idle
//! filters depend on when and where they run. Each logs one TXSTREAM record
//! of the state it set (a group's last ID and read counter, a consumer's
//! seen time, a pending entry's owner, time and count, an acknowledgement),
//! so replaying the log, a replica and a slot migration set exactly the
//! same state, and one command is one record (atomic like the command).

use super::flags::*;
use super::streams::{fmt_id, modify, parse_id, ERR_INVALID_ID};
use super::{Args, CommandSpec, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::node::groups::{Group, Pending, ENTRIES_READ_UNKNOWN};
use crate::node::notify;
use crate::node::resp::ReplyBuf;
use crate::node::store::{Bytes, Stream, StreamId, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "xgroup", arity: -2, flags: WRITE, first_key: 2, last_key: 2, step: 1, handler: xgroup },
    CommandSpec { name: "xreadgroup", arity: -7, flags: WRITE | STREAMS_KEYS, first_key: 0, last_key: 0, step: 0, handler: xreadgroup },
    CommandSpec { name: "xack", arity: -4, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xack },
    CommandSpec { name: "xclaim", arity: -6, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xclaim },
    CommandSpec { name: "xautoclaim", arity: -6, flags: WRITE | FAST, first_key: 1, last_key: 1, step: 1, handler: xautoclaim },
    CommandSpec { name: "txstream", arity: -3, flags: WRITE | ADMIN | NOSCRIPT, first_key: 1, last_key: 1, step: 1, handler: txstream },
];

/// The state changes one command made, as TXSTREAM operations.
#[derive(Default)]
pub struct Ops(Vec<Vec<u8>>);

impl Ops {
    fn push(&mut self, parts: &[&[u8]]) {
        self.0.extend(parts.iter().map(|p| p.to_vec()));
    }
    pub fn meta(&mut self, s: &Stream) {
        let (last, added, del) = (
            fmt_id(s.last_id),
            s.entries_added.to_string(),
            fmt_id(s.max_deleted_id),
        );
        self.push(&[b"META", last.as_bytes(), added.as_bytes(), del.as_bytes()]);
    }
    pub fn group(&mut self, name: &[u8], g: &Group) {
        let (last, read) = (fmt_id(g.last_id), g.entries_read.to_string());
        self.push(&[b"GROUP", name, last.as_bytes(), read.as_bytes()]);
    }
    fn destroy(&mut self, name: &[u8]) {
        self.push(&[b"DESTROY", name]);
    }
    pub fn consumer(&mut self, group: &[u8], name: &[u8], seen: u64) {
        self.push(&[b"CONSUMER", group, name, seen.to_string().as_bytes()]);
    }
    fn del_consumer(&mut self, group: &[u8], name: &[u8]) {
        self.push(&[b"DELCONSUMER", group, name]);
    }
    pub fn pending(&mut self, group: &[u8], id: StreamId, p: &Pending) {
        let (id, t, n) = (
            fmt_id(id),
            p.delivery_time.to_string(),
            p.delivery_count.to_string(),
        );
        self.push(&[
            b"PEL",
            group,
            id.as_bytes(),
            &p.consumer,
            t.as_bytes(),
            n.as_bytes(),
        ]);
    }
    fn ack(&mut self, group: &[u8], id: StreamId) {
        self.push(&[b"ACK", group, fmt_id(id).as_bytes()]);
    }
    /// Encodes them as one TXSTREAM command for `key` (None: no change).
    pub fn command<'a>(&'a self, key: &'a [u8]) -> Option<Vec<&'a [u8]>> {
        if self.0.is_empty() {
            return None;
        }
        let mut args: Vec<&[u8]> = vec![b"TXSTREAM", key];
        args.extend(self.0.iter().map(|o| &o[..]));
        Some(args)
    }
}

/// A read or claim created a consumer: Redis notifies it as XGROUP
/// CREATECONSUMER does.
fn consumer_created(node: &crate::node::Node, replaying: bool, key: &[u8]) {
    if !replaying {
        let flags = node.notify.get();
        notify::publish(node, flags, notify::STREAM, "xgroup-createconsumer", key);
    }
}

fn log(ctx: &mut Ctx<'_>, key: &[u8], ops: &Ops) {
    if let Some(args) = ops.command(key) {
        ctx.propagate_as(&args);
    }
}

/// An ID as XGROUP SETID, XPENDING and XAUTOCLAIM parse it: `-`, `+`, an
/// ID, or (with `exclusive_ok`) `(ID`; a missing sequence is `missing_seq`.
pub(super) fn parse_interval(
    b: &[u8],
    missing_seq: u64,
    exclusive_ok: bool,
) -> Result<(StreamId, bool), &'static str> {
    match b {
        b"-" => Ok((StreamId::default(), false)),
        b"+" => Ok((
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX,
            },
            false,
        )),
        _ if exclusive_ok && b.first() == Some(&b'(') => {
            Ok((parse_id(&b[1..], missing_seq).ok_or(ERR_INVALID_ID)?, true))
        }
        _ => Ok((parse_id(b, missing_seq).ok_or(ERR_INVALID_ID)?, false)),
    }
}

pub(super) fn next_id(id: StreamId) -> Option<StreamId> {
    if id.seq < u64::MAX {
        Some(StreamId {
            seq: id.seq + 1,
            ..id
        })
    } else if id.ms < u64::MAX {
        Some(StreamId {
            ms: id.ms + 1,
            seq: 0,
        })
    } else {
        None
    }
}

fn nogroup(key: &[u8], group: &[u8]) -> String {
    format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    )
}

/// Writes one entry as `[id, [field, value, …]]` (`[id, nil]` when gone).
pub(super) fn reply_entry(out: &mut ReplyBuf, id: StreamId, fields: Option<&Vec<Bytes>>) {
    out.array(2);
    out.bulk(fmt_id(id).as_bytes());
    match fields {
        Some(f) => {
            out.array(f.len());
            for x in f {
                out.bulk(x);
            }
        }
        None => out.null_array(),
    }
}

// --------------------------------------------------------------- XGROUP

fn subcommand_error(ctx: &mut Ctx<'_>, sub: &[u8]) {
    ctx.out.error(&format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
        String::from_utf8_lossy(sub)
    ));
}

const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Print this help.",
];

fn xgroup(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    let arity: i32 = match &sub[..] {
        b"create" | b"setid" => -5,
        b"destroy" => 4,
        b"createconsumer" | b"delconsumer" => 5,
        b"help" => 2,
        _ => {
            ctx.out.error(&format!(
                "ERR unknown subcommand '{}'. Try XGROUP HELP.",
                String::from_utf8_lossy(args.get(1))
            ));
            return;
        }
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for 'xgroup|{}' command",
            String::from_utf8_lossy(&sub)
        ));
        return;
    }
    if sub == b"help" {
        ctx.out.array(XGROUP_HELP.len());
        for l in XGROUP_HELP {
            ctx.out.simple(l);
        }
        return;
    }
    let (create, setid) = (sub == b"create", sub == b"setid");
    let mut mkstream = false;
    let mut entries_read = ENTRIES_READ_UNKNOWN;
    let mut i = 5;
    while i < args.len() {
        if create && args.is(i, "mkstream") {
            mkstream = true;
            i += 1;
        } else if (create || setid) && args.is(i, "entriesread") && i + 1 < args.len() {
            entries_read = try_reply!(ctx, args.int(i + 1));
            if entries_read < 0 && entries_read != ENTRIES_READ_UNKNOWN {
                ctx.out
                    .error("ERR value for ENTRIESREAD must be positive or -1");
                return;
            }
            i += 2;
        } else {
            return subcommand_error(ctx, args.get(1));
        }
    }
    let (key, gname) = (args.get(2), args.get(3));
    let slot = ctx.slot();
    let exists = try_reply!(ctx, modify(ctx.store, slot, key)).is_some();
    if !exists && !mkstream {
        ctx.out.error("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.");
        return;
    }
    if exists && !create && sub != b"destroy" {
        let has =
            matches!(modify(ctx.store, slot, key), Ok(Some(s)) if s.groups.contains_key(gname));
        if !has {
            ctx.out.error(&format!(
                "NOGROUP No such consumer group '{}' for key name '{}'",
                String::from_utf8_lossy(gname),
                String::from_utf8_lossy(key)
            ));
            return;
        }
    }
    if create {
        if args.len() > 8 {
            return subcommand_error(ctx, args.get(1));
        }
        xgroup_create(ctx, args, entries_read);
        return;
    }
    if !exists {
        // MKSTREAM is CREATE's only: the other subcommands never get here.
        return subcommand_error(ctx, args.get(1));
    }
    let now = ctx.store.now_ms;
    let mut ops = Ops::default();
    let Ok(Some(s)) = modify(ctx.store, slot, key) else {
        return;
    };
    match &sub[..] {
        b"setid" => {
            if args.len() != 5 && args.len() != 7 {
                return subcommand_error(ctx, args.get(1));
            }
            let id = if args.get(4) == b"$" {
                s.last_id
            } else {
                try_reply!(ctx, parse_interval(args.get(4), 0, false)).0
            };
            if let Some(g) = s.groups.get_mut(gname) {
                g.last_id = id;
                g.entries_read = entries_read;
                ops.group(gname, g);
            }
            ctx.out.ok();
        }
        b"destroy" => {
            let gone = s.groups.remove(gname).is_some();
            if gone {
                ops.destroy(gname);
            }
            ctx.out.int(gone as i64);
        }
        b"createconsumer" => {
            let cname = args.get(4);
            let created = match s.groups.get_mut(gname) {
                Some(g) => {
                    let (c, created) = g.consumer(cname, now);
                    if created {
                        ops.consumer(gname, cname, c.seen_time);
                    }
                    created
                }
                None => false,
            };
            ctx.out.int(created as i64);
        }
        _ => {
            let cname = args.get(4);
            let pending = s
                .groups
                .get_mut(gname)
                .and_then(|g| g.delete_consumer(cname));
            if pending.is_some() {
                ops.del_consumer(gname, cname);
            }
            ctx.out.int(pending.unwrap_or(0) as i64);
        }
    }
    log(ctx, key, &ops);
}

fn xgroup_create(ctx: &mut Ctx<'_>, args: &Args<'_>, entries_read: i64) {
    let (key, gname) = (args.get(2), args.get(3));
    let slot = ctx.slot();
    let last = try_reply!(ctx, modify(ctx.store, slot, key)).map(|s| s.last_id);
    let id = if args.get(4) == b"$" {
        last.unwrap_or_default()
    } else {
        match parse_id(args.get(4), 0) {
            Some(id) => id,
            None => {
                ctx.out.error(ERR_INVALID_ID);
                return;
            }
        }
    };
    let s = match ctx.store.get_or_create(
        slot,
        key,
        |v| matches!(v, Value::Stream(_)),
        || Value::Stream(Default::default()),
    ) {
        Ok(Value::Stream(s)) => s,
        _ => {
            ctx.out.error(WRONGTYPE);
            return;
        }
    };
    if s.groups.contains_key(gname) {
        ctx.out
            .error("BUSYGROUP Consumer Group name already exists");
        return;
    }
    let g = Group::new(id, entries_read);
    let mut ops = Ops::default();
    if last.is_none() {
        ops.meta(s);
    }
    ops.group(gname, &g);
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
    ctx.out.ok();
}

// ----------------------------------------------------------- XREADGROUP

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

fn parse_readgroup<'a>(args: &Args<'a>) -> Result<ReadGroup<'a>, String> {
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
            r.group = args.get(i + 1);
            r.consumer = args.get(i + 2);
            has_group = true;
            i += 2;
        } else if args.is(i, "noack") {
            r.noack = true;
        } else {
            return Err(ERR_SYNTAX.into());
        }
        i += 1;
    }
    if r.keys_at == 0 {
        return Err(ERR_SYNTAX.into());
    }
    if !has_group {
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
    let r = match parse_readgroup(args) {
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
                    .range((
                        std::ops::Bound::Excluded(g.last_id),
                        std::ops::Bound::Unbounded,
                    ))
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
    // RESP3: a map of key → entries; RESP2: [key, entries] pairs.
    let resp3 = ctx.out.resp3;
    if resp3 {
        ctx.out.map(serve.len());
    } else {
        ctx.out.array(serve.len());
    }
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
                .range((
                    std::ops::Bound::Excluded(g.last_id),
                    std::ops::Bound::Unbounded,
                ))
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

// ----------------------------------------------------------------- XACK

fn xack(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut ids = Vec::with_capacity(args.len() - 3);
    for a in args.iter().skip(3) {
        ids.push(try_reply!(ctx, parse_id(a, 0).ok_or(ERR_INVALID_ID)));
    }
    let (key, gname) = (args.get(1), args.get(2));
    let slot = ctx.slot();
    let mut ops = Ops::default();
    let mut acked = 0;
    if let Some(g) =
        try_reply!(ctx, modify(ctx.store, slot, key)).and_then(|s| s.groups.get_mut(gname))
    {
        for id in ids {
            if g.ack(id) {
                acked += 1;
                ops.ack(gname, id);
            }
        }
    }
    log(ctx, key, &ops);
    ctx.out.int(acked);
}

// --------------------------------------------------------------- XCLAIM

struct Claim {
    min_idle: u64,
    ids: Vec<StreamId>,
    time: Option<u64>,
    retry: Option<u64>,
    force: bool,
    justid: bool,
    last_id: StreamId,
}

fn parse_claim(args: &Args<'_>, now: u64) -> Result<Claim, String> {
    let min_idle = args
        .int(4)
        .map_err(|_| "ERR Invalid min-idle-time argument for XCLAIM".to_string())?;
    let mut c = Claim {
        min_idle: min_idle.max(0) as u64,
        ids: Vec::new(),
        time: None,
        retry: None,
        force: false,
        justid: false,
        last_id: StreamId::default(),
    };
    let mut j = 5;
    while j < args.len() {
        match parse_id(args.get(j), 0) {
            Some(id) => c.ids.push(id),
            None => break,
        }
        j += 1;
    }
    let mut time: Option<i64> = None;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let int = |j: usize, what: &str| {
            args.int(j)
                .map_err(|_| format!("ERR Invalid {what} option argument for XCLAIM"))
        };
        if args.is(j, "force") {
            c.force = true;
        } else if args.is(j, "justid") {
            c.justid = true;
        } else if args.is(j, "idle") && more > 0 {
            j += 1;
            time = Some((now as i64).saturating_sub(int(j, "IDLE")?));
        } else if args.is(j, "time") && more > 0 {
            j += 1;
            time = Some(int(j, "TIME")?);
        } else if args.is(j, "retrycount") && more > 0 {
            j += 1;
            // Negative: as if not given (the count goes up by one).
            c.retry = u64::try_from(int(j, "RETRYCOUNT")?).ok();
        } else if args.is(j, "lastid") && more > 0 {
            j += 1;
            c.last_id = parse_id(args.get(j), 0).ok_or(ERR_INVALID_ID)?;
        } else {
            return Err(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(args.get(j))
            ));
        }
        j += 1;
    }
    // A bogus time (negative, in the future) is now, as Redis has it.
    c.time = time.map(|t| {
        if t < 0 || t as u64 > now {
            now
        } else {
            t as u64
        }
    });
    Ok(c)
}

fn xclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let has = match try_reply!(ctx, modify(ctx.store, slot, key)) {
        Some(s) => s.groups.contains_key(gname),
        None => false,
    };
    if !has {
        return ctx.out.error(&nogroup(key, gname));
    }
    let c = match parse_claim(args, now) {
        Ok(c) => c,
        Err(e) => return ctx.out.error(&e),
    };
    let Ok(Some(s)) = modify(ctx.store, slot, key) else {
        return;
    };
    let Some(mut g) = s.groups.remove(gname) else {
        return;
    };
    let mut ops = Ops::default();
    if c.last_id > g.last_id {
        g.last_id = c.last_id;
        ops.group(gname, &g);
    }
    let time = c.time.unwrap_or(now);
    let mut claimed = Vec::new();
    for id in c.ids {
        if !s.entries.contains_key(&id) {
            // Gone from the stream: gone from the PEL too.
            if g.ack(id) {
                ops.ack(gname, id);
            }
            continue;
        }
        // A FORCE-created entry starts at one delivery, like Redis' NACK.
        let (base, idle) = match g.pel.get(&id) {
            Some(p) => (p.delivery_count, Some(now.saturating_sub(p.delivery_time))),
            None if c.force => (1, None),
            None => continue,
        };
        if idle.is_some_and(|idle| c.min_idle > 0 && idle < c.min_idle) {
            continue;
        }
        let count = c.retry.unwrap_or(if c.justid { base } else { base + 1 });
        let (consumer, created) = g.consumer(cname, now);
        consumer.seen_time = now;
        if created {
            consumer_created(ctx.node, ctx.replaying, key);
        }
        g.set_pending(id, cname, time, count);
        ops.consumer(gname, cname, now);
        ops.pending(gname, id, &g.pel[&id]);
        claimed.push(id);
    }
    ctx.out.array(claimed.len());
    for id in claimed {
        if c.justid {
            ctx.out.bulk(fmt_id(id).as_bytes());
        } else {
            reply_entry(ctx.out, id, s.entries.get(&id));
        }
    }
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
}

fn xautoclaim(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (key, gname, cname) = (args.get(1), args.get(2), args.get(3));
    let min_idle = match args.int(4) {
        Ok(n) => n.max(0) as u64,
        Err(_) => {
            return ctx
                .out
                .error("ERR Invalid min-idle-time argument for XAUTOCLAIM")
        }
    };
    let (mut start, ex) = try_reply!(ctx, parse_interval(args.get(5), 0, true));
    if ex {
        match next_id(start) {
            Some(n) => start = n,
            None => return ctx.out.error("ERR invalid start ID for the interval"),
        }
    }
    let (mut count, mut justid) = (100u64, false);
    let mut j = 6;
    while j < args.len() {
        if args.is(j, "count") && j + 1 < args.len() {
            let max = (i64::MAX / 16) as u64;
            count = match args.int(j + 1) {
                Ok(n) if n >= 1 && n as u64 <= max => n as u64,
                _ => return ctx.out.error("ERR COUNT must be > 0"),
            };
            j += 1;
        } else if args.is(j, "justid") {
            justid = true;
        } else {
            return ctx.out.error(ERR_SYNTAX);
        }
        j += 1;
    }
    let slot = ctx.slot();
    let now = ctx.store.now_ms;
    let Some(s) = try_reply!(ctx, modify(ctx.store, slot, key)) else {
        return ctx.out.error(&nogroup(key, gname));
    };
    let Some(mut g) = s.groups.remove(gname) else {
        return ctx.out.error(&nogroup(key, gname));
    };
    let mut ops = Ops::default();
    let mut attempts = count.saturating_mul(10);
    let (mut claimed, mut deleted) = (Vec::new(), Vec::new());
    let mut last_seen: Option<StreamId> = None;
    let candidates: Vec<StreamId> = g.pel.range(start..).map(|(id, _)| *id).collect();
    for id in candidates {
        if attempts == 0 || count == 0 {
            break;
        }
        attempts -= 1;
        last_seen = Some(id);
        if !s.entries.contains_key(&id) {
            g.ack(id);
            ops.ack(gname, id);
            deleted.push(id);
            count -= 1;
            continue;
        }
        let p = &g.pel[&id];
        if min_idle > 0 && now.saturating_sub(p.delivery_time) < min_idle {
            continue;
        }
        let n = p.delivery_count + u64::from(!justid);
        let (consumer, created) = g.consumer(cname, now);
        consumer.seen_time = now;
        if created {
            consumer_created(ctx.node, ctx.replaying, key);
        }
        g.set_pending(id, cname, now, n);
        ops.consumer(gname, cname, now);
        ops.pending(gname, id, &g.pel[&id]);
        claimed.push(id);
        count -= 1;
    }
    let next = last_seen
        .and_then(next_id)
        .and_then(|from| g.pel.range(from..).next().map(|(id, _)| *id))
        .unwrap_or_default();
    ctx.out.array(3);
    ctx.out.bulk(fmt_id(next).as_bytes());
    ctx.out.array(claimed.len());
    for id in claimed {
        if justid {
            ctx.out.bulk(fmt_id(id).as_bytes());
        } else {
            reply_entry(ctx.out, id, s.entries.get(&id));
        }
    }
    ctx.out.array(deleted.len());
    for id in deleted {
        ctx.out.bulk(fmt_id(id).as_bytes());
    }
    s.groups.insert(Bytes::from(gname), g);
    log(ctx, key, &ops);
}

// ------------------------------------------------------------- TXSTREAM

enum Op<'a> {
    Meta(StreamId, u64, StreamId),
    Group(&'a [u8], StreamId, i64),
    Destroy(&'a [u8]),
    Consumer(&'a [u8], &'a [u8], u64),
    DelConsumer(&'a [u8], &'a [u8]),
    Pel(&'a [u8], StreamId, &'a [u8], u64, u64),
    Ack(&'a [u8], StreamId),
}

fn parse_ops<'a>(args: &Args<'a>) -> Result<Vec<Op<'a>>, &'static str> {
    let id = |i: usize| parse_id(args.get(i), 0).ok_or(ERR_INVALID_ID);
    let num = |i: usize| {
        super::parse_i64(args.get(i))
            .and_then(|n| u64::try_from(n).ok())
            .ok_or(ERR_NOT_INTEGER)
    };
    let mut ops = Vec::new();
    let mut i = 2;
    while i < args.len() {
        let op = args.get(i).to_ascii_uppercase();
        let need = match &op[..] {
            b"META" | b"GROUP" | b"CONSUMER" => 3,
            b"DESTROY" => 1,
            b"DELCONSUMER" | b"ACK" => 2,
            b"PEL" => 5,
            _ => return Err(ERR_SYNTAX),
        };
        if i + need >= args.len() {
            return Err(ERR_SYNTAX);
        }
        let a = |k: usize| args.get(i + k);
        ops.push(match &op[..] {
            b"META" => Op::Meta(id(i + 1)?, num(i + 2)?, id(i + 3)?),
            b"GROUP" => Op::Group(a(1), id(i + 2)?, args.int(i + 3)?.max(-1)),
            b"DESTROY" => Op::Destroy(a(1)),
            b"CONSUMER" => Op::Consumer(a(1), a(2), num(i + 3)?),
            b"DELCONSUMER" => Op::DelConsumer(a(1), a(2)),
            b"PEL" => Op::Pel(a(1), id(i + 2)?, a(3), num(i + 4)?, num(i + 5)?),
            _ => Op::Ack(a(1), id(i + 2)?),
        });
        i += need + 1;
    }
    Ok(ops)
}

/// Applies logged consumer-group state (see the module comment); creates
/// the stream when missing (XGROUP CREATE … MKSTREAM, a migrated stream).
fn txstream(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let ops = try_reply!(ctx, parse_ops(args));
    let slot = ctx.slot();
    let s = match ctx.store.get_or_create(
        slot,
        args.get(1),
        |v| matches!(v, Value::Stream(_)),
        || Value::Stream(Default::default()),
    ) {
        Ok(Value::Stream(s)) => s,
        _ => return ctx.out.error(WRONGTYPE),
    };
    for op in ops {
        match op {
            Op::Meta(last, added, del) => {
                s.last_id = last;
                s.entries_added = added;
                s.max_deleted_id = del;
            }
            Op::Group(name, last, read) => {
                let g = s
                    .groups
                    .entry(Bytes::from(name))
                    .or_insert_with(|| Group::new(last, read));
                g.last_id = last;
                g.entries_read = read;
            }
            Op::Destroy(name) => {
                s.groups.remove(name);
            }
            Op::Consumer(group, name, seen) => {
                if let Some(g) = s.groups.get_mut(group) {
                    g.consumer(name, seen).0.seen_time = seen;
                }
            }
            Op::DelConsumer(group, name) => {
                if let Some(g) = s.groups.get_mut(group) {
                    g.delete_consumer(name);
                }
            }
            Op::Pel(group, id, consumer, time, count) => {
                if let Some(g) = s.groups.get_mut(group) {
                    g.set_pending(id, consumer, time, count);
                }
            }
            Op::Ack(group, id) => {
                if let Some(g) = s.groups.get_mut(group) {
                    g.ack(id);
                }
            }
        }
    }
    ctx.propagate(args);
    ctx.out.ok();
}
