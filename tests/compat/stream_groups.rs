//! Stream consumer groups against a real redis-server: the same commands,
//! the same replies. Idle times and seen/delivery times depend on when each
//! server ran the command: they are compared within a bound, everything
//! else exactly. XINFO's radix-tree counts describe Redis' encoding and are
//! left out (docs/node.md lists them).

use std::time::Duration;

use super::differential::Pair;
use tessera::node::resp::Frame;

/// Replaces the value after each of `fields` (in flat key/value arrays,
/// at any depth) with 0 when it is an integer within `bound` of `near`
/// (`near` None: the value itself must be within `bound` of 0).
fn mask(f: Frame, fields: &[&str], near: Option<i64>, bound: i64) -> Frame {
    match f {
        Frame::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut masked_next = false;
            for item in items {
                if masked_next {
                    masked_next = false;
                    if let Frame::Integer(n) = item {
                        let d = n - near.unwrap_or(0);
                        assert!(
                            d.abs() <= bound,
                            "a time field is {n}, expected near {near:?}"
                        );
                        out.push(Frame::Integer(0));
                        continue;
                    }
                }
                if let Frame::Bulk(b) = &item {
                    masked_next = fields.iter().any(|f| f.as_bytes() == &b[..]);
                }
                out.push(mask(item, fields, near, bound));
            }
            Frame::Array(out)
        }
        other => other,
    }
}

