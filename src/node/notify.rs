//! Keyspace notifications (`notify-keyspace-events`): after a write, the
//! events Redis 7.0 sends for it, published on `__keyspace@0__:<key>`
//! (message: the event) and `__keyevent@0__:<event>` (message: the key)
//! through the node's pub/sub.
//!
//! Events are derived where a write is logged ([`super::cmd::Ctx`]'s
//! `propagate_as`): from the command that ran (its name says the event)
//! and the record it logged (which keys it changed, which expiry it set).
//! A write that changes nothing logs nothing and so notifies nothing, as in
//! Redis. An aggregate emptied by a write also gets `del`; a key deleted by
//! expiry gets `expired`. Commands replayed from a log or a primary notify
//! nothing.
//!
//! Two classes are decided before the command runs ([`before_command`]):
//! `keymiss` (`m`) for each key a command reads and finds missing, where
//! Redis' read lookup reports it, and the keys a write finds absent, which
//! get `new` (`n`) when they exist after it, just before the first event
//! that names them (Redis sends `new` as the key is added).

/// Event classes, as the characters of `notify-keyspace-events`.
pub const KEYSPACE: u32 = 1;
pub const KEYEVENT: u32 = 1 << 1;
pub const GENERIC: u32 = 1 << 2;
pub const STRING: u32 = 1 << 3;
pub const LIST: u32 = 1 << 4;
pub const SET: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const ZSET: u32 = 1 << 7;
pub const EXPIRED: u32 = 1 << 8;
pub const EVICTED: u32 = 1 << 9;
pub const STREAM: u32 = 1 << 10;
/// `m`: a read found its key missing (not part of `A`).
pub const KEY_MISS: u32 = 1 << 11;
/// `n`: a key was added (not part of `A`).
pub const NEW: u32 = 1 << 12;

/// The classes a normalized `notify-keyspace-events` value turns on.
pub fn parse_flags(v: &str) -> u32 {
    let mut f = 0;
    for c in v.chars() {
        f |= match c {
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            'g' => GENERIC,
            '$' => STRING,
            'l' => LIST,
            's' => SET,
            'h' => HASH,
            'z' => ZSET,
            'x' => EXPIRED,
            'e' => EVICTED,
            't' => STREAM,
            'm' => KEY_MISS,
            'n' => NEW,
            'A' => GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM,
            _ => 0,
        };
    }
    f
}

/// The name events are derived from: the command's, refined where its
/// options change the event (ZADD INCR, XGROUP's subcommands).
pub fn running_name(name: &'static str, args: &super::cmd::Args<'_>) -> &'static str {
    let has = |w: &str| {
        args.iter()
            .skip(1)
            .any(|a| a.eq_ignore_ascii_case(w.as_bytes()))
    };
    match name {
        "zadd" if has("incr") => "zincrby",
        "xgroup" if args.len() > 1 => match &args.get(1).to_ascii_lowercase()[..] {
            b"create" => "xgroup-create",
            b"setid" => "xgroup-setid",
            b"destroy" => "xgroup-destroy",
            b"createconsumer" => "xgroup-createconsumer",
            b"delconsumer" => "xgroup-delconsumer",
            _ => name,
        },
        _ => name,
    }
}

