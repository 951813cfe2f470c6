//! Pub/sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE,
//! PUBLISH, SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH, PUBSUB, and the internal
//! TPUBLISH.
//!
//! PUBLISH reaches this node's subscribers (`node::pubsub`) and is queued
//! for every other node of the topology (`node::pubsub_forward`), which
//! receives it as TPUBLISH: delivered there, never forwarded again. Shard
//! channels hash like keys: SSUBSCRIBE and SPUBLISH go to a node of the
//! shard serving the channel's slot (MOVED / CROSSSLOT as for keys), and
//! SPUBLISH reaches the other nodes of that shard only.

use std::rc::Rc;

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::pubsub::{Kind, Subscriber};

macro_rules! spec {
    ($name:expr, $arity:expr, $flags:expr, $first:expr, $last:expr, $handler:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: if $first > 0 { 1 } else { 0 },
            handler: $handler,
        }
    };
}

pub static COMMANDS: &[CommandSpec] = &[
    spec!("subscribe", -2, NOSCRIPT | LOADING_OK, 0, 0, subscribe),
    spec!("unsubscribe", -1, NOSCRIPT | LOADING_OK, 0, 0, unsubscribe),
    spec!("psubscribe", -2, NOSCRIPT | LOADING_OK, 0, 0, psubscribe),
    spec!(
        "punsubscribe",
        -1,
        NOSCRIPT | LOADING_OK,
        0,
        0,
        punsubscribe
    ),
    spec!("ssubscribe", -2, NOSCRIPT, 1, -1, ssubscribe),
    spec!("sunsubscribe", -1, NOSCRIPT, 1, -1, sunsubscribe),
    spec!("publish", 3, FAST | LOADING_OK, 0, 0, publish),
    spec!("spublish", 3, FAST, 1, 1, spublish),
    spec!("pubsub", -2, LOADING_OK, 0, 0, pubsub),
    // A peer's forwarded PUBLISH: a link command, for admins only.
    spec!(
        "tpublish",
        -3,
        ADMIN | NOSCRIPT | LOADING_OK | FAST,
        0,
        0,
        tpublish
    ),
];

/// Commands a RESP2 connection may send while it has subscriptions.
const IN_SUBSCRIBED: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

/// The error a RESP2 subscribed connection gets for other commands.
pub fn context_refusal(ctx: &Ctx<'_>, name: &str) -> Option<String> {
    let sub = ctx.conn.sub.as_ref()?;
    if ctx.conn.resp3 || !sub.is_subscribed() || IN_SUBSCRIBED.contains(&name) {
        return None;
    }
    Some(format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

/// Whether the connection has subscriptions (PING answers in kind).
pub fn subscribed(ctx: &Ctx<'_>) -> bool {
    ctx.conn.sub.as_ref().is_some_and(|s| s.is_subscribed())
}

fn subscriber(ctx: &mut Ctx<'_>) -> Rc<Subscriber> {
    let limit = ctx.node.cfg.limits.output_buffer;
    let (id, resp3) = (ctx.conn.id, ctx.conn.resp3);
    let sub = ctx
        .conn
        .sub
        .get_or_insert_with(|| Rc::new(Subscriber::new(id, resp3, limit)));
    sub.resp3.set(resp3);
    sub.clone()
}

/// One confirmation: `[kind, name, count]` (a push in RESP3).
fn confirm(ctx: &mut Ctx<'_>, what: &[u8], name: Option<&[u8]>, count: usize) {
    ctx.out.push(3);
    ctx.out.bulk(what);
    match name {
        Some(n) => ctx.out.bulk(n),
        None => ctx.out.null(),
    }
    ctx.out.int(count as i64);
}

fn count(sub: &Subscriber, kind: Kind) -> usize {
    if kind == Kind::Shard {
        sub.shard_count()
    } else {
        sub.count()
    }
}

fn subscribe_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind, what: &[u8]) {
    let sub = subscriber(ctx);
    for name in args.iter().skip(1) {
        ctx.node.pubsub.borrow_mut().subscribe(&sub, kind, name);
        confirm(ctx, what, Some(name), count(&sub, kind));
    }
}

fn unsubscribe_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, kind: Kind, what: &[u8]) {
    let sub = subscriber(ctx);
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args.iter().skip(1).map(<[u8]>::to_vec).collect()
    } else {
        sub.names(kind)
    };
    if names.is_empty() {
        confirm(ctx, what, None, count(&sub, kind));
        return;
    }
    for name in names {
        ctx.node.pubsub.borrow_mut().unsubscribe(&sub, kind, &name);
        confirm(ctx, what, Some(&name), count(&sub, kind));
    }
}

fn subscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    subscribe_generic(ctx, args, Kind::Channel, b"subscribe");
}
fn unsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    unsubscribe_generic(ctx, args, Kind::Channel, b"unsubscribe");
}
fn psubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    subscribe_generic(ctx, args, Kind::Pattern, b"psubscribe");
}
fn punsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    unsubscribe_generic(ctx, args, Kind::Pattern, b"punsubscribe");
}
fn ssubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    subscribe_generic(ctx, args, Kind::Shard, b"ssubscribe");
}
fn sunsubscribe(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    unsubscribe_generic(ctx, args, Kind::Shard, b"sunsubscribe");
}

/// Counts this node's subscribers only, as Redis Cluster's PUBLISH does.
fn publish(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = ctx
        .node
        .pubsub
        .borrow()
        .publish(false, args.get(1), args.get(2));
    crate::node::pubsub_forward::forward(ctx.node, false, args.get(1), args.get(2));
    ctx.out.int(n as i64);
}

/// `TPUBLISH channel message [SHARD]`: a peer's PUBLISH (SPUBLISH with
/// SHARD), for this node's subscribers only.
fn tpublish(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let shard = match args.len() {
        3 => false,
        4 if args.is(3, "shard") => true,
        _ => {
            ctx.out.error(super::ERR_SYNTAX);
            return;
        }
    };
    let n = ctx
        .node
        .pubsub
        .borrow()
        .publish(shard, args.get(1), args.get(2));
    ctx.out.int(n as i64);
}

fn spublish(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = ctx
        .node
        .pubsub
        .borrow()
        .publish(true, args.get(1), args.get(2));
    crate::node::pubsub_forward::forward(ctx.node, true, args.get(1), args.get(2));
    ctx.out.int(n as i64);
}

fn pubsub(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = String::from_utf8_lossy(args.get(1)).to_ascii_uppercase();
    let ps = ctx.node.pubsub.borrow();
    match (sub.as_str(), args.len()) {
        ("CHANNELS" | "SHARDCHANNELS", 2 | 3) => {
            let kind = if sub == "CHANNELS" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            let names = ps.active(kind, (args.len() == 3).then(|| args.get(2)));
            ctx.out.array(names.len());
            for n in &names {
                ctx.out.bulk(n);
            }
        }
        ("NUMSUB" | "SHARDNUMSUB", _) => {
            let kind = if sub == "NUMSUB" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            ctx.out.map(args.len() - 2);
            for name in args.iter().skip(2) {
                ctx.out.bulk(name);
                ctx.out.int(ps.subscribers(kind, name) as i64);
            }
        }
        ("NUMPAT", 2) => ctx.out.int(ps.patterns() as i64),
        ("CHANNELS" | "SHARDCHANNELS" | "NUMPAT", _) => ctx.out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
        _ => ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(args.get(1))
        )),
    }
}
