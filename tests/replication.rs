//! Replication on real processes: 1 primary + 2 replicas on 127.0.0.1, the
//! test playing operator through the admin calls (fence, promote, follow)
//! exactly as the operator does.

mod common;
#[path = "common/linearizability.rs"]
mod linearizability;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{http, TestNode};
use proxy::Proxy;
use rand::Rng;
use serde_json::{json, Value};

const LEASE_MS: u64 = 600;

fn node_id(i: usize) -> String {
    format!("{:040x}", 0xabc000 + i)
}

/// A node of a replicated shard.
fn start(i: usize, consistency: &str, extra: &[&str]) -> TestNode {
    start_env(i, consistency, extra, &[])
}

/// The same with environment variables for the node process.
fn start_env(i: usize, consistency: &str, extra: &[&str], env: &[(&str, &str)]) -> TestNode {
    let id = node_id(i);
    let lease = LEASE_MS.to_string();
    let mut args = vec![
        "--node-id",
        &id,
        "--consistency",
        consistency,
        "--replicas",
        "2",
    ];
    if !extra.contains(&"--lease-ms") {
        args.extend_from_slice(&["--lease-ms", &lease]);
    }
    if !extra.contains(&"--ack-timeout-ms") {
        args.extend_from_slice(&["--ack-timeout-ms", "3000"]);
    }
    args.extend_from_slice(extra);
    TestNode::start_env(&args, env)
}

fn restart_in(
    i: usize,
    consistency: &str,
    dir: &std::path::Path,
    port: u16,
    admin: u16,
) -> TestNode {
    let _ = (port, admin);
    let id = node_id(i);
    let lease = LEASE_MS.to_string();
    TestNode::start_in(
        dir,
        &[
            "--node-id",
            &id,
            "--consistency",
            consistency,
            "--replicas",
            "2",
            "--lease-ms",
            &lease,
            "--ack-timeout-ms",
            "3000",
        ],
    )
}

fn addr_of(i: usize, port: u16) -> Value {
    json!({"id": node_id(i), "host": "127.0.0.1", "port": port})
}

fn admin(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    let (status, body) =
        http(node.admin_port, "POST", path, &body.to_string()).expect("admin port answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn promote(node: &TestNode, epoch: u64) {
    let (s, b) = admin(node, "/v1/promote", json!({"epoch": epoch, "replicas": 2}));
    assert_eq!(s, 200, "promote: {b}");
}

fn follow(node: &TestNode, epoch: u64, primary: Value) {
    let (s, b) = admin(
        node,
        "/v1/follow",
        json!({"epoch": epoch, "primary": primary}),
    );
    assert_eq!(s, 200, "follow: {b}");
}

fn fence(node: &TestNode, epoch: u64) -> u16 {
    admin(node, "/v1/fence", json!({"epoch": epoch})).0
}

fn status(node: &TestNode) -> Value {
    let (s, b) = common::http_get(node.admin_port, "/v1/status").expect("status answers");
    assert_eq!(s, 200);
    serde_json::from_str(&b).expect("status is JSON")
}

/// Waits until the primary holds its lease with `n` connected replicas
/// caught up with its log.
fn wait_replicas(primary: &TestNode, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(primary);
        let lsn = st["lsn"].as_u64().unwrap_or(0);
        let ok = st["replication"]["replicas"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|r| {
                        r["connected"] == true && r["ackedLsn"].as_u64().unwrap_or(0) >= lsn
                    })
                    .count()
            })
            .unwrap_or(0);
        if ok >= n
            && (st["replication"]["leaseHeld"] == true || st["replication"]["requiredAcks"] == 0)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not catch up: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An error's code and text ("MOVED 12 …" shows as "Moved: 12 …").
fn etext(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or(""), e)
}

fn conn(node: &TestNode) -> redis::Connection {
    let c = node.conn();
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    c
}

/// A shard of three nodes; `primary` indexes `nodes`.
struct Shard {
    nodes: Vec<Option<TestNode>>,
    dirs: Vec<std::path::PathBuf>,
    _tmps: Vec<tempfile::TempDir>,
    primary: usize,
    epoch: u64,
    mode: String,
}

impl Shard {
    fn start(mode: &str) -> Self {
        let tmps: Vec<tempfile::TempDir> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let dirs: Vec<_> = tmps.iter().map(|t| t.path().to_path_buf()).collect();
        let nodes: Vec<Option<TestNode>> = (0..3)
            .map(|i| Some(restart_in(i, mode, &dirs[i], 0, 0)))
            .collect();
        let s = Self {
            nodes,
            dirs,
            _tmps: tmps,
            primary: 0,
            epoch: 1,
            mode: mode.to_string(),
        };
        promote(s.node(0), 1);
        for i in 1..3 {
            follow(s.node(i), 1, addr_of(0, s.node(0).port));
        }
        wait_replicas(s.node(0), 2, Duration::from_secs(20));
        s
    }

    fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn primary(&self) -> &TestNode {
        self.node(self.primary)
    }

    /// kill -9 the primary, then fail over as the operator does and bring
    /// the old primary back as a replica. Returns the new primary's index.
    fn kill_and_fail_over(&mut self) {
        let old = self.primary;
        if let Some(mut n) = self.nodes[old].take() {
            n.kill9();
        }
        self.epoch += 1;
        let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        for &i in &survivors {
            assert_eq!(fence(self.node(i), self.epoch), 200);
        }
        // The old primary's lease must run out before anyone else leads
        // (with a margin for clock rate differences).
        thread::sleep(Duration::from_millis(LEASE_MS + LEASE_MS / 5 + 50));
        let best = *survivors
            .iter()
            .max_by_key(|&&i| status(self.node(i))["lsn"].as_u64().unwrap_or(0))
            .expect("two survivors");
        promote(self.node(best), self.epoch);
        let paddr = addr_of(best, self.node(best).port);
        for &i in &survivors {
            if i != best {
                follow(self.node(i), self.epoch, paddr.clone());
            }
        }
        // The old primary rejoins: restart on its directory, then follow.
        let n = restart_in(old, &self.mode, &self.dirs[old], 0, 0);
        follow(&n, self.epoch, paddr);
        self.nodes[old] = Some(n);
        self.primary = best;
        wait_replicas(self.primary(), 2, Duration::from_secs(30));
    }
}

