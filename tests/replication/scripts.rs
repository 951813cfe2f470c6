//! Loaded scripts are part of a shard's data set: SCRIPT LOAD, EVAL's
//! caching and SCRIPT FLUSH reach the log, the replicas, snapshots and full
//! resyncs, so EVALSHA keeps working after a failover.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    addr_of, admin, conn, follow, promote, start, start_env, status, wait_caught_up, wait_replicas,
    TestNode,
};
use crate::common::http;
use tessera::node::wal::decode_record;

const READ: &str = "return {KEYS[1], ARGV[1]}";
const INCR: &str = "return redis.call('INCR', KEYS[1])";

fn sha(body: &str) -> String {
    redis::Script::new(body).get_hash().to_string()
}

fn script_load(node: &TestNode, body: &str) -> String {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut conn(node))
        .expect("SCRIPT LOAD")
}

/// SCRIPT EXISTS for each SHA1, on `node` (a replica answers it too).
fn exists(node: &TestNode, shas: &[&str]) -> Vec<bool> {
    redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(shas)
        .query(&mut conn(node))
        .expect("SCRIPT EXISTS")
}

fn evalsha_read(c: &mut redis::Connection, sha: &str) -> redis::RedisResult<Vec<String>> {
    redis::cmd("EVALSHA")
        .arg(sha)
        .arg(1)
        .arg("{s}a")
        .arg("x")
        .query(c)
}

/// The registry records (`TSCRIPT …`) in a node's log, as their second
/// argument (LOAD, FLUSH, …). A segment the node removes meanwhile is
/// skipped.
fn script_records(dir: &Path) -> Vec<String> {
    let wal = dir.join("data").join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .expect("the log directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".wal"))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for b in segs.iter().filter_map(|s| std::fs::read(s).ok()) {
        let mut at = 24;
        while at < b.len() && !b[at..].iter().all(|&x| x == 0) {
            let (rec, n) = decode_record(&b[at..]).expect("a valid record");
            if rec.args.first().map(Vec::as_slice) == Some(b"TSCRIPT".as_slice()) {
                out.push(String::from_utf8_lossy(&rec.args[1]).into_owned());
            }
            at += n;
        }
    }
    out
}

/// Waits until the node's log holds no registry record any more: old
/// segments are removed by a background thread after a snapshot.
fn wait_truncated(node: &TestNode, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !script_records(&node.dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the {who}'s log still holds the script records"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn snapshot(node: &TestNode) {
    let (s, b) = http(node.admin_port, "POST", "/v1/snapshot", "").expect("admin answers");
    assert_eq!(s, 200, "snapshot: {b}");
}

/// Enough writes (200-byte values) to fill a few 64 KiB log segments.
fn fill(node: &TestNode, round: usize) {
    let mut c = conn(node);
    let val = "x".repeat(200);
    for i in 0..600 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("{round}{val}"))
            .query(&mut c)
            .expect("SET");
    }
}

