//! Differences the random sequences found, each kept as a fixed case
//! against redis-server (argument checks in Redis' order, stream range and
//! COUNT edge cases, subcommand arity refused when queued).

use super::differential::Pair;

#[test]
fn stream_argument_checks_come_in_redis_order() {
    let mut p = Pair::start();
    p.script(&[
        &["SET", "{k}s", "x"],
        // The ID's syntax, then LIMIT without `~`, then the arity, then a
        // 0-0 ID, then the key's type.
        &["XADD", "{k}s", "0-0", "x", "y"],
        &["XADD", "{k}a", "MAXLEN", "2", "LIMIT", "1", "1-x", "f", "v"],
        &["XADD", "{k}a", "MAXLEN", "2", "LIMIT", "1", "1-1", "f", "v"],
        &["XADD", "{k}a", "x", "f"],
        &["XADD", "{k}a", "1-1", "f"],
        &["XADD", "{k}s", "1-1", "f", "v"],
        &["XTRIM", "{k}a", "MAXLEN", "2", "LIMIT", "1"],
        // Options in any order; LIMIT's own rules after the ID.
        &["XADD", "{k}a", "LIMIT", "1", "MAXLEN", "2", "1-1", "f", "v"],
        &["XADD", "{k}a", "LIMIT", "5", "1-1", "f", "v"],
        &["XADD", "{k}a", "LIMIT", "0", "1-1", "f", "v"],
        &["XADD", "{k}a", "LIMIT", "-1", "1-1", "f", "v"],
        &["XADD", "{k}a", "MAXLEN", "2", "MINID", "1", "1-1", "f", "v"],
        &["XADD", "{k}a", "MAXLEN", "~", "1-1", "f", "v"],
        &["XADD", "{k}a", "MAXLEN", "2", "NOMKSTREAM", "1-1", "f", "v"],
        &["XADD", "{k}a", "MAXLEN", "1", "1-2", "f", "v"],
        &[
            "XADD",
            "{k}a",
            "NOMKSTREAM",
            "MINID",
            "=",
            "1-3",
            "1-3",
            "f",
            "v",
        ],
        &["XRANGE", "{k}a", "-", "+"],
        &["XTRIM", "{k}a", "LIMIT", "1", "MAXLEN", "2"],
        &["XTRIM", "{k}a", "LIMIT", "1"],
        &["XTRIM", "{k}a", "NOMKSTREAM", "MAXLEN", "1"],
        &["XTRIM", "{k}a", "MAXLEN", "1", "MINID", "1"],
        &["XTRIM", "{k}a", "MAXLEN", "0", "x"],
        // A stream at the last possible ID.
        &[
            "XADD",
            "{k}a",
            "18446744073709551615-18446744073709551615",
            "f",
            "v",
        ],
        &[
            "XADD",
            "{k}a",
            "18446744073709551615-18446744073709551615",
            "f",
            "v",
        ],
        &["XADD", "{k}a", "*", "f", "v"],
        &["XADD", "{k}a", "5-*", "f", "v"],
        // XDEL and XACK answer 0 for a missing key (or group) whatever
        // the IDs.
        &["XDEL", "{k}missing", "1-x", "1-1"],
        &["XDEL", "{k}s", "1-x"],
        &["XDEL", "{k}a", "1-x"],
        &["XACK", "{k}missing", "g", "2-*"],
        &["XACK", "{k}a", "nogroup", "x"],
        &["XGROUP", "CREATE", "{k}a", "g", "0"],
        &["XACK", "{k}a", "g", "x"],
        &["XACK", "{k}s", "g", "1-1"],
    ]);
}

#[test]
fn stream_range_bounds_and_counts_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["XADD", "{k}a", "1-1", "f", "v"],
        &["XADD", "{k}a", "2-1", "f", "v"],
        &[
            "XRANGE",
            "{k}a",
            "(18446744073709551615-18446744073709551615",
            "+",
        ],
        &[
            "XREVRANGE",
            "{k}a",
            "-",
            "(18446744073709551615-18446744073709551615",
        ],
        &["XRANGE", "{k}a", "-", "(0-0"],
        &["XREVRANGE", "{k}a", "(0-0", "-"],
        &["XRANGE", "{k}a", "(1-1", "+"],
        &["XRANGE", "{k}a", "-", "-", "COUNT", "-1"],
        &["XRANGE", "{k}a", "-", "+", "COUNT", "0"],
        &["XREVRANGE", "{k}a", "+", "-", "COUNT", "0"],
        &["XRANGE", "{k}missing", "-", "+", "COUNT", "0"],
        &["XRANGE", "{k}a", "-", "+", "COUNT", "5", "COUNT", "1"],
        &["XRANGE", "{k}a", "-", "+", "COUNT", "1", "FOO"],
        &["XRANGE", "{k}a", "-", "+", "COUNT"],
    ]);
}

