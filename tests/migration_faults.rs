//! Slot migration faults on real processes, each under a write load whose
//! every acknowledged write is checked at the end: the link between source
//! and target cut before and after the seal (a TCP proxy the test cuts),
//! the target's primary killed before the seal, the target's replica killed
//! during the import, a target replica that needs a full resync while an
//! import stages, a seal refused while the target's replica is away, and a
//! failover of the source shard at the flip. Each
//! ends completed or rolled back, with no acknowledged write lost and no
//! manual repair. The fault table is in docs/migration.md.

#[path = "common/migration.rs"]
mod cluster;
mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cluster::*;
use proxy::Proxy;
use serde_json::{json, Value};

/// Lists the load pushes to: half in the moving range 0-99, half in
/// 5000-5100 (stays on the source's shard).
fn load_lists() -> Vec<String> {
    let mut v: Vec<String> = (0..8).map(|j| key_in(&format!("mv{j}:"), 0, 99)).collect();
    v.extend((0..8).map(|j| key_in(&format!("st{j}:"), 5000, 5100)));
    v
}

/// A client that follows `MOVED` itself and never retries anything else:
/// a write that failed for any other reason (a dead node, a refusal) is
/// recorded as not acknowledged, so a value is in a list at most once and
/// only if it was attempted.
struct Client {
    ports: Vec<u16>,
    conns: HashMap<u16, redis::Connection>,
}

impl Client {
    fn new(ports: Vec<u16>) -> Self {
        Self {
            ports,
            conns: HashMap::new(),
        }
    }

    fn conn(&mut self, port: u16) -> redis::RedisResult<&mut redis::Connection> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.conns.entry(port) {
            let c = redis::Client::open(format!("redis://:{PW}@127.0.0.1:{port}/"))?;
            let c = c.get_connection_with_timeout(Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            e.insert(c);
        }
        Ok(self.conns.get_mut(&port).expect("inserted above"))
    }