/// One event: its class, its name and the argument of the logged record
/// that is its key.
pub type Event = (u32, &'static str, usize);

/// The events of a logged record `logged` written by command `running`.
pub fn events(running: &str, logged: &[&[u8]]) -> Vec<Event> {
    let logged_name = logged
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let logged_is = |n: &str| logged_name == n.as_bytes();
    let has_expiry = logged.iter().skip(3).any(|a| {
        [&b"PXAT"[..], b"EXAT", b"PX", b"EX"]
            .iter()
            .any(|w| a.eq_ignore_ascii_case(w))
    });
    let each = |class: u32, ev: &'static str, from: usize, step: usize| -> Vec<Event> {
        (from..logged.len())
            .step_by(step)
            .map(|i| (class, ev, i))
            .collect()
    };
    let one = |class: u32, ev: &'static str| vec![(class, ev, 1)];
    match running {
        "set" | "setnx" | "setex" | "psetex" | "getset" => {
            let mut v = one(STRING, "set");
            if has_expiry {
                v.push((GENERIC, "expire", 1));
            }
            v
        }
        "mset" | "msetnx" => each(STRING, "set", 1, 2),
        "incr" | "decr" | "incrby" | "decrby" => one(STRING, "incrby"),
        "incrbyfloat" => one(STRING, "incrbyfloat"),
        "append" => one(STRING, "append"),
        "setrange" => one(STRING, "setrange"),
        "setbit" => one(STRING, "setbit"),
        "getdel" => one(GENERIC, "del"),
        "getex" | "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" => {
            if logged_is("del") {
                one(GENERIC, "del")
            } else if logged_is("persist") {
                one(GENERIC, "persist")
            } else {
                one(GENERIC, "expire")
            }
        }
        "del" | "unlink" => each(GENERIC, "del", 1, 1),
        "rename" | "renamenx" => vec![(GENERIC, "rename_from", 1), (GENERIC, "rename_to", 2)],
        "copy" => vec![(GENERIC, "copy_to", 2)],
        "lpush" | "lpushx" => one(LIST, "lpush"),
        "rpush" | "rpushx" => one(LIST, "rpush"),
        "linsert" => one(LIST, "linsert"),
        "lset" => one(LIST, "lset"),
        "lrem" => one(LIST, "lrem"),
        "ltrim" => one(LIST, "ltrim"),
        "lpop" | "rpop" | "lmpop" => {
            if logged_is("rpop") {
                one(LIST, "rpop")
            } else {
                one(LIST, "lpop")
            }
        }
        // Redis notifies the push before the pop.
        "rpoplpush" => vec![(LIST, "lpush", 2), (LIST, "rpop", 1)],
        "lmove" => {
            let side = |i: usize, l: &'static str, r: &'static str| {
                if logged
                    .get(i)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"left"))
                {
                    l
                } else {
                    r
                }
            };
            vec![
                (LIST, side(4, "lpush", "rpush"), 2),
                (LIST, side(3, "lpop", "rpop"), 1),
            ]
        }
        "hset" | "hmset" | "hsetnx" => one(HASH, "hset"),
        "hdel" => one(HASH, "hdel"),
        "hincrby" => one(HASH, "hincrby"),
        "hincrbyfloat" => one(HASH, "hincrbyfloat"),
        "sadd" => one(SET, "sadd"),
        "srem" => one(SET, "srem"),
        "spop" => one(SET, "spop"),
        "smove" => vec![(SET, "srem", 1), (SET, "sadd", 2)],
        "sinterstore" => one(SET, "sinterstore"),
        "sunionstore" => one(SET, "sunionstore"),
        "sdiffstore" => one(SET, "sdiffstore"),
        "zadd" => one(ZSET, "zadd"),
        "zincrby" => one(ZSET, "zincr"),
        "zrem" => one(ZSET, "zrem"),
        "zpopmin" => one(ZSET, "zpopmin"),
        "zpopmax" => one(ZSET, "zpopmax"),
        "zremrangebyscore" => one(ZSET, "zremrangebyscore"),
        "zremrangebyrank" => one(ZSET, "zremrangebyrank"),
        "zremrangebylex" => one(ZSET, "zremrangebylex"),
        "zunionstore" => one(ZSET, "zunionstore"),
        "zinterstore" => one(ZSET, "zinterstore"),
        "zdiffstore" => one(ZSET, "zdiffstore"),
        "zrangestore" => one(ZSET, "zrangestore"),
        "zmpop" if logged_is("zpopmax") => one(ZSET, "zpopmax"),
        "zmpop" => one(ZSET, "zpopmin"),
        "bitop" => vec![(STRING, "set", 2)],
        "bitfield" => one(STRING, "setbit"),
        "xadd" => one(STREAM, "xadd"),
        "xdel" => one(STREAM, "xdel"),
        "xtrim" => one(STREAM, "xtrim"),
        "xgroup-create" => one(STREAM, "xgroup-create"),
        "xgroup-setid" => one(STREAM, "xgroup-setid"),
        "xgroup-destroy" => one(STREAM, "xgroup-destroy"),
        "xgroup-createconsumer" => one(STREAM, "xgroup-createconsumer"),
        "xgroup-delconsumer" => one(STREAM, "xgroup-delconsumer"),
        // SORT … STORE logs DEL + RPUSH: one event, for the push.
        "sort" if logged_is("rpush") => one(LIST, "sortstore"),
        "restore" => one(GENERIC, "restore"),
        _ => Vec::new(),
    }
}

/// Which of a command's keys Redis reads with a lookup that reports a
/// missing key (`keymiss`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Misses {
    None,
    All,
    /// All but the first (a destination).
    Sources,
    First,
}

pub fn misses(name: &str, readonly: bool) -> Misses {
    match name {
        // Introspection looks keys up without notifying.
        "object" | "memory" => Misses::None,
        "getdel" | "getex" | "getset" | "sort" | "sort_ro" => Misses::First,
        "sunionstore" | "sinterstore" | "sdiffstore" | "zunionstore" | "zinterstore"
        | "zdiffstore" | "zrangestore" | "bitop" => Misses::Sources,
        "xreadgroup" => Misses::All,
        _ if readonly => Misses::All,
        _ => Misses::None,
    }
}

