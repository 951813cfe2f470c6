//! Compatibility with real Redis: replies compared with a redis-server
//! (differential tests, at the end), redis-benchmark,
//! redis-cli --cluster check, the `redis` crate's cluster client, and what a
//! node does with bad input.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, http_get, redis_tool, TestNode};
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

// Differential tests: the same commands against a node and a real
// redis-server (Debian's, on a loopback port, without persistence); every
// reply, errors included, must be identical.

/// A redis-server child, killed when dropped.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Self {
        let bin = redis_tool("redis-server");
        let port = free_port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers, and a connection to each.
struct Pair {
    _node: TestNode,
    _redis: RedisServer,
    node: raw::Raw,
    redis: raw::Raw,
}

impl Pair {
    fn start() -> Self {
        let node = TestNode::start(&["--no-persistence"]);
        let redis = RedisServer::start();
        let timeout = Duration::from_secs(30);
        Self {
            node: raw::Raw::connect(&node, timeout),
            redis: raw::Raw::connect_port(redis.port, timeout),
            _node: node,
            _redis: redis,
        }
    }

    /// Runs `args` on both; the replies must be equal. Returns the reply.
    fn same(&mut self, args: &[&str]) -> Frame {
        let ours = self.node.cmd(args);
        let theirs = self.redis.cmd(args);
        assert_eq!(
            ours, theirs,
            "{args:?}: node (left) and redis-server (right) differ"
        );
        ours
    }

    /// Runs every command of a script with [`Pair::same`].
    fn script(&mut self, script: &[&[&str]]) {
        for args in script {
            self.same(args);
        }
    }
}

#[test]
fn string_range_float_and_getex_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SET", "s", "Hello World"],
        &["GETRANGE", "s", "0", "4"],
        &["GETRANGE", "s", "-5", "-1"],
        &["GETRANGE", "s", "-1", "-5"],
        &["GETRANGE", "s", "-100", "-50"],
        &["GETRANGE", "s", "5", "2"],
        &["GETRANGE", "s", "0", "9223372036854775807"],
        &[
            "GETRANGE",
            "s",
            "-9223372036854775808",
            "-9223372036854775808",
        ],
        &["GETRANGE", "s", "x", "1"],
        &["GETRANGE", "missing", "0", "-1"],
        &["SUBSTR", "s", "6", "-1"],
        &["GETRANGE", "s", "0"],
        &["SETRANGE", "s", "6", "Redis"],
        &["GET", "s"],
        &["SETRANGE", "s", "20", "!"],
        &["GET", "s"],
        &["SETRANGE", "new", "3", "abc"],
        &["GET", "new"],
        &["SETRANGE", "empty", "5", ""],
        &["EXISTS", "empty"],
        &["SETRANGE", "s", "100", ""],
        &["SETRANGE", "s", "-1", "x"],
        &["SETRANGE", "s", "536870911", "x"],
        &["SETRANGE", "s", "536870912", "x"],
        &["SETRANGE", "s", "536870910", "xyz"],
        &["SETRANGE", "s", "9223372036854775807", "x"],
        &["SETRANGE", "s", "nope", "x"],
        &["LPUSH", "l", "a"],
        &["SETRANGE", "l", "0", "x"],
        &["GETRANGE", "l", "0", "1"],
        &["SET", "f", "10.5"],
        &["INCRBYFLOAT", "f", "0.1"],
        &["INCRBYFLOAT", "f", "-5"],
        // Redis adds in 80-bit long double: values exact in binary agree
        // to the last digit (docs/node.md lists the difference).
        &["SET", "f", "2.5"],
        &["INCRBYFLOAT", "f", "5.0e3"],
        &["INCRBYFLOAT", "f", "2.0e2"],
        &["INCRBYFLOAT", "nf", "3"],
        &["INCRBYFLOAT", "nf", "1.5"],
        &["INCRBYFLOAT", "f", "abc"],
        &["INCRBYFLOAT", "f", "inf"],
        &["INCRBYFLOAT", "f", "nan"],
        &["INCRBYFLOAT", "s", "1"],
        &["INCRBYFLOAT", "l", "1"],
        &["SET", "i", "5"],
        &["INCRBYFLOAT", "i", "-5"],
        &["GET", "i"],
        &["GETEX", "s"],
        &["GETEX", "missing"],
        &["GETEX", "missing", "EX", "-5"],
        &["GETEX", "s", "EX", "0"],
        &["GETEX", "s", "EX", "-1"],
        &["GETEX", "s", "EX", "9223372036854775807"],
        &["GETEX", "s", "PX", "9223372036854775807"],
        &["GETEX", "s", "EX", "abc"],
        &["GETEX", "s", "EX"],
        &["GETEX", "s", "EX", "10", "PX", "10"],
        &["GETEX", "s", "PERSIST", "EX", "10"],
        &["GETEX", "s", "FOO"],
        &["GETEX", "l"],
        &["GETEX", "s", "EX", "100"],
        &["TTL", "s"],
        &["GETEX", "s", "PERSIST"],
        &["TTL", "s"],
        &["GETEX", "s", "PXAT", "1"],
        &["EXISTS", "s"],
        &["GETEX", "new", "EXAT", "9999999999"],
        &["EXPIRETIME", "new"],
        &["MSETNX", "{m}a", "1", "{m}b", "2"],
        &["MGET", "{m}a", "{m}b"],
        &["MSETNX", "{m}b", "3", "{m}c", "4"],
        &["EXISTS", "{m}c"],
        &["MSETNX", "{m}a", "1", "{m}b"],
        &["MSETNX", "{m}a"],
    ]);
}

