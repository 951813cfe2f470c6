//! Differential tests: the same commands against a node and a real
//! redis-server (Debian's, on a loopback port, without persistence); every
//! reply, errors included, must be identical.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::raw;
use crate::common::{free_port, redis_tool, TestNode};
use tessera::node::resp::Frame;

/// A redis-server child, killed when dropped.
pub(super) struct RedisServer {
    pub(super) port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Self {
        let bin = redis_tool("redis-server");
        let port = free_port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers, and a connection to each.
pub(super) struct Pair {
    pub(super) _node: TestNode,
    pub(super) _redis: RedisServer,
    pub(super) node: raw::Raw,
    pub(super) redis: raw::Raw,
}

impl Pair {
    pub(super) fn start() -> Self {
        let node = TestNode::start(&["--no-persistence"]);
        let redis = RedisServer::start();
        let timeout = Duration::from_secs(30);
        Self {
            node: raw::Raw::connect(&node, timeout),
            redis: raw::Raw::connect_port(redis.port, timeout),
            _node: node,
            _redis: redis,
        }
    }

    /// Another connection to each server: (node, redis-server).
    pub(super) fn connect_more(&self) -> (raw::Raw, raw::Raw) {
        let timeout = Duration::from_secs(30);
        (
            raw::Raw::connect(&self._node, timeout),
            raw::Raw::connect_port(self._redis.port, timeout),
        )
    }

    /// Runs `args` on both; the replies must be equal. Returns the reply.
    pub(super) fn same(&mut self, args: &[&str]) -> Frame {
        let ours = self.node.cmd(args);
        let theirs = self.redis.cmd(args);
        assert_eq!(
            ours, theirs,
            "{args:?}: node (left) and redis-server (right) differ"
        );
        ours
    }

    /// Waits (≤ 5 s) until both servers count `n` blocked clients (INFO's
    /// `blocked_clients`): a blocking command sent on another connection
    /// has really blocked.
    pub(super) fn wait_blocked(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (who, conn) in [("node", &mut self.node), ("redis-server", &mut self.redis)] {
            loop {
                let info = match conn.cmd(&["INFO", "clients"]) {
                    Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => panic!("{who}: INFO clients: {other:?}"),
                };
                let got = info
                    .lines()
                    .find_map(|l| l.strip_prefix("blocked_clients:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if got == Some(n) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{who}: blocked_clients stayed {got:?}, not {n}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Runs every command of a script with [`Pair::same`].
    pub(super) fn script(&mut self, script: &[&[&str]]) {
        for args in script {
            self.same(args);
        }
    }
}

#[test]
fn string_range_float_and_getex_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SET", "s", "Hello World"],
        &["GETRANGE", "s", "0", "4"],
        &["GETRANGE", "s", "-5", "-1"],
        &["GETRANGE", "s", "-1", "-5"],
        &["GETRANGE", "s", "-100", "-50"],
        &["GETRANGE", "s", "5", "2"],
        &["GETRANGE", "s", "0", "9223372036854775807"],
        &[
            "GETRANGE",
            "s",
            "-9223372036854775808",
            "-9223372036854775808",
        ],
        &["GETRANGE", "s", "x", "1"],
        &["GETRANGE", "missing", "0", "-1"],
        &["SUBSTR", "s", "6", "-1"],
        &["GETRANGE", "s", "0"],
        &["SETRANGE", "s", "6", "Redis"],
        &["GET", "s"],
        &["SETRANGE", "s", "20", "!"],
        &["GET", "s"],
        &["SETRANGE", "new", "3", "abc"],
        &["GET", "new"],
        &["SETRANGE", "empty", "5", ""],
        &["EXISTS", "empty"],
        &["SETRANGE", "s", "100", ""],
        &["SETRANGE", "s", "-1", "x"],
        &["SETRANGE", "s", "536870911", "x"],
        &["SETRANGE", "s", "536870912", "x"],
        &["SETRANGE", "s", "536870910", "xyz"],
        &["SETRANGE", "s", "9223372036854775807", "x"],
        &["SETRANGE", "s", "nope", "x"],
        &["LPUSH", "l", "a"],
        &["SETRANGE", "l", "0", "x"],
        &["GETRANGE", "l", "0", "1"],
        &["SET", "f", "10.5"],
        &["INCRBYFLOAT", "f", "0.1"],
        &["INCRBYFLOAT", "f", "-5"],
        // Redis adds in 80-bit long double: values exact in binary agree
        // to the last digit (docs/node.md lists the difference).
        &["SET", "f", "2.5"],
        &["INCRBYFLOAT", "f", "5.0e3"],
        &["INCRBYFLOAT", "f", "2.0e2"],
        &["INCRBYFLOAT", "nf", "3"],
        &["INCRBYFLOAT", "nf", "1.5"],
        &["INCRBYFLOAT", "f", "abc"],
        &["INCRBYFLOAT", "f", "inf"],
        &["INCRBYFLOAT", "f", "nan"],
        &["INCRBYFLOAT", "s", "1"],
        &["INCRBYFLOAT", "l", "1"],
        &["SET", "i", "5"],
        &["INCRBYFLOAT", "i", "-5"],
        &["GET", "i"],
        &["GETEX", "s"],
        &["GETEX", "missing"],
        &["GETEX", "missing", "EX", "-5"],
        &["GETEX", "s", "EX", "0"],
        &["GETEX", "s", "EX", "-1"],
        &["GETEX", "s", "EX", "9223372036854775807"],
        &["GETEX", "s", "PX", "9223372036854775807"],
        &["GETEX", "s", "EX", "abc"],
        &["GETEX", "s", "EX"],
        &["GETEX", "s", "EX", "10", "PX", "10"],
        &["GETEX", "s", "PERSIST", "EX", "10"],
        &["GETEX", "s", "FOO"],
        &["GETEX", "l"],
        &["GETEX", "s", "EX", "100"],
    ]);
    // A relative TTL depends on each server's clock: a range, not equality.
    for c in [&mut p.node, &mut p.redis] {
        match c.cmd(&["TTL", "s"]) {
            Frame::Integer(t) => assert!((90..=100).contains(&t), "TTL {t}"),
            other => panic!("TTL: {other:?}"),
        }
    }
    p.script(&[
        &["GETEX", "s", "PERSIST"],
        &["TTL", "s"],
        &["GETEX", "s", "PXAT", "1"],
        &["EXISTS", "s"],
        &["GETEX", "new", "EXAT", "9999999999"],
        &["EXPIRETIME", "new"],
        &["MSETNX", "{m}a", "1", "{m}b", "2"],
        &["MGET", "{m}a", "{m}b"],
        &["MSETNX", "{m}b", "3", "{m}c", "4"],
        &["EXISTS", "{m}c"],
        &["MSETNX", "{m}a", "1", "{m}b"],
        &["MSETNX", "{m}a"],
    ]);
}

#[test]
fn bit_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "100", "1"],
        &["GET", "b"],
        &["SETBIT", "b", "7", "0"],
        &["GETBIT", "b", "100"],
        &["GETBIT", "b", "7"],
        &["GETBIT", "b", "100000"],
        &["GETBIT", "missing", "3"],
        &["SETBIT", "b", "-1", "1"],
        &["SETBIT", "b", "4294967296", "1"],
        &["SETBIT", "b", "x", "1"],
        &["SETBIT", "b", "1", "2"],
        &["SETBIT", "b", "1", "-1"],
        &["SETBIT", "b", "1", "x"],
        &["GETBIT", "b", "-1"],
        &["GETBIT", "b", "4294967296"],
        &["GETBIT", "b", "4294967295"],
        &["LPUSH", "l", "a"],
        &["SETBIT", "l", "1", "1"],
        &["GETBIT", "l", "1"],
        &["SET", "s", "foobar"],
        &["BITCOUNT", "s"],
        &["BITCOUNT", "s", "0", "0"],
        &["BITCOUNT", "s", "1", "1"],
        &["BITCOUNT", "s", "1", "1", "BYTE"],
        &["BITCOUNT", "s", "5", "30", "BIT"],
        &["BITCOUNT", "s", "-3", "-1", "bit"],
        &["BITCOUNT", "s", "-1", "-3"],
        &["BITCOUNT", "s", "-100", "-50"],
        &["BITCOUNT", "s", "0", "-9223372036854775808"],
        &[
            "BITCOUNT",
            "s",
            "-9223372036854775808",
            "9223372036854775807",
            "BIT",
        ],
        &["BITCOUNT", "s", "0"],
        &["BITCOUNT", "s", "0", "1", "WORD"],
        &["BITCOUNT", "s", "a", "1"],
        &["BITCOUNT", "missing", "a", "1"],
        &["BITCOUNT", "missing"],
        &["BITCOUNT", "l"],
        &["SET", "p", "\u{0}\u{ff}\u{f0}"],
        &["SET", "z", "\u{0}\u{0}\u{0}"],
        &["SET", "o", "\u{7f}"],
        &["BITPOS", "z", "1"],
        &["BITPOS", "z", "0"],
        &["BITPOS", "s", "1"],
        &["BITPOS", "s", "0"],
        &["BITPOS", "s", "1", "2"],
        &["BITPOS", "s", "0", "2", "-1"],
        &["BITPOS", "s", "1", "7", "15", "BIT"],
        &["BITPOS", "s", "0", "7", "15", "BIT"],
        &["BITPOS", "s", "1", "-1", "-3"],
        &["BITPOS", "s", "1", "-10", "-20"],
        &["BITPOS", "s", "1", "-10", "-20", "BIT"],
        &["BITPOS", "s", "1", "0", "-1", "WORD"],
        &["BITPOS", "s", "2"],
        &["BITPOS", "s", "x"],
        &["BITPOS", "s", "1", "x"],
        &["BITPOS", "s", "1", "0", "x"],
        &["BITPOS", "s", "1", "0", "1", "BIT", "extra"],
        &["BITPOS", "missing", "1"],
        &["BITPOS", "missing", "0"],
        &["BITPOS", "missing", "0", "5", "1"],
        &["BITPOS", "l", "1"],
        &["SET", "ff", "\u{7f}"],
        &["SETBIT", "ff", "0", "1"],
        &["BITPOS", "ff", "0"],
        &["BITPOS", "ff", "0", "0", "-1"],
        &["BITPOS", "ff", "0", "0", "7", "BIT"],
        &["BITPOS", "ff", "0", "3", "-1", "BIT"],
        &["BITPOS", "ff", "1", "3", "5", "BIT"],
        &["SET", "e", ""],
        &["BITPOS", "e", "0"],
        &["BITPOS", "e", "1"],
        &["BITCOUNT", "e", "0", "-1"],
        &["GETRANGE", "e", "0", "-1"],
    ]);
    // Every bit window of a short string, both units.
    p.same(&["SET", "w", "\u{1}\u{80}\u{3c}"]);
    for a in -26..26 {
        for b in -26..26 {
            let (a, b) = (a.to_string(), b.to_string());
            for unit in ["BYTE", "BIT"] {
                p.same(&["BITCOUNT", "w", &a, &b, unit]);
                p.same(&["BITPOS", "w", "1", &a, &b, unit]);
                p.same(&["BITPOS", "w", "0", &a, &b, unit]);
            }
            p.same(&["BITPOS", "w", "0", &a]);
            p.same(&["GETRANGE", "w", &a, &b]);
        }
    }
}