    /// Runs `cmd` at `port`, following up to 5 redirects; the port that
    /// answered last is written back.
    fn query<T: redis::FromRedisValue>(
        &mut self,
        port: &mut u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let mut last = None;
        for _ in 0..5 {
            let r = self.conn(*port).and_then(|c| cmd.query::<T>(c));
            match r {
                Err(e) if e.kind() == redis::ErrorKind::Moved => {
                    let (node, _slot) = e.redirect_node().expect("MOVED names a node");
                    *port = node
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("MOVED names host:port");
                    last = Some(e);
                }
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        self.conns.remove(port);
                        // Try the next node next time: it knows the owner.
                        let i = self.ports.iter().position(|p| p == port).unwrap_or(0);
                        *port = self.ports[(i + 1) % self.ports.len()];
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
        Err(last.expect("five redirects"))
    }
}

/// Pushes unique values to [`load_lists`] until `stop`, starting at
/// `first_port`, and returns what it saw.
fn load(ports: Vec<u16>, first_port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Record> {
    thread::spawn(move || {
        let lists = load_lists();
        let mut at = vec![first_port; lists.len()];
        let mut client = Client::new(ports);
        let mut rec = Record::default();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let j = i as usize % lists.len();
            rec.attempted.push((j, i));
            let cmd = redis::cmd("RPUSH").arg(&lists[j]).arg(i).clone();
            match client.query::<i64>(&mut at[j], &cmd) {
                Ok(_) => rec.pushes.push((j, i)),
                Err(e) => {
                    rec.errors.push(format!("{e}"));
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        rec
    })
}

/// Every acknowledged push is in its list exactly once; nothing that was
/// never attempted is; returns how many were acknowledged.
fn check_load(ports: &[u16], rec: &Record) -> usize {
    let lists = load_lists();
    let mut client = Client::new(ports.to_vec());
    let mut seen: Vec<Vec<u64>> = Vec::new();
    for l in &lists {
        let mut port = ports[0];
        let deadline = Instant::now() + Duration::from_secs(20);
        let v: Vec<u64> = loop {
            match client.query(&mut port, redis::cmd("LRANGE").arg(l).arg(0).arg(-1)) {
                Ok(v) => break v,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("LRANGE {l}: {e}"),
            }
        };
        let mut uniq = HashSet::new();
        for x in &v {
            assert!(uniq.insert(*x), "{l} holds {x} twice");
        }
        seen.push(v);
    }
    let attempted: HashSet<(usize, u64)> = rec.attempted.iter().copied().collect();
    for (j, v) in seen.iter().enumerate() {
        for x in v {
            assert!(
                attempted.contains(&(j, *x)),
                "{} holds {x}, never written",
                lists[j]
            );
        }
    }
    let mut lost = 0;
    for (j, i) in &rec.pushes {
        if !seen[*j].contains(i) {
            lost += 1;
            eprintln!("acknowledged RPUSH {} {i} lost", lists[*j]);
        }
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    let moved = rec.pushes.iter().filter(|(j, _)| *j < 8).count();
    assert!(moved > 20, "the load wrote to the moving range: {moved}");
    rec.pushes.len()
}

fn ports(c: &Cluster) -> Vec<u16> {
    c.nodes.iter().map(|n| n.port).collect()
}

/// Starts migration `id` of slots 0-99 from node `from` to the target
/// `to`, reached at `port` (the target itself, or a proxy in front of it).
fn start_via(c: &Cluster, from: usize, to: usize, port: u16, id: &str, settings: Value) {
    start_range(c, from, to, port, (0, 99), id, settings);
}

/// [`start_via`] for the slots `a..=b`.
fn start_range(
    c: &Cluster,
    from: usize,
    to: usize,
    port: u16,
    (a, b): (u16, u16),
    id: &str,
    settings: Value,
) {
    let mut req = json!({
        "id": id,
        "slots": [[a, b]],
        "target": {"id": node_id(to), "host": "127.0.0.1", "port": port},
    });
    if let (Some(r), Value::Object(extra)) = (req.as_object_mut(), settings) {
        r.extend(extra);
    }
    let (s, b) = post(&c.nodes[from], "/v1/migrations", req);
    assert_eq!(s, 201, "{b}");
}

/// Waits until node `n` stages at least one key of import `id`.
fn wait_staged(n: &common::TestNode, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) =
            common::http_get(n.admin_port, &format!("/v1/migrations/{id}")).expect("admin answers");
        let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
        if s == 200 && v["incoming"][0]["stagedKeys"].as_u64().unwrap_or(0) > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "nothing staged for {id}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A migration of 0-99 from node `from` to node `to` (reached at `port`)
/// that runs to the end: handoff-ready, frozen digest, flip (the target's
/// primary first), done; the target then holds exactly the frozen copy.
fn migrate_fully(c: &Cluster, from: usize, to: usize, port: u16, id: &str, flip: &Value) {
    start_via(
        c,
        from,
        to,
        port,
        id,
        json!({"writePauseTimeoutMs": 600_000}),
    );
    wait_phase(
        &c.nodes[from],
        "outgoing",
        id,
        &["handoff-ready"],
        Duration::from_secs(60),
    );
    let frozen = digest(&c.nodes[from], 0, 99);
    // The target first: clients reach it only after the source's flip, so
    // its copy is still the frozen one here.
    let st = c.push_to(&[to], flip);
    assert_eq!(st[0].0, 200, "flip: {}", st[0].1);
    assert_eq!(digest(&c.nodes[to], 0, 99), frozen);
    let rest: Vec<usize> = (0..c.nodes.len()).filter(|&i| i != to).collect();
    for (s, b) in c.push_to(&rest, flip) {
        assert_eq!(s, 200, "flip: {b}");
    }
    wait_phase(
        &c.nodes[from],
        "outgoing",
        id,
        &["done"],
        Duration::from_secs(30),
    );
    assert_eq!(digest(&c.nodes[from], 0, 99), "0".repeat(64));
}

/// A write straight to node `port`, in a thread: its reply arrives on the
/// channel (for writes that must wait).
fn write_in_thread(port: u16, key: String) -> std::sync::mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let c = redis::Client::open(format!("redis://:{PW}@127.0.0.1:{port}/")).expect("url");
        let mut c = c.get_connection().expect("connect");
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(1).query(&mut c);
        let _ = tx.send(r.map_err(|e| format!("{e}")));
    });
    rx
}

#[test]
fn a_link_cut_before_the_seal_rolls_both_sides_back_and_a_second_attempt_completes() {
    let c = Cluster::start(false);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    preload(&c.nodes[0], 0, 99, "l");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    let proxy = Proxy::start(c.nodes[1].port);
    start_via(
        &c,
        0,
        1,
        proxy.port,
        "cut1",
        json!({"maxBytesPerSec": 300_000}),
    );
    wait_staged(&c.nodes[1], "cut1");
    proxy.cut();
    let m = wait_phase(
        &c.nodes[0],
        "outgoing",
        "cut1",
        &["aborted"],
        Duration::from_secs(20),
    );
    assert!(
        m["lastError"].as_str().unwrap_or("").contains("link"),
        "{m:#}"
    );
    // The source serves the range again, the target still stages (it has
    // not heard the abort) and never serves it.
    let _: () = redis::cmd("SET")
        .arg(key_in("after-cut:", 0, 99))
        .arg(1)
        .query(&mut conn(&c.nodes[0]))
        .expect("the source resumed");
    assert_eq!(mig(&c.nodes[1], "incoming", "cut1")["phase"], "importing");
    // The link heals: the source's pending abort reaches the target, which
    // drops its staging long before its own idle watchdog would.
    thread::sleep(Duration::from_millis(500));
    proxy.restore();
    let imp = wait_phase(
        &c.nodes[1],
        "incoming",
        "cut1",
        &["aborted"],
        Duration::from_secs(10),
    );
    assert_eq!(imp["stagedKeys"], 0, "{imp:#}");
    let t2 = c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    for (s, b) in c.push_to(&[1, 0], &t2) {
        assert_eq!(s, 422, "a rolled-back migration is not flipped: {b}");
    }
    // Nothing to repair by hand: a second attempt over the same link
    // completes.
    migrate_fully(&c, 0, 1, proxy.port, "cut1b", &t2);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    assert!(rec.errors.is_empty(), "the load saw {:?}", &rec.errors);
    let n = check_load(&ports(&c), &rec);
    eprintln!("link cut before the seal: {n} acknowledged pushes, all kept");
}

#[test]
fn a_link_cut_after_the_seal_keeps_writes_blocked_until_the_target_confirms_or_the_flip() {
    let c = Cluster::start(false);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    preload(&c.nodes[0], 0, 99, "s");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    let proxy = Proxy::start(c.nodes[1].port);

    // 1. Sealed, the link cut, the pause runs past its limit: the source
    // cannot hear the target confirm an abort, so writes stay blocked.
    start_via(
        &c,
        0,
        1,
        proxy.port,
        "cs1",
        json!({"writePauseTimeoutMs": 3_000}),
    );
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "cs1",
        &["handoff-ready"],
        Duration::from_secs(30),
    );
    proxy.cut();
    let blocked = write_in_thread(c.nodes[0].port, key_in("blocked:", 0, 99));
    thread::sleep(Duration::from_millis(4_000));
    assert!(
        blocked.try_recv().is_err(),
        "a write ran while the target may still commit"
    );
    let m = mig(&c.nodes[0], "outgoing", "cs1");
    assert_eq!(m["phase"], "handoff-ready", "{m:#}");
    assert_eq!(mig(&c.nodes[1], "incoming", "cs1")["phase"], "sealed");
    // The link heals: the source's retried abort is confirmed, then (only
    // then) writes resume on the source.
    proxy.restore();
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "cs1",
        &["aborted"],
        Duration::from_secs(10),
    );
    assert_eq!(mig(&c.nodes[1], "incoming", "cs1")["phase"], "aborted");
    let r = blocked
        .recv_timeout(Duration::from_secs(5))
        .expect("the blocked write finished");
    r.expect("the blocked write ran on the source after the abort");

    // 2. Sealed, the link cut, then the flip: the source answers MOVED at
    // once but keeps the data until the target's commit is confirmed.
    start_via(
        &c,
        0,
        1,
        proxy.port,
        "cs2",
        json!({"writePauseTimeoutMs": 600_000}),
    );
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "cs2",
        &["handoff-ready"],
        Duration::from_secs(30),
    );
    let frozen = digest(&c.nodes[0], 0, 99);
    proxy.cut();
    // The source reaches the target's shard through the cut link only:
    // its topology names the proxy as shard b's primary.
    let t2 = c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    let mut t2_src = t2.clone();
    t2_src["shards"][1]["primary"]["port"] = json!(proxy.port);
    let st = c.push_to(&[1], &t2);
    assert_eq!(st[0].0, 200, "flip: {}", st[0].1);
    let st = c.push_to(&[0], &t2_src);
    assert_eq!(st[0].0, 200, "flip: {}", st[0].1);
    assert_eq!(digest(&c.nodes[1], 0, 99), frozen);
    thread::sleep(Duration::from_millis(1_500));
    assert_eq!(mig(&c.nodes[0], "outgoing", "cs2")["phase"], "finishing");
    assert_eq!(
        digest(&c.nodes[0], 0, 99),
        frozen,
        "nothing freed before the commit is confirmed"
    );
    proxy.restore();
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "cs2",
        &["done"],
        Duration::from_secs(20),
    );
    assert_eq!(digest(&c.nodes[0], 0, 99), "0".repeat(64));

    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    // (Clients sent to the proxy by the source's MOVED fail while it is
    // cut, and go to the target directly next.)
    let n = check_load(&ports(&c), &rec);
    eprintln!(
        "link cut after the seal: {n} acknowledged pushes, all kept ({} failed)",
        rec.errors.len()
    );
}

