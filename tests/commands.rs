//! Data commands of `tessera node` against the replies Redis 7 gives: keys,
//! hashes, lists, sets, sorted sets, streams; errors; expiry; SCAN; RESP3;
//! and replay of every write command from the log after a SIGKILL.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestNode;
use raw::Raw;
use tessera::node::resp::Frame;

fn connect(node: &TestNode) -> Raw {
    Raw::connect(node, Duration::from_secs(10))
}

/// Typed replies, for commands that must give them.
trait Replies {
    fn int(&mut self, args: &[&str]) -> i64;
    fn err(&mut self, args: &[&str]) -> String;
    fn ok(&mut self, args: &[&str]);
    /// An array of bulk strings (or nulls as "<nil>"), as text.
    fn strs(&mut self, args: &[&str]) -> Vec<String>;
    fn sorted(&mut self, args: &[&str]) -> Vec<String>;
}

impl Replies for Raw {
    fn int(&mut self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            Frame::Integer(n) => n,
            other => panic!("{args:?}: expected an integer, got {other:?}"),
        }
    }

    fn err(&mut self, args: &[&str]) -> String {
        match self.cmd(args) {
            Frame::Error(e) => e,
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    fn ok(&mut self, args: &[&str]) {
        assert_eq!(self.cmd(args), Frame::Simple("OK".into()), "{args:?}");
    }

    fn strs(&mut self, args: &[&str]) -> Vec<String> {
        strs(self.cmd(args))
    }

    fn sorted(&mut self, args: &[&str]) -> Vec<String> {
        let mut v = self.strs(args);
        v.sort();
        v
    }
}

fn strs(f: Frame) -> Vec<String> {
    match f {
        Frame::Array(items) => items.into_iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn text(f: Frame) -> String {
    match f {
        Frame::Bulk(b) => String::from_utf8(b).expect("UTF-8 in tests"),
        Frame::Simple(s) => s,
        Frame::Integer(n) => n.to_string(),
        Frame::Double(d) => d.to_string(),
        Frame::Null => "<nil>".into(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(s.as_bytes().to_vec())
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";

fn node() -> TestNode {
    TestNode::start(&["--no-persistence"])
}

#[test]
fn del_unlink_and_exists_count_keys_and_repeats() {
    let n = node();
    let mut c = connect(&n);
    c.ok(&["SET", "{k}1", "a"]);
    c.ok(&["SET", "{k}2", "b"]);
    c.int(&["RPUSH", "{k}3", "x"]);
    assert_eq!(c.int(&["EXISTS", "{k}1", "{k}1", "{k}2", "{k}nope"]), 3);
    assert_eq!(c.int(&["DEL", "{k}1", "{k}nope", "{k}1"]), 1);
    assert_eq!(c.int(&["UNLINK", "{k}2", "{k}3"]), 2);
    assert_eq!(c.int(&["EXISTS", "{k}1", "{k}2", "{k}3"]), 0);
    assert_eq!(c.int(&["DEL", "missing"]), 0);
    assert!(c.err(&["DEL", "a", "b"]).starts_with("CROSSSLOT"));
    assert_eq!(
        c.err(&["EXISTS"]),
        "ERR wrong number of arguments for 'exists' command"
    );
}

#[test]
fn expire_family_options_and_ttl_semantics() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(c.int(&["TTL", "nokey"]), -2);
    assert_eq!(c.int(&["PTTL", "nokey"]), -2);
    assert_eq!(c.int(&["EXPIRE", "nokey", "10"]), 0);
    c.ok(&["SET", "k", "v"]);
    assert_eq!(c.int(&["TTL", "k"]), -1);
    assert_eq!(c.int(&["EXPIRETIME", "k"]), -1);
    // XX and GT need an existing TTL; NX and LT work without one.
    assert_eq!(c.int(&["EXPIRE", "k", "100", "XX"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "100", "GT"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "100", "NX"]), 1);
    assert_eq!(c.int(&["EXPIRE", "k", "200", "NX"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "200", "GT"]), 1);
    assert_eq!(c.int(&["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(c.int(&["EXPIRE", "k", "150", "LT"]), 1);
    assert_eq!(c.int(&["TTL", "k"]), 150);
    let pttl = c.int(&["PTTL", "k"]);
    assert!((149_000..=150_000).contains(&pttl), "{pttl}");
    let at = c.int(&["PEXPIRETIME", "k"]);
    assert_eq!(c.int(&["EXPIRETIME", "k"]), (at + 500) / 1000);
    assert_eq!(c.int(&["PERSIST", "k"]), 1);
    assert_eq!(c.int(&["PERSIST", "k"]), 0);
    assert_eq!(c.int(&["TTL", "k"]), -1);
    // Absolute forms.
    let future = at / 1000 + 1000;
    assert_eq!(c.int(&["EXPIREAT", "k", &future.to_string()]), 1);
    assert_eq!(c.int(&["EXPIRETIME", "k"]), future);
    assert_eq!(
        c.int(&["PEXPIREAT", "k", &(future * 1000 + 7).to_string()]),
        1
    );
    assert_eq!(c.int(&["PEXPIRETIME", "k"]), future * 1000 + 7);
    // Errors.
    assert_eq!(c.err(&["EXPIRE", "k", "abc"]), NOT_INT);
    assert_eq!(
        c.err(&["EXPIRE", "k", "10", "FOO"]),
        "ERR Unsupported option FOO"
    );
    assert_eq!(
        c.err(&["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        c.err(&["EXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        c.err(&["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
    // A zero or past time deletes the key.
    assert_eq!(c.int(&["EXPIRE", "k", "0"]), 1);
    assert_eq!(c.int(&["EXISTS", "k"]), 0);
    c.ok(&["SET", "k", "v"]);
    assert_eq!(c.int(&["PEXPIREAT", "k", "1000"]), 1);
    assert_eq!(c.int(&["EXISTS", "k"]), 0);
    // Short TTLs really expire.
    c.ok(&["SET", "short", "v", "PX", "100"]);
    let p = c.int(&["PTTL", "short"]);
    assert!((1..=100).contains(&p), "{p}");
    c.int(&["HSET", "h", "f", "v"]);
    assert_eq!(c.int(&["PEXPIRE", "h", "100"]), 1);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(c.cmd(&["GET", "short"]), Frame::Null);
    assert_eq!(c.int(&["PTTL", "short"]), -2);
    assert_eq!(c.int(&["EXISTS", "h"]), 0);
    assert_eq!(c.cmd(&["TYPE", "h"]), Frame::Simple("none".into()));
}

#[test]
fn type_names_every_kind_and_none() {
    let n = node();
    let mut c = connect(&n);
    c.ok(&["SET", "s", "v"]);
    c.int(&["HSET", "h", "f", "v"]);
    c.int(&["RPUSH", "l", "a"]);
    c.int(&["SADD", "st", "a"]);
    c.int(&["ZADD", "z", "1", "a"]);
    c.cmd(&["XADD", "x", "*", "f", "v"]);
    for (k, t) in [
        ("s", "string"),
        ("h", "hash"),
        ("l", "list"),
        ("st", "set"),
        ("z", "zset"),
        ("x", "stream"),
        ("nope", "none"),
    ] {
        assert_eq!(c.cmd(&["TYPE", k]), Frame::Simple(t.into()), "{k}");
    }
}

#[test]
fn scan_returns_every_key_exactly_once_with_match_and_type() {
    let n = node();
    let mut c = connect(&n);
    for i in 0..1000 {
        c.ok(&["SET", &format!("user:{i}"), "v"]);
        if i % 4 == 0 {
            c.int(&["HSET", &format!("hash:{i}"), "f", "v"]);
        }
    }
    let scan_all = |c: &mut Raw, extra: &[&str]| -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        let mut cursor = "0".to_string();
        let mut rounds = 0;
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let Frame::Array(mut parts) = c.cmd(&args) else {
                panic!("SCAN replies with an array")
            };
            assert_eq!(parts.len(), 2);
            let keys = strs(parts.pop().expect("two parts"));
            cursor = text(parts.pop().expect("two parts"));
            for k in keys {
                *seen.entry(k).or_insert(0) += 1;
            }
            rounds += 1;
            if cursor == "0" {
                break;
            }
        }
        assert!(rounds > 1, "COUNT makes SCAN iterate");
        seen
    };
    let all = scan_all(&mut c, &["COUNT", "50"]);
    assert_eq!(all.len(), 1250);
    assert!(all.values().all(|&n| n == 1), "every key exactly once");

    let users = scan_all(&mut c, &["MATCH", "user:1*", "COUNT", "100"]);
    let expected: Vec<String> = (0..1000)
        .map(|i| format!("user:{i}"))
        .filter(|k| k.starts_with("user:1"))
        .collect();
    assert_eq!(users.len(), expected.len());
    assert!(expected.iter().all(|k| users.get(k) == Some(&1)));

    let hashes = scan_all(&mut c, &["TYPE", "hash", "COUNT", "100"]);
    assert_eq!(hashes.len(), 250);
    assert!(hashes.keys().all(|k| k.starts_with("hash:")));
    assert!(hashes.values().all(|&n| n == 1));

    assert_eq!(c.strs(&["KEYS", "hash:4?"]).len(), 3); // 40, 44, 48
    assert_eq!(c.err(&["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(c.err(&["SCAN", "0", "COUNT", "0"]), SYNTAX);
    assert_eq!(c.err(&["SCAN", "0", "FOO", "1"]), SYNTAX);

    // The redis crate's iterator agrees.
    let mut rc = n.conn();
    let it = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg("hash:*")
        .clone()
        .iter::<String>(&mut rc)
        .expect("SCAN works through the redis crate");
    assert_eq!(it.count(), 250);
}

#[test]
fn rename_requires_one_slot_and_keeps_the_ttl() {
    let n = node();
    let mut c = connect(&n);
    c.ok(&["SET", "a", "1"]);
    assert_eq!(
        c.err(&["RENAME", "a", "b"]),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(c.err(&["RENAME", "{t}nope", "{t}x"]), "ERR no such key");
    c.ok(&["SET", "{t}src", "v", "PX", "100000"]);
    c.ok(&["RENAME", "{t}src", "{t}dst"]);
    assert_eq!(c.int(&["EXISTS", "{t}src"]), 0);
    assert_eq!(c.cmd(&["GET", "{t}dst"]), bulk("v"));
    let p = c.int(&["PTTL", "{t}dst"]);
    assert!((90_000..=100_000).contains(&p), "{p}");
    // RENAME overwrites whatever the target was; RENAMENX does not.
    c.int(&["RPUSH", "{t}list", "x"]);
    c.ok(&["SET", "{t}other", "o"]);
    assert_eq!(c.int(&["RENAMENX", "{t}list", "{t}other"]), 0);
    assert_eq!(c.int(&["RENAMENX", "{t}list", "{t}fresh"]), 1);
    assert_eq!(c.cmd(&["TYPE", "{t}fresh"]), Frame::Simple("list".into()));
    c.ok(&["RENAME", "{t}fresh", "{t}other"]);
    assert_eq!(c.strs(&["LRANGE", "{t}other", "0", "-1"]), ["x"]);
    c.ok(&["RENAME", "{t}other", "{t}other"]);
    assert_eq!(c.int(&["RENAMENX", "{t}other", "{t}other"]), 0);
}

#[test]
fn hash_commands_match_redis_replies() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(c.int(&["HSET", "h", "a", "1", "b", "2"]), 2);
    assert_eq!(c.int(&["HSET", "h", "a", "10", "c", "3"]), 1);
    c.ok(&["HMSET", "h", "d", "4"]);
    assert_eq!(c.int(&["HSETNX", "h", "a", "x"]), 0);
    assert_eq!(c.int(&["HSETNX", "h", "e", "5"]), 1);
    assert_eq!(c.cmd(&["HGET", "h", "a"]), bulk("10"));
    assert_eq!(c.cmd(&["HGET", "h", "zz"]), Frame::Null);
    assert_eq!(c.cmd(&["HGET", "nokey", "a"]), Frame::Null);
    assert_eq!(
        c.strs(&["HMGET", "h", "a", "zz", "b"]),
        ["10", "<nil>", "2"]
    );
    assert_eq!(c.strs(&["HMGET", "nokey", "a"]), ["<nil>"]);
    assert_eq!(c.int(&["HLEN", "h"]), 5);
    assert_eq!(c.sorted(&["HKEYS", "h"]), ["a", "b", "c", "d", "e"]);
    assert_eq!(c.sorted(&["HVALS", "h"]), ["10", "2", "3", "4", "5"]);
    let mut all = c.strs(&["HGETALL", "h"]);
    assert_eq!(all.len(), 10);
    all.sort();
    assert_eq!(all, ["10", "2", "3", "4", "5", "a", "b", "c", "d", "e"]);
    assert_eq!(c.int(&["HEXISTS", "h", "a"]), 1);
    assert_eq!(c.int(&["HEXISTS", "h", "zz"]), 0);
    assert_eq!(c.int(&["HSTRLEN", "h", "a"]), 2);
    assert_eq!(c.int(&["HSTRLEN", "h", "zz"]), 0);
    assert_eq!(c.int(&["HINCRBY", "h", "a", "5"]), 15);
    assert_eq!(c.int(&["HINCRBY", "h", "new", "-3"]), -3);
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "f", "10.5"]), bulk("10.5"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "f", "0.1"]), bulk("10.6"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "a", "1.5"]), bulk("16.5"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "b", "3"]), bulk("5"));
    c.int(&["HSET", "h", "str", "abc"]);
    assert_eq!(
        c.err(&["HINCRBY", "h", "str", "1"]),
        "ERR hash value is not an integer"
    );
    assert_eq!(c.err(&["HINCRBY", "h", "a", "x"]), NOT_INT);
    assert_eq!(
        c.err(&["HINCRBYFLOAT", "h", "str", "1"]),
        "ERR hash value is not a float"
    );
    assert_eq!(
        c.err(&["HINCRBYFLOAT", "h", "a", "x"]),
        "ERR value is not a valid float"
    );
    c.int(&["HSET", "h", "big", "9223372036854775807"]);
    assert_eq!(
        c.err(&["HINCRBY", "h", "big", "1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        c.err(&["HSET", "h", "a"]),
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(
        c.err(&["HSET", "h", "a", "1", "b"]),
        "ERR wrong number of arguments for 'hset' command"
    );
    assert_eq!(c.int(&["HDEL", "h", "a", "zz", "b"]), 2);
    assert_eq!(c.int(&["HDEL", "nokey", "a"]), 0);
    assert_eq!(c.strs(&["HGETALL", "nokey"]), Vec::<String>::new());
}

#[test]
fn hgetall_is_a_map_in_resp3() {
    let n = node();
    let mut c = connect(&n);
    c.int(&["HSET", "h", "f1", "v1", "f2", "v2"]);
    let Frame::Map(_) = c.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3 replies with a map")
    };
    let Frame::Map(mut pairs) = c.cmd(&["HGETALL", "h"]) else {
        panic!("HGETALL is a map in RESP3")
    };
    pairs.sort_by_key(|(k, _)| format!("{k:?}"));
    assert_eq!(
        pairs,
        vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk("v2"))]
    );
    assert_eq!(c.cmd(&["HGETALL", "nokey"]), Frame::Map(vec![]));
    assert_eq!(c.cmd(&["HGET", "h", "nope"]), Frame::Null);
    // Sorted-set scores are doubles in RESP3.
    c.int(&["ZADD", "z", "1.5", "a", "2", "b"]);
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]), Frame::Double(1.5));
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]),
        Frame::Array(vec![
            Frame::Array(vec![bulk("a"), Frame::Double(1.5)]),
            Frame::Array(vec![bulk("b"), Frame::Double(2.0)]),
        ])
    );
    assert_eq!(
        c.cmd(&["ZPOPMIN", "z"]),
        Frame::Array(vec![bulk("a"), Frame::Double(1.5)])
    );
}

#[test]
fn list_commands_match_redis_replies() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(c.int(&["LPUSHX", "l", "a"]), 0);
    assert_eq!(c.int(&["EXISTS", "l"]), 0);
    assert_eq!(c.int(&["RPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(c.int(&["LPUSH", "l", "z", "y"]), 5);
    assert_eq!(c.int(&["RPUSHX", "l", "d"]), 6);
    assert_eq!(
        c.strs(&["LRANGE", "l", "0", "-1"]),
        ["y", "z", "a", "b", "c", "d"]
    );
    assert_eq!(c.strs(&["LRANGE", "l", "-2", "100"]), ["c", "d"]);
    assert_eq!(c.strs(&["LRANGE", "l", "4", "2"]), Vec::<String>::new());
    assert_eq!(
        c.strs(&["LRANGE", "nokey", "0", "-1"]),
        Vec::<String>::new()
    );
    assert_eq!(c.int(&["LLEN", "l"]), 6);
    assert_eq!(c.int(&["LLEN", "nokey"]), 0);
    assert_eq!(c.cmd(&["LINDEX", "l", "0"]), bulk("y"));
    assert_eq!(c.cmd(&["LINDEX", "l", "-1"]), bulk("d"));
    assert_eq!(c.cmd(&["LINDEX", "l", "99"]), Frame::Null);
    c.ok(&["LSET", "l", "1", "Z"]);
    assert_eq!(c.err(&["LSET", "l", "99", "x"]), "ERR index out of range");
    assert_eq!(c.err(&["LSET", "nokey", "0", "x"]), "ERR no such key");
    assert_eq!(c.cmd(&["LPOP", "l"]), bulk("y"));
    assert_eq!(c.cmd(&["RPOP", "l"]), bulk("d"));
    assert_eq!(c.strs(&["LPOP", "l", "2"]), ["Z", "a"]);
    assert_eq!(c.strs(&["RPOP", "l", "0"]), Vec::<String>::new());
    assert_eq!(c.cmd(&["LPOP", "nokey"]), Frame::Null);
    assert_eq!(c.cmd(&["LPOP", "nokey", "2"]), Frame::Null);
    assert_eq!(
        c.err(&["LPOP", "l", "-1"]),
        "ERR value is out of range, must be positive"
    );
    c.int(&["RPUSH", "r", "x", "a", "x", "b", "x", "x"]);
    assert_eq!(c.int(&["LREM", "r", "2", "x"]), 2);
    assert_eq!(c.strs(&["LRANGE", "r", "0", "-1"]), ["a", "b", "x", "x"]);
    assert_eq!(c.int(&["LREM", "r", "-1", "x"]), 1);
    assert_eq!(c.strs(&["LRANGE", "r", "0", "-1"]), ["a", "b", "x"]);
    assert_eq!(c.int(&["LREM", "r", "0", "nope"]), 0);
    c.int(&["RPUSH", "t", "1", "2", "3", "4", "5"]);
    c.ok(&["LTRIM", "t", "1", "-2"]);
    assert_eq!(c.strs(&["LRANGE", "t", "0", "-1"]), ["2", "3", "4"]);
    c.ok(&["LTRIM", "t", "5", "10"]);
    assert_eq!(c.int(&["EXISTS", "t"]), 0);
    c.ok(&["LTRIM", "nokey", "0", "1"]);
    assert_eq!(c.err(&["LRANGE", "r", "a", "1"]), NOT_INT);
}

#[test]
fn set_commands_match_redis_replies() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(c.int(&["SADD", "{s}a", "1", "2", "3", "2"]), 3);
    assert_eq!(c.int(&["SADD", "{s}a", "3", "4"]), 1);
    assert_eq!(c.int(&["SCARD", "{s}a"]), 4);
    assert_eq!(c.int(&["SCARD", "nokey"]), 0);
    assert_eq!(c.sorted(&["SMEMBERS", "{s}a"]), ["1", "2", "3", "4"]);
    assert_eq!(c.strs(&["SMEMBERS", "nokey"]), Vec::<String>::new());
    assert_eq!(c.int(&["SISMEMBER", "{s}a", "1"]), 1);
    assert_eq!(c.int(&["SISMEMBER", "{s}a", "9"]), 0);
    assert_eq!(
        c.strs(&["SMISMEMBER", "{s}a", "1", "9", "4"]),
        ["1", "0", "1"]
    );
    assert_eq!(c.int(&["SREM", "{s}a", "4", "9"]), 1);
    c.int(&["SADD", "{s}b", "2", "3", "5"]);
    assert_eq!(c.sorted(&["SINTER", "{s}a", "{s}b"]), ["2", "3"]);
    assert_eq!(c.sorted(&["SUNION", "{s}a", "{s}b"]), ["1", "2", "3", "5"]);
    assert_eq!(c.sorted(&["SDIFF", "{s}a", "{s}b"]), ["1"]);
    assert_eq!(
        c.sorted(&["SINTER", "{s}a", "{s}nokey"]),
        Vec::<String>::new()
    );
    assert!(c.err(&["SINTER", "a", "b"]).starts_with("CROSSSLOT"));
    assert_eq!(c.int(&["SINTERSTORE", "{s}i", "{s}a", "{s}b"]), 2);
    assert_eq!(c.sorted(&["SMEMBERS", "{s}i"]), ["2", "3"]);
    assert_eq!(c.int(&["SMOVE", "{s}a", "{s}b", "1"]), 1);
    assert_eq!(c.int(&["SMOVE", "{s}a", "{s}b", "1"]), 0);
    // SRANDMEMBER does not remove; a negative count may repeat.
    let r = c.strs(&["SRANDMEMBER", "{s}b", "10"]);
    assert_eq!(r.len(), 4);
    assert_eq!(c.strs(&["SRANDMEMBER", "{s}b", "-10"]).len(), 10);
    assert!(matches!(c.cmd(&["SRANDMEMBER", "{s}b"]), Frame::Bulk(_)));
    assert_eq!(c.cmd(&["SRANDMEMBER", "nokey"]), Frame::Null);
    assert_eq!(c.strs(&["SRANDMEMBER", "nokey", "3"]), Vec::<String>::new());
    assert_eq!(c.int(&["SCARD", "{s}b"]), 4);
    // SPOP removes what it returns.
    let one = text(c.cmd(&["SPOP", "{s}b"]));
    assert_eq!(c.int(&["SISMEMBER", "{s}b", &one]), 0);
    let two = c.strs(&["SPOP", "{s}b", "2"]);
    assert_eq!(two.len(), 2);
    assert_eq!(c.int(&["SCARD", "{s}b"]), 1);
    assert_eq!(c.strs(&["SPOP", "{s}b", "5"]).len(), 1);
    assert_eq!(c.int(&["EXISTS", "{s}b"]), 0);
    assert_eq!(c.cmd(&["SPOP", "nokey"]), Frame::Null);
    assert_eq!(c.strs(&["SPOP", "nokey", "2"]), Vec::<String>::new());
    assert_eq!(
        c.err(&["SPOP", "{s}a", "-1"]),
        "ERR value is out of range, must be positive"
    );
}

#[test]
fn zset_commands_match_redis_replies() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(c.int(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]), 3);
    assert_eq!(c.int(&["ZADD", "z", "1", "a", "5", "b"]), 0);
    assert_eq!(c.int(&["ZADD", "z", "CH", "6", "b", "4", "d"]), 2);
    assert_eq!(c.int(&["ZADD", "z", "NX", "100", "a", "0", "e"]), 1);
    assert_eq!(
        c.int(&["ZADD", "z", "XX", "CH", "0.5", "e", "9", "nope"]),
        1
    );
    assert_eq!(c.int(&["ZADD", "z", "GT", "CH", "0.1", "e"]), 0);
    assert_eq!(c.int(&["ZADD", "z", "LT", "CH", "0.1", "e"]), 1);
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "2", "a"]), bulk("3"));
    assert_eq!(c.cmd(&["ZADD", "z", "NX", "INCR", "2", "a"]), Frame::Null);
    assert_eq!(c.cmd(&["ZINCRBY", "z", "1.5", "a"]), bulk("4.5"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]), bulk("4.5"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "nope"]), Frame::Null);
    // Redis 7.0 prints scores with %.17g.
    assert_eq!(
        c.strs(&["ZMSCORE", "z", "a", "nope", "e"]),
        ["4.5", "<nil>", "0.10000000000000001"]
    );
    assert_eq!(c.int(&["ZCARD", "z"]), 5);
    // e 0.1, c 3, d 4, a 4.5, b 6
    assert_eq!(
        c.strs(&["ZRANGE", "z", "0", "-1"]),
        ["e", "c", "d", "a", "b"]
    );
    assert_eq!(
        c.strs(&["ZRANGE", "z", "0", "1", "WITHSCORES"]),
        ["e", "0.10000000000000001", "c", "3"]
    );
    assert_eq!(c.strs(&["ZREVRANGE", "z", "0", "1"]), ["b", "a"]);
    assert_eq!(c.strs(&["ZRANGE", "z", "-2", "-1"]), ["a", "b"]);
    assert_eq!(c.strs(&["ZRANGEBYSCORE", "z", "3", "(4.5"]), ["c", "d"]);
    assert_eq!(
        c.strs(&[
            "ZRANGEBYSCORE",
            "z",
            "-inf",
            "+inf",
            "WITHSCORES",
            "LIMIT",
            "1",
            "2"
        ]),
        ["c", "3", "d", "4"]
    );
    assert_eq!(
        c.strs(&["ZREVRANGEBYSCORE", "z", "+inf", "4"]),
        ["b", "a", "d"]
    );
    assert_eq!(
        c.strs(&["ZRANGE", "z", "(3", "6", "BYSCORE", "LIMIT", "0", "2"]),
        ["d", "a"]
    );
    assert_eq!(
        c.strs(&["ZRANGE", "z", "6", "(3", "BYSCORE", "REV"]),
        ["b", "a", "d"]
    );
    assert_eq!(c.int(&["ZCOUNT", "z", "(0.1", "4.5"]), 3);
    assert_eq!(c.int(&["ZCOUNT", "z", "-inf", "+inf"]), 5);
    assert_eq!(c.int(&["ZRANK", "z", "e"]), 0);
    assert_eq!(c.int(&["ZRANK", "z", "b"]), 4);
    assert_eq!(c.int(&["ZREVRANK", "z", "b"]), 0);
    assert_eq!(c.cmd(&["ZRANK", "z", "nope"]), Frame::Null);
    assert_eq!(c.strs(&["ZRANK", "z", "a", "WITHSCORE"]), ["3", "4.5"]);
    assert_eq!(c.strs(&["ZPOPMIN", "z"]), ["e", "0.10000000000000001"]);
    assert_eq!(c.strs(&["ZPOPMAX", "z", "2"]), ["b", "6", "a", "4.5"]);
    assert_eq!(c.strs(&["ZPOPMIN", "nokey"]), Vec::<String>::new());
    assert_eq!(c.int(&["ZREM", "z", "c", "nope"]), 1);
    assert_eq!(c.int(&["ZREM", "z", "d"]), 1);
    assert_eq!(c.int(&["EXISTS", "z"]), 0);
    c.int(&["ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d"]);
    assert_eq!(c.strs(&["ZRANGEBYLEX", "lex", "[b", "(d"]), ["b", "c"]);
    assert_eq!(
        c.strs(&["ZRANGE", "lex", "+", "(b", "BYLEX", "REV"]),
        ["d", "c"]
    );
    // Errors.
    assert_eq!(
        c.err(&["ZADD", "z", "x", "a"]),
        "ERR value is not a valid float"
    );
    assert_eq!(c.err(&["ZADD", "z", "NX", "1"]), SYNTAX);
    assert_eq!(c.err(&["ZADD", "z", "1", "a", "2"]), SYNTAX);
    assert_eq!(
        c.err(&["ZADD", "z", "NX", "XX", "1", "a"]),
        "ERR XX and NX options at the same time are not compatible"
    );
    assert_eq!(
        c.err(&["ZADD", "z", "GT", "LT", "1", "a"]),
        "ERR GT, LT, and/or NX options at the same time are not compatible"
    );
    assert_eq!(
        c.err(&["ZADD", "z", "INCR", "1", "a", "2", "b"]),
        "ERR INCR option supports a single increment-element pair"
    );
    assert_eq!(c.int(&["EXISTS", "z"]), 0, "a refused ZADD creates nothing");
    assert_eq!(
        c.err(&["ZRANGEBYSCORE", "lex", "x", "1"]),
        "ERR min or max is not a float"
    );
    assert_eq!(
        c.err(&["ZRANGEBYLEX", "lex", "b", "c"]),
        "ERR min or max not valid string range item"
    );
    assert_eq!(
        c.err(&["ZRANGE", "lex", "0", "1", "LIMIT", "0", "1"]),
        "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
    );
    assert_eq!(c.err(&["ZRANGE", "lex", "0", "1", "FOO"]), SYNTAX);
}