#[test]
fn list_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["RPUSH", "{l}a", "a", "b", "c", "1", "2", "3", "c", "c"],
        &["LPOS", "{l}a", "c"],
        &["LPOS", "{l}a", "c", "RANK", "2"],
        &["LPOS", "{l}a", "c", "RANK", "-1"],
        &["LPOS", "{l}a", "c", "RANK", "-2", "COUNT", "0"],
        &["LPOS", "{l}a", "c", "COUNT", "0"],
        &["LPOS", "{l}a", "c", "COUNT", "2"],
        &["LPOS", "{l}a", "c", "COUNT", "0", "MAXLEN", "7"],
        &["LPOS", "{l}a", "c", "RANK", "-1", "MAXLEN", "1"],
        &["LPOS", "{l}a", "c", "RANK", "5"],
        &["LPOS", "{l}a", "c", "RANK", "5", "COUNT", "1"],
        &["LPOS", "{l}a", "zz"],
        &["LPOS", "{l}a", "c", "RANK", "0"],
        &["LPOS", "{l}a", "c", "RANK", "-9223372036854775808"],
        &["LPOS", "{l}a", "c", "RANK", "9223372036854775807"],
        &["LPOS", "{l}a", "c", "RANK", "x"],
        &["LPOS", "{l}a", "c", "COUNT", "-1"],
        &["LPOS", "{l}a", "c", "COUNT", "x"],
        &["LPOS", "{l}a", "c", "MAXLEN", "-1"],
        &["LPOS", "{l}a", "c", "MAXLEN", "9223372036854775807"],
        &["LPOS", "{l}a", "c", "COUNT"],
        &["LPOS", "{l}a", "c", "FOO", "1"],
        &["LPOS", "{l}none", "c"],
        &["LPOS", "{l}none", "c", "COUNT", "3"],
        &["SET", "{l}s", "x"],
        &["LPOS", "{l}s", "c"],
        &["LINSERT", "{l}a", "BEFORE", "c", "X"],
        &["LINSERT", "{l}a", "after", "c", "Y"],
        &["LINSERT", "{l}a", "AFTER", "nope", "Y"],
        &["LINSERT", "{l}a", "MIDDLE", "c", "Y"],
        &["LINSERT", "{l}none", "BEFORE", "c", "Y"],
        &["LINSERT", "{l}s", "BEFORE", "c", "Y"],
        &["LRANGE", "{l}a", "0", "-1"],
        &["LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT"],
        &["LMOVE", "{l}a", "{l}b", "RIGHT", "LEFT"],
        &["LMOVE", "{l}a", "{l}a", "LEFT", "RIGHT"],
        &["LMOVE", "{l}a", "{l}b", "UP", "LEFT"],
        &["LMOVE", "{l}a", "{l}b", "LEFT", "DOWN"],
        &["LMOVE", "{l}none", "{l}b", "LEFT", "LEFT"],
        &["LMOVE", "{l}none", "{l}s", "LEFT", "LEFT"],
        &["LMOVE", "{l}a", "{l}s", "LEFT", "LEFT"],
        &["LMOVE", "{l}s", "{l}a", "LEFT", "LEFT"],
        &["LRANGE", "{l}a", "0", "-1"],
        &["LRANGE", "{l}b", "0", "-1"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["EXISTS", "{l}b"],
        &["RPOPLPUSH", "{l}c", "{l}c"],
        &["RPOPLPUSH", "{l}none", "{l}c"],
        &["RPOPLPUSH", "{l}c", "{l}s"],
        &["LRANGE", "{l}c", "0", "-1"],
    ]);
}

