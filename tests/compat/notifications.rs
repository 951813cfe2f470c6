//! Keyspace notifications against a real redis-server: the same commands
//! with `notify-keyspace-events` set, the same messages in the same order
//! on `__keyspace@0__:*` and `__keyevent@0__:*`.

use super::differential::Pair;
use super::raw::Raw;
use tessera::node::resp::Frame;

/// Subscribes `c` to every keyspace and keyevent channel.
fn listen(c: &mut Raw) {
    c.send(&[b"PSUBSCRIBE", b"__key*__:*"]);
    let confirm = c.next_reply().expect("PSUBSCRIBE confirmed");
    assert!(matches!(confirm, Frame::Array(_)), "{confirm:?}");
}

/// Messages received until the end marker (a PUBLISH on a channel the
/// pattern matches), as (channel, message) text.
fn drain(c: &mut Raw) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let f = c.next_reply().expect("a message before the end marker");
        let Frame::Array(v) = f else {
            panic!("not a message: {f:?}")
        };
        let text = |f: &Frame| match f {
            Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        let (ch, msg) = (text(&v[2]), text(&v[3]));
        if ch == "__keyspace@0__:end-marker" {
            return got;
        }
        got.push((ch, msg));
    }
}

/// Runs `script` on both servers with `classes` set and compares the
/// notifications each sent; returns how many there were.
fn compare(p: &mut Pair, classes: &str, script: &[&[&str]]) -> usize {
    let (mut ours, mut theirs) = p.connect_more();
    listen(&mut ours);
    listen(&mut theirs);
    p.same(&["CONFIG", "SET", "notify-keyspace-events", classes]);
    p.script(script);
    p.same(&["CONFIG", "SET", "notify-keyspace-events", ""]);
    p.same(&["PUBLISH", "__keyspace@0__:end-marker", "x"]);
    let (a, b) = (drain(&mut ours), drain(&mut theirs));
    assert_eq!(
        a, b,
        "notifications with {classes:?}: node (left), redis-server (right)"
    );
    a.len()
}

#[test]
fn keyspace_notifications_match_redis() {
    let mut p = Pair::start();
    let all: &[&[&str]] = &[
        &["SET", "{k}s", "v"],
        &["SET", "{k}s", "w", "EX", "100"],
        &["SETEX", "{k}e", "100", "v"],
        &["APPEND", "{k}s", "x"],
        &["INCR", "{k}n"],
        &["INCRBYFLOAT", "{k}n", "1.5"],
        &["SETRANGE", "{k}s", "1", "z"],
        &["MSET", "{m}a", "1", "{m}b", "2"],
        &["EXPIRE", "{k}s", "1000"],
        &["PERSIST", "{k}s"],
        &["GETDEL", "{k}e"],
        &["DEL", "{k}s", "{k}missing", "{k}n"],
        &["RPUSH", "l", "{o}a", "b", "c"],
        &["LPUSH", "l", "z"],
        &["LPOP", "l"],
        &["RPOP", "l", "2"],
        &["LPOP", "l"],
        &["RPUSH", "{q}src", "1"],
        &["LMOVE", "{q}src", "{q}dst", "LEFT", "RIGHT"],
        &["HSET", "h", "f", "v", "g", "w"],
        &["HDEL", "h", "f"],
        &["HINCRBY", "h", "c", "2"],
        &["HDEL", "h", "g", "c"],
        &["SADD", "st", "{o}a", "b"],
        &["SADD", "st", "{o}a"],
        &["SREM", "st", "{o}a", "b"],
        &["ZADD", "z", "1", "{o}a", "2", "b"],
        &["ZADD", "z", "INCR", "5", "{o}a"],
        &["ZINCRBY", "z", "1", "b"],
        &["ZREM", "z", "{o}a"],
        &["ZPOPMIN", "z"],
        &["XADD", "x", "1-0", "f", "v"],
        &["XADD", "x", "2-0", "f", "v"],
        &["XDEL", "x", "1-0"],
        &["XTRIM", "x", "MAXLEN", "0"],
        &["XGROUP", "CREATE", "x", "g", "$"],
        &["XGROUP", "CREATECONSUMER", "x", "g", "c"],
        &["XGROUP", "SETID", "x", "g", "0"],
        &["XADD", "x", "3-0", "f", "v"],
        &["XREADGROUP", "GROUP", "g", "new", "STREAMS", "x", ">"],
        &["XGROUP", "DELCONSUMER", "x", "g", "c"],
        &["XGROUP", "DESTROY", "x", "g"],
        &["SET", "{r}a", "1"],
        &["RENAME", "{r}a", "{r}b"],
    ];
    let n = compare(&mut p, "KEA", all);
    assert!(n > 80, "both servers sent every event ({n})");
    // Only some classes, only one channel kind.
    let some: &[&[&str]] = &[
        &["SET", "{o}a", "1"],
        &["RPUSH", "{o}l2", "x"],
        &["HSET", "{o}h2", "f", "v"],
        &["DEL", "{o}a", "{o}l2", "{o}h2"],
    ];
    let n = compare(&mut p, "El", some);
    assert_eq!(
        n, 1,
        "list events only (rpush; del is generic), keyevent channels only"
    );
    assert_eq!(compare(&mut p, "Kg", some), 3);
}

