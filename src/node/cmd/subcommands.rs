//! Subcommand checks made with the command's other checks, before it runs
//! or is queued in MULTI: Redis 7 looks subcommands up in its command table,
//! so an unknown subcommand or a wrong argument count is refused at once
//! (and inside MULTI aborts the transaction, like any refused command).

use super::Args;

/// Containers, with each subcommand's arity (Redis' convention: negative
/// is a minimum). Subcommands a container does not list are unknown.
const TABLE: &[(&str, &[(&str, i32)])] = &[
    (
        "script",
        &[("load", 3), ("exists", -3), ("flush", -2), ("kill", 2)],
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
];

/// Redis' error for `args` when `name` is a container and the subcommand is
/// unknown or has the wrong number of arguments.
pub(super) fn refusal(name: &str, args: &Args<'_>) -> Option<String> {
    let (_, subs) = TABLE.iter().find(|(c, _)| *c == name)?;
    let sub = String::from_utf8_lossy(args.get(1));
    let lower = sub.to_ascii_lowercase();
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
