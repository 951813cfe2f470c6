//! Blocking pops on real nodes: FIFO wakeup, the pop logged as a pop and
//! replicated, and a blocked client on a demoted primary answered (never a
//! hang).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::transactions::log_records;
use super::{addr_of, conn, fence, follow, promote, restart_in, start, wait_caught_up};

pub(super) fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

pub(super) fn send(s: &mut TcpStream, args: &[&str]) {
    let mut b = format!("*{}\r\n", args.len());
    for a in args {
        b.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(b.as_bytes()).expect("send");
}

/// Reads what the node sent within `wait` (the whole reply of a pop).
pub(super) fn read_reply(s: &mut TcpStream, wait: Duration) -> String {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\r\n")
                    && (got[0] != b'*'
                        || got.iter().filter(|&&c| c == b'\n').count() >= 5
                        || got.starts_with(b"*-1"))
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn blocked_pops_are_served_in_arrival_order_and_logged_as_pops() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let mut clients: Vec<TcpStream> = (0..3).map(|_| raw(p.port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        send(c, &["BLPOP", "{q}jobs", "0"]);
        // Arrival order is the order they blocked in: each is blocked
        // before the next arrives.
        wait_blocked(&p, i + 1);
    }
    let mut w = conn(&p);
    let _: i64 = redis::cmd("RPUSH")
        .arg("{q}jobs")
        .arg("a")
        .arg("b")
        .arg("c")
        .query(&mut w)
        .expect("RPUSH");
    for (c, want) in clients.iter_mut().zip(["a", "b", "c"]) {
        let got = read_reply(c, Duration::from_secs(5));
        assert_eq!(got, format!("*2\r\n$7\r\n{{q}}jobs\r\n$1\r\n{want}\r\n"));
    }
    wait_caught_up(&r, &p, Duration::from_secs(30));
    let pops: Vec<Vec<Vec<u8>>> = log_records(&p.dir)
        .into_iter()
        .filter(|r| r.args[0] == b"LPOP")
        .map(|r| r.args)
        .collect();
    assert_eq!(pops.len(), 3, "each pop is logged as an LPOP");
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    let n: i64 = redis::cmd("LLEN")
        .arg("{q}jobs")
        .query(&mut rc)
        .expect("LLEN");
    assert_eq!(n, 0, "the replica applied the pops");
}

#[test]
fn a_blocked_bzmpop_is_woken_by_zadd_and_logged_as_a_zpop() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut c = raw(p.port);
    send(
        &mut c,
        &["BZMPOP", "0", "2", "{z}a", "{z}b", "MAX", "COUNT", "2"],
    );
    wait_blocked(&p, 1);
    let mut w = conn(&p);
    let _: i64 = redis::cmd("ZADD")
        .arg("{z}b")
        .arg(1)
        .arg("m1")
        .arg(2)
        .arg("m2")
        .arg(3)
        .arg("m3")
        .query(&mut w)
        .expect("ZADD");
    let got = read_reply(&mut c, Duration::from_secs(5));
    assert_eq!(
        got,
        "*2\r\n$4\r\n{z}b\r\n*2\r\n*2\r\n$2\r\nm3\r\n$1\r\n3\r\n*2\r\n$2\r\nm2\r\n$1\r\n2\r\n"
    );
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg("{z}b")
        .arg(0)
        .arg(-1)
        .query(&mut w)
        .expect("ZRANGE");
    assert_eq!(left, ["m1"]);
    let pops: Vec<Vec<Vec<u8>>> = log_records(&p.dir)
        .into_iter()
        .filter(|r| r.args[0] == b"ZPOPMAX")
        .map(|r| r.args)
        .collect();
    assert_eq!(
        pops,
        [vec![b"ZPOPMAX".to_vec(), b"{z}b".to_vec(), b"2".to_vec()]]
    );
}

#[test]
fn a_blocked_client_on_a_demoted_primary_gets_an_error_not_a_hang() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut c = raw(p.port);
    send(&mut c, &["BLPOP", "{q}never", "0"]);
    wait_blocked(&p, 1);
    let started = Instant::now();
    assert_eq!(fence(&p, 2), 200, "fence");
    let got = read_reply(&mut c, Duration::from_secs(5));
    assert!(
        got.starts_with("-READONLY") || got.starts_with("-MOVED"),
        "the blocked client is answered: {got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
}

#[test]
fn a_client_that_leaves_while_blocked_takes_nothing() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut c = raw(p.port);
    send(&mut c, &["BRPOP", "{q}k", "0"]);
    wait_blocked(&p, 1);
    drop(c);
    wait_blocked(&p, 0);
    let mut w = conn(&p);
    let _: i64 = redis::cmd("LPUSH")
        .arg("{q}k")
        .arg("v")
        .query(&mut w)
        .expect("LPUSH");
    std::thread::sleep(Duration::from_millis(100));
    let n: i64 = redis::cmd("LLEN").arg("{q}k").query(&mut w).expect("LLEN");
    assert_eq!(n, 1, "the element stays for a live client");
}

/// Waits (≤ 5 s) until `INFO`'s `blocked_clients` is `n`: the client is
/// really blocked (or really gone) before the test goes on.
pub(super) fn wait_blocked(node: &super::TestNode, n: usize) {
    let mut c = conn(node);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut c)
            .expect("INFO");
        let got = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if got == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "blocked_clients stayed {got:?}, not {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
