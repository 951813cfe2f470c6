//! Shared by the slot-migration tests (tests/migration.rs,
//! tests/migration_faults.rs): two shards (primary + replica each, `quorum`,
//! a cluster password) or two lone primaries, the test playing operator
//! through the admin API, and a cluster client writing throughout with
//! every acknowledged write recorded.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{http, http_get, TestNode};

pub const PW: &str = "migration-secret";

pub fn node_id(i: usize) -> String {
    format!("{:040x}", 0xbeef00 + i)
}

pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

pub fn key_slot(key: &[u8]) -> u16 {
    let mut k = key;
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                k = &key[open + 1..open + 1 + len];
            }
        }
    }
    crc16(k) & 16383
}

pub struct Cluster {
    pub nodes: Vec<TestNode>,
    _pw: tempfile::TempDir,
}

pub fn start_node(
    i: usize,
    pw: &std::path::Path,
    consistency: &str,
    replicas: &str,
    extra: &[&str],
) -> TestNode {
    let id = node_id(i);
    let mut args = vec![
        "--node-id",
        &id,
        "--consistency",
        consistency,
        "--replicas",
        replicas,
        "--requirepass-file",
        pw.to_str().expect("UTF-8 path"),
        "--lease-ms",
        "1500",
    ];
    args.extend_from_slice(extra);
    TestNode::start(&args)
}

pub fn addr(c: &Cluster, i: usize) -> Value {
    json!({"id": node_id(i), "host": "127.0.0.1", "port": c.nodes[i].port})
}

impl Cluster {
    /// Nodes 0,1: shard a (primary 0); nodes 2,3: shard b (primary 2).
    /// `per_shard` 1 starts only the primaries (nodes 0 and 1 = a and b).
    pub fn start(with_replicas: bool) -> Self {
        Self::start_with(with_replicas, &[])
    }

    /// `target_extra`: more flags for the second shard's primary.
    pub fn start_with(with_replicas: bool, target_extra: &[&str]) -> Self {
        Self::start_as(with_replicas, "quorum", target_extra)
    }

    /// Both shards with a replica, under `consistency` (`eventual`: a
    /// shard writes on while its replica is away).
    pub fn start_replicated(consistency: &str) -> Self {
        Self::start_as(true, consistency, &[])
    }

    fn start_as(with_replicas: bool, consistency: &str, target_extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PW).expect("write the password file");
        let nodes = if with_replicas {
            (0..4)
                .map(|i| {
                    start_node(
                        i,
                        &pw,
                        consistency,
                        "1",
                        if i == 2 { target_extra } else { &[] },
                    )
                })
                .collect()
        } else {
            (0..2)
                .map(|i| {
                    start_node(
                        i,
                        &pw,
                        "eventual",
                        "0",
                        if i == 1 { target_extra } else { &[] },
                    )
                })
                .collect()
        };
        Self { nodes, _pw: dir }
    }

    pub fn primary(&self, shard: usize) -> &TestNode {
        if self.nodes.len() == 4 {
            &self.nodes[shard * 2]
        } else {
            &self.nodes[shard]
        }
    }

    pub fn topology(&self, epoch: u64, a: &[(u16, u16)], b: &[(u16, u16)]) -> Value {
        let shard = |name: &str, slots: &[(u16, u16)], p: usize, r: Option<usize>| {
            json!({
                "name": name,
                "slots": slots.iter().map(|&(x, y)| json!([x, y])).collect::<Vec<_>>(),
                "primary": addr(self, p),
                "replicas": r.map(|r| vec![addr(self, r)]).unwrap_or_default(),
                "epoch": if r.is_some() { 1 } else { 0 },
            })
        };
        let (sa, sb) = if self.nodes.len() == 4 {
            (shard("a", a, 0, Some(1)), shard("b", b, 2, Some(3)))
        } else {
            (shard("a", a, 0, None), shard("b", b, 1, None))
        };
        json!({"epoch": epoch, "shards": [sa, sb]})
    }

    /// Pushes to the listed nodes (in order); returns their statuses.
    pub fn push_to(&self, order: &[usize], topo: &Value) -> Vec<(u16, String)> {
        order
            .iter()
            .map(|&i| {
                http(
                    self.nodes[i].admin_port,
                    "PUT",
                    "/v1/topology",
                    &topo.to_string(),
                )
                .expect("admin answers")
            })
            .collect()
    }

    pub fn push(&self, topo: &Value) {
        let order: Vec<usize> = (0..self.nodes.len()).collect();
        for (i, (s, b)) in self.push_to(&order, topo).into_iter().enumerate() {
            assert_eq!(s, 200, "topology push to node {i}: {b}");
        }
    }
}