/// Concurrent writers on distinct keys, recording every acknowledged write.
fn write_until_killed(
    node: &TestNode,
    round: usize,
    writers: usize,
    acked: &Arc<Mutex<HashMap<String, String>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let client = node.client();
            let acked = acked.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let Ok(mut c) = client.get_connection() else {
                    return;
                };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("k:{round}:{w}:{i}");
                    let val = format!("v{round}.{w}.{i}");
                    match redis::cmd("SET")
                        .arg(&key)
                        .arg(&val)
                        .query::<String>(&mut c)
                    {
                        Ok(_) => {
                            acked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(key, val);
                        }
                        Err(e) if e.is_io_error() || e.is_connection_dropped() => return,
                        Err(_) => {}
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

/// 20 rounds: writers, kill -9 the primary at a random moment, fail over.
/// Returns (the keys of the acknowledged writes, the keys of the lost ones).
fn kill_rounds(mode: &str, rounds: usize) -> (Vec<String>, Vec<String>) {
    let mut shard = Shard::start(mode);
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = write_until_killed(shard.primary(), round, 3, &acked, &stop);
        thread::sleep(Duration::from_millis(rng.gen_range(30..250)));
        shard.kill_and_fail_over();
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
    }
    // Every acknowledged write, read back from the last primary.
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut c = conn(shard.primary());
    let mut lost = vec![];
    let keys: Vec<&String> = acked.keys().collect();
    for chunk in keys.chunks(500) {
        let vals: Vec<Option<String>> =
            redis::cmd("MGET")
                .arg(chunk)
                .query(&mut c)
                .unwrap_or_else(|_| {
                    // Keys of different slots: read them one by one.
                    chunk
                        .iter()
                        .map(|k| {
                            redis::cmd("GET")
                                .arg(*k)
                                .query(&mut c)
                                .expect("GET answers")
                        })
                        .collect()
                });
        for (k, v) in chunk.iter().zip(vals) {
            if v.as_deref() != Some(acked[*k].as_str()) {
                lost.push((*k).clone());
            }
        }
    }
    eprintln!(
        "{mode}: {rounds} kill rounds in {:.1}s, {} acknowledged writes, {} lost",
        started.elapsed().as_secs_f64(),
        acked.len(),
        lost.len()
    );
    (acked.into_keys().collect(), lost)
}

#[test]
fn quorum_kill9_primary_20_rounds_loses_no_acknowledged_write() {
    let (acked, lost) = kill_rounds("quorum", 20);
    let acked = acked.len();
    assert!(
        acked > 100,
        "too few writes acknowledged ({acked}) to mean anything"
    );
    assert!(
        lost.is_empty(),
        "quorum lost {} of {acked} acknowledged writes: {lost:?}",
        lost.len()
    );
}

#[test]
fn strong_kill9_primary_20_rounds_loses_no_acknowledged_write() {
    let (acked, lost) = kill_rounds("strong", 20);
    let acked = acked.len();
    assert!(
        acked > 100,
        "too few writes acknowledged ({acked}) to mean anything"
    );
    assert!(
        lost.is_empty(),
        "strong lost {} of {acked} acknowledged writes: {lost:?}",
        lost.len()
    );
}

/// `eventual` may lose what no replica had received when its primary died
/// (the documented trade-off), and only that: the promoted replica's log
/// is a prefix of the dead primary's, so each writer loses at most the
/// newest writes of a round — never one acknowledged before a write of the
/// same writer and round that survived.
#[test]
fn eventual_kill9_primary_20_rounds_loses_only_the_unreplicated_tail() {
    let (acked, lost) = kill_rounds("eventual", 20);
    assert!(
        acked.len() > 100,
        "too few writes acknowledged ({})",
        acked.len()
    );
    // k:{round}:{writer}:{i} → ((round, writer), i)
    let index = |k: &str| -> ((u64, u64), u64) {
        let p: Vec<u64> = k
            .split(':')
            .skip(1)
            .map(|n| n.parse().expect("k:round:writer:i"))
            .collect();
        ((p[0], p[1]), p[2])
    };
    let mut first_lost: HashMap<(u64, u64), u64> = HashMap::new();
    for k in &lost {
        let (w, i) = index(k);
        let e = first_lost.entry(w).or_insert(i);
        *e = (*e).min(i);
    }
    let lost_set: std::collections::HashSet<&String> = lost.iter().collect();
    for k in acked.iter().filter(|k| !lost_set.contains(k)) {
        let (w, i) = index(k);
        if let Some(first) = first_lost.get(&w) {
            assert!(
                i < *first,
                "{k} survived although write {first} of round {} writer {}, acknowledged before it, was lost",
                w.0,
                w.1
            );
        }
    }
    eprintln!(
        "RESULT eventual_acked={} eventual_lost={} (the newest writes of {} writer-rounds)",
        acked.len(),
        lost.len(),
        first_lost.len()
    );
}

/// Replicas reach the primary through proxies the test can cut.
struct Isolated {
    nodes: Vec<TestNode>,
    proxies: Vec<Proxy>,
}

fn isolated_setup(mode: &str, extra: &[&str]) -> Isolated {
    let nodes: Vec<TestNode> = (0..3).map(|i| start(i, mode, extra)).collect();
    promote(&nodes[0], 1);
    let proxies: Vec<Proxy> = (0..2).map(|_| Proxy::start(nodes[0].port)).collect();
    for i in 1..3 {
        follow(&nodes[i], 1, addr_of(0, proxies[i - 1].port));
    }
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    Isolated { nodes, proxies }
}

/// quorum/strong: cut the primary off its replicas; after its lease it
/// acknowledges nothing; the operator promotes a replica; the old primary
/// rejoins, dropping the suffix it wrote alone.
fn isolated_primary(mode: &str) {
    let Isolated { nodes, proxies } = isolated_setup(mode, &[]);
    let mut c = conn(&nodes[0]);
    for i in 0..50 {
        let _: String = redis::cmd("SET")
            .arg(format!("before:{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET before the cut");
    }
    let cut_at = Instant::now();
    for p in &proxies {
        p.stall();
    }
    // Writers keep trying on the isolated primary.
    let acks_after_lease = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = nodes[0].client();
        let acks = acks_after_lease.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut c = client.get_connection().expect("connect");
            let mut i = 0;
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let r = redis::cmd("SET")
                    .arg(format!("alone:{i}"))
                    .arg(i)
                    .query::<String>(&mut c);
                match r {
                    Ok(_) => {
                        if sent.duration_since(cut_at) > Duration::from_millis(LEASE_MS) {
                            acks.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                        }
                    }
                    Err(e) => errors.push(etext(&e)),
                }
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
            errors
        })
    };
    // The operator: fence, wait out the lease, promote the best replica.
    for n in &nodes[1..] {
        assert_eq!(fence(n, 2), 200);
    }
    thread::sleep(Duration::from_millis(LEASE_MS + LEASE_MS / 5 + 50));
    promote(&nodes[1], 2);
    follow(&nodes[2], 2, addr_of(1, nodes[1].port));
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let errors = writer.join().expect("writer thread");
    let late = acks_after_lease
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        late.is_empty(),
        "the isolated primary acknowledged {} writes after its lease",
        late.len()
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("NOQUORUM") || e.contains("NOREPLICAS")),
        "the isolated primary's errors should name the rule: {:?}",
        errors.iter().take(3).collect::<Vec<_>>()
    );
    if mode == "strong" {
        let r: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg("before:1")
            .query(&mut conn(&nodes[0]));
        assert!(
            r.is_err(),
            "an isolated strong primary must not serve reads after its lease"
        );
    }
    // Rejoin: the old primary drops the suffix it wrote alone.
    let old_lsn = status(&nodes[0])["lsn"].as_u64().unwrap_or(0);
    follow(&nodes[0], 2, addr_of(1, nodes[1].port));
    wait_replicas(&nodes[1], 2, Duration::from_secs(20));
    let fork_lsn = status(&nodes[1])["replication"]["history"][1][1]
        .as_u64()
        .unwrap_or(0);
    let st = status(&nodes[0]);
    eprintln!(
        "{mode}: old primary lsn {old_lsn}, new primary took over after {fork_lsn}, fork {}",
        st["replication"]["fork"]
    );
    if old_lsn > fork_lsn {
        assert!(
            st["replication"]["fork"].is_object(),
            "the rejoined node records its fork point: {st:#}"
        );
        assert_eq!(
            st["replication"]["fork"]["droppedRecords"].as_u64(),
            Some(old_lsn - fork_lsn)
        );
        // Its whole log is still on disk: it cuts it at the fork and
        // continues from there, no snapshot transfer.
        assert_eq!(
            st["replication"]["fork"]["resolvedBy"], "truncate",
            "{st:#}"
        );
        assert_eq!(st["replication"]["fullResyncs"], 0, "{st:#}");
    }
    let mut c1 = conn(&nodes[1]);
    for i in 0..20 {
        let _: String = redis::cmd("SET")
            .arg(format!("after:{i}"))
            .arg(i)
            .query(&mut c1)
            .expect("the new primary acknowledges");
    }
    let mut r = conn(&nodes[0]);
    redis::cmd("READONLY")
        .query::<()>(&mut r)
        .expect("READONLY");
    let alone: Option<String> = redis::cmd("GET")
        .arg("alone:0")
        .query(&mut r)
        .expect("read on the rejoined replica");
    assert_eq!(alone, None, "the unacknowledged write survived the rejoin");
    let after: Option<String> = redis::cmd("GET")
        .arg("after:19")
        .query(&mut r)
        .expect("read");
    assert_eq!(after.as_deref(), Some("19"));
    let before: Option<String> = redis::cmd("GET")
        .arg("before:49")
        .query(&mut r)
        .expect("read");
    assert_eq!(before.as_deref(), Some("49"));
    drop(proxies);
}