/// XPENDING's extended rows `[id, consumer, idle, count]`: idle within
/// `bound` ms of `idle` becomes 0.
fn mask_idle_rows(f: Frame, idle: i64, bound: i64) -> Frame {
    match f {
        Frame::Array(rows) => Frame::Array(
            rows.into_iter()
                .map(|r| match r {
                    Frame::Array(mut v) if v.len() == 4 => {
                        if let Frame::Integer(n) = v[2] {
                            assert!((n - idle).abs() <= bound, "idle {n}, expected about {idle}");
                            v[2] = Frame::Integer(0);
                        }
                        Frame::Array(v)
                    }
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// Drops the radix-tree counts from an XINFO STREAM reply.
fn without_radix(f: Frame) -> Frame {
    match f {
        Frame::Array(items) => {
            let mut out = Vec::new();
            let mut it = items.into_iter();
            while let Some(k) = it.next() {
                let v = it.next();
                let radix = matches!(&k, Frame::Bulk(b) if b.starts_with(b"radix-tree"));
                if !radix {
                    out.push(k);
                    out.extend(v);
                }
            }
            Frame::Array(out)
        }
        other => other,
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Pair {
    /// Runs `args` on both; replies equal after `norm`.
    fn same_with(&mut self, args: &[&str], norm: impl Fn(Frame) -> Frame) -> Frame {
        let ours = norm(self.node.cmd(args));
        let theirs = norm(self.redis.cmd(args));
        assert_eq!(
            ours, theirs,
            "{args:?}: node (left) and redis-server (right) differ"
        );
        ours
    }
}

#[test]
fn xgroup_subcommands_and_errors_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["XGROUP", "CREATE", "s", "g", "$"],
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
        &["TYPE", "s"],
        &["XGROUP", "CREATE", "s", "g", "$"],
        &["XADD", "s", "1-1", "a", "1"],
        &["XADD", "s", "2-1", "b", "2"],
        &["XGROUP", "CREATE", "s", "g2", "$"],
        &["XGROUP", "CREATE", "s", "g3", "0"],
        &["XGROUP", "CREATE", "s", "g4", "0", "ENTRIESREAD", "-2"],
        &["XGROUP", "CREATE", "s", "g4", "0", "ENTRIESREAD", "x"],
        &["XGROUP", "CREATE", "s", "g4", "0", "foo"],
        &["XGROUP", "CREATE", "s", "g4", "-"],
        &["XGROUP", "CREATE", "s", "g4", "1-x"],
        &["XGROUP", "CREATE", "s", "g5", "1", "ENTRIESREAD", "1"],
        &["XGROUP", "CREATE", "s"],
        &["XGROUP", "SETID", "s", "nog", "0"],
        &["XGROUP", "SETID", "s", "g", "5-0", "ENTRIESREAD", "3"],
        &["XGROUP", "SETID", "s", "g3", "+"],
        &["XGROUP", "SETID", "s", "g3", "-"],
        &["XGROUP", "SETID", "s", "g2", "$"],
        &["XGROUP", "SETID", "s", "g", "9-0", "1", "2"],
        &["XGROUP", "SETID", "missing", "g", "0"],
        &["XGROUP", "CREATECONSUMER", "s", "g", "c1"],
        &["XGROUP", "CREATECONSUMER", "s", "g", "c1"],
        &["XGROUP", "CREATECONSUMER", "s", "nog", "c1"],
        &["XGROUP", "DELCONSUMER", "s", "g", "zz"],
        &["XGROUP", "DELCONSUMER", "s", "g", "c1"],
        &["XGROUP", "DESTROY", "s", "g9"],
        &["XGROUP", "DESTROY", "s", "g4"],
        &["XGROUP", "DESTROY", "s", "g", "x"],
        &["XINFO", "GROUPS", "s"],
        &["XGROUP"],
        &["XGROUP", "foo"],
        &["SET", "str", "v"],
        &["XGROUP", "CREATE", "str", "g", "$", "MKSTREAM"],
        &["XINFO", "GROUPS", "str"],
        &["XINFO", "GROUPS", "nokey"],
        &["XINFO", "CONSUMERS", "s", "nog"],
        &["XINFO", "foo"],
        &["XINFO", "GROUPS"],
        &["XINFO", "STREAM", "s", "FULL", "x"],
    ]);
    let summary = p.same_with(&["XINFO", "STREAM", "s"], without_radix);
    assert!(
        matches!(summary, Frame::Array(ref v) if v.len() == 16),
        "{summary:?}"
    );
}

#[test]
fn xreadgroup_xack_and_xpending_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["XADD", "s", "1-1", "a", "1"],
        &["XADD", "s", "2-1", "b", "2"],
        &["XADD", "s", "3-1", "c", "3"],
        &["XGROUP", "CREATE", "s", "g", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "2",
            "STREAMS",
            "s",
            ">",
        ],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "0"],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "1-1"],
        &["XDEL", "s", "1-1"],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", "0"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">"],
        &["XREADGROUP", "GROUP", "g", "new", "STREAMS", "s", "0"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", "x"],
        &["XREADGROUP", "GROUP", "nog", "c2", "STREAMS", "s", ">"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s2", ">"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", "$"],
        &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", "s", ">", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "-1",
            "STREAMS",
            "s",
            "0",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "x",
            "STREAMS",
            "s",
            "0",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "-1",
            "STREAMS",
            "s",
            "0",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "x",
            "STREAMS",
            "s",
            "0",
        ],
        &["XREADGROUP", "GROUP", "g", "c1", "FOO", "STREAMS", "s", "0"],
        &["XREADGROUP", "COUNT", "1", "NOACK", "STREAMS", "s", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "NOACK",
            "STREAMS",
            "s",
            "0",
        ],
        &["XADD", "s", "4-1", "d", "4"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c3",
            "NOACK",
            "STREAMS",
            "s",
            ">",
        ],
        &["XREADGROUP", "GROUP", "g", "c3", "STREAMS", "s", "0"],
        &["XPENDING", "s", "g"],
        &["XPENDING", "s", "nog"],
        &["XPENDING", "missing", "g"],
        &["XPENDING", "s", "g", "-", "+"],
        &["XPENDING", "s", "g", "-", "+", "-1"],
        &["XPENDING", "s", "g", "x", "+", "1"],
        &["XPENDING", "s", "g", "-", "+", "10", "zz"],
        &["XPENDING", "s", "g", "IDLE", "x", "-", "+", "10"],
        &["XPENDING", "s", "g", "IDLE", "5", "-", "+"],
        &["XPENDING", "s", "g", "IDLE", "100000", "-", "+", "10"],
        &["XACK", "s", "g", "x"],
        &["XACK", "s", "nog", "1-1"],
        &["XACK", "missing", "g", "1-1"],
        &["XACK", "s", "g", "2-1", "2-1", "9-9"],
        &["XPENDING", "s", "g"],
        &["XINFO", "GROUPS", "s"],
        &["XGROUP", "CREATE", "s", "late", "0", "ENTRIESREAD", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "late",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ],
        &["XINFO", "GROUPS", "s"],
        &["XGROUP", "DELCONSUMER", "s", "g", "c2"],
        &["XPENDING", "s", "g"],
    ]);
    for args in [
        &["XPENDING", "s", "g", "-", "+", "10"][..],
        &["XPENDING", "s", "g", "(1-1", "(9", "10", "c1"],
        &["XPENDING", "s", "g", "IDLE", "0", "-", "+", "1"],
    ] {
        p.same_with(args, |f| mask_idle_rows(f, 0, 5_000));
    }
    p.same_with(&["XINFO", "CONSUMERS", "s", "g"], |f| {
        mask(f, &["idle"], None, 5_000)
    });
    // Multiple streams in one read, some with nothing new.
    p.script(&[
        &["XADD", "{t}a", "1-0", "f", "v"],
        &["XGROUP", "CREATE", "{t}a", "g", "$"],
        &["XGROUP", "CREATE", "{t}b", "g", "0", "MKSTREAM"],
        &["XADD", "{t}b", "5-0", "f", "v"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "{t}a",
            "{t}b",
            ">",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "{t}a",
            "{t}b",
            "0",
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "{t}a",
            "{t}b",
            ">",
            ">",
        ],
    ]);
}

