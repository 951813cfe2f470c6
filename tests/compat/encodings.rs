//! Packed (listpack) and full encodings of hashes and sorted sets, against
//! a redis-server: where each converts (entry count, value length, CONFIG
//! SET thresholds), OBJECT ENCODING, and every hash and sorted-set command
//! on a packed value and on a converted one answering as Redis does.

use super::differential::Pair;
use tessera::node::resp::Frame;

/// A reply with the elements of arrays (and the pairs of maps) sorted: the
/// full encodings' iteration order is not Redis'.
fn sorted(f: Frame) -> Frame {
    match f {
        Frame::Array(mut v) => {
            v.sort_by_key(|x| format!("{x:?}"));
            Frame::Array(v)
        }
        Frame::Map(mut v) => {
            v.sort_by_key(|x| format!("{x:?}"));
            Frame::Map(v)
        }
        other => other,
    }
}

/// HGETALL's flat field/value array as sorted pairs.
fn pairs(f: Frame) -> Vec<String> {
    let Frame::Array(v) = f else {
        return vec![format!("{f:?}")];
    };
    let mut out: Vec<String> = v.chunks(2).map(|c| format!("{c:?}")).collect();
    out.sort();
    out
}

/// How the order-dependent replies of a script are compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Packed on both: Redis' listpack order, compared exactly.
    Exact,
    /// A table here: compared as sets.
    Unordered,
}

impl Pair {
    /// Runs `args` on both; replies equal (as sets when `o` is Unordered).
    fn same_as(&mut self, o: Order, args: &[&str]) -> Frame {
        if o == Order::Exact {
            return self.same(args);
        }
        let ours = self.node.cmd(args);
        let theirs = self.redis.cmd(args);
        if args[0] == "HGETALL" {
            assert_eq!(pairs(ours.clone()), pairs(theirs), "{args:?}");
        } else {
            assert_eq!(sorted(ours.clone()), sorted(theirs), "{args:?}");
        }
        ours
    }

    fn encoding(&mut self, key: &str, expect: &str) {
        let f = self.same(&["OBJECT", "ENCODING", key]);
        assert_eq!(f, Frame::Bulk(expect.as_bytes().to_vec()), "{key}");
    }
}

/// Every hash command on `k`; returns the replies (for comparing a packed
/// key's transcript with a converted key's).
fn hash_script(p: &mut Pair, k: &str, o: Order) -> Vec<Frame> {
    let mut log = Vec::new();
    let mut run = |p: &mut Pair, args: &[&str], ordered: bool| {
        let f = if ordered {
            sorted(p.same_as(o, args))
        } else {
            p.same(args)
        };
        log.push(f);
    };
    run(p, &["HSET", k, "a", "1", "b", "2", "c", "3"], false);
    run(p, &["HSET", k, "b", "20", "d", "4"], false);
    run(p, &["HMSET", k, "e", "5", "a", "10"], false);
    run(p, &["HSETNX", k, "a", "x"], false);
    run(p, &["HSETNX", k, "f", "6"], false);
    run(p, &["HGET", k, "b"], false);
    run(p, &["HGET", k, "zz"], false);
    run(p, &["HMGET", k, "a", "zz", "f"], false);
    run(p, &["HEXISTS", k, "c"], false);
    run(p, &["HEXISTS", k, "zz"], false);
    run(p, &["HLEN", k], false);
    run(p, &["HSTRLEN", k, "b"], false);
    run(p, &["HSTRLEN", k, "zz"], false);
    run(p, &["HINCRBY", k, "a", "5"], false);
    run(p, &["HINCRBY", k, "n", "-3"], false);
    run(p, &["HINCRBY", k, "b", "9223372036854775807"], false);
    run(p, &["HINCRBY", k, "e", "x"], false);
    run(p, &["HINCRBYFLOAT", k, "c", "0.5"], false);
    run(p, &["HINCRBYFLOAT", k, "fl", "2.25"], false);
    run(p, &["HSET", k, "s", "str"], false);
    run(p, &["HINCRBY", k, "s", "1"], false);
    run(p, &["HINCRBYFLOAT", k, "s", "1"], false);
    run(p, &["HDEL", k, "d", "zz", "n"], false);
    run(p, &["HGETALL", k], true);
    run(p, &["HKEYS", k], true);
    run(p, &["HVALS", k], true);
    // Random picks of every field: compared as sets in both encodings.
    let random = |p: &mut Pair, args: &[&str]| sorted(p.same_as(Order::Unordered, args));
    let picks = [
        random(p, &["HRANDFIELD", k, "100"]),
        random(p, &["HRANDFIELD", k, "100", "WITHVALUES"]),
    ];
    if o == Order::Exact {
        // A packed hash is scanned whole in one step, as Redis does.
        p.same(&["HSCAN", k, "0"]);
        p.same(&["HSCAN", k, "0", "MATCH", "[a-c]", "COUNT", "1"]);
    }
    run(p, &["HDEL", k, "a", "b", "c", "e", "f", "fl", "s"], false);
    run(p, &["EXISTS", k], false);
    log.extend(picks);
    log
}