#[test]
fn lmpop_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["RPUSH", "{p}b", "1", "2", "3", "4", "5"],
        &["SET", "{p}s", "x"],
        &["LMPOP", "2", "{p}a", "{p}b", "LEFT"],
        &["LMPOP", "2", "{p}a", "{p}b", "RIGHT", "COUNT", "2"],
        &["LMPOP", "2", "{p}a", "{p}b", "left", "count", "100"],
        &["EXISTS", "{p}b"],
        &["LMPOP", "2", "{p}a", "{p}b", "LEFT"],
        &["LMPOP", "1", "{p}s", "LEFT"],
        &["LMPOP", "2", "{p}a", "{p}s", "LEFT"],
        &["LMPOP", "0", "{p}a", "LEFT"],
        &["LMPOP", "-1", "{p}a", "LEFT"],
        &["LMPOP", "x", "{p}a", "LEFT"],
        &["LMPOP", "9223372036854775807", "{p}a", "LEFT"],
        &["LMPOP", "2", "{p}a", "LEFT"],
        &["LMPOP", "1", "{p}a", "UP"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "0"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "-1"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "x"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "1", "COUNT", "1"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT"],
        &["LMPOP", "1", "{p}a", "LEFT", "FOO"],
        &["LMPOP", "1", "{p}a"],
    ]);
}

