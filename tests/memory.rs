//! Memory on real processes: INFO memory's figures and their breakdown,
//! and each `maxmemory-policy` under a write load (what it evicts, that the
//! node stays under `maxmemory`, that evictions reach a replica, that
//! `noeviction` refuses writes instead).

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{http, TestNode};
use serde_json::json;

fn info(c: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(c)
        .expect("INFO answers");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("INFO has no {k}: {m:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} is a number: {m:?}"))
}

fn used(c: &mut redis::Connection) -> u64 {
    num(&info(c, "memory"), "used_memory")
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
}

/// SETs `keys` (1 KiB values), pipelined by 100; `ttl(i)` seconds, if any.
/// Returns how many were refused with -OOM.
fn write(
    c: &mut redis::Connection,
    keys: impl Iterator<Item = String>,
    ttl: impl Fn(usize) -> Option<u64>,
) -> usize {
    let value = vec![b'x'; 1024];
    let keys: Vec<String> = keys.collect();
    let mut refused = 0;
    for (n, chunk) in keys.chunks(100).enumerate() {
        let mut p = redis::pipe();
        for (j, k) in chunk.iter().enumerate() {
            let cmd = p.cmd("SET").arg(k).arg(&value[..]);
            if let Some(t) = ttl(n * 100 + j) {
                cmd.arg("EX").arg(t);
            }
        }
        // Not `query`: it fails the whole pipeline on one -OOM.
        let replies =
            redis::ConnectionLike::req_packed_commands(c, &p.get_packed_pipeline(), 0, chunk.len())
                .expect("the pipeline answers");
        for r in replies {
            match r {
                redis::Value::Okay => {}
                redis::Value::ServerError(e) if e.code() == "OOM" => refused += 1,
                other => panic!("SET answered {other:?}"),
            }
        }
    }
    refused
}

