//! Blocking pops: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
//! BZPOPMAX, BZMPOP.
//!
//! Each runs its non-blocking form (LMPOP, LMOVE, ZPOPMIN, …), so what it
//! pops reaches the log exactly as that command logs it. When nothing is
//! there the command is not consumed: the connection waits (see
//! `node::blocking` and the connection loop) and runs it again when a key
//! it waits on is written, or answers the null reply at its deadline.
//! Inside MULTI or a script they do not block: they answer at once.

use std::time::Duration;

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::resp::{Frame, ReplyBuf};
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "blpop",
        arity: -3,
        flags: WRITE | NOSCRIPT,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: blpop,
    },
    CommandSpec {
        name: "brpop",
        arity: -3,
        flags: WRITE | NOSCRIPT,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: brpop,
    },
    CommandSpec {
        name: "blmove",
        arity: 6,
        flags: WRITE | DENYOOM | NOSCRIPT,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: blmove,
    },
    CommandSpec {
        name: "brpoplpush",
        arity: 4,
        flags: WRITE | DENYOOM | NOSCRIPT,
        first_key: 1,
        last_key: 2,
        step: 1,
        handler: brpoplpush,
    },
    CommandSpec {
        name: "blmpop",
        arity: -5,
        flags: WRITE | SCRIPT_KEYS | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: blmpop,
    },
    CommandSpec {
        name: "bzpopmin",
        arity: -3,
        flags: WRITE | NOSCRIPT,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: bzpopmin,
    },
    CommandSpec {
        name: "bzpopmax",
        arity: -3,
        flags: WRITE | NOSCRIPT,
        first_key: 1,
        last_key: -2,
        step: 1,
        handler: bzpopmax,
    },
    CommandSpec {
        name: "bzmpop",
        arity: -5,
        flags: WRITE | SCRIPT_KEYS | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: bzmpop,
    },
];

/// A blocked connection's state, kept while its command waits.
pub struct BlockState {
    /// None: wait without a deadline (timeout 0).
    pub deadline: Option<tokio::time::Instant>,
    /// The deadline passed: the command answers its null reply.
    pub timed_out: bool,
    /// A write woke it: once served it wakes the next waiter.
    pub woken: bool,
    pub keys: Vec<Vec<u8>>,
    /// Its place in the queues of its keys (`node::blocking::next_arrival`).
    pub arrival: u64,
    /// XREAD: the IDs `$` stood for when it first ran.
    pub stream_ids: Option<Vec<crate::node::store::StreamId>>,
}

/// A timeout in seconds, as Redis parses it (None: forever).
fn parse_timeout(arg: &[u8]) -> Result<Option<Duration>, &'static str> {
    let secs = super::parse_f64(arg).ok_or("ERR timeout is not a float or out of range")?;
    // Redis multiplies into milliseconds in a 64-bit integer: an overflow
    // reads as negative.
    if secs < 0.0 || secs * 1000.0 >= i64::MAX as f64 {
        return Err("ERR timeout is negative");
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// Runs a non-blocking command for this one and returns its RESP2 reply.
fn run_inner(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> Frame {
    let (mut buf, mut ranges) = (Vec::new(), Vec::with_capacity(argv.len()));
    for a in argv {
        let start = buf.len();
        buf.extend_from_slice(a);
        ranges.push(start..buf.len());
    }
    let args = Args {
        buf: &buf,
        ranges: &ranges,
    };
    let Some(idx) = ctx.node.commands.lookup(argv[0]) else {
        return Frame::Error("ERR no such command".into());
    };
    let mut scratch = ReplyBuf::new();
    scratch.limit = ctx.node.cfg.limits.max_reply;
    std::mem::swap(ctx.out, &mut scratch);
    super::run(ctx, &args, idx);
    std::mem::swap(ctx.out, &mut scratch);
    if scratch.overflowed {
        return Frame::Error(format!(
            "ERR reply exceeds the limit of {} bytes (max-reply-bytes)",
            ctx.node.cfg.limits.max_reply
        ));
    }
    match Frame::parse(&scratch.buf) {
        Ok(Some((f, _))) => f,
        _ => Frame::Error("ERR the command gave no reply".into()),
    }
}

/// Nothing to pop: block (the command runs again later), or answer the
/// null reply when blocking is not possible or the deadline passed.
pub(crate) fn block_or_nil(ctx: &mut Ctx<'_>, keys: &[&[u8]], timeout: Option<Duration>) {
    if ctx.group.is_some() || ctx.replaying {
        ctx.out.null_array();
        return;
    }
    match &ctx.conn.block {
        Some(b) if b.timed_out => {
            ctx.conn.block = None;
            ctx.out.null_array();
        }
        Some(_) => ctx.effects.block = true,
        None => {
            ctx.conn.block = Some(BlockState {
                deadline: timeout.map(|d| tokio::time::Instant::now() + d),
                timed_out: false,
                woken: false,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                arrival: crate::node::blocking::next_arrival(),
                stream_ids: None,
            });
            ctx.effects.block = true;
        }
    }
}

/// Writes a non-blocking command's reply that is final (an error).
fn error(ctx: &mut Ctx<'_>, f: Frame) {
    match f {
        Frame::Error(e) => ctx.out.error(&e),
        other => ctx
            .out
            .error(&format!("ERR unexpected reply from the pop: {other:?}")),
    }
}

fn blpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_lists(ctx, args, b"LEFT");
}
fn brpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_lists(ctx, args, b"RIGHT");
}