#[test]
fn multi_key_list_moves_stay_in_one_slot() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = raw::Raw::connect(&node, Duration::from_secs(10));
    for args in [
        &["LMOVE", "a", "b", "LEFT", "LEFT"][..],
        &["RPOPLPUSH", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["MSETNX", "a", "1", "b", "2"],
        &["ZUNIONSTORE", "{a}d", "2", "{a}x", "b"],
        &["ZUNIONSTORE", "d", "1", "{a}x"],
        &["ZINTER", "2", "a", "b"],
        &["ZDIFF", "2", "a", "b"],
        &["ZINTERCARD", "2", "a", "b"],
        &["ZRANGESTORE", "a", "b", "0", "-1"],
        &["ZMPOP", "2", "a", "b", "MIN"],
        &["SINTERCARD", "2", "a", "b"],
        &["BITOP", "AND", "a", "b"],
        &["BITOP", "OR", "{a}d", "{a}x", "b"],
    ] {
        match c.cmd(args) {
            Frame::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    let Frame::Array(keys) = c.cmd(&["COMMAND", "GETKEYS", "LMPOP", "2", "{a}x", "{a}y", "LEFT"])
    else {
        panic!("GETKEYS answers an array");
    };
    assert_eq!(
        keys,
        vec![Frame::Bulk(b"{a}x".to_vec()), Frame::Bulk(b"{a}y".to_vec())]
    );
    // ZUNIONSTORE's destination comes before its key count.
    let Frame::Array(keys) = c.cmd(&[
        "COMMAND",
        "GETKEYS",
        "ZUNIONSTORE",
        "{a}d",
        "2",
        "{a}x",
        "{a}y",
        "WEIGHTS",
        "1",
        "2",
    ]) else {
        panic!("GETKEYS answers an array");
    };
    let want: Vec<Frame> = ["{a}d", "{a}x", "{a}y"]
        .iter()
        .map(|k| Frame::Bulk(k.as_bytes().to_vec()))
        .collect();
    assert_eq!(keys, want);
}

/// A reply's elements sorted (pairs kept together when `pairs`): for
/// replies whose order is the collection's, which differs from Redis'.
fn sorted(f: Frame, pairs: bool) -> Frame {
    let Frame::Array(items) = f else { return f };
    let mut groups: Vec<Vec<Frame>> = if pairs {
        items.chunks(2).map(|c| c.to_vec()).collect()
    } else {
        items.into_iter().map(|i| vec![i]).collect()
    };
    groups.sort_by_key(|g| format!("{g:?}"));
    Frame::Array(groups.into_iter().flatten().collect())
}

impl Pair {
    /// A SCAN-style reply: the cursor equal, the elements equal as sets.
    fn same_scan(&mut self, args: &[&str], pairs: bool) {
        let norm = |f: Frame| match f {
            Frame::Array(mut v) if v.len() == 2 => {
                let items = v.pop().map(|i| sorted(i, pairs));
                Frame::Array(v.into_iter().chain(items).collect())
            }
            other => other,
        };
        let (ours, theirs) = (norm(self.node.cmd(args)), norm(self.redis.cmd(args)));
        assert_eq!(
            ours, theirs,
            "{args:?}: node (left) and redis-server (right) differ"
        );
    }

    /// Same length, or the same error.
    fn same_len(&mut self, args: &[&str]) {
        let (ours, theirs) = (self.node.cmd(args), self.redis.cmd(args));
        match (&ours, &theirs) {
            (Frame::Array(a), Frame::Array(b)) => assert_eq!(a.len(), b.len(), "{args:?}"),
            _ => assert_eq!(ours, theirs, "{args:?}"),
        }
    }
}

#[test]
fn scan_random_and_zremrange_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["HSET", "h", "f1", "a", "f2", "b", "g1", "c"],
        &["SADD", "s", "m1", "m2", "x"],
        &["ZADD", "z", "1", "a", "2.5", "b", "3", "c", "-1", "d"],
        &["SET", "str", "v"],
    ]);
    for (cmd, key, pairs) in [
        ("HSCAN", "h", true),
        ("SSCAN", "s", false),
        ("ZSCAN", "z", true),
    ] {
        p.same_scan(&[cmd, key, "0"], pairs);
        p.same_scan(&[cmd, key, "0", "COUNT", "100"], pairs);
        p.same_scan(&[cmd, key, "0", "MATCH", "*1"], pairs);
        p.same_scan(&[cmd, key, "0", "MATCH", "*", "COUNT", "5"], pairs);
        p.same_scan(&[cmd, "missing", "0"], pairs);
        p.same_scan(&[cmd, "missing", "0", "COUNT", "0"], pairs);
        p.script(&[
            &[cmd, key, "x"],
            &[cmd, key, "0", "COUNT", "0"],
            &[cmd, key, "0", "COUNT", "-1"],
            &[cmd, key, "0", "COUNT", "x"],
            &[cmd, key, "0", "COUNT"],
            &[cmd, key, "0", "TYPE", "string"],
            &[cmd, key, "0", "FOO", "1"],
            &[cmd, "str", "0"],
            &[cmd, key],
        ]);
    }
    // Distinct samples at least as large as the collection: all of it.
    for args in [
        &["HRANDFIELD", "h", "3"][..],
        &["HRANDFIELD", "h", "100"],
        &["ZRANDMEMBER", "z", "4"],
        &["ZRANDMEMBER", "z", "9223372036854775807"],
    ] {
        let (ours, theirs) = (p.node.cmd(args), p.redis.cmd(args));
        assert_eq!(sorted(ours, false), sorted(theirs, false), "{args:?}");
    }
    for args in [
        &["HRANDFIELD", "h", "100", "WITHVALUES"][..],
        &["ZRANDMEMBER", "z", "100", "WITHSCORES"],
    ] {
        let (ours, theirs) = (p.node.cmd(args), p.redis.cmd(args));
        assert_eq!(sorted(ours, true), sorted(theirs, true), "{args:?}");
    }
    for args in [
        &["HRANDFIELD", "h", "2"][..],
        &["HRANDFIELD", "h", "-7"],
        &["HRANDFIELD", "h", "-7", "WITHVALUES"],
        &["HRANDFIELD", "h", "2", "WITHVALUES"],
        &["ZRANDMEMBER", "z", "-9"],
        &["ZRANDMEMBER", "z", "-9", "WITHSCORES"],
        &["ZRANDMEMBER", "z", "2", "WITHSCORES"],
    ] {
        p.same_len(args);
    }
    p.script(&[
        &["HRANDFIELD", "missing"],
        &["HRANDFIELD", "missing", "3"],
        &["HRANDFIELD", "missing", "-3", "WITHVALUES"],
        &["HRANDFIELD", "h", "0"],
        &["HRANDFIELD", "h", "x"],
        &["HRANDFIELD", "h", "-9223372036854775808"],
        &["HRANDFIELD", "h", "1", "WITHSCORES"],
        &["HRANDFIELD", "h", "1", "WITHVALUES", "x"],
        &["HRANDFIELD", "missing", "1", "FOO"],
        &["HRANDFIELD", "str"],
        &["HRANDFIELD", "str", "1"],
        &["ZRANDMEMBER", "missing"],
        &["ZRANDMEMBER", "missing", "-3"],
        &["ZRANDMEMBER", "z", "0", "WITHSCORES"],
        &["ZRANDMEMBER", "z", "1", "WITHVALUES"],
        &["ZRANDMEMBER", "z", "-9223372036854775808"],
        &["ZRANDMEMBER", "str", "1"],
        &["ZRANDMEMBER", "s"],
        &[
            "ZADD", "z2", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
        ],
        &["ZREMRANGEBYSCORE", "z2", "2", "(4"],
        &["ZRANGE", "z2", "0", "-1"],
        &["ZREMRANGEBYSCORE", "z2", "10", "1"],
        &["ZREMRANGEBYSCORE", "z2", "x", "1"],
        &["ZREMRANGEBYSCORE", "z2", "1", "nan"],
        &["ZREMRANGEBYSCORE", "missing", "x", "1"],
        &["ZREMRANGEBYSCORE", "missing", "0", "1"],
        &["ZREMRANGEBYSCORE", "str", "0", "1"],
        &["ZREMRANGEBYSCORE", "z2", "-inf", "+inf"],
        &["EXISTS", "z2"],
        &[
            "ZADD", "z3", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e",
        ],
        &["ZREMRANGEBYLEX", "z3", "[b", "(d"],
        &["ZRANGE", "z3", "0", "-1"],
        &["ZREMRANGEBYLEX", "z3", "b", "d"],
        &["ZREMRANGEBYLEX", "z3", "(z", "-"],
        &["ZREMRANGEBYLEX", "missing", "x", "y"],
        &["ZREMRANGEBYLEX", "str", "-", "+"],
        &["ZREMRANGEBYLEX", "z3", "-", "+"],
        &["EXISTS", "z3"],
        &[
            "ZADD", "z4", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e",
        ],
        &["ZREMRANGEBYRANK", "z4", "1", "2"],
        &["ZRANGE", "z4", "0", "-1"],
        &["ZREMRANGEBYRANK", "z4", "-1", "-1"],
        &["ZREMRANGEBYRANK", "z4", "5", "10"],
        &["ZREMRANGEBYRANK", "z4", "2", "1"],
        &["ZREMRANGEBYRANK", "z4", "-100", "-50"],
        &["ZREMRANGEBYRANK", "z4", "-9223372036854775808", "0"],
        &["ZREMRANGEBYRANK", "z4", "x", "1"],
        &["ZREMRANGEBYRANK", "missing", "x", "1"],
        &["ZREMRANGEBYRANK", "str", "0", "1"],
        &["ZRANGE", "z4", "0", "-1"],
        &["ZREMRANGEBYRANK", "z4", "0", "9223372036854775807"],
        &["EXISTS", "z4"],
    ]);
}