#[test]
fn a_target_primary_killed_before_the_seal_rolls_back_and_its_restart_drops_the_staging() {
    let mut c = Cluster::start(false);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    preload(&c.nodes[0], 0, 99, "k");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    start_0_99(&c, 0, 1, "tk", json!({"maxBytesPerSec": 300_000}));
    wait_staged(&c.nodes[1], "tk");
    c.nodes[1].kill9();
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "tk",
        &["aborted"],
        Duration::from_secs(20),
    );
    let _: () = redis::cmd("SET")
        .arg(key_in("after-kill:", 0, 99))
        .arg(1)
        .query(&mut conn(&c.nodes[0]))
        .expect("the source resumed");
    // The target comes back with its import rebuilt from its log; the
    // source's retried abort drops it.
    c.nodes[1].restart();
    let st = c.push_to(&[1], &t1);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    let imp = wait_phase(
        &c.nodes[1],
        "incoming",
        "tk",
        &["aborted"],
        Duration::from_secs(15),
    );
    assert_eq!(imp["stagedKeys"], 0, "{imp:#}");
    let n: i64 = redis::cmd("DBSIZE")
        .query(&mut conn(&c.nodes[1]))
        .expect("DBSIZE");
    assert_eq!(n, 0, "nothing staged ever became visible");
    let t2 = c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    for (s, b) in c.push_to(&[1, 0], &t2) {
        assert_eq!(s, 422, "a rolled-back migration is not flipped: {b}");
    }
    migrate_fully(&c, 0, 1, c.nodes[1].port, "tk2", &t2);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    assert!(rec.errors.is_empty(), "the load saw {:?}", &rec.errors);
    let n = check_load(&ports(&c), &rec);
    eprintln!("target killed before the seal: {n} acknowledged pushes, all kept");
}

