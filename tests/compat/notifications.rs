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