#[test]
fn quorum_isolated_primary_acknowledges_nothing_after_its_lease_and_rejoins_dropping_its_suffix() {
    isolated_primary("quorum");
}

#[test]
fn strong_isolated_primary_acknowledges_nothing_after_its_lease_and_rejoins_dropping_its_suffix() {
    isolated_primary("strong");
}

#[test]
fn strong_write_timeout_says_how_many_replicas_acknowledged() {
    let nodes: Vec<TestNode> = (0..3)
        .map(|i| {
            start(
                i,
                "strong",
                &["--ack-timeout-ms", "300", "--lease-ms", "2000"],
            )
        })
        .collect();
    promote(&nodes[0], 1);
    let proxy = Proxy::start(nodes[0].port);
    follow(&nodes[1], 1, addr_of(0, nodes[0].port));
    follow(&nodes[2], 1, addr_of(0, proxy.port));
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let mut c = conn(&nodes[0]);
    let _: String = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .expect("SET with both replicas");
    proxy.stall();
    let err = redis::cmd("SET")
        .arg("b")
        .arg("2")
        .query::<String>(&mut c)
        .expect_err("strong needs both replicas");
    let msg = etext(&err);
    assert!(msg.contains("1 of 2 required"), "{msg}");
    // Reads in the same pipeline still answer.
    let (r, w): (redis::RedisResult<String>, redis::RedisResult<String>) = {
        let mut p = redis::pipe();
        p.cmd("GET").arg("a").cmd("SET").arg("c").arg("3");
        match p.query::<(String, String)>(&mut c) {
            Ok((a, b)) => (Ok(a), Ok(b)),
            Err(e) => (redis::cmd("GET").arg("a").query(&mut c), Err(e)),
        }
    };
    assert_eq!(r.ok().as_deref(), Some("1"));
    assert!(w.is_err(), "the write of the pipeline must not succeed");
    // WAIT reports the replicas that have everything.
    let n: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(200)
        .query(&mut c)
        .expect("WAIT answers");
    assert_eq!(n, 1);
    // After the lease (2 s, renewed by nothing now): a fast, clear refusal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&nodes[0])["replication"]["leaseHeld"] != false {
        assert!(Instant::now() < deadline, "the lease never ran out");
        thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    let msg = redis::cmd("SET")
        .arg("d")
        .arg("4")
        .query::<String>(&mut c)
        .expect_err("no lease");
    let msg = etext(&msg);
    assert!(msg.contains("NOQUORUM") && msg.contains("lease"), "{msg}");
    assert!(
        asked.elapsed() < Duration::from_millis(250),
        "the refusal waited ({:?}); the ack timeout is 300 ms",
        asked.elapsed()
    );
    proxy.restore();
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let _: String = redis::cmd("SET")
        .arg("e")
        .arg("5")
        .query(&mut c)
        .expect("the lease is back");
}

