//! Cluster-wide pub/sub on real processes: two shards (primary + replica
//! each, a cluster password), the test playing operator. PUBLISH on one
//! node reaches the subscribers of every node once; a peer that is down
//! or stalled neither blocks nor fails the publisher; SPUBLISH reaches the
//! nodes of its shard only.

#[path = "common/migration.rs"]
mod cluster;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster::{conn, key_in, Cluster, PW};

/// A RESP2 subscriber on a raw socket (messages are read as they come).
struct Sub {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Sub {
    fn new(port: u16, cmd: &[&str]) -> Self {
        Self::after(port, &[], cmd)
    }

    /// Subscribes after commands answered `+OK` (READONLY on a replica).
    fn after(port: u16, first: &[&[&str]], cmd: &[&str]) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut sub = Self { s, buf: Vec::new() };
        sub.send(&["AUTH", PW]);
        assert_eq!(sub.read_exact_frame(), "+OK");
        for c in first {
            sub.send(c);
            assert_eq!(sub.read_exact_frame(), "+OK", "{c:?}");
        }
        sub.send(cmd);
        let confirm = sub.next(Duration::from_secs(5)).expect("confirmation");
        assert_eq!(
            confirm[0].to_lowercase(),
            cmd[0].to_lowercase(),
            "{confirm:?}"
        );
        sub
    }

    fn send(&mut self, args: &[&str]) {
        let mut b = format!("*{}\r\n", args.len());
        for a in args {
            b.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.s.write_all(b.as_bytes()).expect("send");
    }

    fn fill(&mut self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.s.set_read_timeout(Some(left)).expect("timeout");
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => panic!("subscriber connection closed"),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    fn line(&mut self, until: Instant) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(l);
            }
            if !self.fill(until) {
                return None;
            }
        }
    }

    fn read_exact_frame(&mut self) -> String {
        self.line(Instant::now() + Duration::from_secs(5))
            .expect("a reply")
    }

    /// The next array frame of bulk strings and integers, as strings.
    fn next(&mut self, wait: Duration) -> Option<Vec<String>> {
        let until = Instant::now() + wait;
        let head = self.line(until)?;
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not an array: {head}"));
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            let h = self.line(until).expect("frame part");
            if let Some(i) = h.strip_prefix(':') {
                parts.push(i.to_string());
            } else {
                parts.push(self.line(until).expect("bulk body"));
            }
        }
        Some(parts)
    }

    /// Every message that arrives until `quiet` passes without one.
    fn drain(&mut self, quiet: Duration) -> Vec<Vec<String>> {
        let mut v = Vec::new();
        while let Some(m) = self.next(quiet) {
            v.push(m);
        }
        v
    }
}

fn cluster() -> Cluster {
    let c = Cluster::start(true);
    c.push(&c.topology(1, &[(0, 8191)], &[(8192, 16383)]));
    c
}

fn publish(port_conn: &mut redis::Connection, ch: &str, msg: &str) -> i64 {
    redis::cmd("PUBLISH")
        .arg(ch)
        .arg(msg)
        .query(port_conn)
        .expect("PUBLISH")
}

fn metric(n: &common::TestNode, name: &str) -> u64 {
    let (_, body) = common::http_get(n.admin_port, "/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn publish_on_one_node_reaches_every_node_subscribers_once_in_order() {
    let c = cluster();
    // Node 0 publishes; 1 is its replica, 2 the other shard's primary,
    // 3 that shard's replica.
    let mut subs: Vec<Sub> = (0..4)
        .map(|i| Sub::new(c.nodes[i].port, &["SUBSCRIBE", "news"]))
        .collect();
    let mut psub = Sub::new(c.nodes[2].port, &["PSUBSCRIBE", "ne*"]);
    let mut p = conn(&c.nodes[0]);
    for i in 0..50 {
        // Only the receiving node's own subscribers count, as in Redis Cluster.
        assert_eq!(publish(&mut p, "news", &format!("m{i}")), 1);
    }
    let want: Vec<Vec<String>> = (0..50)
        .map(|i| vec!["message".into(), "news".into(), format!("m{i}")])
        .collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let got = s.drain(Duration::from_millis(1500));
        assert_eq!(got, want, "subscriber on node {i}");
    }
    let got = psub.drain(Duration::from_millis(500));
    let pwant: Vec<Vec<String>> = (0..50)
        .map(|i| {
            vec![
                "pmessage".into(),
                "ne*".into(),
                "news".into(),
                format!("m{i}"),
            ]
        })
        .collect();
    assert_eq!(got, pwant, "pattern subscriber on node 2");
    // The other direction: a replica publishes, the first shard hears it.
    let mut r = conn(&c.nodes[3]);
    assert_eq!(publish(&mut r, "news", "from-replica"), 1);
    for (i, s) in subs.iter_mut().enumerate() {
        let got = s.drain(Duration::from_millis(1000));
        assert_eq!(
            got,
            vec![vec![
                "message".to_string(),
                "news".into(),
                "from-replica".into()
            ]],
            "subscriber on node {i}"
        );
    }
    assert_eq!(metric(&c.nodes[0], "tessera_pubsub_forwarded_total"), 150);
    assert_eq!(
        metric(&c.nodes[0], "tessera_pubsub_forward_dropped_total"),
        0
    );
}

