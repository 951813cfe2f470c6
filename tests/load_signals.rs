//! The load signals a node reports for the autoscaler (issue 20): the
//! instantaneous command rate (`/v1/status` `opsPerSec`, INFO
//! `instantaneous_ops_per_sec`), the hottest slot (`hotSlot`) and
//! `CLUSTER SLOT-STATS`, against real `tessera node` processes.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http, http_get, TestNode};
use raw::Raw;
use serde_json::{json, Value};
use tessera::node::resp::{encode_command, Frame};
use tessera::node::slots::key_slot;

fn node() -> TestNode {
    TestNode::start(&["--no-persistence"])
}

fn connect(node: &TestNode) -> Raw {
    Raw::connect(node, Duration::from_secs(30))
}

fn status(node: &TestNode) -> Value {
    let (s, b) = http_get(node.admin_port, "/v1/status").expect("the admin port answers");
    assert_eq!(s, 200, "/v1/status: {b}");
    serde_json::from_str(&b).expect("status is JSON")
}

/// Sends `cmds` pipelined and checks that none was answered with an error.
fn pipeline(c: &mut Raw, cmds: &[Vec<String>]) {
    let mut out = Vec::new();
    for cmd in cmds {
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
        encode_command(&args, &mut out);
    }
    c.write_all(&out).expect("write the pipeline");
    for cmd in cmds {
        match c.next_reply() {
            Ok(Frame::Error(e)) => panic!("{cmd:?} answered {e}"),
            Ok(_) => {}
            Err(e) => panic!("no reply to {cmd:?}: {e:?}"),
        }
    }
}

fn set(key: &str) -> Vec<String> {
    vec!["SET".into(), key.into(), "v".into()]
}

fn get(key: &str) -> Vec<String> {
    vec!["GET".into(), key.into()]
}

/// A field of `INFO stats`.
fn info_stat(c: &mut Raw, field: &str) -> f64 {
    let info = match c.cmd(&["INFO", "stats"]) {
        Frame::Bulk(b) => String::from_utf8(b).expect("UTF-8 INFO"),
        other => panic!("INFO answers a bulk string, got {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in INFO stats: {info}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{field} is a number: {e}"))
}

