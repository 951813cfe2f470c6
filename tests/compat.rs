//! Compatibility with real Redis: replies compared with a redis-server
//! (differential tests, at the end), redis-benchmark,
//! redis-cli --cluster check, the `redis` crate's cluster client, and what a
//! node does with bad input.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{http, http_get, redis_tool, TestNode};
use redis::Commands;
use tessera::node::resp::Frame;

fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(conn)
        .expect("INFO answers");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
        .trim()
        .to_string()
}

/// A raw RESP connection for sending malformed bytes.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        Self { s, buf: Vec::new() }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }
    /// Next reply, or None when the server closed the connection.
    fn reply(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = Frame::parse(&self.buf).expect("server replies are valid RESP")
            {
                self.buf.drain(..used);
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn is_error_containing(f: &Option<Frame>, text: &str) -> bool {
    matches!(f, Some(Frame::Error(e)) if e.contains(text))
}

#[test]
fn redis_benchmark_default_suite_has_no_errors() {
    let node = TestNode::start(&["--no-persistence"]);
    let bench = redis_tool("redis-benchmark");
    let out = Command::new(bench)
        .args(["-p", &node.port.to_string(), "-n", "20000", "--csv"])
        .output()
        .expect("redis-benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {stdout}\n{stderr}"
    );
    // redis-benchmark 7.0 stops at the first error reply, so a result row
    // for every test of its default suite means none failed.
    let tests: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split(',').next())
        .map(|t| t.trim_matches('"'))
        .collect();
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LRANGE_100 (first 100 elements)",
        "LRANGE_600 (first 600 elements)",
        "MSET (10 keys)",
    ] {
        assert!(
            tests.contains(&test),
            "no result row for {test}:\n{stdout}\n{stderr}"
        );
    }
    let mut conn = node.conn();
    let errors: u64 = info_field(&mut conn, "stats", "total_error_replies")
        .parse()
        .expect("a number");
    assert_eq!(
        errors, 0,
        "the node sent error replies during the benchmark:\n{stdout}{stderr}"
    );
    assert!(
        !stdout.contains("ERR") && !stderr.contains("ERR"),
        "{stdout}{stderr}"
    );
}

#[test]
fn redis_cli_cluster_check_passes_on_a_standalone_node() {
    let node = TestNode::start(&["--no-persistence"]);
    let cli = redis_tool("redis-cli");
    let out = Command::new(cli)
        .args(["--cluster", "check", &format!("127.0.0.1:{}", node.port)])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[OK] All nodes agree about slots configuration."),
        "{text}"
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
}

#[test]
fn malformed_frames_get_errors_and_the_connection_lives_on() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut raw = Raw::connect(node.port);
    // Bad multibulk count: error, then the stream continues.
    raw.send(b"*x\r\n*1\r\n$4\r\nPING\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "Protocol error: invalid multibulk length"
    ));
    assert_eq!(raw.reply(), Some(Frame::Simple("PONG".into())));
    // Bad bulk length inside a command.
    raw.send(b"*2\r\n$3\r\nGET\r\n$zz\r\n*1\r\n$4\r\nPING\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "Protocol error: invalid bulk length"
    ));
    assert_eq!(raw.reply(), Some(Frame::Simple("PONG".into())));
    // A bulk not followed by CRLF: the bad bulk is dropped, the bytes after
    // it ("xx") are read as an inline command, then the stream is in sync.
    raw.send(b"*1\r\n$4\r\nPINGxx\r\nPING\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "Protocol error: bulk string is not terminated by CRLF"
    ));
    assert!(is_error_containing(&raw.reply(), "unknown command 'xx'"));
    assert_eq!(raw.reply(), Some(Frame::Simple("PONG".into())));
    // Inline commands, pipelined.
    raw.send(b"PING\r\nECHO hello\r\n");
    assert_eq!(raw.reply(), Some(Frame::Simple("PONG".into())));
    assert_eq!(raw.reply(), Some(Frame::Bulk(b"hello".to_vec())));
    // A bulk length over the limit cannot be resynchronized: error, then close.
    raw.send(b"*1\r\n$99999999999\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "Protocol error: invalid bulk length"
    ));
    assert_eq!(raw.reply(), None, "connection should be closed");
    // The node itself is fine.
    let mut conn = node.conn();
    let pong: String = redis::cmd("PING").query(&mut conn).expect("ping");
    assert_eq!(pong, "PONG");
}