#[test]
fn collection_scans_return_every_member_once_across_cursors() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = raw::Raw::connect(&node, Duration::from_secs(10));
    let n = 1000;
    let mut hset = vec!["HSET".to_string(), "h".into()];
    let mut sadd = vec!["SADD".to_string(), "s".into()];
    for i in 0..n {
        hset.extend([format!("f{i}"), format!("v{i}")]);
        sadd.push(format!("m{i}"));
    }
    for args in [&hset, &sadd] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(c.cmd(&refs), Frame::Integer(n));
    }
    for (cmd, key, per) in [("HSCAN", "h", 2), ("SSCAN", "s", 1)] {
        let (mut cursor, mut seen, mut calls) = ("0".to_string(), Vec::new(), 0);
        loop {
            let Frame::Array(mut reply) = c.cmd(&[cmd, key, &cursor, "COUNT", "7"]) else {
                panic!("{cmd} answers an array");
            };
            let (Some(Frame::Array(items)), Some(Frame::Bulk(next))) = (reply.pop(), reply.pop())
            else {
                panic!("{cmd}: [cursor, items]");
            };
            seen.extend(items.into_iter().step_by(per));
            cursor = String::from_utf8(next).expect("a numeric cursor");
            calls += 1;
            if cursor == "0" {
                break;
            }
        }
        assert!(calls > 100, "{cmd}: COUNT bounds each step ({calls} calls)");
        let total = seen.len();
        seen.sort_by_key(|f| format!("{f:?}"));
        seen.dedup();
        assert_eq!((total, seen.len()), (n as usize, n as usize), "{cmd}");
    }
}