fn pop_lists(ctx: &mut Ctx<'_>, args: &Args<'_>, side: &[u8]) {
    let n = args.len();
    let timeout = try_reply!(ctx, parse_timeout(args.get(n - 1)));
    let keys: Vec<&[u8]> = (1..n - 1).map(|i| args.get(i)).collect();
    let count = keys.len().to_string();
    let mut inner: Vec<&[u8]> = vec![b"LMPOP", count.as_bytes()];
    inner.extend(&keys);
    inner.push(side);
    match run_inner(ctx, &inner) {
        Frame::Array(v) if v.len() == 2 => {
            let (Frame::Bulk(key), Frame::Array(vals)) = (&v[0], &v[1]) else {
                return error(ctx, Frame::Array(v));
            };
            let Some(Frame::Bulk(val)) = vals.first() else {
                return error(ctx, Frame::Array(v.clone()));
            };
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.bulk(val);
        }
        Frame::Null => block_or_nil(ctx, &keys, timeout),
        other => error(ctx, other),
    }
}

fn blmove(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis checks the directions before the timeout.
    try_reply!(ctx, super::lists::side(args, 3));
    try_reply!(ctx, super::lists::side(args, 4));
    let timeout = try_reply!(ctx, parse_timeout(args.get(5)));
    let inner = [
        b"LMOVE".as_slice(),
        args.get(1),
        args.get(2),
        args.get(3),
        args.get(4),
    ];
    move_generic(ctx, &inner, args.get(1), timeout);
}

fn brpoplpush(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let timeout = try_reply!(ctx, parse_timeout(args.get(3)));
    let inner = [b"RPOPLPUSH".as_slice(), args.get(1), args.get(2)];
    move_generic(ctx, &inner, args.get(1), timeout);
}

fn move_generic(ctx: &mut Ctx<'_>, inner: &[&[u8]], src: &[u8], timeout: Option<Duration>) {
    match run_inner(ctx, inner) {
        Frame::Bulk(v) => ctx.out.bulk(&v),
        Frame::Null => block_or_nil(ctx, &[src], timeout),
        other => error(ctx, other),
    }
}