#[test]
fn a_target_replica_killed_during_the_import_comes_back_with_the_committed_data() {
    let mut c = Cluster::start(true);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    for shard in 0..2 {
        wait_replica_caught_up(&c.nodes[shard * 2], &c.nodes[shard * 2 + 1]);
    }
    preload(&c.nodes[0], 0, 99, "r");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    start_0_99(
        &c,
        0,
        2,
        "rk",
        json!({"maxBytesPerSec": 500_000, "writePauseTimeoutMs": 600_000}),
    );
    wait_staged(&c.nodes[3], "rk");
    c.nodes[3].restart();
    let st = c.push_to(&[3], &t1);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "rk",
        &["handoff-ready"],
        Duration::from_secs(60),
    );
    let frozen = digest(&c.nodes[0], 0, 99);
    // Sealed by shard b's rule: the restarted replica holds the seal.
    wait_replica_caught_up(&c.nodes[2], &c.nodes[3]);
    let imp = mig(&c.nodes[3], "incoming", "rk");
    assert_eq!(imp["phase"], "sealed", "{imp:#}");
    flip_0_99(&c, "rk", &frozen);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    // The restarted replica holds the committed slots and the writes the
    // new owner took since.
    wait_replica_caught_up(&c.nodes[2], &c.nodes[3]);
    assert_eq!(digest(&c.nodes[3], 0, 99), digest(&c.nodes[2], 0, 99));
    let n = check_load(&ports(&c), &rec);
    eprintln!(
        "target replica killed during the import: {n} acknowledged pushes, all kept ({} refused)",
        rec.errors.len()
    );
}

