//! MULTI/EXEC/WATCH, scripts, blocking pops, pub/sub, CONFIG SET and CLIENT
//! compared with a real redis-server. Transactions: queued replies, queue-time
//! errors (EXECABORT), run-time errors inside EXEC, WATCH.

use super::differential::Pair;
use tessera::node::resp::Frame;

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

#[test]
fn eval_replies_errors_and_sandbox_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SET", "s", "abc"],
        &["EVAL", "return redis.call('incr','s')", "0"],
        &["EVAL", "return redis.pcall('incr','s')", "0"],
        &["EVAL", "return error('boom')", "0"],
        &["EVAL", "error({err='MY custom'})", "0"],
        &["EVAL", "return {1,2,3.7,'x',nil,4}", "0"],
        &["EVAL", "return {ok='fine'}", "0"],
        &["EVAL", "return redis.status_reply('S')", "0"],
        &["EVAL", "return redis.error_reply('E bad')", "0"],
        &["EVAL", "return redis.error_reply('bad')", "0"],
        &["EVAL", "return {err='raw'}", "0"],
        &["EVAL", "return {1,{err='in'},3}", "0"],
        &["EVAL", "return true", "0"],
        &["EVAL", "return false", "0"],
        &["EVAL", "return 3.99", "0"],
        &["EVAL", "return -3.99", "0"],
        &["EVAL", "return 1e20", "0"],
        &["EVAL", "return", "0"],
        &["EVAL", "return redis.call('get', KEYS[1])", "1", "s"],
        &["EVAL", "return {redis.call('get', 'nokey')}", "0"],
        &["EVAL", "return redis.call('nosuch')", "0"],
        &["EVAL", "return redis.pcall('nosuch')", "0"],
        &["EVAL", "return redis.call('multi')", "0"],
        &["EVAL", "return redis.call('eval','return 1',0)", "0"],
        &["EVAL", "return redis.call()", "0"],
        &["EVAL", "return redis.call({})", "0"],
        &["EVAL", "return redis.pcall('incr', 'nokey', 'x')", "0"],
        &["EVAL", "return redis.call('set', 'k', 3.5)", "0"],
        &["EVAL", "return redis.call('set', 'k2', 1e20)", "0"],
        &["GET", "k"],
        &["GET", "k2"],
        &["EVAL", "return redis.sha1hex('abc')", "0"],
        &["EVAL", "x = 5", "0"],
        &["EVAL", "return x", "0"],
        &["EVAL", "return os", "0"],
        &["EVAL", "return io", "0"],
        &["EVAL", "return loadfile", "0"],
        &["EVAL", "return dofile", "0"],
        &["EVAL", "return print", "0"],
        &["EVAL", "return cjson.encode({1,2,{a=1}})", "0"],
        &["EVAL", "return cjson.decode('[1,2,{\"a\":3}]')[3].a", "0"],
        &["EVAL", "return bit.band(7,3)", "0"],
        &["EVAL", "return bit.tohex(255, -4)", "0"],
        &["EVAL", "return bit.lshift(1, 31)", "0"],
        &["EVAL", "return 1", "-1"],
        &["EVAL", "return 1", "2", "a"],
        &["EVAL", "return 1", "x"],
        &["EVAL", "syntax error here", "0"],
        &[
            "EVAL",
            "return {KEYS[1], KEYS[2], ARGV[1], #ARGV}",
            "2",
            "{k}a",
            "{k}b",
            "x",
            "y",
        ],
        &["EVAL", "return tonumber(ARGV[1]) + 1", "0", "5"],
        &["EVAL", "local t = {} t[1]=1 t[3]=3 return t", "0"],
        &["EVAL", "return redis.call('hgetall','nohash')", "0"],
        &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
        &["SCRIPT", "LOAD", "return 'loaded'"],
        &["EVALSHA", "b534286061d4b9e4026607613b95c06c06015ae8", "0"],
        &["EVALSHA", "B534286061D4B9E4026607613B95C06C06015AE8", "0"],
        &[
            "SCRIPT",
            "EXISTS",
            "b534286061d4b9e4026607613b95c06c06015ae8",
            "ffff",
        ],
        &["SCRIPT", "FLUSH"],
        &[
            "SCRIPT",
            "EXISTS",
            "b534286061d4b9e4026607613b95c06c06015ae8",
        ],
        &["SCRIPT", "KILL"],
        &["SCRIPT", "FOO"],
        &["EVAL_RO", "return redis.call('set','a','1')", "0"],
        &["EVAL_RO", "return redis.call('get','s')", "0"],
        // A script inside a transaction.
        &["MULTI"],
        &["EVAL", "return redis.call('incr', KEYS[1])", "1", "{t}n"],
        &["INCR", "{t}n"],
        &["EXEC"],
    ]);
}