#[test]
fn full_resync_from_a_snapshot_then_replica_restart_resumes_from_its_own_log() {
    std::env::set_var("TESSERA_WAL_SEGMENT_BYTES", "65536");
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut c = conn(&p);
    let val = "x".repeat(200);
    for round in 0..3 {
        for i in 0..600 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(format!("{round}{val}"))
                .query(&mut c)
                .expect("SET");
        }
        let (s, b) = http(p.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
        assert_eq!(s, 200, "{b}");
    }
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("tail{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let first = status(&p);
    assert!(first["lsn"].as_u64().unwrap_or(0) > 1800);
    // The log no longer reaches back to LSN 1: a new replica needs a snapshot.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&r)["lsn"] != status(&p)["lsn"] {
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up: {:#}",
            status(&r)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let st = status(&r);
    assert_eq!(st["replication"]["fullResyncs"], 1, "{st:#}");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let v: String = redis::cmd("GET").arg("k599").query(&mut rc).expect("GET");
    assert_eq!(v, format!("2{val}"));
    let n: i64 = redis::cmd("DBSIZE").query(&mut rc).expect("DBSIZE");
    assert_eq!(n, 700);
    // Let the replica finish its own snapshot, write more, restart it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&r)["replication"]["resyncing"] == true {
        assert!(
            Instant::now() < deadline,
            "the resync never completed locally"
        );
        thread::sleep(Duration::from_millis(20));
    }
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("more{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    r.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&r)["lsn"] != status(&p)["lsn"] || status(&r)["replication"]["linkUp"] != true {
        assert!(
            Instant::now() < deadline,
            "the restarted replica did not catch up: {:#}",
            status(&r)
        );
        thread::sleep(Duration::from_millis(20));
    }
    let st = status(&r);
    assert_eq!(
        st["replication"]["fullResyncs"], 0,
        "a restart must resume, not resync: {st:#}"
    );
    assert_eq!(st["replication"]["partialResyncs"], 1, "{st:#}");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let n: i64 = redis::cmd("DBSIZE").query(&mut rc).expect("DBSIZE");
    assert_eq!(n, 750);
}

#[test]
fn replica_reads_redirect_when_staler_than_max_staleness() {
    let nodes: Vec<TestNode> = (0..2)
        .map(|i| start(i, "eventual", &["--max-staleness-ms", "300"]))
        .collect();
    promote(&nodes[0], 1);
    let proxy = Proxy::start(nodes[0].port);
    follow(&nodes[1], 1, addr_of(0, proxy.port));
    let mut c = conn(&nodes[0]);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .expect("SET");
    let mut r = conn(&nodes[1]);
    let moved = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut r)
        .expect_err("no READONLY: MOVED");
    assert!(etext(&moved).contains("MOVED"), "{moved}");
    redis::cmd("READONLY")
        .query::<()>(&mut r)
        .expect("READONLY");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(v)) = redis::cmd("GET").arg("k").query::<Option<String>>(&mut r) {
            assert_eq!(v, "v");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never served the read"
        );
        thread::sleep(Duration::from_millis(20));
    }
    proxy.cut();
    thread::sleep(Duration::from_millis(600));
    let err = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut r)
        .expect_err("a stale replica redirects");
    assert!(etext(&err).contains("MOVED"), "{err}");
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut r)
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the replica never caught up again"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stale_epochs_are_refused_and_a_primary_demoted_by_a_newer_epoch_answers_readonly() {
    let a = start(0, "eventual", &[]);
    promote(&a, 5);
    let (s, _) = admin(&a, "/v1/promote", json!({"epoch": 4}));
    assert_eq!(s, 409, "an older epoch is refused");
    assert_eq!(fence(&a, 3), 409);
    assert_eq!(fence(&a, 6), 200);
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut conn(&a))
        .expect_err("demoted");
    assert!(etext(&err).contains("READONLY"), "{err}");
    // The epoch survives a restart.
    let mut a = a;
    a.restart();
    let (s, _) = admin(&a, "/v1/promote", json!({"epoch": 5}));
    assert_eq!(s, 409, "the persisted epoch 6 refuses 5 after a restart");
    assert_eq!(status(&a)["fencingEpoch"], 6);
}

