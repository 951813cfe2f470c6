//! Durability of a storage node, tested on real processes: kill -9 under
//! load, torn and corrupted logs, corrupted snapshots, snapshots taken while
//! writing, FLUSHALL, log truncation.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{http, TestNode};
use rand::Rng;
use redis::Connection;

/// Small segments so a few hundred KiB of log spans many files.
const SEGMENT_BYTES: &str = "65536";

fn small_segments() {
    // Inherited by the node processes the tests spawn.
    std::env::set_var("TESSERA_WAL_SEGMENT_BYTES", SEGMENT_BYTES);
}

fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("wal")
}
fn snap_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("snapshots")
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn conn(node: &TestNode) -> Connection {
    let c = node.conn();
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    c
}

fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).expect("GET answers")
}

fn snapshot_now(node: &TestNode) -> String {
    let (status, body) =
        http(node.admin_port, "POST", "/v1/snapshot", "").expect("admin port answers");
    assert_eq!(status, 200, "snapshot failed: {body}");
    body
}

/// What a key may hold after a crash: its last acknowledged value, or the
/// value of the one write that was in flight when the node died.
#[derive(Clone, Debug, Default)]
struct Expect {
    acked: Option<String>,
    in_flight: Option<String>,
}

impl Expect {
    fn check(&self, key: &str, actual: &Option<String>) {
        assert!(
            *actual == self.acked || (self.in_flight.is_some() && *actual == self.in_flight),
            "{key}: found {actual:?}, acknowledged {:?}, in flight {:?}",
            self.acked,
            self.in_flight
        );
    }
}

/// One writer thread: SETs and INCRs on keys only it touches, until `stop`
/// or the connection fails; records every acknowledged write.
fn writer(
    node_port: u16,
    t: usize,
    round: usize,
    keys: usize,
    mut model: HashMap<String, Expect>,
    stop: Arc<AtomicBool>,
) -> HashMap<String, Expect> {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{node_port}/")) else {
        return model;
    };
    let Ok(mut c) = client.get_connection() else {
        return model;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut rng = rand::thread_rng();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = rng.gen_range(0..keys);
        seq += 1;
        if seq % 2 == 0 {
            let key = format!("s:{t}:{i}");
            let value = format!("{round}-{seq}");
            let e = model.entry(key.clone()).or_default();
            e.in_flight = Some(value.clone());
            match redis::cmd("SET").arg(&key).arg(&value).query::<()>(&mut c) {
                Ok(()) => {
                    e.acked = Some(value);
                    e.in_flight = None;
                }
                Err(_) => return model,
            }
        } else {
            let key = format!("c:{t}:{i}");
            let e = model.entry(key.clone()).or_default();
            let next = e
                .acked
                .as_deref()
                .map_or(0, |v| v.parse::<i64>().expect("counter"))
                + 1;
            e.in_flight = Some(next.to_string());
            match redis::cmd("INCR").arg(&key).query::<i64>(&mut c) {
                Ok(v) => {
                    assert_eq!(v, next, "{key}: INCR answered {v}, expected {next}");
                    e.acked = Some(v.to_string());
                    e.in_flight = None;
                }
                Err(_) => return model,
            }
        }
    }
    model
}

/// Checks every key of the model against the node, then makes the model
/// what the node has (an in-flight write may or may not have survived).
fn verify_and_settle(node: &TestNode, models: &mut [HashMap<String, Expect>]) -> usize {
    let mut c = conn(node);
    let mut checked = 0;
    for model in models.iter_mut() {
        for (key, e) in model.iter_mut() {
            let actual = get(&mut c, key);
            e.check(key, &actual);
            *e = Expect {
                acked: actual,
                in_flight: None,
            };
            checked += 1;
        }
    }
    checked
}

#[test]
fn kill9_under_load_loses_no_acknowledged_write_fsync_always() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    const THREADS: usize = 8;
    let mut models: Vec<HashMap<String, Expect>> = vec![HashMap::new(); THREADS];
    let mut rng = rand::thread_rng();
    for round in 0..5 {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (stop, model, port) = (stop.clone(), std::mem::take(&mut models[t]), node.port);
                thread::spawn(move || writer(port, t, round, 40, model, stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        // Killed while the writers are mid-command.
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for (t, h) in handles.into_iter().enumerate() {
            models[t] = h.join().expect("writer thread");
        }
        node.restart();
        let checked = verify_and_settle(&node, &mut models);
        assert!(checked > 0, "round {round}: the writers wrote nothing");
    }
}

/// The offsets of the records of a segment file.
/// Offsets of a segment's records; they end at the end of the file or
/// where only zeros follow (a preallocated segment's unwritten part).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 24; // segment header
    let mut v = Vec::new();
    while at < bytes.len() && !bytes[at..].iter().all(|&b| b == 0) {
        let (_, n) = tessera::node::wal::decode_record(&bytes[at..]).expect("a valid record");
        v.push(at);
        at += n;
    }
    v
}