#[test]
fn copy_and_touch_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SET", "{k}s", "v"],
        &["RPUSH", "{k}l", "a", "b"],
        &["HSET", "{k}h", "f", "v"],
        &["SADD", "{k}set", "m"],
        &["ZADD", "{k}z", "1.5", "m"],
        &["XADD", "{k}x", "1-1", "f", "v"],
        &["COPY", "{k}s", "{k}s2"],
        &["GET", "{k}s2"],
        &["COPY", "{k}s", "{k}s2"],
        &["COPY", "{k}l", "{k}s2"],
        &["COPY", "{k}l", "{k}s2", "REPLACE"],
        &["LRANGE", "{k}s2", "0", "-1"],
        &["COPY", "{k}h", "{k}h2"],
        &["HGETALL", "{k}h2"],
        &["COPY", "{k}set", "{k}set2"],
        &["SMEMBERS", "{k}set2"],
        &["COPY", "{k}z", "{k}z2", "DB", "0"],
        &["ZRANGE", "{k}z2", "0", "-1", "WITHSCORES"],
        &["COPY", "{k}x", "{k}x2"],
        &["XRANGE", "{k}x2", "-", "+"],
        &["COPY", "{k}s", "{k}s"],
        &["COPY", "{k}none", "{k}s3"],
        &["COPY", "{k}s", "{k}s3", "FOO"],
        &["COPY", "{k}s", "{k}s3", "DB"],
        &["COPY", "{k}s", "{k}s3", "DB", "x"],
        &["COPY", "{k}s", "{k}s3", "DB", "4294967296"],
        &["COPY", "{k}s", "{k}s3", "REPLACE", "REPLACE"],
        &["SET", "{k}t", "v", "PXAT", "99999999999999"],
        &["COPY", "{k}t", "{k}t2"],
        &["PEXPIRETIME", "{k}t2"],
        &["LPUSH", "{k}l", "c"],
        &["LRANGE", "{k}s2", "0", "-1"],
        &["TOUCH", "{k}s", "{k}l", "{k}none", "{k}s"],
        &["TOUCH", "{k}none"],
    ]);
}