#[test]
fn stream_commands_match_redis_replies() {
    let n = node();
    let mut c = connect(&n);
    assert_eq!(
        c.cmd(&["XADD", "s", "NOMKSTREAM", "*", "f", "v"]),
        Frame::Null
    );
    assert_eq!(c.int(&["EXISTS", "s"]), 0);
    assert_eq!(c.cmd(&["XADD", "s", "1-1", "f", "v1"]), bulk("1-1"));
    assert_eq!(c.cmd(&["XADD", "s", "1-*", "f", "v2"]), bulk("1-2"));
    assert_eq!(c.cmd(&["XADD", "s", "5", "f", "v3"]), bulk("5-0"));
    assert_eq!(
        c.err(&["XADD", "s", "5-0", "f", "v"]),
        "ERR The ID specified in XADD is equal or smaller than the target stream top item"
    );
    assert_eq!(
        c.err(&["XADD", "s2", "0-0", "f", "v"]),
        "ERR The ID specified in XADD must be greater than 0-0"
    );
    assert_eq!(
        c.err(&["XADD", "s", "abc", "f", "v"]),
        "ERR Invalid stream ID specified as stream command argument"
    );
    assert_eq!(
        c.err(&["XADD", "s", "*", "f"]),
        "ERR wrong number of arguments for 'xadd' command"
    );
    let id = text(c.cmd(&["XADD", "s", "*", "f", "v4", "g", "w"]));
    let (ms, seq) = id.split_once('-').expect("an ID is ms-seq");
    assert!(ms.parse::<u64>().expect("ms") > 1_600_000_000_000);
    assert_eq!(seq, "0");
    assert_eq!(c.int(&["XLEN", "s"]), 4);
    assert_eq!(c.int(&["XLEN", "nokey"]), 0);
    assert_eq!(
        c.cmd(&["XRANGE", "s", "-", "+", "COUNT", "2"]),
        Frame::Array(vec![
            Frame::Array(vec![bulk("1-1"), Frame::Array(vec![bulk("f"), bulk("v1")])]),
            Frame::Array(vec![bulk("1-2"), Frame::Array(vec![bulk("f"), bulk("v2")])]),
        ])
    );
    let Frame::Array(rev) = c.cmd(&["XREVRANGE", "s", "+", "-", "COUNT", "1"]) else {
        panic!("XREVRANGE replies with an array")
    };
    assert_eq!(
        rev,
        vec![Frame::Array(vec![
            bulk(&id),
            Frame::Array(vec![bulk("f"), bulk("v4"), bulk("g"), bulk("w")])
        ])]
    );
    let Frame::Array(mid) = c.cmd(&["XRANGE", "s", "(1-1", "5"]) else {
        panic!("XRANGE replies with an array")
    };
    assert_eq!(mid.len(), 2);
    assert_eq!(c.strs(&["XRANGE", "s", "+", "-"]), Vec::<String>::new());
    assert_eq!(c.int(&["XDEL", "s", "1-2", "9-9"]), 1);
    assert_eq!(c.int(&["XLEN", "s"]), 3);
    assert_eq!(c.int(&["XTRIM", "s", "MAXLEN", "2"]), 1);
    assert_eq!(c.int(&["XTRIM", "s", "MAXLEN", "~", "2"]), 0);
    c.cmd(&["XADD", "s", "MAXLEN", "=", "2", "*", "f", "v5"]);
    assert_eq!(c.int(&["XLEN", "s"]), 2);
    // An emptied stream stays, as in Redis.
    assert_eq!(c.int(&["XTRIM", "s", "MAXLEN", "0"]), 2);
    assert_eq!(c.cmd(&["TYPE", "s"]), Frame::Simple("stream".into()));
    assert_eq!(c.err(&["XTRIM", "s", "FOO", "1"]), SYNTAX);
}