/// Drives `rate` commands per second (half SET, half GET) at `node` on one
/// connection until `stop`, in batches every 10 ms kept on an absolute
/// schedule (a late batch is made up by the next). `sent` counts the
/// commands answered.
fn drive(port: u16, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut c = Raw::connect_port(port, Duration::from_secs(30));
    let start = Instant::now();
    let mut done = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > done {
            let n = (due - done).min(500);
            let cmds: Vec<Vec<String>> = (0..n)
                .map(|i| {
                    let key = format!("rate:{}", (done + i) % 1000);
                    if i % 2 == 0 {
                        set(&key)
                    } else {
                        get(&key)
                    }
                })
                .collect();
            pipeline(&mut c, &cmds);
            done += n;
            sent.store(done, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ops_per_sec_follows_a_driven_command_rate_and_falls_to_zero_when_idle() {
    let n = node();
    const RATE: u64 = 2000;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let driver = {
        let (stop, sent, port) = (stop.clone(), sent.clone(), n.port);
        std::thread::spawn(move || drive(port, RATE, stop, sent))
    };
    // Past the ring's 1.5 s span, so that it holds only driven load.
    std::thread::sleep(Duration::from_millis(2500));
    let (before, t0) = (sent.load(Ordering::SeqCst), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (after, secs) = (sent.load(Ordering::SeqCst), t0.elapsed().as_secs_f64());
    let st = status(&n);
    let mut c = connect(&n);
    let info_ops = info_stat(&mut c, "instantaneous_ops_per_sec");
    let info_writes = info_stat(&mut c, "instantaneous_write_ops_per_sec");
    let info_in_kbps = info_stat(&mut c, "instantaneous_input_kbps");
    stop.store(true, Ordering::SeqCst);
    driver.join().expect("the driver ran");

    let measured = (after - before) as f64 / secs;
    assert!(
        measured > RATE as f64 * 0.7,
        "the driver kept up: {measured:.0}/s of {RATE}/s"
    );
    let ops = st["opsPerSec"].as_f64().expect("opsPerSec is a number");
    let writes = st["writeOpsPerSec"]
        .as_f64()
        .expect("writeOpsPerSec is a number");
    eprintln!(
        "driven {measured:.0}/s: opsPerSec {ops:.0}, writeOpsPerSec {writes:.0}, INFO {info_ops}/{info_writes}, input {info_in_kbps} kbps"
    );
    let band = |v: f64, want: f64| v > want * 0.7 && v < want * 1.3;
    assert!(
        band(ops, measured),
        "opsPerSec {ops:.0} vs {measured:.0} driven"
    );
    assert!(
        band(writes, measured / 2.0),
        "writeOpsPerSec {writes:.0} vs {:.0} SETs driven",
        measured / 2.0
    );
    assert!(
        band(info_ops, measured),
        "instantaneous_ops_per_sec {info_ops} vs {measured:.0}"
    );
    assert!(
        band(info_writes, measured / 2.0),
        "instantaneous_write_ops_per_sec {info_writes} vs {:.0}",
        measured / 2.0
    );
    // Each command is 30-40 bytes of RESP.
    assert!(
        info_in_kbps > measured * 25.0 / 1024.0 && info_in_kbps < measured * 50.0 / 1024.0,
        "instantaneous_input_kbps {info_in_kbps} for {measured:.0} commands/s"
    );

    // Idle: the ring empties of the driven load within its span.
    std::thread::sleep(Duration::from_millis(2000));
    let idle = status(&n)["opsPerSec"].as_f64().expect("a number");
    assert!(idle < 5.0, "opsPerSec {idle} with no clients");
}

#[test]
fn hot_slot_is_null_before_load_and_names_a_hammered_slot_with_its_share() {
    let n = node();
    assert_eq!(status(&n)["hotSlot"], Value::Null, "no commands yet");
    let mut c = connect(&n);
    // Under the minimum of 100 keyed commands: still no figure.
    pipeline(
        &mut c,
        &(0..50)
            .map(|i| set(&format!("few:{i}")))
            .collect::<Vec<_>>(),
    );
    assert_eq!(status(&n)["hotSlot"], Value::Null, "50 keyed commands");

    // 3000 commands on one slot's keys, 150 spread over other keys;
    // keyless commands (PING) do not count.
    let mut cmds: Vec<Vec<String>> = (0..1500)
        .flat_map(|i| [set(&format!("{{hot}}:{i}")), get(&format!("{{hot}}:{i}"))])
        .collect();
    cmds.extend((0..150).map(|i| set(&format!("cold:{i}"))));
    cmds.extend((0..2000).map(|_| vec!["PING".to_string()]));
    pipeline(&mut c, &cmds);

    let hot = status(&n)["hotSlot"].clone();
    let want = key_slot(b"{hot}") as u64;
    assert_eq!(hot["slot"].as_u64(), Some(want), "hotSlot: {hot}");
    let share = hot["share"].as_f64().expect("share is a number");
    // 3000 of 3200 keyed commands (the 50 and the 150 elsewhere), give or
    // take the few cold keys that share the hot slot.
    assert!(share > 0.8 && share < 1.0, "share {share}");
    assert!((share - 3000.0 / 3200.0).abs() < 0.01, "share {share}");
    let ops = hot["opsPerSec"].as_f64().expect("opsPerSec is a number");
    let window = hot["windowSeconds"].as_f64().expect("windowSeconds");
    assert!(window > 0.0 && window <= 20.5, "window {window}");
    assert!(
        (ops * window - 3000.0).abs() < 30.0,
        "opsPerSec {ops} over {window} s is the slot's 3000 commands"
    );

    // The operator's reading of the same status (its autoscaler's input).
    let (_, body) = http_get(n.admin_port, "/v1/status").expect("status");
    let info: tessera::client::NodeInfo = serde_json::from_str(&body).expect("NodeInfo");
    let seen = info.hot_slot.expect("the operator sees the hot slot");
    assert_eq!(seen.slot as u64, want);
    assert!(
        (seen.share - share).abs() < 0.01,
        "{} vs {share}",
        seen.share
    );
    assert!(seen.ops_per_sec > 0.0);

    let (s, metrics) = http_get(n.admin_port, "/metrics").expect("metrics");
    assert_eq!(s, 200);
    let line = format!("tessera_hot_slot_share{{slot=\"{want}\"}} ");
    let exported: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("{line} in /metrics"))
        .parse()
        .expect("a number");
    assert!((exported - share).abs() < 0.01, "{exported} vs {share}");
}

#[test]
fn hot_slot_share_is_small_when_keys_are_spread() {
    let n = node();
    let mut c = connect(&n);
    let cmds: Vec<Vec<String>> = (0..5000).map(|i| set(&format!("spread:{i}"))).collect();
    pipeline(&mut c, &cmds);
    let hot = status(&n)["hotSlot"].clone();
    let share = hot["share"].as_f64().expect("a figure for 5000 commands");
    // 5000 keys over 16384 slots: a few commands on the busiest one.
    assert!(share < 0.01, "share {share} for spread keys: {hot}");
    let slot = hot["slot"].as_u64().expect("a slot") as usize;
    let mut per_slot = vec![0usize; 16384];
    for i in 0..5000 {
        per_slot[key_slot(format!("spread:{i}").as_bytes()) as usize] += 1;
    }
    let on_it = per_slot[slot];
    assert_eq!(
        Some(&on_it),
        per_slot.iter().max(),
        "the slot named is a busiest one"
    );
    assert!(
        (share - on_it as f64 / 5000.0).abs() < 1e-9,
        "share {share}"
    );
}

/// `[slot, {field: int}]` of one SLOT-STATS entry, whether the map came as
/// a RESP3 map or a RESP2 flat array.
fn entry(f: &Frame) -> (i64, Vec<(String, i64)>) {
    let Frame::Array(pair) = f else {
        panic!("an entry is an array: {f:?}")
    };
    assert_eq!(pair.len(), 2, "[slot, stats]: {f:?}");
    let Frame::Integer(slot) = pair[0] else {
        panic!("the slot is an integer: {f:?}")
    };
    let text = |f: &Frame| match f {
        Frame::Bulk(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        other => panic!("a field name is a bulk string: {other:?}"),
    };
    let int = |f: &Frame| match f {
        Frame::Integer(n) => *n,
        other => panic!("a value is an integer: {other:?}"),
    };
    let fields = match &pair[1] {
        Frame::Map(kv) => kv.iter().map(|(k, v)| (text(k), int(v))).collect(),
        Frame::Array(flat) => flat
            .chunks(2)
            .map(|kv| (text(&kv[0]), int(&kv[1])))
            .collect(),
        other => panic!("stats are a map: {other:?}"),
    };
    (slot, fields)
}

fn entries(f: Frame) -> Vec<(i64, Vec<(String, i64)>)> {
    match f {
        Frame::Array(items) => items.iter().map(entry).collect(),
        other => panic!("SLOT-STATS answers an array: {other:?}"),
    }
}

fn field(stats: &[(String, i64)], name: &str) -> i64 {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{name} in {stats:?}"))
        .1
}

fn err(f: Frame) -> String {
    match f {
        Frame::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn cluster_slot_stats_reports_keys_commands_and_bytes_per_slot_in_valkeys_shape() {
    let n = node();
    let mut c = connect(&n);
    let (a, b, d) = (key_slot(b"a"), key_slot(b"b"), key_slot(b"d"));
    assert!(a != b && b != d && a != d && a.min(b).min(d) > 1);
    let mut sent_a = 0usize;
    for key in ["{a}1", "{a}2", "{a}3"] {
        let mut bytes = Vec::new();
        encode_command(&[b"SET".as_slice(), key.as_bytes(), b"v"], &mut bytes);
        sent_a += bytes.len();
        assert_eq!(c.cmd(&["SET", key, "v"]), Frame::Simple("OK".into()));
    }
    for key in ["{b}1", "{b}2"] {
        c.cmd(&["SET", key, "v"]);
    }
    c.cmd(&["SET", "{d}1", "v"]);
    for _ in 0..5 {
        c.cmd(&["GET", "{d}1"]);
    }

    // SLOTSRANGE: every slot of the range, ascending, all four fields.
    let got = entries(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "SLOTSRANGE",
        &a.to_string(),
        &a.to_string(),
    ]));
    assert_eq!(got.len(), 1);
    let (slot, stats) = &got[0];
    assert_eq!(*slot, a as i64);
    let names: Vec<&str> = stats.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "key-count",
            "network-bytes-in",
            "network-bytes-out",
            "commands"
        ]
    );
    assert_eq!(field(stats, "key-count"), 3);
    assert_eq!(field(stats, "commands"), 3);
    assert_eq!(field(stats, "network-bytes-in"), sent_a as i64);
    assert_eq!(
        field(stats, "network-bytes-out"),
        3 * "+OK\r\n".len() as i64
    );
    let d_stats = &entries(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "SLOTSRANGE",
        &d.to_string(),
        &d.to_string(),
    ]))[0]
        .1;
    assert_eq!(field(d_stats, "commands"), 6);
    // 5 × "$1\r\nv\r\n" and one "+OK\r\n".
    assert_eq!(field(d_stats, "network-bytes-out"), 5 * 7 + 5);

    let all = entries(c.cmd(&["CLUSTER", "SLOT-STATS", "SLOTSRANGE", "0", "16383"]));
    assert_eq!(all.len(), 16384, "a standalone node serves every slot");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ascending slots");
    let keys: i64 = all.iter().map(|(_, s)| field(s, "key-count")).sum();
    assert_eq!(keys, 6);

    // ORDERBY: by the metric, descending by default, LIMIT, ASC.
    let top = entries(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "ORDERBY",
        "key-count",
        "LIMIT",
        "3",
    ]));
    let order: Vec<i64> = top.iter().map(|e| e.0).collect();
    assert_eq!(order, [a as i64, b as i64, d as i64]);
    let by_cmds = entries(c.cmd(&["CLUSTER", "SLOT-STATS", "ORDERBY", "COMMANDS", "LIMIT", "1"]));
    assert_eq!(by_cmds[0].0, d as i64, "6 commands on d's slot");
    let asc = entries(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "ORDERBY",
        "key-count",
        "ASC",
        "LIMIT",
        "2",
    ]));
    assert_eq!(
        asc.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 1],
        "empty slots first, ties by ascending slot"
    );
    let bytes_in = entries(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "ORDERBY",
        "network-bytes-in",
        "LIMIT",
        "1",
    ]));
    assert_eq!(bytes_in[0].0, d as i64);
    assert_eq!(
        entries(c.cmd(&["CLUSTER", "SLOT-STATS", "ORDERBY", "key-count"])).len(),
        16384
    );

    // What Valkey refuses, refused alike; cpu-usec is not measured.
    assert_eq!(
        err(c.cmd(&["CLUSTER", "SLOT-STATS", "ORDERBY", "cpu-usec"])),
        "ERR Unrecognized sort metric for ORDERBY."
    );
    assert_eq!(
        err(c.cmd(&["CLUSTER", "SLOT-STATS", "SLOTSRANGE", "5", "4"])),
        "ERR Start slot number 5 is greater than end slot number 4"
    );
    assert_eq!(
        err(c.cmd(&["CLUSTER", "SLOT-STATS", "SLOTSRANGE", "0", "16384"])),
        "ERR Invalid or out of range slot"
    );
    assert!(err(c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "ORDERBY",
        "key-count",
        "LIMIT",
        "0"
    ]))
    .starts_with("ERR Limit has to lie in between 1 and 16384"));
    assert!(err(c.cmd(&["CLUSTER", "SLOT-STATS"])).starts_with("ERR unknown subcommand"));

    // RESP3: the statistics are a map.
    assert!(matches!(c.cmd(&["HELLO", "3"]), Frame::Map(_)));
    match c.cmd(&[
        "CLUSTER",
        "SLOT-STATS",
        "SLOTSRANGE",
        &b.to_string(),
        &b.to_string(),
    ]) {
        Frame::Array(items) => match &items[..] {
            [Frame::Array(pair)] => {
                assert_eq!(pair[0], Frame::Integer(b as i64));
                assert!(
                    matches!(&pair[1], Frame::Map(kv) if kv.len() == 4),
                    "{pair:?}"
                );
                assert_eq!(field(&entry(&items[0]).1, "key-count"), 2);
            }
            other => panic!("one entry: {other:?}"),
        },
        other => panic!("an array: {other:?}"),
    }
}