#[test]
fn blocking_pops_that_need_not_wait_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["BLPOP", "{b}l", "0.01"],
        &["BLMOVE", "{b}l", "{b}m", "LEFT", "LEFT", "0.01"],
        &["BRPOPLPUSH", "{b}l", "{b}m", "0.01"],
        &["BZPOPMIN", "{b}z", "0.01"],
        &["BLMPOP", "0.01", "1", "{b}l", "LEFT"],
        &["BLPOP", "{b}l", "-1"],
        &["BLPOP", "{b}l", "x"],
        &["BLPOP", "{b}l", "1e300"],
        &["RPUSH", "{b}l", "1", "2", "3", "4", "5"],
        &["BLPOP", "{b}none", "{b}l", "0"],
        &["BRPOP", "{b}l", "0"],
        &["BLMOVE", "{b}l", "{b}m", "LEFT", "RIGHT", "0"],
        &["BRPOPLPUSH", "{b}l", "{b}m", "0"],
        &["LRANGE", "{b}m", "0", "-1"],
        &["BLMPOP", "0", "2", "{b}none", "{b}m", "RIGHT", "COUNT", "5"],
        &["BLMPOP", "0", "1", "{b}l"],
        &["BLMPOP", "0", "0", "{b}l", "LEFT"],
        &["BLMPOP", "0", "1", "{b}l", "UP"],
        &["ZADD", "{b}z", "1", "m", "2", "n", "3", "o"],
        &["BZPOPMIN", "{b}z", "0"],
        &["BZPOPMAX", "{b}none", "{b}z", "0"],
        &["ZADD", "{b}z", "4", "p", "5", "q", "6", "r"],
        &["BZMPOP", "0", "2", "{b}none", "{b}z", "MAX", "COUNT", "2"],
        &["BZMPOP", "0", "1", "{b}z", "MIN"],
        &["BZMPOP", "0.01", "1", "{b}none", "MIN"],
        &["BZMPOP", "0", "1", "{b}z"],
        &["BZMPOP", "0", "0", "{b}z", "MIN"],
        &["BZMPOP", "0", "1", "{b}z", "UP"],
        &["BZMPOP", "-1", "1", "{b}z", "MIN"],
        &["BZMPOP", "0", "1", "{b}z", "MIN", "COUNT", "0"],
        &["SET", "{b}s", "x"],
        &["BLPOP", "{b}s", "0"],
        &["BZPOPMIN", "{b}s", "0"],
        &["BZMPOP", "0", "1", "{b}s", "MIN"],
        &["BLMOVE", "{b}s", "{b}m", "LEFT", "LEFT", "0"],
        // Inside MULTI and scripts they answer at once.
        &["MULTI"],
        &["BLPOP", "{b}empty", "0"],
        &["BZPOPMIN", "{b}empty", "0"],
        &["BZMPOP", "0", "1", "{b}empty", "MAX"],
        &["EXEC"],
        &[
            "EVAL",
            "return redis.call('blpop', KEYS[1], 0)",
            "1",
            "{b}empty",
        ],
    ]);
    p.node.cmd(&["HELLO", "3"]);
    p.redis.cmd(&["HELLO", "3"]);
    p.script(&[
        &["BLPOP", "{b}l", "0.01"],
        &["ZADD", "{b}z", "1.5", "m"],
        &["BZPOPMIN", "{b}z", "0"],
        &["ZADD", "{b}z", "1.5", "m", "2.5", "n"],
        &["BZMPOP", "0", "1", "{b}z", "MAX", "COUNT", "5"],
    ]);
}