fn blmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // Redis checks the key count and options before the timeout.
    try_reply!(ctx, super::lists::parse_lmpop(args, 2));
    let timeout = try_reply!(ctx, parse_timeout(args.get(1)));
    let inner: Vec<&[u8]> = std::iter::once(b"LMPOP".as_slice())
        .chain(args.iter().skip(2))
        .collect();
    match run_inner(ctx, &inner) {
        Frame::Array(v) if v.len() == 2 => {
            let (Frame::Bulk(key), Frame::Array(vals)) = (&v[0], &v[1]) else {
                return error(ctx, Frame::Array(v));
            };
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.array(vals.len());
            for val in vals {
                if let Frame::Bulk(b) = val {
                    ctx.out.bulk(b);
                }
            }
        }
        Frame::Null => {
            // Valid options: the keys follow the count (LMPOP checked it).
            let n = args
                .int(2)
                .ok()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            let keys: Vec<&[u8]> = args.iter().skip(3).take(n).collect();
            block_or_nil(ctx, &keys, timeout);
        }
        other => error(ctx, other),
    }
}

/// BZMPOP timeout numkeys key… MIN|MAX [COUNT n].
fn bzmpop(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    // As BLMPOP: the key count and options are checked before the timeout.
    let (numkeys, _, _) = try_reply!(ctx, super::zset_ops::parse_zmpop(args, 2));
    let timeout = try_reply!(ctx, parse_timeout(args.get(1)));
    let inner: Vec<&[u8]> = std::iter::once(b"ZMPOP".as_slice())
        .chain(args.iter().skip(2))
        .collect();
    match run_inner(ctx, &inner) {
        Frame::Array(v) if v.len() == 2 => {
            let (Frame::Bulk(key), Frame::Array(pairs)) = (&v[0], &v[1]) else {
                return error(ctx, Frame::Array(v));
            };
            ctx.out.array(2);
            ctx.out.bulk(key);
            ctx.out.array(pairs.len());
            for pair in pairs {
                let Frame::Array(p) = pair else { continue };
                let (Some(Frame::Bulk(member)), Some(Frame::Bulk(score))) = (p.first(), p.get(1))
                else {
                    continue;
                };
                ctx.out.array(2);
                ctx.out.bulk(member);
                score_reply(ctx, score);
            }
        }
        Frame::Null => {
            let keys: Vec<&[u8]> = args.iter().skip(3).take(numkeys).collect();
            block_or_nil(ctx, &keys, timeout);
        }
        other => error(ctx, other),
    }
}

/// A score the inner pop answered (RESP2: a bulk string), as the client's
/// protocol wants it.
fn score_reply(ctx: &mut Ctx<'_>, score: &[u8]) {
    match super::parse_f64(score) {
        Some(s) if ctx.out.resp3 => ctx.out.double(s),
        _ => ctx.out.bulk(score),
    }
}

fn bzpopmin(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_zsets(ctx, args, b"ZPOPMIN");
}
fn bzpopmax(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    pop_zsets(ctx, args, b"ZPOPMAX");
}

fn pop_zsets(ctx: &mut Ctx<'_>, args: &Args<'_>, pop: &[u8]) {
    let n = args.len();
    let timeout = try_reply!(ctx, parse_timeout(args.get(n - 1)));
    let keys: Vec<&[u8]> = (1..n - 1).map(|i| args.get(i)).collect();
    for key in &keys {
        match run_inner(ctx, &[pop, key]) {
            Frame::Array(v) if v.is_empty() => continue,
            Frame::Array(v) => {
                let (Some(Frame::Bulk(member)), Some(Frame::Bulk(score))) = (v.first(), v.get(1))
                else {
                    return error(ctx, Frame::Array(v));
                };
                ctx.out.array(3);
                ctx.out.bulk(key);
                ctx.out.bulk(member);
                score_reply(ctx, score);
                return;
            }
            other => return error(ctx, other),
        }
    }
    block_or_nil(ctx, &keys, timeout);
}

#[cfg(test)]
mod tests {
    use super::parse_timeout;
    use std::time::Duration;

    #[test]
    fn timeouts_parse_as_redis_parses_them() {
        assert_eq!(parse_timeout(b"0"), Ok(None));
        assert_eq!(parse_timeout(b"0.5"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_timeout(b"-1"), Err("ERR timeout is negative"));
        assert_eq!(parse_timeout(b"1e300"), Err("ERR timeout is negative"));
        assert_eq!(
            parse_timeout(b"x"),
            Err("ERR timeout is not a float or out of range")
        );
    }
}