#[test]
fn a_source_failover_at_the_flip_has_the_promoted_replica_confirm_and_free_and_never_take_the_slots_back(
) {
    let mut c = Cluster::start(true);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    for shard in 0..2 {
        wait_replica_caught_up(&c.nodes[shard * 2], &c.nodes[shard * 2 + 1]);
    }
    preload(&c.nodes[0], 0, 99, "f");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    start_0_99(&c, 0, 2, "sf", json!({"writePauseTimeoutMs": 600_000}));
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "sf",
        &["handoff-ready"],
        Duration::from_secs(30),
    );
    let frozen = digest(&c.nodes[0], 0, 99);
    // The flip reaches the target's shard (it commits); the source's
    // primary dies before it hears of it.
    let t2 = c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    for (s, b) in c.push_to(&[2, 3], &t2) {
        assert_eq!(s, 200, "flip: {b}");
    }
    c.nodes[0].kill9();
    // The operator fails shard a over to node 1, keeping the flip.
    let shard = |name: &str, slots: Value, p: usize, r: usize, epoch: u64| json!({"name": name, "slots": slots, "primary": addr(&c, p), "replicas": [addr(&c, r)], "epoch": epoch});
    let t3 = json!({"epoch": 3, "shards": [
        shard("a", json!([[100, 8191]]), 1, 0, 2),
        shard("b", json!([[0, 99], [8192, 16383]]), 2, 3, 1),
    ]});
    for (s, b) in c.push_to(&[1, 2, 3], &t3) {
        assert_eq!(s, 200, "failover: {b}");
    }
    // The promoted replica had the logged pause: it confirms the commit at
    // the target and frees the slots.
    wait_phase(
        &c.nodes[1],
        "outgoing",
        "sf",
        &["done"],
        Duration::from_secs(30),
    );
    assert_eq!(digest(&c.nodes[1], 0, 99), "0".repeat(64));
    assert_eq!(digest(&c.nodes[2], 0, 99), frozen);
    // A stale topology cannot give the slots back.
    let st = c.push_to(&[1], &t1);
    assert_ne!(st[0].0, 200, "an older topology was installed: {}", st[0].1);
    let e = redis::cmd("SET")
        .arg(key_in("after:", 0, 99))
        .arg(1)
        .query::<()>(&mut conn(&c.nodes[1]))
        .expect_err("the slots are the target's");
    assert_eq!(e.kind(), redis::ErrorKind::Moved, "{e}");
    // The old primary rejoins as a replica and frees the slots too.
    c.nodes[0].restart();
    let st = c.push_to(&[0], &t3);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    wait_replica_caught_up(&c.nodes[1], &c.nodes[0]);
    assert_eq!(digest(&c.nodes[0], 0, 99), "0".repeat(64));
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    let n = check_load(&ports(&c), &rec);
    eprintln!(
        "source failover at the flip: {n} acknowledged pushes, all kept ({} refused during the failover)",
        rec.errors.len()
    );
}

fn replica_full_resyncs(n: &common::TestNode) -> u64 {
    get_json(n, "/v1/status")["replication"]["fullResyncs"]
        .as_u64()
        .unwrap_or(0)
}