#[test]
fn pubsub_confirmations_messages_and_introspection_match_redis() {
    let mut p = Pair::start();
    let (mut node_pub, mut redis_pub) = p.connect_more();
    // Each command's replies: one per channel for (un)subscriptions.
    let both = |p: &mut Pair, args: &[&str], replies: usize| {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        p.node.send(&bytes);
        p.redis.send(&bytes);
        for _ in 0..replies {
            let ours = p.node.next_reply().expect("node reply");
            let theirs = p.redis.next_reply().expect("redis reply");
            assert_eq!(ours, theirs, "{args:?}");
        }
    };
    both(&mut p, &["UNSUBSCRIBE"], 1);
    both(&mut p, &["SUBSCRIBE", "ch1", "ch2"], 2);
    both(&mut p, &["PSUBSCRIBE", "c*", "x?"], 2);
    both(&mut p, &["SUBSCRIBE", "ch1"], 1);
    both(&mut p, &["GET", "k"], 1);
    both(&mut p, &["PING"], 1);
    both(&mut p, &["PING", "hi"], 1);
    for args in [
        &["PUBLISH", "ch1", "m1"][..],
        &["PUBLISH", "xy", "m2"],
        &["PUBLISH", "nobody", "m3"],
        &["PUBSUB", "CHANNELS"],
        &["PUBSUB", "CHANNELS", "*2"],
        &["PUBSUB", "NUMSUB", "ch1", "nobody"],
        &["PUBSUB", "NUMPAT"],
        &["PUBSUB", "FOO"],
        &["SPUBLISH", "ch1", "m4"],
    ] {
        let (mut ours, mut theirs) = (node_pub.cmd(args), redis_pub.cmd(args));
        // Channel lists come in hash-table order: compare them sorted.
        for f in [&mut ours, &mut theirs] {
            if let (Frame::Array(items), "CHANNELS") = (f, args.get(1).copied().unwrap_or("")) {
                items.sort_by_key(|i| format!("{i:?}"));
            }
        }
        assert_eq!(ours, theirs, "{args:?}");
    }
    // The subscriber got: ch1 (message + pmessage c*), xy (pmessage x?).
    for _ in 0..3 {
        let ours = p.node.next_reply().expect("a message");
        let theirs = p.redis.next_reply().expect("a message");
        assert_eq!(ours, theirs, "a delivered message");
    }
    both(&mut p, &["UNSUBSCRIBE", "ch1"], 1);
    both(&mut p, &["PUNSUBSCRIBE", "x?", "c*"], 2);
    both(&mut p, &["UNSUBSCRIBE"], 1);
    both(&mut p, &["GET", "k"], 1);
    both(&mut p, &["SSUBSCRIBE", "{s}a", "{s}b"], 2);
    let (ours, theirs) = (
        node_pub.cmd(&["SPUBLISH", "{s}a", "x"]),
        redis_pub.cmd(&["SPUBLISH", "{s}a", "x"]),
    );
    assert_eq!(ours, theirs);
    both(&mut p, &["PING"], 2);
    both(&mut p, &["SUNSUBSCRIBE", "{s}b", "{s}a"], 2);
    both(&mut p, &["SUNSUBSCRIBE"], 1);
}

#[test]
fn shard_channels_follow_the_slot_rules() {
    let mut p = Pair::start();
    let e = p.node.cmd(&["SSUBSCRIBE", "a", "b"]);
    assert_eq!(
        e,
        tessera::node::resp::Frame::Error(
            "CROSSSLOT Keys in request don't hash to the same slot".into()
        )
    );
    // A client that leaves drops its subscriptions.
    let (mut sub, _) = p.connect_more();
    sub.cmd(&["SUBSCRIBE", "gone"]);
    drop(sub);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while p.node.cmd(&["PUBSUB", "NUMSUB", "gone"])
        != Frame::Array(vec![Frame::Bulk(b"gone".to_vec()), Frame::Integer(0)])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection kept its subscription"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        p.node.cmd(&["PUBLISH", "gone", "x"]),
        tessera::node::resp::Frame::Integer(0)
    );
}

#[test]
fn config_set_of_application_parameters_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &["CONFIG", "SET", "notify-keyspace-events", "Exg"],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &["CONFIG", "SET", "notify-keyspace-events", "nmdtezxhsl$gKE"],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &["CONFIG", "SET", "notify-keyspace-events", "Q"],
        &["CONFIG", "SET", "notify-keyspace-events", ""],
        &["CONFIG", "GET", "notify-keyspace-events"],
        &["CONFIG", "SET", "hash-max-ziplist-entries", "256"],
        &["CONFIG", "GET", "hash-max-listpack-entries"],
        &["CONFIG", "SET", "hash-max-listpack-entries", "abc"],
        &["CONFIG", "SET", "hash-max-listpack-entries", "-1"],
        &["CONFIG", "SET", "foo", "bar"],
        &[
            "CONFIG",
            "SET",
            "hash-max-listpack-entries",
            "1",
            "set-max-intset-entries",
            "2",
        ],
        &["CONFIG", "GET", "set-max-intset-entries"],
        &["CONFIG", "GET", "hash-max-ziplist-entries"],
        &["CONFIG", "SET", "hash-max-listpack-entries"],
        &["CONFIG", "SET", "list-max-listpack-size", "-3"],
        &["CONFIG", "GET", "list-max-ziplist-size"],
        &[
            "CONFIG",
            "SET",
            "zset-max-listpack-entries",
            "1",
            "zset-max-listpack-entries",
            "2",
        ],
        &["CONFIG", "GET", "zset-max-listpack-entries"],
        &["CONFIG", "GET", "stream-node-max-entries"],
    ]);
}