#[test]
fn unknown_command_arity_and_crossslot_errors_match_redis() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut raw = Raw::connect(node.port);
    raw.send(b"*2\r\n$7\r\nNOSUCHC\r\n$1\r\na\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "ERR unknown command 'NOSUCHC', with args beginning with: 'a'"
    ));
    raw.send(b"*1\r\n$3\r\nGET\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "ERR wrong number of arguments for 'get' command"
    ));
    raw.send(b"*3\r\n$4\r\nMGET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n");
    assert!(is_error_containing(&raw.reply(), "CROSSSLOT"));
    raw.send(b"*3\r\n$4\r\nMGET\r\n$5\r\n{a}x1\r\n$5\r\n{a}x2\r\n");
    assert_eq!(
        raw.reply(),
        Some(Frame::Array(vec![Frame::Null, Frame::Null]))
    );
    raw.send(b"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "SELECT is not allowed in cluster mode"
    ));
}

#[test]
fn hello_3_switches_to_resp3() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut raw = Raw::connect(node.port);
    raw.send(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    let Some(Frame::Map(pairs)) = raw.reply() else {
        panic!("HELLO 3 answers a map")
    };
    assert!(pairs.contains(&(Frame::Bulk(b"proto".to_vec()), Frame::Integer(3))));
    raw.send(b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
    assert_eq!(raw.reply(), Some(Frame::Null));
    raw.send(b"*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n");
    assert!(is_error_containing(&raw.reply(), "NOPROTO"));
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("write password file");
    let node = TestNode::start(&[
        "--no-persistence",
        "--requirepass-file",
        pw.to_str().expect("utf-8"),
    ]);
    let mut raw = Raw::connect(node.port);
    raw.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert!(is_error_containing(
        &raw.reply(),
        "NOAUTH Authentication required."
    ));
    raw.send(b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n");
    assert!(is_error_containing(&raw.reply(), "WRONGPASS"));
    raw.send(b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n");
    assert_eq!(raw.reply(), Some(Frame::Simple("OK".into())));
    raw.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert_eq!(raw.reply(), Some(Frame::Null));
    // The redis crate with a password in the URL works.
    let client =
        redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", node.port)).expect("url");
    let mut conn = client.get_connection().expect("authenticated connection");
    let _: () = conn.set("a", "1").expect("set");
}

#[test]
fn maxmemory_refuses_writes_with_oom_but_serves_reads() {
    let node = TestNode::start(&["--no-persistence", "--maxmemory", "8000000"]);
    let mut conn = node.conn();
    let value = vec![b'x'; 64 * 1024];
    let mut refused = None;
    for i in 0..1000 {
        match conn.set::<_, _, ()>(format!("k{i}"), &value) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (i, err) = refused.expect("writes are refused once maxmemory is exceeded");
    assert!(err.contains("OOM"), "{err}");
    assert!(i > 10, "refused too early, after {i} writes");
    let got: Vec<u8> = conn.get("k0").expect("reads still work");
    assert_eq!(got, value);
    let _: i64 = conn.del("k0").expect("deletes still work");
}

fn topology_json(epoch: u64, nodes: &[(&str, u16, (u16, u16))]) -> String {
    let shards: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, (id, port, (a, b)))| {
            format!(
                r#"{{"name":"shard-{i}","slots":[[{a},{b}]],"primary":{{"id":"{id}","host":"127.0.0.1","port":{port}}},"replicas":[],"epoch":{epoch}}}"#
            )
        })
        .collect();
    format!(r#"{{"epoch":{epoch},"shards":[{}]}}"#, shards.join(","))
}

fn node_id(node: &TestNode) -> String {
    let mut c = node.conn();
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut c)
        .expect("CLUSTER MYID")
}

/// Three nodes, one topology: MOVED redirects, `redis-cli --cluster check`
/// agrees, and the `redis` crate's cluster client writes and reads keys
/// across all shards.
#[test]
fn three_node_topology_serves_a_cluster_client() {
    let nodes: Vec<TestNode> = (0..3)
        .map(|_| TestNode::start(&["--no-persistence"]))
        .collect();
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    let ranges = [(0u16, 5460u16), (5461, 10922), (10923, 16383)];
    let layout: Vec<(&str, u16, (u16, u16))> = (0..3)
        .map(|i| (ids[i].as_str(), nodes[i].port, ranges[i]))
        .collect();
    let topo = topology_json(2, &layout);
    for n in &nodes {
        let (status, body) =
            http(n.admin_port, "PUT", "/v1/topology", &topo).expect("admin reachable");
        assert_eq!(status, 200, "{body}");
    }
    // An older epoch is refused.
    let (status, body) = http(
        nodes[0].admin_port,
        "PUT",
        "/v1/topology",
        &topology_json(1, &layout),
    )
    .expect("admin");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("older"), "{body}");

    // "foo" is slot 12182: shard 2. Node 0 redirects.
    let mut c0 = nodes[0].conn();
    let err = c0
        .get::<_, Option<String>>("foo")
        .expect_err("a MOVED error");
    assert_eq!(err.kind(), redis::ErrorKind::Moved);
    assert!(
        err.to_string()
            .contains(&format!("12182 127.0.0.1:{}", nodes[2].port)),
        "{err}"
    );

    let cli = redis_tool("redis-cli");
    let out = Command::new(cli)
        .args([
            "--cluster",
            "check",
            &format!("127.0.0.1:{}", nodes[1].port),
        ])
        .output()
        .expect("redis-cli runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[OK] All nodes agree about slots configuration."),
        "{text}"
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let client = redis::cluster::ClusterClient::new(urls).expect("cluster client");
        let mut conn = client
            .get_async_connection()
            .await
            .expect("cluster connection");
        for i in 0..2000 {
            let _: () = redis::AsyncCommands::set(&mut conn, format!("key:{i}"), i)
                .await
                .expect("set");
        }
        for i in 0..2000 {
            let v: i64 = redis::AsyncCommands::get(&mut conn, format!("key:{i}"))
                .await
                .expect("get");
            assert_eq!(v, i);
        }
    });
    // Every shard got a share.
    for n in &nodes {
        let mut c = n.conn();
        let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
        assert!(size > 400, "shard on port {} has only {size} keys", n.port);
    }
    let (status, body) = http_get(nodes[0].admin_port, "/v1/status").expect("status");
    assert_eq!(status, 200);
    assert!(body.contains("\"epoch\": 2"), "{body}");
}

