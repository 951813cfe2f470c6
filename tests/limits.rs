//! Resource bounds of `tessera node` (issue 21, "Secure by default"): limits
//! before AUTH, range checks on counts, the per-command reply cap, the
//! client output buffer limit, and every command family run with extreme
//! integer arguments against a node whose address space is capped.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::TestNode;
use raw::{NoReply, Raw};
use tessera::node::resp::{encode_command, Frame};

const PASSWORD: &str = "s3cret-limits";

fn connect(node: &TestNode) -> Raw {
    Raw::connect(node, Duration::from_secs(60))
}

/// The next reply, or None when the node closed the connection (or said
/// nothing within the read timeout).
fn reply(c: &mut Raw) -> Option<Frame> {
    match c.next_reply() {
        Ok(f) => Some(f),
        Err(NoReply::Invalid(e)) => panic!("an invalid reply: {e}"),
        Err(_) => None,
    }
}

/// A field of `INFO stats`.
fn stat(c: &mut Raw, field: &str) -> String {
    let info = match c.cmd(&["INFO", "stats"]) {
        Frame::Bulk(b) => String::from_utf8(b).expect("UTF-8 INFO"),
        other => panic!("INFO answers a bulk string, got {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in INFO stats"))
        .trim()
        .to_string()
}

fn err_text(f: Frame) -> String {
    match f {
        Frame::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn secured_node() -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pass = dir.path().join("password");
    std::fs::write(&pass, format!("{PASSWORD}\n")).expect("write the password file");
    let node = TestNode::start(&[
        "--no-persistence",
        "--requirepass-file",
        pass.to_str().expect("UTF-8 path"),
    ]);
    (node, dir)
}

/// Writes `header` then up to `payload` bytes, stopping at the first write
/// error (the node closed the connection).
fn push_payload(port: u16, header: &[u8], payload: usize) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    if s.write_all(header).is_err() {
        return;
    }
    let chunk = vec![b'x'; 1024 * 1024];
    let mut sent = 0;
    while sent < payload {
        if s.write_all(&chunk).is_err() {
            return;
        }
        sent += chunk.len();
    }
    // Give the node time to read what was sent before the socket closes.
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn unauthenticated_huge_headers_get_an_error_and_the_connection_closes() {
    let (n, _dir) = secured_node();
    for (header, message) in [
        (&b"*1048576\r\n"[..], "unauthenticated multibulk length"),
        (&b"*11\r\n"[..], "unauthenticated multibulk length"),
        (&b"*1\r\n$536870912\r\n"[..], "unauthenticated bulk length"),
        (
            &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16385\r\n"[..],
            "unauthenticated bulk length",
        ),
    ] {
        let mut c = connect(&n);
        c.write_all(header).expect("write");
        let e = err_text(reply(&mut c).expect("an error before the close"));
        assert_eq!(e, format!("ERR Protocol error: {message}"), "{header:?}");
        assert!(c.closed(), "the connection closes after {header:?}");
    }
    // After AUTH, the same sizes are ordinary requests.
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["AUTH", PASSWORD]), Frame::Simple("OK".into()));
    let big = "v".repeat(100_000);
    assert_eq!(c.cmd(&["SET", "k", &big]), Frame::Simple("OK".into()));
    let many: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let mut sadd = vec!["SADD", "s"];
    sadd.extend(many.iter().map(String::as_str));
    assert_eq!(c.cmd(&sadd), Frame::Integer(50));
}

