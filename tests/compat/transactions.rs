//! Transactions compared with a real redis-server: queued replies, queue-time
//! errors (EXECABORT), run-time errors inside EXEC, WATCH.

use super::differential::Pair;

#[test]
fn multi_exec_discard_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["EXEC"],
        &["DISCARD"],
        &["MULTI"],
        &["MULTI"],
        &["WATCH", "{t}a"],
        &["SET", "{t}a", "1"],
        &["INCR", "{t}a"],
        &["LPUSH", "{t}a", "x"],
        &["GET", "{t}a"],
        &["EXEC"],
        &["EXEC"],
        &["MULTI"],
        &["EXEC"],
        // Queue-time errors abort the whole transaction.
        &["MULTI"],
        &["SET", "{t}b", "1"],
        &["NOSUCHCOMMAND", "x"],
        &["SET", "{t}b"],
        &["EXEC"],
        &["EXISTS", "{t}b"],
        &["MULTI"],
        &["SET", "{t}b", "1"],
        &["GET"],
        &["EXEC"],
        &["EXISTS", "{t}b"],
        // DISCARD drops the queue.
        &["MULTI"],
        &["SET", "{t}c", "1"],
        &["DISCARD"],
        &["EXISTS", "{t}c"],
        &["DISCARD"],
        // Commands that run inside MULTI rather than being queued.
        &["MULTI"],
        &["PING"],
        &["ECHO", "hi"],
        &["WAIT", "0", "0"],
        &["UNWATCH"],
        &["MSET", "{t}d", "1", "{t}e", "2"],
        &["MGET", "{t}d", "{t}e"],
        &["INCRBYFLOAT", "{t}d", "1.5"],
        &["EXEC"],
    ]);
}

#[test]
fn watch_aborts_exec_after_another_client_writes_the_key() {
    let mut p = Pair::start();
    let (mut node2, mut redis2) = p.connect_more();
    let other =
        |p: &mut Pair, node2: &mut super::raw::Raw, redis2: &mut super::raw::Raw, args: &[&str]| {
            let _ = p;
            assert_eq!(
                node2.cmd(args),
                redis2.cmd(args),
                "{args:?} on the other connection"
            );
        };
    // Another client's write: EXEC answers nil, nothing runs.
    p.script(&[&["SET", "{w}k", "1"], &["WATCH", "{w}k"], &["GET", "{w}k"]]);
    other(&mut p, &mut node2, &mut redis2, &["SET", "{w}k", "2"]);
    p.script(&[
        &["MULTI"],
        &["SET", "{w}k", "3"],
        &["EXEC"],
        &["GET", "{w}k"],
    ]);
    // The watch ended with EXEC: the next transaction runs.
    p.script(&[
        &["MULTI"],
        &["SET", "{w}k", "3"],
        &["EXEC"],
        &["GET", "{w}k"],
    ]);
    // A write that changes nothing leaves the watch alone; one that does
    // (an INCR, a DEL, an EXPIRE) trips it.
    for write in [
        &["INCR", "{w}n"][..],
        &["DEL", "{w}n"],
        &["EXPIRE", "{w}n", "100"],
    ] {
        p.script(&[&["SET", "{w}n", "5"], &["WATCH", "{w}n"]]);
        other(&mut p, &mut node2, &mut redis2, write);
        p.script(&[&["MULTI"], &["GET", "{w}n"], &["EXEC"]]);
    }
    p.script(&[&["WATCH", "{w}missing"]]);
    other(&mut p, &mut node2, &mut redis2, &["DEL", "{w}missing"]);
    p.script(&[&["MULTI"], &["GET", "{w}missing"], &["EXEC"]]);
    // UNWATCH and DISCARD forget the watched keys.
    p.script(&[&["WATCH", "{w}k"]]);
    p.script(&[&["UNWATCH"]]);
    other(&mut p, &mut node2, &mut redis2, &["SET", "{w}k", "9"]);
    p.script(&[&["MULTI"], &["GET", "{w}k"], &["EXEC"]]);
    p.script(&[&["WATCH", "{w}k"], &["MULTI"], &["DISCARD"]]);
    other(&mut p, &mut node2, &mut redis2, &["SET", "{w}k", "10"]);
    p.script(&[&["MULTI"], &["GET", "{w}k"], &["EXEC"]]);
    // The client's own write before MULTI trips its watch too; FLUSHALL
    // trips every watch.
    p.script(&[
        &["WATCH", "{w}k"],
        &["SET", "{w}k", "11"],
        &["MULTI"],
        &["GET", "{w}k"],
        &["EXEC"],
        &["WATCH", "{w}k", "{w}other"],
        &["FLUSHALL"],
        &["MULTI"],
        &["GET", "{w}k"],
        &["EXEC"],
        &["WATCH"],
    ]);
    // RESP3: the aborted EXEC is a null (HELLO's own reply differs: the
    // server's name and mode).
    p.node.cmd(&["HELLO", "3"]);
    p.redis.cmd(&["HELLO", "3"]);
    p.script(&[&["WATCH", "{w}k"]]);
    other(&mut p, &mut node2, &mut redis2, &["SET", "{w}k", "12"]);
    p.script(&[&["MULTI"], &["GET", "{w}k"], &["EXEC"]]);
}