pub fn conn(n: &TestNode) -> redis::Connection {
    let c = redis::Client::open(format!("redis://:{PW}@127.0.0.1:{}/", n.port)).expect("url");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.get_connection() {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

pub fn get_json(n: &TestNode, path: &str) -> Value {
    let (s, b) = http_get(n.admin_port, path).expect("admin answers");
    assert_eq!(s, 200, "{path}: {b}");
    serde_json::from_str(&b).expect("JSON")
}

pub fn post(n: &TestNode, path: &str, body: Value) -> (u16, Value) {
    let (s, b) = http(n.admin_port, "POST", path, &body.to_string()).expect("admin answers");
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// Changes the bytes/s limit of the running migration `id` on its source
/// `n` (0: unlimited) and asserts the source took it.
pub fn set_rate(n: &TestNode, id: &str, bytes_per_sec: u64) {
    let (s, b) = http(
        n.admin_port,
        "PATCH",
        &format!("/v1/migrations/{id}"),
        &json!({"maxBytesPerSec": bytes_per_sec}).to_string(),
    )
    .expect("admin answers");
    assert_eq!(s, 200, "PATCH {id}: {b}");
}

/// Starts migration `id` of slots 0-99 from node `from` to node `to`, with
/// `settings` merged into the request, and asserts the source accepted it.
pub fn start_0_99(c: &Cluster, from: usize, to: usize, id: &str, settings: Value) {
    let mut req = json!({
        "id": id,
        "slots": [[0, 99]],
        "target": {"id": node_id(to), "host": "127.0.0.1", "port": c.nodes[to].port},
    });
    if let (Some(r), Value::Object(extra)) = (req.as_object_mut(), settings) {
        r.extend(extra);
    }
    let (s, b) = post(&c.nodes[from], "/v1/migrations", req);
    assert_eq!(s, 201, "{b}");
}

/// The migration `id` as node `n` reports it, in direction "outgoing" or
/// "incoming".
pub fn mig(n: &TestNode, dir: &str, id: &str) -> Value {
    let v = get_json(n, &format!("/v1/migrations/{id}"));
    v[dir][0].clone()
}

pub fn wait_phase(n: &TestNode, dir: &str, id: &str, want: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let m = mig(n, dir, id);
        if want.iter().any(|w| m["phase"] == *w) {
            return m;
        }
        assert!(
            m["phase"] != "aborted" || want.contains(&"aborted"),
            "migration {id} aborted: {m:#}"
        );
        assert!(Instant::now() < deadline, "migration {id} stuck: {m:#}");
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn digest(n: &TestNode, a: u16, b: u16) -> String {
    redis::cmd("CLUSTER")
        .arg("SLOTDIGEST")
        .arg(a)
        .arg(b)
        .query(&mut conn(n))
        .expect("SLOTDIGEST")
}

pub fn wait_replica_caught_up(primary: &TestNode, replica: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = get_json(primary, "/v1/status")["lsn"].as_u64().unwrap_or(0);
        let r = get_json(replica, "/v1/status")["lsn"].as_u64().unwrap_or(0);
        if r >= p {
            return;
        }
        assert!(Instant::now() < deadline, "replica stuck at {r} < {p}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A key (with `prefix`) whose slot is in `a..=b`.
pub fn key_in(prefix: &str, a: u16, b: u16) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| (a..=b).contains(&key_slot(k.as_bytes())))
        .expect("some key hashes into any range")
}

/// Keys of every type, including collections bigger than one chunk, in
/// slots `a..=b`, written through `n`.
pub fn preload(n: &TestNode, a: u16, b: u16, tag: &str) -> Vec<String> {
    let mut c = conn(n);
    let (h, z, s, l, st) = (
        key_in(&format!("{tag}:hash:"), a, b),
        key_in(&format!("{tag}:zset:"), a, b),
        key_in(&format!("{tag}:set:"), a, b),
        key_in(&format!("{tag}:list:"), a, b),
        key_in(&format!("{tag}:str:"), a, b),
    );
    let mut p = redis::pipe();
    for i in 0..20_000 {
        p.cmd("HSET").arg(&h).arg(format!("f{i}")).arg(i).ignore();
        p.cmd("ZADD")
            .arg(&z)
            .arg(i as f64 / 7.0)
            .arg(format!("m{i}"))
            .ignore();
        if i < 5_000 {
            p.cmd("SADD").arg(&s).arg(i).ignore();
            p.cmd("RPUSH").arg(&l).arg(i).ignore();
        }
    }
    p.cmd("SET")
        .arg(&st)
        .arg("v")
        .arg("PX")
        .arg(3_600_000)
        .ignore();
    let _: () = p.query(&mut c).expect("preload");
    // Many small keys too, so the copy spans many slots and batches.
    let mut p = redis::pipe();
    let mut n = 0;
    for i in 0.. {
        let k = format!("{tag}:small:{i}");
        if (a..=b).contains(&key_slot(k.as_bytes())) {
            p.cmd("SET").arg(k).arg(i).ignore();
            n += 1;
            if n == 20_000 {
                break;
            }
        }
    }
    let _: () = p.query(&mut c).expect("preload small keys");
    vec![h, z, s, l, st]
}

/// What the writer saw: acknowledged list pushes (list, element), acked
/// SETs, and every error text.
#[derive(Default)]
pub struct Record {
    pub pushes: Vec<(usize, u64)>,
    pub attempted: Vec<(usize, u64)>,
    pub sets: Vec<u64>,
    pub errors: Vec<String>,
}

pub const LISTS: usize = 128;

pub fn writer(
    c: &Cluster,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
) -> thread::JoinHandle<()> {
    let urls: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("redis://:{PW}@127.0.0.1:{}/", n.port))
        .collect();
    thread::spawn(move || {
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .build()
            .expect("cluster client");
        let mut conn = client.get_connection().expect("cluster connection");
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let j = (i as usize) % LISTS;
            rec.lock().expect("lock").attempted.push((j, i));
            let r: redis::RedisResult<i64> = redis::cmd("RPUSH")
                .arg(format!("list:{j}"))
                .arg(i)
                .query(&mut conn);
            let r2: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("k:{i}"))
                .arg(i)
                .query(&mut conn);
            let mut g = rec.lock().expect("lock");
            match r {
                Ok(_) => g.pushes.push((j, i)),
                Err(e) => g.errors.push(format!("RPUSH: {e}")),
            }
            match r2 {
                Ok(()) => g.sets.push(i),
                Err(e) => g.errors.push(format!("SET: {e}")),
            }
        }
    })
}

pub fn cluster_conn(c: &Cluster) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("redis://:{PW}@127.0.0.1:{}/", n.port))
        .collect();
    redis::cluster::ClusterClientBuilder::new(urls)
        .build()
        .expect("cluster client")
        .get_connection()
        .expect("cluster connection")
}

