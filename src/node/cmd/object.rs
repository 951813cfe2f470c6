//! OBJECT: what the node keeps about a key (ENCODING, REFCOUNT, IDLETIME,
//! FREQ), under Redis' names.

use super::flags::*;
use super::{Args, CommandSpec, Ctx};
use crate::node::evict;

pub static COMMANDS: &[CommandSpec] = &[CommandSpec {
    name: "object",
    arity: -2,
    flags: READONLY,
    first_key: 2,
    last_key: 2,
    step: 1,
    handler: object,
}];

const HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Print this help.",
];

fn object(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let sub = args.get(1).to_ascii_lowercase();
    if sub == b"help" && args.len() == 2 {
        ctx.out.array(HELP.len());
        for line in HELP {
            ctx.out.simple(line);
        }
        return;
    }
    let known = [&b"encoding"[..], b"refcount", b"idletime", b"freq"];
    if !known.contains(&sub.as_slice()) {
        ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(args.get(1))
        ));
        return;
    }
    if args.len() != 3 {
        ctx.out.error(&format!(
            "ERR wrong number of arguments for 'object|{}' command",
            String::from_utf8_lossy(&sub)
        ));
        return;
    }
    let policy = ctx.node.memory.policy.get();
    let lfu = matches!(
        policy,
        evict::Policy::AllKeysLfu | evict::Policy::VolatileLfu
    );
    if sub == b"idletime" && lfu {
        ctx.out.error("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
        return;
    }
    if sub == b"freq" && !lfu {
        ctx.out.error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.");
        return;
    }
    let (slot, key) = (ctx.slot(), args.get(2));
    // The look-up deletes an expired key but is not an access: the key's
    // clock is put back as it was (Redis looks up without touching).
    let clock = ctx.store.peek_key(slot, key).map(|(k, _)| k.clock());
    if ctx.store.get(slot, key).is_none() {
        ctx.out.null();
        return;
    }
    let now = evict::clock_at(ctx.store.now_ms);
    let Some(((k, e), clock)) = ctx.store.peek_key(slot, key).zip(clock) else {
        ctx.out.null();
        return;
    };
    k.set_clock(clock);
    match sub.as_slice() {
        b"encoding" => ctx.out.bulk(e.value.encoding().as_bytes()),
        b"refcount" => ctx.out.int(1),
        b"idletime" => ctx.out.int(evict::idle_secs(clock, now) as i64),
        _ => ctx.out.int(evict::decayed_counter(clock, now) as i64),
    }
}
