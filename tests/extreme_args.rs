//! Every command with extreme integer arguments (0, ±1, ±2^31, ±2^63,
//! overflowing and huge offsets) against a node whose address space is
//! capped (RLIMIT_AS): an allocation sized by a client's number would fail
//! and abort the process. Every call must get a reply and the node must
//! stay up.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::time::Duration;

use common::TestNode;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use raw::Raw;
use tessera::node::resp::Frame;

/// Address space of the node under test. It runs normally in well under
/// this (mimalloc's reservations, the runtime's threads, the log); a reply
/// or buffer sized by a client's count (2^63 elements) would not fit.
const AS_LIMIT: u64 = 2 * 1024 * 1024 * 1024;
/// A small per-command reply cap keeps the huge-count cases quick in a
/// debug build; the default's bound is the same code path.
const MAX_REPLY: &str = "4194304";

const EXTREMES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "-2",
    "16383",
    "16384",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "99999999999999999999999999",
];

/// One key of each type, in one slot so multi-key commands may run.
const KEYS: &[&str] = &[
    "{x}str",
    "{x}num",
    "{x}list",
    "{x}set",
    "{x}hash",
    "{x}zset",
    "{x}stream",
    "{x}none",
];

/// Commands not run with generated arguments: they end the connection or
/// the node, block until a timeout (WAIT and the blocking pops: covered by
/// the templates with short timeouts), change what the connection
/// accepts (MULTI, the subscriptions), or answer once per argument (the
/// unsubscriptions).
const SKIP: &[&str] = &[
    "shutdown",
    "quit",
    "treplicate",
    "wait",
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "multi",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
];

