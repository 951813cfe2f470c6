//! DUMP and RESTORE between the node and a real redis-server, both ways,
//! for every type and the encodings Redis 7.0 writes (integers, LZF
//! strings, listpacks, intsets, quicklists, big hash tables and skiplists).

use super::differential::Pair;
use super::raw::Raw;
use tessera::node::resp::Frame;

fn call(c: &mut Raw, args: &[&[u8]]) -> Frame {
    c.send(args);
    c.next_reply().expect("a reply")
}

fn bulk(f: Frame) -> Vec<u8> {
    match f {
        Frame::Bulk(b) => b,
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// A key's contents in a comparable form (members sorted where the order
/// is the table's).
fn contents(c: &mut Raw, key: &str) -> Frame {
    let ty = match c.cmd(&["TYPE", key]) {
        Frame::Simple(t) => t,
        other => panic!("TYPE: {other:?}"),
    };
    let mut f = match ty.as_str() {
        "string" => c.cmd(&["GET", key]),
        "list" => c.cmd(&["LRANGE", key, "0", "-1"]),
        "set" => c.cmd(&["SMEMBERS", key]),
        "hash" => c.cmd(&["HGETALL", key]),
        "zset" => c.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        other => panic!("unexpected type {other} of {key}"),
    };
    if let Frame::Array(items) = &mut f {
        match ty.as_str() {
            "set" => items.sort_by_key(|i| format!("{i:?}")),
            "hash" => {
                let mut pairs: Vec<_> = items.chunks(2).map(|c| c.to_vec()).collect();
                pairs.sort_by_key(|p| format!("{p:?}"));
                *items = pairs.concat();
            }
            _ => {}
        }
    }
    f
}

/// Builds the same keys on both servers: every type, small and big.
fn fill(p: &mut Pair) {
    let many = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    let mut script: Vec<Vec<String>> = vec![
        vec!["SET".into(), "int".into(), "12345".into()],
        vec!["SET".into(), "neg".into(), "-7".into()],
        vec!["SET".into(), "text".into(), "hello".into()],
        vec!["SET".into(), "lzf".into(), "abcdefgh".repeat(200)],
        vec!["SET".into(), "empty".into(), String::new()],
        vec![
            "RPUSH".into(),
            "list".into(),
            "a".into(),
            "1".into(),
            "-300".into(),
            "70000".into(),
        ],
        vec![
            "SADD".into(),
            "intset".into(),
            "1".into(),
            "-2".into(),
            "300000".into(),
        ],
        vec!["SADD".into(), "strset".into(), "a".into(), "b".into()],
        vec![
            "HSET".into(),
            "hash".into(),
            "f".into(),
            "v".into(),
            "n".into(),
            "5".into(),
        ],
        vec![
            "ZADD".into(),
            "zset".into(),
            "1.5".into(),
            "a".into(),
            "-3".into(),
            "b".into(),
            "inf".into(),
            "c".into(),
        ],
    ];
    let mut big_list = vec!["RPUSH".to_string(), "biglist".into()];
    big_list.extend(many(&"x".repeat(100), 500));
    script.push(big_list);
    let mut big_set = vec!["SADD".to_string(), "bigset".into()];
    big_set.extend(many("m", 300));
    script.push(big_set);
    let mut big_hash = vec!["HSET".to_string(), "bighash".into()];
    for f in many("f", 300) {
        big_hash.push(f.clone());
        big_hash.push(format!("value of {f}"));
    }
    script.push(big_hash);
    let mut big_zset = vec!["ZADD".to_string(), "bigzset".into()];
    for (i, m) in many("z", 300).into_iter().enumerate() {
        big_zset.push(format!("{}", i as f64 / 7.0));
        big_zset.push(m);
    }
    script.push(big_zset);
    for args in &script {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        p.same(&a);
    }
}

const KEYS: &[&str] = &[
    "int", "neg", "text", "lzf", "empty", "list", "intset", "strset", "hash", "zset", "biglist",
    "bigset", "bighash", "bigzset",
];

#[test]
fn redis_dumps_restore_on_the_node_and_node_dumps_restore_on_redis() {
    let mut p = Pair::start();
    fill(&mut p);
    for key in KEYS {
        // Each server's copy is compared with that server's original (the
        // two print some scores differently: docs/node.md).
        let (ours_before, theirs_before) =
            (contents(&mut p.node, key), contents(&mut p.redis, key));
        // redis-server → node.
        let theirs = bulk(call(&mut p.redis, &[b"DUMP", key.as_bytes()]));
        let copy = format!("from-redis:{key}");
        let r = call(&mut p.node, &[b"RESTORE", copy.as_bytes(), b"0", &theirs]);
        assert_eq!(r, Frame::Simple("OK".into()), "RESTORE of redis' {key}");
        assert!(
            contents(&mut p.node, &copy) == ours_before,
            "{key} from redis-server differs"
        );
        // node → redis-server.
        let ours = bulk(call(&mut p.node, &[b"DUMP", key.as_bytes()]));
        let copy = format!("from-node:{key}");
        let r = call(&mut p.redis, &[b"RESTORE", copy.as_bytes(), b"0", &ours]);
        assert_eq!(
            r,
            Frame::Simple("OK".into()),
            "redis-server RESTOREs the node's {key}"
        );
        assert!(
            contents(&mut p.redis, &copy) == theirs_before,
            "{key} from the node differs"
        );
    }
}

#[test]
fn restore_options_ttls_and_errors_match_redis() {
    let mut p = Pair::start();
    p.same(&["SET", "k", "v"]);
    let payload = bulk(call(&mut p.redis, &[b"DUMP", b"k"]));
    let both = |p: &mut Pair, args: &[&[u8]]| -> Frame {
        let (a, b) = (call(&mut p.node, args), call(&mut p.redis, args));
        assert_eq!(
            a,
            b,
            "{:?}",
            args.iter()
                .map(|x| String::from_utf8_lossy(x))
                .collect::<Vec<_>>()
        );
        a
    };
    both(&mut p, &[b"RESTORE", b"k", b"0", &payload]);
    both(&mut p, &[b"RESTORE", b"k", b"0", &payload, b"REPLACE"]);
    both(&mut p, &[b"RESTORE", b"k2", b"-1", &payload]);
    both(&mut p, &[b"RESTORE", b"k2", b"x", &payload]);
    both(&mut p, &[b"RESTORE", b"k2", b"0", b"garbage"]);
    both(&mut p, &[b"RESTORE", b"k2", b"0", b"short"]);
    let mut flipped = payload.clone();
    flipped[1] ^= 1;
    both(&mut p, &[b"RESTORE", b"k2", b"0", &flipped]);
    both(&mut p, &[b"RESTORE", b"k2", b"0", &payload, b"FOO"]);
    both(
        &mut p,
        &[b"RESTORE", b"k2", b"0", &payload, b"IDLETIME", b"-1"],
    );
    both(
        &mut p,
        &[b"RESTORE", b"k2", b"0", &payload, b"FREQ", b"256"],
    );
    both(
        &mut p,
        &[
            b"RESTORE",
            b"k2",
            b"0",
            &payload,
            b"FREQ",
            b"5",
            b"IDLETIME",
            b"5",
        ],
    );
    both(
        &mut p,
        &[b"RESTORE", b"k3", b"0", &payload, b"IDLETIME", b"5"],
    );
    both(&mut p, &[b"RESTORE", b"k4", b"1", &payload, b"ABSTTL"]);
    both(&mut p, &[b"EXISTS", b"k4"]);
    both(
        &mut p,
        &[b"RESTORE", b"k", b"1", &payload, b"ABSTTL", b"REPLACE"],
    );
    both(&mut p, &[b"EXISTS", b"k"]);
    both(&mut p, &[b"RESTORE", b"k5", b"100000", &payload]);
    let ttl = |c: &mut Raw| match c.cmd(&["PTTL", "k5"]) {
        Frame::Integer(n) => n,
        other => panic!("PTTL: {other:?}"),
    };
    let (a, b) = (ttl(&mut p.node), ttl(&mut p.redis));
    assert!(
        (95_000..=100_000).contains(&a) && (a - b).abs() < 5_000,
        "{a} vs {b}"
    );
    both(&mut p, &[b"DUMP", b"missing"]);
    // Streams: refused with a clear error either way.
    p.same(&["XADD", "st", "1-0", "f", "v"]);
    let f = call(&mut p.node, &[b"DUMP", b"st"]);
    assert_eq!(
        f,
        Frame::Error("ERR stream values cannot be dumped or restored by this node".into())
    );
    let theirs = bulk(call(&mut p.redis, &[b"DUMP", b"st"]));
    let f = call(&mut p.node, &[b"RESTORE", b"st2", b"0", &theirs]);
    assert_eq!(
        f,
        Frame::Error("ERR stream values cannot be dumped or restored by this node".into())
    );
}
