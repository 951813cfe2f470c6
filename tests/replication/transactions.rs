//! Transactions and scripts as one unit: the log holds each as one record, a
//! replica applies it as one, and a torn tail never leaves half of one.

use std::path::Path;
use std::time::Duration;

use tessera::node::wal::decode_record;

use super::{addr_of, conn, copy_dir, follow, promote, restart_in, start, wait_caught_up};

/// Every record of the logs under `dir` (a node's data directory).
pub(super) fn log_records(dir: &Path) -> Vec<tessera::node::wal::Record> {
    let wal = dir.join("data").join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .expect("the log directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".wal"))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        let b = std::fs::read(&s).expect("read a segment");
        let mut at = 24;
        while at < b.len() && !b[at..].iter().all(|&x| x == 0) {
            let (rec, n) = decode_record(&b[at..]).expect("a valid record");
            out.push(rec);
            at += n;
        }
    }
    out
}

/// The transactions (`TEXEC` records) of a log, as lists of their parts'
/// command names.
fn groups(dir: &Path) -> Vec<Vec<String>> {
    log_records(dir)
        .iter()
        .filter(|r| r.args.first().map(Vec::as_slice) == Some(b"TEXEC".as_slice()))
        .map(|r| {
            r.args[1..]
                .iter()
                .map(|p| {
                    let (_, ranges) =
                        tessera::node::cmd::multi::decode_part(p).expect("a valid part");
                    String::from_utf8_lossy(&p[ranges[0].clone()]).into_owned()
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_transaction_is_one_record_on_the_primary_and_on_its_replica() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    const N: usize = 300;
    // A reader on the replica, while the transactions stream in, never
    // sees one counter ahead of the other.
    let reader_port = r.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{reader_port}/")).expect("client");
        let mut rc = client.get_connection().expect("connect to the replica");
        redis::cmd("READONLY")
            .query::<()>(&mut rc)
            .expect("READONLY");
        let mut reads = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let (a, b): (Option<i64>, Option<i64>) = redis::cmd("MGET")
                .arg("{t}a")
                .arg("{t}b")
                .query(&mut rc)
                .expect("MGET on the replica");
            assert_eq!(a, b, "the replica holds half a transaction");
            reads += 1;
        }
        reads
    });
    let mut c = conn(&p);
    for _ in 0..N {
        let (a, b): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("{t}a")
            .cmd("INCR")
            .arg("{t}b")
            .query(&mut c)
            .expect("EXEC");
        assert_eq!(a, b);
    }
    wait_caught_up(&r, &p, Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader");
    assert!(reads > 0, "the reader read");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let got: (i64, i64) = redis::cmd("MGET")
        .arg("{t}a")
        .arg("{t}b")
        .query(&mut rc)
        .expect("MGET");
    assert_eq!(got, (N as i64, N as i64));
    // INCR is logged as the SET it amounts to.
    for (who, dir) in [("primary", p.dir.as_path()), ("replica", tmp.path())] {
        let g = groups(dir);
        assert_eq!(g.len(), N, "the {who}'s log: one record per transaction");
        assert!(
            g.iter().all(|parts| parts == &["SET", "SET"]),
            "the {who}'s log: each record holds both writes: {:?}",
            g.iter().find(|parts| parts != &&["SET", "SET"])
        );
    }
}

#[test]
fn a_torn_transaction_record_is_dropped_whole_at_recovery() {
    let mut p = start(0, "eventual", &["--fsync", "always"]);
    promote(&p, 1);
    let mut c = conn(&p);
    for i in 1..=20 {
        let v = format!("{i}:{}", "x".repeat(200));
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("{t}a")
            .arg(&v)
            .ignore()
            .cmd("RPUSH")
            .arg("{t}l")
            .arg(&v)
            .ignore()
            .cmd("SET")
            .arg("{t}b")
            .arg(&v)
            .ignore()
            .query(&mut c)
            .expect("EXEC");
    }
    drop(c);
    p.kill9();
    let wal = p.dir.join("data").join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .expect("log dir")
        .flatten()
        .map(|e| e.path())
        .filter(|x| x.to_string_lossy().ends_with(".wal"))
        .collect();
    segs.sort();
    let last = segs.pop().expect("a segment");
    let bytes = std::fs::read(&last).expect("read");
    let mut at = 24;
    let mut offsets = Vec::new();
    while at < bytes.len() && !bytes[at..].iter().all(|&x| x == 0) {
        let (_, n) = decode_record(&bytes[at..]).expect("record");
        offsets.push((at, n));
        at += n;
    }
    let &(start_at, len) = offsets.last().expect("records");
    // Cut inside the last transaction's record: at its header, in its first
    // part, between parts, one byte short.
    for cut in [4, 40, len / 2, len - 1] {
        // Each cut on a fresh copy of the killed node's data directory.
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(&p.dir.join("data"), &copy.path().join("data"));
        let seg = copy
            .path()
            .join("data")
            .join("wal")
            .join(last.file_name().expect("name"));
        std::fs::write(&seg, &bytes[..start_at + cut]).expect("cut the log");
        let n = restart_in(0, "eventual", copy.path(), 0, 0);
        promote(&n, 2);
        let mut c = conn(&n);
        let (a, b): (String, String) = redis::cmd("MGET")
            .arg("{t}a")
            .arg("{t}b")
            .query(&mut c)
            .expect("MGET");
        let len: i64 = redis::cmd("LLEN").arg("{t}l").query(&mut c).expect("LLEN");
        assert_eq!(a, b, "cut at {cut}: half a transaction recovered");
        assert!(
            a.starts_with("19:"),
            "cut at {cut}: the torn one is dropped, got {}",
            &a[..3]
        );
        assert_eq!(
            len, 19,
            "cut at {cut}: the list has the 19 whole transactions"
        );
    }
}

#[test]
fn a_script_reaches_the_log_and_the_replica_as_its_effects_in_one_record() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let mut c = conn(&p);
    // Non-deterministic on purpose: a replica re-running it would differ.
    let script = "local v = tostring(math.random()) .. tostring(redis.call('TIME')[2]) \
                  redis.call('SET', KEYS[1], v) redis.call('RPUSH', KEYS[2], v) \
                  redis.call('INCR', KEYS[3]) return v";
    let mut values = Vec::new();
    for _ in 0..20 {
        let v: String = redis::cmd("EVAL")
            .arg(script)
            .arg(3)
            .arg("{s}v")
            .arg("{s}l")
            .arg("{s}n")
            .query(&mut c)
            .expect("EVAL");
        values.push(v);
    }
    // A failing script keeps the writes it made before failing, as Redis.
    let e = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], 'x') return redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg("{s}bad")
        .query::<redis::Value>(&mut c)
        .expect_err("INCR of a non-integer fails");
    assert!(format!("{e}").contains("not an integer"), "{e}");
    wait_caught_up(&r, &p, Duration::from_secs(30));
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let v: String = redis::cmd("GET").arg("{s}v").query(&mut rc).expect("GET");
    let l: Vec<String> = redis::cmd("LRANGE")
        .arg("{s}l")
        .arg(0)
        .arg(-1)
        .query(&mut rc)
        .expect("LRANGE");
    let bad: String = redis::cmd("GET").arg("{s}bad").query(&mut rc).expect("GET");
    assert_eq!(&v, values.last().expect("values"));
    assert_eq!(l, values, "the replica holds the primary's random values");
    assert_eq!(bad, "x");
    for (who, dir) in [("primary", p.dir.as_path()), ("replica", tmp.path())] {
        let recs = log_records(dir);
        assert!(
            !recs.iter().any(|r| r.args[0].eq_ignore_ascii_case(b"EVAL")),
            "the {who}'s log holds no script"
        );
        let g = groups(dir);
        assert_eq!(g.len(), 20, "the {who}'s log: one record per script");
        assert!(
            g.iter().all(|parts| parts == &["SET", "RPUSH", "SET"]),
            "{who}: {:?}",
            g[0]
        );
    }
}

