//! Redis 7 functions compared with a real redis-server: FUNCTION LOAD's
//! metadata, registration and compile errors, FCALL/FCALL_RO and their
//! errors (with the function's line), FUNCTION LIST/DELETE/FLUSH/STATS.

use super::differential::Pair;

const LIB: &str = "#!lua name=lib1
redis.register_function('echo', function(keys, args) return {keys[1], args[1]} end)
redis.register_function{function_name='ro', callback=function(keys, args)
  return redis.call('SET', keys[1], args[1])
end, flags={'no-writes'}, description='tries to write'}
redis.register_function('incr', function(keys, args)
  local n = redis.call('INCR', keys[1])
  return n * 2
end)
redis.register_function('globals', function(keys, args) return KEYS end)
redis.register_function{function_name='boom', callback=function() error('boom') end,
  flags={'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys'}}
redis.register_function('again', function() return redis.register_function('x', function() end) end)";

#[test]
fn function_load_fcall_and_their_errors_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["FUNCTION", "LOAD", LIB],
        &["FUNCTION", "LOAD", LIB],
        &["FCALL", "echo", "1", "{f}k", "a"],
        &["FCALL", "ro", "1", "{f}k", "a"],
        &["FCALL", "incr", "1", "{f}n"],
        &["FCALL", "incr", "1", "{f}n"],
        &["FCALL", "globals", "0"],
        &["FCALL", "boom", "0"],
        &["FCALL", "again", "0"],
        &["FCALL", "nope", "0"],
        &["FCALL", "echo", "-1"],
        &["FCALL", "echo", "5", "a"],
        &["FCALL", "echo", "abc"],
        &["FCALL"],
        &["FCALL_RO", "echo", "0"],
        &["FCALL_RO", "ro", "1", "{f}k", "v"],
        &["FCALL_RO", "nope", "0"],
        // Transactions run functions too.
        &["MULTI"],
        &["FCALL", "incr", "1", "{f}n"],
        &["FCALL", "echo", "1", "{f}k", "b"],
        &["EXEC"],
        &["FUNCTION", "LIST", "LIBRARYNAME", "nomatch*"],
        &["FUNCTION", "LIST", "foo"],
        &["FUNCTION", "LIST", "LIBRARYNAME"],
        &["FUNCTION", "LIST", "WITHCODE", "WITHCODE"],
        &["FUNCTION", "DELETE", "nope"],
        &["FUNCTION", "DELETE"],
        &["FUNCTION", "FLUSH", "foo"],
        &["FUNCTION", "KILL"],
        &["FUNCTION", "STATS"],
        &["FUNCTION", "FOO"],
        &["FUNCTION", "LOAD"],
        &["FUNCTION", "LOAD", "REPLACE"],
        &["FUNCTION", "LOAD", "FOO", "x"],
        &["FUNCTION", "FLUSH", "ASYNC"],
        &["FCALL", "echo", "0"],
        &["FUNCTION", "STATS"],
    ]);
}

