//! The write commands added for issue 22 (SETRANGE … ZREMRANGEBYLEX, SORT
//! … STORE, BITOP, BITFIELD, ZUNIONSTORE … ZMPOP): a
//! replica applies their log records, and a restarted primary replays them,
//! to exactly the primary's keys.

use std::time::Duration;

use super::{addr_of, conn, follow, promote, restart_in, start, wait_caught_up};

/// A key's type and contents, read with the command its type needs, and
/// its absolute expiry: equal on two nodes iff the keys are.
fn key_state(c: &mut redis::Connection, key: &str) -> (String, redis::Value, i64) {
    let ty: String = redis::cmd("TYPE").arg(key).query(c).expect("TYPE");
    let read = match ty.as_str() {
        "string" => redis::cmd("GET").arg(key).clone(),
        "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
        "set" => redis::cmd("SMEMBERS").arg(key).clone(),
        "hash" => redis::cmd("HGETALL").arg(key).clone(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .clone(),
        _ => redis::cmd("EXISTS").arg(key).clone(),
    };
    let mut v: redis::Value = read.query(c).expect("read the key");
    // Sets and hashes come back in the table's order: compare them sorted.
    if let redis::Value::Array(items) | redis::Value::Set(items) = &mut v {
        if ty == "set" {
            items.sort_by_key(|i| format!("{i:?}"));
        }
        if ty == "hash" {
            let mut pairs: Vec<Vec<redis::Value>> = items.chunks(2).map(|c| c.to_vec()).collect();
            pairs.sort_by_key(|p| format!("{p:?}"));
            *items = pairs.concat();
        }
    }
    if let redis::Value::Map(pairs) = &mut v {
        pairs.sort_by_key(|p| format!("{p:?}"));
    }
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg(key)
        .query(c)
        .expect("PEXPIRETIME");
    (ty, v, at)
}

/// The write commands added for issue 22, with the keys they leave behind.
const NEW_WRITES: &[&[&str]] = &[
    &["SETRANGE", "{w}sr", "5", "abc"],
    &["SETRANGE", "{w}sr", "1", "Z"],
    &["SET", "{w}f", "1.5"],
    &["INCRBYFLOAT", "{w}f", "2.25"],
    &["INCRBYFLOAT", "{w}nf", "-3"],
    &["SET", "{w}ex", "v"],
    &["GETEX", "{w}ex", "EX", "100000"],
    &["SET", "{w}px", "v"],
    &["GETEX", "{w}px", "PX", "100000000"],
    &["GETEX", "{w}px", "PERSIST"],
    &["SET", "{w}gone", "v"],
    &["GETEX", "{w}gone", "PXAT", "1"],
    &["MSETNX", "{w}m1", "a", "{w}m2", "b"],
    &["MSETNX", "{w}m2", "c", "{w}m3", "d"],
    &["SETBIT", "{w}bits", "100", "1"],
    &["SETBIT", "{w}bits", "3", "1"],
    &["SETBIT", "{w}bits", "100", "0"],
    &["RPUSH", "{w}l", "a", "b", "c"],
    &["LINSERT", "{w}l", "AFTER", "b", "B"],
    &["LMOVE", "{w}l", "{w}l2", "LEFT", "RIGHT"],
    &["RPOPLPUSH", "{w}l", "{w}l2"],
    &["RPUSH", "{w}l3", "1", "2", "3", "4"],
    &["LMPOP", "2", "{w}none", "{w}l3", "RIGHT", "COUNT", "3"],
    &[
        "ZADD", "{w}z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e", "6", "f",
    ],
    &["ZREMRANGEBYSCORE", "{w}z", "(1", "2"],
    &["ZREMRANGEBYRANK", "{w}z", "-1", "-1"],
    &["ZREMRANGEBYLEX", "{w}z", "[c", "[c"],
    &["COPY", "{w}z", "{w}zc"],
    &["COPY", "{w}ex", "{w}exc"],
    &["COPY", "{w}sr", "{w}f", "REPLACE"],
    &["SADD", "{w}ss", "3", "1", "20", "2"],
    &["SORT", "{w}ss", "STORE", "{w}sorted"],
    &[
        "SORT",
        "{w}ss",
        "BY",
        "nosort",
        "LIMIT",
        "0",
        "2",
        "STORE",
        "{w}sorted2",
    ],
    &["SET", "{w}gone2", "v"],
    &["SORT", "{w}none", "STORE", "{w}gone2"],
    &["BITOP", "XOR", "{w}bx", "{w}bits", "{w}sr"],
    &["BITOP", "NOT", "{w}bn", "{w}sr"],
    &[
        "BITFIELD", "{w}bf", "SET", "i8", "#1", "-7", "INCRBY", "u4", "0", "20",
    ],
    &[
        "BITFIELD", "{w}bf", "OVERFLOW", "FAIL", "INCRBY", "u8", "40", "300",
    ],
    &["ZADD", "{w}z2", "0.1", "b", "7", "x"],
    &[
        "ZUNIONSTORE",
        "{w}zu",
        "2",
        "{w}z",
        "{w}z2",
        "WEIGHTS",
        "2",
        "3",
    ],
    &[
        "ZINTERSTORE",
        "{w}zi",
        "2",
        "{w}z",
        "{w}z2",
        "AGGREGATE",
        "MAX",
    ],
    &["ZDIFFSTORE", "{w}zd", "2", "{w}z", "{w}z2"],
    &[
        "ZRANGESTORE",
        "{w}zr",
        "{w}z",
        "(1",
        "+inf",
        "BYSCORE",
        "LIMIT",
        "1",
        "2",
    ],
    &["ZMPOP", "2", "{w}none", "{w}z2", "MAX", "COUNT", "1"],
];

const NEW_WRITE_KEYS: &[&str] = &[
    "{w}sr",
    "{w}f",
    "{w}nf",
    "{w}ex",
    "{w}px",
    "{w}gone",
    "{w}m1",
    "{w}m2",
    "{w}m3",
    "{w}bits",
    "{w}l",
    "{w}l2",
    "{w}l3",
    "{w}z",
    "{w}zc",
    "{w}exc",
    "{w}ss",
    "{w}sorted",
    "{w}sorted2",
    "{w}gone2",
    "{w}bx",
    "{w}bn",
    "{w}bf",
    "{w}z2",
    "{w}zu",
    "{w}zi",
    "{w}zd",
    "{w}zr",
];

#[test]
fn new_write_commands_replay_from_the_log_and_reach_a_replica() {
    let mut p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let mut c = conn(&p);
    for args in NEW_WRITES {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(&mut c).expect("the write runs");
    }
    let expected: Vec<_> = NEW_WRITE_KEYS
        .iter()
        .map(|k| key_state(&mut c, k))
        .collect();
    assert_eq!(expected[5].0, "none", "GETEX PXAT in the past deletes");
    assert_eq!(expected[8].0, "none", "the second MSETNX did nothing");
    assert_eq!(expected[17].0, "list", "SORT … STORE made a list");
    assert_eq!(
        expected[19].0, "none",
        "an empty SORT … STORE deleted the key"
    );
    // The replica applied the same records.
    wait_caught_up(&r, &p, Duration::from_secs(30));
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let on_replica: Vec<_> = NEW_WRITE_KEYS
        .iter()
        .map(|k| key_state(&mut rc, k))
        .collect();
    assert_eq!(on_replica, expected, "the replica's keys");
    // A restarted primary replays its log to the same keys.
    drop((c, rc));
    p.restart();
    promote(&p, 2);
    let mut c = conn(&p);
    let replayed: Vec<_> = NEW_WRITE_KEYS
        .iter()
        .map(|k| key_state(&mut c, k))
        .collect();
    assert_eq!(replayed, expected, "the keys replayed from the log");
}

#[test]
fn restore_replays_from_the_log_and_reaches_a_replica() {
    let mut p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let mut c = conn(&p);
    let _: () = redis::cmd("HSET")
        .arg("{d}src")
        .arg(&["f", "v", "g", "w"])
        .query(&mut c)
        .expect("HSET");
    let _: () = redis::cmd("RPUSH")
        .arg("{d}list")
        .arg(&["1", "2", "3"])
        .query(&mut c)
        .expect("RPUSH");
    let hash: Vec<u8> = redis::cmd("DUMP")
        .arg("{d}src")
        .query(&mut c)
        .expect("DUMP");
    let list: Vec<u8> = redis::cmd("DUMP")
        .arg("{d}list")
        .query(&mut c)
        .expect("DUMP");
    let _: () = redis::cmd("RESTORE")
        .arg("{d}copy")
        .arg(100_000_000)
        .arg(&hash)
        .query(&mut c)
        .expect("RESTORE with a TTL");
    let _: () = redis::cmd("RESTORE")
        .arg("{d}src")
        .arg(0)
        .arg(&list)
        .arg("REPLACE")
        .query(&mut c)
        .expect("RESTORE REPLACE");
    let keys = ["{d}src", "{d}list", "{d}copy"];
    let expected: Vec<_> = keys.iter().map(|k| key_state(&mut c, k)).collect();
    assert_eq!(expected[0].0, "list", "REPLACE put the list at {{d}}src");
    assert!(expected[2].2 > 0, "the copy has a deadline");
    wait_caught_up(&r, &p, Duration::from_secs(30));
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let on_replica: Vec<_> = keys.iter().map(|k| key_state(&mut rc, k)).collect();
    assert_eq!(on_replica, expected, "the replica's keys");
    drop((c, rc));
    p.restart();
    promote(&p, 2);
    let mut c = conn(&p);
    let replayed: Vec<_> = keys.iter().map(|k| key_state(&mut c, k)).collect();
    assert_eq!(replayed, expected, "the keys replayed from the log");
}