/// Single-key register histories under primary kills in `strong`, checked
/// for linearizability.
#[test]
fn strong_register_histories_are_linearizable_under_kills() {
    use linearizability::{check, Event, Op};
    let mut shard = Shard::start("strong");
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_micros() as u64;
    let history: Arc<Mutex<HashMap<String, Vec<Event>>>> = Arc::new(Mutex::new(HashMap::new()));
    let keys = ["reg:a", "reg:b", "reg:c"];
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..3)
            .map(|w| {
                let client = shard.primary().client();
                let history = history.clone();
                let stop = stop.clone();
                thread::spawn(move || {
                    let Ok(mut c) = client.get_connection() else {
                        return;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut rng = rand::thread_rng();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) && i < 12 {
                        let key = keys[rng.gen_range(0..keys.len())];
                        let call = now();
                        let (op, ok) = if rng.gen_bool(0.5) {
                            let v = format!("{round}.{w}.{i}");
                            let r = redis::cmd("SET").arg(key).arg(&v).query::<String>(&mut c);
                            (Op::Write(v), r.is_ok())
                        } else {
                            match redis::cmd("GET").arg(key).query::<Option<String>>(&mut c) {
                                Ok(v) => (Op::Read(v), true),
                                Err(_) => (Op::Read(None), false),
                            }
                        };
                        let ret = now();
                        let failed_read = !ok && matches!(op, Op::Read(_));
                        if !failed_read {
                            history
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(key.to_string())
                                .or_default()
                                .push(Event {
                                    op,
                                    call,
                                    ret: ok.then_some(ret),
                                });
                        }
                        if !ok {
                            return;
                        }
                        i += 1;
                        thread::sleep(Duration::from_millis(3));
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(40));
        shard.kill_and_fail_over();
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
    }
    // A final read of each key on the last primary.
    let mut c = conn(shard.primary());
    let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
    for key in keys {
        let call = now();
        let v: Option<String> = redis::cmd("GET").arg(key).query(&mut c).expect("GET");
        h.entry(key.to_string()).or_default().push(Event {
            op: Op::Read(v),
            call,
            ret: Some(now()),
        });
    }
    for (key, events) in h.iter() {
        eprintln!("{key}: {} events", events.len());
        check(events).unwrap_or_else(|e| panic!("{key}: {e}: {events:#?}"));
    }
}

/// Copies a directory tree (a node's data directory, taken while the node
/// is stopped).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for e in std::fs::read_dir(from).expect("read the directory") {
        let e = e.expect("a directory entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("a file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}

/// Waits until `replica` has applied everything `primary` logged.
fn wait_caught_up(replica: &TestNode, primary: &TestNode, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let (r, p) = (status(replica), status(primary));
        let lsn = p["lsn"].as_u64().unwrap_or(0);
        if r["lsn"].as_u64() == Some(lsn) && r["replication"]["linkUp"] == true {
            return lsn;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up: replica {r:#} primary lsn {lsn}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn set_keys(node: &TestNode, range: std::ops::Range<usize>) {
    let mut c = conn(node);
    for i in range {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("v{i}"))
            .query(&mut c)
            .expect("SET on the primary");
    }
}

/// The data-loss scenario seen in Kubernetes: a primary is replaced by a
/// node started from an older copy of its data directory, at the same
/// epoch. Its replica, whose log is ahead, must be refused and keep every
/// acknowledged write instead of being resynced down to the stale copy.
#[test]
fn a_replica_ahead_of_its_new_primary_is_refused_and_keeps_all_its_data() {
    const N: usize = 200;
    let mut p = start(0, "eventual", &[]);
    let r = start(1, "eventual", &[]);
    promote(&p, 1);
    follow(&r, 1, addr_of(0, p.port));
    set_keys(&p, 0..N / 2);
    let half_lsn = wait_caught_up(&r, &p, Duration::from_secs(20));
    // Stop the primary part way and keep a copy of its directory.
    p.kill9();
    let stale = tempfile::tempdir().expect("tempdir");
    copy_dir(&p.dir.join("data"), &stale.path().join("data"));
    // The primary comes back on its own directory and writes the rest.
    p.restart();
    set_keys(&p, N / 2..N);
    let full_lsn = wait_caught_up(&r, &p, Duration::from_secs(20));
    assert!(full_lsn > half_lsn);
    p.kill9();

    // A node on the stale copy, same identity and epoch, made primary.
    let stale_p = restart_in(0, "eventual", stale.path(), 0, 0);
    promote(&stale_p, 1);
    assert_eq!(status(&stale_p)["lsn"].as_u64(), Some(half_lsn));
    follow(&r, 1, addr_of(0, stale_p.port));

    // The replica reports the refusal and keeps its log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = status(&r);
        if st["replication"]["followError"]
            .as_str()
            .is_some_and(|e| e.contains("AHEAD"))
        {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never reported the refusal: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st["replication"]["linkState"], "refusedAhead", "{st:#}");
    assert_eq!(st["replication"]["linkUp"], false, "{st:#}");
    let (_, metrics) = common::http_get(r.admin_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("tessera_replication_refused_ahead 1"),
        "the refusal shows in the metrics"
    );
    // Several retries later: still everything, no snapshot taken or streamed.
    thread::sleep(Duration::from_millis(1500));
    let st = status(&r);
    assert_eq!(st["lsn"].as_u64(), Some(full_lsn), "{st:#}");
    assert_eq!(st["replication"]["fullResyncs"], 0, "{st:#}");
    assert_eq!(st["replication"]["resyncing"], false, "{st:#}");
    assert!(st["replication"]["fork"].is_null(), "{st:#}");
    assert!(
        status(&stale_p)["lastSnapshot"].is_null(),
        "the stale primary took a snapshot for a resync"
    );
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    for i in 0..N {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(&mut rc)
            .expect("a READONLY read on the replica");
        assert_eq!(v, Some(format!("v{i}")), "key:{i} was lost");
    }
}

/// A re-follow must retire the previous follow loop: an answer that reaches
/// the old loop after the node follows someone else changes nothing (link
/// state, epoch history, counters). The old primary is a fake the test
/// controls, so the old loop is certainly waiting for its handshake reply
/// when the node re-follows.
#[test]
fn a_superseded_follow_loop_does_not_overwrite_the_new_link_state() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake primary");
    let fake_port = fake.local_addr().expect("fake address").port();
    let (got_hello, hello_rx) = mpsc::channel::<()>();
    let (answer, answer_rx) = mpsc::channel::<()>();
    let fake_thread = thread::spawn(move || {
        let (mut s, _) = fake.accept().expect("the replica connects");
        // TREPLICATE is a 6-element array: 13 CRLFs.
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while req.windows(2).filter(|w| w == b"\r\n").count() < 13 {
            let n = s.read(&mut buf).expect("read the handshake");
            assert!(n > 0, "the replica hung up before its handshake");
            req.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&req).contains("TREPLICATE"));
        got_hello.send(()).expect("the test waits");
        answer_rx.recv().expect("the test says when");
        // A partial resync with a bogus epoch history, then a heartbeat.
        let history = b"[[1,0],[9,999]]";
        let mut out = b"+CONTINUE 0 1\r\n".to_vec();
        out.push(b'Y');
        out.extend_from_slice(&(history.len() as u32).to_le_bytes());
        out.extend_from_slice(history);
        out.push(b'H');
        out.extend_from_slice(&24u32.to_le_bytes());
        for v in [1u64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let _ = s.write_all(&out);
        // Whatever the old loop does, it gets a second to do it.
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.read(&mut buf);
    });

    let b = start(0, "eventual", &[]);
    promote(&b, 2);
    let r = start(1, "eventual", &[]);
    follow(
        &r,
        1,
        json!({"id": format!("{:040x}", 0xfa4e), "host": "127.0.0.1", "port": fake_port}),
    );
    hello_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the first follow loop sends its handshake");
    // The operator moves the replica to the real primary at a newer epoch.
    follow(&r, 2, addr_of(0, b.port));
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut conn(&b))
        .expect("SET");
    let linked = |st: &Value| {
        st["replication"]["linkUp"] == true
            && st["replication"]["linkState"] == "up"
            && st["lsn"] == status(&b)["lsn"]
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let st = status(&r);
        if linked(&st) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never linked to the new primary: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    // Now the old primary answers the superseded loop.
    answer.send(()).expect("the fake primary waits");
    fake_thread.join().expect("the fake primary");
    thread::sleep(Duration::from_millis(300));
    let st = status(&r);
    assert!(
        linked(&st),
        "the old loop changed the new link's state: {st:#}"
    );
    assert_eq!(st["replication"]["primary"]["port"], b.port, "{st:#}");
    assert_eq!(
        st["replication"]["history"], before["replication"]["history"],
        "the old loop installed its primary's epoch history: {st:#}"
    );
    assert_eq!(
        st["replication"]["partialResyncs"], before["replication"]["partialResyncs"],
        "{st:#}"
    );
    assert!(st["replication"]["lastError"].is_null(), "{st:#}");
    assert_eq!(st["fencingEpoch"], 2, "{st:#}");
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .expect("the clock is after 1970")
}

/// A read that finds a key expired logs a DEL, but its reply (nil) does not
/// depend on that DEL's durability: it must not wait for the replicas, nor
/// fail with NOQUORUM on a primary that lost its lease.
#[test]
fn quorum_read_of_an_expired_key_answers_nil_without_the_lease() {
    const KEYS: u64 = 25;
    let Isolated { nodes, proxies } = isolated_setup("quorum", &[]);
    let mut c = conn(&nodes[0]);
    // Deadlines 40 ms apart, well after the lease will have run out.
    let base = unix_ms() + 1500;
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg("v")
            .arg("PXAT")
            .arg(base + 40 * i)
            .query(&mut c)
            .expect("SET PXAT with the replicas");
    }
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    for p in &proxies {
        p.stall();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&nodes[0])["replication"]["leaseHeld"] != false {
        assert!(Instant::now() < deadline, "the lease never ran out");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(unix_ms() < base, "the setup took too long");
    let lsn_before = status(&nodes[0])["lsn"].as_u64().unwrap_or(0);
    // Active expiry (every 100 ms) may delete a key before its read; each
    // read comes just after its key's deadline, and DBSIZE around it in
    // the same batch tells whether this read found the key and expired it.
    let mut lazily_expired = 0;
    for i in 0..KEYS {
        let at = base + 40 * i + 3;
        thread::sleep(Duration::from_millis(at.saturating_sub(unix_ms())));
        let started = Instant::now();
        let (before, v, after): (i64, Option<String>, i64) = redis::pipe()
            .cmd("DBSIZE")
            .cmd("GET")
            .arg(format!("ttl:{i}"))
            .cmd("DBSIZE")
            .query(&mut c)
            .unwrap_or_else(|e| panic!("read {i} of an expired key failed: {}", etext(&e)));
        assert_eq!(v, None, "ttl:{i} is past its deadline");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "the read waited for the acknowledgement rule ({:?})",
            started.elapsed()
        );
        if before == after + 1 {
            lazily_expired += 1;
        }
    }
    eprintln!("{lazily_expired} of {KEYS} reads expired their key themselves");
    assert!(
        lazily_expired > 0,
        "no read found its key still there: the test proved nothing"
    );
    assert!(
        status(&nodes[0])["lsn"].as_u64().unwrap_or(0) >= lsn_before + KEYS,
        "every expiry is logged"
    );
    // The lease really is gone: a write is refused.
    let err = redis::cmd("SET")
        .arg("other")
        .arg("1")
        .query::<()>(&mut c)
        .expect_err("no lease, no write");
    assert!(etext(&err).contains("NOQUORUM"), "{err}");
    // Healed, the replicas receive the logged DELs.
    for p in &proxies {
        p.restore();
    }
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let mut r = conn(&nodes[1]);
    redis::cmd("READONLY")
        .query::<()>(&mut r)
        .expect("READONLY");
    let n: i64 = redis::cmd("DBSIZE").query(&mut r).expect("DBSIZE");
    assert_eq!(n, 0, "the replica got every DEL");
}

/// A replica whose records after some LSN come from a newer epoch than its
/// primary's records there (the primary is a stale node promoted by
/// mistake, e.g. by its LSN alone) is refused, not merged: no partial
/// resync may splice the primary's older records after the replica's.
#[test]
fn a_replica_with_records_of_a_newer_epoch_than_its_primary_is_refused() {
    let mut p = start(0, "eventual", &[]);
    let r = start(1, "eventual", &[]);
    promote(&p, 1);
    follow(&r, 1, addr_of(0, p.port));
    set_keys(&p, 0..50);
    let common = wait_caught_up(&r, &p, Duration::from_secs(20));
    // The primary dies; the replica is promoted at epoch 2 and writes.
    p.kill9();
    promote(&r, 2);
    let mut rc = conn(&r);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("new:{i}"))
            .arg(i)
            .query(&mut rc)
            .expect("SET on the epoch-2 primary");
    }
    let r_lsn = status(&r)["lsn"].as_u64().unwrap_or(0);
    // The old primary comes back alone (still primary at epoch 1) and
    // writes more than the replica has.
    p.restart();
    let mut pc = conn(&p);
    for i in 0..40 {
        let _: () = redis::cmd("SET")
            .arg(format!("stale:{i}"))
            .arg(i)
            .query(&mut pc)
            .expect("SET on the stale primary");
    }
    assert!(status(&p)["lsn"].as_u64().unwrap_or(0) > r_lsn);
    // The mistake: the stale node is promoted at epoch 3, the other follows.
    promote(&p, 3);
    follow(&r, 3, addr_of(0, p.port));
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = status(&r);
        if st["replication"]["linkState"] == "refusedAhead" {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the replica was not refused: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let err = st["replication"]["followError"].as_str().unwrap_or("");
    assert!(
        err.contains(&format!("after LSN {common}")) && err.contains("epoch 2"),
        "{st:#}"
    );
    thread::sleep(Duration::from_millis(500));
    let st = status(&r);
    assert_eq!(st["lsn"].as_u64(), Some(r_lsn), "{st:#}");
    assert_eq!(st["replication"]["fullResyncs"], 0, "{st:#}");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    for i in 0..20 {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("new:{i}"))
            .query(&mut rc)
            .expect("GET");
        assert_eq!(v, Some(i.to_string()), "new:{i} was lost");
    }
    let v: Option<String> = redis::cmd("GET")
        .arg("stale:39")
        .query(&mut rc)
        .expect("GET");
    assert_eq!(v, None, "the stale primary's records were spliced in");
}