#[test]
fn admin_endpoints_answer() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut conn = node.conn();
    let _: () = conn.set("a", "b").expect("set");
    let (s, body) = http_get(node.admin_port, "/healthz").expect("healthz");
    assert_eq!(s, 200, "{body}");
    let (s, _) = http_get(node.admin_port, "/readyz").expect("readyz");
    assert_eq!(s, 200);
    let (s, body) = http_get(node.admin_port, "/metrics").expect("metrics");
    assert_eq!(s, 200);
    for m in [
        "tessera_commands_total{command=\"set\"} 1",
        "tessera_command_duration_seconds_bucket",
        "tessera_keys 1",
        "tessera_lsn 1",
        "tessera_wal_bytes_written_total",
        "tessera_snapshot_age_seconds",
        "tessera_connected_clients 1",
    ] {
        assert!(body.contains(m), "metrics lack {m}:\n{body}");
    }
    let (s, body) = http_get(node.admin_port, "/v1/status").expect("status");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(v["role"], "primary");
    assert_eq!(v["keys"], 1);
    assert_eq!(v["slots"][0][1], 16383);
    let (s, _) = http_get(node.admin_port, "/nope").expect("404");
    assert_eq!(s, 404);
}

/// Replies compared with a real redis-server.
#[path = "compat/differential.rs"]
mod differential;
/// MULTI/EXEC/WATCH, scripts, blocking pops and pub/sub against redis-server.
#[path = "compat/transactions.rs"]
mod transactions;

#[path = "compat/stream_groups.rs"]
mod stream_groups;

#[path = "compat/notifications.rs"]
mod notifications;

#[path = "compat/sort.rs"]
mod sort;

#[path = "compat/dump.rs"]
mod dump;

#[path = "compat/msgpack.rs"]
mod msgpack;

#[path = "compat/encodings.rs"]
mod encodings;

#[path = "compat/functions.rs"]
mod functions;

#[path = "compat/random_blocking.rs"]
mod random_blocking;
/// Differences the random sequences found, as fixed cases.
#[path = "compat/random_regressions.rs"]
mod random_regressions;
#[path = "compat/random_scan.rs"]
mod random_scan;
#[path = "compat/random_scripts.rs"]
mod random_scripts;
/// Random command sequences (proptest) compared with redis-server.
#[path = "compat/random_sequences.rs"]
mod random_sequences;
#[path = "compat/random_streams.rs"]
mod random_streams;
#[path = "compat/random_templates.rs"]
mod random_templates;