#[test]
fn copy_refuses_other_databases_and_slots_on_a_node() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = raw::Raw::connect(&node, Duration::from_secs(10));
    c.cmd(&["SET", "{k}s", "v"]);
    assert_eq!(
        c.cmd(&["COPY", "{k}s", "{k}t", "DB", "1"]),
        Frame::Error("ERR Copying to another database is not allowed in cluster mode".into())
    );
    for args in [&["COPY", "a", "b"][..], &["TOUCH", "a", "b"]] {
        match c.cmd(args) {
            Frame::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
}

/// Differences the random sequences (`random_sequences.rs`) found: which
/// argument Redis checks first, and how it reads numbers.
#[test]
fn argument_checks_come_in_redis_order() {
    let mut p = Pair::start();
    p.script(&[
        &["HINCRBYFLOAT", "{t}h", "f", "inf"],
        &["HINCRBYFLOAT", "{t}h", "f", "nan"],
        &["HSET", "{t}h", "g", "inf"],
        &["HINCRBYFLOAT", "{t}h", "g", "1"],
        &["SET", "{t}s", "v"],
        &["EXPIREAT", "{t}s", "x", "NX", "GT"],
        &["EXPIRE", "{t}s", "x", "GT", "LT"],
        &["EXPIRE", "{t}s", "x", "FOO"],
        &["LINDEX", "{t}missing", "x"],
        &["LSET", "{t}missing", "x", "v"],
        &["LSET", "{t}s", "x", "v"],
        &["RPUSH", "{t}l", "a"],
        &["LINDEX", "{t}l", "x"],
        &["SMOVE", "{t}missing", "{t}s", "m"],
        &["SADD", "{t}set", "m"],
        &["SMOVE", "{t}set", "{t}s", "m"],
        &["SMOVE", "{t}set", "{t}s", "other"],
        &["ZADD", "{t}z", "1", "a", "2", "b"],
        &["ZCOUNT", "{t}z", "(", "+inf"],
        &["ZCOUNT", "{t}z", "", "5"],
        &["ZCOUNT", "{t}z", " 1", "5"],
        &["ZCOUNT", "{t}z", "1 ", "5"],
        &["ZRANGEBYSCORE", "{t}z", "(", "1e400"],
        &["ZADD", "{t}z", "1e400", "c"],
        &["ZADD", "{t}z", "1e-400", "c"],
        &["ZINCRBY", "{t}z", "1e400", "a"],
    ]);
}

#[test]
fn scores_print_as_redis_7_0_prints_them() {
    let mut p = Pair::start();
    p.script(&[
        &[
            "ZADD", "z", "0.1", "a", "1e20", "b", "1e17", "c", "1.5e-7", "d",
        ],
        &["ZSCORE", "z", "a"],
        &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        &["ZINCRBY", "z", "0.2", "a"],
        &["ZINCRBY", "z", "-0", "e"],
        &["ZSCORE", "z", "e"],
        &["ZMSCORE", "z", "a", "b", "nope"],
        &["ZPOPMAX", "z"],
        &["ZADD", "z", "INCR", "1e16", "f"],
    ]);
}

/// With unequal scores members are not in lexicographic order: Redis first
/// checks the range against the first and last members.
#[test]
fn lex_ranges_over_unequal_scores_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["ZADD", "z", "1", "d", "1000", "1", "5", "b"],
        &["ZLEXCOUNT", "z", "[a", "[d"],
        &["ZLEXCOUNT", "z", "-", "+"],
        &["ZLEXCOUNT", "z", "[d", "[a"],
        &["ZLEXCOUNT", "z", "(a", "(a"],
        &["ZLEXCOUNT", "z", "a", "[b"],
        &["ZRANGE", "z", "[a", "[d", "BYLEX"],
        &["ZRANGE", "z", "[d", "[a", "BYLEX", "REV"],
        &["ZRANGE", "z", "-", "[c", "BYLEX"],
        &["ZREMRANGEBYLEX", "z", "[a", "[d"],
        &["ZREMRANGEBYLEX", "z", "-", "[c"],
        &["ZRANGE", "z", "0", "-1"],
    ]);
}

/// Multi-key set and sorted-set commands, with sets as inputs, weights,
/// aggregates (inf × 0 and inf - inf are 0) and their errors.
#[test]
fn multi_key_set_algebra_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["ZADD", "{z}a", "1", "x", "2", "y", "inf", "z"],
        &["ZADD", "{z}b", "3", "y", "-inf", "z", "4", "w"],
        &["SADD", "{z}s", "x", "w", "v"],
        &["ZUNION", "2", "{z}a", "{z}b", "WITHSCORES"],
        &[
            "ZUNION",
            "3",
            "{z}a",
            "{z}b",
            "{z}s",
            "WEIGHTS",
            "2",
            "0",
            "1",
            "WITHSCORES",
        ],
        &[
            "ZINTER",
            "2",
            "{z}a",
            "{z}b",
            "AGGREGATE",
            "MAX",
            "WITHSCORES",
        ],
        &[
            "ZINTER",
            "2",
            "{z}a",
            "{z}s",
            "AGGREGATE",
            "min",
            "WITHSCORES",
        ],
        &["ZDIFF", "2", "{z}a", "{z}b", "WITHSCORES"],
        &["ZDIFF", "1", "{z}s"],
        &[
            "ZUNIONSTORE",
            "{z}d",
            "2",
            "{z}a",
            "{z}b",
            "WEIGHTS",
            "1",
            "-1",
        ],
        &["ZRANGE", "{z}d", "0", "-1", "WITHSCORES"],
        &["ZINTERSTORE", "{z}d", "2", "{z}a", "{z}missing"],
        &["EXISTS", "{z}d"],
        &["ZDIFFSTORE", "{z}d", "2", "{z}a", "{z}s"],
        &["ZINTERCARD", "2", "{z}a", "{z}b"],
        &["ZINTERCARD", "2", "{z}a", "{z}b", "LIMIT", "1"],
        &["ZINTERCARD", "2", "{z}a", "{z}b", "LIMIT", "-1"],
        &["ZUNIONSTORE", "{z}d", "0", "{z}a"],
        &["ZUNIONSTORE", "{z}d", "3", "{z}a"],
        &["ZUNIONSTORE", "{z}d", "x", "{z}a"],
        &["ZUNION", "1", "{z}a", "WEIGHTS", "x"],
        &["ZUNION", "1", "{z}a", "AGGREGATE", "AVG"],
        &["ZUNIONSTORE", "{z}d", "1", "{z}a", "WITHSCORES"],
        &["ZDIFF", "1", "{z}a", "WEIGHTS", "1"],
        &["SET", "{z}str", "v"],
        &["ZUNION", "2", "{z}a", "{z}str", "FOO"],
        &["ZRANGESTORE", "{z}r", "{z}a", "0", "1"],
        &[
            "ZRANGESTORE",
            "{z}r",
            "{z}a",
            "(1",
            "+inf",
            "BYSCORE",
            "LIMIT",
            "0",
            "1",
        ],
        &["ZRANGE", "{z}r", "0", "-1", "WITHSCORES"],
        &["ZRANGESTORE", "{z}r", "{z}a", "0", "1", "WITHSCORES"],
        &["ZRANGESTORE", "{z}r", "{z}missing", "0", "1"],
        &["EXISTS", "{z}r"],
        &["ZMPOP", "2", "{z}missing", "{z}a", "MAX", "COUNT", "2"],
        &["ZMPOP", "1", "{z}missing", "MIN"],
        &["ZMPOP", "0", "{z}a", "MIN"],
        &["ZMPOP", "1", "{z}a", "MIDDLE"],
        &["ZMPOP", "1", "{z}a", "MIN", "COUNT", "0"],
        &["ZMPOP", "1", "{z}str", "MIN"],
        &["SADD", "{z}t", "x", "v"],
        &["SINTERCARD", "2", "{z}s", "{z}t"],
        &["SINTERCARD", "2", "{z}s", "{z}t", "LIMIT", "1"],
        &["SINTERCARD", "3", "{z}s", "{z}t"],
        &["SINTERCARD", "0", "{z}s"],
        &["SINTERCARD", "1", "{z}s", "LIMIT", "-1"],
        &["SINTERCARD", "2", "{z}s", "{z}str"],
        &["SET", "{b}1", "\u{ff}\u{0f}"],
        &["SET", "{b}2", "abc"],
        &["BITOP", "AND", "{b}d", "{b}1", "{b}2"],
        &["GET", "{b}d"],
        &["BITOP", "OR", "{b}d", "{b}1", "{b}2", "{b}missing"],
        &["GET", "{b}d"],
        &["BITOP", "XOR", "{b}d", "{b}2", "{b}2"],
        &["BITOP", "NOT", "{b}d", "{b}2"],
        &["GET", "{b}d"],
        &["BITOP", "NOT", "{b}d", "{b}1", "{b}2"],
        &["BITOP", "NAND", "{b}d", "{b}1"],
        &["BITOP", "AND", "{b}d", "{b}missing"],
        &["EXISTS", "{b}d"],
        &["LPUSH", "{b}l", "x"],
        &["BITOP", "AND", "{b}d", "{b}1", "{b}l"],
    ]);
}