fn exists(c: &mut redis::Connection, keys: &[String]) -> usize {
    let mut p = redis::pipe();
    for k in keys {
        p.cmd("EXISTS").arg(k);
    }
    let found: Vec<u64> = p.query(c).expect("EXISTS answers");
    found.into_iter().filter(|&n| n == 1).count()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// A memory-only node whose maxmemory is what it uses now plus `room`.
fn capped(policy: &str, room: u64) -> (TestNode, redis::Connection, u64) {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = node.conn();
    let max = used(&mut c) + room;
    config_set(&mut c, "maxmemory", &max.to_string());
    config_set(&mut c, "maxmemory-policy", policy);
    (node, c, max)
}

/// Used memory is at most maxmemory, give or take one command's value.
fn assert_under(c: &mut redis::Connection, max: u64, what: &str) {
    let m = info(c, "memory");
    let used = num(&m, "used_memory");
    assert!(
        used <= max + 64 * 1024,
        "{what}: used_memory {used} above maxmemory {max}"
    );
}

fn evicted(c: &mut redis::Connection) -> u64 {
    num(&info(c, "stats"), "evicted_keys")
}

#[test]
fn info_memory_fields_are_present_and_their_breakdown_adds_up_to_used_memory() {
    let node = TestNode::start(&[]);
    let mut c = node.conn();
    write(&mut c, names("k", 3000).into_iter(), |_| None);
    let m = info(&mut c, "memory");
    let used = num(&m, "used_memory");
    let rss = num(&m, "used_memory_rss");
    let startup = num(&m, "used_memory_startup");
    let backlog = num(&m, "mem_replication_backlog");
    let clients = num(&m, "mem_clients_normal");
    let overhead = num(&m, "used_memory_overhead");
    let dataset = num(&m, "used_memory_dataset");
    assert!(used <= rss, "used {used} ≤ rss {rss}");
    assert!(startup > 0 && clients > 0, "{m:?}");
    assert_eq!(
        backlog, 0,
        "no replica, no copy of the log in memory: {m:?}"
    );
    assert_eq!(overhead, startup + backlog + clients, "{m:?}");
    assert_eq!(dataset + overhead, used, "{m:?}");
    assert!(
        dataset > 3000 * 1024,
        "3000 1 KiB values are in the dataset: {m:?}"
    );
    let frag: f64 = m["mem_fragmentation_ratio"].parse().expect("a ratio");
    assert!((frag - rss as f64 / used as f64).abs() < 0.05, "{m:?}");
    assert_eq!(m["maxmemory_policy"], "noeviction");
    assert_eq!(num(&m, "mem_replication_ring"), backlog);

    // MEMORY STATS: the same figures under Redis' names.
    let stats: HashMap<String, redis::Value> = redis::cmd("MEMORY")
        .arg("STATS")
        .query(&mut c)
        .expect("MEMORY STATS answers");
    let int = |k: &str| match &stats[k] {
        redis::Value::Int(n) => *n as u64,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(int("keys.count"), 3000);
    assert_eq!(
        int("startup.allocated")
            + int("replication.backlog")
            + int("clients.normal")
            + int("dataset.bytes"),
        int("total.allocated")
    );
    assert_eq!(
        int("overhead.total") + int("dataset.bytes"),
        int("total.allocated")
    );
}

#[test]
fn noeviction_refuses_writes_with_oom_and_never_deletes() {
    let (_node, mut c, max) = capped("noeviction", 4 << 20);
    let refused = write(&mut c, names("k", 8000).into_iter(), |_| None);
    assert!(refused > 0, "writes past maxmemory are refused");
    let kept: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(kept as usize + refused, 8000, "every accepted key is kept");
    assert_eq!(evicted(&mut c), 0);
    assert_under(&mut c, max, "noeviction");
    // Reads and deletes still work.
    let _: u64 = redis::cmd("DEL").arg("k:0").query(&mut c).expect("DEL");
}

#[test]
fn allkeys_policies_stay_under_maxmemory_and_evict_instead_of_refusing() {
    for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
        let (_node, mut c, max) = capped(policy, 4 << 20);
        let refused = write(&mut c, names("k", 12_000).into_iter(), |_| None);
        assert_eq!(refused, 0, "{policy}: nothing refused");
        let n = evicted(&mut c);
        let kept: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        assert!(n > 6000, "{policy}: evicted {n}");
        assert_eq!(kept + n, 12_000, "{policy}: every key kept or evicted");
        assert_under(&mut c, max, policy);
        let m = info(&mut c, "memory");
        assert_eq!(m["maxmemory_policy"], policy);
    }
}

#[test]
fn volatile_policies_evict_only_keys_with_a_ttl() {
    for policy in [
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let (_node, mut c, max) = capped(policy, 5 << 20);
        let persistent = names("p", 1500);
        write(&mut c, persistent.clone().into_iter(), |_| None);
        let refused = write(&mut c, names("v", 10_000).into_iter(), |i| {
            Some(3600 + i as u64)
        });
        assert_eq!(refused, 0, "{policy}: volatile keys make room");
        assert!(evicted(&mut c) > 4000, "{policy}");
        assert_eq!(
            exists(&mut c, &persistent),
            1500,
            "{policy}: keys without a TTL are never evicted"
        );
        assert_under(&mut c, max, policy);
        // With no volatile key left, writes are refused.
        let _: () = redis::cmd("FLUSHALL").query(&mut c).expect("FLUSHALL");
        write(&mut c, names("q", 4000).into_iter(), |_| None);
        let refused = write(&mut c, names("r", 4000).into_iter(), |_| None);
        assert!(refused > 0, "{policy}: no candidate, -OOM");
    }
}

#[test]
fn lru_evicts_the_cold_keys_and_keeps_the_hot_ones() {
    let (_node, mut c, max) = capped("allkeys-lru", 5 << 20);
    let cold = names("cold", 3000);
    let hot = names("hot", 800);
    write(&mut c, cold.clone().into_iter(), |_| None);
    // The clock counts seconds: the hot keys are touched two seconds later.
    thread::sleep(Duration::from_millis(2100));
    write(&mut c, hot.clone().into_iter(), |_| None);
    // Sampled LRU is exact enough while cold keys are a fair share of the
    // keyspace (each eviction samples 5 keys): fill less than the cold set.
    write(&mut c, names("fill", 1500).into_iter(), |_| None);
    let gone = evicted(&mut c);
    assert!(gone > 600, "evicted {gone}");
    let hot_kept = exists(&mut c, &hot);
    let cold_kept = exists(&mut c, &cold);
    assert!(
        hot_kept >= 796,
        "hot keys kept: {hot_kept}/800 (evicted {gone})"
    );
    assert!(
        cold_kept as u64 <= 3000 - gone * 9 / 10,
        "the evictions were cold keys: {cold_kept}/3000 left, {gone} evicted"
    );
    assert_under(&mut c, max, "allkeys-lru");
}

#[test]
fn lfu_keeps_the_frequently_read_keys() {
    let (_node, mut c, max) = capped("allkeys-lfu", 5 << 20);
    let once = names("once", 3000);
    let hot = names("hot", 500);
    write(&mut c, once.into_iter(), |_| None);
    write(&mut c, hot.clone().into_iter(), |_| None);
    for _ in 0..40 {
        exists(&mut c, &hot);
    }
    write(&mut c, names("fill", 3000).into_iter(), |_| None);
    let gone = evicted(&mut c);
    assert!(gone > 1000, "evicted {gone}");
    let hot_kept = exists(&mut c, &hot);
    assert!(hot_kept >= 495, "frequently read keys kept: {hot_kept}/500");
    assert_under(&mut c, max, "allkeys-lfu");
}

#[test]
fn volatile_ttl_evicts_the_soonest_expiring_keys() {
    let (_node, mut c, max) = capped("volatile-ttl", 5 << 20);
    // t:i expires in 1000 + i seconds; the fill keys much later.
    let timed = names("t", 3000);
    write(&mut c, timed.clone().into_iter(), |i| Some(1000 + i as u64));
    write(&mut c, names("fill", 2000).into_iter(), |_| Some(1_000_000));
    let gone = evicted(&mut c);
    assert!(gone > 800, "evicted {gone}");
    let soon = exists(&mut c, &timed[..700]);
    let late = exists(&mut c, &timed[2300..]);
    assert!(
        soon <= 350 && late >= 650,
        "soonest deadlines go first: {soon}/700 soonest and {late}/700 latest left"
    );
    assert_under(&mut c, max, "volatile-ttl");
}

#[test]
fn config_set_refuses_unknown_policies_and_reports_the_settings() {
    let node = TestNode::start(&["--no-persistence", "--maxmemory-policy", "volatile-lru"]);
    let mut c = node.conn();
    let got: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query(&mut c)
        .expect("CONFIG GET");
    assert_eq!(got["maxmemory-policy"], "volatile-lru");
    assert_eq!(got["maxmemory-samples"], "5");
    let bad: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("lru")
        .query(&mut c);
    assert!(bad.is_err());
    config_set(&mut c, "maxmemory", "100mb");
    config_set(&mut c, "maxmemory-samples", "10");
    let m = info(&mut c, "memory");
    assert_eq!(num(&m, "maxmemory"), 100 << 20);
    assert_eq!(num(&m, "maxmemory_samples"), 10);
    assert_eq!(m["maxmemory_policy"], "volatile-lru");
}

fn admin(node: &TestNode, path: &str, body: serde_json::Value) {
    let (s, b) = http(node.admin_port, "POST", path, &body.to_string()).expect("admin answers");
    assert_eq!(s, 200, "{path}: {b}");
}

#[test]
fn evictions_reach_the_replica_as_deletes() {
    let id = |i: usize| format!("{:040x}", 0xfee000 + i);
    let start = |i: usize| {
        TestNode::start(&[
            "--node-id",
            &id(i),
            "--consistency",
            "eventual",
            "--replicas",
            "1",
        ])
    };
    let p = start(0);
    let r = start(1);
    admin(&p, "/v1/promote", json!({"epoch": 1, "replicas": 1}));
    admin(
        &r,
        "/v1/follow",
        json!({"epoch": 1, "primary": {"id": id(0), "host": "127.0.0.1", "port": p.port}}),
    );
    let mut pc = p.conn();
    let mut rc = r.conn();
    let max = used(&mut pc) + (6 << 20);
    config_set(&mut pc, "maxmemory", &max.to_string());
    config_set(&mut pc, "maxmemory-policy", "allkeys-random");
    let keys = names("k", 10_000);
    write(&mut pc, keys.clone().into_iter(), |_| None);
    let gone = evicted(&mut pc);
    assert!(gone > 2000, "evicted {gone}");
    let on_primary: u64 = redis::cmd("DBSIZE").query(&mut pc).expect("DBSIZE");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_replica: u64 = redis::cmd("DBSIZE").query(&mut rc).expect("DBSIZE");
        if on_replica == on_primary {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica holds {on_replica} keys, the primary {on_primary}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The same keys: what the primary evicted is gone from the replica.
    let _: () = redis::cmd("READONLY").query(&mut rc).expect("READONLY");
    let sample: Vec<String> = keys.iter().step_by(37).cloned().collect();
    for k in sample {
        let a: u64 = redis::cmd("EXISTS").arg(&k).query(&mut pc).expect("EXISTS");
        let b: u64 = redis::cmd("EXISTS").arg(&k).query(&mut rc).expect("EXISTS");
        assert_eq!(a, b, "{k} on the primary and the replica");
    }
    assert_eq!(evicted(&mut rc), 0, "the replica evicts nothing itself");
    // With a replica the primary keeps recent log in memory, counted apart.
    let m = info(&mut pc, "memory");
    let backlog = num(&m, "mem_replication_backlog");
    assert!(backlog > 0 && backlog <= max / 8, "{m:?}");
    assert_eq!(
        num(&m, "used_memory_startup")
            + backlog
            + num(&m, "mem_clients_normal")
            + num(&m, "used_memory_dataset"),
        num(&m, "used_memory")
    );
}

/// Creates `n` keys `{t}prefix:i` with `fields` hash fields (or sorted-set
/// members when `zset`), pipelined by 100. One slot: a slot's table
/// growing from empty would add more per key than the values differ by.
fn aggregates(c: &mut redis::Connection, prefix: &str, n: usize, fields: usize, zset: bool) {
    for start in (0..n).step_by(100) {
        let mut p = redis::pipe();
        for i in start..(start + 100).min(n) {
            let key = format!("{{t}}{prefix}:{i:08}");
            let cmd = p.cmd(if zset { "ZADD" } else { "HSET" }).arg(&key);
            for f in 0..fields {
                if zset {
                    cmd.arg(f as f64 * 1.5).arg(format!("member:{i:08}:{f}"));
                } else {
                    cmd.arg(format!("field:{f}"))
                        .arg(format!("value:{i:08}:{f}"));
                }
            }
            cmd.ignore();
        }
        let _: () = p.query(c).expect("pipeline");
    }
}

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(c)
        .expect("OBJECT ENCODING")
}

fn usage(c: &mut redis::Connection, key: &str, samples: Option<u64>) -> Option<u64> {
    let mut cmd = redis::cmd("MEMORY");
    cmd.arg("USAGE").arg(key);
    if let Some(n) = samples {
        cmd.arg("SAMPLES").arg(n);
    }
    cmd.query(c).expect("MEMORY USAGE")
}

#[test]
fn packed_hashes_and_zsets_cost_less_used_memory_and_used_memory_counts_them() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = node.conn();
    const N: u64 = 2000;
    for (zset, name, full, full_name) in [
        (false, "hash", "hash-max-listpack-entries", "hashtable"),
        (true, "zset", "zset-max-listpack-entries", "skiplist"),
    ] {
        let u0 = used(&mut c);
        aggregates(&mut c, &format!("{name}p"), N as usize, 10, zset);
        let u1 = used(&mut c);
        config_set(&mut c, full, "0");
        aggregates(&mut c, &format!("{name}f"), N as usize, 10, zset);
        let u2 = used(&mut c);
        config_set(&mut c, full, "128");
        assert_eq!(
            encoding(&mut c, &format!("{{t}}{name}p:00000007")),
            "listpack"
        );
        assert_eq!(
            encoding(&mut c, &format!("{{t}}{name}f:00000007")),
            full_name
        );
        let (packed, table) = ((u1 - u0) / N, (u2 - u1) / N);
        // The elements' own bytes: 10 × (7 + 16) for a hash; for a sorted
        // set 10 × 17 and at least a byte per score (integral ones pack).
        let payload = if zset { 10 * (17 + 1) } else { 10 * (7 + 16) };
        assert!(
            packed >= payload,
            "{name}: used_memory grew {packed} B per packed key, less than its {payload} B of data"
        );
        assert!(
            packed * 2 < table,
            "{name}: packed {packed} B per key is not under half the full encoding's {table}"
        );
        // MEMORY USAGE agrees with what used_memory saw, within half.
        for (key, per_key) in [
            (format!("{{t}}{name}p:00000007"), packed),
            (format!("{{t}}{name}f:00000007"), table),
        ] {
            let u = usage(&mut c, &key, None).expect("the key exists");
            assert!(
                u * 2 > per_key && u < per_key * 2,
                "{key}: MEMORY USAGE {u} against {per_key} B per key of used_memory"
            );
        }
    }
}

