//! Replication commands on the RESP port: the replica handshake and WAIT.
//!
//! Both need the connection itself (a stream takeover, an asynchronous
//! wait), so the handlers only record the request; the connection loop acts
//! on it after the batch (see `server::connection_loop`).

use super::flags::*;
use super::{Args, CommandSpec, Ctx};

pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "treplicate",
        arity: -6,
        flags: ADMIN | NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: treplicate,
    },
    CommandSpec {
        name: "wait",
        arity: 3,
        flags: NOSCRIPT,
        first_key: 0,
        last_key: 0,
        step: 0,
        handler: wait,
    },
];

/// `TREPLICATE <shard> <epoch> <replica-node-id> <last-lsn> <data-epoch>
/// [<truncate-floor>]`.
fn treplicate(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    ctx.effects.replicate = Some(args.iter().map(|a| a.to_vec()).collect());
}

/// `WAIT numreplicas timeout`.
fn wait(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let n = crate::try_reply!(ctx, args.int(1));
    let t = crate::try_reply!(ctx, args.int(2));
    if n < 0 || t < 0 {
        ctx.out.error("ERR timeout is negative");
        return;
    }
    if ctx.node.role.get() != crate::node::Role::Primary {
        ctx.out
            .error("ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
        return;
    }
    ctx.effects.wait = Some((n as usize, t as u64));
}