/// Every sorted-set command on `k` (sorted-set replies are ordered by
/// score in both encodings, so compared exactly).
fn zset_script(p: &mut Pair, k: &str) -> Vec<Frame> {
    let script: &[&[&str]] = &[
        &["ZADD", k, "1", "a", "2", "b", "2", "c", "-1.5", "d"],
        &["ZADD", k, "NX", "5", "a", "6", "e"],
        &["ZADD", k, "XX", "CH", "3", "b", "7", "zz"],
        &["ZADD", k, "GT", "CH", "0", "a", "10", "c"],
        &["ZADD", k, "LT", "CH", "-5", "a"],
        &["ZADD", k, "INCR", "2", "d"],
        &["ZINCRBY", k, "0.25", "b"],
        &["ZINCRBY", k, "4", "new"],
        &["ZADD", k, "0", "z0"],
        &["ZSCORE", k, "b"],
        &["ZSCORE", k, "zz"],
        &["ZMSCORE", k, "a", "zz", "c"],
        &["ZCARD", k],
        &["ZCOUNT", k, "-inf", "+inf"],
        &["ZCOUNT", k, "(0", "3"],
        &["ZRANGE", k, "0", "-1", "WITHSCORES"],
        &["ZRANGE", k, "1", "3"],
        &["ZRANGE", k, "-2", "-1", "REV"],
        &[
            "ZRANGE",
            k,
            "(0",
            "+inf",
            "BYSCORE",
            "LIMIT",
            "1",
            "2",
            "WITHSCORES",
        ],
        &["ZRANGE", k, "+inf", "-inf", "BYSCORE", "REV", "WITHSCORES"],
        &["ZREVRANGE", k, "0", "2", "WITHSCORES"],
        &["ZRANGEBYSCORE", k, "-inf", "2", "WITHSCORES"],
        &["ZREVRANGEBYSCORE", k, "+inf", "(1", "LIMIT", "0", "3"],
        &["ZRANK", k, "b"],
        &["ZREVRANK", k, "a"],
        &["ZRANK", k, "zz"],
        &["ZRANGE", k, "0", "-1", "WITHSCORES"],
        &["ZRANDMEMBER", k, "-3"],
        &["ZPOPMIN", k],
        &["ZPOPMAX", k, "2"],
        &["ZREM", k, "zz", "b"],
        &["ZREMRANGEBYSCORE", k, "(4", "5"],
        // Lexicographic ranges are defined for equal scores only (with
        // mixed scores Redis' skiplist answers by its random levels).
        &["ZREMRANGEBYSCORE", k, "-inf", "(1"],
        &["ZREMRANGEBYSCORE", k, "(1", "+inf"],
        &[
            "ZADD", k, "1", "m1", "1", "m2", "1", "m3", "1", "m4", "1", "b",
        ],
        &["ZRANGE", k, "[b", "(m3", "BYLEX"],
        &["ZRANGE", k, "(m3", "-", "BYLEX", "REV", "LIMIT", "1", "2"],
        &["ZRANGEBYLEX", k, "-", "+"],
        &["ZREVRANGEBYLEX", k, "+", "[b", "LIMIT", "1", "5"],
        &["ZREMRANGEBYLEX", k, "[m2", "[m3"],
        &["ZREMRANGEBYRANK", k, "0", "0"],
        &["ZRANGE", k, "0", "-1", "WITHSCORES"],
        &["SORT", k, "BY", "nosort"],
        &["ZREMRANGEBYRANK", k, "0", "-1"],
        &["EXISTS", k],
    ];
    let mut log = Vec::new();
    for args in script {
        let f = if args[0] == "ZRANDMEMBER" {
            // Random picks: only the count is comparable.
            let ours = p.node.cmd(args);
            let theirs = p.redis.cmd(args);
            match (&ours, &theirs) {
                (Frame::Array(a), Frame::Array(b)) => assert_eq!(a.len(), b.len()),
                _ => panic!("ZRANDMEMBER: {ours:?} / {theirs:?}"),
            }
            continue;
        } else {
            p.same(args)
        };
        log.push(f);
    }
    log
}