#[test]
fn memory_usage_counts_a_key_its_value_and_samples_large_aggregates() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = node.conn();
    assert_eq!(usage(&mut c, "missing", None), None);
    let _: () = redis::cmd("SET")
        .arg("s")
        .arg("x".repeat(1000))
        .query(&mut c)
        .expect("SET");
    let s = usage(&mut c, "s", None).expect("s exists");
    assert!((1000..1200).contains(&s), "a 1000-byte string: {s}");
    // 1000 same-sized fields: sampling 5 estimates what counting all finds.
    aggregates(&mut c, "big", 1, 1000, false);
    let all = usage(&mut c, "{t}big:00000000", Some(0)).expect("exists");
    let five = usage(&mut c, "{t}big:00000000", None).expect("exists");
    assert!(all > 1000 * 23, "1000 fields of 23 bytes: {all}");
    assert!(
        five * 10 > all * 9 && five * 10 < all * 11,
        "SAMPLES 5 {five} against all {all}"
    );
    // Converting a small hash makes it bigger.
    aggregates(&mut c, "small", 1, 10, false);
    let packed = usage(&mut c, "{t}small:00000000", None).expect("exists");
    let _: () = redis::cmd("HSET")
        .arg("{t}small:00000000")
        .arg("long")
        .arg("v".repeat(65))
        .query(&mut c)
        .expect("HSET");
    assert_eq!(encoding(&mut c, "{t}small:00000000"), "hashtable");
    let table = usage(&mut c, "{t}small:00000000", None).expect("exists");
    assert!(table > packed + 65, "packed {packed}, converted {table}");
}