/// Waits until `node` (restarted) follows its primary again, caught up.
fn wait_linked(replica: &TestNode, primary: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(replica)["lsn"] != status(primary)["lsn"]
        || status(replica)["replication"]["linkUp"] != true
    {
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up: {:#}",
            status(replica)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// quorum with two replicas: a script load is acknowledged once both hold
/// it, so the primary may die right after the reply.
#[test]
fn evalsha_works_on_a_promoted_replica_after_script_load_and_eval_on_the_old_primary() {
    let mut nodes: Vec<TestNode> = (0..3).map(|i| start(i, "quorum", &[])).collect();
    promote(&nodes[0], 1);
    for n in &nodes[1..] {
        follow(n, 1, addr_of(0, nodes[0].port));
    }
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let read = script_load(&nodes[0], READ);
    assert_eq!(read, sha(READ));
    let mut c = conn(&nodes[0]);
    let n: i64 = redis::cmd("EVAL")
        .arg(INCR)
        .arg(1)
        .arg("{s}k")
        .query(&mut c)
        .expect("EVAL");
    assert_eq!(n, 1);
    drop(c);
    nodes[0].kill9();

    let (s, b) = admin(&nodes[1], "/v1/promote", json!({"epoch": 2, "replicas": 1}));
    assert_eq!(s, 200, "promote: {b}");
    follow(&nodes[2], 2, addr_of(1, nodes[1].port));
    wait_replicas(&nodes[1], 1, Duration::from_secs(20));
    let incr = sha(INCR);
    assert_eq!(exists(&nodes[1], &[&read, &incr]), [true, true]);
    let mut c = conn(&nodes[1]);
    assert_eq!(
        evalsha_read(&mut c, &read).expect("EVALSHA of the loaded script"),
        ["{s}a", "x"]
    );
    // As BullMQ sends it: EVALSHA inside MULTI/EXEC.
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("EVALSHA")
        .arg(&incr)
        .arg(1)
        .arg("{s}k")
        .query(&mut c)
        .expect("EVALSHA of EVAL's script in a transaction");
    assert_eq!(n, 2, "the script ran on the data the old primary left");
}

/// 64 KiB log segments (the default is 64 MiB), so that snapshots truncate
/// the log; for this node only (the test process's environment is shared
/// by tests that run at once).
const SMALL_SEGMENTS: &[(&str, &str)] = &[("TESSERA_WAL_SEGMENT_BYTES", "65536")];

fn start_small(i: usize) -> TestNode {
    start_env(i, "eventual", &[], SMALL_SEGMENTS)
}

/// A restart recovers the scripts from the log, and from a snapshot once
/// the log no longer holds their records.
#[test]
fn a_restarted_primary_and_replica_keep_the_loaded_scripts_from_the_log_and_from_snapshots() {
    let mut p = start_small(0);
    promote(&p, 1);
    let mut r = start_small(1);
    follow(&r, 1, addr_of(0, p.port));
    let read = script_load(&p, READ);
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(script_records(&p.dir), ["LOAD"], "the primary's log");
    assert_eq!(script_records(&r.dir), ["LOAD"], "the replica's log");

    // From the log.
    r.restart();
    wait_linked(&r, &p);
    assert_eq!(exists(&r, &[&read]), [true], "replica restarted");
    p.restart();
    promote(&p, 1);
    assert_eq!(exists(&p, &[&read]), [true], "primary restarted");

    // From a snapshot: two snapshots past the record truncate it away.
    for round in 0..2 {
        fill(&p, round);
        wait_caught_up(&r, &p, Duration::from_secs(30));
        snapshot(&p);
        snapshot(&r);
    }
    wait_truncated(&p, "primary");
    wait_truncated(&r, "replica");
    r.restart();
    wait_linked(&r, &p);
    assert_eq!(
        exists(&r, &[&read]),
        [true],
        "replica restarted on a snapshot"
    );
    p.restart();
    promote(&p, 1);
    assert_eq!(
        exists(&p, &[&read]),
        [true],
        "primary restarted on a snapshot"
    );
    assert_eq!(
        evalsha_read(&mut conn(&p), &read).expect("EVALSHA after recovery"),
        ["{s}a", "x"]
    );
}

#[test]
fn a_full_resync_brings_the_loaded_scripts_to_a_new_replica() {
    let mut p = start_small(0);
    promote(&p, 1);
    let read = script_load(&p, READ);
    for round in 0..3 {
        fill(&p, round);
        snapshot(&p);
    }
    wait_truncated(&p, "primary");
    let r = start(1, "eventual", &[]);
    follow(&r, 1, addr_of(0, p.port));
    wait_caught_up(&r, &p, Duration::from_secs(30));
    let st = status(&r);
    assert_eq!(st["replication"]["fullResyncs"], 1, "{st:#}");
    assert_eq!(exists(&r, &[&read]), [true], "after the full resync");
    p.kill9();
    promote(&r, 2);
    assert_eq!(
        evalsha_read(&mut conn(&r), &read).expect("EVALSHA on the promoted replica"),
        ["{s}a", "x"]
    );
}

#[test]
fn script_flush_reaches_the_replicas_and_outlasts_their_restart() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut r = start(1, "eventual", &[]);
    follow(&r, 1, addr_of(0, p.port));
    let (a, b) = (script_load(&p, READ), script_load(&p, INCR));
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(exists(&r, &[&a, &b]), [true, true]);
    // A replica runs a loaded script for reads.
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let got: Vec<String> = redis::cmd("EVALSHA_RO")
        .arg(&a)
        .arg(1)
        .arg("{s}a")
        .arg("y")
        .query(&mut rc)
        .expect("EVALSHA_RO on the replica");
    assert_eq!(got, ["{s}a", "y"]);
    // A replica's own load stays its own: it cannot log it.
    let local = script_load(&r, "return 'local'");
    assert_eq!(exists(&r, &[&local]), [true]);
    assert_eq!(exists(&p, &[&local]), [false]);

    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut conn(&p))
        .expect("SCRIPT FLUSH");
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(
        exists(&r, &[&a, &b]),
        [false, false],
        "flushed on the replica"
    );
    let err = evalsha_read(&mut rc, &a).expect_err("NOSCRIPT after the flush");
    assert_eq!(err.code(), Some("NOSCRIPT"), "{err}");
    assert_eq!(script_records(&p.dir), ["LOAD", "LOAD", "FLUSH"]);
    r.restart();
    wait_linked(&r, &p);
    assert_eq!(
        exists(&r, &[&a, &b]),
        [false, false],
        "the flush outlasts a restart"
    );
    // Loads after the flush reach the replica again.
    let c = script_load(&p, "return 3");
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(exists(&r, &[&c, &a]), [true, false]);
}

const LIB: &str = "#!lua name=counter
redis.register_function{function_name='peek', callback=function(keys) return redis.call('GET', keys[1]) end,
  flags={'no-writes'}}
redis.register_function('bump', function(keys) return redis.call('INCR', keys[1]) end)";

/// The library names FUNCTION LIST shows on `node`.
fn libraries(node: &TestNode) -> Vec<String> {
    let list: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut conn(node))
        .expect("FUNCTION LIST");
    let mut names: Vec<String> = list
        .iter()
        .map(|lib| match lib {
            redis::Value::Array(kv) => redis::from_redis_value(&kv[1]).expect("a library name"),
            other => panic!("a library: {other:?}"),
        })
        .collect();
    names.sort();
    names
}

