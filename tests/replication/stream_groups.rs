//! Stream consumer groups on real nodes: group state (last IDs, read
//! counters, PELs with delivery times and counts, consumers) reaches a
//! replica, survives a restart from the log and from a snapshot; blocked
//! XREADGROUPs are served in arrival order.

use std::time::Duration;

use super::blocking::{raw, read_reply, send, wait_blocked};
use super::{addr_of, conn, follow, promote, restart_in, start, wait_caught_up};
use crate::common::http;

fn q(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

/// Every stream's whole state as XINFO STREAM FULL shows it (times
/// included: they are logged, not recomputed).
fn state(c: &mut redis::Connection, keys: &[&str]) -> Vec<redis::Value> {
    keys.iter()
        .map(|k| q(c, &["XINFO", "STREAM", k, "FULL", "COUNT", "0"]))
        .collect()
}

const KEYS: &[&str] = &["{x}jobs", "{x}made", "{x}gone"];

fn first_half(c: &mut redis::Connection) {
    for i in 1..=6 {
        q(
            c,
            &["XADD", "{x}jobs", &format!("{i}-0"), "n", &i.to_string()],
        );
    }
    q(c, &["XGROUP", "CREATE", "{x}jobs", "workers", "0"]);
    q(
        c,
        &[
            "XGROUP",
            "CREATE",
            "{x}jobs",
            "audit",
            "$",
            "ENTRIESREAD",
            "6",
        ],
    );
    q(c, &["XGROUP", "CREATE", "{x}made", "g", "$", "MKSTREAM"]);
    q(c, &["XGROUP", "CREATE", "{x}gone", "g", "0", "MKSTREAM"]);
    q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "a",
            "COUNT",
            "2",
            "STREAMS",
            "{x}jobs",
            ">",
        ],
    );
    q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "b",
            "COUNT",
            "2",
            "STREAMS",
            "{x}jobs",
            ">",
        ],
    );
    q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "a",
            "STREAMS",
            "{x}jobs",
            "0",
        ],
    );
}

fn second_half(c: &mut redis::Connection) {
    q(c, &["XACK", "{x}jobs", "workers", "1-0"]);
    q(c, &["XDEL", "{x}jobs", "4-0"]);
    q(
        c,
        &[
            "XCLAIM",
            "{x}jobs",
            "workers",
            "c",
            "0",
            "2-0",
            "TIME",
            "1000",
            "RETRYCOUNT",
            "7",
        ],
    );
    q(
        c,
        &[
            "XAUTOCLAIM",
            "{x}jobs",
            "workers",
            "d",
            "0",
            "0",
            "COUNT",
            "5",
        ],
    );
    q(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "workers",
            "e",
            "NOACK",
            "STREAMS",
            "{x}jobs",
            ">",
        ],
    );
    q(c, &["XGROUP", "CREATECONSUMER", "{x}jobs", "audit", "idle"]);
    q(
        c,
        &[
            "XGROUP",
            "SETID",
            "{x}jobs",
            "audit",
            "3-0",
            "ENTRIESREAD",
            "3",
        ],
    );
    q(
        c,
        &["XGROUP", "CREATECONSUMER", "{x}jobs", "workers", "temp"],
    );
    q(c, &["XGROUP", "DELCONSUMER", "{x}jobs", "workers", "temp"]);
    q(c, &["XGROUP", "DESTROY", "{x}gone", "g"]);
}

#[test]
fn consumer_groups_reach_a_replica_and_survive_restarts_from_log_and_snapshot() {
    let mut p = start(0, "eventual", &[]);
    promote(&p, 1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = restart_in(1, "eventual", tmp.path(), 0, 0);
    follow(&r, 1, addr_of(0, p.port));
    let mut c = conn(&p);
    first_half(&mut c);
    // The first half reaches the next start through a snapshot.
    let (s, b) = http(p.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
    assert_eq!(s, 200, "{b}");
    second_half(&mut c);
    let expected = state(&mut c, KEYS);
    let text = format!("{expected:?}");
    assert!(
        text.contains("\"d\""),
        "XAUTOCLAIM gave consumer d entries: {text}"
    );

    wait_caught_up(&r, &p, Duration::from_secs(30));
    let mut rc = conn(&r);
    redis::cmd("READONLY")
        .query::<()>(&mut rc)
        .expect("READONLY");
    assert_eq!(state(&mut rc, KEYS), expected, "the replica's groups");

    drop((c, rc));
    p.restart();
    promote(&p, 2);
    let mut c = conn(&p);
    assert_eq!(
        state(&mut c, KEYS),
        expected,
        "snapshot + log replay rebuilds the groups"
    );
    // Everything in a snapshot now: a restart loads it without replay.
    let (s, b) = http(p.admin_port, "POST", "/v1/snapshot", "").expect("snapshot");
    assert_eq!(s, 200, "{b}");
    drop(c);
    p.restart();
    promote(&p, 3);
    let mut c = conn(&p);
    assert_eq!(
        state(&mut c, KEYS),
        expected,
        "the snapshot holds the groups"
    );
}

#[test]
fn blocked_xreadgroups_are_served_in_arrival_order() {
    let p = start(0, "eventual", &[]);
    promote(&p, 1);
    let mut c = conn(&p);
    q(&mut c, &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    let mut clients: Vec<_> = (0..3).map(|_| raw(p.port)).collect();
    for (i, cl) in clients.iter_mut().enumerate() {
        let name = format!("c{i}");
        send(
            cl,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                &name,
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">",
            ],
        );
        // Each is blocked before the next arrives.
        wait_blocked(&p, i + 1);
    }
    for i in 0..3 {
        q(
            &mut c,
            &["XADD", "s", &format!("{}-0", i + 1), "n", &i.to_string()],
        );
        let got = read_reply(&mut clients[i], Duration::from_secs(5));
        assert!(
            got.contains(&format!("{}-0", i + 1)),
            "client {i} got entry {}: {got:?}",
            i + 1
        );
        for (j, other) in clients.iter_mut().enumerate().skip(i + 1) {
            let none = read_reply(other, Duration::from_millis(100));
            assert!(none.is_empty(), "client {j} stays blocked: {none:?}");
        }
    }
    let pending = format!("{:?}", q(&mut c, &["XPENDING", "s", "g", "-", "+", "10"]));
    for i in 0..3 {
        assert!(
            pending.contains(&format!("c{i}")),
            "c{i} owns its entry: {pending}"
        );
    }
}