#[test]
fn cluster_slot_stats_covers_only_the_slots_of_this_nodes_shard() {
    let id = format!("{:040x}", 0x10ad);
    let n = TestNode::start(&["--no-persistence", "--node-id", &id]);
    let other = json!({"id": format!("{:040x}", 0x0b), "host": "127.0.0.1", "port": 1});
    let topo = json!({"epoch": 1, "shards": [
        {"name": "s0", "slots": [[0, 8191]], "primary": {"id": id, "host": "127.0.0.1", "port": n.port}, "epoch": 1},
        {"name": "s1", "slots": [[8192, 16383]], "primary": other, "epoch": 1},
    ]});
    let (s, b) = http(n.admin_port, "PUT", "/v1/topology", &topo.to_string()).expect("admin");
    assert_eq!(s, 200, "topology: {b}");
    let mut c = connect(&n);
    let range = entries(c.cmd(&["CLUSTER", "SLOT-STATS", "SLOTSRANGE", "8000", "8300"]));
    assert_eq!(range.len(), 192, "8000-8191 only");
    assert_eq!(range.last().map(|e| e.0), Some(8191));
    let ordered = entries(c.cmd(&["CLUSTER", "SLOT-STATS", "ORDERBY", "key-count"]));
    assert_eq!(ordered.len(), 8192);
    assert!(ordered.iter().all(|e| e.0 < 8192));
    assert_eq!(status(&n)["hotSlot"], Value::Null, "no keyed commands yet");
    // Commands refused with MOVED are not load on this node.
    let remote: Vec<String> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| key_slot(k.as_bytes()) >= 8192)
        .take(200)
        .collect();
    for k in &remote {
        assert!(err(c.cmd(&["GET", k])).starts_with("MOVED"), "{k}");
    }
    assert_eq!(status(&n)["hotSlot"], Value::Null, "200 MOVED replies");
    let local: Vec<Vec<String>> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| key_slot(k.as_bytes()) < 8192)
        .take(200)
        .map(|k| get(&k))
        .collect();
    pipeline(&mut c, &local);
    assert!(
        status(&n)["hotSlot"]["slot"]
            .as_u64()
            .is_some_and(|s| s < 8192),
        "200 served GETs make a figure"
    );
}

