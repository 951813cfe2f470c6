//! MEMORY STATS: where the node's memory is (the figures of INFO memory,
//! under the names of Redis' MEMORY STATS).

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::info::MemoryFigures;

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "memory",
    arity: -2,
    flags: READONLY | LOADING_OK,
    first_key: 0,
    last_key: 0,
    step: 0,
    handler: memory,
}];

fn memory(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    if args.is(1, "stats") && args.len() == 2 {
        stats(ctx);
    } else if args.is(1, "help") && args.len() == 2 {
        ctx.out.array(2);
        ctx.out.simple("MEMORY STATS");
        ctx.out
            .simple("    Where the memory is: allocator totals, overhead, dataset.");
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