fn fcall(c: &mut redis::Connection, ro: bool, name: &str, key: &str) -> redis::RedisResult<i64> {
    redis::cmd(if ro { "FCALL_RO" } else { "FCALL" })
        .arg(name)
        .arg(1)
        .arg(key)
        .query(c)
}

#[test]
fn function_libraries_reach_replicas_restarts_full_resyncs_and_a_promoted_replica() {
    let mut p = start_small(0);
    promote(&p, 1);
    let mut c = conn(&p);
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(LIB)
        .query(&mut c)
        .expect("FUNCTION LOAD");
    let other = "#!lua name=other\nredis.register_function('o', function() return 1 end)";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(other)
        .query(&mut c)
        .expect("FUNCTION LOAD");
    assert_eq!(fcall(&mut c, false, "bump", "{c}n").expect("FCALL"), 1);
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("other")
        .query(&mut c)
        .expect("FUNCTION DELETE");

    // A replica from the log, then restarted.
    let mut r = start(1, "eventual", &[]);
    follow(&r, 1, addr_of(0, p.port));
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(libraries(&r), ["counter"]);
    let err = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(other)
        .query::<String>(&mut conn(&r))
        .expect_err("a replica refuses FUNCTION LOAD");
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    r.restart();
    wait_linked(&r, &p);
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    assert_eq!(fcall(&mut rc, true, "peek", "{c}n").expect("FCALL_RO"), 1);

    // A replica from a snapshot, once the log no longer holds the records.
    for round in 0..3 {
        fill(&p, round);
        snapshot(&p);
    }
    wait_truncated(&p, "primary");
    let r2 = start(2, "eventual", &[]);
    follow(&r2, 1, addr_of(0, p.port));
    wait_caught_up(&r2, &p, Duration::from_secs(30));
    let st = status(&r2);
    assert_eq!(st["replication"]["fullResyncs"], 1, "{st:#}");
    assert_eq!(libraries(&r2), ["counter"]);

    // Promoted: its functions run, and its FUNCTION FLUSH reaches r.
    p.kill9();
    promote(&r2, 2);
    follow(&r, 2, addr_of(2, r2.port));
    let mut c2 = conn(&r2);
    assert_eq!(fcall(&mut c2, false, "bump", "{c}n").expect("FCALL"), 2);
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut c2)
        .expect("FUNCTION FLUSH");
    wait_caught_up(&r, &r2, Duration::from_secs(30));
    assert!(libraries(&r).is_empty(), "the flush reached the replica");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let err = fcall(&mut rc, true, "peek", "{c}n").expect_err("no function");
    assert!(err.to_string().contains("Function not found"), "{err}");
}