fn set_many(node: &TestNode, prefix: &str, n: usize, value_len: usize) -> HashMap<String, String> {
    let mut c = conn(node);
    let mut m = HashMap::new();
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let value = format!("{i}:{}", "x".repeat(value_len));
        redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query::<()>(&mut c)
            .expect("SET");
        m.insert(key, value);
    }
    m
}

fn assert_all(node: &TestNode, expected: &HashMap<String, String>) {
    let mut c = conn(node);
    for (k, v) in expected {
        assert_eq!(get(&mut c, k).as_deref(), Some(v.as_str()), "key {k}");
    }
}

#[test]
fn torn_tail_is_truncated_and_earlier_records_survive() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    let mut expected = set_many(&node, "t", 200, 10);
    node.kill9();

    // Garbage after the last record (a write cut short, then junk), in the
    // segment's preallocated part if it has one, else appended.
    let last = files(&wal_dir(&node.dir), ".wal").pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read the segment");
    let offsets = record_offsets(&bytes);
    let last_at = *offsets.last().expect("records");
    let (_, n) = tessera::node::wal::decode_record(&bytes[last_at..]).expect("the last record");
    let len_before = last_at + n;
    let garbage: Vec<u8> = std::iter::repeat_n(0x5Au8, 1)
        .chain((0..99).map(|i| (i * 37 % 251) as u8))
        .collect();
    bytes.resize(bytes.len().max(len_before + garbage.len()), 0);
    bytes[len_before..len_before + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(&last, &bytes).expect("write garbage");
    let (status, stderr) =
        TestNode::try_start_in(&node.dir, &["--fsync", "always"], Duration::from_secs(5));
    assert!(status.is_none(), "the node must start: {stderr}");
    assert!(
        stderr.contains("torn tail"),
        "a warning names the torn tail: {stderr}"
    );
    assert!(
        stderr.contains(&last.display().to_string()),
        "the warning names the file: {stderr}"
    );
    // (Field formatting may carry ANSI colour codes: look for the number.)
    assert!(
        stderr.contains(&len_before.to_string()),
        "the warning names the offset: {stderr}"
    );
    node.restart();
    assert_all(&node, &expected);

    // The last record cut in half.
    node.kill9();
    let last = files(&wal_dir(&node.dir), ".wal").pop().expect("a segment");
    let bytes = std::fs::read(&last).expect("read the segment");
    let offsets = record_offsets(&bytes);
    let cut_at = *offsets.last().expect("records");
    std::fs::write(&last, &bytes[..cut_at + 13]).expect("truncate mid-record");
    node.restart();
    expected.remove("t199");
    assert_all(&node, &expected);
    assert_eq!(
        get(&mut conn(&node), "t199"),
        None,
        "the torn record is gone"
    );
    // And the log goes on after the cut.
    redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query::<()>(&mut conn(&node))
        .expect("SET");
    node.restart();
    assert_eq!(get(&mut conn(&node), "after").as_deref(), Some("1"));
    assert_all(&node, &expected);
}

#[test]
fn flipped_bit_in_an_older_segment_refuses_to_start() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    set_many(&node, "k", 1500, 100);
    node.kill9();
    let segs = files(&wal_dir(&node.dir), ".wal");
    assert!(segs.len() >= 3, "small segments: {segs:?}");
    let victim = &segs[segs.len() / 2];
    let mut bytes = std::fs::read(victim).expect("read");
    let offsets = record_offsets(&bytes);
    let at = offsets[offsets.len() / 2];
    bytes[at + 20] ^= 0x08;
    std::fs::write(victim, &bytes).expect("flip a bit");

    let started = Instant::now();
    let (status, stderr) = TestNode::try_start_in(&node.dir, &[], Duration::from_secs(20));
    let status = status.expect("the node exits instead of serving");
    assert!(!status.success(), "non-zero exit status");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        stderr.contains(&victim.display().to_string()),
        "stderr names the file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("offset {at}")),
        "stderr names the offset {at}: {stderr}"
    );
}

