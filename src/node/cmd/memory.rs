//! MEMORY STATS: where the node's memory is (the figures of INFO memory,
//! under the names of Redis' MEMORY STATS); MEMORY USAGE: what one key
//! costs.

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::info::MemoryFigures;
use crate::node::store::Store;
use crate::try_reply;

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "memory",
    arity: -2,
    flags: READONLY | LOADING_OK,
    // MEMORY USAGE's key (STATS and HELP have no third argument).
    first_key: 2,
    last_key: 2,
    step: 1,
    handler: memory,
}];

fn memory(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.is(1, "stats") && args.len() == 2 {
        stats(ctx);
    } else if args.is(1, "usage") && args.len() >= 3 {
        usage(ctx, args);
    } else if args.is(1, "help") && args.len() == 2 {
        ctx.out.array(4);
        ctx.out.simple("MEMORY STATS");
        ctx.out
            .simple("    Where the memory is: allocator totals, overhead, dataset.");
        ctx.out.simple("MEMORY USAGE <key> [SAMPLES <count>]");
        ctx.out.simple(
            "    Bytes the key and its value take, sampling <count> elements of an aggregate (0: all).",
        );
    } else {
        ctx.out.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(args.get(1))
        ));
    }
}

fn stats(ctx: &mut Ctx<'_>) {
    let m = MemoryFigures::now(ctx.node);
    let keys = ctx.store.len() as u64;
    let ints: [(&str, u64); 10] = [
        ("total.allocated", m.used),
        ("startup.allocated", m.startup),
        ("replication.backlog", m.ring),
        ("clients.slaves", 0),
        ("clients.normal", m.clients),
        ("overhead.total", m.overhead()),
        ("keys.count", keys),
        ("keys.bytes-per-key", m.dataset() / keys.max(1)),
        ("dataset.bytes", m.dataset()),
        ("rss.bytes", m.rss),
    ];
    ctx.out.map(ints.len() + 3);
    for (name, v) in ints {
        ctx.out.bulk(name.as_bytes());
        ctx.out.int(v as i64);
    }
    ctx.out.bulk(b"dataset.percentage");
    ctx.out
        .double(100.0 * m.dataset() as f64 / m.used.max(1) as f64);
    ctx.out.bulk(b"fragmentation");
    ctx.out.double(m.fragmentation());
    ctx.out.bulk(b"fragmentation.bytes");
    ctx.out.int(m.rss as i64 - m.used as i64);
}

/// MEMORY USAGE key [SAMPLES n]: the key's bytes, its value's estimated
/// from `n` elements (default 5, 0: all); null for a missing key.
fn usage(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut samples = 5usize;
    let mut i = 3;
    while i < args.len() {
        if !(args.is(i, "samples") && i + 1 < args.len()) {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        let n = try_reply!(ctx, args.int(i + 1));
        if n < 0 {
            ctx.out.error(ERR_SYNTAX);
            return;
        }
        samples = usize::try_from(n).unwrap_or(usize::MAX);
        i += 2;
    }
    let (slot, key) = (ctx.slot(), args.get(2));
    // Not an access: the key's clock is put back after the look-up (which
    // deletes an expired key).
    let clock = ctx.store.peek_key(slot, key).map(|(k, _)| k.clock());
    if ctx.store.get(slot, key).is_none() {
        ctx.out.null();
        return;
    }
    match ctx.store.peek_key(slot, key).zip(clock) {
        Some(((k, e), clock)) => {
            k.set_clock(clock);
            ctx.out.int(Store::key_bytes(k, &e.value, samples) as i64);
        }
        None => ctx.out.null(),
    }
}