#[test]
fn client_list_and_kill_see_every_connection() {
    let mut p = Pair::start();
    let (mut other, _) = p.connect_more();
    other.cmd(&["CLIENT", "SETNAME", "worker"]);
    let Frame::Integer(other_id) = other.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID");
    };
    let list = match p.node.cmd(&["CLIENT", "LIST"]) {
        Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        f => panic!("CLIENT LIST: {f:?}"),
    };
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("id={other_id} ")) && l.contains(" name=worker ")),
        "{list}"
    );
    assert_eq!(list.lines().count(), 2, "{list}");
    let one = match p.node.cmd(&["CLIENT", "LIST", "ID", &other_id.to_string()]) {
        Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        f => panic!("CLIENT LIST ID: {f:?}"),
    };
    assert_eq!(one.lines().count(), 1);
    p.same(&["CLIENT", "NO-EVICT", "on"]);
    p.same(&["CLIENT", "NO-EVICT", "maybe"]);
    p.same(&["CLIENT", "KILL", "1.2.3.4:5"]);
    p.same(&["CLIENT", "KILL", "ID", "999999"]);
    assert_eq!(
        p.node.cmd(&["CLIENT", "KILL", "ID", &other_id.to_string()]),
        Frame::Integer(1)
    );
    assert!(other.closed(), "the killed client's connection is closed");
    // SKIPME no: a client may kill itself, after its reply.
    let Frame::Integer(me) = p.node.cmd(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID");
    };
    let me = me.to_string();
    assert_eq!(
        p.node.cmd(&["CLIENT", "KILL", "ID", &me, "SKIPME", "no"]),
        Frame::Integer(1)
    );
    assert!(p.node.closed());
}

/// As in Redis: once SCRIPT KILL is asked, every instruction fails, so a
/// script that catches errors with `pcall` in a loop is still stopped.
#[test]
fn script_kill_stops_a_script_that_catches_errors_with_pcall() {
    let mut p = Pair::start();
    let (mut runner, _) = p.connect_more();
    runner.send(&[
        b"EVAL",
        b"while true do pcall(function() while true do end end) end",
        b"0",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        matches!(p.node.cmd(&["PING"]), Frame::Error(e) if e.starts_with("BUSY")),
        "the script runs past the time limit"
    );
    assert_eq!(p.node.cmd(&["SCRIPT", "KILL"]), Frame::Simple("OK".into()));
    match runner.next_reply().expect("the script's reply") {
        Frame::Error(e) => assert!(e.contains("Script killed by user with SCRIPT KILL"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.node.cmd(&["PING"]), Frame::Simple("PONG".into()));
    // The next script runs normally (the hook is back to its interval).
    assert_eq!(
        runner.cmd(&[
            "EVAL",
            "local n = 0 for i = 1, 300000 do n = n + 1 end return n",
            "0"
        ]),
        Frame::Integer(300_000)
    );
}

#[test]
fn a_script_past_the_time_limit_answers_busy_and_script_kill_stops_it() {
    let mut p = Pair::start();
    let (mut runner, _) = p.connect_more();
    let looping = |c: &mut super::raw::Raw, script: &str| {
        c.send(&[b"EVAL", script.as_bytes(), b"0"]);
    };
    looping(&mut runner, "local i = 0 while true do i = i + 1 end");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let busy = p.node.cmd(&["PING"]);
    assert_eq!(
        busy,
        Frame::Error(
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
                .into()
        )
    );
    assert!(
        started.elapsed() > std::time::Duration::from_secs(3),
        "BUSY only past lua-time-limit"
    );
    assert_eq!(p.node.cmd(&["SCRIPT", "KILL"]), Frame::Simple("OK".into()));
    match runner.next_reply().expect("the script's reply") {
        Frame::Error(e) => assert!(e.contains("Script killed by user with SCRIPT KILL"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.node.cmd(&["PING"]), Frame::Simple("PONG".into()));
    // A script that wrote cannot be killed.
    looping(&mut runner, "redis.call('SET', 'w', '1') while true do end");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        matches!(p.node.cmd(&["SCRIPT", "KILL"]), Frame::Error(e) if e.starts_with("UNKILLABLE"))
    );
}