#[test]
fn a_peer_down_neither_blocks_nor_fails_the_publisher_and_is_reached_again() {
    let mut c = cluster();
    let mut on2 = Sub::new(c.nodes[2].port, &["SUBSCRIBE", "jobs"]);
    c.nodes[3].kill9();
    let mut p = conn(&c.nodes[0]);
    let started = Instant::now();
    for i in 0..500 {
        let t = Instant::now();
        assert_eq!(publish(&mut p, "jobs", &format!("j{i}")), 0);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "PUBLISH {i} took {:?} with a peer down",
            t.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "500 PUBLISHes took {:?}",
        started.elapsed()
    );
    let got = on2.drain(Duration::from_millis(1500));
    assert_eq!(got.len(), 500, "the live peer got every message");
    assert_eq!(got[499], vec!["message", "jobs", "j499"]);
    assert!(metric(&c.nodes[0], "tessera_pubsub_forward_dropped_total") > 0);

    // Back on the same address: the link reconnects.
    c.nodes[3].restart();
    let topo = c.topology(1, &[(0, 8191)], &[(8192, 16383)]);
    for (s, b) in c.push_to(&[3], &topo) {
        assert_eq!(s, 200, "{b}");
    }
    let mut on3 = Sub::new(c.nodes[3].port, &["SUBSCRIBE", "jobs"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut reached = false;
    while !reached && Instant::now() < deadline {
        publish(&mut p, "jobs", "again");
        reached = on3.next(Duration::from_millis(300)).is_some();
    }
    assert!(reached, "the restarted peer never got a message");
}

#[test]
fn spublish_reaches_the_shard_replica_and_stays_in_the_slot_shard() {
    let c = cluster();
    // A shard channel of the first shard (slots 0-8191).
    let ch = key_in("sch:", 0, 8191);
    let mut ssub = Sub::new(c.nodes[0].port, &["SSUBSCRIBE", &ch]);
    // The shard's replica serves shard channels to READONLY clients.
    let mut on_replica = Sub::after(c.nodes[1].port, &[&["READONLY"]], &["SSUBSCRIBE", &ch]);
    // Plain subscribers of the same name elsewhere must hear nothing.
    let mut plain = Sub::new(c.nodes[2].port, &["SUBSCRIBE", &ch]);
    let mut other = Sub::new(c.nodes[2].port, &["PSUBSCRIBE", "*"]);
    let before = metric(&c.nodes[0], "tessera_pubsub_forwarded_total");
    let mut p = conn(&c.nodes[0]);
    let n: i64 = redis::cmd("SPUBLISH")
        .arg(&ch)
        .arg("local")
        .query(&mut p)
        .expect("SPUBLISH");
    assert_eq!(n, 1);
    assert_eq!(
        ssub.next(Duration::from_secs(2)),
        Some(vec!["smessage".to_string(), ch.clone(), "local".into()])
    );
    assert_eq!(
        on_replica.drain(Duration::from_millis(1500)),
        vec![vec!["smessage".to_string(), ch.clone(), "local".into()]]
    );
    assert_eq!(
        plain.drain(Duration::from_millis(700)),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        other.drain(Duration::from_millis(100)),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        metric(&c.nodes[0], "tessera_pubsub_forwarded_total"),
        before + 1,
        "SPUBLISH went to the shard's replica only"
    );
    // The other shard redirects SPUBLISH of that channel to its owner.
    let mut q = conn(&c.nodes[2]);
    let e = redis::cmd("SPUBLISH")
        .arg(&ch)
        .arg("x")
        .query::<i64>(&mut q)
        .expect_err("MOVED");
    assert!(e.to_string().to_lowercase().contains("moved"), "{e}");
}

fn signal(n: &common::TestNode, sig: &str) {
    let pid = n.pid().expect("the node runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A peer that accepts connections but reads nothing (stopped): PUBLISH
/// stays fast, the peer's queue stays bounded (the excess dropped and
/// counted), and once the peer runs again new messages reach it.
#[test]
fn a_stalled_peer_neither_blocks_the_publisher_nor_queues_without_bound() {
    let c = cluster();
    let mut on3 = Sub::new(c.nodes[3].port, &["SUBSCRIBE", "big"]);
    let mut p = conn(&c.nodes[0]);
    // Open the link while the peer still answers.
    publish(&mut p, "big", "hello");
    assert_eq!(
        on3.next(Duration::from_secs(5)),
        Some(vec!["message".to_string(), "big".into(), "hello".into()])
    );
    signal(&c.nodes[3], "-STOP");
    let payload = "x".repeat(10_000);
    let mut slowest = Duration::ZERO;
    // 40 MB: more than the queue bound and the sockets' buffers.
    for _ in 0..4000 {
        let t = Instant::now();
        publish(&mut p, "big", &payload);
        slowest = slowest.max(t.elapsed());
    }
    let dropped = metric(&c.nodes[0], "tessera_pubsub_forward_dropped_total");
    signal(&c.nodes[3], "-CONT");
    assert!(
        slowest < Duration::from_secs(1),
        "a PUBLISH took {slowest:?} with a stalled peer"
    );
    assert!(dropped > 0, "nothing was dropped for the stalled peer");
    // The peer reads its backlog, the link is replaced, new messages arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reached = false;
    while !reached && Instant::now() < deadline {
        publish(&mut p, "big", "after");
        while let Some(m) = on3.next(Duration::from_millis(300)) {
            if m[2] == "after" {
                reached = true;
            }
        }
    }
    assert!(reached, "the resumed peer never got a new message");
}