/// The memory figure autoscaling reads: `usedMemoryDataset` is the used
/// memory less the replicas' log ring (kept once a replica streams), the
/// ring is at most an eighth of `maxmemory`, and the figure falls back when
/// the data is deleted (the ring does not).
#[test]
fn data_memory_excludes_the_log_ring_and_falls_with_the_data() {
    let max: u64 = 64 << 20;
    let dir = tempfile::tempdir().expect("a temp dir");
    let id = |i: u32| format!("{:040x}", 0xda7a00 + i);
    let n = TestNode::start_in(
        dir.path(),
        &["--maxmemory", &max.to_string(), "--node-id", &id(0)],
    );
    let replica = TestNode::start(&["--node-id", &id(1)]);
    let post = |node: &TestNode, path: &str, body: Value| {
        let (s, b) =
            http(node.admin_port, "POST", path, &body.to_string()).expect("the admin port answers");
        assert_eq!(s, 200, "{path}: {b}");
    };
    post(&n, "/v1/promote", json!({"epoch": 1, "replicas": 1}));
    post(
        &replica,
        "/v1/follow",
        json!({"epoch": 1, "primary": {"id": id(0), "host": "127.0.0.1", "port": n.port}}),
    );
    // The ring fills once the replica streams.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&n)["replication"]["replicas"]
        .as_array()
        .is_none_or(|r| !r.iter().any(|r| r["connected"] == true))
    {
        assert!(Instant::now() < deadline, "the replica connects");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = connect(&n);
    let value = "v".repeat(16 * 1024);
    let keys = 1500; // ~24 MiB of values
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        let cmds: Vec<Vec<String>> = chunk
            .iter()
            .map(|i| vec!["SET".into(), format!("d:{i}"), value.clone()])
            .collect();
        pipeline(&mut c, &cmds);
    }
    let full = status(&n);
    let used = full["usedMemory"].as_u64().expect("usedMemory");
    let data = full["usedMemoryDataset"]
        .as_u64()
        .expect("usedMemoryDataset");
    let ring = used - data;
    assert!(ring > 0, "the log ring holds recent writes: {full}");
    assert!(ring <= max / 8, "ring {ring} above maxmemory/8");
    assert!(data > 24 << 20, "the data counts: {data}");
    let cmds: Vec<Vec<String>> = (0..keys)
        .map(|i| vec!["DEL".into(), format!("d:{i}")])
        .collect();
    for chunk in cmds.chunks(100) {
        pipeline(&mut c, chunk);
    }
    let empty = status(&n);
    let data_after = empty["usedMemoryDataset"].as_u64().expect("dataset");
    let used_after = empty["usedMemory"].as_u64().expect("usedMemory");
    assert!(
        data_after < 8 << 20,
        "data memory after deleting everything: {data_after} (used {used_after})"
    );
    assert!(
        used_after > data_after,
        "the ring still counts in usedMemory: {empty}"
    );
}