/// Before a command runs (not when replaying): `keymiss` for the keys it
/// reads that are missing, and, for a write, the keys absent now (kept in
/// `ctx.absent` for [`new_keys`]).
pub(crate) fn before_command(
    ctx: &mut super::cmd::Ctx<'_>,
    spec: &super::cmd::CommandSpec,
    args: &super::cmd::Args<'_>,
) {
    let flags = ctx.node.notify.get();
    ctx.absent.clear();
    if flags & (KEY_MISS | NEW) == 0 || ctx.replaying {
        return;
    }
    let Some(slot) = ctx.slot else { return };
    let positions: Vec<usize> = super::cmd::key_positions(spec, args).collect();
    let missing =
        |ctx: &super::cmd::Ctx<'_>, at: usize| !ctx.store.contains_live(slot, args.get(at));
    if flags & KEY_MISS != 0 {
        let which: &[usize] = match misses(spec.name, spec.flags & super::cmd::flags::READONLY != 0)
        {
            Misses::None => &[],
            Misses::All => &positions,
            Misses::Sources => positions.get(1..).unwrap_or(&[]),
            Misses::First => positions.get(..1).unwrap_or(&[]),
        };
        for &at in which {
            if missing(ctx, at) {
                publish(ctx.node, flags, KEY_MISS, "keymiss", args.get(at));
            }
        }
    }
    if flags & NEW != 0 && spec.is_write() {
        let absent: Vec<Vec<u8>> = positions
            .iter()
            .filter(|&&at| missing(ctx, at))
            .map(|&at| args.get(at).to_vec())
            .collect();
        ctx.absent = absent;
    }
}

/// `new` for `key` if the running write found it absent and it exists now
/// (once).
pub(crate) fn new_key(ctx: &mut super::cmd::Ctx<'_>, slot: u16, key: &[u8]) {
    let Some(i) = ctx.absent.iter().position(|k| k == key) else {
        return;
    };
    if ctx.store.contains_live(slot, key) {
        ctx.absent.swap_remove(i);
        publish(ctx.node, ctx.node.notify.get(), NEW, "new", key);
    }
}

/// After a write: `new` for the keys it added that no event named (a
/// command without events of its own).
pub(crate) fn after_command(ctx: &mut super::cmd::Ctx<'_>) {
    if ctx.absent.is_empty() {
        return;
    }
    let keys = std::mem::take(&mut ctx.absent);
    let Some(slot) = ctx.slot else { return };
    for key in keys {
        if ctx.store.contains_live(slot, &key) {
            publish(ctx.node, ctx.node.notify.get(), NEW, "new", &key);
        }
    }
}

/// Publishes one event for `key` on the channels `flags` asks for.
pub fn publish(node: &super::Node, flags: u32, class: u32, event: &str, key: &[u8]) {
    if flags & class == 0 {
        return;
    }
    let ps = node.pubsub.borrow();
    if flags & KEYSPACE != 0 {
        let mut ch = b"__keyspace@0__:".to_vec();
        ch.extend_from_slice(key);
        ps.publish(false, &ch, event.as_bytes());
    }
    if flags & KEYEVENT != 0 {
        let ch = format!("__keyevent@0__:{event}");
        ps.publish(false, ch.as_bytes(), key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_every_class_and_a_covers_all_but_the_channels() {
        assert_eq!(parse_flags(""), 0);
        assert_eq!(
            parse_flags("KEA") & (KEYSPACE | KEYEVENT),
            KEYSPACE | KEYEVENT
        );
        assert_eq!(parse_flags("A") & KEYSPACE, 0);
        assert_ne!(parse_flags("A") & STREAM, 0);
        assert_eq!(parse_flags("Kl"), KEYSPACE | LIST);
        assert_eq!(parse_flags("A") & (KEY_MISS | NEW), 0);
        assert_eq!(parse_flags("Emn"), KEYEVENT | KEY_MISS | NEW);
    }

    #[test]
    fn key_misses_follow_redis_read_lookups() {
        assert_eq!(misses("get", true), Misses::All);
        assert_eq!(misses("object", true), Misses::None);
        assert_eq!(misses("lpop", false), Misses::None);
        assert_eq!(misses("getdel", false), Misses::First);
        assert_eq!(misses("sunionstore", false), Misses::Sources);
        assert_eq!(misses("xreadgroup", false), Misses::All);
    }

    #[test]
    fn events_come_from_the_command_and_its_logged_record() {
        let ev = |r: &str, l: &[&str]| {
            let l: Vec<&[u8]> = l.iter().map(|a| a.as_bytes()).collect();
            events(r, &l)
        };
        assert_eq!(
            ev("set", &["SET", "k", "v", "PXAT", "9"]),
            vec![(STRING, "set", 1), (GENERIC, "expire", 1)]
        );
        assert_eq!(
            ev("incrbyfloat", &["SET", "k", "1.5"]),
            vec![(STRING, "incrbyfloat", 1)]
        );
        assert_eq!(ev("getex", &["DEL", "k"]), vec![(GENERIC, "del", 1)]);
        assert_eq!(ev("lmpop", &["RPOP", "k", "2"]), vec![(LIST, "rpop", 1)]);
        assert_eq!(
            ev("lmove", &["LMOVE", "a", "b", "LEFT", "RIGHT"]),
            vec![(LIST, "rpush", 2), (LIST, "lpop", 1)]
        );
        assert_eq!(
            ev("del", &["DEL", "a", "b"]),
            vec![(GENERIC, "del", 1), (GENERIC, "del", 2)]
        );
        assert!(ev("txstream", &["TXSTREAM", "k", "ACK", "g", "1-0"]).is_empty());
    }
}