#[test]
fn bit_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "7", "1"],
        &["SETBIT", "b", "100", "1"],
        &["GET", "b"],
        &["SETBIT", "b", "7", "0"],
        &["GETBIT", "b", "100"],
        &["GETBIT", "b", "7"],
        &["GETBIT", "b", "100000"],
        &["GETBIT", "missing", "3"],
        &["SETBIT", "b", "-1", "1"],
        &["SETBIT", "b", "4294967296", "1"],
        &["SETBIT", "b", "x", "1"],
        &["SETBIT", "b", "1", "2"],
        &["SETBIT", "b", "1", "-1"],
        &["SETBIT", "b", "1", "x"],
        &["GETBIT", "b", "-1"],
        &["GETBIT", "b", "4294967296"],
        &["GETBIT", "b", "4294967295"],
        &["LPUSH", "l", "a"],
        &["SETBIT", "l", "1", "1"],
        &["GETBIT", "l", "1"],
        &["SET", "s", "foobar"],
        &["BITCOUNT", "s"],
        &["BITCOUNT", "s", "0", "0"],
        &["BITCOUNT", "s", "1", "1"],
        &["BITCOUNT", "s", "1", "1", "BYTE"],
        &["BITCOUNT", "s", "5", "30", "BIT"],
        &["BITCOUNT", "s", "-3", "-1", "bit"],
        &["BITCOUNT", "s", "-1", "-3"],
        &["BITCOUNT", "s", "-100", "-50"],
        &["BITCOUNT", "s", "0", "-9223372036854775808"],
        &[
            "BITCOUNT",
            "s",
            "-9223372036854775808",
            "9223372036854775807",
            "BIT",
        ],
        &["BITCOUNT", "s", "0"],
        &["BITCOUNT", "s", "0", "1", "WORD"],
        &["BITCOUNT", "s", "a", "1"],
        &["BITCOUNT", "missing", "a", "1"],
        &["BITCOUNT", "missing"],
        &["BITCOUNT", "l"],
        &["SET", "p", "\u{0}\u{ff}\u{f0}"],
        &["SET", "z", "\u{0}\u{0}\u{0}"],
        &["SET", "o", "\u{7f}"],
        &["BITPOS", "z", "1"],
        &["BITPOS", "z", "0"],
        &["BITPOS", "s", "1"],
        &["BITPOS", "s", "0"],
        &["BITPOS", "s", "1", "2"],
        &["BITPOS", "s", "0", "2", "-1"],
        &["BITPOS", "s", "1", "7", "15", "BIT"],
        &["BITPOS", "s", "0", "7", "15", "BIT"],
        &["BITPOS", "s", "1", "-1", "-3"],
        &["BITPOS", "s", "1", "-10", "-20"],
        &["BITPOS", "s", "1", "-10", "-20", "BIT"],
        &["BITPOS", "s", "1", "0", "-1", "WORD"],
        &["BITPOS", "s", "2"],
        &["BITPOS", "s", "x"],
        &["BITPOS", "s", "1", "x"],
        &["BITPOS", "s", "1", "0", "x"],
        &["BITPOS", "s", "1", "0", "1", "BIT", "extra"],
        &["BITPOS", "missing", "1"],
        &["BITPOS", "missing", "0"],
        &["BITPOS", "missing", "0", "5", "1"],
        &["BITPOS", "l", "1"],
        &["SET", "ff", "\u{7f}"],
        &["SETBIT", "ff", "0", "1"],
        &["BITPOS", "ff", "0"],
        &["BITPOS", "ff", "0", "0", "-1"],
        &["BITPOS", "ff", "0", "0", "7", "BIT"],
        &["BITPOS", "ff", "0", "3", "-1", "BIT"],
        &["BITPOS", "ff", "1", "3", "5", "BIT"],
        &["SET", "e", ""],
        &["BITPOS", "e", "0"],
        &["BITPOS", "e", "1"],
        &["BITCOUNT", "e", "0", "-1"],
        &["GETRANGE", "e", "0", "-1"],
    ]);
    // Every bit window of a short string, both units.
    p.same(&["SET", "w", "\u{1}\u{80}\u{3c}"]);
    for a in -26..26 {
        for b in -26..26 {
            let (a, b) = (a.to_string(), b.to_string());
            for unit in ["BYTE", "BIT"] {
                p.same(&["BITCOUNT", "w", &a, &b, unit]);
                p.same(&["BITPOS", "w", "1", &a, &b, unit]);
                p.same(&["BITPOS", "w", "0", &a, &b, unit]);
            }
            p.same(&["BITPOS", "w", "0", &a]);
            p.same(&["GETRANGE", "w", &a, &b]);
        }
    }
}