/// Flips a bit in the middle of a file.
fn flip_middle(path: &Path) {
    let mut b = std::fs::read(path).expect("read");
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(path, &b).expect("write");
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_older_and_refuses_when_impossible() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    let mut expected = set_many(&node, "a", 1000, 200);
    snapshot_now(&node);
    expected.extend(set_many(&node, "b", 500, 200));
    snapshot_now(&node);
    expected.extend(set_many(&node, "c", 300, 200));
    node.kill9();
    let snaps = files(&snap_dir(&node.dir), ".tsnap");
    assert_eq!(snaps.len(), 2, "two snapshots kept: {snaps:?}");
    let first_seg = files(&wal_dir(&node.dir), ".wal")[0].clone();
    assert!(
        !first_seg.ends_with("00000000000000000001.wal"),
        "the log was truncated through the older snapshot: {first_seg:?}"
    );

    let newest = snaps[1].clone();
    flip_middle(&newest);
    let (status, stderr) =
        TestNode::try_start_in(&node.dir, &["--fsync", "always"], Duration::from_secs(5));
    assert!(status.is_none(), "the node falls back and starts: {stderr}");
    assert!(
        stderr.contains(&newest.display().to_string()),
        "the warning names the corrupt file: {stderr}"
    );
    let aside = newest.with_extension("tsnap.corrupt");
    assert!(
        aside.exists(),
        "the corrupt snapshot is set aside: {aside:?}"
    );
    node.restart();
    assert_all(&node, &expected);
    node.kill9();

    // Both snapshots corrupt and the log truncated: nothing can rebuild the
    // data, so the node refuses, naming the newest corrupt file.
    std::fs::rename(&aside, &newest).expect("put the corrupt snapshot back");
    flip_middle(&snaps[0]);
    let (status, stderr) = TestNode::try_start_in(&node.dir, &[], Duration::from_secs(20));
    let status = status.expect("the node refuses to start");
    assert!(!status.success());
    assert!(
        stderr.contains(&newest.display().to_string()),
        "stderr names the newest snapshot: {stderr}"
    );
    assert!(
        stderr.contains("offset"),
        "stderr names an offset: {stderr}"
    );
}

/// INCR-only writers over keys spread across many slots, stopped cleanly.
fn incr_load(
    port: u16,
    threads: usize,
    keys: usize,
    run_for: Duration,
    extra: impl Fn() + Send + 'static,
) -> HashMap<String, i64> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
                let mut c = client.get_connection().expect("connect");
                let mut counts: HashMap<String, i64> = HashMap::new();
                let mut rng = rand::thread_rng();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("n:{t}:{}", rng.gen_range(0..keys));
                    let v: i64 = redis::cmd("INCR").arg(&key).query(&mut c).expect("INCR");
                    let e = counts.entry(key).or_default();
                    *e += 1;
                    assert_eq!(v, *e);
                }
                counts
            })
        })
        .collect();
    let side = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                extra();
            }
        })
    };
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    side.join().expect("side thread");
    let mut all = HashMap::new();
    for h in handles {
        all.extend(h.join().expect("writer"));
    }
    all
}

#[test]
fn snapshots_while_writing_recover_exact_incr_counts() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always", "--snapshot-log-bytes", "30000"]);
    let admin = node.admin_port;
    let counts = incr_load(node.port, 8, 500, Duration::from_secs(4), move || {
        let _ = http(admin, "POST", "/v1/snapshot", "");
        thread::sleep(Duration::from_millis(50));
    });
    let snaps = files(&snap_dir(&node.dir), ".tsnap");
    assert!(!snaps.is_empty(), "snapshots were taken during the load");
    node.restart();
    let mut c = conn(&node);
    for (k, v) in &counts {
        assert_eq!(get(&mut c, k), Some(v.to_string()), "counter {k}");
    }
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(dbsize, counts.len());
}

/// Every key the test may have written, with its value.
fn state(node: &TestNode, keys: &HashSet<String>) -> (HashMap<String, Option<String>>, usize) {
    let mut c = conn(node);
    let m = keys.iter().map(|k| (k.clone(), get(&mut c, k))).collect();
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    (m, dbsize)
}

#[test]
fn flushall_interleaved_with_snapshots_and_writes_restarts_to_the_exact_state() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    let (port, admin) = (node.port, node.admin_port);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
                let mut c = client.get_connection().expect("connect");
                let mut keys = HashSet::new();
                let mut rng = rand::thread_rng();
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.gen_range(0..300);
                    let key = format!("f:{t}:{i}");
                    if i % 2 == 0 {
                        redis::cmd("INCR")
                            .arg(&key)
                            .query::<i64>(&mut c)
                            .expect("INCR");
                    } else {
                        redis::cmd("APPEND")
                            .arg(&key)
                            .arg("x")
                            .query::<i64>(&mut c)
                            .expect("APPEND");
                    }
                    keys.insert(key);
                }
                keys
            })
        })
        .collect();
    let mut c = conn(&node);
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(150));
        let snap = thread::spawn(move || http(admin, "POST", "/v1/snapshot", ""));
        redis::cmd("FLUSHALL")
            .query::<()>(&mut c)
            .expect("FLUSHALL");
        let _ = snap.join();
    }
    thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let mut keys = HashSet::new();
    for w in writers {
        keys.extend(w.join().expect("writer"));
    }
    let before = state(&node, &keys);
    assert!(before.1 > 0, "some keys survive the last FLUSHALL");
    node.restart();
    let after = state(&node, &keys);
    assert_eq!(before.1, after.1, "DBSIZE");
    for (k, v) in &before.0 {
        assert_eq!(after.0.get(k), Some(v), "key {k}");
    }
}

