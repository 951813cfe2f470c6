//! SORT and SORT_RO against a real redis-server (every key shares the hash
//! tag `{s}`, as the node requires of BY/GET patterns like Redis Cluster);
//! the cluster-only refusals on the node alone.

use super::differential::Pair;
use tessera::node::resp::Frame;

#[test]
fn sort_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["RPUSH", "{s}l", "3", "1", "2", "10"],
        &["SORT", "{s}l"],
        &["SORT", "{s}l", "DESC"],
        &["SORT", "{s}l", "LIMIT", "1", "2"],
        &["SORT", "{s}l", "LIMIT", "-1", "2"],
        &["SORT", "{s}l", "LIMIT", "5", "1"],
        &["SORT", "{s}l", "LIMIT", "0", "-1"],
        &["SORT", "{s}l", "LIMIT", "2", "0"],
        &["SORT", "{s}l", "ALPHA"],
        &["SORT", "{s}l", "ALPHA", "DESC", "LIMIT", "0", "3"],
        &["SORT_RO", "{s}l", "DESC"],
        &["SET", "{s}w_3", "1"],
        &["SET", "{s}w_1", "3"],
        &["SET", "{s}w_2", "2"],
        &["SORT", "{s}l", "BY", "{s}w_*"],
        &["SORT", "{s}l", "BY", "{s}w_*", "DESC"],
        &["SORT", "{s}l", "BY", "{s}w_*", "ALPHA"],
        &["SORT", "{s}l", "BY", "nosort"],
        &["SORT", "{s}l", "BY", "nosort", "DESC", "LIMIT", "1", "2"],
        &["SET", "{s}o_1", "one"],
        &["SET", "{s}o_3", "three"],
        &["HSET", "{s}h_2", "f", "two"],
        &[
            "SORT",
            "{s}l",
            "GET",
            "{s}o_*",
            "GET",
            "#",
            "GET",
            "{s}h_*->f",
        ],
        &["SORT", "{s}l", "GET", "{s}h_*->"],
        &["SORT", "{s}l", "GET", "fixed"],
        &["RPUSH", "{s}bad", "a", "1"],
        &["SORT", "{s}bad"],
        &["SORT", "{s}bad", "ALPHA"],
        &["RPUSH", "{s}f", "1.5", "-2", "inf", "1e3", " 7", ""],
        &["SORT", "{s}f"],
        &["SORT", "{s}l", "STORE", "{s}dst"],
        &["LRANGE", "{s}dst", "0", "-1"],
        &["SORT", "{s}l", "GET", "{s}o_*", "STORE", "{s}dst"],
        &["LRANGE", "{s}dst", "0", "-1"],
        &["SORT", "{s}missing", "STORE", "{s}dst"],
        &["EXISTS", "{s}dst"],
        &["SORT", "{s}missing"],
        &["SADD", "{s}set", "5", "3", "9", "10"],
        &["SORT", "{s}set"],
        &["SORT", "{s}set", "DESC", "LIMIT", "1", "2"],
        &["SORT", "{s}set", "BY", "nosort", "STORE", "{s}d2"],
        &["LRANGE", "{s}d2", "0", "-1"],
        &["ZADD", "{s}z", "1", "c", "2", "b", "3", "a"],
        &["SORT", "{s}z", "BY", "nosort"],
        &["SORT", "{s}z", "BY", "nosort", "DESC", "LIMIT", "0", "2"],
        &["SORT", "{s}z", "ALPHA"],
        &["SET", "{s}str", "x"],
        &["SORT", "{s}str"],
        &["SORT", "{s}l", "FOO"],
        &["SORT", "{s}l", "LIMIT", "1"],
        &["SORT", "{s}l", "LIMIT", "x", "1"],
        &["SORT_RO", "{s}l", "STORE", "{s}x"],
        &["SORT", "{s}l", "STORE"],
    ]);
}

#[test]
fn sort_patterns_must_stay_in_the_keys_slot_and_store_is_one_slot() {
    let mut p = Pair::start();
    p.node.cmd(&["RPUSH", "{s}l", "1", "2"]);
    for (args, word) in [
        (&["SORT", "{s}l", "BY", "w_*"][..], "BY"),
        (&["SORT", "{s}l", "GET", "o_*"], "GET"),
        (&["SORT", "{s}l", "BY", "{other}w_*"], "BY"),
        (&["SORT", "{s}l", "GET", "*{s}"], "GET"),
    ] {
        let want = format!(
            "ERR {word} option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots."
        );
        assert_eq!(p.node.cmd(args), Frame::Error(want), "{args:?}");
    }
    let f = p.node.cmd(&["SORT", "{s}l", "STORE", "elsewhere"]);
    assert!(
        matches!(&f, Frame::Error(e) if e.starts_with("CROSSSLOT")),
        "{f:?}"
    );
    // `#`, a pattern without `*` and BY without `*` read no key: allowed.
    let f = p
        .node
        .cmd(&["SORT", "{s}l", "BY", "nosort", "GET", "#", "GET", "k"]);
    assert_eq!(
        f,
        Frame::Array(vec![
            Frame::Bulk(b"1".to_vec()),
            Frame::Null,
            Frame::Bulk(b"2".to_vec()),
            Frame::Null
        ])
    );
}
