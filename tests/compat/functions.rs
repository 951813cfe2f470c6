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