/// Both servers with the same thresholds: redis-server's built-in default
/// for hash-max-listpack-entries is 512 (its shipped redis.conf, and the
/// node, say 128).
fn start() -> Pair {
    let mut p = Pair::start();
    p.same(&[
        "CONFIG",
        "SET",
        "hash-max-listpack-entries",
        "128",
        "hash-max-listpack-value",
        "64",
        "zset-max-listpack-entries",
        "128",
        "zset-max-listpack-value",
        "64",
    ]);
    p
}

#[test]
fn hash_commands_answer_as_redis_on_packed_and_converted_hashes() {
    let mut p = start();
    let packed = hash_script(&mut p, "h:packed", Order::Exact);
    // The script's keys stay packed on both until their deletion.
    p.same(&["HSET", "h:packed", "a", "1"]);
    p.encoding("h:packed", "listpack");
    p.same(&["DEL", "h:packed"]);
    // A hash converted at creation: the same script, the same replies.
    p.same(&["CONFIG", "SET", "hash-max-listpack-entries", "0"]);
    p.same(&["HSET", "h:table", "probe", "1"]);
    p.encoding("h:table", "hashtable");
    p.same(&["HDEL", "h:table", "probe"]);
    let table = hash_script(&mut p, "h:table", Order::Unordered);
    assert_eq!(packed, table, "packed and converted transcripts differ");
}

#[test]
fn zset_commands_answer_as_redis_on_packed_and_converted_sorted_sets() {
    let mut p = start();
    let packed = zset_script(&mut p, "z:packed");
    p.same(&["ZADD", "z:packed", "1", "a"]);
    p.encoding("z:packed", "listpack");
    p.same(&["DEL", "z:packed"]);
    p.same(&["CONFIG", "SET", "zset-max-listpack-entries", "0"]);
    p.same(&["ZADD", "z:full", "1", "probe"]);
    p.encoding("z:full", "skiplist");
    p.same(&["ZREM", "z:full", "probe"]);
    let full = zset_script(&mut p, "z:full");
    assert_eq!(packed, full, "packed and converted transcripts differ");
}

#[test]
fn encodings_convert_at_the_thresholds_as_redis_does() {
    let mut p = start();
    // Entries: 128 pairs stay packed, the 129th converts.
    let mut args: Vec<String> = vec!["HSET".into(), "h".into()];
    let mut zargs: Vec<String> = vec!["ZADD".into(), "z".into()];
    for i in 0..128 {
        args.extend([format!("f{i}"), format!("v{i}")]);
        zargs.extend([format!("{i}"), format!("m{i}")]);
    }
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    p.same(&refs);
    let zrefs: Vec<&str> = zargs.iter().map(|s| s.as_str()).collect();
    p.same(&zrefs);
    p.encoding("h", "listpack");
    p.encoding("z", "listpack");
    // Changing a value or a score at the limit keeps the encoding.
    p.same(&["HSET", "h", "f0", "changed"]);
    p.same(&["ZADD", "z", "-1", "m0"]);
    p.encoding("h", "listpack");
    p.encoding("z", "listpack");
    p.same(&["HSET", "h", "f128", "v"]);
    p.same(&["ZADD", "z", "128", "m128"]);
    p.encoding("h", "hashtable");
    p.encoding("z", "skiplist");
    // Never back, even when small again.
    let dels: Vec<String> = (0..127).map(|i| format!("f{i}")).collect();
    let mut del: Vec<&str> = vec!["HDEL", "h"];
    del.extend(dels.iter().map(|s| s.as_str()));
    p.same(&del);
    p.same(&["ZREMRANGEBYRANK", "z", "0", "-3"]);
    p.same(&["HLEN", "h"]);
    p.same(&["ZCARD", "z"]);
    p.encoding("h", "hashtable");
    p.encoding("z", "skiplist");

    // Value length: 64 bytes stay packed, 65 convert (field, value, member).
    let (v64, v65) = ("x".repeat(64), "x".repeat(65));
    p.same(&["HSET", "hv", "f", &v64]);
    p.same(&["HSET", "hf", &v64, "v"]);
    p.same(&["ZADD", "zv", "1", &v64]);
    for k in ["hv", "hf", "zv"] {
        p.encoding(k, "listpack");
    }
    // A long value on an existing field converts too.
    p.same(&["HSET", "hv", "f", &v65]);
    p.same(&["HSET", "hf", &v65, "v"]);
    p.same(&["ZADD", "zv", "1", &v65]);
    p.encoding("hv", "hashtable");
    p.encoding("hf", "hashtable");
    p.encoding("zv", "skiplist");
    p.same(&["HGET", "hv", "f"]);
    p.same(&["ZRANGE", "zv", "0", "-1", "WITHSCORES"]);
}