#[test]
fn expired_keys_notify_expired() {
    let mut p = Pair::start();
    let (mut ours, mut theirs) = p.connect_more();
    listen(&mut ours);
    listen(&mut theirs);
    p.same(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]);
    p.same(&["SET", "k", "v", "PX", "20"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // A read finds it expired (if the active cycle did not first).
    p.same(&["GET", "k"]);
    p.same(&["PUBLISH", "__keyspace@0__:end-marker", "x"]);
    let (a, b) = (drain(&mut ours), drain(&mut theirs));
    assert_eq!(
        a,
        vec![("__keyevent@0__:expired".to_string(), "k".to_string())]
    );
    assert_eq!(a, b);
}

/// `m` (a read finds its key missing) and `n` (a key is added), which `A`
/// does not include, and the consumer a stream group command creates.
#[test]
fn key_miss_new_key_and_consumer_notifications_match_redis() {
    let mut p = Pair::start();
    let script: &[&[&str]] = &[
        // Reads of missing keys: one keymiss per missing key, in order.
        &["GET", "nope"],
        &["MGET", "{a}x", "{a}y", "{a}z"],
        &["EXISTS", "{a}x", "{a}x"],
        &["TYPE", "nope"],
        &["TTL", "nope"],
        &["STRLEN", "nope"],
        &["HGET", "nope", "f"],
        &["SMEMBERS", "nope"],
        &["LRANGE", "nope", "0", "-1"],
        &["ZSCORE", "nope", "m"],
        &["XRANGE", "nope", "-", "+"],
        &["DUMP", "nope"],
        &["OBJECT", "ENCODING", "nope"],
        // Writes that read a key first, and those that do not.
        &["GETDEL", "nope"],
        &["GETEX", "nope"],
        &["LPOP", "nope"],
        &["RPOPLPUSH", "{a}x", "{a}y"],
        &["GETSET", "gs", "v"],
        // New keys: `new` before the command's own event.
        &["SET", "{a}x", "1"],
        &["SET", "{a}x", "2"],
        &["MSET", "{a}x", "3", "{a}m1", "1", "{a}m2", "2"],
        &["SET", "ex", "v", "EX", "100"],
        &["APPEND", "ap", "x"],
        &["INCR", "i"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["SETRANGE", "sr", "0", "x"],
        &["HSET", "h", "f", "v"],
        &["HINCRBY", "h2", "f", "1"],
        &["SADD", "{s}src", "m"],
        &["SMOVE", "{s}src", "{s}dst", "m"],
        &["SUNIONSTORE", "{s}u", "{s}dst", "{s}none"],
        &["SINTERSTORE", "{s}i", "{s}none", "{s}dst"],
        &["ZADD", "z", "1", "m"],
        &["RPUSH", "{l}a", "1", "2"],
        &["RPOPLPUSH", "{l}a", "{l}b"],
        &["LMOVE", "{l}a", "{l}c", "LEFT", "RIGHT"],
        &["SORT", "{l}b", "STORE", "{l}sorted"],
        &["COPY", "{a}x", "{a}copy"],
        &["RENAME", "{a}copy", "{a}ren"],
        // Stream groups: a new consumer is the only event of XREADGROUP,
        // XCLAIM and XAUTOCLAIM; a missing stream is a keymiss.
        &["XADD", "s", "1-0", "f", "v"],
        &["XGROUP", "CREATE", "s", "g", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", ">"],
        &["XADD", "s", "2-0", "f", "v"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c2",
            "NOACK",
            "STREAMS",
            "s",
            ">",
        ],
        &["XCLAIM", "s", "g", "c3", "0", "1-0"],
        &["XCLAIM", "s", "g", "c3", "0", "1-0"],
        &["XCLAIM", "s", "g", "c4", "0", "9-0"],
        &["XAUTOCLAIM", "s", "g", "c5", "0", "0"],
        &["XAUTOCLAIM", "s", "g", "c5", "0", "0", "JUSTID"],
        &["XACK", "s", "g", "1-0"],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "nostream", ">"],
        &["XINFO", "STREAM", "nostream"],
        // Inside a script and a transaction, as their commands run.
        &[
            "EVAL",
            "redis.call('GET', KEYS[1]) return redis.call('SET', KEYS[2], 1)",
            "2",
            "{e}a",
            "{e}b",
        ],
        &["MULTI"],
        &["GET", "{e}c"],
        &["SET", "{e}c", "1"],
        &["EXEC"],
    ];
    let n = compare(&mut p, "KEAmn", script);
    assert!(n > 100, "both servers sent every event ({n})");
    p.same(&["FLUSHALL"]);
    // Each class alone, on one channel kind.
    assert!(compare(&mut p, "Em", script) > 20);
    p.same(&["FLUSHALL"]);
    assert!(compare(&mut p, "En", script) > 20);
    p.same(&["FLUSHALL"]);
    assert!(compare(&mut p, "Kt", script) > 5);
}