/// BITFIELD with Redis' overflow arithmetic, quirks included (SET of
/// -2^63 into a narrow signed field saturates upwards).
#[test]
fn bitfield_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &[
            "BITFIELD", "b", "SET", "i8", "0", "-100", "GET", "u4", "0", "GET", "i8", "0",
        ],
        &["BITFIELD", "b", "INCRBY", "i8", "0", "-100"],
        &[
            "BITFIELD", "b", "OVERFLOW", "SAT", "INCRBY", "i8", "0", "-100",
        ],
        &[
            "BITFIELD", "b", "OVERFLOW", "FAIL", "INCRBY", "i8", "0", "-1", "INCRBY", "u2", "100",
            "1",
        ],
        &["STRLEN", "b"],
        &[
            "BITFIELD", "b", "SET", "u8", "#3", "255", "INCRBY", "u8", "#3", "1",
        ],
        &[
            "BITFIELD",
            "b",
            "OVERFLOW",
            "SAT",
            "SET",
            "i8",
            "1",
            "-9223372036854775808",
        ],
        &["BITFIELD", "b", "OVERFLOW", "SAT", "SET", "u8", "0", "-1"],
        &[
            "BITFIELD",
            "b",
            "OVERFLOW",
            "WRAP",
            "SET",
            "i16",
            "3",
            "9223372036854775807",
        ],
        &[
            "BITFIELD",
            "b",
            "INCRBY",
            "i64",
            "0",
            "9223372036854775807",
            "INCRBY",
            "i64",
            "0",
            "1",
        ],
        &[
            "BITFIELD",
            "b",
            "OVERFLOW",
            "SAT",
            "INCRBY",
            "i64",
            "0",
            "9223372036854775807",
        ],
        &["BITFIELD", "b", "GET", "u63", "1", "GET", "i64", "5"],
        &["GET", "b"],
        &["BITFIELD", "b", "GET", "u64", "0"],
        &["BITFIELD", "b", "GET", "I8", "0"],
        &["BITFIELD", "b", "GET", "i0", "0"],
        &["BITFIELD", "b", "GET", "i8", "-1"],
        &["BITFIELD", "b", "GET", "i8", "#x"],
        &["BITFIELD", "b", "GET", "i8", "4294967296"],
        &["BITFIELD", "b", "SET", "i8", "0", "x"],
        &["BITFIELD", "b", "OVERFLOW", "NOPE", "GET", "i8", "0"],
        &["BITFIELD", "b", "GET", "i8"],
        &["BITFIELD", "b", "FOO", "i8", "0"],
        &["BITFIELD", "missing", "GET", "i8", "0"],
        &["EXISTS", "missing"],
        &[
            "BITFIELD", "missing", "OVERFLOW", "FAIL", "INCRBY", "u8", "16", "300",
        ],
        &["GET", "missing"],
        &["BITFIELD", "b"],
        &["BITFIELD_RO", "b", "GET", "u8", "0"],
        &["BITFIELD_RO", "b", "SET", "u8", "0", "1"],
        &["LPUSH", "l", "x"],
        &["BITFIELD", "l", "GET", "u8", "0"],
        &["BITFIELD_RO", "l", "SET", "u8", "0", "1"],
    ]);
}
