//! Subcommand checks made with the command's other checks, before it runs
//! or is queued in MULTI: Redis 7 looks subcommands up in its command table,
//! so an unknown subcommand or a wrong argument count is refused at once
//! (and inside MULTI aborts the transaction, like any refused command).

use super::Args;

/// Containers, with each subcommand's arity (Redis' convention: negative
/// is a minimum). Subcommands a container does not list are unknown.
///
/// The arities are Redis 7.0's (`COMMAND INFO <container>`), so a
/// transaction is refused or queued as Redis would; a subcommand Redis
/// knows and the node does not implement passes here and gets the
/// handler's error when it runs. The node's own subcommands (marked) are
/// listed with the arity their handlers take.
const TABLE: &[(&str, &[(&str, i32)])] = &[
    (
        "script",
        &[
            ("debug", -3),
            ("exists", -3),
            ("flush", -2),
            ("help", 2),
            ("kill", 2),
            ("load", 3),
        ],
    ),
    (
        "xgroup",
        &[
            ("create", -5),
            ("setid", -5),
            ("destroy", 4),
            ("createconsumer", 5),
            ("delconsumer", 5),
            ("help", 2),
        ],
    ),
    (
        "xinfo",
        &[("stream", -3), ("groups", 3), ("consumers", 4), ("help", 2)],
    ),
    (
        "config",
        &[
            ("get", -3),
            ("set", -4),
            ("resetstat", 2),
            ("rewrite", 2),
            ("help", 2),
        ],
    ),
    (
        "cluster",
        &[
            ("addslots", -3),
            ("addslotsrange", -4),
            ("bumpepoch", 2),
            ("count-failure-reports", 3),
            ("countkeysinslot", 3),
            ("delslots", -3),
            ("delslotsrange", -4),
            ("failover", -2),
            ("flushslots", 2),
            ("forget", 3),
            ("getkeysinslot", 4),
            ("help", 2),
            ("info", 2),
            ("keyslot", 3),
            ("links", 2),
            ("meet", -4),
            ("myid", 2),
            ("nodes", 2),
            ("replicas", 3),
            ("replicate", 3),
            ("reset", -2),
            ("saveconfig", 2),
            ("set-config-epoch", 3),
            ("setslot", -4),
            ("shards", 2),
            ("slaves", 3),
            ("slots", 2),
            // The node's own (Redis 7.2 and Valkey 8 have the first and
            // last; the middle two serve slot migration).
            ("myshardid", 2),
            ("slotdigest", 4),
            ("getslotmigrations", 2),
            ("slot-stats", -2),
        ],
    ),
    (
        "object",
        &[
            ("encoding", 3),
            ("freq", 3),
            ("idletime", 3),
            ("refcount", 3),
            ("help", 2),
        ],
    ),
    (
        "function",
        &[
            ("delete", 3),
            ("dump", 2),
            ("flush", -2),
            ("help", 2),
            ("kill", 2),
            ("list", -2),
            ("load", -3),
            ("restore", -3),
            ("stats", 2),
        ],
    ),
    (
        "memory",
        &[
            ("doctor", 2),
            ("help", 2),
            ("malloc-stats", 2),
            ("purge", 2),
            ("stats", 2),
            ("usage", -3),
        ],
    ),
    (
        "client",
        &[
            ("caching", 3),
            ("getname", 2),
            ("getredir", 2),
            ("help", 2),
            ("id", 2),
            ("info", 2),
            ("kill", -3),
            ("list", -2),
            ("no-evict", 3),
            ("pause", -3),
            ("reply", 3),
            ("setname", 3),
            ("tracking", -3),
            ("trackinginfo", 2),
            ("unblock", -3),
            ("unpause", 2),
            // Redis 7.2's, which clients send on connect.
            ("setinfo", 4),
            ("no-touch", 3),
        ],
    ),
    (
        "acl",
        &[
            ("cat", -2),
            ("deluser", -3),
            ("dryrun", -4),
            ("genpass", -2),
            ("getuser", 3),
            ("help", 2),
            ("list", 2),
            ("load", 2),
            ("log", -2),
            ("save", 2),
            ("setuser", -3),
            ("users", 2),
            ("whoami", 2),
        ],
    ),
    (
        "pubsub",
        &[
            ("channels", -2),
            ("help", 2),
            ("numpat", 2),
            ("numsub", -2),
            ("shardchannels", -2),
            ("shardnumsub", -2),
        ],
    ),
    (
        "command",
        &[
            ("count", 2),
            ("docs", -2),
            ("getkeys", -4),
            ("getkeysandflags", -4),
            ("help", 2),
            ("info", -2),
            ("list", -2),
        ],
    ),
];

/// Redis' error for `args` when `name` is a container and the subcommand is
/// unknown or has the wrong number of arguments.
pub(super) fn refusal(name: &str, args: &Args<'_>) -> Option<String> {
    let (_, subs) = TABLE.iter().find(|(c, _)| *c == name)?;
    // A bare container (COMMAND alone) is the container's own form.
    if args.len() < 2 {
        return None;
    }
    // Redis prints at most 128 bytes of what it did not know.
    let raw = args.get(1);
    let sub = String::from_utf8_lossy(&raw[..raw.len().min(128)]);
    let lower = String::from_utf8_lossy(raw).to_ascii_lowercase();
    let Some((_, arity)) = subs.iter().find(|(s, _)| *s == lower) else {
        return Some(format!(
            "ERR unknown subcommand '{sub}'. Try {} HELP.",
            name.to_ascii_uppercase()
        ));
    };
    let n = args.len() as i32;
    ((*arity > 0 && n != *arity) || (*arity < 0 && n < -*arity))
        .then(|| format!("ERR wrong number of arguments for '{name}|{lower}' command"))
}