#[test]
fn wrong_type_is_refused_by_every_family() {
    let n = node();
    let mut c = connect(&n);
    c.ok(&["SET", "str", "v"]);
    c.int(&["HSET", "hash", "f", "v"]);
    for args in [
        &["HSET", "str", "f", "v"][..],
        &["HGET", "str", "f"],
        &["HGETALL", "str"],
        &["HINCRBYFLOAT", "str", "f", "1"],
        &["LPUSH", "str", "x"],
        &["LRANGE", "str", "0", "1"],
        &["LPOP", "str"],
        &["SADD", "str", "x"],
        &["SMEMBERS", "str"],
        &["SPOP", "str"],
        &["ZADD", "str", "1", "x"],
        &["ZRANGE", "str", "0", "1"],
        &["ZINCRBY", "str", "1", "x"],
        &["XADD", "str", "*", "f", "v"],
        &["XRANGE", "str", "-", "+"],
        &["GET", "hash"],
    ] {
        assert_eq!(c.err(args), WRONGTYPE, "{args:?}");
    }
    assert_eq!(c.cmd(&["GET", "str"]), bulk("v"));
    assert_eq!(c.cmd(&["TYPE", "str"]), Frame::Simple("string".into()));
}

#[test]
fn emptied_aggregates_are_deleted() {
    let n = node();
    let mut c = connect(&n);
    c.int(&["HSET", "h", "f", "v"]);
    c.int(&["HDEL", "h", "f"]);
    c.int(&["RPUSH", "l", "x"]);
    c.cmd(&["RPOP", "l"]);
    c.int(&["RPUSH", "l2", "x", "x"]);
    c.int(&["LREM", "l2", "0", "x"]);
    c.int(&["SADD", "s", "x"]);
    c.int(&["SREM", "s", "x"]);
    c.int(&["SADD", "s2", "x"]);
    c.cmd(&["SPOP", "s2"]);
    c.int(&["ZADD", "z", "1", "x"]);
    c.int(&["ZREM", "z", "x"]);
    c.int(&["ZADD", "z2", "1", "x"]);
    c.cmd(&["ZPOPMAX", "z2"]);
    for k in ["h", "l", "l2", "s", "s2", "z", "z2"] {
        assert_eq!(c.cmd(&["TYPE", k]), Frame::Simple("none".into()), "{k}");
    }
    assert_eq!(c.int(&["DBSIZE"]), 0);
}