/// Writes about 256 KiB to node `n` (keys of shard b's slots 9000-9100),
/// then snapshots it: twice, and the log no longer reaches back before.
fn fill_and_snapshot(n: &common::TestNode, round: usize) {
    let mut c = conn(n);
    let value = "x".repeat(1024);
    let mut p = redis::pipe();
    let mut i = 0;
    let mut written = 0;
    while written < 256 {
        let k = format!("fill:{round}:{i}");
        i += 1;
        if (9000..=9100).contains(&key_slot(k.as_bytes())) {
            p.cmd("SET").arg(k).arg(&value).ignore();
            written += 1;
        }
    }
    let _: () = p.query(&mut c).expect("fill");
    let (s, b) = common::http(n.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
    assert_eq!(s, 200, "snapshot: {b}");
}

/// A target replica that was away while its primary committed an import
/// and then truncated its log needs a full resync. It comes back holding
/// that import's staging (rebuilt from its own log) while a second import
/// stages on its primary: the primary takes no snapshot while an import
/// stages, so the resync waits for that import's commit; the replica then
/// drops its stale staging and loads the primary's snapshot, which carries
/// both commits. Both shards write under `eventual` so the target shard
/// goes on without its replica, the way a replica falls that far behind.
#[test]
fn a_target_replica_full_resync_during_an_import_drops_its_staging_and_ends_with_its_primarys_digest(
) {
    // Small log segments, so two snapshots truncate the log.
    std::env::set_var("TESSERA_WAL_SEGMENT_BYTES", "65536");
    let mut c = Cluster::start_replicated("eventual");
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    for shard in 0..2 {
        wait_replica_caught_up(&c.nodes[shard * 2], &c.nodes[shard * 2 + 1]);
    }
    preload(&c.nodes[0], 0, 99, "fr");
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    let dst = c.nodes[2].port;
    // Slow enough that import 1 (~700 kB) cannot seal before the replica is
    // killed (the wait for its log below takes up to a second).
    let slow = json!({"maxBytesPerSec": 100_000, "writePauseTimeoutMs": 600_000});

    // 1. Import 1 (0-49): the target's replica stages part of it and dies;
    // the import completes without it.
    start_range(&c, 0, 2, dst, (0, 49), "fr1", slow);
    wait_staged(&c.nodes[3], "fr1");
    // Staged in memory is not yet in its log: the restart below rebuilds
    // the staging from the log, so wait until everything it holds is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = common::http(c.nodes[3].admin_port, "GET", "/v1/status", "").expect("admin");
        let st: serde_json::Value = serde_json::from_str(&b).expect("status JSON");
        if st["durableLsn"].as_u64().unwrap_or(0) >= st["lsn"].as_u64().unwrap_or(u64::MAX) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica's log never caught up: {st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.nodes[3].kill9();
    set_rate(&c.nodes[0], "fr1", 0);
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "fr1",
        &["handoff-ready"],
        Duration::from_secs(60),
    );
    let t2 = c.topology(2, &[(50, 8191)], &[(0, 49), (8192, 16383)]);
    for (s, b) in c.push_to(&[2, 0, 1], &t2) {
        assert_eq!(s, 200, "flip 1: {b}");
    }
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "fr1",
        &["done"],
        Duration::from_secs(30),
    );

    // 2. The target's log moves on past where the replica stopped.
    fill_and_snapshot(&c.nodes[2], 0);
    fill_and_snapshot(&c.nodes[2], 1);

    // 3. Import 2 (50-99) stages on the target's primary, slowly.
    let crawl = json!({"maxBytesPerSec": 50_000, "writePauseTimeoutMs": 600_000});
    start_range(&c, 0, 2, dst, (50, 99), "fr2", crawl);
    wait_staged(&c.nodes[2], "fr2");
    let (s, b) = common::http(c.nodes[2].admin_port, "POST", "/v1/snapshot", "").expect("admin");
    assert_eq!(s, 409, "no snapshot while an import stages: {b}");
    // The replica returns with import 1's staging from its own log.
    c.nodes[3].restart();
    let st = c.push_to(&[3], &t2);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    let stale = mig(&c.nodes[3], "incoming", "fr1");
    assert_eq!(stale["phase"], "importing", "{stale:#}");
    assert!(stale["stagedKeys"].as_u64().unwrap_or(0) > 0, "{stale:#}");
    // Its full resync waits while import 2 stages; the staging stays
    // invisible meanwhile.
    let mut seen_waiting = 0;
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(200));
        let resyncs = replica_full_resyncs(&c.nodes[3]);
        let phase = mig(&c.nodes[2], "incoming", "fr2")["phase"].clone();
        if phase == "importing" {
            assert_eq!(resyncs, 0, "a snapshot was taken while import 2 staged");
            seen_waiting += 1;
        }
        assert_eq!(
            digest(&c.nodes[3], 0, 99),
            "0".repeat(64),
            "staging is invisible"
        );
    }
    assert!(seen_waiting > 0, "import 2 ended before the replica asked");
    // Import 2 at full speed to its commit.
    set_rate(&c.nodes[0], "fr2", 0);
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "fr2",
        &["handoff-ready"],
        Duration::from_secs(60),
    );
    let t3 = c.topology(3, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    for (s, b) in c.push_to(&[2, 0, 1, 3], &t3) {
        assert_eq!(s, 200, "flip 2: {b}");
    }
    wait_phase(
        &c.nodes[0],
        "outgoing",
        "fr2",
        &["done"],
        Duration::from_secs(30),
    );

    // 4. The resync ran once the staging was committed: the replica
    // dropped its stale staging and holds exactly what its primary holds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while replica_full_resyncs(&c.nodes[3]) == 0 {
        assert!(Instant::now() < deadline, "the replica never resynced");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    wait_replica_caught_up(&c.nodes[2], &c.nodes[3]);
    assert_eq!(replica_full_resyncs(&c.nodes[3]), 1);
    let dropped = mig(&c.nodes[3], "incoming", "fr1");
    assert_eq!(dropped["phase"], "aborted", "{dropped:#}");
    assert_eq!(dropped["stagedKeys"], 0, "{dropped:#}");
    assert!(
        dropped["lastError"]
            .as_str()
            .unwrap_or("")
            .contains("full resync"),
        "{dropped:#}"
    );
    let moved = digest(&c.nodes[2], 0, 99);
    assert_ne!(moved, "0".repeat(64));
    assert_eq!(digest(&c.nodes[3], 0, 99), moved);
    assert_eq!(digest(&c.nodes[3], 0, 16383), digest(&c.nodes[2], 0, 16383));
    assert_eq!(digest(&c.nodes[0], 0, 99), "0".repeat(64));
    let n = check_load(&ports(&c), &rec);
    eprintln!(
        "target replica full resync during an import: {n} acknowledged pushes, all kept ({} refused)",
        rec.errors.len()
    );
}