#[test]
fn unauthenticated_peers_cannot_grow_the_nodes_memory() {
    let (n, _dir) = secured_node();
    let before = n.rss_kib();
    // Four peers each announce a 512 MiB argument and stream 128 MiB of it:
    // buffered, that would be 512 MiB of resident memory.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let port = n.port;
            std::thread::spawn(move || {
                push_payload(
                    port,
                    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n",
                    128 * 1024 * 1024,
                )
            })
        })
        .collect();
    for t in threads {
        t.join().expect("the peer thread ends");
    }
    let after = n.rss_kib();
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB for unauthenticated input"
    );
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["AUTH", PASSWORD]), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn an_unauthenticated_client_that_never_reads_is_closed_at_a_small_output() {
    let (n, _dir) = secured_node();
    let mut c = connect(&n);
    // A small pipeline before AUTH gets its NOAUTH replies.
    let mut out = Vec::new();
    for _ in 0..3 {
        encode_command(&["GET", "k"], &mut out);
    }
    c.write_all(&out).expect("write");
    for _ in 0..3 {
        assert!(err_text(reply(&mut c).expect("a reply")).starts_with("NOAUTH"));
    }
    // 4000 at once would be ~130 KB of replies held for a peer without
    // the password: the node closes it instead (Redis: CVE-2025-21605).
    let inline = "GET k\r\n".repeat(4000);
    c.write_all(inline.as_bytes()).expect("write");
    assert!(c.closed(), "the client is closed");
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["AUTH", PASSWORD]), Frame::Simple("OK".into()));
    // Authenticated, the same pipeline is answered in full.
    c.write_all(inline.as_bytes()).expect("write");
    for _ in 0..4000 {
        assert_eq!(reply(&mut c), Some(Frame::Null));
    }
}

#[test]
fn srandmember_with_the_most_negative_count_is_out_of_range_and_the_node_lives() {
    let mut n = TestNode::start(&["--no-persistence"]);
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["SADD", "s", "a"]), Frame::Integer(1));
    let e = err_text(c.cmd(&["SRANDMEMBER", "s", "-9223372036854775808"]));
    assert_eq!(
        e,
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    // The largest positive count is the whole set, not an allocation.
    assert_eq!(
        c.cmd(&["SRANDMEMBER", "s", "9223372036854775807"]),
        Frame::Array(vec![Frame::Bulk(b"a".to_vec())])
    );
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
    assert!(n.alive(), "the node is up");
}

#[test]
fn a_reply_over_max_reply_bytes_is_an_error_and_the_connection_goes_on() {
    let mut n = TestNode::start(&["--no-persistence", "--max-reply-bytes", "1048576"]);
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["SADD", "s", "a"]), Frame::Integer(1));
    // Repeats allowed: as long as asked, so only the cap ends it.
    let e = err_text(c.cmd(&["SRANDMEMBER", "s", "-9223372036854775807"]));
    assert_eq!(
        e,
        "ERR reply exceeds the limit of 1048576 bytes (max-reply-bytes)"
    );
    // Under the cap, a long reply is whole.
    match c.cmd(&["SRANDMEMBER", "s", "-1000"]) {
        Frame::Array(items) => assert_eq!(items.len(), 1000),
        other => panic!("expected 1000 members, got {other:?}"),
    }
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(stat(&mut c, "replies_over_max_reply_bytes"), "1");
    assert!(n.alive());
}