#[test]
fn blocking_commands_check_options_before_the_timeout() {
    let mut p = Pair::start();
    p.script(&[
        &["BLMPOP", "x", "1", "{k}a", "{k}a", "LEFT"],
        &["BLMPOP", "x", "0", "{k}a", "LEFT"],
        &["BLMPOP", "x", "1", "{k}a", "LEFT", "COUNT", "0"],
        &["BLMPOP", "x", "1", "{k}a", "LEFT"],
        &["BLMPOP", "-1", "1", "{k}a", "LEFT"],
        &["BLMOVE", "{k}a", "{k}b", "UP", "LEFT", "x"],
        &["BLMOVE", "{k}a", "{k}b", "LEFT", "UP", "-1"],
        &["BLMOVE", "{k}a", "{k}b", "LEFT", "RIGHT", "x"],
        &["RPUSH", "{k}a", "1"],
        &["BLMPOP", "x", "1", "{k}a", "LEFT"],
        &["LLEN", "{k}a"],
    ]);
}

#[test]
fn subcommand_arity_is_checked_when_queued() {
    let mut p = Pair::start();
    p.script(&[
        &["SCRIPT", "EXISTS"],
        &["SCRIPT", "LOAD"],
        &["SCRIPT", "KILL", "x"],
        &["XINFO", "GROUPS"],
        &["XGROUP", "DESTROY", "{k}a"],
        &["MULTI"],
        &["SCRIPT", "EXISTS"],
        &["SCRIPT", "NOPE"],
        &["XINFO", "FOO"],
        &["XGROUP", "CREATE", "{k}a", "g"],
        &["XINFO", "STREAM", "{k}a"],
        &["EXEC"],
        &["MULTI"],
        &["SCRIPT", "EXISTS", "abc"],
        &["XGROUP", "CREATE", "{k}a", "g", "$", "MKSTREAM"],
        &["XINFO", "GROUPS", "{k}a"],
        &["EXEC"],
    ]);
}

#[test]
fn container_subcommands_are_checked_alone_and_when_queued() {
    let mut p = Pair::start();
    let refused: &[&[&str]] = &[
        &["CONFIG", "GET"],
        &["CONFIG", "NOPE"],
        &["CLUSTER", "KEYSLOT"],
        &["CLUSTER", "NOPE", "x"],
        &["OBJECT", "ENCODING"],
        &["OBJECT", "ENCODING", "{k}a", "x"],
        &["FUNCTION", "DELETE"],
        &["FUNCTION", "NOPE"],
        &["MEMORY", "USAGE"],
        &["MEMORY", "NOPE"],
        &["CLIENT", "SETNAME"],
        &["CLIENT", "NOPE"],
        &["ACL", "GETUSER"],
        &["ACL", "NOPE"],
        &["PUBSUB", "NUMPAT", "x"],
        &["PUBSUB", "NOPE"],
        &["COMMAND", "COUNT", "x"],
        &["COMMAND", "NOPE"],
    ];
    // Alone, each is refused with Redis' error.
    p.script(refused);
    // Queued, each is refused at once and the transaction aborts.
    for cmd in refused {
        p.script(&[
            &["MULTI"],
            cmd,
            &["SET", "{k}a", "1"],
            &["EXEC"],
            &["GET", "{k}a"],
        ]);
    }
    // Well-formed ones queue and run.
    p.script(&[
        &["MULTI"],
        &["OBJECT", "ENCODING", "{k}a"],
        &["CLIENT", "GETNAME"],
        &["PUBSUB", "NUMPAT"],
        &["MEMORY", "USAGE", "{k}a"],
        &["ACL", "WHOAMI"],
        &["SET", "{k}a", "1"],
        &["EXEC"],
    ]);
}