/// Requests with integer options the generic arguments never reach; `N`
/// is replaced by an extreme value.
const TEMPLATES: &[&[&str]] = &[
    &["SRANDMEMBER", "{x}set", "N"],
    &["SPOP", "{x}set", "N"],
    &["LPOP", "{x}list", "N"],
    &["RPOP", "{x}list", "N"],
    &["LRANGE", "{x}list", "N", "N"],
    &["LTRIM", "{x}list", "N", "N"],
    &["LINDEX", "{x}list", "N"],
    &["LSET", "{x}list", "N", "v"],
    &["LREM", "{x}list", "N", "a"],
    &["ZRANGE", "{x}zset", "N", "N"],
    &["ZRANGE", "{x}zset", "N", "N", "REV", "WITHSCORES"],
    &[
        "ZRANGE", "{x}zset", "-inf", "+inf", "BYSCORE", "LIMIT", "N", "N",
    ],
    &["ZRANGE", "{x}zset", "-", "+", "BYLEX", "LIMIT", "N", "N"],
    &[
        "ZRANGEBYSCORE",
        "{x}zset",
        "-inf",
        "+inf",
        "LIMIT",
        "N",
        "N",
    ],
    &[
        "ZREVRANGEBYSCORE",
        "{x}zset",
        "+inf",
        "-inf",
        "LIMIT",
        "N",
        "N",
    ],
    &["ZREVRANGE", "{x}zset", "N", "N"],
    &["ZPOPMIN", "{x}zset", "N"],
    &["ZPOPMAX", "{x}zset", "N"],
    &["ZADD", "{x}zset", "N", "m"],
    &["ZINCRBY", "{x}zset", "N", "a"],
    &["ZCOUNT", "{x}zset", "N", "N"],
    &["XRANGE", "{x}stream", "-", "+", "COUNT", "N"],
    &["XREVRANGE", "{x}stream", "+", "-", "COUNT", "N"],
    &["XADD", "{x}stream", "MAXLEN", "N", "*", "f", "v"],
    &[
        "XADD",
        "{x}stream",
        "MAXLEN",
        "~",
        "N",
        "LIMIT",
        "N",
        "*",
        "f",
        "v",
    ],
    &["XTRIM", "{x}stream", "MAXLEN", "N"],
    &["XADD", "{x}stream", "N", "f", "v"],
    &["XRANGE", "{x}stream", "N", "N"],
    &["SCAN", "N", "COUNT", "N"],
    &["SCAN", "0", "COUNT", "N", "MATCH", "*"],
    &["SET", "{x}str", "v", "EX", "N"],
    &["SET", "{x}str", "v", "PX", "N"],
    &["SET", "{x}str", "v", "EXAT", "N"],
    &["SET", "{x}str", "v", "PXAT", "N"],
    &["SETEX", "{x}str", "N", "v"],
    &["PSETEX", "{x}str", "N", "v"],
    &["EXPIRE", "{x}str", "N"],
    &["PEXPIRE", "{x}str", "N"],
    &["EXPIREAT", "{x}str", "N"],
    &["PEXPIREAT", "{x}str", "N"],
    &["INCRBY", "{x}num", "N"],
    &["DECRBY", "{x}num", "N"],
    &["HINCRBY", "{x}hash", "n", "N"],
    &["HINCRBYFLOAT", "{x}hash", "n", "N"],
    &["CLUSTER", "GETKEYSINSLOT", "N", "N"],
    &["CLUSTER", "COUNTKEYSINSLOT", "N"],
    &["WAIT", "0", "N"],
    &["WAIT", "N", "1"],
    &["SELECT", "N"],
    &["HELLO", "N"],
    &["GETRANGE", "{x}str", "N", "N"],
    &["SETRANGE", "{x}str", "N", "v"],
    &["SETBIT", "{x}str", "N", "1"],
    &["GETBIT", "{x}str", "N"],
    &["BITCOUNT", "{x}str", "N", "N", "BIT"],
    &["BITPOS", "{x}str", "0", "N", "N", "BIT"],
    &["BITPOS", "{x}str", "1", "N"],
    &["GETEX", "{x}str", "EX", "N"],
    &["GETEX", "{x}str", "PXAT", "N"],
    &["INCRBYFLOAT", "{x}num", "N"],
    &[
        "LPOS", "{x}list", "a", "RANK", "N", "COUNT", "N", "MAXLEN", "N",
    ],
    &["LINSERT", "{x}list", "BEFORE", "a", "N"],
    &["LMPOP", "N", "{x}list", "LEFT", "COUNT", "N"],
    &["HSCAN", "{x}hash", "N", "COUNT", "N"],
    &["SSCAN", "{x}set", "N", "COUNT", "N"],
    &["ZSCAN", "{x}zset", "N", "COUNT", "N"],
    &["HRANDFIELD", "{x}hash", "N", "WITHVALUES"],
    &["ZRANDMEMBER", "{x}zset", "N", "WITHSCORES"],
    &["ZREMRANGEBYRANK", "{x}zset", "N", "N"],
    &["ZREMRANGEBYSCORE", "{x}zset", "N", "N"],
    &["COPY", "{x}str", "{x}copy", "DB", "N"],
    &["EVAL", "return #KEYS", "N", "{x}a", "{x}b"],
    &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "N"],
    &[
        "EVAL",
        "return redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])",
        "1",
        "{x}list",
        "N",
        "N",
    ],
    &[
        "EVAL",
        "return redis.call('SRANDMEMBER', KEYS[1], ARGV[1])",
        "1",
        "{x}set",
        "N",
    ],
    &["BLMPOP", "0.001", "N", "{x}list", "LEFT", "COUNT", "N"],
    &["BLPOP", "{x}none", "0.001"],
    &["BZPOPMIN", "{x}none", "0.001"],
    &["BLMOVE", "{x}none", "{x}list", "LEFT", "RIGHT", "0.001"],
    &["CLIENT", "LIST", "ID", "N"],
    &["CLIENT", "KILL", "ID", "N"],
    &["CONFIG", "SET", "hash-max-listpack-entries", "N"],
    &["CONFIG", "SET", "list-max-listpack-size", "N"],
    &["PUBSUB", "NUMSUB", "N"],
    &["PUBLISH", "N", "N"],
];

fn connect(node: &TestNode) -> Raw {
    Raw::connect(node, Duration::from_secs(60))
}

/// One command's reply, or why none came, as text.
fn call(c: &mut Raw, args: &[&str]) -> Result<Frame, String> {
    c.call(args)
        .map_err(|e| format!("{args:?}: no reply: {e:?}"))
}

/// (Re)creates one key of every type.
fn seed(c: &mut Raw) -> Result<(), String> {
    call(
        c,
        &[
            "DEL",
            "{x}str",
            "{x}num",
            "{x}list",
            "{x}set",
            "{x}hash",
            "{x}zset",
            "{x}stream",
        ],
    )?;
    for args in [
        &["SET", "{x}str", "hello"][..],
        &["SET", "{x}num", "10"],
        &["RPUSH", "{x}list", "a", "b", "a", "c"],
        &["SADD", "{x}set", "a", "b", "c"],
        &["HSET", "{x}hash", "f", "v", "n", "1"],
        &["ZADD", "{x}zset", "1", "a", "2", "b", "3", "c"],
        &["XADD", "{x}stream", "1-1", "f", "v"],
        &["XADD", "{x}stream", "2-1", "f", "v"],
    ] {
        if let Frame::Error(e) = call(c, args)? {
            return Err(format!("seeding {args:?}: {e}"));
        }
    }
    Ok(())
}

/// Name, arity, first key, last key, step and whether it writes, from
/// COMMAND.
struct Spec {
    name: String,
    arity: i64,
    first: i64,
    last: i64,
    step: i64,
    write: bool,
}