/// Every key with its type, contents (order-independent where Redis is) and
/// absolute deadline.
fn dump(c: &mut Raw) -> BTreeMap<String, (String, Vec<String>, i64)> {
    let mut out = BTreeMap::new();
    for k in c.strs(&["KEYS", "*"]) {
        let t = text(c.cmd(&["TYPE", &k]));
        let contents = match t.as_str() {
            "string" => vec![text(c.cmd(&["GET", &k]))],
            "hash" => {
                let v = c.strs(&["HGETALL", &k]);
                let mut pairs: Vec<String> =
                    v.chunks(2).map(|p| format!("{}={}", p[0], p[1])).collect();
                pairs.sort();
                pairs
            }
            "list" => c.strs(&["LRANGE", &k, "0", "-1"]),
            "set" => c.sorted(&["SMEMBERS", &k]),
            "zset" => c.strs(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]),
            "stream" => match c.cmd(&["XRANGE", &k, "-", "+"]) {
                Frame::Array(entries) => entries.into_iter().map(|e| format!("{e:?}")).collect(),
                other => panic!("XRANGE: {other:?}"),
            },
            other => panic!("unexpected type {other}"),
        };
        let at = c.int(&["PEXPIRETIME", &k]);
        out.insert(k, (t, contents, at));
    }
    out
}

