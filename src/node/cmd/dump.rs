//! DUMP and RESTORE in Redis' RDB value format (`node::rdb`), so values
//! move between this node and a redis-server either way.
//!
//! RESTORE is logged with an absolute deadline (ABSTTL) and REPLACE: a
//! replica or a replayed log decodes the same payload to the same value,
//! and creates it even if the deadline has passed since (the primary's
//! expiry is logged on its own).

use super::flags::*;
use super::{Args, CommandSpec, Ctx, ERR_SYNTAX};
use crate::node::rdb::{self, RdbError};
use crate::try_reply;

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "dump", arity: 2, flags: READONLY, first_key: 1, last_key: 1, step: 1, handler: dump },
    CommandSpec { name: "restore", arity: -4, flags: WRITE | DENYOOM, first_key: 1, last_key: 1, step: 1, handler: restore },
];

fn error_text(e: RdbError) -> String {
    format!("ERR {e}")
}

fn dump(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = ctx.slot();
    let Some(e) = ctx.store.get(slot, args.get(1)) else {
        return ctx.out.null();
    };
    match rdb::dump(&e.value) {
        Ok(p) => ctx.out.bulk(&p),
        Err(e) => ctx.out.error(&error_text(e)),
    }
}

fn restore(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq) = (false, false);
    let mut j = 4;
    while j < args.len() {
        let more = args.len() - j - 1;
        if args.is(j, "replace") {
            replace = true;
        } else if args.is(j, "absttl") {
            absttl = true;
        } else if args.is(j, "idletime") && more >= 1 && !freq {
            if try_reply!(ctx, args.int(j + 1)) < 0 {
                return ctx.out.error("ERR Invalid IDLETIME value, must be >= 0");
            }
            idle = true;
            j += 1;
        } else if args.is(j, "freq") && more >= 1 && !idle {
            let f = try_reply!(ctx, args.int(j + 1));
            if !(0..=255).contains(&f) {
                return ctx
                    .out
                    .error("ERR Invalid FREQ value, must be >= 0 and <= 255");
            }
            freq = true;
            j += 1;
        } else {
            return ctx.out.error(ERR_SYNTAX);
        }
        j += 1;
    }
    let (slot, key) = (ctx.slot(), args.get(1));
    let exists = ctx.store.get(slot, key).is_some();
    if !replace && exists {
        return ctx.out.error("BUSYKEY Target key name already exists.");
    }
    let ttl = try_reply!(ctx, args.int(2));
    if ttl < 0 {
        return ctx.out.error("ERR Invalid TTL value, must be >= 0");
    }
    let value = match rdb::restore(args.get(3)) {
        Ok(v) => v,
        Err(e) => return ctx.out.error(&error_text(e)),
    };
    let now = ctx.store.now_ms as i64;
    let at = match (ttl, absttl) {
        (0, _) => 0,
        (t, true) => t,
        (t, false) => t.saturating_add(now),
    };
    // Already expired: nothing is created (a replaced key is deleted).
    // A replica creates what its primary logged, whatever the time.
    if at != 0 && at <= now && !ctx.replaying {
        if exists {
            ctx.store.remove(slot, key);
            ctx.running = "del";
            ctx.propagate_as(&[b"DEL", key]);
        }
        return ctx.out.ok();
    }
    ctx.store.set(slot, key, value, at as u64);
    let at_text = at.to_string();
    ctx.propagate_as(&[
        b"RESTORE",
        key,
        at_text.as_bytes(),
        args.get(3),
        b"REPLACE",
        b"ABSTTL",
    ]);
    ctx.out.ok();
}