#[test]
fn xclaim_and_xautoclaim_match_redis() {
    let mut p = Pair::start();
    p.script(&[
        &["XADD", "s", "1-1", "a", "1"],
        &["XADD", "s", "2-1", "b", "2"],
        &["XADD", "s", "3-1", "c", "3"],
        &["XGROUP", "CREATE", "s", "g", "0"],
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", "s", ">"],
        &["XDEL", "s", "1-1"],
        &["XCLAIM", "s", "g", "c3", "0", "1-1", "2-1", "9-9"],
        &["XCLAIM", "s", "g", "c1", "0", "2-1", "JUSTID"],
        &[
            "XCLAIM",
            "s",
            "g",
            "c1",
            "0",
            "2-1",
            "RETRYCOUNT",
            "9",
            "JUSTID",
        ],
        &["XCLAIM", "s", "g", "c1", "0", "7-7", "FORCE", "JUSTID"],
        &["XADD", "s", "7-7", "f", "v"],
        &["XADD", "s", "8-8", "f", "w"],
        &["XCLAIM", "s", "g", "c1", "0", "7-7", "FORCE", "JUSTID"],
        &["XCLAIM", "s", "g", "c2", "0", "8-8", "FORCE"],
        &["XCLAIM", "s", "g", "c1", "100000", "3-1"],
        &["XCLAIM", "s", "g", "c1", "x", "3-1"],
        &["XCLAIM", "s", "g", "c1", "0", "3-1", "TIME", "x"],
        &["XCLAIM", "s", "g", "c1", "0", "3-1", "IDLE", "x"],
        &["XCLAIM", "s", "g", "c1", "0", "3-1", "RETRYCOUNT", "x"],
        &["XCLAIM", "s", "g", "c1", "0", "3-1", "LASTID", "x"],
        &["XCLAIM", "s", "g", "c1", "0", "3-1", "bogus"],
        &["XCLAIM", "s", "nog", "c1", "0", "3-1"],
        &["XCLAIM", "missing", "g", "c1", "0", "3-1"],
        &["XCLAIM", "s", "g", "c1", "-5", "3-1", "JUSTID"],
        &[
            "XCLAIM", "s", "g", "c1", "0", "3-1", "LASTID", "100-0", "JUSTID",
        ],
        &["XCLAIM", "s", "g", "nobody", "0", "99-1"],
        &["XINFO", "GROUPS", "s"],
        &["XPENDING", "s", "g"],
        &["XAUTOCLAIM", "s", "g", "c9", "0", "0", "COUNT", "1"],
        &["XAUTOCLAIM", "s", "g", "c9", "0", "0", "JUSTID"],
        &["XDEL", "s", "2-1"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "0"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "0", "COUNT", "0"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "0", "COUNT", "999999999"],
        &["XAUTOCLAIM", "s", "g", "c8", "x", "0"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "x"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "0", "foo"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "-"],
        &["XAUTOCLAIM", "s", "g", "c8", "0", "(3-1"],
        &["XAUTOCLAIM", "s", "g", "c8", "100000", "0"],
        &["XAUTOCLAIM", "s", "nog", "c8", "0", "0"],
        &["XAUTOCLAIM", "missing", "g", "c8", "0", "0"],
        &["XAUTOCLAIM", "s", "g", "newc", "99999999", "0"],
        &["XPENDING", "s", "g"],
    ]);
    p.same_with(&["XINFO", "CONSUMERS", "s", "g"], |f| {
        mask(f, &["idle"], None, 5_000)
    });
    // TIME and RETRYCOUNT set what XINFO STREAM FULL shows exactly.
    let t = (unix_ms() - 60_000).to_string();
    p.same(&[
        "XCLAIM",
        "s",
        "g",
        "c5",
        "0",
        "3-1",
        "TIME",
        &t,
        "RETRYCOUNT",
        "4",
    ]);
    p.same_with(&["XPENDING", "s", "g", "-", "+", "10", "c5"], |f| {
        mask_idle_rows(f, 60_000, 5_000)
    });
    // Entries XAUTOCLAIM took above were delivered when each server ran
    // it, which can be a millisecond or two apart: delivery times agree
    // within 5 s (3-1's, 60 s back, shows TIME was applied).
    let now = unix_ms();
    let args = ["XINFO", "STREAM", "s", "FULL"];
    let norm = |f| without_radix(mask(f, &["seen-time"], Some(now), 5_000));
    let (ours, theirs) = (norm(p.node.cmd(&args)), norm(p.redis.cmd(&args)));
    assert!(
        super::random_streams::agree_times(&ours, &theirs),
        "{args:?}: node {ours:?}\nredis-server {theirs:?}"
    );
}