fn set_prefixed(node: &TestNode, prefix: &str, n: usize, value: &str) {
    let mut c = conn(node);
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:{i}"))
            .arg(format!("{value}{i}"))
            .query(&mut c)
            .expect("SET");
    }
}

/// A rejoining primary whose log diverged cuts it at the fork point and
/// continues with a partial resync, rebuilding its keyspace from a local
/// snapshot below the fork (the one above it reflects divergent records and
/// goes) plus its own log; a restart then recovers the rewritten state.
#[test]
fn a_rejoining_primary_cuts_its_log_at_the_fork_from_a_snapshot_below_it() {
    rejoin_after_a_fork(true);
}

/// The same without a snapshot below the fork (both snapshots were taken
/// after it and the log was truncated behind them): a full resync, with the
/// fork recorded.
#[test]
fn a_rejoining_primary_without_a_snapshot_below_the_fork_resyncs_in_full() {
    rejoin_after_a_fork(false);
}

fn rejoin_after_a_fork(snapshot_below_fork: bool) {
    // Small segments, so snapshots truncate the log (no replay from LSN 1);
    // for the nodes of this test only.
    struct SmallSegments;
    impl Drop for SmallSegments {
        fn drop(&mut self) {
            std::env::remove_var("TESSERA_WAL_SEGMENT_BYTES");
        }
    }
    std::env::set_var("TESSERA_WAL_SEGMENT_BYTES", "65536");
    let _small = SmallSegments;
    let mut p = start(0, "eventual", &[]);
    let r = start(1, "eventual", &[]);
    promote(&p, 1);
    let proxy = Proxy::start(p.port);
    follow(&r, 1, addr_of(0, proxy.port));
    let pad = "x".repeat(200);
    let snapshot = |n: &TestNode| {
        let (s, b) = http(n.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
        assert_eq!(s, 200, "{b}");
    };
    set_prefixed(&p, "a", 600, &pad);
    if snapshot_below_fork {
        snapshot(&p);
    }
    set_prefixed(&p, "b", 300, &pad);
    wait_caught_up(&r, &p, Duration::from_secs(20));
    // Cut off, the primary goes on alone and snapshots past the fork.
    proxy.stall();
    set_prefixed(&p, "alone", 300, &pad);
    snapshot(&p);
    if !snapshot_below_fork {
        // A second snapshot past the fork: the log is truncated behind the
        // first one, so no base at or below the fork remains.
        set_prefixed(&p, "alone", 10, &pad);
        snapshot(&p);
    }
    let p_lsn = status(&p)["lsn"].as_u64().unwrap_or(0);
    // The replica takes over at epoch 2 and writes.
    assert_eq!(fence(&r, 2), 200);
    promote(&r, 2);
    set_prefixed(&r, "new", 50, "n");
    let fork = status(&r)["replication"]["history"][1][1]
        .as_u64()
        .expect("the promotion is in the history");
    assert!(fork < p_lsn);
    // The old primary rejoins.
    follow(&p, 2, addr_of(1, r.port));
    let target = status(&r)["lsn"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = status(&p);
        if st["lsn"].as_u64() == Some(target) && st["replication"]["linkUp"] == true {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the old primary did not catch up: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let f = &st["replication"]["fork"];
    assert_eq!(f["forkLsn"].as_u64(), Some(fork), "{st:#}");
    assert_eq!(f["droppedRecords"].as_u64(), Some(p_lsn - fork), "{st:#}");
    if snapshot_below_fork {
        assert_eq!(f["resolvedBy"], "truncate", "{st:#}");
        assert_eq!(st["replication"]["fullResyncs"], 0, "{st:#}");
        assert!(
            st["lastSnapshot"]["endLsn"]
                .as_u64()
                .is_some_and(|e| e <= fork),
            "rebuilt from the snapshot below the fork: {st:#}"
        );
    } else {
        assert_eq!(f["resolvedBy"], "fullResync", "{st:#}");
        assert_eq!(st["replication"]["fullResyncs"], 1, "{st:#}");
        let done = Instant::now() + Duration::from_secs(20);
        while status(&p)["replication"]["resyncing"] == true {
            assert!(Instant::now() < done, "the resync never completed");
            thread::sleep(Duration::from_millis(20));
        }
    }
    for e in std::fs::read_dir(p.dir.join("data").join("snapshots")).expect("snapshots") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        let end: Option<u64> = name
            .strip_prefix("snapshot-")
            .and_then(|n| n.strip_suffix(".tsnap"))
            .and_then(|n| n.parse().ok());
        // (After a full resync: only snapshots of the primary's state.)
        assert!(
            !snapshot_below_fork || end.is_none_or(|e| e <= fork),
            "a snapshot past the fork survived: {name}"
        );
    }
    let check = |node: &TestNode| {
        let mut c = conn(node);
        redis::cmd("READONLY")
            .query::<()>(&mut c)
            .expect("READONLY");
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
        assert_eq!(n, 950, "a, b and new keys, no alone keys");
        for (k, v) in [
            ("a:0", format!("{pad}0")),
            ("a:599", format!("{pad}599")),
            ("b:299", format!("{pad}299")),
            ("new:49", "n49".to_string()),
        ] {
            let got: Option<String> = redis::cmd("GET").arg(k).query(&mut c).expect("GET");
            assert_eq!(got.as_deref(), Some(v.as_str()), "{k}");
        }
        let alone: Option<String> = redis::cmd("GET").arg("alone:0").query(&mut c).expect("GET");
        assert_eq!(alone, None, "a record past the fork survived");
    };
    check(&p);
    // The rewritten log and the snapshot below the fork recover the same
    // state, and the link resumes from it.
    p.restart();
    set_prefixed(&r, "new", 50, "n");
    let target = status(&r)["lsn"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&p);
        if st["lsn"].as_u64() == Some(target) && st["replication"]["linkUp"] == true {
            assert_eq!(st["replication"]["fullResyncs"], 0, "{st:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up: {st:#}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    check(&p);
}

/// The commands of issue 22 through the log and to a replica.
#[path = "replication/new_commands.rs"]
mod new_commands;

/// Transactions and scripts as one record.
#[path = "replication/transactions.rs"]
mod transactions;

/// Blocking pops on real nodes.
#[path = "replication/blocking.rs"]
mod blocking;

#[path = "replication/stream_groups.rs"]
mod stream_groups;

/// Loaded scripts through the log, snapshots, resyncs and failovers.
#[path = "replication/scripts.rs"]
mod scripts;

/// The operator starts nodes without `--replicas` (the shard's size comes
/// with the promotion call or the topology push, both in memory). A primary
/// restarted by its container (kill -9, same data directory and address)
/// runs on its data at once, before any push: it must still count the
/// replicas its acknowledgement rule needs, not acknowledge a quorum write
/// that no replica holds (one failover later, such a write is gone).
fn restarted_primary_needs_its_replicas(by_push: bool) {
    let args = |i: usize| {
        vec![
            "--node-id".to_string(),
            node_id(i),
            "--consistency".into(),
            "quorum".into(),
            "--lease-ms".into(),
            LEASE_MS.to_string(),
            "--ack-timeout-ms".into(),
            "1500".into(),
        ]
    };
    let tmps: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = (0..3)
        .map(|i| {
            let a = args(i);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            TestNode::start_in(tmps[i].path(), &a)
        })
        .collect();
    if by_push {
        // As the operator bootstraps a shard: one topology names the
        // primary and its replicas at epoch 1.
        let topo = json!({"epoch": 1, "shards": [{
            "name": "s0",
            "slots": [[0, 16383]],
            "primary": addr_of(0, nodes[0].port),
            "replicas": [addr_of(1, nodes[1].port), addr_of(2, nodes[2].port)],
            "epoch": 1,
        }]})
        .to_string();
        for n in &nodes {
            let (s, b) = http(n.admin_port, "PUT", "/v1/topology", &topo).expect("admin answers");
            assert_eq!(s, 200, "topology push: {b}");
        }
    } else {
        // As a failover promotes: the call names the shard's size.
        promote(&nodes[0], 1);
        for i in 1..3 {
            follow(&nodes[i], 1, addr_of(0, nodes[0].port));
        }
    }
    wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let mut c = conn(&nodes[0]);
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .expect("a quorum write");
    // Both replicas gone, then the primary killed and started again.
    nodes[1].kill9();
    nodes[2].kill9();
    nodes[0].restart();
    let st = status(&nodes[0]);
    assert_eq!(
        st["role"], "primary",
        "the restarted node resumes as primary: {st:#}"
    );
    assert_eq!(
        st["replication"]["replicasExpected"], 2,
        "the restarted primary knows its shard's size: {st:#}"
    );
    assert!(
        st["replication"]["requiredAcks"].as_u64().unwrap_or(0) >= 1,
        "a restarted quorum primary needs a replica's acknowledgement: {st:#}"
    );
    let mut c = conn(&nodes[0]);
    let r = redis::cmd("SET").arg("after").arg("1").query::<()>(&mut c);
    let e = r.expect_err("no replica holds the write: it is not acknowledged");
    let text = etext(&e);
    assert!(
        text.contains("NOQUORUM") || text.contains("NOREPLICAS"),
        "refused for want of replicas: {text}"
    );
}

#[test]
fn a_restarted_quorum_primary_promoted_by_a_call_acknowledges_no_write_its_replicas_lack() {
    restarted_primary_needs_its_replicas(false);
}

#[test]
fn a_restarted_quorum_primary_named_by_a_topology_push_acknowledges_no_write_its_replicas_lack() {
    restarted_primary_needs_its_replicas(true);
}

/// A node restarted in place routes by the last topology it was pushed,
/// before any new push: it claims only its shard's slots (MOVED for the
/// others), not all 16384 as a node never told does, so a client that
/// refreshes its slot map from it meanwhile does not write other shards'
/// keys here.
#[test]
fn a_restarted_node_routes_by_its_last_pushed_topology_before_any_push() {
    let mut a = start(0, "eventual", &[]);
    let b = start(1, "eventual", &[]);
    let topo = json!({"epoch": 7, "shards": [
        {"name": "a", "slots": [[0, 8191]], "primary": addr_of(0, a.port), "replicas": [], "epoch": 0},
        {"name": "b", "slots": [[8192, 16383]], "primary": addr_of(1, b.port), "replicas": [], "epoch": 0},
    ]})
    .to_string();
    for n in [&a, &b] {
        let (s, body) = http(n.admin_port, "PUT", "/v1/topology", &topo).expect("admin answers");
        assert_eq!(s, 200, "topology push: {body}");
    }
    // "b" hashes to slot 3300 (shard a), "a" to 15495 (shard b). Checks
    // that `n` serves the first and redirects the second, and returns the
    // ports CLUSTER SLOTS names.
    let routes = |n: &TestNode, when: &str| -> Vec<i64> {
        let mut c = conn(n);
        let mine: redis::RedisResult<()> = redis::cmd("SET").arg("b").arg("1").query(&mut c);
        assert_eq!(
            mine.map_err(|e| etext(&e)),
            Ok(()),
            "{when}: its own slot is served"
        );
        let theirs: redis::RedisResult<()> = redis::cmd("SET").arg("a").arg("1").query(&mut c);
        let theirs = theirs.map_err(|e| etext(&e));
        assert!(
            theirs.as_ref().is_err_and(|e| e.contains("15495")),
            "{when}: another shard's slot is redirected: {theirs:?}"
        );
        let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut c)
            .expect("CLUSTER SLOTS");
        // Each range: start, end, then [host, port, id] per node.
        slots
            .iter()
            .flat_map(|r| r.iter().skip(2))
            .filter_map(|node| match node {
                redis::Value::Array(f) => match f.get(1) {
                    Some(redis::Value::Int(p)) => Some(*p),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let ports = routes(&a, "pushed");
    assert!(
        ports.contains(&(b.port as i64)),
        "both shards named: {ports:?}"
    );
    a.restart();
    let st = status(&a);
    assert_eq!(
        st["epoch"], 7,
        "the restarted node has its last topology: {st:#}"
    );
    let ports = routes(&a, "restarted, before any push");
    let mut want = vec![a.port as i64, b.port as i64];
    want.sort_unstable();
    let mut got = ports.clone();
    got.sort_unstable();
    assert_eq!(
        got, want,
        "CLUSTER SLOTS names both shards' nodes, as pushed"
    );
    // A pod recreated on its volume comes back at a new address: its own
    // entry in the restored map is the address it announces now.
    a.kill9();
    let moved = tempfile::tempdir().expect("tempdir");
    copy_dir(&a.dir.join("data"), &moved.path().join("data"));
    let id = node_id(0);
    let a2 = TestNode::start_in(
        moved.path(),
        &["--node-id", &id, "--consistency", "eventual"],
    );
    assert_ne!(a2.port, a.port);
    let ports = routes(&a2, "at a new address");
    assert!(
        ports.contains(&(a2.port as i64)) && !ports.contains(&(a.port as i64)),
        "CLUSTER SLOTS names the node at its new address, not its old one: {ports:?}"
    );
}