#[test]
fn list_commands_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["RPUSH", "{l}a", "a", "b", "c", "1", "2", "3", "c", "c"],
        &["LPOS", "{l}a", "c"],
        &["LPOS", "{l}a", "c", "RANK", "2"],
        &["LPOS", "{l}a", "c", "RANK", "-1"],
        &["LPOS", "{l}a", "c", "RANK", "-2", "COUNT", "0"],
        &["LPOS", "{l}a", "c", "COUNT", "0"],
        &["LPOS", "{l}a", "c", "COUNT", "2"],
        &["LPOS", "{l}a", "c", "COUNT", "0", "MAXLEN", "7"],
        &["LPOS", "{l}a", "c", "RANK", "-1", "MAXLEN", "1"],
        &["LPOS", "{l}a", "c", "RANK", "5"],
        &["LPOS", "{l}a", "c", "RANK", "5", "COUNT", "1"],
        &["LPOS", "{l}a", "zz"],
        &["LPOS", "{l}a", "c", "RANK", "0"],
        &["LPOS", "{l}a", "c", "RANK", "-9223372036854775808"],
        &["LPOS", "{l}a", "c", "RANK", "9223372036854775807"],
        &["LPOS", "{l}a", "c", "RANK", "x"],
        &["LPOS", "{l}a", "c", "COUNT", "-1"],
        &["LPOS", "{l}a", "c", "COUNT", "x"],
        &["LPOS", "{l}a", "c", "MAXLEN", "-1"],
        &["LPOS", "{l}a", "c", "MAXLEN", "9223372036854775807"],
        &["LPOS", "{l}a", "c", "COUNT"],
        &["LPOS", "{l}a", "c", "FOO", "1"],
        &["LPOS", "{l}none", "c"],
        &["LPOS", "{l}none", "c", "COUNT", "3"],
        &["SET", "{l}s", "x"],
        &["LPOS", "{l}s", "c"],
        &["LINSERT", "{l}a", "BEFORE", "c", "X"],
        &["LINSERT", "{l}a", "after", "c", "Y"],
        &["LINSERT", "{l}a", "AFTER", "nope", "Y"],
        &["LINSERT", "{l}a", "MIDDLE", "c", "Y"],
        &["LINSERT", "{l}none", "BEFORE", "c", "Y"],
        &["LINSERT", "{l}s", "BEFORE", "c", "Y"],
        &["LRANGE", "{l}a", "0", "-1"],
        &["LMOVE", "{l}a", "{l}b", "LEFT", "RIGHT"],
        &["LMOVE", "{l}a", "{l}b", "RIGHT", "LEFT"],
        &["LMOVE", "{l}a", "{l}a", "LEFT", "RIGHT"],
        &["LMOVE", "{l}a", "{l}b", "UP", "LEFT"],
        &["LMOVE", "{l}a", "{l}b", "LEFT", "DOWN"],
        &["LMOVE", "{l}none", "{l}b", "LEFT", "LEFT"],
        &["LMOVE", "{l}none", "{l}s", "LEFT", "LEFT"],
        &["LMOVE", "{l}a", "{l}s", "LEFT", "LEFT"],
        &["LMOVE", "{l}s", "{l}a", "LEFT", "LEFT"],
        &["LRANGE", "{l}a", "0", "-1"],
        &["LRANGE", "{l}b", "0", "-1"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["RPOPLPUSH", "{l}b", "{l}c"],
        &["EXISTS", "{l}b"],
        &["RPOPLPUSH", "{l}c", "{l}c"],
        &["RPOPLPUSH", "{l}none", "{l}c"],
        &["RPOPLPUSH", "{l}c", "{l}s"],
        &["LRANGE", "{l}c", "0", "-1"],
    ]);
}