#[test]
fn log_is_truncated_after_snapshots_and_recovery_stays_exact() {
    small_segments();
    let mut node = TestNode::start(&["--fsync", "always"]);
    let mut c = conn(&node);
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut created = 0usize;
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for round in 0..5 {
        // ~600 KiB of log per round, over 400 keys rewritten each round.
        let mut pipe = redis::pipe();
        for i in 0..600 {
            let key = format!("{{r}}:{}", i % 400);
            let value = format!("{round}:{i}:{}", "v".repeat(1000));
            pipe.cmd("SET").arg(&key).arg(&value).ignore();
            expected.insert(key, value);
        }
        pipe.query::<()>(&mut c).expect("pipelined SETs");
        for s in files(&wal_dir(&node.dir), ".wal") {
            if seen.insert(s) {
                created += 1;
            }
        }
        snapshot_now(&node);
    }
    // Old files are unlinked on a background thread: give it a moment.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (files(&wal_dir(&node.dir), ".wal").len() * 2 >= created
        || files(&snap_dir(&node.dir), ".tsnap").len() != 2)
        && std::time::Instant::now() < settle
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let retained = files(&wal_dir(&node.dir), ".wal");
    assert!(created >= 20, "the load spans many segments: {created}");
    assert!(
        retained.len() * 2 < created,
        "segments are removed after snapshots: {} retained of {created}",
        retained.len()
    );
    assert_eq!(
        files(&snap_dir(&node.dir), ".tsnap").len(),
        2,
        "two snapshots kept"
    );
    // A few writes after the last snapshot, then a crash.
    for i in 0..50 {
        let key = format!("{{r}}:{i}");
        redis::cmd("SET")
            .arg(&key)
            .arg("late")
            .query::<()>(&mut c)
            .expect("SET");
        expected.insert(key, "late".into());
    }
    node.restart();
    assert_all(&node, &expected);
    let dbsize: usize = redis::cmd("DBSIZE")
        .query(&mut conn(&node))
        .expect("DBSIZE");
    assert_eq!(dbsize, expected.len());
}

/// Two processes must never share a data directory: a second node on a
/// directory in use exits with an error naming the directory and the
/// holder's PID, the first keeps serving and loses nothing, and once the
/// first dies (even by SIGKILL: the kernel drops its flock) a new node starts.
#[test]
fn a_second_node_on_a_data_dir_in_use_refuses_to_start() {
    let mut first = TestNode::start(&["--fsync", "always"]);
    let mut expected = set_many(&first, "a", 200, 10);
    let pid = first.pid().expect("the first node runs");
    let data = first.dir.join("data");
    let wal_before: Vec<(PathBuf, u64)> = files(&wal_dir(&first.dir), ".wal")
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect();

    let (status, stderr) =
        TestNode::try_start_in(&first.dir, &["--fsync", "always"], Duration::from_secs(20));
    let status = status.expect("the second node exits instead of serving");
    assert!(!status.success(), "non-zero exit status: {stderr}");
    assert!(
        stderr.contains(&data.display().to_string()),
        "the error names the data directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "the error names the holder's PID {pid}: {stderr}"
    );
    // The second process touched nothing: same segments, same sizes.
    let wal_after: Vec<(PathBuf, u64)> = files(&wal_dir(&first.dir), ".wal")
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect();
    assert_eq!(wal_before, wal_after, "the refused node changed the log");

    // The first node still serves, reads and writes.
    assert_all(&first, &expected);
    expected.extend(set_many(&first, "b", 100, 10));
    assert_all(&first, &expected);

    // SIGKILL releases the lock: a new node starts on the directory and has
    // every acknowledged write.
    first.kill9();
    let second = TestNode::start_in(&first.dir, &["--fsync", "always"]);
    assert_all(&second, &expected);
    let holder = std::fs::read_to_string(data.join("LOCK")).expect("the LOCK file");
    assert_eq!(
        holder.trim(),
        second.pid().expect("the second node runs").to_string(),
        "the LOCK file names its holder"
    );
}