#[test]
fn blocking_xreadgroup_matches_redis_and_wakes_on_xadd() {
    let mut p = Pair::start();
    p.script(&[
        &["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "50",
            "STREAMS",
            "s",
            ">",
        ],
    ]);
    let (mut n2, mut r2) = p.connect_more();
    let blocked = [
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "BLOCK",
        "0",
        "STREAMS",
        "s",
        ">",
    ];
    let args: Vec<&[u8]> = blocked.iter().map(|a| a.as_bytes()).collect();
    n2.send(&args);
    r2.send(&args);
    p.wait_blocked(1);
    p.same(&["XADD", "s", "1-0", "f", "v"]);
    let (ours, theirs) = (n2.next_reply(), r2.next_reply());
    assert_eq!(
        format!("{ours:?}"),
        format!("{theirs:?}"),
        "the woken XREADGROUP's reply"
    );
    p.same(&["XPENDING", "s", "g"]);
    // Blocked, then the group goes; blocked, then the key goes.
    for gone in [&["XGROUP", "DESTROY", "s", "g"][..], &["DEL", "s"]] {
        n2.send(&args);
        r2.send(&args);
        p.wait_blocked(1);
        p.same(gone);
        let (ours, theirs) = (n2.next_reply(), r2.next_reply());
        assert!(matches!(&theirs, Ok(Frame::Error(_))), "{theirs:?}");
        assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "after {gone:?}");
        p.same(&["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]);
    }
}

#[test]
fn xread_matches_redis_and_a_blocked_dollar_waits_for_the_next_entry() {
    let mut p = Pair::start();
    p.script(&[
        &["XREAD", "STREAMS", "s", "0"],
        &["XADD", "s", "1-0", "a", "1"],
        &["XADD", "s", "2-0", "b", "2"],
        &["XREAD", "STREAMS", "s", "0"],
        &["XREAD", "COUNT", "1", "STREAMS", "s", "0-0"],
        &["XREAD", "STREAMS", "s", "1"],
        &["XREAD", "STREAMS", "s", "$"],
        &["XREAD", "BLOCK", "10", "STREAMS", "s", "$"],
        &["XREAD", "STREAMS", "s", ">"],
        &["XREAD", "STREAMS", "s", "x"],
        &["XREAD", "GROUP", "g", "c", "STREAMS", "s", "0"],
        &["XREAD", "NOACK", "STREAMS", "s", "0"],
        &["XREAD", "STREAMS", "s"],
        &["XREAD", "STREAMS", "s", "0", "1"],
        &["XREAD", "COUNT", "x", "STREAMS", "s", "0"],
        &["XREAD", "BLOCK", "-1", "STREAMS", "s", "0"],
        &["XREAD", "FOO", "STREAMS", "s", "0"],
        &["XADD", "{t}a", "1-0", "f", "v"],
        &["XREAD", "STREAMS", "{t}a", "{t}missing", "0", "0"],
        &["SET", "str", "v"],
        &["XREAD", "STREAMS", "str", "0"],
    ]);
    let (mut n2, mut r2) = p.connect_more();
    let blocked = ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"];
    let args: Vec<&[u8]> = blocked.iter().map(|a| a.as_bytes()).collect();
    n2.send(&args);
    r2.send(&args);
    p.wait_blocked(1);
    // A write that adds nothing new for `$` does not answer it.
    p.same(&["XDEL", "s", "1-0"]);
    std::thread::sleep(Duration::from_millis(100));
    p.same(&["XADD", "s", "3-0", "c", "3"]);
    let (ours, theirs) = (n2.next_reply(), r2.next_reply());
    assert!(matches!(&theirs, Ok(Frame::Array(_))), "{theirs:?}");
    assert_eq!(
        format!("{ours:?}"),
        format!("{theirs:?}"),
        "the woken XREAD's reply"
    );
}