#[test]
fn function_restore_reaches_replicas_and_restarts_as_one_record() {
    let mut p = start_small(0);
    promote(&p, 1);
    let mut c = conn(&p);
    let other = "#!lua name=other\nredis.register_function('o', function() return 7 end)";
    for code in [LIB, other] {
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(code)
            .query(&mut c)
            .expect("FUNCTION LOAD");
    }
    let both: Vec<u8> = redis::cmd("FUNCTION")
        .arg("DUMP")
        .query(&mut c)
        .expect("FUNCTION DUMP");
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("counter")
        .query(&mut c)
        .expect("FUNCTION DELETE");
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("other")
        .query(&mut c)
        .expect("FUNCTION DELETE");
    let mut r = start(1, "eventual", &[]);
    follow(&r, 1, addr_of(0, p.port));
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert!(libraries(&r).is_empty());

    // RESTORE (APPEND) brings both back on the replica.
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&both)
        .query(&mut c)
        .expect("FUNCTION RESTORE");
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(libraries(&r), ["counter", "other"]);
    let err = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&both)
        .arg("REPLACE")
        .query::<()>(&mut conn(&r))
        .expect_err("a replica refuses FUNCTION RESTORE");
    assert_eq!(err.code(), Some("READONLY"), "{err}");

    // A payload of one library with FLUSH leaves only it, everywhere.
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("counter")
        .query(&mut c)
        .expect("FUNCTION DELETE");
    let only_other: Vec<u8> = redis::cmd("FUNCTION")
        .arg("DUMP")
        .query(&mut c)
        .expect("FUNCTION DUMP");
    let e = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&both)
        .query::<()>(&mut c)
        .expect_err("other exists: APPEND refuses");
    assert!(
        e.to_string().contains("Library other already exists"),
        "{e}"
    );
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&both)
        .arg("REPLACE")
        .query(&mut c)
        .expect("FUNCTION RESTORE REPLACE");
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(libraries(&r), ["counter", "other"]);
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&only_other)
        .arg("FLUSH")
        .query(&mut c)
        .expect("FUNCTION RESTORE FLUSH");
    wait_caught_up(&r, &p, Duration::from_secs(20));
    assert_eq!(libraries(&r), ["other"]);

    // Both recover it from their logs.
    r.restart();
    wait_linked(&r, &p);
    assert_eq!(libraries(&r), ["other"]);
    p.restart();
    assert_eq!(libraries(&p), ["other"]);
    let restores = super::transactions::log_records(&p.dir)
        .into_iter()
        .filter(|r| r.args.len() > 1 && r.args[1] == b"FUNCTION-RESTORE")
        .count();
    assert_eq!(restores, 3, "one record per RESTORE that changed something");
    let mut pc = conn(&p);
    let seven: i64 = redis::cmd("FCALL")
        .arg("o")
        .arg(0)
        .query(&mut pc)
        .expect("FCALL after recovery");
    assert_eq!(seven, 7);
}