#[test]
fn config_set_thresholds_apply_to_the_next_write_as_in_redis() {
    let mut p = start();
    for name in [
        "hash-max-listpack-entries",
        "hash-max-listpack-value",
        "zset-max-listpack-entries",
        "zset-max-listpack-value",
        "hash-max-ziplist-entries",
        "zset-max-ziplist-value",
    ] {
        p.same(&["CONFIG", "GET", name]);
    }
    p.same(&["HSET", "before", "a", "1", "b", "2", "c", "3"]);
    p.same(&["ZADD", "zbefore", "1", "a", "2", "b", "3", "c"]);
    p.same(&[
        "CONFIG",
        "SET",
        "hash-max-listpack-entries",
        "2",
        "zset-max-listpack-value",
        "4",
    ]);
    p.same(&["CONFIG", "GET", "hash-max-listpack-entries"]);
    p.same(&["CONFIG", "GET", "zset-max-listpack-value"]);
    // An existing value keeps its encoding until it is written; then
    // even a changed value converts it.
    p.encoding("before", "listpack");
    p.same(&["HGET", "before", "a"]);
    p.encoding("before", "listpack");
    p.same(&["HSET", "before", "a", "9"]);
    p.encoding("before", "hashtable");
    p.same(&["ZADD", "zbefore", "4", "d"]);
    p.encoding("zbefore", "listpack");
    p.same(&["HSET", "two", "a", "1", "b", "2"]);
    p.encoding("two", "listpack");
    p.same(&["HSET", "three", "a", "1", "b", "2", "c", "3"]);
    p.encoding("three", "hashtable");
    p.same(&["ZADD", "zshort", "1", "abcd"]);
    p.encoding("zshort", "listpack");
    p.same(&["ZADD", "zlong", "1", "abcde"]);
    p.encoding("zlong", "skiplist");
    // The ziplist names are aliases.
    p.same(&["CONFIG", "SET", "hash-max-ziplist-value", "3"]);
    p.same(&["CONFIG", "GET", "hash-max-listpack-value"]);
    p.same(&["HSET", "hz", "f", "abcd"]);
    p.encoding("hz", "hashtable");
    p.same(&["CONFIG", "SET", "hash-max-listpack-entries", "-1"]);
    p.same(&["CONFIG", "SET", "zset-max-listpack-entries", "x"]);
}

#[test]
fn object_and_memory_usage_answer_as_redis_for_missing_keys_and_errors() {
    let mut p = Pair::start();
    p.same(&["SET", "s", "v"]);
    p.script(&[
        &["OBJECT", "ENCODING", "missing"],
        &["OBJECT", "REFCOUNT", "s"],
        &["OBJECT", "FREQ", "s"],
        &["OBJECT", "NOPE", "s"],
        &["OBJECT", "ENCODING"],
        &["MEMORY", "USAGE", "missing"],
        &["MEMORY", "USAGE", "s", "SAMPLES", "-1"],
        &["MEMORY", "USAGE", "s", "SAMPLES", "x"],
        &["MEMORY", "USAGE", "s", "FOO", "1"],
        &["MEMORY", "USAGE", "s", "SAMPLES"],
    ]);
    // String encodings by form and length.
    for (k, v) in [
        ("i", "12345"),
        ("neg", "-7"),
        ("lead0", "012"),
        ("emb", "short string"),
        ("raw", &"r".repeat(45)),
    ] {
        p.same(&["SET", k, v]);
        p.same(&["OBJECT", "ENCODING", k]);
    }
}