#[test]
fn lmpop_matches_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["RPUSH", "{p}b", "1", "2", "3", "4", "5"],
        &["SET", "{p}s", "x"],
        &["LMPOP", "2", "{p}a", "{p}b", "LEFT"],
        &["LMPOP", "2", "{p}a", "{p}b", "RIGHT", "COUNT", "2"],
        &["LMPOP", "2", "{p}a", "{p}b", "left", "count", "100"],
        &["EXISTS", "{p}b"],
        &["LMPOP", "2", "{p}a", "{p}b", "LEFT"],
        &["LMPOP", "1", "{p}s", "LEFT"],
        &["LMPOP", "2", "{p}a", "{p}s", "LEFT"],
        &["LMPOP", "0", "{p}a", "LEFT"],
        &["LMPOP", "-1", "{p}a", "LEFT"],
        &["LMPOP", "x", "{p}a", "LEFT"],
        &["LMPOP", "9223372036854775807", "{p}a", "LEFT"],
        &["LMPOP", "2", "{p}a", "LEFT"],
        &["LMPOP", "1", "{p}a", "UP"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "0"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "-1"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "x"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT", "1", "COUNT", "1"],
        &["LMPOP", "1", "{p}a", "LEFT", "COUNT"],
        &["LMPOP", "1", "{p}a", "LEFT", "FOO"],
        &["LMPOP", "1", "{p}a"],
    ]);
}

#[test]
fn multi_key_list_moves_stay_in_one_slot() {
    let node = TestNode::start(&["--no-persistence"]);
    let mut c = raw::Raw::connect(&node, Duration::from_secs(10));
    for args in [
        &["LMOVE", "a", "b", "LEFT", "LEFT"][..],
        &["RPOPLPUSH", "a", "b"],
        &["LMPOP", "2", "a", "b", "LEFT"],
        &["MSETNX", "a", "1", "b", "2"],
    ] {
        match c.cmd(args) {
            Frame::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}"),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    let Frame::Array(keys) = c.cmd(&["COMMAND", "GETKEYS", "LMPOP", "2", "{a}x", "{a}y", "LEFT"])
    else {
        panic!("GETKEYS answers an array");
    };
    assert_eq!(
        keys,
        vec![Frame::Bulk(b"{a}x".to_vec()), Frame::Bulk(b"{a}y".to_vec())]
    );
}