fn specs(c: &mut Raw) -> Vec<Spec> {
    let Ok(Frame::Array(entries)) = call(c, &["COMMAND"]) else {
        panic!("COMMAND answers an array");
    };
    entries
        .into_iter()
        .map(|e| match e {
            Frame::Array(f) => {
                let int = |i: usize| match f[i] {
                    Frame::Integer(n) => n,
                    ref other => panic!("COMMAND field {i}: {other:?}"),
                };
                let name = match &f[0] {
                    Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("COMMAND name: {other:?}"),
                };
                let write = matches!(&f[2], Frame::Array(flags)
                    if flags.contains(&Frame::Simple("write".into())));
                Spec {
                    write,
                    name,
                    arity: int(1),
                    first: int(3),
                    last: int(4),
                    step: int(5),
                }
            }
            other => panic!("COMMAND entry: {other:?}"),
        })
        .collect()
}

/// Arguments for `spec` with `argc` arguments (name included): keys at key
/// positions, extreme values elsewhere.
fn generic_args(spec: &Spec, argc: usize, key: &str, values: &[&str]) -> Vec<String> {
    let last = if spec.last < 0 {
        argc as i64 + spec.last
    } else {
        spec.last
    };
    let is_key = |i: usize| {
        let i = i as i64;
        spec.first > 0 && i >= spec.first && i <= last && (i - spec.first) % spec.step.max(1) == 0
    };
    let mut args = vec![spec.name.clone()];
    for i in 1..argc {
        if is_key(i) {
            args.push(key.to_string());
        } else {
            args.push(values[i % values.len()].to_string());
        }
    }
    args
}

fn fill(template: &[&str], values: &[&str]) -> Vec<String> {
    let mut next = 0;
    template
        .iter()
        .map(|a| {
            if *a == "N" {
                next += 1;
                values[(next - 1) % values.len()].to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

/// Runs one request, re-seeding the fixtures afterwards when it may have
/// changed them.
fn run(c: &mut Raw, args: &[String], writes: bool) -> Result<(), String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    call(c, &refs)?;
    if writes {
        seed(c)?;
    }
    Ok(())
}

fn start() -> TestNode {
    TestNode::start_capped(&["--max-reply-bytes", MAX_REPLY], AS_LIMIT)
}

fn assert_up(n: &mut TestNode, c: &mut Raw) {
    assert!(n.alive(), "the node died");
    assert_eq!(call(c, &["PING"]), Ok(Frame::Simple("PONG".into())));
}

#[test]
fn every_command_answers_extreme_integers_under_a_capped_address_space() {
    let mut n = start();
    let mut c = connect(&n);
    seed(&mut c).expect("seed the fixtures");
    let specs = specs(&mut c);
    assert!(specs.len() > 80, "COMMAND lists every command");
    let mut calls = 0;
    for spec in specs.iter().filter(|s| !SKIP.contains(&s.name.as_str())) {
        let min = spec.arity.unsigned_abs() as usize;
        let argcs: Vec<usize> = if spec.arity > 0 {
            vec![min]
        } else {
            (min..min + 3).collect()
        };
        for argc in argcs {
            for key in KEYS {
                for (i, _) in EXTREMES.iter().enumerate() {
                    let values: Vec<&str> = EXTREMES[i..]
                        .iter()
                        .chain(&EXTREMES[..i])
                        .copied()
                        .collect();
                    let args = generic_args(spec, argc, key, &values);
                    if let Err(e) = run(&mut c, &args, spec.write) {
                        panic!("{e} (node alive: {})", n.alive());
                    }
                    calls += 1;
                }
            }
        }
    }
    for template in TEMPLATES {
        for v in EXTREMES {
            let args = fill(template, &[v]);
            if let Err(e) = run(&mut c, &args, true) {
                panic!("{e} (node alive: {})", n.alive());
            }
            calls += 1;
        }
    }
    assert!(calls > 10_000, "{calls} calls");
    assert_up(&mut n, &mut c);
}

#[test]
fn random_mixes_of_extreme_arguments_never_stop_the_node() {
    let mut n = start();
    let c = std::cell::RefCell::new(connect(&n));
    seed(&mut c.borrow_mut()).expect("seed the fixtures");
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..TEMPLATES.len(),
        proptest::collection::vec(proptest::sample::select(EXTREMES), 1..4),
    );
    let result = runner.run(&strategy, |(t, values)| {
        let args = fill(TEMPLATES[t], &values);
        let res = run(&mut c.borrow_mut(), &args, true);
        prop_assert!(res.is_ok(), "{:?}", res);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e} (node alive: {})", n.alive());
    }
    assert_up(&mut n, &mut c.borrow_mut());
}