/// Two replicated shards under a write load; migration `id` of slots 0-99
/// (preloaded with `tag`) from shard a to shard b starts through a proxy
/// that holds the link from the first `pattern` on. Returns once it holds.
fn held_at_the_target(
    tag: &str,
    id: &str,
    pattern: &[u8],
) -> (
    Cluster,
    Value,
    Proxy,
    Arc<AtomicBool>,
    thread::JoinHandle<Record>,
) {
    let c = Cluster::start(true);
    let t1 = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    c.push(&t1);
    for shard in 0..2 {
        wait_replica_caught_up(&c.nodes[shard * 2], &c.nodes[shard * 2 + 1]);
    }
    preload(&c.nodes[0], 0, 99, tag);
    let stop = Arc::new(AtomicBool::new(false));
    let w = load(ports(&c), c.nodes[0].port, stop.clone());
    let proxy = Proxy::start(c.nodes[2].port);
    proxy.hold_at(pattern);
    start_via(
        &c,
        0,
        2,
        proxy.port,
        id,
        json!({"writePauseTimeoutMs": 600_000}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.holding() {
        assert!(
            Instant::now() < deadline,
            "nothing reached the proxy's hold"
        );
        assert_ne!(mig(&c.nodes[0], "outgoing", id)["phase"], "aborted");
        thread::sleep(Duration::from_millis(10));
    }
    (c, t1, proxy, stop, w)
}

/// The target shard (nodes 2 and 3) loses its primary's lease: its replica
/// is killed and the primary refuses writes with `NOQUORUM`.
fn lose_target_lease(c: &mut Cluster) {
    c.nodes[3].kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tc = conn(&c.nodes[2]);
    loop {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key_in("lease:", 9000, 9100))
            .arg(1)
            .query(&mut tc);
        match r {
            Err(e) if e.to_string().contains("NOQUORUM") => return,
            _ => {
                assert!(Instant::now() < deadline, "the target kept its lease");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Flips slots 0-99 to shard b (its primary first), checks it holds the
/// source's frozen copy, and waits for the source to finish.
fn flip_0_99(c: &Cluster, id: &str, frozen: &str) {
    let t2 = c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]);
    let st = c.push_to(&[2], &t2);
    assert_eq!(st[0].0, 200, "flip: {}", st[0].1);
    assert_eq!(digest(&c.nodes[2], 0, 99), frozen);
    for (s, b) in c.push_to(&[3, 0, 1], &t2) {
        assert_eq!(s, 200, "flip: {b}");
    }
    wait_phase(
        &c.nodes[0],
        "outgoing",
        id,
        &["done"],
        Duration::from_secs(30),
    );
}

/// [`flip_0_99`], then checks that every write the load got acknowledged
/// is readable.
fn flip_0_99_and_finish(
    c: &Cluster,
    id: &str,
    frozen: &str,
    stop: Arc<AtomicBool>,
    w: thread::JoinHandle<Record>,
    what: &str,
) {
    flip_0_99(c, id, frozen);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let rec = w.join().expect("load");
    let n = check_load(&ports(c), &rec);
    eprintln!(
        "{what}: {n} acknowledged pushes, all kept ({} refused)",
        rec.errors.len()
    );
}

/// The seal reaches the target while its shard cannot meet its rule (the
/// target's replica is away and the primary's lease has run out): the
/// target answers `NOQUORUM` and the source sends the seal again until the
/// replica is back, within the pause, instead of aborting.
#[test]
fn a_seal_refused_with_noquorum_is_resent_until_the_target_replica_is_back() {
    // The source reaches the target through a proxy that holds the seal.
    let (mut c, t1, proxy, stop, w) = held_at_the_target("q", "sq", b"$4\r\nSEAL\r\n");
    // The target's replica goes away; the target's lease runs out.
    lose_target_lease(&mut c);
    // The seal arrives now and is refused; the source resends it.
    proxy.release();
    thread::sleep(Duration::from_millis(1_500));
    let m = mig(&c.nodes[0], "outgoing", "sq");
    assert_eq!(m["phase"], "paused", "{m:#}");
    assert_eq!(mig(&c.nodes[2], "incoming", "sq")["phase"], "importing");
    c.nodes[3].restart();
    let st = c.push_to(&[3], &t1);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    let m = wait_phase(
        &c.nodes[0],
        "outgoing",
        "sq",
        &["handoff-ready"],
        Duration::from_secs(30),
    );
    assert!(m["lastError"].is_null(), "{m:#}");
    let frozen = digest(&c.nodes[0], 0, 99);
    wait_replica_caught_up(&c.nodes[2], &c.nodes[3]);
    assert_eq!(mig(&c.nodes[3], "incoming", "sq")["phase"], "sealed");
    // The target first: clients reach it only after the source's flip.
    flip_0_99_and_finish(&c, "sq", &frozen, stop, w, "seal refused with NOQUORUM");
}

/// Chunks reach the target while its shard cannot meet its rule: the
/// source has several on the link, the target refuses the first (its
/// lease ran out) and every one behind it, nothing applied; the source
/// reads all their replies, then sends them again in order, one at a time,
/// until the replica is back, and the import completes whole.
#[test]
fn chunks_on_the_link_refused_by_a_target_without_quorum_are_resent_in_order() {
    // The first chunk, and whatever follows it, waits in the proxy.
    let (mut c, t1, proxy, stop, w) = held_at_the_target("w", "wq", b"$5\r\nAPPLY\r\n");
    // The source fills its window behind the held chunk.
    thread::sleep(Duration::from_millis(300));
    lose_target_lease(&mut c);
    proxy.release();
    thread::sleep(Duration::from_millis(1_500));
    let imp = mig(&c.nodes[2], "incoming", "wq");
    assert_eq!(imp["phase"], "importing", "{imp:#}");
    assert_eq!(
        imp["bytesReceived"], 0,
        "nothing applied without quorum: {imp:#}"
    );
    assert_eq!(mig(&c.nodes[0], "outgoing", "wq")["phase"], "snapshot");
    c.nodes[3].restart();
    let st = c.push_to(&[3], &t1);
    assert_eq!(st[0].0, 200, "{}", st[0].1);
    let m = wait_phase(
        &c.nodes[0],
        "outgoing",
        "wq",
        &["handoff-ready"],
        Duration::from_secs(30),
    );
    assert!(m["lastError"].is_null(), "{m:#}");
    let frozen = digest(&c.nodes[0], 0, 99);
    flip_0_99_and_finish(&c, "wq", &frozen, stop, w, "chunks refused without quorum");
}

/// `TMIGRATE` by hand: a seal sent again for the same chunk is answered
/// `+OK` (from the first seal's record), not refused; a seal for another
/// chunk is refused.
#[test]
fn a_repeated_seal_is_answered_from_the_first_one() {
    let c = Cluster::start(false);
    c.push(&c.topology(1, &[(0, 8191)], &[(8192, 16383)]));
    let mut t = conn(&c.nodes[1]);
    let call = |t: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("TMIGRATE");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query(t)
    };
    let key = key_in("by-hand:", 0, 99);
    let payload = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len());
    let src = node_id(0);
    assert_eq!(
        call(&mut t, &["START", "h1", &src, "0-99"]).expect("start"),
        "OK"
    );
    assert_eq!(
        call(&mut t, &["APPLY", "h1", "0", &payload]).expect("apply"),
        "OK"
    );
    assert_eq!(call(&mut t, &["SEAL", "h1", "1"]).expect("seal"), "OK");
    assert_eq!(
        call(&mut t, &["SEAL", "h1", "1"]).expect("the same seal again"),
        "OK"
    );
    let e = call(&mut t, &["SEAL", "h1", "2"]).expect_err("a seal past what was received");
    assert!(e.to_string().contains("sealed"), "{e}");
    let imp = mig(&c.nodes[1], "incoming", "h1");
    assert_eq!(
        (imp["phase"].as_str(), imp["stagedKeys"].as_u64()),
        (Some("sealed"), Some(1))
    );
}

/// `TMIGRATE APPLY` by hand: a chunk ahead of the expected one is refused
/// unapplied with `OUTOFORDER` (the import lives on), and a chunk sent
/// again is answered without being applied twice.
#[test]
fn a_chunk_ahead_is_refused_unapplied_and_a_chunk_sent_again_is_not_applied_twice() {
    let c = Cluster::start(false);
    c.push(&c.topology(1, &[(0, 8191)], &[(8192, 16383)]));
    let mut t = conn(&c.nodes[1]);
    let call = |t: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("TMIGRATE");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query(t)
    };
    let key = key_in("ahead:", 0, 99);
    let push = |v: &str| {
        format!(
            "*3\r\n$5\r\nRPUSH\r\n${}\r\n{key}\r\n${}\r\n{v}\r\n",
            key.len(),
            v.len()
        )
    };
    let src = node_id(0);
    assert_eq!(
        call(&mut t, &["START", "h2", &src, "0-99"]).expect("start"),
        "OK"
    );
    let e = call(&mut t, &["APPLY", "h2", "1", &push("b")]).expect_err("chunk 1 before chunk 0");
    assert!(e.to_string().contains("OUTOFORDER"), "{e}");
    assert_eq!(mig(&c.nodes[1], "incoming", "h2")["phase"], "importing");
    for (seq, v) in [("0", "a"), ("0", "a"), ("1", "b"), ("0", "a"), ("1", "b")] {
        assert_eq!(
            call(&mut t, &["APPLY", "h2", seq, &push(v)]).expect("apply"),
            "OK",
            "chunk {seq}"
        );
    }
    assert_eq!(call(&mut t, &["SEAL", "h2", "2"]).expect("seal"), "OK");
    c.push(&c.topology(2, &[(100, 8191)], &[(0, 99), (8192, 16383)]));
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query(&mut t)
        .expect("lrange");
    assert_eq!(list, ["a", "b"], "each chunk applied once, in order");
}