#[test]
fn replay_after_kill9_restores_every_write_command() {
    let mut n = TestNode::start(&["--fsync", "always"]);
    let mut c = connect(&n);
    // Strings and keys.
    c.ok(&["SET", "str", "v"]);
    c.ok(&["SET", "gone", "v"]);
    c.int(&["DEL", "gone"]);
    c.ok(&["SET", "{r}a", "1"]);
    c.int(&["EXPIRE", "{r}a", "1000"]);
    c.ok(&["RENAME", "{r}a", "{r}b"]);
    c.ok(&["SET", "{r}c", "x"]);
    c.int(&["RENAMENX", "{r}c", "{r}d"]);
    c.ok(&["SET", "ttl", "v"]);
    c.int(&["PEXPIRE", "ttl", "500000"]);
    c.ok(&["SET", "persisted", "v", "EX", "1000"]);
    c.int(&["PERSIST", "persisted"]);
    c.ok(&["SET", "killed", "v"]);
    c.int(&["EXPIRE", "killed", "0"]);
    c.ok(&["SET", "at", "v"]);
    c.int(&["EXPIREAT", "at", "4000000000"]);
    c.ok(&["SET", "short", "v", "PX", "50"]);
    // Hashes.
    c.int(&["HSET", "h", "a", "1", "b", "2", "c", "3"]);
    c.ok(&["HMSET", "h", "d", "4"]);
    c.int(&["HSETNX", "h", "e", "5"]);
    c.int(&["HSETNX", "h", "e", "6"]);
    c.int(&["HDEL", "h", "c"]);
    c.int(&["HINCRBY", "h", "a", "10"]);
    c.cmd(&["HINCRBYFLOAT", "h", "f", "0.1"]);
    c.cmd(&["HINCRBYFLOAT", "h", "f", "2.25"]);
    // Lists.
    c.int(&["RPUSH", "l", "a", "b", "c", "d", "e", "f", "g"]);
    c.int(&["LPUSH", "l", "z"]);
    c.int(&["LPUSHX", "l", "y"]);
    c.int(&["RPUSHX", "l", "h"]);
    c.cmd(&["LPOP", "l"]);
    c.cmd(&["RPOP", "l", "2"]);
    c.ok(&["LSET", "l", "0", "Z"]);
    c.int(&["LREM", "l", "1", "b"]);
    c.ok(&["LTRIM", "l", "0", "3"]);
    // Sets.
    c.int(&["SADD", "{s}a", "1", "2", "3", "4", "5", "6", "7", "8"]);
    c.int(&["SREM", "{s}a", "8"]);
    c.cmd(&["SPOP", "{s}a"]);
    c.cmd(&["SPOP", "{s}a", "2"]);
    c.int(&["SADD", "{s}b", "1", "2", "3"]);
    c.int(&["SMOVE", "{s}b", "{s}a", "1"]);
    c.int(&["SUNIONSTORE", "{s}u", "{s}a", "{s}b"]);
    c.int(&["SADD", "{s}gone", "x"]);
    c.cmd(&["SPOP", "{s}gone"]);
    // Sorted sets.
    c.int(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d"]);
    c.int(&["ZADD", "z", "GT", "CH", "0.5", "a", "5", "b"]);
    c.cmd(&["ZADD", "z", "INCR", "0.1", "c"]);
    c.cmd(&["ZINCRBY", "z", "0.2", "d"]);
    c.cmd(&["ZINCRBY", "z", "7", "new"]);
    c.int(&["ZREM", "z", "a"]);
    c.cmd(&["ZPOPMIN", "z"]);
    c.cmd(&["ZPOPMAX", "z"]);
    // Streams.
    for i in 0..5 {
        c.cmd(&["XADD", "x", "*", "i", &i.to_string()]);
    }
    c.cmd(&["XADD", "x", "MAXLEN", "~", "4", "*", "i", "5"]);
    c.cmd(&["XADD", "x", "99999999999999-*", "i", "6"]);
    c.cmd(&["XADD", "x", "*", "i", "7"]);
    let Frame::Array(entries) = c.cmd(&["XRANGE", "x", "-", "+", "COUNT", "1"]) else {
        panic!("XRANGE replies with an array")
    };
    let Frame::Array(e) = &entries[0] else {
        panic!("an entry is an array")
    };
    let Frame::Bulk(id) = &e[0] else {
        panic!("an entry starts with its ID")
    };
    c.int(&["XDEL", "x", std::str::from_utf8(id).expect("IDs are text")]);
    c.int(&["XTRIM", "x", "MAXLEN", "4"]);
    std::thread::sleep(Duration::from_millis(100));
    // Reading the expired key deletes it (and logs the DEL).
    assert_eq!(c.cmd(&["GET", "short"]), Frame::Null);

    let before = dump(&mut c);
    assert!(before.contains_key("{r}b") && before.contains_key("{r}d"));
    assert!(!before.contains_key("gone") && !before.contains_key("killed"));
    assert!(before["ttl"].2 > 0 && before["persisted"].2 == -1);
    assert_eq!(before["at"].2, 4_000_000_000_000);
    assert_eq!(before["h"].1, ["a=11", "b=2", "d=4", "e=5", "f=2.35"]);
    assert_eq!(before.len(), 13, "{before:#?}");
    drop(c);

    n.kill9();
    n.restart();
    let mut c = connect(&n);
    let after = dump(&mut c);
    assert_eq!(before, after);
}

#[test]
fn approximate_trims_stop_at_their_limit_and_replay_the_same() {
    let mut n = TestNode::start(&["--fsync", "always"]);
    let mut c = connect(&n);
    for i in 1..=6 {
        c.cmd(&["XADD", "x", &format!("{i}-1"), "i", &i.to_string()]);
    }
    // `~` with LIMIT 2: at most two entries go, whatever the threshold.
    assert_eq!(c.int(&["XTRIM", "x", "LIMIT", "2", "MAXLEN", "~", "1"]), 2);
    assert_eq!(c.int(&["XLEN", "x"]), 4);
    // Options in any order on XADD too; the new entry counts.
    c.cmd(&[
        "XADD", "x", "LIMIT", "1", "MINID", "~", "9", "7-1", "i", "7",
    ]);
    assert_eq!(c.int(&["XLEN", "x"]), 4);
    // LIMIT 0 is no limit.
    assert_eq!(c.int(&["XTRIM", "x", "MAXLEN", "~", "2", "LIMIT", "0"]), 2);
    let before = c.cmd(&["XRANGE", "x", "-", "+"]);
    let Frame::Array(entries) = &before else {
        panic!("XRANGE replies with an array, got {before:?}")
    };
    assert_eq!(entries.len(), 2, "{before:?}");
    drop(c);
    n.kill9();
    n.restart();
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["XRANGE", "x", "-", "+"]), before);
}