#[test]
fn function_library_metadata_and_registration_errors_match_redis() {
    let mut p = Pair::start();
    let codes = [
        "#!lua name=lib1\nredis.register_function('f1', function() return 1 end)",
        "#!lua name=lib1\nredis.register_function('f1', function() return 1 end)",
        "#!lua name=lib2\nredis.register_function('f1', function() return 1 end)",
        "#!lua name=lib2\nlocal x = 1",
        "#!lua name=lib2\nredis.call('GET', 'x')",
        "#!lua name=lib2\nthis is bad",
        "#!lua name=lib2\nerror('boom')",
        "#!lua name=lib2\nx = 5",
        "#!lua name=lib2\nredis.register_function('f-x', function() return 1 end)",
        "#!lua name=lib2\nredis.register_function('g', function() end)\nredis.register_function('g', function() end)",
        "#!lua name=lib2\nredis.register_function('g')",
        "#!lua name=lib2\nredis.register_function('g', 5)",
        "#!lua name=lib2\nredis.register_function{function_name='g', callback=function() end, flags={'bad'}}",
        "#!lua name=lib2\nredis.register_function{function_name='g', callback=function() end, flags='x'}",
        "#!lua name=lib2\nredis.register_function{function_name='g', callback=function() end, foo=1}",
        "#!lua name=lib2\nredis.register_function{callback=function() end}",
        "#!lua name=lib2\nredis.register_function{function_name='g'}",
        "#!lua name=lib2\nredis.register_function()",
        "#!lua name=lib2\nredis.register_function(1, 2, 3)",
        "#!lua name=lib2",
        "#!lua\nx",
        "#!lua name=a name=b\nx",
        "#!lua foo=a\nx",
        "#!js name=a\nx",
        "#!lua name=a-b\nx",
        "lua name=a\nx",
        "#!LUA NAME=up\nredis.register_function('up1', function() return 1 end)",
        "#!lua name=lib3\nredis.register_function{function_name='h', callback=function() end, description=5}",
        // Only `redis` (no libraries) while the code loads.
        "#!lua name=lib4\nlocal s = string.format('%d', 5)\nredis.register_function('s', function() end)",
        "#!lua name=lib4\nredis.log(redis.LOG_NOTICE, redis.REDIS_VERSION)\nredis.register_function(7, function(k, a) return math.floor(3.7) + #k end)",
    ];
    for code in codes {
        p.same(&["FUNCTION", "LOAD", code]);
    }
    p.script(&[
        &["FCALL", "7", "2", "{a}1", "{a}2"],
        &["FCALL", "up1", "0"],
        &[
            "FUNCTION",
            "LOAD",
            "REPLACE",
            "#!lua name=lib4\nredis.register_function('h2', function() return 2 end)",
        ],
        &["FCALL", "7", "0"],
        &["FCALL", "h2", "0"],
        // One library of one function each: FUNCTION LIST's order of
        // libraries and functions is Redis' hash order.
        &["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "lib4"],
        &["FUNCTION", "LIST", "LIBRARYNAME", "lib[3-3]"],
        &["FUNCTION", "DELETE", "lib4"],
        &["FCALL", "h2", "0"],
        &["FUNCTION", "STATS"],
    ]);
    // RESP3: maps, and the flags as a set. (HELLO's own reply differs.)
    p.node.cmd(&["HELLO", "3"]);
    p.redis.cmd(&["HELLO", "3"]);
    p.script(&[
        &["FUNCTION", "LIST", "LIBRARYNAME", "lib3"],
        &["FUNCTION", "STATS"],
    ]);
}

/// As Redis: while a function runs past the time limit, other clients get
/// BUSY naming FUNCTION KILL, SCRIPT KILL does not stop it, FUNCTION KILL
/// does.
#[test]
fn a_function_past_the_time_limit_is_stopped_by_function_kill_only() {
    use tessera::node::resp::Frame;
    let mut p = Pair::start();
    let lib = "#!lua name=spin\nredis.register_function('spin', function() local i = 0 while true do i = i + 1 end end)";
    p.same(&["FUNCTION", "LOAD", lib]);
    let (mut runner, _) = p.connect_more();
    runner.send(&[b"FCALL", b"spin", b"0"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = Frame::Error(
        "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
            .into(),
    );
    assert_eq!(p.node.cmd(&["PING"]), busy);
    assert_eq!(p.node.cmd(&["SCRIPT", "KILL"]), busy);
    assert_eq!(
        p.node.cmd(&["FUNCTION", "KILL"]),
        Frame::Simple("OK".into())
    );
    match runner.next_reply().expect("the function's reply") {
        Frame::Error(e) => assert!(e.contains("Script killed by user"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.node.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

/// Sends binary arguments (a payload) and returns the reply.
fn call_bin(c: &mut super::raw::Raw, args: &[&[u8]]) -> tessera::node::resp::Frame {
    c.send(args);
    c.next_reply().expect("a reply")
}

fn payload(f: tessera::node::resp::Frame) -> Vec<u8> {
    match f {
        tessera::node::resp::Frame::Bulk(b) => b,
        other => panic!("FUNCTION DUMP: {other:?}"),
    }
}

/// FUNCTION LIST WITHCODE with the libraries in name order (Redis lists
/// them in its table's order).
fn listing(c: &mut super::raw::Raw) -> tessera::node::resp::Frame {
    use tessera::node::resp::Frame;
    match c.cmd(&["FUNCTION", "LIST", "WITHCODE"]) {
        Frame::Array(mut libs) => {
            libs.sort_by_key(|l| format!("{l:?}"));
            Frame::Array(libs)
        }
        other => panic!("FUNCTION LIST: {other:?}"),
    }
}

/// A library long and repetitive enough that Redis LZF-compresses its code
/// in the payload.
fn long_lib() -> String {
    let mut code = String::from("#!lua name=long\n");
    for i in 0..40 {
        code.push_str(&format!(
            "-- padding line {i} padding padding padding padding\n"
        ));
    }
    code.push_str("redis.register_function('long_f', function(keys, args) return #args end)");
    code
}

const SMALL: &str =
    "#!lua name=small\nredis.register_function('small_f', function(keys, args) return args[1] end)";

#[test]
fn function_dump_payloads_restore_both_ways_between_node_and_redis() {
    use tessera::node::resp::Frame;
    let mut p = Pair::start();
    let long = long_lib();
    // Redis → node.
    p.redis.cmd(&["FUNCTION", "LOAD", &long]);
    p.redis.cmd(&["FUNCTION", "LOAD", SMALL]);
    let from_redis = payload(p.redis.cmd(&["FUNCTION", "DUMP"]));
    assert!(
        from_redis.len() < long.len(),
        "the payload holds the long library compressed"
    );
    assert_eq!(
        call_bin(&mut p.node, &[b"FUNCTION", b"RESTORE", &from_redis]),
        Frame::Simple("OK".into())
    );
    assert_eq!(listing(&mut p.node), listing(&mut p.redis));
    p.same(&["FCALL", "long_f", "0", "a", "b", "c"]);
    p.same(&["FCALL", "small_f", "0", "hi"]);

    // Node → redis: a fresh redis-server restores what the node dumped.
    let from_node = payload(p.node.cmd(&["FUNCTION", "DUMP"]));
    p.redis.cmd(&["FUNCTION", "FLUSH"]);
    assert_eq!(
        call_bin(&mut p.redis, &[b"FUNCTION", b"RESTORE", &from_node]),
        Frame::Simple("OK".into())
    );
    assert_eq!(listing(&mut p.redis), listing(&mut p.node));
    // A library Redis stores uncompressed: the node's payload is Redis'
    // byte for byte (the node never compresses; Redis reads both).
    p.same(&["FUNCTION", "FLUSH"]);
    p.same(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=mylib\nredis.register_function('f1', function(k,a) return 1 end)\n",
    ]);
    p.same(&["FUNCTION", "DUMP"]);
    p.same(&["FUNCTION", "FLUSH"]);
    p.same(&["FUNCTION", "DUMP"]);
}

#[test]
fn function_restore_policies_and_errors_match_redis() {
    use tessera::node::resp::Frame;
    let mut p = Pair::start();
    let long = long_lib();
    let clash = "#!lua name=clash\nredis.register_function('small_f', function() return 0 end)";
    let other = "#!lua name=other\nredis.register_function('other_f', function() return 0 end)";
    p.same(&["FUNCTION", "LOAD", &long]);
    p.same(&["FUNCTION", "LOAD", SMALL]);
    let both = payload(p.redis.cmd(&["FUNCTION", "DUMP"]));
    let mut bad_crc = both.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut runs: Vec<Vec<&[u8]>> = vec![
        // Every library exists: APPEND (the default) refuses.
        vec![b"FUNCTION", b"RESTORE", &both],
        vec![b"FUNCTION", b"RESTORE", &both, b"APPEND"],
        vec![b"FUNCTION", b"RESTORE", &both, b"replace"],
        vec![b"FUNCTION", b"RESTORE", &both, b"FLUSH"],
        vec![b"FUNCTION", b"RESTORE", &both, b"NOPE"],
        vec![b"FUNCTION", b"RESTORE", &both, b"FLUSH", b"x"],
        vec![b"FUNCTION", b"RESTORE", b"garbage"],
        vec![b"FUNCTION", b"RESTORE", b"garbage", b"NOPE"],
        vec![b"FUNCTION", b"RESTORE", &bad_crc],
        vec![b"FUNCTION", b"RESTORE"],
        vec![b"FUNCTION", b"DUMP", b"x"],
        vec![b"FUNCTION", b"HELP", b"x"],
    ];
    // With several libraries colliding, Redis names the first in its hash
    // table's order (seeded per process): any of them will do.
    let any_library = |f: Frame| match f {
        Frame::Error(e) if e.starts_with("ERR Library ") && e.ends_with(" already exists") => {
            Frame::Error("ERR Library <one of them> already exists".into())
        }
        other => other,
    };
    for args in runs.drain(..) {
        let ours = any_library(call_bin(&mut p.node, &args));
        let theirs = any_library(call_bin(&mut p.redis, &args));
        assert_eq!(
            ours,
            theirs,
            "{:?}",
            String::from_utf8_lossy(&args.concat())
        );
    }
    // A function held by another library: refused under every policy but
    // FLUSH, and nothing changes.
    p.same(&["FUNCTION", "FLUSH"]);
    p.same(&["FUNCTION", "LOAD", clash]);
    p.same(&["FUNCTION", "LOAD", other]);
    for policy in [&b"APPEND"[..], b"REPLACE", b"FLUSH"] {
        let args: [&[u8]; 4] = [b"FUNCTION", b"RESTORE", &both, policy];
        let ours = call_bin(&mut p.node, &args);
        assert_eq!(ours, call_bin(&mut p.redis, &args), "{policy:?}");
        assert_eq!(listing(&mut p.node), listing(&mut p.redis), "{policy:?}");
    }
    // HELP names every subcommand, as status lines.
    match p.node.cmd(&["FUNCTION", "HELP"]) {
        Frame::Array(lines) => {
            let text = format!("{lines:?}");
            for sub in [
                "LOAD", "DELETE", "LIST", "STATS", "KILL", "FLUSH", "DUMP", "RESTORE",
            ] {
                assert!(text.contains(sub), "FUNCTION HELP lacks {sub}: {text}");
            }
            assert!(lines.iter().all(|l| matches!(l, Frame::Simple(_))));
        }
        other => panic!("FUNCTION HELP: {other:?}"),
    }
}

/// Payloads Redis refuses for their content (valid version and CRC) are
/// refused by the node with the same error, and change nothing.
#[test]
fn function_restore_content_errors_match_redis() {
    use tessera::node::rdb::{crc64, RDB_VERSION};
    let seal = |body: &[u8]| {
        let mut p = body.to_vec();
        p.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = crc64(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    };
    let entry = |code: &str| {
        let mut e = vec![0xf5u8, 0x40 | (code.len() >> 8) as u8, code.len() as u8];
        e.extend_from_slice(code.as_bytes());
        e
    };
    let x1 = "#!lua name=x1\nredis.register_function('g', function() return 1 end)";
    let x2 = "#!lua name=x2\nredis.register_function('g', function() return 2 end)";
    let bad = "#!lua name=x3\nredis.register_function('h', function() return 1 end";
    let cases: Vec<Vec<u8>> = vec![
        seal(b"\x00\x01a"),
        seal(&[entry(x1), vec![0]].concat()),
        seal(&[entry(x1), vec![0xf5]].concat()),
        seal(b"\xf5\x08return 1"),
        seal(&[entry(x1), entry(x1)].concat()),
        seal(&[entry(x1), entry(x2)].concat()),
        seal(&[entry(x1), entry(bad)].concat()),
        seal(&entry(x1)),
        seal(&entry(x1)),
    ];
    let mut p = Pair::start();
    for c in &cases {
        let args: [&[u8]; 3] = [b"FUNCTION", b"RESTORE", c];
        let ours = call_bin(&mut p.node, &args);
        assert_eq!(
            ours,
            call_bin(&mut p.redis, &args),
            "{:?}",
            String::from_utf8_lossy(c)
        );
        assert_eq!(listing(&mut p.node), listing(&mut p.redis));
    }
}