/// Every acknowledged push readable exactly once from the owner; nothing
/// attempted appears twice; acknowledged SETs readable.
pub fn check_every_acknowledged_write_once(c: &Cluster, rec: &Record) {
    let client = redis::cluster::ClusterClientBuilder::new(
        c.nodes
            .iter()
            .map(|n| format!("redis://:{PW}@127.0.0.1:{}/", n.port))
            .collect::<Vec<_>>(),
    )
    .build()
    .expect("cluster client");
    let mut cc = client.get_connection().expect("cluster connection");
    let mut seen: HashMap<usize, Vec<u64>> = HashMap::new();
    for j in 0..LISTS {
        let v: Vec<u64> = redis::cmd("LRANGE")
            .arg(format!("list:{j}"))
            .arg(0)
            .arg(-1)
            .query(&mut cc)
            .expect("LRANGE");
        let mut uniq = HashSet::new();
        for x in &v {
            assert!(uniq.insert(*x), "list:{j} holds {x} twice");
        }
        seen.insert(j, v);
    }
    for (j, i) in &rec.pushes {
        assert!(seen[j].contains(i), "acknowledged RPUSH list:{j} {i} lost");
    }
    let attempted: HashSet<(usize, u64)> = rec.attempted.iter().copied().collect();
    for (j, v) in &seen {
        for i in v {
            assert!(
                attempted.contains(&(*j, *i)),
                "list:{j} holds {i} never written"
            );
        }
    }
    for i in rec.sets.iter().step_by(7) {
        let v: Option<u64> = redis::cmd("GET")
            .arg(format!("k:{i}"))
            .query(&mut cc)
            .expect("GET");
        assert_eq!(v, Some(*i), "acknowledged SET k:{i} lost");
    }
}