#[test]
fn a_client_over_its_output_buffer_limit_is_closed() {
    let n = TestNode::start(&["--no-persistence", "--client-output-buffer-limit", "65536"]);
    let mut c = connect(&n);
    assert_eq!(c.cmd(&["SADD", "s", "a"]), Frame::Integer(1));
    // One reply of ~7 KB fits; 100 pipelined (~700 KB pending) do not.
    match c.cmd(&["SRANDMEMBER", "s", "-1000"]) {
        Frame::Array(items) => assert_eq!(items.len(), 1000),
        other => panic!("expected 1000 members, got {other:?}"),
    }
    let mut out = Vec::new();
    for _ in 0..100 {
        encode_command(&["SRANDMEMBER", "s", "-1000"], &mut out);
    }
    c.write_all(&out).expect("write");
    assert!(c.closed(), "the client is closed");
    let mut fresh = connect(&n);
    assert_eq!(fresh.cmd(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(
        stat(&mut fresh, "client_output_buffer_limit_disconnections"),
        "1"
    );
}

#[test]
fn append_refuses_to_grow_a_string_past_the_bulk_limit() {
    let n = TestNode::start(&["--no-persistence"]);
    let mut c = connect(&n);
    // Two 300 MiB appends would make a 600 MiB string.
    let part = vec![b'x'; 300 * 1024 * 1024];
    c.send(&[b"APPEND".as_slice(), b"k".as_slice(), part.as_slice()]);
    assert_eq!(reply(&mut c), Some(Frame::Integer(part.len() as i64)));
    c.send(&[b"APPEND".as_slice(), b"k".as_slice(), part.as_slice()]);
    let e = err_text(reply(&mut c).expect("a reply"));
    assert_eq!(
        e,
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(c.cmd(&["STRLEN", "k"]), Frame::Integer(part.len() as i64));
}

#[test]
fn redis_cli_gets_redis_errors_for_out_of_range_counts_and_oversized_requests() {
    let (n, _dir) = secured_node();
    let cli = common::redis_tool("redis-cli");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &n.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let auth = ["--no-auth-warning", "-a", PASSWORD];
    assert_eq!(run(&[&auth[..], &["SADD", "s", "a"]].concat()), "1");
    assert_eq!(
        run(&[&auth[..], &["SRANDMEMBER", "s", "-9223372036854775808"]].concat()),
        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    );
    // Without the password, 11 arguments are refused at the header.
    let many: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let mut args = vec!["SADD", "s"];
    args.extend(many.iter().map(String::as_str));
    let out = run(&args);
    assert!(
        out.contains("unauthenticated multibulk length"),
        "redis-cli printed {out:?}"
    );
    assert_eq!(run(&[&auth[..], &["PING"]].concat()), "PONG");
}

#[test]
fn keys_answers_every_live_match_and_stops_at_the_reply_limit() {
    let n = TestNode::start(&["--no-persistence", "--max-reply-bytes", "65536"]);
    let mut c = connect(&n);
    let mut mset = vec!["MSET".to_string()];
    for i in 0..100 {
        mset.push(format!("{{t}}k{i}"));
        mset.push("v".into());
    }
    let refs: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(c.cmd(&refs), Frame::Simple("OK".into()));
    assert_eq!(c.cmd(&["SET", "other", "v"]), Frame::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["SET", "{t}gone", "v", "PX", "1"]),
        Frame::Simple("OK".into())
    );
    std::thread::sleep(Duration::from_millis(20));
    match c.cmd(&["KEYS", "{t}k*"]) {
        Frame::Array(keys) => {
            let mut keys: Vec<String> = keys
                .into_iter()
                .map(|k| match k {
                    Frame::Bulk(b) => String::from_utf8(b).expect("UTF-8 keys"),
                    other => panic!("a key, got {other:?}"),
                })
                .collect();
            keys.sort();
            let mut want: Vec<String> = (0..100).map(|i| format!("{{t}}k{i}")).collect();
            want.sort();
            assert_eq!(keys, want);
        }
        other => panic!("KEYS answers an array, got {other:?}"),
    }
    match c.cmd(&["KEYS", "*"]) {
        Frame::Array(keys) => assert_eq!(keys.len(), 101, "the expired key is not listed"),
        other => panic!("KEYS answers an array, got {other:?}"),
    }
    // 2000 keys of 40 bytes do not fit in 64 KiB.
    let big: Vec<String> = (0..2000).map(|i| format!("{{b}}{i:0>37}")).collect();
    for chunk in big.chunks(500) {
        let mut mset = vec!["MSET"];
        for k in chunk {
            mset.push(k);
            mset.push("v");
        }
        assert_eq!(c.cmd(&mset), Frame::Simple("OK".into()));
    }
    let e = err_text(c.cmd(&["KEYS", "*"]));
    assert_eq!(
        e,
        "ERR reply exceeds the limit of 65536 bytes (max-reply-bytes)"
    );
    assert_eq!(c.cmd(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn a_client_over_the_query_buffer_limit_is_closed() {
    let n = TestNode::start(&["--no-persistence", "--client-query-buffer-limit", "1048576"]);
    let mut c = connect(&n);
    // A 10 MB argument is legal, but its first 2 MB already pass the limit.
    c.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000000\r\n")
        .expect("write");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..32 {
        if c.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(c.closed(), "the client is closed");
    let mut fresh = connect(&n);
    assert_eq!(
        stat(&mut fresh, "client_query_buffer_limit_disconnections"),
        "1"
    );
    assert_eq!(fresh.cmd(&["EXISTS", "k"]), Frame::Integer(0));
}