/// A script that has written is not refused halfway when the primary's
/// lease runs out while it runs (it holds the event loop, so no heartbeat
/// is answered meanwhile): both writes apply, it answers as usual once the
/// replicas acknowledge, and they hold both. Before, the second write
/// answered NOQUORUM from inside the script with the first applied.
#[test]
fn a_script_that_wrote_is_not_refused_halfway_when_the_lease_runs_out() {
    let nodes: Vec<_> = (0..3).map(|i| start(i, "quorum", &[])).collect();
    promote(&nodes[0], 1);
    for r in &nodes[1..] {
        follow(r, 1, addr_of(0, nodes[0].port));
    }
    super::wait_replicas(&nodes[0], 2, Duration::from_secs(20));
    let mut c = conn(&nodes[0]);
    let script = "redis.call('SET', KEYS[1], 'first') \
        local s = redis.call('TIME') \
        repeat local n = redis.call('TIME') \
        until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1]) * 1000 \
        return redis.call('SET', KEYS[2], 'second')";
    let busy_ms = super::LEASE_MS + 400;
    let r: redis::RedisResult<String> = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg("{s}a")
        .arg("{s}b")
        .arg(busy_ms)
        .query(&mut c);
    assert_eq!(r.as_deref().map_err(super::etext), Ok("OK"));
    for n in &nodes[1..] {
        wait_caught_up(n, &nodes[0], Duration::from_secs(10));
        let mut rc = conn(n);
        let _: () = redis::cmd("READONLY").query(&mut rc).expect("READONLY");
        let got: (Option<String>, Option<String>) = redis::pipe()
            .cmd("GET")
            .arg("{s}a")
            .cmd("GET")
            .arg("{s}b")
            .query(&mut rc)
            .expect("GET on the replica");
        assert_eq!(got, (Some("first".into()), Some("second".into())));
    }
}
