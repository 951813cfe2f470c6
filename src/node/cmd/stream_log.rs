//! TXSTREAM (internal): how the consumer-group commands reach the log.
//!
//! A group command logs the state it set as one `TXSTREAM key op…` record:
//! `META last-id entries-added max-deleted-id`, `GROUP name last-id
//! entries-read`, `DESTROY name`, `CONSUMER group name seen-time`,
//! `DELCONSUMER group name`, `PEL group id consumer delivery-time
//! delivery-count`, `ACK group id`. Applying it sets exactly that state
//! (creating the stream when missing: XGROUP CREATE … MKSTREAM, a migrated
//! stream), so replay, replicas and migrations never recompute times, `$`
//! or `>`.

use super::flags::*;
use super::streams::{fmt_id, parse_id, ERR_INVALID_ID};
use super::{Args, CommandSpec, Ctx, ERR_NOT_INTEGER, ERR_SYNTAX};
use crate::node::groups::{Group, Pending};
use crate::node::store::{Bytes, Stream, StreamId, Value, WRONGTYPE};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
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
    pub fn destroy(&mut self, name: &[u8]) {
        self.push(&[b"DESTROY", name]);
    }
    pub fn consumer(&mut self, group: &[u8], name: &[u8], seen: u64) {
        self.push(&[b"CONSUMER", group, name, seen.to_string().as_bytes()]);
    }
    pub fn del_consumer(&mut self, group: &[u8], name: &[u8]) {
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
    pub fn ack(&mut self, group: &[u8], id: StreamId) {
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
